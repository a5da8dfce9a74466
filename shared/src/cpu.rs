//! The programs' per-CPU working memory: one [`CpuSlot`] per CPU in a plain array map indexed
//! by CPU number ([`CPU_SLOTS_MAP`]), holding the stats counters and the scratch room a
//! packet's accounting needs.
//!
//! Why not a per-CPU map: the kernel carves per-CPU map values out of its per-CPU allocator's
//! vmalloc area, mapped in 4 KiB pages, so a program run that finds its caches cold (every
//! run at 100 kpps, or per GRO aggregate) pays a page walk for them besides the cache lines.
//! A small plain array is allocated with kmalloc, in the kernel's directly mapped memory
//! (huge pages). The programs index it with `bpf_get_smp_processor_id()`, which the verifier
//! inlines; they cannot nest on one CPU, as with a per-CPU map.

use crate::{parse::Parsed, rtt::TsKey, stats::Stats, table::HashKey};

/// Map name of the CPU slots; the loader sizes it to the machine's possible CPUs.
pub const CPU_SLOTS_MAP: &str = "CPU_SLOTS";
/// Entries in the object file, before the loader sets the number of possible CPUs.
pub const DEFAULT_CPUS: u32 = 64;

/// What the agent chose at start-up, as the programs read it on every packet. In each slot
/// rather than in `.rodata`: the slot's lines are loaded anyway, a `.rodata` line is one more
/// for a run with cold caches. Written by the loader before the programs are attached.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// At most one timestamp RTT sample per flow per this many µs.
    pub rtt_interval_us: u32,
    /// 1-in-N packet sampling; 0 and 1 count every packet.
    pub sample_every: u32,
    /// TCP RTT tracking: 1 on, 0 off.
    pub rtt_on: u16,
    /// TCP health (retransmissions, RST/FIN/SYN counts: [`crate::conn`]): 1 on, 0 off.
    pub tcp_health: u8,
    /// DNS over UDP port 53 ([`crate::dns`]): 1 on, 0 off (port-53 packets skip it). A byte
    /// of what was `tcp_health`'s u16: the settings and the first stats stay in two lines.
    pub dns: u8,
    /// The flow table's slot mask ([`crate::table::TableShape`]; its hash key is in
    /// [`CpuSlot::hash_key`]).
    pub slot_mask: u32,
}

/// One CPU's slot. What every packet touches comes first and together — the parsed packet,
/// the settings, then the stats block, whose first two counters (`Seen`, `Parsed`) every
/// packet bumps: 128 bytes, two cache lines. The RTT key (written rarely) comes last.
/// Line-aligned, so no two CPUs' slots share a line.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct CpuSlot {
    /// The packet being accounted.
    pub parsed: Parsed,
    pub settings: Settings,
    /// This CPU's counters, indexed by [`crate::Stat`]; the agent sums them over slots.
    pub stats: Stats,
    /// The pending map's key of a TSval.
    pub ts_key: TsKey,
    /// The flow table hash's key ([`crate::table::hash`]), written by the loader with the
    /// settings. Here and not in [`Settings`]: 16 bytes there would push the stats every
    /// packet bumps into a third line; here it shares a line with the RTT key.
    pub hash_key: HashKey,
}

/// A slot as the agent reads and writes it: bytes. A slot's parsed packet holds enums
/// (`Direction`, `Initiator`), so not every bit pattern is a `CpuSlot` and it cannot be
/// `aya::Pod`; the agent only needs the settings (written) and the stats (read), both plain
/// integers at their offsets in [`CpuSlot`].
#[cfg(feature = "user")]
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct SlotBytes(pub [u8; core::mem::size_of::<CpuSlot>()]);

#[cfg(feature = "user")]
impl SlotBytes {
    /// A zeroed slot holding `settings` and the table's hash key.
    pub fn with_settings(settings: Settings, hash_key: HashKey) -> SlotBytes {
        let mut b = SlotBytes([0; core::mem::size_of::<CpuSlot>()]);
        let at = core::mem::offset_of!(CpuSlot, settings);
        let key_at = core::mem::offset_of!(CpuSlot, hash_key);
        // SAFETY: `Settings` (integers, no padding) and the key fit at their offsets inside.
        unsafe {
            core::ptr::write_unaligned(b.0.as_mut_ptr().add(at).cast::<Settings>(), settings);
            core::ptr::write_unaligned(b.0.as_mut_ptr().add(key_at).cast::<HashKey>(), hash_key);
        };
        b
    }

    /// The table's hash key the loader wrote.
    pub fn hash_key(&self) -> HashKey {
        let at = core::mem::offset_of!(CpuSlot, hash_key);
        // SAFETY: two u64 at their offset inside.
        unsafe { core::ptr::read_unaligned(self.0.as_ptr().add(at).cast::<HashKey>()) }
    }

    /// The settings the loader wrote.
    pub fn settings(&self) -> Settings {
        let at = core::mem::offset_of!(CpuSlot, settings);
        // SAFETY: `Settings` (integers: any bit pattern is one) lies at its offset inside.
        unsafe { core::ptr::read_unaligned(self.0.as_ptr().add(at).cast::<Settings>()) }
    }

    /// The slot's stats block.
    pub fn stats(&self) -> Stats {
        let at = core::mem::offset_of!(CpuSlot, stats);
        // SAFETY: `Stats` (u64 counters: any bit pattern is one) lies at its offset inside.
        unsafe { core::ptr::read_unaligned(self.0.as_ptr().add(at).cast::<Stats>()) }
    }
}

#[cfg(feature = "user")]
// SAFETY: plain bytes, every bit pattern valid.
unsafe impl aya::Pod for SlotBytes {}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn slots_are_whole_cache_lines() {
        assert_eq!(align_of::<CpuSlot>(), 64);
        // The per-packet part: parsed packet, settings, `Seen` and `Parsed`.
        let hot = core::mem::offset_of!(CpuSlot, stats) + 2 * size_of::<crate::Count>();
        assert_eq!(hot, 128);
        assert_eq!(size_of::<CpuSlot>() % 64, 0);
        // Up to 63 CPUs' slots and the map's header stay within what the kernel allocates
        // with kmalloc for an array (32 KiB); more CPUs still work, in vmalloc'd pages.
        // (384 bytes before the hash key and the DNS stats.)
        assert_eq!(size_of::<CpuSlot>(), 576);
    }

    /// The agent's byte view puts the settings and reads the stats where the programs'
    /// `CpuSlot` has them.
    #[cfg(feature = "user")]
    #[test]
    fn bytes_match_the_slot_layout() {
        let settings = Settings {
            rtt_interval_us: 100_000,
            slot_mask: 1023,
            sample_every: 7,
            rtt_on: 1,
            tcp_health: 1,
            dns: 1,
        };
        let mut b = SlotBytes::with_settings(settings, [5, 6]);
        // SAFETY: all-zero bytes are a valid `CpuSlot` (enums' first variants are 0).
        let slot: CpuSlot = unsafe { core::ptr::read(b.0.as_ptr().cast()) };
        assert_eq!(slot.settings, settings);
        assert_eq!(b.settings(), settings);
        assert_eq!((slot.hash_key, b.hash_key()), ([5, 6], [5, 6]));
        assert_eq!(slot.stats, Stats::default());
        let mut slot = slot;
        slot.stats[crate::Stat::Parsed as usize] = crate::Count {
            packets: 3,
            bytes: 300,
        };
        // SAFETY: writing a whole `CpuSlot` over bytes of its size and alignment.
        unsafe { core::ptr::write(b.0.as_mut_ptr().cast(), slot) };
        assert_eq!(b.stats(), slot.stats);
    }
}
