//! Version 2 of the summary, as agents with TCP health and before DNS (issue 21's DNS half)
//! wrote it: frozen, read by [`super::decode`] and turned into the current [`super::Summary`]
//! (flows without a DNS block, `dns` false, an empty `dns_hist`, the DNS health counters 0)
//! by [`super::Message::into_summary`]; [`Summary::from`] a current summary is what such an
//! agent would have sent. Its golden vector (`golden_v2.hex`) is unchanged since version 2.

use super::{Addr, Count, DecodeError, Id, Rtt, Tcp, RTT_BUCKETS};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// [`super::Summary`] before DNS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub device: Id,
    pub site: Id,
    pub boot_id: u64,
    pub seq: u64,
    pub part: u16,
    pub parts: u16,
    pub window_start_ms: u64,
    pub window_len_ms: u32,
    pub sample_every: u32,
    pub totals: Count,
    pub overflow: Count,
    pub other: Count,
    pub other_flows: u32,
    pub health: Health,
    pub addrs: Vec<Addr>,
    pub flows: Vec<FlowRecord>,
    pub rtt_hist: heapless::Vec<u32, RTT_BUCKETS>,
    pub tcp_health: bool,
}

/// [`super::Health`] before DNS (version 1 carried the same).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub packets_seen: u64,
    pub active_flows: u32,
    pub table_capacity: u32,
    pub table_full: u64,
    pub parse_errors: u64,
    pub fragments: u64,
    pub non_ip: u64,
    pub cpu_ms: u32,
    pub rss_kib: u32,
    pub spool_depth: u32,
    pub spool_dropped: u64,
}

/// [`super::FlowRecord`] before DNS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    pub proto: u8,
    pub src: u32,
    pub dst: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub vlan: u16,
    pub vlan_inner: u16,
    pub ifindex: u32,
    pub fwd: Count,
    pub rev: Count,
    pub tcp_flags: u8,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub rtt: Option<Rtt>,
    #[serde(with = "super::tcp::compact")]
    pub tcp: Option<Tcp>,
}

impl From<Health> for super::Health {
    fn from(h: Health) -> super::Health {
        super::Health {
            packets_seen: h.packets_seen,
            active_flows: h.active_flows,
            table_capacity: h.table_capacity,
            table_full: h.table_full,
            parse_errors: h.parse_errors,
            fragments: h.fragments,
            non_ip: h.non_ip,
            cpu_ms: h.cpu_ms,
            rss_kib: h.rss_kib,
            spool_depth: h.spool_depth,
            spool_dropped: h.spool_dropped,
            ..super::Health::default()
        }
    }
}

impl From<&super::Health> for Health {
    fn from(h: &super::Health) -> Health {
        Health {
            packets_seen: h.packets_seen,
            active_flows: h.active_flows,
            table_capacity: h.table_capacity,
            table_full: h.table_full,
            parse_errors: h.parse_errors,
            fragments: h.fragments,
            non_ip: h.non_ip,
            cpu_ms: h.cpu_ms,
            rss_kib: h.rss_kib,
            spool_depth: h.spool_depth,
            spool_dropped: h.spool_dropped,
        }
    }
}

impl From<FlowRecord> for super::FlowRecord {
    fn from(f: FlowRecord) -> super::FlowRecord {
        super::FlowRecord {
            proto: f.proto,
            src: f.src,
            dst: f.dst,
            src_port: f.src_port,
            dst_port: f.dst_port,
            vlan: f.vlan,
            vlan_inner: f.vlan_inner,
            ifindex: f.ifindex,
            fwd: f.fwd,
            rev: f.rev,
            tcp_flags: f.tcp_flags,
            first_seen_ms: f.first_seen_ms,
            last_seen_ms: f.last_seen_ms,
            rtt: f.rtt,
            tcp: f.tcp,
            ..super::FlowRecord::default()
        }
    }
}

impl From<&super::FlowRecord> for FlowRecord {
    fn from(f: &super::FlowRecord) -> FlowRecord {
        FlowRecord {
            proto: f.proto,
            src: f.src,
            dst: f.dst,
            src_port: f.src_port,
            dst_port: f.dst_port,
            vlan: f.vlan,
            vlan_inner: f.vlan_inner,
            ifindex: f.ifindex,
            fwd: f.fwd,
            rev: f.rev,
            tcp_flags: f.tcp_flags,
            first_seen_ms: f.first_seen_ms,
            last_seen_ms: f.last_seen_ms,
            rtt: f.rtt,
            tcp: f.tcp,
        }
    }
}

impl From<Summary> for super::Summary {
    fn from(s: Summary) -> super::Summary {
        super::Summary {
            device: s.device,
            site: s.site,
            boot_id: s.boot_id,
            seq: s.seq,
            part: s.part,
            parts: s.parts,
            window_start_ms: s.window_start_ms,
            window_len_ms: s.window_len_ms,
            sample_every: s.sample_every,
            totals: s.totals,
            overflow: s.overflow,
            other: s.other,
            other_flows: s.other_flows,
            health: s.health.into(),
            addrs: s.addrs,
            flows: s.flows.into_iter().map(Into::into).collect(),
            rtt_hist: s.rtt_hist,
            tcp_health: s.tcp_health,
            dns_hist: heapless::Vec::new(),
            dns: false,
        }
    }
}

/// What an agent from before DNS would have sent: the same window, the DNS blocks, the DNS
/// histogram and flag and the DNS health counters left out.
impl From<&super::Summary> for Summary {
    fn from(s: &super::Summary) -> Summary {
        Summary {
            device: s.device.clone(),
            site: s.site.clone(),
            boot_id: s.boot_id,
            seq: s.seq,
            part: s.part,
            parts: s.parts,
            window_start_ms: s.window_start_ms,
            window_len_ms: s.window_len_ms,
            sample_every: s.sample_every,
            totals: s.totals,
            overflow: s.overflow,
            other: s.other,
            other_flows: s.other_flows,
            health: (&s.health).into(),
            addrs: s.addrs.clone(),
            flows: s.flows.iter().map(Into::into).collect(),
            rtt_hist: s.rtt_hist.clone(),
            tcp_health: s.tcp_health,
        }
    }
}

pub(super) fn validate(s: &Summary) -> Result<(), DecodeError> {
    super::validate_tcp(s.tcp_health, s.flows.iter().map(|f| (f.proto, &f.tcp)))?;
    super::validate_common(
        &s.device,
        s.part,
        s.parts,
        s.sample_every,
        s.addrs.len(),
        s.flows.iter().map(|f| (f.src, f.dst)),
    )
}
