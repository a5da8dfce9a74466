//! DNS in the real programs, fed crafted frames through BPF_PROG_TEST_RUN: queries and
//! responses counted into the flow's DNS state (`shared::dns::DnsState`, map `DNS_FLOWS`)
//! with their RCODE, latency matched by transaction id, the latest name and type; malformed
//! port-53 payloads (truncated header, a label past the packet, a pointer loop, no question,
//! a name too long) pass, count as traffic, and are counted by reason; with DNS off a
//! port-53 packet touches no DNS state at all. `dns_live.rs` has a real server.

use aya::programs::TestRun;
use aya::programs::TestRunOptions;
use edge::probe::{
    bpf::{self, LoadOptions, Loaded},
    maps::{Maps, Stats},
};
use shared::{
    craft::Packet,
    dns::{DnsState, NOERROR, NXDOMAIN, REFUSED, SERVFAIL},
    Count, FlowKey, Stat,
};
use std::sync::{Mutex, MutexGuard, OnceLock};
use testkit::verdict::{TC_ACT_UNSPEC, XDP_PASS};

const C: [u8; 4] = [10, 0, 0, 1];
const S: [u8; 4] = [10, 0, 0, 53];

#[derive(Clone, Copy, Debug)]
enum Hook {
    Xdp,
    Tc,
}

struct Progs {
    loaded: Loaded,
    maps: Maps,
}

fn load(dns: bool) -> Progs {
    let mut loaded = bpf::load(LoadOptions {
        max_flows: 1024,
        sample_every: 1,
        rtt: None,
        tcp_health: true,
        dns,
        owner: None,
    })
    .expect("loading the programs");
    let maps = Maps::take(&mut loaded.ebpf).unwrap();
    Progs { loaded, maps }
}

/// One load with DNS on for the tests that need it (the verifier takes seconds per load).
fn progs() -> MutexGuard<'static, Progs> {
    static P: OnceLock<Mutex<Progs>> = OnceLock::new();
    P.get_or_init(|| Mutex::new(load(true)))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

impl Progs {
    /// Runs `frame`; the stats it moved.
    fn run(&mut self, hook: Hook, frame: &[u8]) -> Stats {
        let s0 = self.maps.stats.read().unwrap();
        let opts = TestRunOptions {
            data_in: Some(frame),
            ..Default::default()
        };
        let rc = match hook {
            Hook::Xdp => bpf::xdp(&mut self.loaded.ebpf).test_run(opts),
            Hook::Tc => bpf::tc(&mut self.loaded.ebpf).test_run(opts),
        }
        .unwrap()
        .return_value;
        let want = match hook {
            Hook::Xdp => XDP_PASS,
            Hook::Tc => TC_ACT_UNSPEC,
        };
        assert_eq!(rc, want, "{hook:?} passes every frame on");
        let s1 = self.maps.stats.read().unwrap();
        std::array::from_fn(|i| s1[i].delta_since(&s0[i]))
    }

    fn dns(&self, client_port: u16) -> Option<DnsState> {
        self.maps
            .dns
            .flows()
            .unwrap()
            .into_iter()
            .find(|(k, _)| key_has_port(k, client_port))
            .map(|(_, v)| v)
    }
}

fn key_has_port(k: &FlowKey, port: u16) -> bool {
    k.port_a == port || k.port_b == port
}

/// A DNS message: header (id, flags, qdcount) and one question (`name` in wire form, type).
fn message(id: u16, flags: u16, qd: u16, name: &[u8], qtype: u16) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(id.to_be_bytes());
    b.extend(flags.to_be_bytes());
    b.extend(qd.to_be_bytes());
    b.extend([0u8; 6]);
    b.extend(name);
    b.extend(qtype.to_be_bytes());
    b.extend(1u16.to_be_bytes());
    b
}

/// A UDP frame `from:sport → to:dport` carrying `payload`.
fn frame(from: [u8; 4], to: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Packet::udp4(from, to, sport, dport, payload.len()).build();
    let at = f.len() - payload.len();
    f[at..].copy_from_slice(payload);
    f
}

fn query(port: u16, id: u16, name: &[u8], qtype: u16) -> Vec<u8> {
    frame(C, S, port, 53, &message(id, 0x0100, 1, name, qtype))
}

fn response(port: u16, id: u16, rcode: u16, name: &[u8], qtype: u16) -> Vec<u8> {
    frame(S, C, 53, port, &message(id, 0x8180 | rcode, 1, name, qtype))
}

fn moved(d: &Stats) -> Vec<(Stat, u64)> {
    Stat::ALL
        .iter()
        .filter(|s| !matches!(s, Stat::Seen | Stat::Parsed))
        .map(|s| (*s, d[*s as usize].packets))
        .filter(|(_, n)| *n != 0)
        .collect()
}

#[test]
fn queries_and_responses_match_by_id_with_their_rcode_name_and_type() {
    let mut p = progs();
    let name = b"\x03www\x07example\x03com\x00";
    for (i, hook) in [Hook::Xdp, Hook::Tc].into_iter().enumerate() {
        let port = 40_000 + i as u16;
        // Two queries (A and AAAA, as a stub resolver sends them), answered out of order,
        // one NXDOMAIN one NOERROR; a stray response; a SERVFAIL and a REFUSED answer.
        for (f, want) in [
            (query(port, 0x1111, name, 1), vec![(Stat::DnsMessages, 1)]),
            (query(port, 0x2222, name, 28), vec![(Stat::DnsMessages, 1)]),
        ] {
            assert_eq!(moved(&p.run(hook, &f)), want, "{hook:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        for f in [
            response(port, 0x2222, 3, name, 28),
            response(port, 0x1111, 0, name, 1),
            response(port, 0x7777, 0, name, 1),
            response(port, 0x1111, 2, name, 1),
            response(port, 0x1111, 5, name, 1),
        ] {
            assert_eq!(moved(&p.run(hook, &f)), vec![(Stat::DnsMessages, 1)]);
        }
        let st = p.dns(port).expect("the flow has DNS state");
        assert_eq!((st.queries, st.responses), (2, 5), "{hook:?}");
        assert_eq!(
            (
                st.rcodes[NOERROR],
                st.rcodes[NXDOMAIN],
                st.rcodes[SERVFAIL],
                st.rcodes[REFUSED]
            ),
            (2, 1, 1, 1)
        );
        // Matched: the two queries' responses, ≥ 20 ms after them; nothing left pending.
        assert_eq!(st.samples, 2, "{hook:?}");
        assert!(st.min_us >= 20_000 && st.max_us < 2_000_000, "{st:?}");
        assert_eq!(st.outstanding(), 0);
        assert_eq!((st.qtype, st.name_len as usize), (28, name.len()));
        assert_eq!(&st.name[..name.len()], name);
        // The flow's packets were counted as any UDP flow's.
        let flows = {
            let mut v = Vec::new();
            p.maps.table.read_flows(&mut v);
            v
        };
        let (_, c) = flows.iter().find(|(k, _)| key_has_port(k, port)).unwrap();
        assert_eq!(c.packets()[0] + c.packets()[1], 7);
    }
}

#[test]
fn a_full_pending_set_pushes_out_the_oldest_as_unanswered() {
    let mut p = progs();
    let port = 41_000;
    for id in 0..4u16 {
        assert_eq!(
            moved(&p.run(Hook::Xdp, &query(port, id, b"\x01a\x00", 1))),
            vec![(Stat::DnsMessages, 1)]
        );
    }
    assert_eq!(
        moved(&p.run(Hook::Xdp, &query(port, 9, b"\x01a\x00", 1))),
        vec![(Stat::DnsMessages, 1), (Stat::DnsEvicted, 1)]
    );
    let st = p.dns(port).unwrap();
    assert_eq!((st.queries, st.evicted, st.outstanding()), (5, 1, 4));
    // The pushed-out id 0 no longer matches; id 1 does.
    p.run(Hook::Tc, &response(port, 0, 0, b"\x01a\x00", 1));
    p.run(Hook::Tc, &response(port, 1, 0, b"\x01a\x00", 1));
    let st = p.dns(port).unwrap();
    assert_eq!((st.responses, st.samples, st.outstanding()), (2, 1, 3));
}

#[test]
fn malformed_payloads_pass_count_as_traffic_and_by_reason() {
    let mut p = progs();
    let mut long = Vec::new();
    for _ in 0..5 {
        long.push(60u8);
        long.extend([b'a'; 60]);
    }
    long.push(0);
    let good = message(1, 0x0100, 1, b"\x01a\x00", 1);
    let cases: Vec<(&str, Vec<u8>, Stat)> = vec![
        ("truncated header", good[..7].to_vec(), Stat::DnsBadHeader),
        (
            "label past the packet",
            message(1, 0x0100, 1, b"\x3fabc", 1)[..16].to_vec(),
            Stat::DnsBadLabel,
        ),
        (
            "question cut before its type",
            good[..good.len() - 3].to_vec(),
            Stat::DnsBadLabel,
        ),
        (
            "pointer loop",
            message(1, 0x0100, 1, b"\xc0\x0c", 1),
            Stat::DnsPointer,
        ),
        (
            "pointer after a label",
            message(1, 0x8180, 1, b"\x01a\xc0\x0c", 1),
            Stat::DnsPointer,
        ),
        (
            "zero questions",
            message(1, 0x0100, 0, b"\x01a\x00", 1),
            Stat::DnsNoQuestion,
        ),
        (
            "name too long",
            message(1, 0x0100, 1, &long, 1),
            Stat::DnsLongName,
        ),
    ];
    for hook in [Hook::Xdp, Hook::Tc] {
        for (i, (what, payload, stat)) in cases.iter().enumerate() {
            let port = 42_000 + i as u16 + if matches!(hook, Hook::Tc) { 100 } else { 0 };
            let f = frame(C, S, port, 53, payload);
            let d = p.run(hook, &f);
            assert_eq!(d[Stat::Parsed as usize].packets, 1, "{hook:?} {what}");
            assert_eq!(moved(&d), vec![(*stat, 1)], "{hook:?} {what}");
            assert!(p.dns(port).is_none(), "{hook:?} {what}: no DNS state");
        }
    }
}

#[test]
fn with_dns_off_a_port_53_packet_touches_nothing_of_dns() {
    let mut p = load(false);
    for hook in [Hook::Xdp, Hook::Tc] {
        let d = p.run(hook, &query(43_000, 1, b"\x01a\x00", 1));
        assert_eq!(
            d[Stat::Parsed as usize],
            Count {
                packets: 1,
                bytes: 20 + 8 + 12 + 3 + 4
            }
        );
        assert_eq!(moved(&d), vec![], "{hook:?}");
        let d = p.run(hook, &frame(C, S, 43_001, 53, b"\x00\x01"));
        assert_eq!(moved(&d), vec![], "{hook:?}: not even malformed");
    }
    assert!(p.maps.dns.flows().unwrap().is_empty());
}
