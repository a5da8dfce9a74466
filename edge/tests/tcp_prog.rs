//! TCP health in the real programs (`shared::conn`), fed crafted segments through
//! BPF_PROG_TEST_RUN at XDP and TC: retransmissions (a GSO aggregate by its segments, across
//! the sequence wrap, IPv4 and IPv6), RST/FIN/SYN counts and the outcome the agent reads off
//! them (refused, closed, SYN retries unanswered), exact; and nothing counted when it is off.

use aya::programs::{TestRun, TestRunOptions};
use edge::probe::{
    bpf::{self, LoadOptions, Loaded},
    maps::Maps,
};
use shared::{
    conn::{self, Outcome},
    craft::{Ip, Packet, L4},
    flow::tcp::{ACK, FIN, PSH, RST, SYN},
    FlowCounters, FlowKey,
};
use std::sync::{Mutex, MutexGuard, OnceLock};
use testkit::verdict::{TC_ACT_UNSPEC, XDP_PASS};

struct Progs {
    loaded: Loaded,
    maps: Maps,
}

fn load(tcp_health: bool) -> Progs {
    let mut loaded = bpf::load(LoadOptions {
        max_flows: 1024,
        sample_every: 1,
        rtt: Some(Default::default()),
        tcp_health,
        owner: None,
        dns: true,
    })
    .expect("loading the programs");
    let maps = Maps::take(&mut loaded.ebpf).unwrap();
    Progs { loaded, maps }
}

/// One load for the file (the verifier takes seconds); each test uses its own ports.
fn progs() -> MutexGuard<'static, Progs> {
    static PROGS: OnceLock<Mutex<Progs>> = OnceLock::new();
    PROGS
        .get_or_init(|| Mutex::new(load(true)))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Copy, Debug)]
enum Hook {
    Xdp,
    Tc,
    TcEgress,
}

/// `__sk_buff` for `ctx_in` with `gso_segs` and `gso_size` (as in prog_test_run.rs).
fn skb_ctx(gso_segs: u32, gso_size: u32) -> [u8; 192] {
    let mut c = [0u8; 192];
    c[164..168].copy_from_slice(&gso_segs.to_ne_bytes());
    c[176..180].copy_from_slice(&gso_size.to_ne_bytes());
    c
}

/// A TCP segment `from:sport → to:dport` with `flags`, `seq` and `len` payload bytes.
fn seg(v6: bool, from: u8, sport: u16, dport: u16, flags: u8, seq: u32, len: usize) -> Vec<u8> {
    let (a, b) = if from == 1 { (1, 2) } else { (2, 1) };
    let mut p = Packet::tcp4([10, 0, 0, a], [10, 0, 0, b], sport, dport, flags);
    if v6 {
        let x = |l: u8| {
            let mut x = [0u8; 16];
            x[0] = 0xfd;
            x[15] = l;
            x
        };
        p.ip = Ip::V6 {
            src: x(a),
            dst: x(b),
            ext: Vec::new(),
        };
    }
    if let L4::Tcp { seq: s, ack, .. } = &mut p.l4 {
        *s = seq;
        *ack = 1;
    }
    p.payload = len;
    p.build()
}

impl Progs {
    fn run(&mut self, hook: Hook, frame: &[u8], gso: Option<(u32, u32)>) {
        let ctx = gso.map(|(n, size)| skb_ctx(n, size));
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: ctx.as_ref().map(|c| &c[..]),
            ..Default::default()
        };
        let (r, want) = match hook {
            Hook::Xdp => (bpf::xdp(&mut self.loaded.ebpf).test_run(opts), XDP_PASS),
            Hook::Tc => (bpf::tc(&mut self.loaded.ebpf).test_run(opts), TC_ACT_UNSPEC),
            Hook::TcEgress => (
                bpf::tc_egress(&mut self.loaded.ebpf).test_run(opts),
                TC_ACT_UNSPEC,
            ),
        };
        assert_eq!(r.expect("test run").return_value, want, "{hook:?}");
    }

    /// The entry of the flow `frame` belongs to.
    fn entry(&self, frame: &[u8]) -> FlowCounters {
        let mut key: FlowKey = shared::parse(frame, None).unwrap().key;
        // Test runs happen on the loopback device, at every hook.
        key.ifindex = 1;
        self.maps.table.get(&key).expect("the segment's flow")
    }
}

/// (retransmitted segments, bytes) a → b and b → a.
fn retrans(c: &FlowCounters) -> [(u64, u64); 2] {
    [0, 1].map(|d| (c.dir[d].retrans_segs, c.dir[d].retrans_bytes))
}

#[test]
fn a_segment_at_or_below_the_high_mark_is_a_retransmission() {
    let mut p = progs();
    for (i, (hook, v6)) in [
        (Hook::Xdp, false),
        (Hook::Tc, false),
        (Hook::TcEgress, false),
        (Hook::Xdp, true),
        (Hook::TcEgress, true),
    ]
    .into_iter()
    .enumerate()
    {
        let sport = 42000 + i as u16;
        let s = |seq: u32, len: usize| seg(v6, 1, sport, 80, ACK | PSH, seq, len);
        // Across the sequence wrap: 2^32 - 100 .. 2^32 + 100.
        let base = u32::MAX - 99;
        p.run(hook, &s(base, 100), None);
        p.run(hook, &s(base.wrapping_add(100), 100), None);
        assert_eq!(
            retrans(&p.entry(&s(base, 100))),
            [(0, 0); 2],
            "{hook:?} new data"
        );
        // The first again, a part of the second, and a pure ACK (no data: never counted).
        p.run(hook, &s(base, 100), None);
        p.run(hook, &s(base.wrapping_add(150), 50), None);
        p.run(hook, &s(base.wrapping_add(200), 0), None);
        let e = p.entry(&s(base, 100));
        assert_eq!(retrans(&e), [(2, 150), (0, 0)], "{hook:?} v6 {v6}");
        // One byte past the high mark is new data and moves it.
        p.run(hook, &s(base.wrapping_add(200), 1), None);
        p.run(hook, &s(base.wrapping_add(200), 1), None);
        let e = p.entry(&s(base, 100));
        assert_eq!(retrans(&e), [(3, 151), (0, 0)], "{hook:?} v6 {v6}");
        assert_eq!((e.dir[0].rst, e.dir[0].fin, e.syns), (0, 0, 0));
    }
}

#[test]
fn an_aggregate_counts_by_its_segments() {
    let mut p = progs();
    for (i, hook) in [Hook::Tc, Hook::TcEgress].into_iter().enumerate() {
        let sport = 43000 + i as u16;
        let s = |seq: u32, len: usize| seg(false, 2, 80, sport, ACK, seq, len);
        // 4 x 500 bytes as one GSO skb, then the same again (a retransmitted burst).
        p.run(hook, &s(5000, 2000), Some((4, 500)));
        p.run(hook, &s(5000, 2000), Some((4, 500)));
        let e = p.entry(&s(5000, 2000));
        // 10.0.0.2 → 10.0.0.1 is b → a.
        assert_eq!(retrans(&e), [(0, 0), (4, 2000)], "{hook:?}");
    }
}

#[test]
fn refused_closed_and_unanswered_connections() {
    let mut p = progs();
    for (i, hook) in [Hook::Xdp, Hook::TcEgress].into_iter().enumerate() {
        let c = 44000 + 10 * i as u16;
        // Refused: SYN, answered by RST-ACK.
        p.run(hook, &seg(false, 1, c, 81, SYN, 100, 0), None);
        p.run(hook, &seg(false, 2, 81, c, RST | ACK, 0, 0), None);
        let e = p.entry(&seg(false, 1, c, 81, SYN, 100, 0));
        assert_eq!(conn::outcome(&e), Outcome::Refused, "{hook:?}");
        assert_eq!((e.syns, e.dir[0].rst, e.dir[1].rst), (1, 0, 1));
        assert!(!conn::unanswered(&e));

        // Unanswered: a SYN and two retries, nothing back.
        for _ in 0..3 {
            p.run(hook, &seg(false, 1, c + 1, 82, SYN, 100, 0), None);
        }
        let e = p.entry(&seg(false, 1, c + 1, 82, SYN, 100, 0));
        assert_eq!(conn::outcome(&e), Outcome::Connecting);
        assert_eq!(conn::syn_retries(&e), 2, "{hook:?}");
        assert!(conn::unanswered(&e));

        // Established, data, then FIN both ways: closed, one FIN each way.
        let s = |from: u8, flags: u8, seq: u32, len: usize| {
            let (sp, dp) = if from == 1 { (c + 2, 83) } else { (83, c + 2) };
            seg(false, from, sp, dp, flags, seq, len)
        };
        p.run(hook, &s(1, SYN, 1000, 0), None);
        p.run(hook, &s(2, SYN | ACK, 9000, 0), None);
        p.run(hook, &s(1, ACK, 1001, 0), None);
        assert_eq!(
            conn::outcome(&p.entry(&s(1, ACK, 1, 0))),
            Outcome::Established
        );
        p.run(hook, &s(1, ACK | PSH, 1001, 10), None);
        p.run(hook, &s(1, FIN | ACK, 1011, 0), None);
        p.run(hook, &s(2, FIN | ACK, 9001, 0), None);
        let e = p.entry(&s(1, ACK, 1, 0));
        assert_eq!(conn::outcome(&e), Outcome::Closed, "{hook:?}");
        assert_eq!((e.dir[0].fin, e.dir[1].fin, e.syns), (1, 1, 1));
        assert_eq!(retrans(&e), [(0, 0); 2]);

        // Reset after data.
        let r = |from: u8, flags: u8, len: usize| {
            let (sp, dp) = if from == 1 { (c + 3, 84) } else { (84, c + 3) };
            seg(false, from, sp, dp, flags, 1, len)
        };
        p.run(hook, &r(1, SYN, 0), None);
        p.run(hook, &r(2, SYN | ACK, 0), None);
        p.run(hook, &r(1, ACK, 0), None);
        p.run(hook, &r(1, ACK | PSH, 500), None);
        p.run(hook, &r(2, RST | ACK, 0), None);
        let e = p.entry(&r(1, ACK, 0));
        assert_eq!(conn::outcome(&e), Outcome::Reset, "{hook:?}");
        assert_eq!((e.dir[0].rst, e.dir[1].rst), (0, 1));
    }
}

/// Off, the programs count none of it (the same segments as above).
#[test]
fn off_counts_nothing() {
    let mut p = load(false);
    let s = |flags, seq, len| seg(false, 1, 45000, 80, flags, seq, len);
    for hook in [Hook::Xdp, Hook::TcEgress] {
        for f in [
            s(SYN, 1, 0),
            s(ACK, 2, 100),
            s(ACK, 2, 100),
            s(RST | FIN, 3, 0),
        ] {
            p.run(hook, &f, None);
        }
    }
    let e = p.entry(&s(ACK, 2, 100));
    assert_eq!(e.packets()[0], 8);
    assert_eq!(retrans(&e), [(0, 0); 2]);
    assert_eq!(
        (e.syns, e.dir[0].rst, e.dir[0].fin, e.dir[0].seq_known),
        (0, 0, 0, 0)
    );
}
