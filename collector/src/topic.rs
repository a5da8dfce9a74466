//! The MQTT topics the collector reads: `edgeflow/v1/<site>/<device>/flows` and `.../status`.

/// What the collector subscribes to (QoS 1).
pub const FILTERS: [&str; 2] = ["edgeflow/v1/+/+/flows", "edgeflow/v1/+/+/status"];

/// A parsed topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic<'a> {
    Flows { site: &'a str, device: &'a str },
    Status { site: &'a str, device: &'a str },
}

impl<'a> Topic<'a> {
    /// `None` for anything that is not one of ours.
    pub fn parse(topic: &'a str) -> Option<Topic<'a>> {
        let mut it = topic.split('/');
        let (Some("edgeflow"), Some("v1"), Some(site), Some(device), Some(kind), None) = (
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
        ) else {
            return None;
        };
        if site.is_empty() || device.is_empty() {
            return None;
        }
        match kind {
            "flows" => Some(Topic::Flows { site, device }),
            "status" => Some(Topic::Status { site, device }),
            _ => None,
        }
    }
}

/// A device's own report of its state on the retained status topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Online,
    Offline,
}

impl Presence {
    /// The agent publishes plain `online` (retained) and `offline` (its Last Will).
    pub fn parse(payload: &[u8]) -> Option<Presence> {
        let text = std::str::from_utf8(payload).ok()?.trim();
        if text.eq_ignore_ascii_case("online") {
            Some(Presence::Online)
        } else if text.eq_ignore_ascii_case("offline") {
            Some(Presence::Offline)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Online => "online",
            Presence::Offline => "offline",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_our_topics_only() {
        assert_eq!(
            Topic::parse("edgeflow/v1/lab/box-1/flows"),
            Some(Topic::Flows {
                site: "lab",
                device: "box-1"
            })
        );
        assert_eq!(
            Topic::parse("edgeflow/v1/lab/box-1/status"),
            Some(Topic::Status {
                site: "lab",
                device: "box-1"
            })
        );
        for bad in [
            "edgeflow/v2/lab/box-1/flows",
            "edgeflow/v1/lab/box-1/flows/x",
            "edgeflow/v1/lab/flows",
            "edgeflow/v1//box-1/flows",
            "edgeflow/v1/lab/box-1/other",
            "",
        ] {
            assert_eq!(Topic::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn presence_is_plain_text() {
        assert_eq!(Presence::parse(b"online"), Some(Presence::Online));
        assert_eq!(Presence::parse(b"OFFLINE\n"), Some(Presence::Offline));
        assert_eq!(Presence::parse(b"maybe"), None);
        assert_eq!(Presence::parse(&[0xff, 0xfe]), None);
    }
}
