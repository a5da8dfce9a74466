//! edgeflow's kernel side: one XDP program (ingress) and two TC classifiers (egress, and
//! ingress where XDP is not wanted) that key every packet to a bidirectional flow entry,
//! take TCP round-trip samples (`shared::rtt`), count what TCP connections did
//! (`shared::conn`: retransmissions, RST, FIN, SYN) and what DNS conversations did
//! (`shared::dns`: queries, responses by RCODE, latency by transaction id).
//!
//! They only observe: every path returns XDP_PASS, or in TC no verdict (TC_ACT_UNSPEC, which
//! TCX names TCX_NEXT): the next program on the hook runs and the packet goes on as if we were
//! not there. TC_ACT_OK would end a TCX chain at us, and a program attached after ours — an
//! operator's firewall, another monitor — would never see the packet.

use crate::owner::{self, Hook};
use aya_ebpf::{
    bindings::{xdp_action, BPF_F_MMAPABLE, BPF_NOEXIST, TC_ACT_UNSPEC},
    helpers::{bpf_get_prandom_u32, bpf_get_smp_processor_id, bpf_jiffies64, bpf_ktime_get_ns},
    macros::{classifier, map, xdp},
    maps::{Array, HashMap, PerCpuArray},
    programs::{TcContext, XdpContext},
    EbpfContext,
};
use aya_log_ebpf::warn;
use core::intrinsics::{
    atomic_and, atomic_cxchg, atomic_or, atomic_xadd, atomic_xchg,
    AtomicOrdering::{Relaxed, SeqCst},
};
use shared::{
    conn,
    cpu::{CpuSlot, Settings, DEFAULT_CPUS},
    dns::{self, DnsState, Malformed, DEFAULT_DNS_FLOWS, NAME_KEPT},
    flow::{tcp, zero_pad, DirCounters, DEFAULT_MAX_FLOWS, OWNER_PENDING},
    parse::{parse_into, Bytes, Frame, Parsed, IPPROTO_TCP, IPPROTO_UDP},
    rtt::{ns_to_us, rtt_bucket, FlowRtt, TsKey, RTT_BUCKETS},
    stats::STATS_LEN,
    table::{
        self, FlowSlot, BUSY, LIVE, PROBES, RECLAIMING, RECLAIM_AGE_TICKS, RECLAIM_WITHIN, UNREAD,
    },
    FlowCounters, FlowKey, Stat,
};

/// The flow table (`shared::table`: its layout and why an array). Its size is set by the
/// loader (`--max-flows`); this is only the default. Mappable: the agent reads it as memory.
#[map(name = "FLOWS")]
static FLOWS: Array<FlowSlot> = Array::with_max_entries(2 * DEFAULT_MAX_FLOWS, BPF_F_MMAPABLE);
/// Per home slot: bit i set once a flow of that home was put i slots from it (`shared::table`:
/// lookups read only those slots). Sized by the loader like FLOWS.
#[map(name = "FLOWS_HOPS")]
static FLOWS_HOPS: Array<u64> = Array::with_max_entries(2 * DEFAULT_MAX_FLOWS, 0);
/// A bit per slot of FLOWS, set when a slot is claimed (`shared::table`: why); then a word of
/// how many slots are held.
#[map(name = "FLOWS_HELD")]
static FLOWS_HELD: Array<u64> =
    Array::with_max_entries(2 * DEFAULT_MAX_FLOWS / 64 + 1, BPF_F_MMAPABLE);

/// Per CPU: the programs' counters and scratch room (`shared::cpu`: why a plain array).
#[map(name = "CPU_SLOTS")]
static CPU_SLOTS: Array<CpuSlot> = Array::with_max_entries(DEFAULT_CPUS, 0);

/// TSvals that left and wait for their echo: when each left. Sized by the loader like the
/// flow table; the agent removes entries whose echo never came.
#[map(name = "RTT_PENDING")]
static RTT_PENDING: HashMap<TsKey, u64> = HashMap::with_max_entries(DEFAULT_MAX_FLOWS, 0);

/// RTT samples per log2 bucket of microseconds (`shared::rtt::rtt_bucket`).
#[map(name = "RTT_HIST")]
static RTT_HIST: PerCpuArray<u64> = PerCpuArray::with_max_entries(RTT_BUCKETS as u32, 0);

/// Per DNS flow (UDP port 53): its `shared::dns::DnsState`, apart from the flow table so
/// that only port-53 packets touch it. The agent removes a flow's entry when the flow leaves.
#[map(name = "DNS_FLOWS")]
static DNS_FLOWS: HashMap<FlowKey, DnsState> = HashMap::with_max_entries(DEFAULT_DNS_FLOWS, 0);

/// DNS latency samples per log2 bucket of microseconds (`shared::rtt::rtt_bucket`).
#[map(name = "DNS_HIST")]
static DNS_HIST: PerCpuArray<u64> = PerCpuArray::with_max_entries(RTT_BUCKETS as u32, 0);

/// The tick counter and CLOCK_MONOTONIC read together by `edgeflow_clock`: the agent's
/// conversion of the flows' tick stamps (`shared::flow::TICK_CLOCK_MAP`).
#[map(name = "TICK_CLOCK")]
static TICK_CLOCK: Array<u64> = Array::with_max_entries(2, 0);

/// Per CPU: when (in ticks) a "table full" warning was last logged, so the log stays quiet
/// under load.
#[map(name = "WARN_AT")]
static WARN_AT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Ticks between two "table full" warnings: 1 s at HZ=1000, 10 s at HZ=100.
const WARN_EVERY_TICKS: u64 = 1000;
/// Furthest offset a header read may start at: keeps offsets bounded for the verifier.
const MAX_OFF: usize = 512;
/// What TC pulls into the linear area when headers sit in paged data.
const PULL_LEN: u32 = 256;
const EEXIST: i64 = 17;

/// The packet bytes the program may read directly: `[data, end)`.
struct Pkt {
    data: usize,
    end: usize,
    len: usize,
}

impl Frame for Pkt {
    #[inline(always)]
    fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<Bytes<N>> {
        if off > MAX_OFF {
            return None;
        }
        let p = self.data + off;
        if p + N > self.end {
            return None;
        }
        // SAFETY: [p, p + N) was just checked to lie inside the packet.
        Some(Bytes(unsafe {
            core::ptr::read_unaligned(p as *const [u8; N])
        }))
    }
}

#[xdp]
pub fn edgeflow_xdp(ctx: XdpContext) -> u32 {
    let pkt = Pkt {
        data: ctx.data(),
        end: ctx.data_end(),
        len: ctx.data_end() - ctx.data(),
    };
    if let Some(slot) = cpu_slot() {
        // SAFETY: this CPU's slot, ours for this run.
        let parsed = parse_into(&pkt, None, unsafe { &mut (*slot).parsed });
        account(
            &ctx,
            &pkt,
            slot,
            parsed,
            1,
            pkt.len as u64,
            ctx.ingress_ifindex() as u32,
            false,
        );
    }
    xdp_action::XDP_PASS
}

/// Never attached: the agent runs it with BPF_PROG_TEST_RUN to read the tick counter and
/// CLOCK_MONOTONIC at one moment (userspace cannot read the tick counter).
#[xdp]
pub fn edgeflow_clock(_ctx: XdpContext) -> u32 {
    // SAFETY: helpers without arguments.
    let (ticks, mono) = unsafe { (bpf_jiffies64(), bpf_ktime_get_ns()) };
    if let (Some(t), Some(m)) = (TICK_CLOCK.get_ptr_mut(0), TICK_CLOCK.get_ptr_mut(1)) {
        // SAFETY: array slots; only this program writes them.
        unsafe {
            *t = ticks;
            *m = mono;
        }
    }
    xdp_action::XDP_PASS
}

/// TC ingress (where XDP is not used).
#[classifier]
pub fn edgeflow_tc(ctx: TcContext) -> i32 {
    tc(ctx, false)
}

/// TC egress.
#[classifier]
pub fn edgeflow_tc_egress(ctx: TcContext) -> i32 {
    tc(ctx, true)
}

#[inline(always)]
fn tc(ctx: TcContext, egress: bool) -> i32 {
    let skb = ctx.skb.skb;
    // SAFETY: the context pointer is valid for the program's run.
    let (len, segs, ifindex, vlan) = unsafe {
        let s = &*skb;
        let vlan = if s.vlan_present != 0 {
            Some(s.vlan_tci as u16)
        } else {
            None
        };
        (s.len, s.gso_segs, s.ifindex, vlan)
    };
    // An aggregate (GRO on ingress, GSO on egress) stands for gso_segs wire packets.
    let segs = if segs > 1 { segs } else { 1 };
    let Some(slot) = cpu_slot() else {
        return TC_ACT_UNSPEC;
    };
    // SAFETY (here and below): this CPU's slot, ours for this run.
    let mut parsed = parse_into(&tc_pkt(&ctx), vlan, unsafe { &mut (*slot).parsed });
    if let Err(stat) = parsed {
        // Headers may sit in paged data: pull them in once and look again.
        if stat != Stat::NonIp
            && stat != Stat::Fragment
            && ctx.data_end() - ctx.data() < len as usize
            && ctx
                .pull_data(if len < PULL_LEN { len } else { PULL_LEN })
                .is_ok()
        {
            parsed = parse_into(&tc_pkt(&ctx), vlan, unsafe { &mut (*slot).parsed });
        }
    }
    account(
        &ctx,
        &tc_pkt(&ctx),
        slot,
        parsed,
        segs,
        len as u64,
        ifindex,
        egress,
    );
    TC_ACT_UNSPEC
}

#[inline(always)]
fn tc_pkt(ctx: &TcContext) -> Pkt {
    Pkt {
        data: ctx.data(),
        end: ctx.data_end(),
        len: ctx.len() as usize,
    }
}

/// This CPU's slot (`None` only on a CPU beyond the possible ones, which cannot run us).
#[inline(always)]
fn cpu_slot() -> Option<*mut CpuSlot> {
    // SAFETY: helper without arguments.
    CPU_SLOTS.get_ptr_mut(unsafe { bpf_get_smp_processor_id() })
}

#[inline(always)]
fn bump(slot: *mut CpuSlot, stat: Stat, packets: u64, bytes: u64) {
    // Read back through memory so the bound below stays in the code: LLVM knows the enum's
    // range and would drop it, the verifier does not and needs it for the variable offset.
    let i = stat as u32;
    // SAFETY: reading a local.
    let i = unsafe { core::ptr::read_volatile(&i) } as usize;
    if slot.is_null() || i >= STATS_LEN as usize {
        return;
    }
    // SAFETY: this CPU's slot, only this CPU writes it while the program runs; `i` is in
    // bounds.
    unsafe {
        let c = &mut (*slot).stats[i];
        c.packets += packets;
        c.bytes += bytes;
    }
}

/// [`bump`] for the rare paths that have not looked the slot up.
#[inline(always)]
fn stat_add(stat: Stat, packets: u64, bytes: u64) {
    bump(
        cpu_slot().unwrap_or(core::ptr::null_mut()),
        stat,
        packets,
        bytes,
    );
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn account<C: Hook>(
    ctx: &C,
    frame: &Pkt,
    slot: *mut CpuSlot,
    parsed: Result<(), Stat>,
    segs: u32,
    frame_len: u64,
    ifindex: u32,
    egress: bool,
) {
    let segs64 = segs as u64;
    bump(slot, Stat::Seen, segs64, frame_len);
    if let Err(stat) = parsed {
        bump(slot, stat, segs64, frame_len);
        return;
    }
    // SAFETY: this CPU's slot, ours for this run; disjoint from the stats `bump` writes.
    let (p, ts_key) = unsafe { (&mut (*slot).parsed, &mut (*slot).ts_key) };
    let bytes = p.wire_bytes(segs);
    if p.excess != 0 {
        // A header that claims more than the frame holds: counted as what it holds.
        bump(slot, Stat::HeaderExcess, segs64, p.excess as u64);
    }
    // SAFETY: this CPU's slot; the loader wrote the settings before attaching us.
    let settings = unsafe { (*slot).settings };
    let every = settings.sample_every;
    // SAFETY: helper without arguments.
    if every > 1 && unsafe { bpf_get_prandom_u32() } % every != 0 {
        bump(slot, Stat::Unsampled, segs64, bytes);
        return;
    }
    bump(slot, Stat::Parsed, segs64, bytes);
    p.key.ifindex = ifindex;
    // First/last seen are stamped in ticks: the verifier inlines bpf_jiffies64 into a plain
    // load, where a clock helper call costs 20–30 ns per packet (bench/RESULTS.md). RTT
    // samples read the fine clock when they take one.
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_jiffies64() };
    // Read once (a volatile load, see there) for the entry's and the RTT state's direction.
    let d = dir_index(p);
    // SAFETY: this CPU's slot; the loader wrote the key with the settings.
    let home = table::hash(&p.key, unsafe { &(*slot).hash_key });
    let v = entry(ctx, p, d, home, &settings, segs64, bytes, now, egress);
    let Some((v, at)) = v else {
        return;
    };
    // Who sent it: a known flow's first egress packet looks its socket up (`owner`).
    // SAFETY: a live map value; the word is read, and cleared atomically by the resolution.
    if egress
        && owner::on()
        && unsafe { core::ptr::read_volatile(&raw const (*v).initiator) } & OWNER_PENDING != 0
    {
        let port = owner::local_port(p.key.proto, p.key.port_a, p.key.port_b, d);
        owner::egress_seen(ctx, at, port);
        // SAFETY: as above.
        unsafe { atomic_and::<u32, u32, { Relaxed }>(&raw mut (*v).initiator, !OWNER_PENDING) };
    }
    if p.key.proto != IPPROTO_TCP {
        if settings.dns != 0
            && p.key.proto == IPPROTO_UDP
            && (p.key.port_a == dns::PORT || p.key.port_b == dns::PORT)
        {
            dns_message(frame, p, segs64, bytes);
        }
        return;
    }
    if settings.tcp_health != 0 {
        tcp_health(v, p, d, segs64);
    }
    if settings.rtt_on != 0 {
        // SAFETY: a live map value; CPUs racing on it can only lose a sample.
        let (r, dc) = unsafe { (&mut (*v).rtt, &mut (*v).dir[d]) };
        rtt(
            p,
            d,
            ts_key,
            r,
            dc,
            egress,
            settings.rtt_interval_us,
            segs64,
            bytes,
        );
    }
}

/// TCP health of one segment in direction `d` (`shared::conn`): SYN, RST and FIN counts, and
/// a data segment either raises the direction's sequence high mark or is a retransmission.
/// Only this direction's line is written, and a segment without those flags or data reads
/// nothing.
#[inline(always)]
fn tcp_health(v: *mut FlowCounters, p: &Parsed, d: usize, segs: u64) {
    let flags = p.tcp_flags;
    // SAFETY: a live map value; CPUs touch the counters atomically. The high mark is a plain
    // word: two CPUs racing on one direction (rare: a direction is one hook's, and RSS keeps a
    // flow on one queue) can only leave the lower of two ends, so a later segment may be
    // counted as new, never a new one as retransmitted.
    unsafe {
        let dc = &raw mut (*v).dir[d];
        if flags & (tcp::SYN | tcp::RST | tcp::FIN) != 0 {
            if conn::is_syn(flags) {
                atomic_xadd::<u32, u32, { Relaxed }>(&raw mut (*v).syns, 1);
            }
            if flags & tcp::RST != 0 {
                atomic_xadd::<u32, u32, { Relaxed }>(&raw mut (*dc).rst, 1);
            }
            if flags & tcp::FIN != 0 {
                atomic_xadd::<u32, u32, { Relaxed }>(&raw mut (*dc).fin, 1);
            }
        }
        let Some((end, len)) = conn::data_end(p) else {
            return;
        };
        let known = core::ptr::read_volatile(&raw const (*dc).seq_known);
        let high = core::ptr::read_volatile(&raw const (*dc).seq_high);
        if known != 0 && conn::is_retransmission(high, end) {
            atomic_xadd::<u64, u64, { Relaxed }>(&raw mut (*dc).retrans_segs, segs);
            atomic_xadd::<u64, u64, { Relaxed }>(&raw mut (*dc).retrans_bytes, len as u64);
        } else {
            core::ptr::write_volatile(&raw mut (*dc).seq_high, end);
            if known == 0 {
                core::ptr::write_volatile(&raw mut (*dc).seq_known, 1);
            }
        }
    }
}

/// One UDP port-53 packet of a counted flow: its DNS message read (`shared::dns::parse`) and
/// counted into the flow's DNS state, or the reason it is not one counted. The packet was
/// counted as traffic before either way.
#[inline(always)]
fn dns_message(f: &Pkt, p: &Parsed, segs: u64, bytes: u64) {
    // The UDP payload: what the IP length leaves after the headers (a frame may be padded).
    let (off, hdr, ip_len) = (
        p.payload_off as usize,
        p.hdr_len as usize,
        p.ip_len as usize,
    );
    if ip_len <= hdr {
        // Nothing to read: not a DNS message, and not a malformed one.
        return;
    }
    let end = off + (ip_len - hdr);
    let mut name = [0u8; NAME_KEPT];
    let mut m = dns::Message::default();
    match dns::parse_into(f, off, end, &mut name, &mut m) {
        Ok(()) => {}
        Err(e) => {
            let stat = match e {
                Malformed::Header => Stat::DnsBadHeader,
                Malformed::Label => Stat::DnsBadLabel,
                Malformed::Pointer => Stat::DnsPointer,
                Malformed::NoQuestion => Stat::DnsNoQuestion,
                Malformed::LongName => Stat::DnsLongName,
            };
            stat_add(stat, segs, bytes);
            return;
        }
    };
    stat_add(Stat::DnsMessages, segs, bytes);
    let st = match DNS_FLOWS.get_ptr_mut(&p.key) {
        Some(st) => st,
        None => {
            let fresh = DnsState::default();
            match DNS_FLOWS.insert(&p.key, &fresh, BPF_NOEXIST as u64) {
                Ok(()) => {}
                Err(e) if e as i64 == -EEXIST => {}
                Err(_) => {
                    stat_add(Stat::DnsStateFull, segs, bytes);
                    return;
                }
            }
            let Some(st) = DNS_FLOWS.get_ptr_mut(&p.key) else {
                return;
            };
            st
        }
    };
    let now = fine_now();
    // SAFETY: a live map value. Two CPUs on one DNS flow at once (a query and its response
    // on two hooks within the same instant) could lose an update; DNS is request/response.
    unsafe {
        if m.response {
            if let Some(us) = (*st).response(&m, now) {
                if let Some(c) = DNS_HIST.get_ptr_mut(rtt_bucket(us) as u32) {
                    *c += 1;
                }
            }
        } else {
            if (*st).query(&m, now) {
                stat_add(Stat::DnsEvicted, segs, bytes);
            }
            // Word by word: a plain array copy becomes a byte loop in BPF.
            let from = name.as_ptr() as *const u64;
            let to = &raw mut (*st).name as *mut u64;
            for i in 0..NAME_KEPT / 8 {
                core::ptr::write_unaligned(to.add(i), core::ptr::read_unaligned(from.add(i)));
            }
        }
    }
}

/// Zeroes a claimed slot's counters word by word: assigning zeroed fields becomes a `memset`
/// call, a byte loop in BPF.
#[inline(always)]
fn zero(v: *mut FlowCounters) {
    const WORDS: usize = core::mem::size_of::<FlowCounters>() / 8;
    let w = v as *mut u64;
    for i in 0..WORDS {
        // SAFETY: FlowCounters is 64-aligned and a whole number of u64 words.
        unsafe { core::ptr::write_volatile(w.add(i), 0) };
    }
}

/// Rounds of the claim: a round that meets a slot being claimed (maybe for this flow) or loses
/// the race for a free one looks again from the start.
const CLAIM_ROUNDS: u32 = 3;

/// The packet's flow slot, updated with the packet (direction `d`), or a slot claimed for it
/// (`shared::table`: the probing and the slot states); `None` when no slot on the key's
/// probe sequence is free (counted as overflow).
///
/// The loops keep little state from one slot to the next (the verifier walks every
/// iteration): a lookup, then, for a new flow, claim rounds that take the first free slot.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn entry<C: Hook>(
    ctx: &C,
    p: &Parsed,
    d: usize,
    home: u32,
    settings: &Settings,
    segs64: u64,
    bytes: u64,
    now: u64,
    egress: bool,
) -> Option<(*mut FlowCounters, u32)> {
    let mask = settings.slot_mask;
    let hops = FLOWS_HOPS.get_ptr_mut(home & mask)?;
    // Only the slots where a flow of this home was ever put: under a flood the window is all
    // held, and walking all of it cost a new flow's packet 64 cold lines (`shared::table`).
    // SAFETY: an array word, only ever or-ed into.
    let m = unsafe { core::ptr::read_volatile(hops) };
    for i in 0..PROBES {
        if m >> i == 0 {
            break;
        }
        if (m >> i) & 1 == 0 {
            continue;
        }
        let at = table::probe(home, i, mask);
        let s = FLOWS.get_ptr_mut(at)?;
        // SAFETY (here and in the claim): a live array slot; its state word only changes
        // atomically, and a LIVE slot's key does not change.
        let st = unsafe { core::ptr::read_volatile(&raw const (*s).state) };
        if st == LIVE && table::same_key(unsafe { &(*s).key }, &p.key) {
            return Some((count_into(s, p, d, segs64, bytes, now), at));
        }
    }
    // A new flow (or one published while its bit was not yet seen: the claim finds it). A full
    // sequence (every slot held, none being claimed) is overflow at once: a full table costs
    // its packets one pass, not one per round.
    let mut again = true;
    for _ in 0..CLAIM_ROUNDS {
        if !again {
            break;
        }
        again = false;
        // The first slot of the window, among the first RECLAIM_WITHIN, whose flow may be
        // reclaimed (`shared::table`, pressure); PROBES: none.
        let mut victim = PROBES;
        for i in 0..PROBES {
            let at = table::probe(home, i, mask);
            let s = FLOWS.get_ptr_mut(at)?;
            // The state read as an atomic or-with-0, which changes nothing but orders: the key
            // is then read after it, so a slot another CPU published LIVE is seen with its key
            // (a plain load may be ordered after the key's on arm64: `shared::table`). Only a
            // new flow's packets get here.
            let st = unsafe { atomic_or::<u32, u32, { SeqCst }>(&raw mut (*s).state, 0) };
            if st == LIVE {
                if table::same_key(unsafe { &(*s).key }, &p.key) {
                    // Another CPU added it meanwhile.
                    return Some((count_into(s, p, d, segs64, bytes, now), at));
                }
                if i < RECLAIM_WITHIN && victim == PROBES && reclaim_candidate(s, now) {
                    victim = i;
                }
                if i + 1 == RECLAIM_WITHIN && victim < PROBES && pressure(mask) {
                    // The first RECLAIM_WITHIN slots all held, and the table past half full:
                    // take the victim's slot rather than walk on.
                    let at = table::probe(home, victim, mask);
                    let vs = FLOWS.get_ptr_mut(at)?;
                    let new = Claim {
                        at,
                        d,
                        egress,
                        segs64,
                        bytes,
                        now,
                    };
                    if let Some(v) = reclaim(ctx, vs, hops, victim, p, &new) {
                        return Some((v, at));
                    }
                }
                continue;
            }
            if st == BUSY
                || !unsafe {
                    atomic_cxchg::<u32, { SeqCst }, { SeqCst }>(&raw mut (*s).state, st, BUSY).1
                }
            {
                // Being claimed, perhaps for this flow, or just taken: look again.
                again = true;
                break;
            }
            set_hop(hops, i);
            let mut extra = 0;
            if owner::on() {
                let port = owner::local_port(p.key.proto, p.key.port_a, p.key.port_b, d);
                owner::claimed(ctx, at, d, egress, port);
                if !egress {
                    extra = OWNER_PENDING;
                }
            }
            let v = publish(s, p, d, segs64, bytes, now, extra);
            let (word, bit) = table::held_bit(at);
            if let Some(w) = FLOWS_HELD.get_ptr_mut(word) {
                // SAFETY: a bitmap word, changed atomically only.
                unsafe { atomic_or::<u64, u64, { Relaxed }>(w, bit) };
            }
            if let Some(n) = FLOWS_HELD.get_ptr_mut(fill_word(mask)) {
                // SAFETY: the fill word, changed atomically only.
                unsafe { atomic_xadd::<u64, u64, { Relaxed }>(n, 1) };
            }
            return Some((v, at));
        }
    }
    overflow(ctx, segs64, bytes, now);
    None
}

/// The held map's word after the bitmap: slots held (`shared::table::TableShape::fill_word`).
#[inline(always)]
fn fill_word(mask: u32) -> u32 {
    ((mask as u64 + 64) / 64) as u32
}

/// Whether the table is past half full (`shared::table::under_pressure`).
#[inline(always)]
fn pressure(mask: u32) -> bool {
    match FLOWS_HELD.get_ptr_mut(fill_word(mask)) {
        // SAFETY: the fill word; a plain read of a word changed atomically.
        Some(n) => table::under_pressure(unsafe { core::ptr::read_volatile(n) }, mask as u64 + 1),
        None => false,
    }
}

/// Marks distance `i` from the key's home as used by a flow of that home, before the flow is
/// published (a lookup that sees it LIVE may not see the bit: it then finds it in the claim).
#[inline(always)]
fn set_hop(hops: *mut u64, i: u32) {
    let bit = 1u64 << (i & 63);
    // SAFETY: an array word, changed atomically only; read first so a known bit costs no
    // locked instruction.
    unsafe {
        if core::ptr::read_volatile(hops) & bit == 0 {
            atomic_or::<u64, u64, { SeqCst }>(hops, bit);
        }
    }
}

/// Writes the packet's new flow into slot `s`, claimed (BUSY) by this program, and publishes
/// it; its counters.
#[inline(always)]
fn publish(
    s: *mut FlowSlot,
    p: &Parsed,
    d: usize,
    segs64: u64,
    bytes: u64,
    now: u64,
    extra: u32,
) -> *mut FlowCounters {
    // SAFETY: claimed: ours until published.
    unsafe {
        (&raw mut (*s).key).write(p.key);
        core::ptr::write_volatile(&raw mut (*s).mark, UNREAD);
        let v = &raw mut (*s).counters;
        zero(v);
        let dc = &raw mut (*v).dir[d];
        (*dc).packets = segs64;
        (*dc).bytes = bytes;
        (*dc).last_seen = now;
        (*v).first_seen = now;
        (*v).tcp_flags = (p.tcp_flags as u32) << (8 * d as u32);
        // Bits beside the initiator (`OWNER_PENDING`) are the flow's from its first packet.
        (*v).initiator = p.initiator as u32 | extra;
        // A full barrier: a CPU that sees LIVE sees the key.
        atomic_xchg::<u32, { SeqCst }>(&raw mut (*s).state, LIVE);
        v
    }
}

/// Whether the flow in slot `s` may be reclaimed now (`shared::table::reclaimable`, idle for
/// `RECLAIM_AGE_TICKS`); reads its two direction lines.
#[inline(always)]
fn worth_reclaiming(s: *mut FlowSlot, now: u64) -> bool {
    // SAFETY: a live array slot; counters are whole words.
    let (p0, p1, l0, l1) = unsafe {
        let c = &raw const (*s).counters;
        (
            core::ptr::read_volatile(&raw const (*c).dir[0].packets),
            core::ptr::read_volatile(&raw const (*c).dir[1].packets),
            core::ptr::read_volatile(&raw const (*c).dir[0].last_seen),
            core::ptr::read_volatile(&raw const (*c).dir[1].last_seen),
        )
    };
    let last = if l0 > l1 { l0 } else { l1 };
    table::reclaimable([p0, p1]) && now.wrapping_sub(last) >= RECLAIM_AGE_TICKS
}

/// Whether LIVE slot `s` holds a flow a new one may take the place of under pressure: not read
/// by the agent yet, and worth reclaiming now (`shared::table`, pressure).
#[inline(always)]
fn reclaim_candidate(s: *mut FlowSlot, now: u64) -> bool {
    // SAFETY: a live array slot; its mark word changes only atomically.
    unsafe { core::ptr::read_volatile(&raw const (*s).mark) == UNREAD && worth_reclaiming(s, now) }
}

/// The new flow a reclaimed slot is given: where, which way, and its first packet.
struct Claim {
    at: u32,
    d: usize,
    egress: bool,
    segs64: u64,
    bytes: u64,
    now: u64,
}

/// Takes LIVE slot `s`, at distance `i` from the packet's home, from the flow it holds for the
/// packet's new flow; the old flow's counts go to `Stat::Reclaimed` (`shared::table`: why only
/// flows the agent has not read). `None` when the slot changed meanwhile.
#[inline(always)]
fn reclaim<C: Hook>(
    ctx: &C,
    s: *mut FlowSlot,
    hops: *mut u64,
    i: u32,
    p: &Parsed,
    new: &Claim,
) -> Option<*mut FlowCounters> {
    // SAFETY: a live array slot; its state and mark words change only atomically.
    unsafe {
        // The mark first: the agent adopts a flow by the same swap (UNREAD → READ), so one of
        // the two wins. Then the state, as a claim does.
        if !atomic_cxchg::<u32, { SeqCst }, { SeqCst }>(&raw mut (*s).mark, UNREAD, RECLAIMING).1 {
            return None;
        }
        if !atomic_cxchg::<u32, { SeqCst }, { SeqCst }>(&raw mut (*s).state, LIVE, BUSY).1 {
            atomic_xchg::<u32, { SeqCst }>(&raw mut (*s).mark, UNREAD);
            return None;
        }
        // Ours now; the slot may hold another flow than the one looked at: look again.
        if !worth_reclaiming(s, new.now) {
            atomic_xchg::<u32, { SeqCst }>(&raw mut (*s).mark, UNREAD);
            atomic_xchg::<u32, { SeqCst }>(&raw mut (*s).state, LIVE);
            return None;
        }
        // A packet of the old flow that another CPU, having found it LIVE, adds between these
        // reads and the zeroing is lost with it, and one added after is counted into the new
        // flow, as with the agent's free and a re-claim (the flow has been idle
        // RECLAIM_AGE_TICKS, so one arriving in these few instructions is rare).
        let c = &raw const (*s).counters;
        let packets = (*c).dir[0].packets + (*c).dir[1].packets;
        let old_bytes = (*c).dir[0].bytes + (*c).dir[1].bytes;
        stat_add(Stat::Reclaimed, packets, old_bytes);
        // The slot stays held (its bit is set); the old flow's home keeps its hop bit.
        set_hop(hops, i);
        let mut extra = 0;
        if owner::on() {
            let port = owner::local_port(p.key.proto, p.key.port_a, p.key.port_b, new.d);
            owner::claimed(ctx, new.at, new.d, new.egress, port);
            if !new.egress {
                extra = OWNER_PENDING;
            }
        }
        Some(publish(s, p, new.d, new.segs64, new.bytes, new.now, extra))
    }
}

/// Counts the packet into the flow of LIVE slot `s`; its counters.
#[inline(always)]
fn count_into(
    s: *mut FlowSlot,
    p: &Parsed,
    d: usize,
    segs: u64,
    bytes: u64,
    now: u64,
) -> *mut FlowCounters {
    // SAFETY: a live array slot.
    let v = unsafe { &raw mut (*s).counters };
    update(v, p, d, segs, bytes, now);
    v
}

/// The fine clock, for the two ends of an RTT sample.
#[inline(always)]
fn fine_now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// RTT bookkeeping of one TCP segment: egress arms (SYN, SYN-ACK, a new TSval), ingress
/// answers (the acknowledging segment, the first echo of a TSval). `d` is the segment's
/// direction, `dc` its part of the entry. The fine clock is read only by segments that may start or
/// end a sample.
#[inline(always)]
fn rtt(
    p: &Parsed,
    d: usize,
    tk: &mut TsKey,
    r: &mut FlowRtt,
    dc: &mut DirCounters,
    egress: bool,
    interval_us: u32,
    segs: u64,
    bytes: u64,
) {
    let syn = p.tcp_flags & tcp::SYN != 0;
    if egress {
        if syn {
            r.syn_sent(p.seq, fine_now());
        } else if p.has_ts && p.tsval != dc.ts_last_val {
            let now = fine_now();
            if !r.arm_tsval(&mut dc.ts_last_val, p.tsval, now, interval_us) {
                return;
            }
            // SYNs are left to the handshake sample, or it would be counted twice.
            tk.flow = p.key;
            tk.tsval = p.tsval;
            tk.dir = d as u8;
            zero_pad(&mut tk._pad);
            match RTT_PENDING.insert(&*tk, &now, BPF_NOEXIST as u64) {
                Ok(()) => {}
                Err(e) if e as i64 == -EEXIST => {}
                Err(_) => stat_add(Stat::RttPendingFull, segs, bytes),
            }
        }
        return;
    }
    // Only an ACK that may answer a pending SYN or SYN-ACK needs the time.
    if p.tcp_flags & tcp::ACK != 0 && r.hs_sent_us != 0 {
        if let Some(us) = r.ack_received(p.ack, fine_now()) {
            sample(r, us);
        }
    }
    if p.has_ts && r.new_echo(&mut dc.ts_last_ecr, p.tsecr) {
        // The echoed TSval went the other way.
        tk.flow = p.key;
        tk.tsval = p.tsecr;
        tk.dir = (d ^ 1) as u8;
        zero_pad(&mut tk._pad);
        // SAFETY: the value is copied out before the entry is removed.
        if let Some(sent) = unsafe { RTT_PENDING.get(&*tk) }.copied() {
            let _ = RTT_PENDING.remove(&*tk);
            let now = fine_now();
            if now >= sent {
                sample(r, ns_to_us(now - sent));
            }
        }
    }
}

#[inline(always)]
fn sample(r: &mut FlowRtt, us: u32) {
    r.add_sample(us);
    if let Some(c) = RTT_HIST.get_ptr_mut(rtt_bucket(us) as u32) {
        // SAFETY: per-CPU slot.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn update(v: *mut FlowCounters, p: &Parsed, d: usize, segs: u64, bytes: u64, now: u64) {
    // SAFETY: `v` points at a live map value; concurrent CPUs only touch it atomically
    // (counters, flags) or with whole-word stores (last_seen).
    unsafe {
        let dc = &raw mut (*v).dir[d];
        atomic_xadd::<u64, u64, { Relaxed }>(&raw mut (*dc).packets, segs);
        atomic_xadd::<u64, u64, { Relaxed }>(&raw mut (*dc).bytes, bytes);
        core::ptr::write_volatile(&raw mut (*dc).last_seen, now);
        let bits = (p.tcp_flags as u32) << (8 * d as u32);
        if bits != 0 && core::ptr::read_volatile(&raw const (*v).tcp_flags) & bits != bits {
            atomic_or::<u32, u32, { Relaxed }>(&raw mut (*v).tcp_flags, bits);
        }
    }
}

/// The direction as an index of the two-element counters. Read as a plain byte and masked:
/// LLVM knows the enum is 0 or 1 and would drop a mask, but the verifier only sees a byte
/// read back from a map and must be shown the bound.
#[inline(always)]
fn dir_index(p: &Parsed) -> usize {
    // SAFETY: Direction is repr(u8); reading its byte is always valid.
    let b = unsafe { core::ptr::read_volatile(&raw const p.dir as *const u8) };
    (b & 1) as usize
}

/// The table is full: the packet goes to the overflow record, never nowhere.
#[inline(always)]
fn overflow<C: EbpfContext>(ctx: &C, segs: u64, bytes: u64, now: u64) {
    stat_add(Stat::Overflow, segs, bytes);
    if let Some(at) = WARN_AT.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        unsafe {
            if now.wrapping_sub(*at) > WARN_EVERY_TICKS {
                *at = now;
                warn!(
                    ctx,
                    "flow table full: packets counted in the overflow record"
                );
            }
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
