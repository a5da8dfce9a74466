//! The flow record, and the one conversion pair between its two forms.
//!
//! A [`Flow`] is one conversation's activity in a window with its addresses and wall-clock
//! times: what a drained window holds, what `watch --json` and `decode` print. In a summary
//! the same record travels as a [`FlowRecord`]: addresses by index into the summary's table
//! (an edge box's flows share their local address) and times relative to the window start
//! (small varints). [`Flow::to_record`] and [`FlowRecord::to_flow`] are the only conversions
//! between the two: the agent's summary and `decode` go through them, and so should anything
//! else that reads a summary's records.

use super::{Addr, Count, Dns, FlowRecord, Rtt, Summary, Tcp};
use core::num::NonZeroU32;
use serde::{ser::SerializeStruct, Serialize, Serializer};

/// One conversation's activity in a window, oriented initiator → responder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub proto: u8,
    /// The initiator.
    pub src: Addr,
    /// For ICMP and ICMPv6: the (request) type.
    pub src_port: u16,
    /// The responder.
    pub dst: Addr,
    /// For ICMP and ICMPv6: the code.
    pub dst_port: u16,
    pub vlan: u16,
    pub vlan_inner: u16,
    pub ifindex: u32,
    /// Initiator → responder.
    pub fwd: Count,
    /// Responder → initiator.
    pub rev: Count,
    /// OR of the TCP flags seen in both directions since the flow started.
    pub tcp_flags: u8,
    /// Unix milliseconds.
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// TCP round-trip time; `None` while the flow has no sample.
    pub rtt: Option<Rtt>,
    /// The handshake's RTT (SYN → SYN-ACK or SYN-ACK → ACK) in µs, if the agent's interface
    /// saw it. Local to the agent: summaries do not carry it, so a decoded flow has `None`.
    /// (`NonZeroU32`: a seen handshake is at least 1 µs, and the record stays 120 bytes.)
    pub handshake_us: Option<NonZeroU32>,
    /// What the TCP connection did (retransmissions, resets, outcome); `None` for other
    /// protocols and when the agent does not measure it.
    pub tcp: Option<Tcp>,
    /// What the DNS conversation did (queries, rcodes, latency, name); `None` for flows not to
    /// or from port 53 and when the agent does not measure DNS.
    pub dns: Option<Dns>,
}

impl Flow {
    /// Both directions together.
    pub fn total(&self) -> Count {
        self.fwd.plus(&self.rev)
    }

    /// This flow as a record of a summary whose window starts at `window_start_ms`; `index`
    /// gives an address's place in the summary's address table (adding it if new).
    pub fn to_record(
        &self,
        window_start_ms: u64,
        mut index: impl FnMut(Addr) -> u32,
    ) -> FlowRecord {
        let rel = |t: u64| t as i64 - window_start_ms as i64;
        FlowRecord {
            proto: self.proto,
            src: index(self.src),
            dst: index(self.dst),
            src_port: self.src_port,
            dst_port: self.dst_port,
            vlan: self.vlan,
            vlan_inner: self.vlan_inner,
            ifindex: self.ifindex,
            fwd: self.fwd,
            rev: self.rev,
            tcp_flags: self.tcp_flags,
            first_seen_ms: rel(self.first_seen_ms),
            last_seen_ms: rel(self.last_seen_ms),
            rtt: self.rtt,
            tcp: self.tcp,
            dns: self.dns,
        }
    }
}

impl FlowRecord {
    /// The flow back from a summary's record: addresses from its table, times absolute (a
    /// time before the epoch, which only a forged summary can hold, reads as 0).
    ///
    /// Panics if an address index is beyond `addrs`, which [`super::decode`] rules out.
    pub fn to_flow(&self, addrs: &[Addr], window_start_ms: u64) -> Flow {
        let abs = |rel: i64| (window_start_ms as i64).saturating_add(rel).max(0) as u64;
        Flow {
            proto: self.proto,
            src: addrs[self.src as usize],
            src_port: self.src_port,
            dst: addrs[self.dst as usize],
            dst_port: self.dst_port,
            vlan: self.vlan,
            vlan_inner: self.vlan_inner,
            ifindex: self.ifindex,
            fwd: self.fwd,
            rev: self.rev,
            tcp_flags: self.tcp_flags,
            first_seen_ms: abs(self.first_seen_ms),
            last_seen_ms: abs(self.last_seen_ms),
            rtt: self.rtt,
            handshake_us: None,
            tcp: self.tcp,
            dns: self.dns,
        }
    }
}

impl Summary {
    /// The summary's records as flows (see [`FlowRecord::to_flow`]).
    pub fn to_flows(&self) -> impl Iterator<Item = Flow> + '_ {
        self.flows
            .iter()
            .map(|f| f.to_flow(&self.addrs, self.window_start_ms))
    }
}

/// The JSON shape of `watch --json` and `decode` (a flow never goes on the wire itself):
/// addresses as text, counts as `packets_fwd`, `bytes_fwd`, `packets_rev`, `bytes_rev`, and
/// `rtt_us` only while there is a sample, `tcp` only for a flow with a TCP block ([`Tcp`]'s
/// fields, the outcome by name), `dns` only for a flow with a DNS block ([`Dns`]'s fields,
/// the name as text, `latency` null without a sample). Tests in `edge` pin the field names and order.
impl Serialize for Flow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Flow", 18)?;
        m.serialize_field("proto", &self.proto)?;
        m.serialize_field("src", &Text(&self.src))?;
        m.serialize_field("src_port", &self.src_port)?;
        m.serialize_field("dst", &Text(&self.dst))?;
        m.serialize_field("dst_port", &self.dst_port)?;
        m.serialize_field("vlan", &self.vlan)?;
        m.serialize_field("vlan_inner", &self.vlan_inner)?;
        m.serialize_field("ifindex", &self.ifindex)?;
        m.serialize_field("packets_fwd", &self.fwd.packets)?;
        m.serialize_field("bytes_fwd", &self.fwd.bytes)?;
        m.serialize_field("packets_rev", &self.rev.packets)?;
        m.serialize_field("bytes_rev", &self.rev.bytes)?;
        m.serialize_field("tcp_flags", &self.tcp_flags)?;
        m.serialize_field("first_seen_ms", &self.first_seen_ms)?;
        m.serialize_field("last_seen_ms", &self.last_seen_ms)?;
        match self.rtt {
            Some(r) => m.serialize_field(
                "rtt_us",
                &RttUs {
                    min: r.min_us,
                    avg: r.avg_us,
                    max: r.max_us,
                    samples: r.samples,
                    handshake: self.handshake_us,
                },
            )?,
            None => m.skip_field("rtt_us")?,
        }
        match &self.tcp {
            Some(t) => m.serialize_field("tcp", t)?,
            None => m.skip_field("tcp")?,
        }
        match &self.dns {
            Some(d) => m.serialize_field("dns", d)?,
            None => m.skip_field("dns")?,
        }
        m.end()
    }
}

/// Serialises through `Display`.
struct Text<'a, T>(&'a T);

impl<T: core::fmt::Display> Serialize for Text<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

/// `rtt_us` in JSON.
#[derive(Serialize)]
struct RttUs {
    /// Smallest and largest sample since the flow began.
    min: u32,
    /// Smoothed (EWMA, gain 1/8) at the end of the window.
    avg: u32,
    max: u32,
    /// Samples taken in this window (handshake and timestamp echoes).
    samples: u32,
    handshake: Option<NonZeroU32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::{vec, vec::Vec};

    /// Every field set, and to a value no other field has.
    fn flow() -> Flow {
        Flow {
            proto: 6,
            src: Addr::V4([10, 0, 0, 1]),
            src_port: 43210,
            dst: Addr::V6([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]),
            dst_port: 443,
            vlan: 100,
            vlan_inner: 200,
            ifindex: 3,
            fwd: Count {
                packets: 11,
                bytes: 1100,
            },
            rev: Count {
                packets: 12,
                bytes: 1200,
            },
            tcp_flags: 0x1b,
            first_seen_ms: 1_000_000 - 1500,
            last_seen_ms: 1_009_990,
            rtt: Some(Rtt {
                min_us: 900,
                avg_us: 1_100,
                max_us: 4_000,
                samples: 13,
            }),
            handshake_us: None,
            tcp: Some(Tcp {
                outcome: super::super::Outcome::Closed,
                decided: true,
                syn_retries: 1,
                fwd: super::super::TcpDir {
                    retrans: Count {
                        packets: 2,
                        bytes: 2800,
                    },
                    rst: 0,
                    fin: 1,
                },
                rev: super::super::TcpDir {
                    fin: 1,
                    ..Default::default()
                },
            }),
            dns: Some(Dns {
                queries: 2,
                responses: 1,
                nxdomain: 1,
                unanswered: 1,
                qtype: 28,
                latency: Some(super::super::Latency {
                    min_us: 700,
                    avg_us: 800,
                    max_us: 900,
                    samples: 1,
                }),
                name: super::super::DnsName::new("example.org").unwrap(),
                ..Dns::default()
            }),
        }
    }

    #[test]
    fn window_flow_to_record_and_back_keeps_every_field() {
        let f = flow();
        let mut addrs: Vec<Addr> = vec![Addr::V4([192, 0, 2, 1])];
        let r = f.to_record(1_000_000, |a| {
            addrs.push(a);
            addrs.len() as u32 - 1
        });
        assert_eq!((r.src, r.dst), (1, 2));
        assert_eq!((r.first_seen_ms, r.last_seen_ms), (-1500, 9_990));
        assert_eq!((r.fwd, r.rev, r.rtt, r.tcp), (f.fwd, f.rev, f.rtt, f.tcp));
        assert_eq!(r.to_flow(&addrs, 1_000_000), f);
        let no_rtt = Flow {
            rtt: None,
            tcp: None,
            dns: None,
            ..f
        };
        let r = no_rtt.to_record(1_000_000, |a| {
            addrs.iter().position(|x| *x == a).unwrap() as u32
        });
        assert_eq!(r.to_flow(&addrs, 1_000_000), no_rtt);
    }

    #[test]
    fn a_flow_is_no_bigger_than_its_fields() {
        // 64k flows in a window: the drain's transient memory. 120 bytes before the TCP block
        // (issue 21), which adds its own 56 and no padding; the DNS block its own 120 (the
        // name's 64 bytes inline keep the flow `Copy`).
        assert_eq!(core::mem::size_of::<Tcp>(), 56);
        assert_eq!(core::mem::size_of::<Option<Tcp>>(), 56);
        assert_eq!(core::mem::size_of::<Option<Dns>>(), 120);
        assert_eq!(core::mem::size_of::<Flow>(), 120 + 56 + 120);
    }

    #[test]
    fn the_handshake_stays_with_the_agent() {
        let f = Flow {
            handshake_us: NonZeroU32::new(800),
            ..flow()
        };
        let addrs = [f.src, f.dst];
        let back = f.to_record(0, |a| (a == f.dst) as u32).to_flow(&addrs, 0);
        assert_eq!(
            back,
            Flow {
                handshake_us: None,
                ..f
            }
        );
    }

    #[test]
    fn times_before_the_epoch_read_as_zero() {
        let r = FlowRecord {
            first_seen_ms: -10,
            last_seen_ms: i64::MAX,
            ..FlowRecord::default()
        };
        let f = r.to_flow(&[Addr::V4([0; 4])], 5);
        assert_eq!((f.first_seen_ms, f.last_seen_ms), (0, i64::MAX as u64));
    }

    #[test]
    fn summary_flows_resolve_their_addresses() {
        let s = super::super::decode_summary(&super::super::encode_vec(&one_flow())).unwrap();
        let flows: Vec<Flow> = s.to_flows().collect();
        assert_eq!(flows.len(), 1);
        assert_eq!((flows[0].src, flows[0].dst), (s.addrs[1], s.addrs[0]));
        assert_eq!(flows[0].first_seen_ms, s.window_start_ms - 20);
    }

    use super::super::{Health, Id, Message};

    fn one_flow() -> Message {
        Message::V3(Summary {
            device: Id::try_from("d").unwrap(),
            site: Id::try_from("s").unwrap(),
            boot_id: 1,
            seq: 0,
            part: 0,
            parts: 1,
            window_start_ms: 1_000,
            window_len_ms: 10,
            sample_every: 1,
            totals: Count::default(),
            overflow: Count::default(),
            other: Count::default(),
            other_flows: 0,
            health: Health::default(),
            addrs: vec![Addr::V4([10, 0, 0, 2]), Addr::V4([10, 0, 0, 1])],
            flows: vec![FlowRecord {
                src: 1,
                dst: 0,
                first_seen_ms: -20,
                ..FlowRecord::default()
            }],
            rtt_hist: heapless::Vec::new(),
            tcp_health: false,
            dns_hist: heapless::Vec::new(),
            dns: false,
        })
    }
}
