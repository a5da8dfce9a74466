//! The flow table's layout: an array of [`FlowSlot`]s with open addressing, shared by the
//! programs (which find, claim and count into slots) and the agent (which reads them and
//! frees the idle ones).
//!
//! Why not the kernel's BPF hash map: its lookup is a call that hashes the key with jhash,
//! reads the bucket's line, then the element's header line and the key, and only then the
//! value. In an array the lookup is inlined by the verifier into an index computation; a
//! slot's first line holds its state and the whole key, so a packet of a known flow reads
//! that line, the line of what packets seldom write, and writes its direction's line. On
//! bulk TCP this took the program from 1.4–1.7× the bare hash-map counter to about its cost
//! (bench/RESULTS.md, session 8). The array is also mappable, so the agent reads the table
//! as memory instead of through a syscall per batch of entries.
//!
//! Probing is linear from the key's home slot ([`hash`] masked by [`TableShape::mask`]) for
//! at most [`PROBES`] slots. A slot's [`FlowSlot::state`] moves:
//! - `EMPTY → BUSY → LIVE`: a program claims a free slot with a compare-and-swap, writes the
//!   key and the first packet's counters, then publishes it. A program that finds a slot
//!   `BUSY` looks again (the claimer may be adding the very flow it carries).
//! - `LIVE → GONE`: the agent frees an idle flow's slot with a compare-and-swap. A lookup
//!   goes on past `GONE` slots (the flow it looks for may sit further on); a claim takes the
//!   first `GONE` or `EMPTY` slot of the probe sequence (`GONE → BUSY`).
//! - `GONE → EMPTY`: the agent, when the next slot is `EMPTY` (no probe sequence can then
//!   pass through it), so runs of freed slots do not lengthen lookups for ever.
//!
//! A bitmap beside the table has a bit per slot, set when a program claims the slot and
//! cleared when the agent frees it: a drain visits the held slots only, so its cost follows
//! the flows, not the table's size (a slot is a line of its own; reading every slot's state
//! of a default table is 2 MiB of cache misses).
//!
//! Ordering: a lookup reads a slot's state and then its key with plain loads, which a weakly
//! ordered CPU (arm64) may perform key first. A lookup that meets a slot another CPU publishes
//! at that moment for the same new flow can then see LIVE with the key not yet written and
//! miss it. So a lookup that misses is not trusted: the claim that follows reads each state
//! with an atomic or-with-0 (BPF_OR | BPF_FETCH), which the arm64 JIT emits with acquire and
//! release order (LDSETAL, or an exclusive loop and a barrier), and the publishing exchange is
//! ordered after the key's stores, so a slot seen LIVE there is seen with its key and the
//! packet is counted into it: one slot per flow. Only a new flow's packets pay for it (a locked
//! instruction per slot looked at on x86); a known flow's lookup stays plain loads. BPF
//! load-acquire (Linux 6.15) would do it with a load.
//!
//! The programs' lookup reads only the slots a hop mask names: per home slot a word (map
//! `FLOWS_HOPS`) with bit i set once a flow of that home was put i slots from it (set before
//! the flow is published; never cleared while the programs run, so a bit may name a slot
//! whose flow left). A lookup that misses goes to the claim, which walks the window as above
//! and finds a flow whose bit it did not see yet. In a full table a new flow's packet so
//! reads a few slots instead of all [`PROBES`] (64 cold lines per packet of a flood).
//!
//! Under pressure (issue 24: more slots held than the table is sized for, [`under_pressure`],
//! counted in the word after the held bitmap) a new flow whose first [`RECLAIM_WITHIN`] slots
//! are all held takes the slot of the first of them whose flow is [`reclaimable`] (one packet, or a few
//! never answered), idle for [`RECLAIM_AGE_TICKS`] and not yet read by the agent
//! ([`FlowSlot::mark`] `UNREAD`): the
//! program moves that flow's counts to `Stat::Reclaimed` (reported with the overflow record)
//! and the slot to the new flow. A flow the agent has read is only the agent's to free (its
//! drain reported part of it: moving the rest would need the agent's baseline), and the agent
//! frees reclaimable ones at each drain while the table is past half full. So a flood of
//! spoofed one-packet flows cycles through the slots it finds while answered conversations
//! keep theirs; docs/design.md, "Floods".
//!
//! The table has twice as many slots as the flows it is sized for
//! ([`TableShape::for_flows`]): at that load a probe sequence is a few slots long, and a new
//! flow finds no free slot in [`PROBES`] only when the table is nearly full. A packet whose
//! flow finds no slot is counted as overflow.

use crate::{FlowCounters, FlowKey};

/// Never used: a lookup stops here, a claim may take it.
pub const EMPTY: u32 = 0;
/// Holds a flow.
pub const LIVE: u32 = 1;
/// Being claimed by a program (for a few instructions).
pub const BUSY: u32 = 2;
/// Freed by the agent: a lookup goes on, a claim may take it.
pub const GONE: u32 = 3;

/// Slots a lookup or claim looks at, from the key's home slot on.
pub const PROBES: u32 = 64;

/// A LIVE slot's [`FlowSlot::mark`]: the agent has not read the flow yet, so the programs may
/// reclaim it under pressure ([`reclaimable`]) and move its counts to `Stat::Reclaimed`.
pub const UNREAD: u32 = 0;
/// The agent has read the flow (its counts are the drain's to report): only the agent frees it.
pub const READ: u32 = 1;
/// A program is reclaiming the flow (for a few instructions): the agent leaves it alone.
pub const RECLAIMING: u32 = 2;

/// A new flow takes a reclaimable flow's slot when the first this many slots of its window
/// are all held (the table is under pressure there), rather than walk on for a free one.
pub const RECLAIM_WITHIN: u32 = 16;

/// Whether a table of `slots` slots with `held` of them held is under pressure: more flows
/// than it is sized for (half its slots). Only then is a flow reclaimed.
#[inline(always)]
pub fn under_pressure(held: u64, slots: u64) -> bool {
    held * 2 > slots
}

/// At most this many packets, all one way, make a flow [`reclaimable`].
pub const RECLAIM_PACKETS: u64 = 4;
/// Ticks (`bpf_jiffies64`) a flow must have been idle before a program reclaims it: a new
/// connection's first packet keeps its slot until its answer comes (1–10 ms at HZ 1000–100,
/// 8 ms at this machine's 250; a handshake across a LAN or a namespace takes well under 1 ms).
pub const RECLAIM_AGE_TICKS: u64 = 2;

/// Whether a flow with these packets per direction is not worth its slot under pressure: one
/// packet, or a few that were never answered (a scan's probes, a spoofed source's SYNs). An
/// answered conversation, or a one-way stream past a few packets, is never reclaimed.
#[inline(always)]
pub fn reclaimable(packets: [u64; 2]) -> bool {
    (packets[0] == 0 || packets[1] == 0) && packets[0] + packets[1] <= RECLAIM_PACKETS
}

/// One flow table slot: state and key in the first line, then the counters.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSlot {
    /// [`EMPTY`], [`LIVE`], [`BUSY`] or [`GONE`].
    pub state: u32,
    /// Whether the agent has read the flow: [`UNREAD`], [`READ`] or [`RECLAIMING`] (a word
    /// of the first line's padding; changed by compare-and-swap only).
    pub mark: u32,
    pub key: FlowKey,
    pub _pad2: u64,
    pub counters: FlowCounters,
}

/// The key of the table's hash ([`hash`]): 128 bits the agent draws from the OS (getrandom)
/// each time it loads the programs.
pub type HashKey = [u64; 2];

/// How big the table is and how keys are spread over it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableShape {
    /// Number of slots, a power of two.
    pub slots: u32,
    /// The hash's key ([`hash`]): without it, flows cannot be crafted to share a home slot.
    pub key: HashKey,
}

impl TableShape {
    /// The table for `max_flows` flows: twice as many slots, rounded up to a power of two.
    pub fn for_flows(max_flows: u32, key: HashKey) -> TableShape {
        TableShape {
            slots: max_flows.saturating_mul(2).next_power_of_two(),
            key,
        }
    }

    pub fn mask(&self) -> u32 {
        self.slots - 1
    }

    /// Words of the held-slots bitmap.
    pub fn bitmap_words(&self) -> u32 {
        self.slots.div_ceil(64)
    }

    /// Words of the held-slots map: the bitmap, then [`TableShape::fill_word`].
    pub fn held_words(&self) -> u32 {
        self.bitmap_words() + 1
    }

    /// The word after the bitmap: slots held now, added to by a program that claims a free
    /// slot and taken from by the agent when it frees one ([`under_pressure`]).
    pub fn fill_word(&self) -> u32 {
        self.bitmap_words()
    }

    /// The slots a lookup of `key` looks at, in order.
    pub fn probe_sequence(&self, key: &FlowKey) -> impl Iterator<Item = u32> {
        let (home, mask) = (hash(key, &self.key), self.mask());
        (0..PROBES.min(self.slots)).map(move |i| probe(home, i, mask))
    }
}

/// The `i`th slot looked at from home slot `home` in a table of slot mask `mask`.
#[inline(always)]
pub fn probe(home: u32, i: u32, mask: u32) -> u32 {
    home.wrapping_add(i) & mask
}

/// Slot `i`'s word and bit in the held-slots bitmap.
#[inline(always)]
pub fn held_bit(i: u32) -> (u32, u64) {
    (i / 64, 1 << (i % 64))
}

/// The key's hash (its home slot, masked): SipHash-1-3 (Aumasson and Bernstein; the
/// variant Rust's std and the Linux kernel's `hsiphash` family use for hash tables) of the
/// key's 8-byte words under the 128-bit `key`, its low 32 bits.
///
/// A keyed PRF over the whole flow key: whoever does not know `key` cannot choose flows that
/// share a home slot or a probe chain (the multiply-xorshift it replaced mixed its seed into
/// the starting state only, and flipping bit 63 of one word and bits 63 and 31 of the next
/// collided for every seed). About 150 ALU instructions for the 48-byte key, no loads but the
/// key's (bench/RESULTS.md, "Keyed hash").
#[inline(always)]
pub fn hash(key: &FlowKey, k: &HashKey) -> u32 {
    sip::<1, 3>(key, k) as u32
}

/// SipHash-c-d of a [`FlowKey`]'s words (its length, 48, a multiple of 8: the final block
/// is the length byte alone).
#[inline(always)]
fn sip<const C: usize, const D: usize>(key: &FlowKey, k: &HashKey) -> u64 {
    let w = key as *const FlowKey as *const u64;
    let mut v0 = k[0] ^ 0x736f_6d65_7073_6575;
    let mut v1 = k[1] ^ 0x646f_7261_6e64_6f6d;
    let mut v2 = k[0] ^ 0x6c79_6765_6e65_7261;
    let mut v3 = k[1] ^ 0x7465_6462_7974_6573;
    macro_rules! rounds {
        ($n:expr) => {
            for _ in 0..$n {
                v0 = v0.wrapping_add(v1);
                v1 = v1.rotate_left(13) ^ v0;
                v0 = v0.rotate_left(32);
                v2 = v2.wrapping_add(v3);
                v3 = v3.rotate_left(16) ^ v2;
                v0 = v0.wrapping_add(v3);
                v3 = v3.rotate_left(21) ^ v0;
                v2 = v2.wrapping_add(v1);
                v1 = v1.rotate_left(17) ^ v2;
                v2 = v2.rotate_left(32);
            }
        };
    }
    for i in 0..WORDS {
        // SAFETY: a FlowKey is WORDS whole words; read unaligned (it is 4-aligned). Little
        // endian, as SipHash reads its message, on every target we build for.
        let m = u64::from_le(unsafe { core::ptr::read_unaligned(w.add(i)) });
        v3 ^= m;
        rounds!(C);
        v0 ^= m;
    }
    let b = (core::mem::size_of::<FlowKey>() as u64) << 56;
    v3 ^= b;
    rounds!(C);
    v0 ^= b;
    v2 ^= 0xff;
    rounds!(D);
    v0 ^ v1 ^ v2 ^ v3
}

/// Whether the slot's key is `key`, word by word.
#[inline(always)]
pub fn same_key(slot: &FlowKey, key: &FlowKey) -> bool {
    let (a, b) = (
        slot as *const FlowKey as *const u64,
        key as *const FlowKey as *const u64,
    );
    for i in 0..WORDS {
        // SAFETY: both are WORDS whole words.
        if unsafe { core::ptr::read_unaligned(a.add(i)) != core::ptr::read_unaligned(b.add(i)) } {
            return false;
        }
    }
    true
}

const WORDS: usize = core::mem::size_of::<FlowKey>() / 8;

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, explicit padding, no pointers: any byte pattern is a valid value.
unsafe impl aya::Pod for FlowSlot {}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn state_and_key_share_the_first_line_and_directions_have_their_own() {
        assert_eq!(size_of::<FlowKey>() % 8, 0);
        assert!(offset_of!(FlowSlot, key) + size_of::<FlowKey>() <= 64);
        assert_eq!(offset_of!(FlowSlot, counters), 64);
        let dir = offset_of!(FlowSlot, counters) + offset_of!(FlowCounters, dir);
        assert_eq!((dir, size_of::<FlowSlot>()), (128, 256));
    }

    /// Reclaiming starts past half full (more flows than the table is sized for), and takes
    /// only one-packet or unanswered flows of at most RECLAIM_PACKETS packets.
    #[test]
    fn pressure_and_reclaimable_flows() {
        assert!(!under_pressure(64, 128) && under_pressure(65, 128));
        assert!(reclaimable([1, 0]) && reclaimable([0, 4]));
        assert!(!reclaimable([1, 1]) && !reclaimable([5, 0]));
    }

    #[test]
    fn twice_the_flows_in_a_power_of_two() {
        assert_eq!(TableShape::for_flows(16_384, [0, 0]).slots, 32_768);
        assert_eq!(TableShape::for_flows(1000, [0, 0]).slots, 2048);
        assert_eq!(TableShape::for_flows(16, [0, 0]).mask(), 31);
    }

    fn key(n: u32) -> FlowKey {
        let mut k = FlowKey {
            port_a: n as u16,
            port_b: (n >> 16) as u16,
            proto: 17,
            ..FlowKey::default()
        };
        k.addr_a[15] = 1;
        k
    }

    #[test]
    fn the_key_and_every_key_word_move_the_hash() {
        let k = key(7);
        assert_ne!(hash(&k, &[1, 0]), hash(&k, &[2, 0]));
        assert_ne!(hash(&k, &[1, 0]), hash(&k, &[1, 1]));
        let bytes = size_of::<FlowKey>() - 3;
        for i in 0..bytes {
            let mut other = k;
            // SAFETY: flipping a byte of a plain-integer struct.
            unsafe { *(&raw mut other).cast::<u8>().add(i) ^= 1 };
            assert_ne!(hash(&k, &[1, 2]), hash(&other, &[1, 2]), "byte {i}");
            assert!(!same_key(&k, &other), "byte {i}");
        }
        assert!(same_key(&k, &key(7)));
    }

    #[test]
    fn keys_spread_evenly_over_the_slots() {
        // 16k sequential ports (a scan) into 32k slots: no home slot takes more than a few.
        let shape = TableShape::for_flows(16_384, [99, 0x5eed]);
        let mut homes = alloc::vec![0u8; shape.slots as usize];
        for n in 0..16_384 {
            homes[(hash(&key(n), &shape.key) & shape.mask()) as usize] += 1;
        }
        assert!(*homes.iter().max().unwrap() <= 8);
        let used = homes.iter().filter(|&&c| c > 0).count();
        // Random placement fills 1 - e^-0.5 = 39 % of the slots.
        assert!((12_000..14_000).contains(&used), "{used}");
    }

    /// SplitMix64, for random keys and hash keys.
    fn splitmix(s: &mut u64) -> u64 {
        *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn random_key(s: &mut u64) -> FlowKey {
        let mut k = FlowKey::default();
        let w = (&raw mut k).cast::<u64>();
        for i in 0..WORDS {
            // SAFETY: a FlowKey is WORDS plain-integer words.
            unsafe { w.add(i).write_unaligned(splitmix(s)) };
        }
        k
    }

    /// The same rounds as std's SipHasher (SipHash-2-4) give the same value: the rounds, the
    /// constants and the final block are SipHash's.
    #[test]
    #[allow(deprecated)]
    fn the_rounds_are_siphash() {
        use core::hash::Hasher;
        let mut s = 1;
        for _ in 0..100 {
            let k = [splitmix(&mut s), splitmix(&mut s)];
            let f = random_key(&mut s);
            let mut h = core::hash::SipHasher::new_with_keys(k[0], k[1]);
            // SAFETY: the key's bytes.
            h.write(unsafe {
                core::slice::from_raw_parts((&raw const f).cast::<u8>(), size_of::<FlowKey>())
            });
            assert_eq!(sip::<2, 4>(&f, &k), h.finish());
        }
    }

    /// The multiply-xorshift hash this table used before (issue 24), to show the collision
    /// below is a real one.
    fn old_hash(key: &FlowKey, seed: u32) -> u32 {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let w = key as *const FlowKey as *const u64;
        let mut h = seed as u64 ^ K;
        for i in 0..WORDS {
            // SAFETY: as in `sip`.
            let x = unsafe { core::ptr::read_unaligned(w.add(i)) };
            h = (h ^ x).wrapping_mul(K);
            h ^= h >> 32;
        }
        h as u32
    }

    /// Issue 24's chosen collision: flip bit 63 of one key word and bits 63 and 31 of the
    /// next. It collided under every seed of the old hash; under random keys of this one two
    /// such keys share a home slot only as often as any two keys do (1 in 32k here).
    #[test]
    fn the_chosen_collision_no_longer_collides() {
        let mut s = 24;
        let mask = TableShape::for_flows(16_384, [0, 0]).mask();
        let (mut old, mut full, mut home, mut tries) = (0, 0, 0, 0);
        for _ in 0..2_000 {
            let k = random_key(&mut s);
            let hk = [splitmix(&mut s), splitmix(&mut s)];
            let seed = splitmix(&mut s) as u32;
            for i in 0..WORDS - 1 {
                let mut c = k;
                let w = (&raw mut c).cast::<u64>();
                // SAFETY: words i and i + 1 of the key.
                unsafe {
                    w.add(i)
                        .write_unaligned(w.add(i).read_unaligned() ^ 1 << 63);
                    let n = w.add(i + 1).read_unaligned() ^ (1 << 63 | 1 << 31);
                    w.add(i + 1).write_unaligned(n);
                }
                tries += 1;
                old += (old_hash(&k, seed) == old_hash(&c, seed)) as u32;
                full += (hash(&k, &hk) == hash(&c, &hk)) as u32;
                home += (hash(&k, &hk) & mask == hash(&c, &hk) & mask) as u32;
            }
        }
        assert_eq!(old, tries, "the construction collided under the old hash");
        assert_eq!(full, 0, "32-bit hashes equal");
        // 10,000 pairs, 1 in 32,768 by chance: 0.3 expected.
        assert!(home <= 3, "{home} of {tries} pairs share a home slot");
    }

    #[test]
    fn probe_sequences_wrap_and_stay_within_small_tables() {
        let shape = TableShape::for_flows(16, [3, 0]);
        let seq: alloc::vec::Vec<u32> = shape.probe_sequence(&key(1)).collect();
        assert_eq!(seq.len(), 32);
        let mut sorted = seq.clone();
        sorted.sort();
        assert_eq!(sorted, (0..32).collect::<alloc::vec::Vec<_>>());
    }
}
