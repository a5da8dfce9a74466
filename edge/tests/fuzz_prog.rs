//! Packet fuzzing of the loaded programs through BPF_PROG_TEST_RUN: generated, truncated,
//! mutated and random frames into XDP, TC ingress and TC egress (RTT tracking on, as the agent
//! loads them by default).
//!
//! Every run must return XDP_PASS / TC_ACT_UNSPEC (no verdict); the kernel may refuse only
//! the frames its test run refuses before any program runs (see `refused`). The programs'
//! counts are checked against the host parser (`shared::parse`, the same code) over a model
//! of the programs' reads, batch by batch: each stat's packets and bytes, and each flow's
//! counters per direction and TCP flags. So a frame counted twice (as a flow and as a parse
//! failure, or under two stats) or not at all fails the test, as does the kernel and host
//! parser disagreeing about any frame. A failing batch is replayed frame by frame to name the
//! frame.
//!
//! UDP port-53 frames carry DNS messages (well-formed, cut, mutated: bad label lengths,
//! pointers, pointer loops, no question, long names) most of the time, read on the host by
//! `shared::dns` as the programs read them: each frame's DNS verdict (a message, or the reason
//! it is not one) and each DNS flow's state (counts, RCODEs, pending ids pushed out, matched
//! responses, the latest name and type) must agree too, and the DNS stats never stand for a
//! frame of their own (they count frames already counted as traffic).
//!
//! `EDGEFLOW_FUZZ_FRAMES` (default 100,000 per hook) and `EDGEFLOW_FUZZ_SEED` reproduce or
//! extend a run.

use aya::programs::{ProgramError, TestRun, TestRunOptions};
use edge::probe::{
    bpf::{self, LoadOptions, Loaded},
    maps::Maps,
};
use shared::{
    craft::{ext_body, frag_body, Ip, Packet, L4, TPID_8021AD, TPID_8021Q},
    dns::{self, DnsState, Malformed},
    parse::{parse, Bytes, Frame, IPPROTO_UDP},
    Count, FlowCounters, FlowKey, Stat,
};
use std::{collections::HashMap, time::Instant};
use testkit::{
    rng::Rng,
    verdict::{TC_ACT_UNSPEC, XDP_PASS},
};

const EINVAL: i32 = 22;
/// Frames per batch: the table (below) never fills, so every parsed frame has its own key's
/// entry and the per-key comparison is exact.
const BATCH: usize = 256;
const TABLE: u32 = 1024;
/// Furthest offset the programs start a header read at (`MAX_OFF` in edge-ebpf/src/main.rs).
const MAX_OFF: usize = 512;
/// Largest frame generated: TC's test run refuses a 9 KB one, and takes 3 KB.
const MAX_FRAME: usize = 3000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    Xdp,
    TcIngress,
    TcEgress,
}

/// A few addresses and ports, so frames of one batch share flows in both directions.
fn v4(r: &mut Rng) -> [u8; 4] {
    [10, 0, r.below(2) as u8, 1 + r.below(3) as u8]
}
fn v6(r: &mut Rng) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[15] = 1 + r.below(3) as u8;
    a
}
fn port(r: &mut Rng) -> u16 {
    r.pick(&[53, 80, 443, 8080, 40000, 51234, 0, 65535])
}

/// A well-formed frame of any shape the crafter knows.
fn crafted(r: &mut Rng) -> Packet {
    let l4 = match r.below(4) {
        0 => {
            let any = r.byte();
            let mut options = Vec::new();
            if r.chance(50) {
                // NOP NOP TS, as Linux sends it, so the RTT paths run.
                options.extend_from_slice(&[1, 1, 8, 10]);
                options.extend_from_slice(&r.bytes(8));
            } else if r.chance(30) {
                let n = r.below(41);
                options = r.bytes(n);
            }
            L4::Tcp {
                sport: port(r),
                dport: port(r),
                flags: r.pick(&[0x02, 0x12, 0x10, 0x18, 0x11, 0x04, any]),
                seq: 1,
                ack: 0,
                options,
            }
        }
        1 => L4::Udp {
            sport: port(r),
            dport: port(r),
        },
        2 => {
            let any = r.byte();
            L4::Icmp {
                ty: r.pick(&[0, 8, 3, 11, 128, 129, 135, 136, any]),
                code: r.below(4) as u8,
            }
        }
        _ => {
            let any = r.byte();
            L4::Raw(r.pick(&[47, 50, 132, 255, any]))
        }
    };
    let ip = match r.below(10) {
        0..=4 => Ip::V4 {
            src: v4(r),
            dst: v4(r),
            options: if r.chance(20) {
                let n = r.below(41);
                r.bytes(n)
            } else {
                Vec::new()
            },
            frag: if r.chance(10) {
                r.pick(&[0x2000, 0x0001, 0x2010, 0x4000])
            } else {
                0
            },
        },
        5..=8 => {
            let mut ext = Vec::new();
            if r.chance(30) {
                // Sometimes long options: the L4 header then sits around the programs' read
                // limit (MAX_OFF), whose both sides the model must get right.
                let units = if r.chance(30) { 60 } else { 3 };
                for _ in 0..r.below(8) {
                    let ty = r.pick(&[0u8, 43, 60, 44, 51]);
                    let body = match ty {
                        44 => frag_body(r.pick(&[0, 0, 1, 100]), r.chance(50)),
                        51 => vec![0u8; 6 + 4 * r.below(3)],
                        _ => ext_body(r.below(units)),
                    };
                    ext.push((ty, body));
                }
            }
            Ip::V6 {
                src: v6(r),
                dst: v6(r),
                ext,
            }
        }
        _ => Ip::Other {
            ethertype: r.pick(&[0x0806, 0x88cc, 0x8847, 0x0800, 0x86dd, 0x05dc]),
        },
    };
    let vlans = (0..r.pick(&[0, 0, 0, 1, 2, 3]))
        .map(|_| {
            (
                r.pick(&[TPID_8021Q, TPID_8021AD, 0x9100]),
                r.below(4096) as u16,
            )
        })
        .collect();
    let payload = if r.chance(5) {
        r.below(MAX_FRAME - 200)
    } else {
        r.below(120)
    };
    Packet {
        vlans,
        ip,
        l4,
        payload,
    }
}

/// Values that sit on parser edges: versions, header lengths, protocols, ext types, TPIDs.
const INTERESTING: &[u8] = &[
    0, 1, 2, 4, 5, 6, 0x0f, 0x10, 0x11, 0x20, 0x40, 0x44, 0x45, 0x4f, 0x50, 0x60, 0x7f, 0x80, 0x81,
    0x86, 0x88, 0x91, 0xa8, 0xdd, 0xf0, 0xff, 8, 17, 43, 44, 51, 58, 60,
];

/// One frame to feed: crafted, cut short, mutated, or random; at most `MAX_FRAME` bytes
/// (XDP's test run hands the program only the first 3,520 bytes of a longer frame, as
/// multi-buffer data the program cannot see; prog_test_run.rs covers that on its own).
fn frame(r: &mut Rng) -> Vec<u8> {
    let mut f = any_frame(r);
    f.truncate(MAX_FRAME);
    f
}

/// A DNS message as a fuzzer would have it: a header with any flags and RCODE, 0 to 2
/// questions, and a first name of labels that may be too long for the packet, compression
/// pointers (to the header: a loop) or reserved forms, or longer than 255 bytes in all.
fn dns_message(r: &mut Rng) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend((r.below(8) as u16).to_be_bytes()); // few ids: responses match queries
    let flags = r.pick(&[0x0100u16, 0x8180, 0x8183, 0x8182, 0x8185, 0x8189, 0]);
    b.extend(flags.to_be_bytes());
    b.extend(r.pick(&[1u16, 1, 1, 0, 2]).to_be_bytes());
    b.extend([0u8; 6]);
    let labels = if r.chance(5) { 40 } else { r.below(5) };
    for _ in 0..labels {
        let l = if r.chance(5) {
            r.pick(&[63usize, 64, 0x80, 0xc0])
        } else {
            1 + r.below(12)
        };
        if l >= 0x40 {
            b.push(l as u8);
            b.push(r.byte());
            continue;
        }
        b.push(l as u8);
        b.extend((0..l).map(|_| b'a' + r.below(26) as u8));
    }
    if r.chance(5) {
        b.extend([0xc0, 0x0c]);
    } else {
        b.push(0);
    }
    b.extend(r.pick(&[1u16, 28, 15, 255, 65]).to_be_bytes());
    b.extend(1u16.to_be_bytes());
    b
}

/// A crafted frame; a UDP one to or from port 53 mostly carries a DNS message.
fn crafted_frame(r: &mut Rng) -> Vec<u8> {
    let mut p = crafted(r);
    let dns_port = matches!(p.l4, L4::Udp { sport, dport } if sport == 53 || dport == 53);
    if !dns_port || r.chance(20) {
        return p.build();
    }
    let msg = dns_message(r);
    p.payload = msg.len();
    let mut f = p.build();
    let at = f.len() - msg.len();
    f[at..].copy_from_slice(&msg);
    f
}

fn any_frame(r: &mut Rng) -> Vec<u8> {
    match r.below(10) {
        // Well-formed.
        0..=2 => crafted_frame(r),
        // Cut anywhere.
        3..=4 => {
            let mut f = crafted_frame(r);
            let cut = 14 + r.below(f.len() - 13);
            f.truncate(cut);
            f
        }
        // A few bytes changed, mostly in the headers; sometimes cut too.
        5..=8 => {
            let mut f = crafted_frame(r);
            for _ in 0..1 + r.below(6) {
                let span = f.len().min(if r.chance(80) { 120 } else { usize::MAX });
                let i = r.below(span);
                f[i] = if r.chance(60) {
                    r.pick(INTERESTING)
                } else {
                    r.byte()
                };
            }
            if r.chance(20) {
                let cut = 14 + r.below(f.len() - 13);
                f.truncate(cut);
            }
            f
        }
        // Random bytes behind a chosen or random ethertype.
        _ => {
            let max = if r.chance(90) { 160 } else { MAX_FRAME - 14 };
            let n = 14 + r.below(max);
            let mut f = r.bytes(n);
            if r.chance(70) {
                let et = r.pick(&[0x0800u16, 0x86dd, 0x8100, 0x88a8, 0x9100]);
                f[12..14].copy_from_slice(&et.to_be_bytes());
            }
            f
        }
    }
}

/// The programs' view of a frame: the same bytes, and no header read starting past
/// `MAX_OFF` (the bound the programs give the verifier).
struct ProgView<'a>(&'a [u8]);

impl Frame for ProgView<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn load<const N: usize>(&self, off: usize) -> Option<Bytes<N>> {
        if off > MAX_OFF {
            return None;
        }
        self.0.load::<N>(off)
    }
}

/// Frames the kernel's test run refuses (EINVAL) before any program runs: shorter than an
/// Ethernet header; for the skb (TC) test run also an IPv4/IPv6 ethertype whose IP header
/// is cut short (see prog_test_run.rs, `first_len`).
fn refused(hook: Hook, f: &[u8]) -> bool {
    if f.len() < 14 {
        return true;
    }
    match (hook, u16::from_be_bytes([f[12], f[13]])) {
        (Hook::Xdp, _) => false,
        (_, 0x0800) => f.len() < 14 + 20,
        (_, 0x86dd) => f.len() < 14 + 40,
        _ => false,
    }
}

/// What the programs should have counted, per stat and per flow (ifindex left out: the
/// test runs' devices differ by hook).
#[derive(Default, PartialEq, Debug)]
struct Tally {
    stats: HashMap<u32, Count>,
    flows: HashMap<FlowKey, ([u64; 2], [u64; 2], u32)>,
    /// DNS flows' state, the latency's times left out (as `DnsState` with them zeroed).
    dns: HashMap<FlowKey, DnsState>,
}

/// A DNS state without its times (`pending_at` as set or not, min/max/sum 0): what a host
/// model can predict.
fn timeless(mut s: DnsState) -> DnsState {
    for t in &mut s.pending_at {
        *t = (*t != 0) as u64;
    }
    (s.min_us, s.max_us, s.sum_us) = (0, 0, 0);
    s
}

impl Tally {
    fn stat(&mut self, s: Stat, packets: u64, bytes: u64) {
        self.stats
            .entry(s as u32)
            .or_default()
            .add(&Count { packets, bytes });
    }

    /// The host parser's verdict on one frame, as the programs account it.
    fn expect(&mut self, f: &[u8], segs: u32) {
        let segs = segs.max(1);
        self.stat(Stat::Seen, segs as u64, f.len() as u64);
        match parse(&ProgView(f), None) {
            Err(stat) => self.stat(stat, segs as u64, f.len() as u64),
            Ok(p) => {
                let bytes = p.wire_bytes(segs);
                // A header cannot make a frame count more than it holds (issue 24): what it
                // claims beyond is the excess.
                assert!(
                    segs > 1 || bytes <= f.len() as u64,
                    "{bytes} bytes from {f:?}"
                );
                if p.excess != 0 {
                    self.stat(Stat::HeaderExcess, segs as u64, p.excess as u64);
                }
                self.stat(Stat::Parsed, segs as u64, bytes);
                let e = self.flows.entry(p.key).or_default();
                let d = p.dir.index();
                e.0[d] += segs as u64;
                e.1[d] += bytes;
                e.2 |= (p.tcp_flags as u32) << (8 * d);
                self.dns(f, &p, segs as u64, bytes);
            }
        }
    }

    /// The programs' DNS path (`dns_message` in edge-ebpf), on the host.
    fn dns(&mut self, f: &[u8], p: &shared::Parsed, segs: u64, bytes: u64) {
        let k = &p.key;
        if k.proto != IPPROTO_UDP || (k.port_a != dns::PORT && k.port_b != dns::PORT) {
            return;
        }
        let (off, hdr, ip_len) = (
            p.payload_off as usize,
            p.hdr_len as usize,
            p.ip_len as usize,
        );
        if ip_len <= hdr {
            return;
        }
        let mut name = [0u8; dns::NAME_KEPT];
        let m = match dns::parse(&ProgView(f), off, off + (ip_len - hdr), &mut name) {
            Ok(m) => m,
            Err(e) => {
                let s = match e {
                    Malformed::Header => Stat::DnsBadHeader,
                    Malformed::Label => Stat::DnsBadLabel,
                    Malformed::Pointer => Stat::DnsPointer,
                    Malformed::NoQuestion => Stat::DnsNoQuestion,
                    Malformed::LongName => Stat::DnsLongName,
                };
                self.stat(s, segs, bytes);
                return;
            }
        };
        self.stat(Stat::DnsMessages, segs, bytes);
        let st = self.dns.entry(*k).or_default();
        let mut evicted = false;
        if m.response {
            st.response(&m, 2);
        } else {
            evicted = st.query(&m, 1);
            st.name = name;
        }
        *st = timeless(*st);
        if evicted {
            self.stat(Stat::DnsEvicted, segs, bytes);
        }
    }
}

struct Progs {
    loaded: Loaded,
    maps: Maps,
}

impl Progs {
    fn run(&mut self, hook: Hook, f: &[u8], ctx: Option<&[u8]>) -> Result<u32, ProgramError> {
        let opts = TestRunOptions {
            data_in: Some(f),
            ctx_in: ctx,
            ..Default::default()
        };
        let e = &mut self.loaded.ebpf;
        let r = match hook {
            Hook::Xdp => bpf::xdp(e).test_run(opts),
            Hook::TcIngress => bpf::tc(e).test_run(opts),
            Hook::TcEgress => bpf::tc_egress(e).test_run(opts),
        };
        r.map(|r| r.return_value)
    }

    /// What the programs counted since the last call: stat deltas, and the flow table's
    /// entries (removed, so the next batch starts from an empty table).
    fn take(&mut self, stats0: &mut [Count]) -> Tally {
        let mut t = Tally::default();
        let s1 = self.maps.stats.read().unwrap();
        for s in Stat::ALL {
            let d = s1[*s as usize].delta_since(&stats0[*s as usize]);
            // Not a verdict on the frame: TSvals the full pending map could not take.
            if d != Count::default() && *s != Stat::RttPendingFull {
                t.stats.insert(*s as u32, d);
            }
        }
        stats0.copy_from_slice(&s1[..]);
        // The DNS state, emptied like the table.
        for (k, v) in self.maps.dns.flows().unwrap() {
            self.maps.dns.forget(&k).unwrap();
            t.dns.insert(FlowKey { ifindex: 0, ..k }, timeless(v));
        }
        let mut flows = Vec::new();
        self.maps.table.read_flows(&mut flows);
        for (k, v) in flows {
            check_tcp_health(&k, &v);
            self.maps.table.remove(&k);
            let e = t.flows.entry(FlowKey { ifindex: 0, ..k }).or_default();
            for d in 0..2 {
                e.0[d] += v.packets()[d];
                e.1[d] += v.bytes()[d];
            }
            e.2 |= v.tcp_flags;
        }
        t
    }
}

/// An skb context for TC runs: sometimes a GSO aggregate of up to 64 segments.
fn skb_ctx(segs: u32) -> [u8; 192] {
    const GSO_SEGS: usize = 164;
    const GSO_SIZE: usize = 176;
    let mut c = [0u8; 192];
    c[GSO_SEGS..GSO_SEGS + 4].copy_from_slice(&segs.to_ne_bytes());
    c[GSO_SIZE..GSO_SIZE + 4].copy_from_slice(&1448u32.to_ne_bytes());
    c
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

#[test]
fn generated_and_mutated_frames_pass_and_add_up() {
    let frames = env_u64("EDGEFLOW_FUZZ_FRAMES", 100_000) as usize;
    let seed = env_u64("EDGEFLOW_FUZZ_SEED", 0x5eed_ed9e_f10f);
    let t0 = Instant::now();
    // Loading is the verifier's acceptance of all three programs on this kernel.
    let mut loaded = bpf::load(LoadOptions {
        max_flows: TABLE,
        sample_every: 1,
        rtt: Some(Default::default()),
        tcp_health: true,
        owner: None,
        dns: true,
    })
    .expect("the verifier accepts the programs");
    let maps = Maps::take(&mut loaded.ebpf).unwrap();
    let mut p = Progs { loaded, maps };
    let load_time = t0.elapsed();

    let mut stats0 = p.maps.stats.read().unwrap().to_vec();
    p.take(&mut stats0);
    let mut r = Rng(seed);
    let mut runs = 0u64;
    let mut refusals = 0u64;
    let mut by_stat: HashMap<u32, u64> = HashMap::new();
    for hook in [Hook::Xdp, Hook::TcIngress, Hook::TcEgress] {
        let want_rc = if hook == Hook::Xdp {
            XDP_PASS
        } else {
            TC_ACT_UNSPEC
        };
        let mut done = 0;
        while done < frames {
            let n = BATCH.min(frames - done);
            let batch: Vec<(Vec<u8>, u32)> = (0..n)
                .map(|_| {
                    let segs = if hook != Hook::Xdp && r.chance(10) {
                        r.below(65) as u32
                    } else {
                        0
                    };
                    (frame(&mut r), segs)
                })
                .collect();
            let mut want = Tally::default();
            for (f, segs) in &batch {
                let ctx = skb_ctx(*segs);
                let ctx = (hook != Hook::Xdp).then_some(&ctx[..]);
                match p.run(hook, f, ctx) {
                    Ok(rc) => {
                        assert_eq!(rc, want_rc, "{hook:?} returned {rc} for {}", hex(f));
                        assert!(!refused(hook, f), "{hook:?} ran a frame it should refuse");
                        want.expect(f, *segs);
                        runs += 1;
                    }
                    Err(ProgramError::SyscallError(e))
                        if e.io_error.raw_os_error() == Some(EINVAL) && refused(hook, f) =>
                    {
                        refusals += 1;
                    }
                    Err(e) => panic!("{hook:?}: test run of {}: {e:?}", hex(f)),
                }
            }
            let got = p.take(&mut stats0);
            check_conservation(&got, hook);
            if got != want {
                explain(&mut p, &mut stats0, hook, &batch, seed);
                panic!("{hook:?}: batch at frame {done}: programs {got:?}\nhost parser {want:?}");
            }
            for (s, c) in &want.stats {
                *by_stat.entry(*s).or_default() += c.packets;
            }
            done += n;
        }
    }
    let mut counts: Vec<(&str, u64)> = Stat::ALL
        .iter()
        .map(|s| (s.label(), by_stat.get(&(*s as u32)).copied().unwrap_or(0)))
        .collect();
    counts.retain(|c| c.1 > 0);
    eprintln!(
        "fuzz_prog: seed {seed:#x}: {frames} frames per hook, {runs} runs, {refusals} refused \
         by the kernel, load {load_time:.1?}, total {:.1?}; packets by stat {counts:?}",
        t0.elapsed()
    );
    // The generator reaches every outcome the parser has (a fuzzer that never leaves the
    // happy path proves little).
    for s in [
        Stat::Parsed,
        Stat::NonIp,
        Stat::Fragment,
        Stat::ErrVlan,
        Stat::ErrIpv4,
        Stat::ErrIpv6,
        Stat::ErrIpv6Ext,
        Stat::ErrL4,
        Stat::HeaderExcess,
        Stat::DnsMessages,
        Stat::DnsBadHeader,
        Stat::DnsBadLabel,
        Stat::DnsPointer,
        Stat::DnsNoQuestion,
        Stat::DnsLongName,
        // Not DnsEvicted: random flows rarely hold five queries at once (dns_prog.rs has it).
    ] {
        assert!(
            by_stat.get(&(s as u32)).copied().unwrap_or(0) > frames as u64 / 1000,
            "{} barely reached: {counts:?}",
            s.label()
        );
    }
}

/// TCP health (on in this run) stays within what the flow counted, whatever the frames: per
/// direction no more retransmitted segments, RSTs or FINs than packets and no more
/// retransmitted bytes than bytes, no more SYNs than packets; other protocols count none.
fn check_tcp_health(k: &FlowKey, v: &FlowCounters) {
    let (p, b) = (v.packets(), v.bytes());
    if k.proto != 6 {
        for d in &v.dir {
            assert_eq!(
                (d.retrans_segs, d.retrans_bytes, d.rst, d.fin, d.seq_known),
                (0, 0, 0, 0, 0),
                "{k:?}"
            );
        }
        assert_eq!(v.syns, 0, "{k:?}");
        return;
    }
    for i in 0..2 {
        let d = &v.dir[i];
        assert!(
            d.retrans_segs <= p[i] && d.retrans_bytes <= b[i],
            "{k:?}: {v:?}"
        );
        assert!(d.rst as u64 <= p[i] && d.fin as u64 <= p[i], "{k:?}: {v:?}");
    }
    assert!(v.syns as u64 <= p[0] + p[1], "{k:?}: {v:?}");
}

/// The programs' own invariant, whatever the host parser says: every frame seen is counted
/// once, as a flow packet or under one non-flow stat, and flow packets are in the table.
fn check_conservation(got: &Tally, hook: Hook) {
    let stat = |s: Stat| got.stats.get(&(s as u32)).copied().unwrap_or_default();
    let mut parts = Count::default();
    let mut dns = Count::default();
    for s in Stat::ALL {
        if s.label().starts_with("dns_") {
            dns.add(&stat(*s));
        } else if !matches!(
            s,
            Stat::Seen | Stat::Overflow | Stat::RttPendingFull | Stat::HeaderExcess
        ) {
            parts.add(&stat(*s));
        }
    }
    // DNS verdicts are about frames already counted as traffic: at most one each.
    assert!(
        dns.packets - stat(Stat::DnsEvicted).packets <= stat(Stat::Parsed).packets,
        "{hook:?}: more DNS verdicts than parsed frames: {:?}",
        got.stats
    );
    assert_eq!(
        stat(Stat::Seen).packets,
        parts.packets,
        "{hook:?}: seen != parsed + non-flow stats: {:?}",
        got.stats
    );
    assert_eq!(
        stat(Stat::Overflow),
        Count::default(),
        "{hook:?}: table filled"
    );
    let in_flows: u64 = got.flows.values().map(|f| f.0[0] + f.0[1]).sum();
    let flow_bytes: u64 = got.flows.values().map(|f| f.1[0] + f.1[1]).sum();
    assert_eq!(
        (in_flows, flow_bytes),
        (stat(Stat::Parsed).packets, stat(Stat::Parsed).bytes),
        "{hook:?}: parsed != flows"
    );
}

/// Replays a failing batch one frame at a time and names the first frame whose counts differ.
fn explain(p: &mut Progs, stats0: &mut [Count], hook: Hook, batch: &[(Vec<u8>, u32)], seed: u64) {
    for (f, segs) in batch {
        let ctx = skb_ctx(*segs);
        let ctx = (hook != Hook::Xdp).then_some(&ctx[..]);
        if p.run(hook, f, ctx).is_err() {
            continue;
        }
        let got = p.take(stats0);
        let mut want = Tally::default();
        want.expect(f, *segs);
        if got != want {
            eprintln!(
                "seed {seed:#x}, {hook:?}, gso_segs {segs}: frame {}\nprograms {got:?}\nhost {want:?}",
                hex(f)
            );
            return;
        }
    }
    eprintln!("every frame agrees on its own: the batch's counts interact");
}
