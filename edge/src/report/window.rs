//! One interval's report: the flows active in it (deltas), totals, overflow and stats, as
//! JSON (`watch --json`, one object per line) or as a table for people.

use serde::{Serialize, Serializer};
use shared::{
    conn::{self, Outcome},
    dns::{self as kdns, DnsState},
    flow::tcp,
    parse::IPPROTO_ICMP,
    parse::IPPROTO_ICMPV6,
    parse::IPPROTO_TCP,
    stats::Stats,
    wire::{owner::mac_text, Addr, Device, Dns, DnsName, Flow, Latency, Owner, Rtt, Tcp, TcpDir},
    Count, Direction, FlowCounters, FlowKey, Initiator, Stat,
};
use std::{collections::BTreeMap, fmt::Write, num::NonZeroU32};

/// What one interval saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Window {
    /// Wall-clock time the window started.
    pub window_start_ms: u64,
    /// The start plus the window's length by CLOCK_BOOTTIME (`probe::clock`): after a
    /// wall-clock step it is not the wall clock at the end.
    pub window_end_ms: u64,
    /// How far the wall clock was stepped during the window (ms, negative: back), 0 if not.
    /// In JSON only when not 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub clock_step_ms: i64,
    /// Packets attributed to conversations in this window: `sum(flows) + overflow`.
    pub totals: Count,
    /// Packets whose flow could not be inserted (the table was full), and those of flows the
    /// programs reclaimed under pressure before the agent read them (`Stat::Reclaimed`).
    pub overflow: Count,
    /// The kernel's own `parsed` counter minus all reported totals, since the agent started:
    /// packets counted while this drain read the table, which the next window reports. It
    /// returns to 0 when traffic pauses; if it stays above 0, packets were lost (a packet
    /// landing on an expired entry between its last read and its removal).
    pub unsettled: Count,
    /// Every program counter's delta for the window, indexed by [`Stat`]; JSON names them by
    /// label.
    #[serde(serialize_with = "by_label")]
    pub stats: Stats,
    /// Entries in the kernel table after this drain.
    pub active_flows: u32,
    /// Entries removed by this drain (idle, or TCP finished).
    pub expired_flows: u32,
    pub flows: Vec<Flow>,
    /// The window's TCP RTT samples per log2 bucket: index i counts samples in
    /// [2^i, 2^(i+1)) µs (`shared::rtt::rtt_bucket`); trailing empty buckets are cut.
    pub rtt_hist: Vec<u64>,
    /// TCP health was measured: every TCP flow has its `tcp` block (docs/tcp.md). In JSON only
    /// when true, so output without it keeps its bytes.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tcp_health: bool,
    /// The window's DNS latency samples per log2 µs bucket, like `rtt_hist`; in JSON only
    /// with DNS on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_hist: Vec<u64>,
    /// DNS was read: every UDP port-53 flow has its `dns` block (docs/dns.md). In JSON only
    /// when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dns: bool,
    /// What the flows' owners refer to by index (docs/owners.md): strings (command names,
    /// services, vendors, DHCP names) and LAN devices, each once. In JSON only when not
    /// empty, so output without owners keeps its bytes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "devices_json")]
    pub devices: Vec<Device>,
    /// The owner counters' deltas (sockets recorded, socket map full, DHCP requests, ...):
    /// `None` with owners off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_stats: Option<BTreeMap<&'static str, u64>>,
}

/// Devices in JSON: the MAC as text (`aa:bb:cc:dd:ee:ff`), the rest as indices into `names`.
pub(crate) fn devices_json<S: Serializer>(devices: &[Device], s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct D<'a> {
        mac: &'a str,
        vendor: Option<u32>,
        host_name: Option<u32>,
        client_id: Option<u32>,
    }
    let macs: Vec<_> = devices.iter().map(|d| mac_text(&d.mac)).collect();
    s.collect_seq(devices.iter().zip(&macs).map(|(d, m)| D {
        mac: m.as_str(),
        vendor: d.vendor,
        host_name: d.host_name,
        client_id: d.client_id,
    }))
}

/// A flow's owner for people: `comm[pid]` or the service, else the initiator's device
/// (DHCP name, else vendor, else MAC); `-` when nothing is known.
pub fn owner_text(o: Option<&Owner>, names: &[String], devices: &[Device]) -> String {
    let Some(o) = o else {
        return "-".into();
    };
    let name = |i: u32| names.get(i as usize).map(String::as_str).unwrap_or("?");
    if let Some(p) = o.process {
        return format!("{}[{}]", name(p.comm), p.pid);
    }
    if let Some(s) = o.service {
        return name(s).to_string();
    }
    if let Some(d) = o.initiator.and_then(|i| devices.get(i as usize)) {
        if let Some(h) = d.host_name.or(d.vendor) {
            return name(h).to_string();
        }
        return mac_text(&d.mac).to_string();
    }
    "-".into()
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// The stats as a JSON object, label → count, labels sorted.
fn by_label<S: Serializer>(stats: &Stats, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(labelled(stats))
}

/// `(label, count)` of every stat, sorted by label.
fn labelled(stats: &Stats) -> BTreeMap<&'static str, Count> {
    Stat::ALL
        .iter()
        .map(|s| (s.label(), stats[*s as usize]))
        .collect()
}

/// A flow's packets and bytes per [`Direction`], its RTT samples and its TCP health per
/// [`Direction`]: what a drain keeps of an entry, and what the entry grew by in a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub dir: [Count; 2],
    pub rtt_samples: u32,
    /// Retransmissions, RST and FIN per [`Direction`] (zero for other protocols).
    pub tcp: [TcpDir; 2],
    /// The connection's outcome: a state, not a count ([`Counts::since`] keeps the later).
    pub outcome: Outcome,
    /// In a delta: the outcome was reached since the earlier counts.
    pub decided: bool,
}

impl Counts {
    pub fn of(c: &FlowCounters) -> Counts {
        let (packets, bytes) = (c.packets(), c.bytes());
        Counts {
            dir: [0, 1].map(|i| Count {
                packets: packets[i],
                bytes: bytes[i],
            }),
            rtt_samples: c.rtt.samples,
            tcp: [0, 1].map(|i| {
                let d = &c.dir[i];
                TcpDir {
                    retrans: Count {
                        packets: d.retrans_segs,
                        bytes: d.retrans_bytes,
                    },
                    rst: d.rst,
                    fin: d.fin,
                }
            }),
            outcome: conn::outcome(c),
            decided: false,
        }
    }

    /// What grew since `before` (the kernel's counters wrap).
    pub fn since(&self, before: &Counts) -> Counts {
        Counts {
            dir: [0, 1].map(|i| self.dir[i].delta_since(&before.dir[i])),
            rtt_samples: self.rtt_samples.wrapping_sub(before.rtt_samples),
            tcp: [0, 1].map(|i| {
                let (n, b) = (&self.tcp[i], &before.tcp[i]);
                TcpDir {
                    retrans: n.retrans.delta_since(&b.retrans),
                    rst: n.rst.wrapping_sub(b.rst),
                    fin: n.fin.wrapping_sub(b.fin),
                }
            }),
            outcome: self.outcome,
            decided: self.outcome != before.outcome && reached(self.outcome),
        }
    }

    /// Whether a packet came in either direction.
    pub fn any_packets(&self) -> bool {
        self.dir.iter().any(|c| c.packets != 0)
    }

    /// Both directions together.
    pub fn total(&self) -> Count {
        self.dir[0].plus(&self.dir[1])
    }
}

/// An outcome a connection reaches once ([`Tcp::decided`]): not "unknown" or "connecting".
fn reached(o: Outcome) -> bool {
    !matches!(o, Outcome::Unknown | Outcome::Connecting)
}

/// A flow of the window from the table's key, the entry now and what changed since the last
/// drain. `to_ms` turns the entry's tick stamps into wall-clock milliseconds; with
/// `tcp_health` a TCP flow carries its [`Tcp`] block.
pub fn flow(
    key: &FlowKey,
    now: &FlowCounters,
    delta: &Counts,
    to_ms: impl Fn(u64) -> u64,
    tcp_health: bool,
) -> Flow {
    let a = (Addr::from(key.addr_a), key.port_a);
    let b = (Addr::from(key.addr_b), key.port_b);
    let (src, dst, fwd, rev) = match now.initiator() {
        Initiator::A => (a, b, Direction::AToB, Direction::BToA),
        Initiator::B => (b, a, Direction::BToA, Direction::AToB),
    };
    let (src_port, dst_port) = if key.proto == IPPROTO_ICMP || key.proto == IPPROTO_ICMPV6 {
        (key.port_a >> 8, key.port_a & 0xff)
    } else {
        (src.1, dst.1)
    };
    // Reported only with samples: min/max/avg of an entry without any are zeros, not times.
    let r = &now.rtt;
    let rtt = (r.samples > 0).then(|| Rtt {
        min_us: r.min_us,
        avg_us: r.srtt_us(),
        max_us: r.max_us,
        samples: delta.rtt_samples,
    });
    Flow {
        proto: key.proto,
        src: src.0,
        src_port,
        dst: dst.0,
        dst_port,
        vlan: key.vlan_outer,
        vlan_inner: key.vlan_inner,
        ifindex: key.ifindex,
        fwd: delta.dir[fwd.index()],
        rev: delta.dir[rev.index()],
        tcp_flags: now.flags(Direction::AToB) | now.flags(Direction::BToA),
        first_seen_ms: to_ms(now.first_seen),
        last_seen_ms: to_ms(now.last_seen()),
        rtt,
        handshake_us: rtt.and(NonZeroU32::new(r.handshake_us)),
        tcp: (tcp_health && key.proto == IPPROTO_TCP).then(|| Tcp {
            outcome: delta.outcome,
            decided: delta.decided,
            syn_retries: conn::syn_retries(now),
            fwd: delta.tcp[fwd.index()],
            rev: delta.tcp[rev.index()],
        }),
        dns: None,
        owner: None,
    }
}

/// A DNS flow's block for the window: what its state `now` grew by since `before`.
pub fn dns(now: &DnsState, before: &DnsState) -> Dns {
    let d = |a: u32, b: u32| a.wrapping_sub(b);
    let samples = d(now.samples, before.samples);
    let latency = (samples > 0).then(|| Latency {
        min_us: now.min_us,
        avg_us: (now.sum_us.wrapping_sub(before.sum_us) / samples as u64)
            .clamp(now.min_us as u64, now.max_us as u64) as u32,
        max_us: now.max_us,
        samples,
    });
    let kept = (now.name_len as usize).min(kdns::NAME_KEPT);
    Dns {
        queries: d(now.queries, before.queries),
        responses: d(now.responses, before.responses),
        noerror: d(now.rcodes[kdns::NOERROR], before.rcodes[kdns::NOERROR]),
        nxdomain: d(now.rcodes[kdns::NXDOMAIN], before.rcodes[kdns::NXDOMAIN]),
        servfail: d(now.rcodes[kdns::SERVFAIL], before.rcodes[kdns::SERVFAIL]),
        refused: d(now.rcodes[kdns::REFUSED], before.rcodes[kdns::REFUSED]),
        other_rcode: d(now.rcodes[kdns::OTHER], before.rcodes[kdns::OTHER]),
        unanswered: d(now.evicted, before.evicted),
        qtype: now.qtype,
        latency,
        name: DnsName::from_wire(&now.name[..kept]),
        name_truncated: now.name_len as usize > kdns::NAME_KEPT,
    }
}

/// The record of a DNS flow leaving the table with `n` queries unanswered: no packets (they
/// were reported when they came), the latest query's type and name, `n` unanswered.
pub fn dns_unanswered(
    key: &FlowKey,
    now: &FlowCounters,
    st: &DnsState,
    n: u32,
    to_ms: impl Fn(u64) -> u64,
) -> Flow {
    let mut f = flow(key, now, &Counts::default(), to_ms, false);
    f.dns = Some(Dns {
        unanswered: n,
        ..dns(st, st)
    });
    f
}

/// The record of a flow leaving the table with its SYN unanswered ([`conn::unanswered`]): no
/// packets (they were reported when they came), the outcome decided now.
pub fn unanswered(key: &FlowKey, now: &FlowCounters, to_ms: impl Fn(u64) -> u64) -> Flow {
    let mut f = flow(key, now, &Counts::default(), to_ms, true);
    if let Some(t) = &mut f.tcp {
        t.outcome = Outcome::Unanswered;
        t.decided = true;
    }
    f
}

impl Window {
    /// `totals == sum(flows) + overflow`, in packets and bytes.
    pub fn is_conserved(&self) -> bool {
        let mut sum = self.overflow;
        for f in &self.flows {
            sum.add(&f.total());
        }
        sum == self.totals
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a Window always serialises")
    }

    /// A table for people, largest flows first.
    pub fn render_table(&self, max_rows: usize) -> String {
        let mut flows: Vec<&Flow> = self.flows.iter().collect();
        flows.sort_by_key(|f| std::cmp::Reverse(f.total().bytes));
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
        let noisy: Vec<String> = labelled(&self.stats)
            .iter()
            .filter(|(k, v)| !matches!(**k, "seen" | "parsed" | "overflow") && v.packets > 0)
            .map(|(k, v)| format!("{k} {}", v.packets))
            .collect();
        if !noisy.is_empty() {
            let _ = writeln!(s, "not in flows: {}", noisy.join(", "));
        }
        let _ = writeln!(
            s,
            "{:<6} {:>39} {:>5}   {:>39} {:>5} {:>5} {:>9} {:>11} {:>9} {:>11} {:>9} {:<22} {:<5} process/device",
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
            "tcp/dns",
            "flags",
        );
        for f in flows.iter().take(max_rows) {
            let _ = writeln!(
                s,
                "{:<6} {:>39} {:>5} → {:>39} {:>5} {:>5} {:>9} {:>11} {:>9} {:>11} {:>9} {:<22} {:<5} {}",
                proto_name(f.proto),
                f.src.to_string(),
                f.src_port,
                f.dst.to_string(),
                f.dst_port,
                f.vlan,
                f.fwd.packets,
                f.fwd.bytes,
                f.rev.packets,
                f.rev.bytes,
                f.rtt
                    .map(|r| format!("{:.2}", r.avg_us as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into()),
                match (&f.tcp, &f.dns) {
                    (None, Some(d)) => dns_text(d),
                    (t, _) => tcp_text(t.as_ref()),
                },
                flags_text(f.tcp_flags),
                owner_text(f.owner.as_ref(), &self.names, &self.devices),
            );
        }
        if flows.len() > max_rows {
            let _ = writeln!(s, "… {} more flows", flows.len() - max_rows);
        }
        s
    }
}

/// A flow's TCP block for people: the outcome (`*` when reached in this window), then only
/// what happened: `rtx` retransmitted segments →/←, `rst` and `syn+` retries.
pub fn tcp_text(t: Option<&Tcp>) -> String {
    let Some(t) = t else {
        return "-".into();
    };
    let mut s = format!("{}{}", t.outcome, if t.decided { "*" } else { "" });
    let (rf, rr) = (t.fwd.retrans.packets, t.rev.retrans.packets);
    if rf + rr > 0 {
        let _ = write!(s, " rtx{rf}/{rr}");
    }
    if t.fwd.rst + t.rev.rst > 0 {
        let _ = write!(s, " rst{}/{}", t.fwd.rst, t.rev.rst);
    }
    if t.syn_retries > 0 {
        let _ = write!(s, " syn+{}", t.syn_retries);
    }
    s
}

/// A flow's DNS block for people: queries/responses, the answers' codes that are not
/// NOERROR, unanswered, the latency's average in ms, then the latest name:
/// `q1/1 2.1ms www.example.com`, `q2/1 nx1 lost1 example.org`.
pub fn dns_text(d: &Dns) -> String {
    let mut s = format!("q{}/{}", d.queries, d.responses);
    for (n, what) in [
        (d.nxdomain, "nx"),
        (d.servfail, "fail"),
        (d.refused, "ref"),
        (d.other_rcode, "rc?"),
        (d.unanswered, "lost"),
    ] {
        if n > 0 {
            let _ = write!(s, " {what}{n}");
        }
    }
    if let Some(l) = d.latency {
        let _ = write!(s, " {:.1}ms", l.avg_us as f64 / 1000.0);
    }
    if !d.name.is_empty() {
        let _ = write!(s, " {}{}", d.name, if d.name_truncated { "…" } else { "" });
    }
    s
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
    use std::net::{IpAddr, Ipv4Addr};

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

    fn counts(packets: [u64; 2], bytes: [u64; 2]) -> Counts {
        Counts {
            dir: [0, 1].map(|i| Count {
                packets: packets[i],
                bytes: bytes[i],
            }),
            rtt_samples: 0,
            ..Counts::default()
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
        let delta = counts([2, 3], [200, 300]);
        let r = flow(&k, &now, &delta, |ns| ns / 1_000_000, false);
        assert_eq!(IpAddr::from(r.src), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!((r.src_port, r.dst_port), (40000, 80));
        // fwd is b→a here.
        assert_eq!(
            (r.fwd.packets, r.fwd.bytes, r.rev.packets, r.rev.bytes),
            (3, 300, 2, 200)
        );
        assert_eq!(r.tcp_flags, 0x12);
        assert_eq!((r.first_seen_ms, r.last_seen_ms), (1, 3));
    }

    #[test]
    fn icmp_ports_are_type_and_code() {
        let k = key([10, 0, 0, 1], 8 << 8, [10, 0, 0, 2], 8 << 8, 1);
        let r = flow(
            &k,
            &FlowCounters::default(),
            &Counts::default(),
            |n| n,
            false,
        );
        assert_eq!((r.src_port, r.dst_port), (8, 0));
    }

    #[test]
    fn conservation_check_and_json_shape() {
        let k = key([10, 0, 0, 1], 1, [10, 0, 0, 2], 2, 17);
        let now = FlowCounters::counted([1, 0], [100, 0]);
        let delta = counts([1, 0], [100, 0]);
        let mut w = Window {
            totals: Count {
                packets: 3,
                bytes: 300,
            },
            overflow: Count {
                packets: 2,
                bytes: 200,
            },
            flows: vec![flow(&k, &now, &delta, |n| n, false)],
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

    /// `watch --json` byte for byte, as the window's serde derive printed it before `Flow`
    /// and the typed stats (`before` was printed by that code): scripts parse these lines.
    #[test]
    fn json_lines_keep_their_bytes() {
        let c = |i: u64| Count {
            packets: i,
            bytes: i * 100 + 1,
        };
        let f = |i: u64, rtt: Option<Rtt>, handshake_us: Option<NonZeroU32>, v6: bool| Flow {
            proto: 6,
            src: if v6 {
                Addr::V6(fd(1))
            } else {
                Addr::V4([10, 0, 0, 1])
            },
            src_port: 40000 + i as u16,
            dst: if v6 {
                Addr::V6(fd(2))
            } else {
                Addr::V4([192, 0, 2, 7])
            },
            dst_port: 443,
            vlan: 100,
            vlan_inner: 7,
            ifindex: 3,
            fwd: Count {
                packets: 11 + i,
                bytes: 1100 + i,
            },
            rev: Count {
                packets: 12,
                bytes: 1200,
            },
            tcp_flags: 0x1b,
            first_seen_ms: 1_000_100,
            last_seen_ms: 1_009_000,
            rtt,
            handshake_us,
            tcp: None,
            dns: None,
            owner: None,
        };
        let rtt = Some(Rtt {
            min_us: 900,
            avg_us: 1100,
            max_us: 4000,
            samples: 3,
        });
        let w = Window {
            window_start_ms: 1_000_000,
            window_end_ms: 1_010_000,
            clock_step_ms: 0,
            totals: c(50),
            overflow: c(2),
            unsettled: c(0),
            stats: std::array::from_fn(|i| c(i as u64 + 1)),
            active_flows: 9,
            expired_flows: 1,
            flows: vec![
                f(0, None, None, false),
                f(1, rtt, None, true),
                f(2, rtt, NonZeroU32::new(800), false),
            ],
            rtt_hist: vec![0, 2, 5],
            tcp_health: false,
            ..Window::default()
        };
        let before = concat!(
            r#"{"window_start_ms":1000000,"window_end_ms":1010000,"totals":{"packets":50,"bytes":5001}"#,
            r#","overflow":{"packets":2,"bytes":201},"unsettled":{"packets":0,"bytes":1}"#,
            // The DNS stats (issue 21), header_excess and reclaimed (issue 24) are the only
            // additions: new keys, in label order.
            r#","stats":{"dns_bad_header":{"packets":17,"bytes":1701}"#,
            r#","dns_bad_label":{"packets":18,"bytes":1801},"dns_evicted":{"packets":22,"bytes":2201}"#,
            r#","dns_long_name":{"packets":21,"bytes":2101},"dns_messages":{"packets":16,"bytes":1601}"#,
            r#","dns_no_question":{"packets":20,"bytes":2001},"dns_pointer":{"packets":19,"bytes":1901}"#,
            r#","dns_state_full":{"packets":23,"bytes":2301}"#,
            r#","err_ethernet":{"packets":6,"bytes":601},"err_ipv4":{"packets":8,"bytes":801}"#,
            r#","err_ipv6":{"packets":9,"bytes":901},"err_ipv6_ext":{"packets":10,"bytes":1001}"#,
            r#","err_l4":{"packets":11,"bytes":1101},"err_vlan":{"packets":7,"bytes":701}"#,
            r#","fragment":{"packets":5,"bytes":501},"header_excess":{"packets":14,"bytes":1401}"#,
            r#","non_ip":{"packets":4,"bytes":401}"#,
            r#","overflow":{"packets":3,"bytes":301},"parsed":{"packets":2,"bytes":201}"#,
            r#","reclaimed":{"packets":15,"bytes":1501}"#,
            r#","rtt_pending_full":{"packets":13,"bytes":1301},"seen":{"packets":1,"bytes":101}"#,
            r#","unsampled":{"packets":12,"bytes":1201}},"active_flows":9,"expired_flows":1"#,
            r#","flows":[{"proto":6,"src":"10.0.0.1","src_port":40000,"dst":"192.0.2.7","dst_port":443"#,
            r#","vlan":100,"vlan_inner":7,"ifindex":3,"packets_fwd":11,"bytes_fwd":1100"#,
            r#","packets_rev":12,"bytes_rev":1200,"tcp_flags":27,"first_seen_ms":1000100"#,
            r#","last_seen_ms":1009000},{"proto":6,"src":"fd00::1","src_port":40001,"dst":"fd00::2""#,
            r#","dst_port":443,"vlan":100,"vlan_inner":7,"ifindex":3,"packets_fwd":12,"bytes_fwd":1101"#,
            r#","packets_rev":12,"bytes_rev":1200,"tcp_flags":27,"first_seen_ms":1000100"#,
            r#","last_seen_ms":1009000,"rtt_us":{"min":900,"avg":1100,"max":4000,"samples":3"#,
            r#","handshake":null}},{"proto":6,"src":"10.0.0.1","src_port":40002,"dst":"192.0.2.7""#,
            r#","dst_port":443,"vlan":100,"vlan_inner":7,"ifindex":3,"packets_fwd":13,"bytes_fwd":1102"#,
            r#","packets_rev":12,"bytes_rev":1200,"tcp_flags":27,"first_seen_ms":1000100"#,
            r#","last_seen_ms":1009000,"rtt_us":{"min":900,"avg":1100,"max":4000,"samples":3"#,
            r#","handshake":800}}],"rtt_hist":[0,2,5]}"#,
        );
        assert_eq!(w.to_json(), before);
    }

    #[test]
    fn dns_block_is_the_window_delta_with_the_latest_name() {
        let mut before = DnsState {
            queries: 2,
            responses: 1,
            samples: 1,
            sum_us: 10_000,
            min_us: 10_000,
            max_us: 10_000,
            ..DnsState::default()
        };
        before.rcodes[kdns::NOERROR] = 1;
        let mut now = DnsState {
            queries: 5,
            responses: 3,
            evicted: 1,
            samples: 3,
            sum_us: 10_000 + 50_000,
            min_us: 10_000,
            max_us: 30_000,
            qtype: 28,
            name_len: 17,
            ..before
        };
        now.rcodes[kdns::NXDOMAIN] = 1;
        now.rcodes[kdns::REFUSED] = 1;
        now.name[..17].copy_from_slice(b"\x03www\x07example\x03com\x00");
        let d = dns(&now, &before);
        assert_eq!(
            (
                d.queries,
                d.responses,
                d.noerror,
                d.nxdomain,
                d.refused,
                d.unanswered
            ),
            (3, 2, 0, 1, 1, 1)
        );
        assert_eq!(
            d.latency,
            Some(Latency {
                min_us: 10_000,
                avg_us: 25_000,
                max_us: 30_000,
                samples: 2
            })
        );
        assert_eq!(
            (d.name.as_str(), d.qtype, d.name_truncated),
            ("www.example.com", 28, false)
        );
        assert_eq!(dns_text(&d), "q3/2 nx1 ref1 lost1 25.0ms www.example.com");
        // No sample in the window: no latency; a name past the 64 bytes kept is marked.
        now.name_len = 200;
        let quiet = dns(&now, &now);
        assert_eq!(
            (quiet.latency, quiet.queries, quiet.name_truncated),
            (None, 0, true)
        );
        assert_eq!(dns_text(&quiet), "q0/0 www.example.com…");
    }

    #[test]
    fn tcp_block_oriented_by_initiator_with_its_json() {
        let k = key([10, 0, 0, 1], 80, [10, 0, 0, 2], 40000, 6);
        // b (10.0.0.2:40000) connected; a (the server) sent FIN and a retransmission.
        let mut now = FlowCounters {
            initiator: Initiator::B as u32,
            tcp_flags: ((tcp::SYN | tcp::ACK | tcp::FIN) as u32) << 8
                | (tcp::SYN | tcp::ACK | tcp::FIN) as u32,
            syns: 2,
            ..FlowCounters::counted([5, 7], [500, 700])
        };
        now.dir[0].retrans_segs = 1;
        now.dir[0].retrans_bytes = 100;
        now.dir[0].fin = 1;
        now.dir[1].fin = 1;
        let before = Counts {
            outcome: Outcome::Established,
            ..Counts::default()
        };
        let delta = Counts::of(&now).since(&before);
        let f = flow(&k, &now, &delta, |n| n, true);
        let t = f.tcp.expect("a TCP block");
        assert_eq!(
            (t.outcome, t.decided, t.syn_retries),
            (Outcome::Closed, true, 1)
        );
        // fwd is b→a: the retransmission went a→b, the responder's way.
        assert_eq!((t.fwd.fin, t.fwd.retrans.packets), (1, 0));
        assert_eq!(
            (t.rev.fin, t.rev.retrans),
            (
                1,
                Count {
                    packets: 1,
                    bytes: 100
                }
            )
        );
        let again = Counts::of(&now).since(&Counts::of(&now));
        assert!(!again.decided && again.tcp == [TcpDir::default(); 2]);
        assert!(flow(&k, &now, &delta, |n| n, false).tcp.is_none());
        let udp = key([10, 0, 0, 1], 53, [10, 0, 0, 2], 40000, 17);
        assert!(flow(&udp, &now, &delta, |n| n, true).tcp.is_none());
        let j = serde_json::to_string(&f).unwrap();
        assert!(
            j.ends_with(
                r#","tcp":{"outcome":"closed","decided":true,"syn_retries":1,"fwd":{"retrans":{"packets":0,"bytes":0},"rst":0,"fin":1},"rev":{"retrans":{"packets":1,"bytes":100},"rst":0,"fin":1}}}"#
            ),
            "{j}"
        );
        assert_eq!(tcp_text(Some(&t)), "closed* rtx0/1 syn+1");
        assert_eq!(tcp_text(None), "-");
        let mut w = Window {
            flows: vec![f],
            tcp_health: true,
            ..Default::default()
        };
        assert!(w.render_table(5).contains("closed* rtx0/1 syn+1"));
        assert!(w.to_json().ends_with(r#","tcp_health":true}"#));
        w.tcp_health = false;
        assert!(w.to_json().ends_with(r#"]}"#));
        let u = unanswered(&k, &now, |n| n);
        let ut = u.tcp.unwrap();
        assert_eq!((ut.outcome, ut.decided), (Outcome::Unanswered, true));
        assert_eq!(u.total(), Count::default());
    }

    fn fd(last: u8) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        a[15] = last;
        a
    }

    #[test]
    fn rtt_is_reported_only_with_samples() {
        let k = key([10, 0, 0, 1], 80, [10, 0, 0, 2], 40000, 6);
        let mut now = FlowCounters::counted([1, 1], [0, 0]);
        let delta = counts([1, 1], [0, 0]);
        let r = flow(&k, &now, &delta, |n| n, false);
        assert_eq!(r.rtt, None);
        let v: serde_json::Value = serde_json::to_value(r).unwrap();
        assert!(v.get("rtt_us").is_none());

        now.rtt.syn_sent(7, 1_000_000);
        let us = now.rtt.ack_received(8, 21_000_000).unwrap();
        now.rtt.add_sample(us);
        now.rtt.add_sample(22_000);
        let delta = Counts {
            rtt_samples: 1,
            ..delta
        };
        let r = flow(&k, &now, &delta, |n| n, false);
        let v: serde_json::Value = serde_json::to_value(r).unwrap();
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
        assert_eq!(d, counts([3, 0], [300, 0]));
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
