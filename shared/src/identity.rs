//! Who a device is, as agent, broker and collector all spell it: the `(site, device)` pair,
//! the topic grammar built from it, the presence words, the MQTT principal (username and
//! client id) and the reasons a collector rejects a message.
//!
//! One module so the two ends cannot drift apart: the agent builds its topics and client id
//! here, the collector parses them here, and the broker's ACL (`configs/mosquitto-acl`) is
//! written against [`DeviceId::principal`].
//!
//! A site or device id is 1..=[`MAX_ID_LEN`](crate::wire::MAX_ID_LEN) characters of `A-Z a-z 0-9 . _ -`: no `/`, `+`
//! or `#` (they would change a topic's meaning) and no `:`. The principal joins the two with
//! `/`, which neither may contain, so `a-b`/`c` and `a`/`b-c` stay apart.
//!
//! The MQTT client id joins them with `:` instead ([`DeviceId::client_id`]): brokers may refuse
//! `/ + # $` in a client id (rumqttd, the collector's embedded broker, does), while `:` is
//! outside the id alphabet too, so the client id is just as unambiguous. Mosquitto as shipped
//! replaces it with the username anyway (`use_username_as_clientid`).

use crate::wire::{DecodeError, Id};
use alloc::{format, string::String};
use core::fmt;

/// Every topic starts with this.
pub const TOPIC_ROOT: &str = "edgeflow/v1";
/// What the collector subscribes to (QoS 1): every device's summaries and presence.
pub const FILTERS: [&str; 2] = ["edgeflow/v1/+/+/flows", "edgeflow/v1/+/+/status"];
/// Retained on the status topic while the agent runs.
pub const ONLINE: &str = "online";
/// The agent's Last Will, and what it says when it stops.
pub const OFFLINE: &str = "offline";

/// Characters no edgeflow client id may hold: rumqttd refuses them (a topic's wildcards, its
/// separator and the `$` of system topics); one rule for both brokers.
pub const CLIENT_ID_FORBIDDEN: &str = "/+#$";

/// The longest client id: a device's `site:device`.
pub const MAX_CLIENT_ID_LEN: usize = 2 * crate::wire::MAX_ID_LEN + 1;

/// Checks an MQTT client id the project's brokers must all accept: 1..=[`MAX_CLIENT_ID_LEN`]
/// bytes, none of [`CLIENT_ID_FORBIDDEN`].
pub fn check_client_id(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > MAX_CLIENT_ID_LEN {
        return Err("must be 1 to 129 bytes");
    }
    if s.chars().any(|c| CLIENT_ID_FORBIDDEN.contains(c)) {
        return Err("may not hold / + # or $ (the embedded broker refuses them)");
    }
    Ok(())
}

/// Why a string is not a site or device id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    Empty,
    TooLong,
    /// A character outside `A-Z a-z 0-9 . _ -`.
    BadChar,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdError::Empty => "is empty",
            IdError::TooLong => "is longer than 64 characters",
            IdError::BadChar => "may hold only A-Z a-z 0-9 . _ -",
        })
    }
}

/// Checks one site or device id.
pub fn check_id(s: &str) -> Result<(), IdError> {
    parse_id(s).map(|_| ())
}

/// One site or device id, checked: the bounded [`Id`] is the length check.
pub fn parse_id(s: &str) -> Result<Id, IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    let id = Id::try_from(s).map_err(|_| IdError::TooLong)?;
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(IdError::BadChar);
    }
    Ok(id)
}

/// A validated `(site, device)`: the identity of one agent everywhere.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId {
    site: Id,
    device: Id,
}

/// Which half of a [`DeviceId`] was wrong, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadId {
    pub what: &'static str,
    pub why: IdError,
}

impl fmt::Display for BadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} id {}", self.what, self.why)
    }
}

impl DeviceId {
    pub fn new(site: &str, device: &str) -> Result<DeviceId, BadId> {
        Ok(DeviceId {
            site: parse_id(site).map_err(|why| BadId { what: "site", why })?,
            device: parse_id(device).map_err(|why| BadId {
                what: "device",
                why,
            })?,
        })
    }

    pub fn site(&self) -> &str {
        &self.site
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    /// The site as the wire carries it (checked once, by [`DeviceId::new`]).
    pub fn site_id(&self) -> &Id {
        &self.site
    }

    /// The device as the wire carries it (checked once, by [`DeviceId::new`]).
    pub fn device_id(&self) -> &Id {
        &self.device
    }

    /// `site/device`: the device's MQTT username, and how the API names it.
    /// The broker's ACL substitutes it for `%u` in `edgeflow/v1/%u/flows`.
    pub fn principal(&self) -> String {
        format!("{}/{}", self.site, self.device)
    }

    /// `site:device`: the MQTT client id the agent asks for. Holds none of [`CLIENT_ID_FORBIDDEN`],
    /// so every broker the project runs takes it.
    pub fn client_id(&self) -> String {
        format!("{}:{}", self.site, self.device)
    }

    /// Parses `site/device` (the inverse of [`DeviceId::principal`]).
    pub fn from_principal(p: &str) -> Result<DeviceId, BadId> {
        match p.split_once('/') {
            Some((site, device)) => DeviceId::new(site, device),
            None => Err(BadId {
                what: "device",
                why: IdError::Empty,
            }),
        }
    }

    /// `edgeflow/v1/<site>/<device>/flows`: the summaries, QoS 1.
    pub fn flows_topic(&self) -> String {
        format!("{TOPIC_ROOT}/{}/{}/flows", self.site, self.device)
    }

    /// `edgeflow/v1/<site>/<device>/status`: retained [`ONLINE`], Last Will [`OFFLINE`].
    pub fn status_topic(&self) -> String {
        format!("{TOPIC_ROOT}/{}/{}/status", self.site, self.device)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.site, self.device)
    }
}

/// What a topic of ours carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Flows,
    Status,
}

/// A parsed topic: `edgeflow/v1/<site>/<device>/{flows,status}` with valid ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic<'a> {
    pub site: &'a str,
    pub device: &'a str,
    pub kind: Kind,
}

impl<'a> Topic<'a> {
    pub fn parse(topic: &'a str) -> Result<Topic<'a>, Reject> {
        let mut it = topic.split('/');
        let (Some("edgeflow"), Some("v1"), Some(site), Some(device), Some(kind), None) = (
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
        ) else {
            return Err(Reject::UnknownTopic);
        };
        let kind = match kind {
            "flows" => Kind::Flows,
            "status" => Kind::Status,
            _ => return Err(Reject::UnknownTopic),
        };
        if check_id(site).is_err() || check_id(device).is_err() {
            return Err(Reject::BadId);
        }
        Ok(Topic { site, device, kind })
    }
}

/// A device's own report of its state on the retained status topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Online,
    Offline,
}

impl Presence {
    /// Plain [`ONLINE`] or [`OFFLINE`] (any case, surrounding space ignored).
    pub fn parse(payload: &[u8]) -> Option<Presence> {
        let text = core::str::from_utf8(payload).ok()?.trim();
        if text.eq_ignore_ascii_case(ONLINE) {
            Some(Presence::Online)
        } else if text.eq_ignore_ascii_case(OFFLINE) {
            Some(Presence::Offline)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Online => ONLINE,
            Presence::Offline => OFFLINE,
        }
    }
}

/// Why a collector dropped a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// Not a summary: see [`DecodeError::reason`].
    Decode(DecodeError),
    /// A summary whose site or device differs from its topic's.
    TopicMismatch,
    /// A topic that is not `edgeflow/v1/<site>/<device>/{flows,status}`.
    UnknownTopic,
    /// One of ours, but the site or device is not a valid id.
    BadId,
    /// A status payload that is neither `online` nor `offline`.
    BadStatus,
    /// A summary published with QoS 0: it bypasses the broker's in-flight bound and could not
    /// be redelivered, so a collector refuses it before queueing it.
    Qos0,
}

impl Reject {
    /// Every reason [`Reject::reason`] can return, so counters can exist at 0.
    pub const REASONS: [&'static str; 9] = [
        "empty",
        "unknown_version",
        "malformed",
        "invalid",
        "topic_mismatch",
        "unknown_topic",
        "bad_id",
        "bad_status",
        "qos0",
    ];

    /// Short stable name for counting.
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::Decode(e) => e.reason(),
            Reject::TopicMismatch => "topic_mismatch",
            Reject::UnknownTopic => "unknown_topic",
            Reject::BadId => "bad_id",
            Reject::BadStatus => "bad_status",
            Reject::Qos0 => "qos0",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(check_id("box-1.lab_2"), Ok(()));
        assert_eq!(check_id(""), Err(IdError::Empty));
        assert_eq!(check_id(&"x".repeat(65)), Err(IdError::TooLong));
        for bad in ["a/b", "a+b", "#", "a b", "a:b", "é"] {
            assert_eq!(check_id(bad), Err(IdError::BadChar), "{bad}");
        }
        assert_eq!(
            DeviceId::new("lab", "a/b").unwrap_err().what,
            "device",
            "which half"
        );
    }

    #[test]
    fn principals_are_unambiguous() {
        let a = DeviceId::new("a-b", "c").unwrap();
        let b = DeviceId::new("a", "b-c").unwrap();
        assert_ne!(a.principal(), b.principal());
        assert_eq!(a.principal(), "a-b/c");
        assert_eq!(DeviceId::from_principal("a-b/c").unwrap(), a);
        assert!(DeviceId::from_principal("a-b-c").is_err());
        assert!(DeviceId::from_principal("a/b/c").is_err());
    }

    #[test]
    fn client_ids_are_unambiguous_and_every_broker_takes_them() {
        let a = DeviceId::new("a-b", "c").unwrap();
        let b = DeviceId::new("a", "b-c").unwrap();
        assert_eq!(a.client_id(), "a-b:c");
        assert_ne!(a.client_id(), b.client_id());
        let long = DeviceId::new(&"s".repeat(64), &"d".repeat(64)).unwrap();
        for id in [&a, &b, &long] {
            assert_eq!(check_client_id(&id.client_id()), Ok(()));
        }
        for bad in ["lab/box-1", "a+b", "a#", "$SYS", ""] {
            assert!(check_client_id(bad).is_err(), "{bad}");
        }
        assert!(check_client_id(&"x".repeat(MAX_CLIENT_ID_LEN + 1)).is_err());
    }

    #[test]
    fn topics_round_trip() {
        let id = DeviceId::new("lab", "box-1").unwrap();
        assert_eq!(id.flows_topic(), "edgeflow/v1/lab/box-1/flows");
        assert_eq!(id.status_topic(), "edgeflow/v1/lab/box-1/status");
        let t = Topic::parse("edgeflow/v1/lab/box-1/flows").unwrap();
        assert_eq!((t.site, t.device, t.kind), ("lab", "box-1", Kind::Flows));
        let t = Topic::parse("edgeflow/v1/lab/box-1/status").unwrap();
        assert_eq!(t.kind, Kind::Status);
        for bad in [
            "edgeflow/v2/lab/box-1/flows",
            "edgeflow/v1/lab/box-1/flows/x",
            "edgeflow/v1/lab/flows",
            "edgeflow/v1/lab/box-1/other",
            "",
        ] {
            assert_eq!(Topic::parse(bad), Err(Reject::UnknownTopic), "{bad}");
        }
        for bad in ["edgeflow/v1//box-1/flows", "edgeflow/v1/lab/bo x/status"] {
            assert_eq!(Topic::parse(bad), Err(Reject::BadId), "{bad}");
        }
    }

    #[test]
    fn presence_is_plain_text() {
        assert_eq!(Presence::parse(b"online"), Some(Presence::Online));
        assert_eq!(Presence::parse(b"OFFLINE\n"), Some(Presence::Offline));
        assert_eq!(Presence::parse(b"maybe"), None);
        assert_eq!(Presence::parse(&[0xff, 0xfe]), None);
        assert_eq!(Presence::Offline.as_str(), OFFLINE);
    }

    #[test]
    fn every_reason_is_listed() {
        for r in [
            Reject::Decode(DecodeError::Empty),
            Reject::Decode(DecodeError::UnknownVersion(3)),
            Reject::Decode(DecodeError::Malformed("x")),
            Reject::Decode(DecodeError::Invalid("x")),
            Reject::TopicMismatch,
            Reject::UnknownTopic,
            Reject::BadId,
            Reject::BadStatus,
            Reject::Qos0,
        ] {
            assert!(Reject::REASONS.contains(&r.reason()), "{r:?}");
        }
    }
}
