//! RTT bookkeeping of the loaded programs, fed crafted TCP segments through
//! BPF_PROG_TEST_RUN (TC egress program for what leaves, TC ingress for what arrives): which
//! segment arms what, which answers it, a retransmitted SYN, the pending map filling up and
//! being counted, and the agent sweeping it. Timing itself is proven through a delay line in
//! `rtt.rs`; here the samples are microseconds of the test run.

use aya::programs::{TestRun, TestRunOptions};
use edge::probe::{
    bpf::{self, LoadOptions, Loaded, RttOptions},
    maps::Maps,
};
use shared::{
    craft::{Packet, L4},
    flow::tcp,
    parse::parse,
    rtt::FlowRtt,
    FlowKey, Stat,
};
use std::{
    sync::{Mutex, MutexGuard, OnceLock},
    time::Duration,
};
use testkit::verdict::TC_ACT_UNSPEC;

const A: [u8; 4] = [10, 0, 0, 1];
const B: [u8; 4] = [10, 0, 0, 2];
/// Entries in the flow table, and so in the pending map.
const MAX_FLOWS: u32 = 16;

struct Progs {
    loaded: Loaded,
    maps: Maps,
}

/// One load for the file (the verifier takes seconds); tests take turns.
fn progs() -> MutexGuard<'static, Progs> {
    static PROGS: OnceLock<Mutex<Progs>> = OnceLock::new();
    let mut p = PROGS
        .get_or_init(|| {
            let mut loaded = bpf::load(LoadOptions {
                max_flows: MAX_FLOWS,
                sample_every: 1,
                // Every new TSval is armed: no waiting in these tests.
                rtt: Some(RttOptions {
                    interval: Duration::ZERO,
                }),
                tcp_health: true,
                owner: None,
                dns: true,
            })
            .expect("loading the programs");
            let maps = Maps::take(&mut loaded.ebpf).unwrap();
            Mutex::new(Progs { loaded, maps })
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // Each test starts with nothing pending.
    p.maps.rtt.sweep_pending(u64::MAX).unwrap();
    p
}

/// A TCP segment `from:fport → to:tport` with this sequence, acknowledgement and (optional)
/// timestamp option (NOP NOP TS, as Linux sends it).
fn seg(
    from: ([u8; 4], u16),
    to: ([u8; 4], u16),
    flags: u8,
    seq: u32,
    ack: u32,
    ts: Option<(u32, u32)>,
) -> Vec<u8> {
    let mut options = Vec::new();
    if let Some((val, ecr)) = ts {
        options.extend([1, 1, 8, 10]);
        options.extend(val.to_be_bytes());
        options.extend(ecr.to_be_bytes());
    }
    let mut p = Packet::tcp4(from.0, to.0, from.1, to.1, flags);
    p.l4 = L4::Tcp {
        sport: from.1,
        dport: to.1,
        flags,
        seq,
        ack,
        options,
    };
    p.build()
}

impl Progs {
    fn egress(&mut self, frame: &[u8]) {
        let r = bpf::tc_egress(&mut self.loaded.ebpf)
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..Default::default()
            })
            .expect("test run");
        assert_eq!(r.return_value, TC_ACT_UNSPEC);
    }

    fn ingress(&mut self, frame: &[u8]) {
        let r = bpf::tc(&mut self.loaded.ebpf)
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..Default::default()
            })
            .expect("test run");
        assert_eq!(r.return_value, TC_ACT_UNSPEC);
    }

    /// The RTT state of the flow `frame` belongs to (as the programs keyed it).
    fn rtt(&self, frame: &[u8]) -> FlowRtt {
        let key = self.key(frame);
        self.maps.table.get(&key).expect("a flow entry").rtt
    }

    fn key(&self, frame: &[u8]) -> FlowKey {
        let mut key = parse(frame, None).unwrap().key;
        // Test runs of TC programs happen on the loopback device.
        key.ifindex = 1;
        key
    }

    fn pending_full(&self) -> u64 {
        self.maps.stats.read().unwrap()[Stat::RttPendingFull as usize].packets
    }

    fn remove(&mut self, frame: &[u8]) {
        let key = self.key(frame);
        self.maps.table.remove(&key);
    }
}

#[test]
fn outbound_handshake_is_syn_to_syn_ack() {
    let mut p = progs();
    let (c, s) = ((A, 41000), (B, 80));
    let syn = seg(c, s, tcp::SYN, 1000, 0, Some((5, 0)));
    p.egress(&syn);
    let r = p.rtt(&syn);
    assert_ne!(r.hs_sent_us, 0, "armed");
    assert_eq!(r.samples, 0);
    // Acknowledges something else: no sample.
    p.ingress(&seg(s, c, tcp::SYN | tcp::ACK, 9000, 77, Some((50, 5))));
    assert_eq!(p.rtt(&syn).samples, 0);
    p.ingress(&seg(s, c, tcp::SYN | tcp::ACK, 9000, 1001, Some((50, 5))));
    let r = p.rtt(&syn);
    assert_eq!(r.samples, 1, "{r:?}");
    assert!(r.handshake_us >= 1 && r.handshake_us < 1_000_000, "{r:?}");
    assert_eq!(r.min_us, r.handshake_us);
    assert_eq!(r.hs_sent_us, 0, "answered");
    p.remove(&syn);
}

#[test]
fn inbound_handshake_is_syn_ack_to_ack() {
    let mut p = progs();
    let (c, s) = ((B, 42000), (A, 443));
    let syn = seg(c, s, tcp::SYN, 300, 0, None);
    p.ingress(&syn);
    assert_eq!(p.rtt(&syn).hs_sent_us, 0, "an arriving SYN arms nothing");
    p.egress(&seg(s, c, tcp::SYN | tcp::ACK, 7000, 301, None));
    p.ingress(&seg(c, s, tcp::ACK, 301, 7001, None));
    let r = p.rtt(&syn);
    assert_eq!((r.samples, r.handshake_us != 0), (1, true), "{r:?}");
    p.remove(&syn);
}

#[test]
fn retransmitted_syn_gives_no_handshake_sample() {
    let mut p = progs();
    let (c, s) = ((A, 43000), (B, 80));
    let syn = seg(c, s, tcp::SYN, 50, 0, None);
    p.egress(&syn);
    p.egress(&syn);
    p.ingress(&seg(s, c, tcp::SYN | tcp::ACK, 1, 51, None));
    let r = p.rtt(&syn);
    assert_eq!((r.samples, r.handshake_us), (0, 0), "{r:?}");
    p.remove(&syn);
}

#[test]
fn first_echo_of_a_tsval_is_the_sample() {
    let mut p = progs();
    let (c, s) = ((A, 44000), (B, 80));
    let data = seg(c, s, tcp::ACK | tcp::PSH, 10, 20, Some((100, 7)));
    p.egress(&data);
    // The same TSval again is not armed twice.
    p.egress(&data);
    assert_eq!(p.maps.rtt.pending_count(), 1);
    // An echo of something else, then the echo of 100, then 100 again.
    p.ingress(&seg(s, c, tcp::ACK, 20, 42, Some((9, 99))));
    assert_eq!(p.rtt(&data).samples, 0);
    p.ingress(&seg(s, c, tcp::ACK, 20, 42, Some((9, 100))));
    p.ingress(&seg(s, c, tcp::ACK, 20, 42, Some((10, 100))));
    let r = p.rtt(&data);
    assert_eq!(r.samples, 1, "{r:?}");
    assert!(r.min_us >= 1 && r.min_us < 1_000_000);
    // Matched entries leave the pending map.
    assert_eq!(p.maps.rtt.pending_count(), 0);
    p.remove(&data);
}

#[test]
fn a_full_pending_map_is_counted_and_swept() {
    let mut p = progs();
    let (c, s) = ((A, 45000), (B, 80));
    let before = p.pending_full();
    let extra = 5;
    for tsval in 1..=MAX_FLOWS + extra {
        p.egress(&seg(c, s, tcp::ACK, tsval, 1, Some((tsval, 1))));
    }
    assert_eq!(p.pending_full() - before, extra as u64);
    assert_eq!(p.maps.rtt.pending_count(), MAX_FLOWS as usize);
    // Nothing left before time 0; everything before "the end of time".
    assert_eq!(p.maps.rtt.sweep_pending(0).unwrap(), 0);
    assert_eq!(p.maps.rtt.sweep_pending(u64::MAX).unwrap(), MAX_FLOWS);
    assert_eq!(p.maps.rtt.pending_count(), 0);
    // Room again.
    let last = seg(c, s, tcp::ACK, 999, 1, Some((999, 1)));
    p.egress(&last);
    assert_eq!(p.pending_full() - before, extra as u64);
    p.remove(&last);
}
