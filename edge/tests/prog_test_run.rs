//! Both programs, loaded into the real kernel, fed crafted frames through BPF_PROG_TEST_RUN:
//! every frame returns PASS / OK, lands in the stat it belongs to, and only well-formed
//! frames reach the flow table, with exact counters.
//!
//! The host parser tests (`shared/src/parse/tests.rs`) cover the same parser byte by byte on
//! slices; these prove the compiled programs (verifier, bounds checks, TC's skb fields) agree.

use aya::programs::{ProgramError, TestRun, TestRunOptions};
use edge::probe::{
    bpf::{self, LoadOptions, Loaded},
    maps::{Maps, Stats},
};
use shared::{
    craft::{ext_body, frag_body, Ip, Packet, L4, TPID_8021AD, TPID_8021Q},
    flow::tcp,
    parse::MAX_IPV6_EXT,
    Count, FlowCounters, FlowKey, Stat,
};
use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard, OnceLock},
};
use testkit::verdict::{TC_ACT_UNSPEC, XDP_PASS};

const EINVAL: i32 = 22;

const A: [u8; 4] = [10, 0, 0, 1];
const B: [u8; 4] = [10, 0, 0, 2];

fn v6(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[15] = last;
    a
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    Xdp,
    Tc,
}

const HOOKS: [Hook; 2] = [Hook::Xdp, Hook::Tc];

/// The loaded programs and their maps.
struct Progs {
    loaded: Loaded,
    maps: Maps,
}

/// What one run changed: stats deltas and flow-table deltas.
struct Change {
    stats: Stats,
    flows: HashMap<FlowKey, FlowCounters>,
}

impl Change {
    fn stat(&self, s: Stat) -> Count {
        self.stats[s as usize]
    }

    /// The stats that moved, other than `Seen` (and `Parsed`, which accompanies a flow).
    fn moved(&self) -> Vec<(Stat, Count)> {
        Stat::ALL
            .iter()
            .filter(|s| !matches!(s, Stat::Seen | Stat::Parsed))
            .map(|s| (*s, self.stat(*s)))
            .filter(|(_, c)| *c != Count::default())
            .collect()
    }
}

/// `__sk_buff` as BPF_PROG_TEST_RUN takes it in `ctx_in` (uapi/linux/bpf.h, 192 bytes): only
/// a few fields may be non-zero; we set `gso_segs` and `gso_size`.
fn skb_ctx(gso_segs: u32, gso_size: u32) -> [u8; 192] {
    const GSO_SEGS: usize = 164;
    const GSO_SIZE: usize = 176;
    let mut c = [0u8; 192];
    c[GSO_SEGS..GSO_SEGS + 4].copy_from_slice(&gso_segs.to_ne_bytes());
    c[GSO_SIZE..GSO_SIZE + 4].copy_from_slice(&gso_size.to_ne_bytes());
    c
}

/// One load for the whole file: the verifier takes seconds per load. Tests take turns, and
/// each checks only what its own runs changed.
fn progs() -> MutexGuard<'static, Progs> {
    static PROGS: OnceLock<Mutex<Progs>> = OnceLock::new();
    PROGS
        .get_or_init(|| Mutex::new(Progs::load()))
        .lock()
        // Another test failing while it held the programs leaves them usable.
        .unwrap_or_else(|e| e.into_inner())
}

impl Progs {
    fn load() -> Progs {
        let mut loaded = bpf::load(LoadOptions {
            max_flows: 1024,
            sample_every: 1,
            rtt: Some(Default::default()),
            tcp_health: true,
            owner: None,
            dns: true,
        })
        .expect("loading the programs");
        let maps = Maps::take(&mut loaded.ebpf).unwrap();
        Progs { loaded, maps }
    }

    fn flows(&self) -> HashMap<FlowKey, FlowCounters> {
        let mut v = Vec::new();
        self.maps.table.read_flows(&mut v);
        v.into_iter().collect()
    }

    /// Runs `frame` through `hook` once; the program's return code or the kernel's refusal.
    fn run_raw(
        &mut self,
        hook: Hook,
        frame: &[u8],
        ctx: Option<&[u8]>,
    ) -> Result<u32, ProgramError> {
        let opts = TestRunOptions {
            data_in: (!frame.is_empty()).then_some(frame),
            ctx_in: ctx,
            ..Default::default()
        };
        let r = match hook {
            Hook::Xdp => bpf::xdp(&mut self.loaded.ebpf).test_run(opts),
            Hook::Tc => bpf::tc(&mut self.loaded.ebpf).test_run(opts),
        };
        r.map(|r| r.return_value)
    }

    /// Runs `frame` and returns what it changed; asserts the program passed it on.
    fn run_ctx(&mut self, hook: Hook, frame: &[u8], ctx: Option<&[u8]>) -> Change {
        let (s0, f0) = (self.maps.stats.read().unwrap(), self.flows());
        let rc = self
            .run_raw(hook, frame, ctx)
            .unwrap_or_else(|e| panic!("{hook:?}: test run of {} bytes: {e:?}", frame.len()));
        let want = match hook {
            Hook::Xdp => XDP_PASS,
            Hook::Tc => TC_ACT_UNSPEC,
        };
        assert_eq!(rc, want, "{hook:?} must pass every frame on");
        let s1 = self.maps.stats.read().unwrap();
        let mut stats = [Count::default(); shared::stats::STATS_LEN as usize];
        for (i, d) in stats.iter_mut().enumerate() {
            *d = s1[i].delta_since(&s0[i]);
        }
        let mut flows = HashMap::new();
        for (k, v) in self.flows() {
            let before = f0.get(&k).copied().unwrap_or_default();
            if v.packets() != before.packets() || v.bytes() != before.bytes() {
                let mut d = v;
                for i in 0..2 {
                    d.dir[i].packets -= before.dir[i].packets;
                    d.dir[i].bytes -= before.dir[i].bytes;
                }
                flows.insert(k, d);
            }
        }
        Change { stats, flows }
    }

    fn run(&mut self, hook: Hook, frame: &[u8]) -> Change {
        self.run_ctx(hook, frame, None)
    }

    /// The frame is counted under `stat` only, and no flow moved.
    fn expect_stat(&mut self, hook: Hook, frame: &[u8], stat: Stat, what: &str) {
        let c = self.run(hook, frame);
        let one = Count {
            packets: 1,
            bytes: frame.len() as u64,
        };
        assert_eq!(c.stat(Stat::Seen), one, "{hook:?} {what}: seen");
        assert_eq!(c.moved(), vec![(stat, one)], "{hook:?} {what}: stats");
        assert_eq!(c.stat(Stat::Parsed), Count::default(), "{hook:?} {what}");
        assert!(
            c.flows.is_empty(),
            "{hook:?} {what}: mis-attributed to {:?}",
            c.flows
        );
    }

    /// The frame is one packet of exactly one flow, of `ip_len` bytes; returns its key.
    fn expect_flow(&mut self, hook: Hook, frame: &[u8], ip_len: u64, what: &str) -> FlowKey {
        self.expect_clamped_flow(hook, frame, ip_len, 0, what)
    }

    /// [`Progs::expect_flow`] of a frame whose IP header claims `excess` bytes more than it
    /// holds: those are counted under `header_excess` (one packet), not in the flow.
    fn expect_clamped_flow(
        &mut self,
        hook: Hook,
        frame: &[u8],
        ip_len: u64,
        excess: u64,
        what: &str,
    ) -> FlowKey {
        let c = self.run(hook, frame);
        let one = Count {
            packets: 1,
            bytes: ip_len,
        };
        assert_eq!(c.stat(Stat::Parsed), one, "{hook:?} {what}: parsed");
        let others = if excess == 0 {
            vec![]
        } else {
            vec![(
                Stat::HeaderExcess,
                Count {
                    packets: 1,
                    bytes: excess,
                },
            )]
        };
        assert_eq!(c.moved(), others, "{hook:?} {what}: no other stat");
        assert_eq!(c.flows.len(), 1, "{hook:?} {what}: {:?}", c.flows);
        let (k, v) = c.flows.into_iter().next().unwrap();
        assert_eq!(
            v.packets()[0] + v.packets()[1],
            1,
            "{hook:?} {what}: packets {v:?}"
        );
        assert_eq!(
            v.bytes()[0] + v.bytes()[1],
            ip_len,
            "{hook:?} {what}: bytes"
        );
        k
    }
}

fn v4_with_options() -> Packet {
    let mut p = Packet::tcp4(A, B, 40000, 443, tcp::ACK);
    if let Ip::V4 { options, .. } = &mut p.ip {
        *options = vec![0x94, 0x04, 0, 0, 1, 1, 1, 0]; // router alert + NOPs
    }
    p.l4 = L4::Tcp {
        sport: 40000,
        dport: 443,
        flags: tcp::ACK,
        seq: 1,
        ack: 0,
        options: vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], // NOP NOP timestamps
    };
    p.payload = 30;
    p
}

/// (first cut length that reaches a layer's check, the stat it fails under), in order.
type Bounds = Vec<(usize, Stat)>;

/// A frame cut at every length from 14 on: the stat of the layer it ended in, or, once the
/// L4 header is whole, one packet of the flow (bytes: the IP length field, as on the wire,
/// clamped to what the cut frame holds; the rest under `header_excess`).
#[test]
fn truncated_at_every_layer() {
    let mut vlan_tcp = v4_with_options();
    vlan_tcp.vlans = vec![(TPID_8021Q, 100)];
    let mut v6_ext = Packet::udp6(v6(1), v6(2), 1000, 2000, 10);
    if let Ip::V6 { ext, .. } = &mut v6_ext.ip {
        *ext = vec![(0, ext_body(0)), (44, frag_body(0, true))];
    }
    let mut icmp = Packet::udp4(A, B, 0, 0, 56);
    icmp.l4 = L4::Icmp { ty: 8, code: 0 };
    let cases: [(&str, Packet, Bounds); 3] = [
        (
            // 14 eth + 4 tag, 28 IPv4 with options, 32 TCP with options
            "vlan/ipv4+opts/tcp+opts",
            vlan_tcp,
            vec![
                (14, Stat::ErrVlan),
                (18, Stat::ErrIpv4),
                (18 + 28, Stat::ErrL4),
            ],
        ),
        (
            // 14 eth, 40 IPv6, 8 hop-by-hop, 8 fragment, 8 UDP
            "ipv6/hbh/frag/udp",
            v6_ext,
            vec![
                (14, Stat::ErrIpv6),
                (54, Stat::ErrIpv6Ext),
                (70, Stat::ErrL4),
            ],
        ),
        (
            "ipv4/icmp",
            icmp,
            vec![(14, Stat::ErrIpv4), (34, Stat::ErrL4)],
        ),
    ];
    let mut p = progs();
    for (name, pkt, bounds) in cases {
        let full = pkt.build();
        let l4_end = match pkt.l4 {
            L4::Tcp { .. } => 18 + 28 + 32,
            _ if name.starts_with("ipv6") => 78,
            _ => 42,
        };
        let l3 = if pkt.vlans.is_empty() { 14 } else { 18 };
        let ip_len = (full.len() - l3) as u64;
        for hook in HOOKS {
            for cut in 14..=full.len() {
                let what = format!("{hook:?} {name} cut at {cut}");
                if cut < first_len(hook, &full) {
                    assert_einval(p.run_raw(hook, &full[..cut], None), &what);
                } else if cut >= l4_end {
                    let held = (cut - l3) as u64;
                    p.expect_clamped_flow(hook, &full[..cut], held, ip_len - held, &what);
                } else {
                    let stat = bounds.iter().rev().find(|(b, _)| cut >= *b).unwrap().1;
                    p.expect_stat(hook, &full[..cut], stat, &what);
                }
            }
        }
    }
}

/// The shortest prefix of `frame` each test run takes. Both need an Ethernet header. The skb
/// test run (TC) also reads the IP header of an untagged IPv4/IPv6 frame to set up its
/// socket, and refuses (EINVAL) a frame that cuts it short; those cuts reach the program
/// through XDP here, and the parser through the host tests.
fn first_len(hook: Hook, frame: &[u8]) -> usize {
    match (hook, u16::from_be_bytes([frame[12], frame[13]])) {
        (Hook::Xdp, _) => 14,
        (Hook::Tc, 0x0800) => 14 + 20,
        (Hook::Tc, 0x86dd) => 14 + 40,
        (Hook::Tc, _) => 14,
    }
}

/// Pins the calling thread to `cpu` (a test run executes on the caller's CPU).
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            rc,
            0,
            "pinning to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Each CPU counts in its own slot of the programs' CPU array, and the stats the agent reads
/// are the sum over every slot: frames run on each CPU in turn (a different number on each)
/// all show up.
#[test]
fn stats_sum_every_cpus_slot() {
    let cpus = aya::util::online_cpus().unwrap();
    let mut p = progs();
    let f = Packet::udp4(A, B, 40, 41, 8).build();
    let before = p.maps.stats.read().unwrap()[Stat::Seen as usize].packets;
    let progs: &mut Progs = &mut p;
    // On a thread of its own, so the pinning ends with it.
    std::thread::scope(|s| {
        s.spawn(|| {
            for (i, cpu) in cpus.iter().enumerate() {
                pin_to(*cpu as usize);
                for _ in 0..=i {
                    progs.run_raw(Hook::Xdp, &f, None).unwrap();
                }
            }
        });
    });
    let after = p.maps.stats.read().unwrap()[Stat::Seen as usize].packets;
    let want = (1..=cpus.len() as u64).sum::<u64>();
    assert_eq!(after - before, want, "CPUs {cpus:?}");
}

fn assert_einval(r: Result<u32, ProgramError>, what: &str) {
    match r {
        Err(ProgramError::SyscallError(s)) if s.io_error.raw_os_error() == Some(EINVAL) => {}
        other => panic!("{what}: expected the kernel to refuse (EINVAL), got {other:?}"),
    }
}

/// Both test runs refuse frames shorter than an Ethernet header (and an empty one) before any
/// program runs; the parser's handling of them (`ErrEthernet`) is covered by the host tests
/// in shared/src/parse/tests.rs (`non_ip_and_runts`, `truncated_at_every_layer`).
#[test]
fn runts_are_refused_by_the_kernel() {
    let mut p = progs();
    let full = Packet::udp4(A, B, 1, 2, 0).build();
    let seen = p.maps.stats.read().unwrap()[Stat::Seen as usize];
    for hook in HOOKS {
        for cut in 0..14 {
            assert_einval(
                p.run_raw(hook, &full[..cut], None),
                &format!("{hook:?} {cut} bytes"),
            );
        }
    }
    assert_eq!(
        p.maps.stats.read().unwrap()[Stat::Seen as usize],
        seen,
        "no program ran"
    );
}

#[test]
fn malformed_ip_headers() {
    let mut p = progs();
    for hook in HOOKS {
        let mut f = Packet::udp4(A, B, 7, 9, 4).build();
        f[14] = 0x44; // IHL 4
        p.expect_stat(hook, &f, Stat::ErrIpv4, "IHL 4");
        f[14] = 0x40; // IHL 0
        p.expect_stat(hook, &f, Stat::ErrIpv4, "IHL 0");
        let mut f = Packet::udp4(A, B, 7, 9, 4).build();
        f[14] = 0x4f; // IHL 15: 60 bytes of header the frame does not have
        p.expect_stat(hook, &f, Stat::ErrIpv4, "IHL past the end");
        let mut f = Packet::udp4(A, B, 7, 9, 4).build();
        f[16..18].copy_from_slice(&10u16.to_be_bytes());
        p.expect_stat(hook, &f, Stat::ErrIpv4, "total length < IHL");
        let mut f = Packet::udp4(A, B, 7, 9, 4).build();
        f[14] = 0x65;
        p.expect_stat(hook, &f, Stat::ErrIpv4, "version 6 in an IPv4 frame");
        let mut f = Packet::udp6(v6(1), v6(2), 7, 9, 4).build();
        f[14] = 0x40;
        p.expect_stat(hook, &f, Stat::ErrIpv6, "version 4 in an IPv6 frame");
        let mut t = Packet::tcp4(A, B, 1, 2, tcp::SYN).build();
        t[14 + 20 + 12] = 0x40; // data offset 4
        p.expect_stat(hook, &t, Stat::ErrL4, "TCP data offset 4");
        // An ARP request: not IP.
        let arp = Packet {
            ip: Ip::Other { ethertype: 0x0806 },
            ..Packet::udp4(A, B, 0, 0, 28)
        };
        let mut arp = arp.build();
        arp.truncate(14 + 28);
        p.expect_stat(hook, &arp, Stat::NonIp, "ARP");
    }
}

#[test]
fn ipv4_options_key_past_them() {
    let mut p = progs();
    let pkt = v4_with_options();
    let f = pkt.build();
    for hook in HOOKS {
        let k = p.expect_flow(hook, &f, (f.len() - 14) as u64, "IPv4 options");
        assert_eq!((k.port_a, k.port_b, k.proto), (40000, 443, 6));
        assert_eq!(&k.addr_a[12..], &A);
    }
}

#[test]
fn ipv6_extension_chains() {
    let mut p = progs();
    let mut pkt = Packet::udp6(v6(1), v6(2), 1, 2, 0);
    if let Ip::V6 { ext, .. } = &mut pkt.ip {
        *ext = vec![
            (0, ext_body(0)),
            (60, ext_body(1)),
            (43, ext_body(0)),
            (51, vec![0; 10]),
            (60, ext_body(0)),
            (44, frag_body(0, true)),
        ];
        assert_eq!(ext.len(), MAX_IPV6_EXT);
    }
    let f = pkt.build();
    for hook in HOOKS {
        let k = p.expect_flow(hook, &f, (f.len() - 14) as u64, "chain at the limit");
        assert_eq!((k.port_a, k.port_b, k.proto), (1, 2, 17));
    }
    if let Ip::V6 { ext, .. } = &mut pkt.ip {
        ext.insert(0, (60, ext_body(0)));
    }
    let f = pkt.build();
    for hook in HOOKS {
        p.expect_stat(hook, &f, Stat::ErrIpv6Ext, "chain over the limit");
    }
}

#[test]
fn fragments_first_keyed_others_counted() {
    let mut p = progs();
    let mut first4 = Packet::udp4(A, B, 7, 9, 100);
    if let Ip::V4 { frag, .. } = &mut first4.ip {
        *frag = 0x2000; // MF, offset 0: the UDP header is here
    }
    let mut later4 = first4.clone();
    if let Ip::V4 { frag, .. } = &mut later4.ip {
        *frag = 0x0010; // offset 16 * 8, last fragment
    }
    let mut first6 = Packet::udp6(v6(1), v6(2), 7, 9, 100);
    if let Ip::V6 { ext, .. } = &mut first6.ip {
        *ext = vec![(44, frag_body(0, true))];
    }
    let mut later6 = first6.clone();
    if let Ip::V6 { ext, .. } = &mut later6.ip {
        *ext = vec![(44, frag_body(185, false))];
    }
    for hook in HOOKS {
        let f = first4.build();
        let k = p.expect_flow(hook, &f, (f.len() - 14) as u64, "first v4 fragment");
        assert_eq!((k.port_a, k.port_b), (7, 9));
        p.expect_stat(hook, &later4.build(), Stat::Fragment, "later v4 fragment");
        let f = first6.build();
        let k = p.expect_flow(hook, &f, (f.len() - 14) as u64, "first v6 fragment");
        assert_eq!((k.port_a, k.port_b), (7, 9));
        p.expect_stat(hook, &later6.build(), Stat::Fragment, "later v6 fragment");
    }
}

#[test]
fn vlan_tags_stacked_and_too_many() {
    let mut p = progs();
    let mut pkt = Packet::udp4(A, B, 1, 2, 20);
    for (tags, want) in [
        (vec![(TPID_8021Q, 100)], (100, 0)),
        (vec![(TPID_8021AD, 300), (TPID_8021Q, 42)], (300, 42)),
        (vec![(0x9100, 5), (TPID_8021Q, 6)], (5, 6)),
    ] {
        pkt.vlans = tags;
        let f = pkt.build();
        for hook in HOOKS {
            let k = p.expect_flow(hook, &f, 48, &format!("{:?}", pkt.vlans));
            assert_eq!((k.vlan_outer, k.vlan_inner), want, "{hook:?}");
        }
    }
    pkt.vlans = vec![(TPID_8021AD, 1), (TPID_8021Q, 2), (TPID_8021Q, 3)];
    let f = pkt.build();
    for hook in HOOKS {
        p.expect_stat(hook, &f, Stat::ErrVlan, "three tags");
    }
}

/// Jumbo frames. XDP's test run takes a 9014-byte frame as a multi-buffer one (the first
/// page linear, the rest in fragments); the program reads headers from the linear part and
/// counts what it holds. The skb test run refuses anything over a page
/// (EINVAL), so TC is shown the largest frame it takes, and its aggregates (the way TC meets
/// big packets in practice) are covered by `tc_counts_an_aggregate_by_segment`.
#[test]
fn jumbo_frames() {
    let mut p = progs();
    let big = Packet::udp4(A, B, 5000, 6000, 3000).build();
    for hook in HOOKS {
        let k = p.expect_flow(hook, &big, 3000 + 28, "3 KB frame");
        assert_eq!((k.port_a, k.port_b), (5000, 6000));
    }
    // XDP's test run hands a frame past a page to the program as a page of it (3,506 bytes
    // to read) and fragments the program cannot see. Devices never give such frames to a
    // program loaded without frags (the kernel refuses XDP on an MTU past a page); here it
    // counts what it sees, and the header's claim beyond that is the excess (issue 24).
    let jumbo = Packet::udp4(A, B, 5000, 6000, 9000 - 28).build();
    let c = p.run(Hook::Xdp, &jumbo);
    let (parsed, excess) = (c.stat(Stat::Parsed), c.stat(Stat::HeaderExcess));
    assert_eq!((parsed.packets, excess.packets), (1, 1), "9014-byte frame");
    assert_eq!(parsed.bytes + excess.bytes, 9000, "9014-byte frame");
    // This kernel: 4096 - 256 headroom - 320 for skb_shared_info, less the Ethernet header.
    assert!(
        (3000..4096 - 256 - 14).contains(&parsed.bytes),
        "{parsed:?}"
    );
    let v = c.flows.values().next().expect("one flow");
    assert_eq!(v.bytes()[0] + v.bytes()[1], parsed.bytes);
    assert_einval(p.run_raw(Hook::Tc, &jumbo, None), "TC, 9014-byte frame");
}

/// A header that claims more than the frame holds counts what the frame holds (issue 24): a
/// 60-byte frame claiming 65,535 bytes counts 46 (its IP packet), the 65,489 claimed beyond
/// are in `header_excess`; IPv6 alike. Nothing else moves.
#[test]
fn lying_lengths_count_what_the_frame_holds() {
    let mut p = progs();
    let mut v4 = Packet::udp4(A, B, 5001, 6001, 18).build();
    assert_eq!(v4.len(), 60);
    v4[16..18].copy_from_slice(&65_535u16.to_be_bytes());
    let mut v6f = Packet::udp6(v6(1), v6(2), 5002, 6002, 18).build();
    let held6 = (v6f.len() - 14) as u64;
    v6f[18..20].copy_from_slice(&65_535u16.to_be_bytes());
    for hook in HOOKS {
        for (f, held, claimed) in [(&v4, 46, 65_535), (&v6f, held6, 40 + 65_535)] {
            let c = p.run(hook, f);
            let what = format!("{hook:?}, {} bytes claiming {claimed}", f.len());
            let one = |bytes| Count { packets: 1, bytes };
            assert_eq!(c.stat(Stat::Parsed), one(held), "{what}");
            assert_eq!(
                c.moved(),
                vec![(Stat::HeaderExcess, one(claimed - held))],
                "{what}"
            );
            let v = c.flows.values().next().expect("one flow");
            assert_eq!(
                (c.flows.len(), v.bytes()[0] + v.bytes()[1]),
                (1, held),
                "{what}"
            );
        }
    }
}

/// TC sees GSO/GRO aggregates: one skb of `gso_segs` segments counts as that many packets
/// and `ip_len + (segs - 1) * (ip + tcp header)` bytes (DESIGN.md, counting as on the wire).
#[test]
fn tc_counts_an_aggregate_by_segment() {
    let mut p = progs();
    let mut pkt = v4_with_options();
    pkt.vlans.clear();
    pkt.payload = 10 * 300;
    let f = pkt.build();
    let ip_len = (f.len() - 14) as u64; // 28 IP + 32 TCP + 10 x 300
    let c = p.run_ctx(Hook::Tc, &f, Some(&skb_ctx(10, 300)));
    let want = Count {
        packets: 10,
        bytes: ip_len + 9 * (28 + 32),
    };
    assert_eq!(c.stat(Stat::Parsed), want);
    assert_eq!(c.stat(Stat::Seen).packets, 10);
    let v = c.flows.values().next().expect("one flow");
    assert_eq!(c.flows.len(), 1);
    assert_eq!(
        (v.packets()[0] + v.packets()[1], v.bytes()[0] + v.bytes()[1]),
        (want.packets, want.bytes)
    );
    // gso_segs 0 or 1 is a single packet.
    for segs in [0, 1] {
        let c = p.run_ctx(Hook::Tc, &f, Some(&skb_ctx(segs, 0)));
        assert_eq!(
            c.stat(Stat::Parsed),
            Count {
                packets: 1,
                bytes: ip_len
            }
        );
    }
}

/// Request and reply of one conversation land in one entry, one count per direction.
#[test]
fn both_directions_share_an_entry() {
    let mut p = progs();
    // Port 123, not 53: these payloads are no DNS messages (dns_prog.rs has DNS's own).
    let fwd = Packet::udp4(A, B, 40000, 123, 10).build();
    let rev = Packet::udp4(B, A, 123, 40000, 90).build();
    let mut keys = Vec::new();
    let mut before = None;
    for hook in HOOKS {
        let k1 = p.expect_flow(hook, &fwd, 38, "request");
        before.get_or_insert_with(|| p.maps.table.get(&k1).unwrap());
        let k2 = p.expect_flow(hook, &rev, 118, "reply");
        keys.extend([k1, k2]);
    }
    // XDP and TC run on the same device in a test run, so all four runs share one entry:
    // the request was its first packet, the three after it each add one.
    assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
    let (first, now) = (before.unwrap(), p.maps.table.get(&keys[0]).unwrap());
    let added = |i: usize| {
        (
            now.packets()[i] - first.packets()[i],
            now.bytes()[i] - first.bytes()[i],
        )
    };
    // The request went a → b (10.0.0.1 is the lower address).
    assert_eq!((added(0), added(1)), ((1, 38), (2, 236)));
}

/// A SYN leaving (TC egress) and its SYN-ACK arriving (TC ingress): what a handshake RTT sample
/// needs. Returns the flow's RTT sample count.
fn handshake(p: &mut Progs, cport: u16) -> u32 {
    let frame = |from: [u8; 4], to: [u8; 4], sport, dport, flags, seq, ack| {
        let mut p = Packet::tcp4(from, to, sport, dport, flags);
        if let L4::Tcp { seq: s, ack: a, .. } = &mut p.l4 {
            (*s, *a) = (seq, ack);
        }
        p.build()
    };
    let syn = frame(A, B, cport, 80, tcp::SYN, 1000, 0);
    let syn_ack = frame(B, A, 80, cport, tcp::SYN | tcp::ACK, 5000, 1001);
    let opts = TestRunOptions {
        data_in: Some(&syn),
        ..Default::default()
    };
    let r = bpf::tc_egress(&mut p.loaded.ebpf).test_run(opts);
    assert_eq!(r.unwrap().return_value, TC_ACT_UNSPEC);
    p.run_raw(Hook::Tc, &syn_ack, None).unwrap();
    let mut key = shared::parse(&syn[..], None).unwrap().key;
    key.ifindex = 1; // test runs of TC programs happen on the loopback device
    p.maps
        .table
        .get(&key)
        .expect("the handshake's flow")
        .rtt
        .samples
}

/// The loader's settings reach the programs (they live in each CPU's slot, written before
/// any program runs): RTT off takes no handshake sample where RTT on takes one, and 1-in-N
/// sampling at N = 2^32 - 1 counts every frame as unsampled (a frame is sampled when a random
/// u32 is a multiple of N: 0 or N itself, 2 in 2^32).
#[test]
fn settings_reach_the_programs() {
    assert_eq!(handshake(&mut progs(), 41001), 1, "RTT on");
    let load = |sample_every| {
        let mut loaded = bpf::load(LoadOptions {
            max_flows: 64,
            sample_every,
            rtt: None,
            tcp_health: false,
            owner: None,
            dns: true,
        })
        .expect("loading the programs");
        let maps = Maps::take(&mut loaded.ebpf).unwrap();
        Progs { loaded, maps }
    };
    let mut off = load(1);
    assert_eq!(handshake(&mut off, 41002), 0, "RTT off");
    let mut sparse = load(u32::MAX);
    let f = Packet::udp4(A, B, 50, 51, 8).build();
    for hook in HOOKS {
        for _ in 0..20 {
            sparse.run_raw(hook, &f, None).unwrap();
        }
    }
    let s = sparse.maps.stats.read().unwrap();
    assert_eq!(s[Stat::Unsampled as usize].packets, 40);
    assert_eq!(s[Stat::Parsed as usize].packets, 0);
}
