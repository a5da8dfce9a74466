//! Version 1 of the summary, as agents before TCP health (issue 21) wrote it: frozen, read by
//! [`super::decode`] and turned into the current [`super::Summary`] (flows without a TCP
//! block, `tcp_health` false) by [`super::Message::into_summary`], through version 2. Its
//! golden vector (`golden_v1.hex`) is unchanged since version 1 shipped.

use super::v2::{self, Health};
use super::{Addr, Count, DecodeError, Id, Rtt, RTT_BUCKETS};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// [`super::Summary`] without `tcp_health`.
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
}

/// [`super::FlowRecord`] without `tcp`.
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
}

impl From<FlowRecord> for v2::FlowRecord {
    fn from(f: FlowRecord) -> v2::FlowRecord {
        v2::FlowRecord {
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
            tcp: None,
        }
    }
}

impl From<Summary> for super::Summary {
    fn from(s: Summary) -> super::Summary {
        v2::Summary::from(s).into()
    }
}

impl From<Summary> for v2::Summary {
    fn from(s: Summary) -> v2::Summary {
        v2::Summary {
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
            health: s.health,
            addrs: s.addrs,
            flows: s.flows.into_iter().map(Into::into).collect(),
            rtt_hist: s.rtt_hist,
            tcp_health: false,
        }
    }
}

/// What an agent from before TCP health would have sent: the same window, the TCP blocks and
/// the `tcp_health` flag left out (a fleet's old agents, in tests and the load generator),
/// and what version 2 added after that.
impl From<&super::Summary> for Summary {
    fn from(s: &super::Summary) -> Summary {
        Summary::from(&v2::Summary::from(s))
    }
}

impl From<&v2::Summary> for Summary {
    fn from(s: &v2::Summary) -> Summary {
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
            health: s.health,
            addrs: s.addrs.clone(),
            flows: s
                .flows
                .iter()
                .map(|f| FlowRecord {
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
                })
                .collect(),
            rtt_hist: s.rtt_hist.clone(),
        }
    }
}

pub(super) fn validate(s: &Summary) -> Result<(), DecodeError> {
    super::validate_common(
        &s.device,
        s.part,
        s.parts,
        s.sample_every,
        s.addrs.len(),
        s.flows.iter().map(|f| (f.src, f.dst)),
    )
}
