//! The benchmark's reference floor (`bench/`): the least a flow counter can do in each hook —
//! an IPv4 5-tuple and one hash-map update per packet (atomic adds), nothing else. No VLANs,
//! no IPv6, no canonical ordering, no RTT, no sampling: the cost edgeflow's programs are
//! compared with, hook by hook. Not used by the agent.

use aya_ebpf::{
    bindings::{xdp_action, BPF_NOEXIST, TC_ACT_UNSPEC},
    macros::{classifier, map, xdp},
    maps::{HashMap, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use core::intrinsics::{atomic_xadd, AtomicOrdering::Relaxed};

/// One-way 5-tuple, addresses and ports as on the wire.
#[repr(C)]
#[derive(Clone, Copy)]
struct Key {
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    proto: u8,
    _pad: [u8; 3],
}

#[repr(C)]
struct Count {
    packets: u64,
    bytes: u64,
}

/// Read back by `bench`'s `bare-counter` loader: packets per 5-tuple.
#[map(name = "BARE_FLOWS")]
static BARE_FLOWS: HashMap<Key, Count> = HashMap::with_max_entries(16_384, 0);

/// Per CPU: [0] packets not counted because the map was full. Touched only then.
#[map(name = "BARE_FULL")]
static BARE_FULL: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const EEXIST: i64 = 17;
/// What TC pulls into the linear area when headers sit in paged data: the longest Ethernet
/// + IPv4 (with options) + ports header is 78 bytes.
const PULL_LEN: u32 = 128;

#[xdp]
pub fn bare_xdp(ctx: XdpContext) -> u32 {
    let (data, end) = (ctx.data(), ctx.data_end());
    let _ = count(data, end, 1, (end - data) as u64);
    xdp_action::XDP_PASS
}

#[classifier]
pub fn bare_tc(ctx: TcContext) -> i32 {
    // SAFETY: the context pointer is valid for the program's run.
    let (len, segs) = unsafe { ((*ctx.skb.skb).len, (*ctx.skb.skb).gso_segs) };
    // A GRO aggregate stands for gso_segs wire packets, as edgeflow counts them.
    let segs = if segs > 1 { segs } else { 1 };
    if !count(ctx.data(), ctx.data_end(), segs as u64, len as u64)
        && ctx.data_end() - ctx.data() < len as usize
        && ctx
            .pull_data(if len < PULL_LEN { len } else { PULL_LEN })
            .is_ok()
    {
        // Headers in paged data (trafgen's TX ring, for one): pull them in, as edgeflow does,
        // or the floor would count nothing.
        count(ctx.data(), ctx.data_end(), segs as u64, len as u64);
    }
    // No verdict, as edgeflow's programs: the next program on the hook runs too (the
    // benchmark's pairs run both on the same packets).
    TC_ACT_UNSPEC
}

#[inline(always)]
fn load<T: Copy>(p: usize, end: usize) -> Option<T> {
    if p + core::mem::size_of::<T>() > end {
        return None;
    }
    // SAFETY: [p, p + size) was just checked to lie inside the packet.
    Some(unsafe { core::ptr::read_unaligned(p as *const T) })
}

/// Counts the packet; false when its headers are not in `[data, end)`.
#[inline(always)]
fn count(data: usize, end: usize, segs: u64, bytes: u64) -> bool {
    let Some(key) = key(data, end) else {
        return false;
    };
    if let Some(c) = BARE_FLOWS.get_ptr_mut(&key) {
        add(c, segs, bytes);
        return true;
    }
    let first = Count {
        packets: segs,
        bytes,
    };
    match BARE_FLOWS.insert(&key, &first, BPF_NOEXIST as u64) {
        Ok(()) => {}
        // Another CPU inserted it first.
        Err(e) if e as i64 == -EEXIST => {
            if let Some(c) = BARE_FLOWS.get_ptr_mut(&key) {
                add(c, segs, bytes);
            }
        }
        Err(_) => {
            if let Some(n) = BARE_FULL.get_ptr_mut(0) {
                // SAFETY: per-CPU slot.
                unsafe { *n += segs };
            }
        }
    }
    true
}

#[inline(always)]
fn add(c: *mut Count, segs: u64, bytes: u64) {
    // SAFETY: a live map value; other CPUs only add to it atomically.
    unsafe {
        atomic_xadd::<u64, u64, { Relaxed }>(&raw mut (*c).packets, segs);
        atomic_xadd::<u64, u64, { Relaxed }>(&raw mut (*c).bytes, bytes);
    }
}

#[inline(always)]
fn key(data: usize, end: usize) -> Option<Key> {
    if u16::from_be(load::<u16>(data + 12, end)?) != ETH_P_IP {
        return None;
    }
    let ip = data + ETH_HLEN;
    let vihl: u8 = load(ip, end)?;
    let proto: u8 = load(ip + 9, end)?;
    let src: u32 = load(ip + 12, end)?;
    let dst: u32 = load(ip + 16, end)?;
    let (sport, dport) = if proto == 6 || proto == 17 {
        let l4 = ip + ((vihl & 0x0f) as usize) * 4;
        (load::<u16>(l4, end)?, load::<u16>(l4 + 2, end)?)
    } else {
        (0, 0)
    };
    Some(Key {
        src,
        dst,
        sport,
        dport,
        proto,
        _pad: [0; 3],
    })
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
