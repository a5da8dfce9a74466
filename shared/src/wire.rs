//! The summary wire format: what an agent publishes each interval and a collector decodes,
//! and the vocabulary both sides (and `watch --json`) speak: one address type ([`Addr`]), one
//! packets+bytes pair ([`Count`]), one flow record ([`Flow`], carried in a summary as a
//! [`FlowRecord`], with the one conversion pair between the two beside them), one TCP block
//! ([`Tcp`]), one DNS block ([`Dns`]).
//!
//! `postcard` over serde. The top-level type is the versioned [`Message`] enum; postcard writes
//! the variant index as the first byte, so a collector reads the version before anything else
//! and rejects an unknown one with [`DecodeError::UnknownVersion`]. Agents write
//! [`Message::V3`]; [`decode`] reads V1 and V2 too, and [`Message::into_summary`] gives any as
//! the one current [`Summary`] (a V1 summary's flows have no TCP block, a V2 summary's no DNS
//! block). Golden byte vectors in the tests pin every version: changing a field's type or
//! order breaks them on purpose.
//!
//! Compactness: integers are varints, timestamps inside a summary are milliseconds relative to
//! the window start, and each summary carries its endpoint addresses once in [`Summary::addrs`]
//! (flow records refer to them by index), since an edge box's flows share their local address.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Version byte of [`Message::V1`] (no TCP blocks).
pub const V1: u8 = 0;
/// Version byte of [`Message::V2`] (flows carry [`Tcp`]).
pub const V2: u8 = 1;
/// Version byte of [`Message::V3`] (flows carry [`Dns`] too).
pub const V3: u8 = 2;
/// Default largest encoded message; bigger windows are split into parts.
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;
/// Bounds a decoder enforces on untrusted input.
pub const MAX_ID_LEN: usize = 64;
pub const MAX_FLOWS_PER_MESSAGE: usize = 16_384;
pub const MAX_ADDRS_PER_MESSAGE: usize = 2 * MAX_FLOWS_PER_MESSAGE;
pub use crate::rtt::{rtt_bucket, RTT_BUCKETS};
pub use crate::stats::Count;
pub use addr::Addr;
pub use dns::{Dns, DnsName, Latency, DNS_NAME_MAX};
pub use flow::Flow;
pub use owner::{Device, Owner, Process};
pub use tcp::{Outcome, Tcp, TcpDir};

mod addr;
mod dns;
mod flow;
pub mod owner;
mod tcp;
pub mod v1;
pub mod v2;

/// A device or site name, bounded.
pub type Id = heapless::String<MAX_ID_LEN>;

/// Everything an agent publishes on `edgeflow/v1/<site>/<device>/flows` (the topic keeps
/// `v1`: the message's first byte carries its version).
// One message is decoded at a time and turned into a Summary at once: the size difference
// between versions costs nothing worth a Box at every construction site.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Agents before TCP health (issue 21); read, not written.
    V1(v1::Summary),
    /// Agents before DNS (issue 21's DNS half); read, not written.
    V2(v2::Summary),
    V3(Summary),
}

impl Message {
    /// The summary in the current form, whichever version carried it.
    pub fn into_summary(self) -> Summary {
        match self {
            Message::V1(s) => s.into(),
            Message::V2(s) => s.into(),
            Message::V3(s) => s,
        }
    }

    /// The version number (1, 2, 3), as people and metrics name it.
    pub fn version(&self) -> u8 {
        match self {
            Message::V1(_) => V1 + 1,
            Message::V2(_) => V2 + 1,
            Message::V3(_) => V3 + 1,
        }
    }
}

impl From<Summary> for Message {
    /// The version agents write.
    fn from(s: Summary) -> Message {
        Message::V3(s)
    }
}

/// One window of one device (or one part of it, see [`Summary::part`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub device: Id,
    pub site: Id,
    /// Random per agent start: (device, boot, seq, part) identifies a message for dedup.
    pub boot_id: u64,
    /// Window number since the agent started; no gaps.
    pub seq: u64,
    /// This message's part and how many parts the window was split into (0-based).
    pub part: u16,
    pub parts: u16,
    pub window_start_ms: u64,
    /// Milliseconds after `window_start_ms`.
    pub window_len_ms: u32,
    /// 1-in-N packet sampling; counts below are as counted (multiply by N to estimate).
    pub sample_every: u32,
    /// Window totals, overflow, the folded "other" record and agent health: part 0 only,
    /// zero in later parts, so adding all parts up never double counts.
    pub totals: Count,
    /// Packets whose flow did not fit in the kernel table.
    pub overflow: Count,
    /// Flows beyond the top-K, folded together.
    pub other: Count,
    pub other_flows: u32,
    pub health: Health,
    /// Endpoint addresses the records refer to by index.
    pub addrs: Vec<Addr>,
    pub flows: Vec<FlowRecord>,
    /// Log2-bucketed RTT samples of the window (see [`RTT_BUCKETS`]); empty when none.
    pub rtt_hist: heapless::Vec<u32, RTT_BUCKETS>,
    /// The agent measured TCP health: every TCP flow carries a [`Tcp`] block. False when it
    /// is switched off (or the summary came as V1): no flow has one.
    pub tcp_health: bool,
    /// Log2-bucketed DNS latency samples (query → response, µs, buckets as [`rtt_bucket`]) of
    /// the window; empty when none.
    pub dns_hist: heapless::Vec<u32, RTT_BUCKETS>,
    /// The agent measured DNS: every UDP flow to or from port 53 carries a [`Dns`] block (a
    /// decoder also accepts one on a TCP flow: DNS over TCP is not read yet). False when it
    /// is switched off (or the summary came as V1 or V2): no flow has one.
    pub dns: bool,
    /// Strings the flows' owners and the devices refer to by index (command names, services,
    /// vendors, DHCP names: docs/owners.md), each once; empty without owners.
    pub names: Vec<Name>,
    /// LAN devices the flows' owners refer to by index (MAC, vendor, DHCP names).
    pub devices: Vec<Device>,
}

/// A string of a summary's [`Summary::names`] (at most [`MAX_NAME_LEN`] bytes).
pub type Name = alloc::string::String;
/// Longest name a decoder accepts.
pub const MAX_NAME_LEN: usize = 255;
/// Most names and devices in one message.
pub const MAX_NAMES_PER_MESSAGE: usize = 4 * MAX_FLOWS_PER_MESSAGE;

/// The agent's own state, so the collector can tell when totals are off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Every packet the programs saw in the window.
    pub packets_seen: u64,
    pub active_flows: u32,
    pub table_capacity: u32,
    /// Packets that went to the overflow record (table full) in the window.
    pub table_full: u64,
    pub parse_errors: u64,
    pub fragments: u64,
    pub non_ip: u64,
    /// The agent's CPU time in the window, milliseconds.
    pub cpu_ms: u32,
    pub rss_kib: u32,
    /// Summaries waiting in the spool, and dropped from it since the agent started.
    pub spool_depth: u32,
    pub spool_dropped: u64,
    /// Port-53 payloads the DNS parser rejected in the window (truncated header, label past
    /// the packet, pointer in a question name, no question, name too long): they passed and
    /// were counted as traffic, without DNS fields.
    pub dns_malformed: u64,
    /// Pending DNS queries pushed out of their flow's bounded set by newer queries in the
    /// window (each also counts as `unanswered` in its flow): the bound was hit.
    pub dns_evicted: u64,
    /// The spool file cannot be written (full, read-only or failing disk) and the summaries
    /// wait in memory until it can; false on the file and with no spool file configured.
    pub spool_fallback: bool,
    /// Spool file writes that failed since the agent started.
    pub spool_write_errors: u32,
    /// How far the agent's wall clock was stepped during the window, in ms (negative: set
    /// back), 0 if it was not. The window's length is measured without it (CLOCK_BOOTTIME).
    pub clock_step_ms: i64,
    /// Wall-clock steps since the agent started.
    pub clock_steps: u32,
    /// Re-attachments to interfaces made again under a watched name, since the agent started.
    pub reattached: u32,
    /// Sockets (and bound ports) whose creator the kernel's owner maps had no room for in
    /// the window: their flows carry no process (docs/owners.md). The bound was hit.
    pub owner_sockets_full: u64,
    /// DHCP requests from a new LAN device that found the agent's names map full.
    pub owner_devices_full: u64,
    /// Packets whose IP header claimed more bytes than the frame held, in the window: counted
    /// as what the frame held (a lying or broken header).
    pub header_excess: u64,
    /// Packets of flows the programs reclaimed under pressure (one-packet or unanswered flows
    /// not yet read, taken for new flows: a flood), in the window: part of `table_full`, in
    /// the overflow record.
    pub reclaimed: u64,
}

/// One conversation's deltas in the window, oriented initiator → responder: a [`Flow`] as a
/// summary carries it, addresses by index and times relative to the window start
/// ([`Flow::to_record`] and [`FlowRecord::to_flow`] convert).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    pub proto: u8,
    /// Index into [`Summary::addrs`].
    pub src: u32,
    pub dst: u32,
    /// Ports; for ICMP/ICMPv6 the type and code.
    pub src_port: u16,
    pub dst_port: u16,
    pub vlan: u16,
    pub vlan_inner: u16,
    pub ifindex: u32,
    pub fwd: Count,
    pub rev: Count,
    pub tcp_flags: u8,
    /// Relative to the window start (negative: before it).
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub rtt: Option<Rtt>,
    /// TCP flows, when [`Summary::tcp_health`]: what the connection did (1 byte when `None`).
    #[serde(with = "tcp::compact")]
    pub tcp: Option<Tcp>,
    /// UDP flows to or from port 53, when [`Summary::dns`]: what the DNS conversation
    /// did (1 byte when `None`).
    #[serde(with = "dns::compact")]
    pub dns: Option<Dns>,
    /// Who is behind the flow: indices into [`Summary::names`] and [`Summary::devices`]
    /// (1 byte when `None`).
    #[serde(with = "owner::compact")]
    pub owner: Option<Owner>,
}

/// TCP round-trip time of a flow, microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rtt {
    pub min_us: u32,
    pub avg_us: u32,
    pub max_us: u32,
    pub samples: u32,
}

/// Why bytes are not a summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Empty,
    /// A message of a version this build does not know.
    UnknownVersion(u64),
    /// Not postcard for a known version (truncated, garbage, trailing bytes).
    Malformed(&'static str),
    /// Decoded, but breaks a rule (index out of range, part beyond parts, ...).
    Invalid(&'static str),
}

impl DecodeError {
    /// A short stable name, for counting rejections by reason.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::UnknownVersion(_) => "unknown_version",
            DecodeError::Malformed(_) => "malformed",
            DecodeError::Invalid(_) => "invalid",
        }
    }
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty payload"),
            DecodeError::UnknownVersion(v) => write!(
                f,
                "unknown message version {} (this build reads versions 1 to 3)",
                v + 1
            ),
            DecodeError::Malformed(why) => write!(f, "malformed summary: {why}"),
            DecodeError::Invalid(why) => write!(f, "invalid summary: {why}"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Encodes into `buf`, returning the used part; `None` if it does not fit.
pub fn encode<'b>(msg: &Message, buf: &'b mut [u8]) -> Option<&'b mut [u8]> {
    postcard::to_slice(msg, buf).ok()
}

/// Encodes into a new vector.
pub fn encode_vec(msg: &Message) -> Vec<u8> {
    postcard::to_allocvec(msg).expect("encoding into a Vec cannot fail")
}

/// The encoded size of a message, without encoding it anywhere (to plan a split into parts).
pub fn encoded_len(msg: &Message) -> usize {
    postcard::serialize_with_flavor(msg, postcard::ser_flavors::Size::default())
        .expect("sizing cannot fail")
}

/// Decodes and validates one message from untrusted bytes.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let Some(&first) = bytes.first() else {
        return Err(DecodeError::Empty);
    };
    // The variant index is a varint; V1 is 0, V2 1 and V3 2, so any other leading value is
    // another version.
    if first > V3 {
        let mut v: u64 = 0;
        for (i, b) in bytes.iter().take(10).enumerate() {
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                break;
            }
        }
        return Err(DecodeError::UnknownVersion(v));
    }
    let (msg, rest): (Message, &[u8]) = postcard::take_from_bytes(bytes).map_err(|e| {
        DecodeError::Malformed(match e {
            postcard::Error::DeserializeUnexpectedEnd => "truncated",
            postcard::Error::DeserializeBadVarint => "bad varint",
            postcard::Error::DeserializeBadBool => "bad bool",
            postcard::Error::DeserializeBadUtf8 => "bad utf-8",
            postcard::Error::DeserializeBadOption => "bad option tag",
            postcard::Error::DeserializeBadEnum => "bad enum tag",
            _ => "does not decode",
        })
    })?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed("trailing bytes"));
    }
    match &msg {
        Message::V1(s) => v1::validate(s)?,
        Message::V2(s) => v2::validate(s)?,
        Message::V3(s) => validate(s)?,
    }
    Ok(msg)
}

/// [`decode`], then [`Message::into_summary`].
pub fn decode_summary(bytes: &[u8]) -> Result<Summary, DecodeError> {
    decode(bytes).map(Message::into_summary)
}

fn validate(s: &Summary) -> Result<(), DecodeError> {
    validate_tcp(s.tcp_health, s.flows.iter().map(|f| (f.proto, &f.tcp)))?;
    if s.flows
        .iter()
        .any(|f| f.dns.is_some() && f.proto != TCP && f.proto != UDP)
    {
        return Err(DecodeError::Invalid(
            "DNS block on a flow that is not UDP or TCP",
        ));
    }
    if !s.dns && s.flows.iter().any(|f| f.dns.is_some()) {
        return Err(DecodeError::Invalid("DNS block with DNS off"));
    }
    owner::validate(s)?;
    validate_common(
        &s.device,
        s.part,
        s.parts,
        s.sample_every,
        s.addrs.len(),
        s.flows.iter().map(|f| (f.src, f.dst)),
    )
}

const TCP: u8 = 6;
const UDP: u8 = 17;

/// TCP blocks only on TCP flows, and only with TCP health on (versions 2 and 3).
pub(crate) fn validate_tcp<'a>(
    tcp_health: bool,
    mut flows: impl Iterator<Item = (u8, &'a Option<Tcp>)> + Clone,
) -> Result<(), DecodeError> {
    if flows.clone().any(|(proto, t)| t.is_some() && proto != TCP) {
        return Err(DecodeError::Invalid("TCP block on a flow that is not TCP"));
    }
    if !tcp_health && flows.any(|(_, t)| t.is_some()) {
        return Err(DecodeError::Invalid("TCP block with TCP health off"));
    }
    Ok(())
}

/// The rules both versions keep.
pub(crate) fn validate_common(
    device: &Id,
    part: u16,
    parts: u16,
    sample_every: u32,
    addrs: usize,
    mut ends: impl ExactSizeIterator<Item = (u32, u32)>,
) -> Result<(), DecodeError> {
    if device.is_empty() {
        return Err(DecodeError::Invalid("empty device id"));
    }
    if parts == 0 || part >= parts {
        return Err(DecodeError::Invalid("part out of range"));
    }
    if ends.len() > MAX_FLOWS_PER_MESSAGE || addrs > MAX_ADDRS_PER_MESSAGE {
        return Err(DecodeError::Invalid("too many records"));
    }
    let n = addrs as u32;
    if ends.any(|(src, dst)| src >= n || dst >= n) {
        return Err(DecodeError::Invalid("address index out of range"));
    }
    if sample_every == 0 {
        return Err(DecodeError::Invalid("sampling rate 0"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
