//! One interval's report: the flows active in it (deltas), totals, overflow and stats, as
//! JSON (`watch --json`, one object per line) or as a table for people.

use serde::Serialize;
use shared::{
    flow::tcp, parse::IPPROTO_ICMP, parse::IPPROTO_ICMPV6, rtt::FlowRtt, Counter, Direction,
    FlowCounters, FlowKey, Initiator, Stat,
};
use std::{collections::BTreeMap, fmt::Write, net::IpAddr};

/// What one interval saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Window {
    pub window_start_ms: u64,
    pub window_end_ms: u64,
    /// Packets attributed to conversations in this window: `sum(flows) + overflow`.
    pub totals: Counter,
    /// Packets whose flow could not be inserted: the table was full.
    pub overflow: Counter,
    /// The kernel's own `parsed` counter minus all reported totals, since the agent started:
    /// packets counted while this drain read the table, which the next window reports. It
    /// returns to 0 when traffic pauses; if it stays above 0, packets were lost (a packet
    /// landing on an expired entry between its last read and its removal).
    pub unsettled: Counter,
    /// Every program counter's delta for the window, by name.
    pub stats: BTreeMap<&'static str, Counter>,
    /// Entries in the kernel table after this drain.
    pub active_flows: u32,
    /// Entries removed by this drain (idle, or TCP finished).
    pub expired_flows: u32,
    pub flows: Vec<FlowRecord>,
    /// The window's TCP RTT samples per log2 bucket: index i counts samples in
    /// [2^i, 2^(i+1)) µs (`shared::rtt::rtt_bucket`); trailing empty buckets are cut.
    pub rtt_hist: Vec<u64>,
}

/// One conversation's activity in the window, oriented initiator → responder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowRecord {
    pub proto: u8,
    /// The initiator.
    pub src: IpAddr,
    /// For ICMP and ICMPv6: the (request) type.
    pub src_port: u16,
    /// The responder.
    pub dst: IpAddr,
    /// For ICMP and ICMPv6: the code.
    pub dst_port: u16,
    pub vlan: u16,
    pub vlan_inner: u16,
    pub ifindex: u32,
    pub packets_fwd: u64,
    pub bytes_fwd: u64,
    pub packets_rev: u64,
    pub bytes_rev: u64,
    /// OR of the TCP flags seen in both directions since the flow started.
    pub tcp_flags: u8,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// TCP round-trip time; absent while the flow has no sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_us: Option<RttUs>,
}

/// A flow's round-trip time in microseconds, as seen from the monitored interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RttUs {
    /// Smallest and largest sample since the flow began.
    pub min: u32,
    /// Smoothed (EWMA, gain 1/8) at the end of the window.
    pub avg: u32,
    pub max: u32,
    /// Samples taken in this window (handshake and timestamp echoes).
    pub samples: u32,
    /// The handshake's RTT (SYN → SYN-ACK or SYN-ACK → ACK), if this interface saw it.
    pub handshake: Option<u32>,
}

impl RttUs {
    /// From the entry now, with `window_samples` taken in the window; `None` without samples.
    pub fn new(r: &FlowRtt, window_samples: u32) -> Option<RttUs> {
        (r.samples > 0).then(|| RttUs {
            min: r.min_us,
            avg: r.srtt_us(),
            max: r.max_us,
            samples: window_samples,
            handshake: (r.handshake_us != 0).then_some(r.handshake_us),
        })
    }
}

/// A flow's packets and bytes per [`Direction`] and its RTT samples: what a drain keeps of an
/// entry, and what the entry grew by in a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub rtt_samples: u32,
}

impl Counts {
    pub fn of(c: &FlowCounters) -> Counts {
        Counts {
            packets: c.packets(),
            bytes: c.bytes(),
            rtt_samples: c.rtt.samples,
        }
    }

    /// What grew since `before` (the kernel's counters wrap).
    pub fn since(&self, before: &Counts) -> Counts {
        Counts {
            packets: [0, 1].map(|i| self.packets[i].wrapping_sub(before.packets[i])),
            bytes: [0, 1].map(|i| self.bytes[i].wrapping_sub(before.bytes[i])),
            rtt_samples: self.rtt_samples.wrapping_sub(before.rtt_samples),
        }
    }
}

impl FlowRecord {
    /// A record from the key, the entry now and what changed since the last drain. `to_ms`
    /// turns the entry's tick stamps into wall-clock milliseconds.
    pub fn new(
        key: &FlowKey,
        now: &FlowCounters,
        delta: &Counts,
        to_ms: impl Fn(u64) -> u64,
    ) -> FlowRecord {
        let a = (addr(&key.addr_a), key.port_a);
        let b = (addr(&key.addr_b), key.port_b);
        let (src, dst, fwd, rev) = match now.initiator() {
            Initiator::A => (a, b, Direction::AToB, Direction::BToA),
            Initiator::B => (b, a, Direction::BToA, Direction::AToB),
        };
        let (src_port, dst_port) = if key.proto == IPPROTO_ICMP || key.proto == IPPROTO_ICMPV6 {
            (key.port_a >> 8, key.port_a & 0xff)
        } else {
            (src.1, dst.1)
        };
        FlowRecord {
            proto: key.proto,
            src: src.0,
            src_port,
            dst: dst.0,
            dst_port,
            vlan: key.vlan_outer,
            vlan_inner: key.vlan_inner,
            ifindex: key.ifindex,
            packets_fwd: delta.packets[fwd.index()],
            bytes_fwd: delta.bytes[fwd.index()],
            packets_rev: delta.packets[rev.index()],
            bytes_rev: delta.bytes[rev.index()],
            tcp_flags: now.flags(Direction::AToB) | now.flags(Direction::BToA),
            first_seen_ms: to_ms(now.first_seen),
            last_seen_ms: to_ms(now.last_seen()),
            rtt_us: RttUs::new(&now.rtt, delta.rtt_samples),
        }
    }

    pub fn packets(&self) -> u64 {
        self.packets_fwd + self.packets_rev
    }

    pub fn bytes(&self) -> u64 {
        self.bytes_fwd + self.bytes_rev
    }
}

/// An address as people write it: IPv4-mapped addresses as IPv4.
pub fn addr(a: &[u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(*a);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Names of the stats, in the order of the array.
pub fn stats_map(delta: &[Counter]) -> BTreeMap<&'static str, Counter> {
    Stat::ALL
        .iter()
        .map(|s| (s.label(), delta[*s as usize]))
        .collect()
}

impl Window {
    /// `totals == sum(flows) + overflow`, in packets and bytes.
    pub fn is_conserved(&self) -> bool {
        let mut sum = self.overflow;
        for f in &self.flows {
            sum.add(&Counter {
                packets: f.packets(),
                bytes: f.bytes(),
            });
        }
        sum == self.totals
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a Window always serialises")
    }

    /// A table for people, largest flows first.
    pub fn render_table(&self, max_rows: usize) -> String {
        let mut flows: Vec<&FlowRecord> = self.flows.iter().collect();
        flows.sort_by_key(|f| std::cmp::Reverse(f.bytes()));
        let secs = self.window_end_ms.saturating_sub(self.window_start_ms) as f64 / 1000.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "window {:.1}s: {} packets, {} bytes in {} flows; overflow {} packets; {} flows in table, {} expired",
            secs,
            self.totals.packets,
            self.totals.bytes,
            self.flows.len(),
            self.overflow.packets,
            self.active_flows,
            self.expired_flows,
        );
        let noisy: Vec<String> = self
            .stats
            .iter()
            .filter(|(k, v)| !matches!(**k, "seen" | "parsed" | "overflow") && v.packets > 0)
            .map(|(k, v)| format!("{k} {}", v.packets))
            .collect();
        if !noisy.is_empty() {
            let _ = writeln!(s, "not in flows: {}", noisy.join(", "));
        }
        let _ = writeln!(
            s,
            "{:<6} {:>39} {:>5}   {:>39} {:>5} {:>5} {:>9} {:>11} {:>9} {:>11} {:>9} flags",
            "proto",
            "initiator",
            "port",
            "responder",
            "port",
            "vlan",
            "pkts→",
            "bytes→",
            "pkts←",
            "bytes←",
            "rtt ms",
        );
        for f in flows.iter().take(max_rows) {
            let _ = writeln!(
                s,
                "{:<6} {:>39} {:>5} → {:>39} {:>5} {:>5} {:>9} {:>11} {:>9} {:>11} {:>9} {}",
                proto_name(f.proto),
                f.src.to_string(),
                f.src_port,
                f.dst.to_string(),
                f.dst_port,
                f.vlan,
                f.packets_fwd,
                f.bytes_fwd,
                f.packets_rev,
                f.bytes_rev,
                f.rtt_us
                    .map(|r| format!("{:.2}", r.avg as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into()),
                flags_text(f.tcp_flags),
            );
        }
        if flows.len() > max_rows {
            let _ = writeln!(s, "… {} more flows", flows.len() - max_rows);
        }
        s
    }
}

pub fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmp6".into(),
        n => n.to_string(),
    }
}

pub fn flags_text(f: u8) -> String {
    [
        (tcp::SYN, 'S'),
        (tcp::ACK, 'A'),
        (tcp::PSH, 'P'),
        (tcp::FIN, 'F'),
        (tcp::RST, 'R'),
        (tcp::URG, 'U'),
        (tcp::ECE, 'E'),
        (tcp::CWR, 'C'),
    ]
    .iter()
    .filter(|(bit, _)| f & bit != 0)
    .map(|(_, c)| *c)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn key(a: [u8; 4], pa: u16, b: [u8; 4], pb: u16, proto: u8) -> FlowKey {
        let m = |x: [u8; 4]| {
            let mut v = [0u8; 16];
            v[10] = 0xff;
            v[11] = 0xff;
            v[12..].copy_from_slice(&x);
            v
        };
        FlowKey {
            addr_a: m(a),
            addr_b: m(b),
            port_a: pa,
            port_b: pb,
            proto,
            ..Default::default()
        }
    }

    #[test]
    fn record_is_oriented_by_initiator() {
        let k = key([10, 0, 0, 1], 80, [10, 0, 0, 2], 40000, 6);
        let mut now = FlowCounters {
            initiator: Initiator::B as u32,
            tcp_flags: 0x12 | (0x02 << 8),
            first_seen: 1_000_000,
            ..FlowCounters::counted([5, 7], [500, 700])
        };
        now.dir[0].last_seen = 3_000_000;
        now.dir[1].last_seen = 2_000_000;
        let delta = Counts {
            packets: [2, 3],
            bytes: [200, 300],
            rtt_samples: 0,
        };
        let r = FlowRecord::new(&k, &now, &delta, |ns| ns / 1_000_000);
        assert_eq!(r.src, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!((r.src_port, r.dst_port), (40000, 80));
        // fwd is b→a here.
        assert_eq!(
            (r.packets_fwd, r.bytes_fwd, r.packets_rev, r.bytes_rev),
            (3, 300, 2, 200)
        );
        assert_eq!(r.tcp_flags, 0x12);
        assert_eq!((r.first_seen_ms, r.last_seen_ms), (1, 3));
    }

    #[test]
    fn icmp_ports_are_type_and_code() {
        let k = key([10, 0, 0, 1], 8 << 8, [10, 0, 0, 2], 8 << 8, 1);
        let r = FlowRecord::new(&k, &FlowCounters::default(), &Counts::default(), |n| n);
        assert_eq!((r.src_port, r.dst_port), (8, 0));
    }

    #[test]
    fn conservation_check_and_json_shape() {
        let k = key([10, 0, 0, 1], 1, [10, 0, 0, 2], 2, 17);
        let now = FlowCounters::counted([1, 0], [100, 0]);
        let delta = Counts {
            packets: [1, 0],
            bytes: [100, 0],
            rtt_samples: 0,
        };
        let mut w = Window {
            totals: Counter {
                packets: 3,
                bytes: 300,
            },
            overflow: Counter {
                packets: 2,
                bytes: 200,
            },
            flows: vec![FlowRecord::new(&k, &now, &delta, |n| n)],
            ..Default::default()
        };
        assert!(w.is_conserved());
        w.totals.bytes += 1;
        assert!(!w.is_conserved());
        let v: serde_json::Value = serde_json::from_str(&w.to_json()).unwrap();
        for field in [
            "window_start_ms",
            "window_end_ms",
            "totals",
            "overflow",
            "stats",
            "flows",
        ] {
            assert!(v.get(field).is_some(), "{field}");
        }
        let f = &v["flows"][0];
        for field in [
            "proto",
            "src",
            "src_port",
            "dst",
            "dst_port",
            "vlan",
            "packets_fwd",
            "bytes_fwd",
            "packets_rev",
            "bytes_rev",
            "tcp_flags",
            "first_seen_ms",
            "last_seen_ms",
        ] {
            assert!(f.get(field).is_some(), "{field}");
        }
        assert_eq!(f["src"], "10.0.0.1");
        assert!(w.render_table(10).contains("10.0.0.1"));
    }

    #[test]
    fn rtt_is_reported_only_with_samples() {
        let k = key([10, 0, 0, 1], 80, [10, 0, 0, 2], 40000, 6);
        let mut now = FlowCounters::counted([1, 1], [0, 0]);
        let delta = Counts {
            packets: [1, 1],
            ..Counts::default()
        };
        let r = FlowRecord::new(&k, &now, &delta, |n| n);
        assert_eq!(r.rtt_us, None);
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert!(v.get("rtt_us").is_none());

        now.rtt.syn_sent(7, 1_000_000);
        let us = now.rtt.ack_received(8, 21_000_000).unwrap();
        now.rtt.add_sample(us);
        now.rtt.add_sample(22_000);
        let delta = Counts {
            rtt_samples: 1,
            ..delta
        };
        let r = FlowRecord::new(&k, &now, &delta, |n| n);
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v["rtt_us"],
            serde_json::json!({"min": 20000, "avg": 20250, "max": 22000, "samples": 1,
                               "handshake": 20000})
        );
        let w = Window {
            flows: vec![r],
            rtt_hist: vec![0, 2],
            ..Default::default()
        };
        assert!(w.render_table(5).contains("20.25"));
        let v: serde_json::Value = serde_json::from_str(&w.to_json()).unwrap();
        assert_eq!(v["rtt_hist"], serde_json::json!([0, 2]));
    }

    #[test]
    fn counts_grow_per_direction() {
        let now = Counts::of(&FlowCounters::counted([10, 4], [1000, 400]));
        let before = Counts::of(&FlowCounters::counted([7, 4], [700, 400]));
        let d = now.since(&before);
        assert_eq!((d.packets, d.bytes), ([3, 0], [300, 0]));
    }

    #[test]
    fn rtt_samples_are_counted_in_the_window() {
        let mut now = FlowCounters::default();
        now.rtt.add_sample(900);
        now.rtt.add_sample(1100);
        now.rtt.add_sample(1000);
        let mut before = FlowCounters::default();
        before.rtt.add_sample(900);
        assert_eq!(Counts::of(&now).since(&Counts::of(&before)).rtt_samples, 2);
    }

    #[test]
    fn flag_letters() {
        assert_eq!(flags_text(tcp::SYN | tcp::ACK | tcp::FIN), "SAF");
        assert_eq!(flags_text(0), "");
    }
}
