//! Reading the kernel flow table and the programs' counters, RTT histogram and pending
//! timestamps.
//!
//! The flow table is an array of slots (`shared::table`) mapped into the agent's memory
//! ([`FlowTable::slots`]): a drain reads it as memory, without a syscall per batch of
//! entries, and frees idle flows' slots with the same compare-and-swap the programs claim
//! them with. Mapped once: mapping the default table takes ~1 ms and unmapping it ~0.7, more
//! than a drain of a thousand flows. Its pages are the kernel's (the map's memory), and they
//! count in the agent's resident memory as mapped shared pages (RssFile).

use crate::probe::ticks::TickError;
use aya::{
    maps::{Array, Map, MapData, MapError},
    Ebpf,
};
use shared::{
    cpu::{SlotBytes, CPU_SLOTS_MAP},
    flow::{FLOWS_MAP, HELD_MAP},
    table::{held_bit, FlowSlot, TableShape, EMPTY, GONE, LIVE, READ, RECLAIMING, UNREAD},
    FlowCounters, FlowKey,
};
use std::{
    marker::PhantomData,
    os::fd::{AsFd, AsRawFd, RawFd},
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("map {0} missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error(
        "map {name} is not {expected} entries of {size} bytes (the object and the agent differ?)"
    )]
    Shape {
        name: &'static str,
        expected: u32,
        size: usize,
    },
    #[error("mapping {name} ({bytes} bytes) into memory: {source}")]
    Mmap {
        name: &'static str,
        bytes: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel tick clock: {0}")]
    Ticks(#[from] TickError),
}

pub(crate) fn map_err(name: &'static str) -> impl FnOnce(MapError) -> TableError {
    move |source| TableError::Map { name, source }
}

/// The flow table: its slots and held-slots bitmap, mapped into the agent's memory for as
/// long as this lives. It lends them as [`Slots`].
pub struct FlowTable {
    flows: Mapped,
    held: Mapped,
    shape: TableShape,
    /// Flows the table is sized for (it has twice as many slots).
    pub capacity: u32,
    /// Kernel memory charged for the flow table (fdinfo `memlock`), when known.
    pub memory_bytes: Option<u64>,
}

impl FlowTable {
    /// "flow table of N slots for M flows (IPv4 and IPv6), X MiB of kernel memory", as
    /// printed at start-up.
    pub fn describe(&self) -> String {
        let mem = self
            .memory_bytes
            .map(|b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))
            .unwrap_or_else(|| "unknown amount".into());
        format!(
            "flow table of {} slots for {} flows (IPv4 and IPv6), {mem} of kernel memory",
            self.shape.slots, self.capacity
        )
    }

    /// Takes the table's two maps out of the loaded object and maps them; their shape is the
    /// one the loader wrote into the CPU slots' settings.
    pub fn take(ebpf: &mut Ebpf) -> Result<FlowTable, TableError> {
        let cpu = ebpf
            .map(CPU_SLOTS_MAP)
            .ok_or(TableError::MissingMap(CPU_SLOTS_MAP))?;
        let cpu: Array<&MapData, SlotBytes> =
            Array::try_from(cpu).map_err(map_err(CPU_SLOTS_MAP))?;
        let slot = cpu.get(&0, 0).map_err(map_err(CPU_SLOTS_MAP))?;
        let shape = TableShape {
            slots: slot.settings().slot_mask.wrapping_add(1),
            key: slot.hash_key(),
        };
        let flows = Mapped::take(ebpf, FLOWS_MAP, shape.slots, size_of::<FlowSlot>())?;
        let held = Mapped::take(ebpf, HELD_MAP, shape.held_words(), 8)?;
        let memory_bytes = memlock(flows.fd).zip(memlock(held.fd)).map(|(a, b)| a + b);
        Ok(FlowTable {
            flows,
            held,
            shape,
            capacity: shape.slots / 2,
            memory_bytes,
        })
    }

    /// The table's slots, as memory, for as long as the table is borrowed.
    pub fn slots(&self) -> Slots<'_> {
        // SAFETY: the mappings hold the shape's slots and bitmap words (checked by
        // `Mapped::take`) and stay mapped while `self` is borrowed.
        unsafe { Slots::new(self.flows.base.cast(), self.held.base.cast(), self.shape) }
    }

    /// All flows, into `out` (cleared first).
    pub fn read_flows(&self, out: &mut Vec<(FlowKey, FlowCounters)>) {
        out.clear();
        self.slots()
            .for_each_flow(&mut |_, k, v| out.push((*k, *v)));
    }

    pub fn get(&self, key: &FlowKey) -> Option<FlowCounters> {
        let s = self.slots();
        s.find(key).map(|i| s.read(i).1)
    }

    /// Frees the flow's slot; whether it was there.
    pub fn remove(&self, key: &FlowKey) -> bool {
        let s = self.slots();
        s.find(key).is_some_and(|i| s.free(i, None))
    }
}

/// An array map of the object, mapped into the agent's memory for as long as this lives
/// (unmapped, then the map's fd closed, when dropped).
pub(crate) struct Mapped {
    _map: Map,
    fd: RawFd,
    base: *mut libc::c_void,
    bytes: usize,
}

// SAFETY: an address range of this process, unmapped once; nothing in it is thread-bound.
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

impl Mapped {
    /// The map `name`, checked to be an array of `entries` values of `size` bytes, mapped.
    pub(crate) fn take(
        ebpf: &mut Ebpf,
        name: &'static str,
        entries: u32,
        size: usize,
    ) -> Result<Mapped, TableError> {
        let map = ebpf.take_map(name).ok_or(TableError::MissingMap(name))?;
        let fd = match &map {
            Map::Array(data)
                if data.info().is_ok_and(|i| {
                    i.max_entries() == entries && i.value_size() as usize == size
                }) =>
            {
                data.fd().as_fd().as_raw_fd()
            }
            _ => {
                return Err(TableError::Shape {
                    name,
                    expected: entries,
                    size,
                })
            }
        };
        let bytes = entries as usize * size;
        // SAFETY: maps the array's value area (page-aligned for mappable arrays) shared and
        // writable; unmapped by drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(TableError::Mmap {
                name,
                bytes,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Mapped {
            _map: map,
            fd,
            base,
            bytes,
        })
    }
}

impl Mapped {
    /// The first value's address.
    pub(crate) fn base(&self) -> *mut libc::c_void {
        self.base
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made by take; its table hands out no slots past it.
        unsafe { libc::munmap(self.base, self.bytes) };
    }
}

/// Flow table slots in memory shared with the programs: read word by word (the programs add
/// to counters atomically meanwhile), states changed only by compare-and-swap
/// (`shared::table`: the states).
pub struct Slots<'a> {
    base: *mut FlowSlot,
    /// The held-slots bitmap (`shared::table`).
    held: *mut u64,
    shape: TableShape,
    _mem: PhantomData<&'a FlowSlot>,
}

// SAFETY: the slots are memory shared with the kernel, only accessed with atomic loads,
// stores and swaps; the pointers stay valid wherever the owner of the mapping goes.
unsafe impl Send for Slots<'_> {}
unsafe impl Sync for Slots<'_> {}

impl Slots<'_> {
    /// # Safety
    /// `base` points at `shape.slots` slots and `held` at `shape.held_words()` words that
    /// stay valid for the lifetime chosen, and are only changed as `shared::table` says.
    pub unsafe fn new<'a>(base: *mut FlowSlot, held: *mut u64, shape: TableShape) -> Slots<'a> {
        Slots {
            base,
            held,
            shape,
            _mem: PhantomData,
        }
    }

    pub fn shape(&self) -> TableShape {
        self.shape
    }

    /// Slot `i`, checked to be in the table in every build: an index from outside (a caller
    /// of these safe methods) must not reach memory past it. One compare per slot read costs
    /// nothing measurable (bench/RESULTS.md, "Bounds-checked slots").
    fn slot(&self, i: u32) -> *mut FlowSlot {
        assert!(
            i < self.shape.slots,
            "slot {i} out of a table of {}",
            self.shape.slots
        );
        // SAFETY: in bounds of the `shape.slots` slots `base` points at (`Slots::new`).
        unsafe { self.base.add(i as usize) }
    }

    fn state_word(&self, i: u32) -> &AtomicU32 {
        let s = self.slot(i);
        // SAFETY: slot `i` is in the table; its state word is only accessed atomically.
        unsafe { AtomicU32::from_ptr(&raw mut (*s).state) }
    }

    pub fn state(&self, i: u32) -> u32 {
        self.state_word(i).load(Ordering::Acquire)
    }

    /// The slot's key and counters, each 8-byte word read whole (a counter is never torn).
    pub fn read(&self, i: u32) -> (FlowKey, FlowCounters) {
        let s = self.slot(i);
        // SAFETY: slot `i` is in the table; both are plain-integer structs of whole words.
        unsafe {
            (
                read_words(&raw const (*s).key),
                read_words(&raw const (*s).counters),
            )
        }
    }

    fn held_word(&self, w: u32) -> &AtomicU64 {
        assert!(
            w < self.shape.bitmap_words(),
            "bitmap word {w} out of range"
        );
        // SAFETY: word `w` is in the bitmap; it is only accessed atomically.
        unsafe { AtomicU64::from_ptr(self.held.add(w as usize)) }
    }

    /// The slot's packets per direction, two word loads (not the whole slot).
    fn packets(&self, i: u32) -> [u64; 2] {
        let s = self.slot(i);
        // SAFETY: slot `i` is in the table; its counters are only updated atomically.
        [0, 1].map(|d| unsafe {
            let c = &raw mut (*s).counters.dir[d].packets;
            AtomicU64::from_ptr(c).load(Ordering::Relaxed)
        })
    }

    /// Calls `f` with each held flow's slot index, key and counters, in slot order: the slots
    /// the bitmap marks (a slot claimed during the pass may come in the next one). Each flow
    /// read is the agent's from then on ([`Slots::adopt`]).
    pub fn for_each_flow(&self, f: &mut dyn FnMut(u32, &FlowKey, &FlowCounters)) {
        for w in 0..self.shape.bitmap_words() {
            let mut bits = self.held_word(w).load(Ordering::Acquire);
            while bits != 0 {
                let i = w * 64 + bits.trailing_zeros();
                bits &= bits - 1;
                if self.state(i) == LIVE && self.adopt(i) {
                    let (k, c) = self.read(i);
                    f(i, &k, &c);
                }
            }
        }
    }

    /// Marks LIVE slot `i`'s flow READ before its counters are read, so no program reclaims it
    /// once a drain may have reported part of it (`shared::table`: pressure). False when a
    /// program is reclaiming it or the slot is being claimed: its counts are not the drain's
    /// (the reclaimed ones go to `Stat::Reclaimed`; a flow being claimed comes next time).
    fn adopt(&self, i: u32) -> bool {
        let s = self.slot(i);
        // SAFETY: slot `i` is in the table; its mark word is only changed atomically.
        let mark = unsafe { AtomicU32::from_ptr(&raw mut (*s).mark) };
        let was = match mark.compare_exchange(UNREAD, READ, Ordering::AcqRel, Ordering::Acquire) {
            Ok(w) | Err(w) => w,
        };
        // Read after the mark: the flow it holds now is the one adopted.
        was != RECLAIMING && self.state(i) == LIVE
    }

    /// Slots held now (the bitmap's bits).
    pub fn held(&self) -> u32 {
        (0..self.shape.bitmap_words())
            .map(|w| self.held_word(w).load(Ordering::Relaxed).count_ones())
            .sum()
    }

    /// The slot holding `key`, looked up as the programs do.
    pub fn find(&self, key: &FlowKey) -> Option<u32> {
        for i in self.shape.probe_sequence(key) {
            match self.state(i) {
                LIVE if self.read(i).0 == *key => return Some(i),
                EMPTY => return None,
                _ => {}
            }
        }
        None
    }

    /// Frees held slot `i` if its packets are still `packets` (when given: a packet that came
    /// since they were read keeps the flow); whether it did. A packet a program counts
    /// between the check and the swap is lost with the slot, as with a hash map's delete.
    pub fn free(&self, i: u32, packets: Option<[u64; 2]>) -> bool {
        if self.state(i) != LIVE || packets.is_some_and(|p| self.packets(i) != p) {
            return false;
        }
        // The bit first: once the slot is GONE a program may claim it and set the bit again.
        let (w, bit) = held_bit(i);
        self.held_word(w).fetch_and(!bit, Ordering::AcqRel);
        if self
            .state_word(i)
            .compare_exchange(LIVE, GONE, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Only the agent frees slots; should another have, the bit is the slot's again.
            self.held_word(w).fetch_or(bit, Ordering::AcqRel);
            return false;
        }
        // The programs' count of held slots (`shared::table::under_pressure`).
        self.fill().fetch_sub(1, Ordering::Relaxed);
        true
    }

    /// The word after the bitmap: slots held, as the programs count them.
    fn fill(&self) -> &AtomicU64 {
        // SAFETY: the held map has `held_words()` words (`Slots::new`); the last is this one,
        // only accessed atomically.
        unsafe { AtomicU64::from_ptr(self.held.add(self.shape.fill_word() as usize)) }
    }

    /// Slots held as the programs count them (claims less the agent's frees).
    pub fn fill_count(&self) -> u64 {
        self.fill().load(Ordering::Relaxed)
    }

    /// Turns freed slot `i`, if the slot after it is empty, back into an empty one, and the
    /// freed slots before it in turn: no probe sequence passes through them (`shared::table`).
    /// Called for each slot the agent frees, so runs of freed slots end in empty ones as soon
    /// as they can. Returns how many.
    pub fn tidy_from(&self, i: u32) -> u32 {
        let mask = self.shape.mask();
        let mut tidied = 0;
        let mut i = i;
        while tidied < self.shape.slots
            // The next slot is read now: a program claims the first free slot of its
            // sequence, so while slot i is GONE nothing that passes through i claims i + 1.
            && self.state((i + 1) & mask) == EMPTY
            && self
                .state_word(i)
                .compare_exchange(GONE, EMPTY, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            tidied += 1;
            i = i.wrapping_sub(1) & mask;
        }
        tidied
    }
}

/// Copies a plain-integer struct of whole words out of shared memory, one 8-byte atomic load
/// a word.
///
/// # Safety
/// `src` is valid and 8-aligned, `T` is whole words with any bit pattern valid.
unsafe fn read_words<T: Copy>(src: *const T) -> T {
    let mut out = std::mem::MaybeUninit::<T>::uninit();
    let words = size_of::<T>() / 8;
    let (s, d) = (src as *const u64, out.as_mut_ptr() as *mut u64);
    for w in 0..words {
        // SAFETY: in bounds of both; atomic loads of words others update atomically. The
        // copy may be less aligned than its source (a FlowKey is 4-aligned: armv7 traps).
        unsafe {
            d.add(w)
                .write_unaligned(AtomicU64::from_ptr(s.add(w) as *mut u64).load(Ordering::Relaxed))
        };
    }
    // SAFETY: every word written.
    unsafe { out.assume_init() }
}

/// The `memlock:` line of a map fd's fdinfo: what the kernel charged for the map.
fn memlock(fd: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    parse_memlock(&s)
}

fn parse_memlock(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::table::BUSY;

    /// A table in ordinary memory, as the tests' stand-in for the programs' side.
    struct Mem {
        slots: Vec<FlowSlot>,
        held: Vec<u64>,
        shape: TableShape,
    }

    impl Mem {
        fn new(slots: u32) -> Mem {
            let shape = TableShape { slots, key: [7, 8] };
            Mem {
                slots: vec![FlowSlot::default(); slots as usize],
                held: vec![0; shape.held_words() as usize],
                shape,
            }
        }

        fn view(&mut self) -> Slots<'_> {
            // SAFETY: the vectors outlive the borrow and are only used through it.
            unsafe { Slots::new(self.slots.as_mut_ptr(), self.held.as_mut_ptr(), self.shape) }
        }

        /// Puts `key` where a program would: the first free slot of its sequence.
        fn insert(&mut self, key: FlowKey, packets: u64) -> u32 {
            let seq: Vec<u32> = self.shape.probe_sequence(&key).collect();
            let at = *seq
                .iter()
                .find(|&&i| self.slots[i as usize].state != LIVE)
                .unwrap();
            self.slots[at as usize] = FlowSlot {
                state: LIVE,
                key,
                counters: FlowCounters::counted([packets, 0], [packets * 100, 0]),
                ..FlowSlot::default()
            };
            let (w, bit) = held_bit(at);
            self.held[w as usize] |= bit;
            at
        }
    }

    fn key(n: u16) -> FlowKey {
        FlowKey {
            port_a: n,
            proto: 17,
            ..FlowKey::default()
        }
    }

    #[test]
    fn finds_reads_and_frees_flows_past_freed_slots() {
        let mut m = Mem::new(128);
        // 100 keys in 128 slots: probe sequences overlap.
        let at: Vec<u32> = (0..100).map(|n| m.insert(key(n), n as u64 + 1)).collect();
        assert!(
            at.iter()
                .enumerate()
                .any(|(n, &i)| m.shape.probe_sequence(&key(n as u16)).next() != Some(i)),
            "no key left its home slot"
        );
        let v = m.view();
        for n in 0..100 {
            assert_eq!(v.find(&key(n)), Some(at[n as usize]));
            assert_eq!(v.read(at[n as usize]).1.packets(), [n as u64 + 1, 0]);
        }
        assert_eq!(v.find(&key(999)), None);
        // Freeing every other flow leaves the rest findable behind GONE slots, and out of
        // the pass over held slots.
        for n in (0..100).step_by(2) {
            assert!(!v.free(at[n as usize], Some([0, 0])), "counted since: kept");
            assert!(v.free(at[n as usize], Some([n as u64 + 1, 0])));
            assert!(!v.free(at[n as usize], None), "already free");
        }
        for n in 0..100u16 {
            let want = (n % 2 == 1).then_some(at[n as usize]);
            assert_eq!(v.find(&key(n)), want, "key {n}");
        }
        let mut seen = Vec::new();
        v.for_each_flow(&mut |i, k, c| seen.push((i, k.port_a, c.packets()[0])));
        assert_eq!(seen.len(), 50);
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "slot order");
        for (i, port, packets) in seen {
            assert_eq!((at[port as usize], packets), (i, port as u64 + 1));
        }
    }

    /// A read adopts a flow (UNREAD → READ) so programs no longer reclaim it; a flow a
    /// program is reclaiming is left out of the read.
    #[test]
    fn reads_adopt_flows_and_skip_those_being_reclaimed() {
        let mut m = Mem::new(64);
        let a = m.insert(key(1), 1);
        let b = m.insert(key(2), 1);
        m.slots[b as usize].mark = RECLAIMING;
        let v = m.view();
        let mut seen = Vec::new();
        v.for_each_flow(&mut |i, _, _| seen.push(i));
        assert_eq!(seen, [a]);
        assert_eq!(v.held(), 2);
        assert_eq!(
            (m.slots[a as usize].mark, m.slots[b as usize].mark),
            (READ, RECLAIMING)
        );
    }

    #[test]
    fn tidying_empties_only_freed_slots_that_end_a_run() {
        let mut m = Mem::new(16);
        // Slots 3 4 5 in a run: GONE LIVE GONE, then 6 EMPTY. Only 5 can go back to EMPTY,
        // then not 3 (4 is LIVE).
        for (i, st) in [(3, GONE), (4, LIVE), (5, GONE)] {
            m.slots[i].state = st;
        }
        let v = m.view();
        assert_eq!(v.tidy_from(3), 0);
        assert_eq!(v.tidy_from(5), 1);
        assert_eq!(
            (3..7).map(|i| v.state(i)).collect::<Vec<_>>(),
            [GONE, LIVE, EMPTY, EMPTY]
        );
        // A run of freed slots empties back from its end; the table wraps.
        for i in [14, 15, 0, 1] {
            m.slots[i].state = GONE;
        }
        m.slots[2].state = EMPTY;
        m.slots[13].state = BUSY;
        let v = m.view();
        assert_eq!(v.tidy_from(1), 4);
        assert_eq!(v.state(13), BUSY, "not freed: stays");
        assert_eq!(v.state(3), GONE, "its next slot is held");
    }

    #[test]
    fn a_slot_past_the_table_panics_in_every_build() {
        let mut m = Mem::new(64);
        let v = m.view();
        let uses: [(&str, &dyn Fn()); 4] = [
            ("state", &|| {
                v.state(64);
            }),
            ("read", &|| {
                v.read(64);
            }),
            ("free", &|| {
                v.free(u32::MAX, None);
            }),
            ("tidy_from", &|| {
                v.tidy_from(64);
            }),
        ];
        for (what, f) in uses {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            assert!(r.is_err(), "{what} used an index past the table");
        }
        assert_eq!(v.state(63), EMPTY);
    }

    #[test]
    fn reads_memlock_from_fdinfo() {
        let s = "pos:\t0\nflags:\t02000002\nmap_type:\t1\nmemlock:\t1835008\nmax_entries:\t16384\n";
        assert_eq!(parse_memlock(s), Some(1_835_008));
        assert_eq!(parse_memlock("pos:\t0\n"), None);
    }
}
