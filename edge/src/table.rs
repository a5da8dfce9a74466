//! Reading the kernel flow table and the programs' counters, RTT histogram and pending
//! timestamps.

use crate::bpf::sys_bpf;
use crate::ticks::{TickClock, TickError};
use aya::{
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray},
    Ebpf, Pod,
};
use shared::{
    cpu::{SlotBytes, CPU_SLOTS_MAP},
    flow::{FLOWS4_MAP, FLOWS6_MAP},
    rtt::{TsKey, HIST_MAP, PENDING_MAP, RTT_BUCKETS},
    stats::STATS_LEN,
    Counter, FlowCounters, FlowKey, FlowKey4,
};
use std::{
    cell::Cell,
    os::fd::{AsFd, AsRawFd, FromRawFd, RawFd},
    sync::mpsc,
};

pub use shared::stats::Stats;
/// RTT samples per log2 bucket, summed over CPUs (`shared::rtt::rtt_bucket`).
pub type RttHist = [u64; RTT_BUCKETS];

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
    #[error("kernel tick clock: {0}")]
    Ticks(#[from] TickError),
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> TableError {
    move |source| TableError::Map { name, source }
}

/// One family's flow table: the map and its fd (owned by the map), for batch reads.
struct Family<K> {
    map: HashMap<MapData, K, FlowCounters>,
    fd: RawFd,
    name: &'static str,
    /// Which table this is in a [`Span`].
    id: u8,
    /// The middle bucket: the kernel gives a hash map the next power of two of its capacity.
    middle: u32,
}

impl<K: Pod> Family<K> {
    /// The table, its capacity and the kernel memory charged for it (when known).
    fn take(
        ebpf: &mut Ebpf,
        name: &'static str,
        id: u8,
    ) -> Result<(Self, u32, Option<u64>), TableError> {
        let map = ebpf.take_map(name).ok_or(TableError::MissingMap(name))?;
        let (capacity, memory, fd) = match &map {
            Map::HashMap(data) => {
                let fd = data.fd().as_fd().as_raw_fd();
                (
                    data.info().map(|i| i.max_entries()).unwrap_or(0),
                    memlock(fd),
                    fd,
                )
            }
            _ => (0, None, -1),
        };
        let map = HashMap::try_from(map).map_err(map_err(name))?;
        let middle = capacity.next_power_of_two() / 2;
        Ok((
            Family {
                map,
                fd,
                name,
                id,
                middle,
            },
            capacity,
            memory,
        ))
    }

    /// Every entry, by batch walk (see [`read_batch`]); split in two halves read side by
    /// side when `split`.
    fn read_batch(
        &self,
        split: bool,
        f: &mut dyn FnMut(Span, &K, &FlowCounters),
    ) -> Result<(), (usize, std::io::Error)>
    where
        K: Default + Send + Eq + std::hash::Hash,
    {
        read_batch(
            self.fd,
            self.id,
            BATCH_CHUNK,
            split.then_some(self.middle),
            f,
        )
    }

    /// Every entry through the map iterator (two syscalls per entry), all in one span.
    fn for_each_one_by_one(
        &self,
        f: &mut dyn FnMut(Span, &K, &FlowCounters),
    ) -> Result<(), TableError> {
        let all = Span {
            table: self.id,
            start: 0,
            end: u32::MAX,
        };
        for kv in self.map.iter() {
            match kv {
                Ok((k, v)) => f(all, &k, &v),
                // The entry went away between listing and reading it.
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(map_err(self.name)(e)),
            }
        }
        Ok(())
    }

    /// Whether there was an entry to remove.
    fn remove(&mut self, key: &K) -> Result<bool, TableError> {
        match self.map.remove(key) {
            Ok(()) => Ok(true),
            // aya reports a missing key on delete as the syscall's ENOENT.
            Err(MapError::KeyNotFound) => Ok(false),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(false)
            }
            Err(e) => Err(map_err(self.name)(e)),
        }
    }
}

/// The flow tables (IPv4 and IPv6) and the stats array, taken out of the loaded object.
/// Outside this module a flow is a [`FlowKey`] whatever its table: IPv4 entries come out with
/// IPv4-mapped addresses.
pub struct FlowTable {
    flows4: Family<FlowKey4>,
    flows6: Family<FlowKey>,
    /// False once the kernel said it has no BPF_MAP_LOOKUP_BATCH for hash maps (< 5.6).
    batch_ok: Cell<bool>,
    /// Whether batch walks run as two halves side by side: more than one CPU, and
    /// [`split_walk_works`] on this kernel.
    split: bool,
    slots: Array<MapData, SlotBytes>,
    pending: HashMap<MapData, TsKey, u64>,
    hist: PerCpuArray<MapData, u64>,
    /// Turns the entries' tick stamps into time.
    pub ticks: TickClock,
    /// Entries each table (IPv4, IPv6) was created with.
    pub capacity: u32,
    /// Kernel memory charged for both tables (fdinfo `memlock`), when known.
    pub memory_bytes: Option<u64>,
}

impl FlowTable {
    /// "flow tables of N entries each (IPv4, IPv6), X MiB of kernel memory", as printed at
    /// start-up.
    pub fn describe(&self) -> String {
        let mem = self
            .memory_bytes
            .map(|b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))
            .unwrap_or_else(|| "unknown amount".into());
        format!(
            "flow tables of {} entries each (IPv4, IPv6), {mem} of kernel memory",
            self.capacity
        )
    }

    pub fn take(ebpf: &mut Ebpf) -> Result<FlowTable, TableError> {
        let (flows4, capacity, mem4) = Family::take(ebpf, FLOWS4_MAP, 0)?;
        let (flows6, _, mem6) = Family::take(ebpf, FLOWS6_MAP, 1)?;
        let memory_bytes = mem4.zip(mem6).map(|(a, b)| a + b);
        let slots = ebpf
            .take_map(CPU_SLOTS_MAP)
            .ok_or(TableError::MissingMap(CPU_SLOTS_MAP))?;
        let slots = Array::try_from(slots).map_err(map_err(CPU_SLOTS_MAP))?;
        let pending = ebpf
            .take_map(PENDING_MAP)
            .ok_or(TableError::MissingMap(PENDING_MAP))?;
        let pending = HashMap::try_from(pending).map_err(map_err(PENDING_MAP))?;
        let hist = ebpf
            .take_map(HIST_MAP)
            .ok_or(TableError::MissingMap(HIST_MAP))?;
        let hist = PerCpuArray::try_from(hist).map_err(map_err(HIST_MAP))?;
        let ticks = TickClock::take(ebpf)?;
        let split = std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
            && match split_walk_works() {
                Ok(true) => true,
                Ok(false) => {
                    log::info!(
                        "batch walks cannot start mid-table on this kernel: one walk a table"
                    );
                    false
                }
                Err(e) => {
                    log::info!("checking split batch walks: {e}; one walk a table");
                    false
                }
            };
        Ok(FlowTable {
            flows4,
            flows6,
            batch_ok: Cell::new(true),
            split,
            slots,
            pending,
            hist,
            ticks,
            capacity,
            memory_bytes,
        })
    }

    /// All entries, into `out` (cleared first). See [`FlowTable::for_each_flow`].
    pub fn read_flows(&self, out: &mut Vec<(FlowKey, FlowCounters)>) -> Result<(), TableError> {
        out.clear();
        self.for_each_flow(&mut |_, k, v| out.push((*k, *v)))
    }

    /// Calls `f` once for every entry of both tables. Reads with BPF_MAP_LOOKUP_BATCH (kernel
    /// 5.6+), a chunk of [`BATCH_CHUNK`] entries per syscall into fixed buffers, each table
    /// in two halves side by side where that works ([`read_batch`]); the map iterator (two
    /// syscalls per entry, ~10x slower on a full table) is the fallback on older kernels.
    /// Each entry comes with the [`Span`] of the read that held it.
    pub fn for_each_flow(
        &self,
        f: &mut dyn FnMut(Span, &FlowKey, &FlowCounters),
    ) -> Result<(), TableError> {
        if self.batch_ok.get() {
            let split = self.split;
            match self
                .flows4
                .read_batch(split, &mut |s, k: &FlowKey4, v| f(s, &k.to_key(), v))
            {
                Ok(()) => {
                    return self
                        .flows6
                        .read_batch(split, f)
                        .map_err(|(_, e)| batch_err(self.flows6.name, e))
                }
                // Refused before anything was read: no batch reads on this kernel, for either
                // table (falling back after the IPv4 table was read would give its flows twice).
                Err((0, e)) if batch_unsupported(&e) => {
                    log::info!("no batch map reads on this kernel ({e}); reading entry by entry");
                    self.batch_ok.set(false);
                }
                Err((_, e)) => return Err(batch_err(self.flows4.name, e)),
            }
        }
        self.for_each_one_by_one(f)
    }

    /// [`FlowTable::for_each_flow`] through the map iterator only (to check the batch read
    /// against).
    pub fn for_each_one_by_one(
        &self,
        f: &mut dyn FnMut(Span, &FlowKey, &FlowCounters),
    ) -> Result<(), TableError> {
        self.flows4
            .for_each_one_by_one(&mut |s, k, v| f(s, &k.to_key(), v))?;
        self.flows6.for_each_one_by_one(f)
    }

    /// Whether [`FlowTable::read_flows`] still uses batch reads (it stops after the kernel
    /// refused one).
    pub fn reads_in_batches(&self) -> bool {
        self.batch_ok.get()
    }

    pub fn get(&self, key: &FlowKey) -> Option<FlowCounters> {
        key.to_v4()
            .and_then(|k4| self.flows4.map.get(&k4, 0).ok())
            .or_else(|| self.flows6.map.get(key, 0).ok())
    }

    /// Removes the flow's entry from whichever table holds it (an IPv6 packet between
    /// IPv4-mapped addresses lands in the IPv6 table with an IPv4-looking key).
    pub fn remove(&mut self, key: &FlowKey) -> Result<(), TableError> {
        if let Some(k4) = key.to_v4() {
            if self.flows4.remove(&k4)? {
                return Ok(());
            }
        }
        self.flows6.remove(key).map(|_| ())
    }

    /// The programs' counters, summed over CPUs.
    pub fn read_stats(&self) -> Result<Stats, TableError> {
        let mut out = [Counter::default(); STATS_LEN as usize];
        for cpu in 0..self.slots.len() {
            let slot = self.slots.get(&cpu, 0).map_err(map_err(CPU_SLOTS_MAP))?;
            for (o, c) in out.iter_mut().zip(slot.stats().iter()) {
                o.add(c);
            }
        }
        Ok(out)
    }
}

impl FlowTable {
    /// The RTT histogram, summed over CPUs (cumulative since load).
    pub fn read_rtt_hist(&self) -> Result<RttHist, TableError> {
        let mut out = [0u64; RTT_BUCKETS];
        for (i, slot) in out.iter_mut().enumerate() {
            let per_cpu = self.hist.get(&(i as u32), 0).map_err(map_err(HIST_MAP))?;
            *slot = per_cpu.iter().fold(0u64, |a, c| a.wrapping_add(*c));
        }
        Ok(out)
    }

    /// Removes pending timestamps that left before `before_ns` (CLOCK_MONOTONIC): their echo
    /// is not coming (the segment's TSval was never echoed, or the flow ended). Returns how
    /// many went.
    pub fn sweep_pending(&mut self, before_ns: u64) -> Result<u32, TableError> {
        let mut stale = Vec::new();
        for kv in self.pending.iter() {
            match kv {
                Ok((k, sent)) if sent < before_ns => stale.push(k),
                Ok(_) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(PENDING_MAP)(e)),
            }
        }
        let mut removed = 0;
        for k in &stale {
            match self.pending.remove(k) {
                Ok(()) => removed += 1,
                // Echoed meanwhile.
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(PENDING_MAP)(e)),
            }
        }
        Ok(removed)
    }

    /// How many timestamps wait for their echo.
    pub fn pending_count(&self) -> usize {
        self.pending.keys().filter(Result::is_ok).count()
    }
}

/// Where in its table a walk found an entry: the table ([`FLOWS4_MAP`] 0, [`FLOWS6_MAP`] 1)
/// and the buckets `[start, end)` of the read that held it (one read of the map iterator holds
/// the whole table). A key stays in its bucket while it is in the table, so the spans of two
/// walks that gave the same key overlap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub table: u8,
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// Whether some bucket is in both.
    pub fn overlaps(&self, other: &Span) -> bool {
        self.table == other.table && self.start < other.end && other.start < self.end
    }
}

/// Which part of a table a batch walk covers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Half {
    /// From the first bucket; in a split walk, up to the split bucket.
    Low,
    /// From the split bucket to the end.
    High,
}

/// The batch walk of one table; on failure, how many entries the walk had read, and the error.
///
/// The kernel's walk is memory-bound and most of a drain (bench/RESULTS.md), so it runs on
/// helper threads, ahead of `f` on this one: a drain takes about the longer of the two
/// instead of their sum. With `split` (a bucket index) two helpers walk the table's two
/// halves side by side, from bucket 0 and from the split bucket: the batch position is a
/// bucket index (kernel/bpf/hashtab.c; [`split_walk_works`] checks it on the running
/// kernel), and a walk may start at any bucket. The low walk's last call reads whole
/// buckets and may reach past the split; those entries are also the high walk's first ones,
/// and `f` gets each once ([`Dedup`]). Two chunk buffers per helper circulate; memory does
/// not grow with the table but for the high half's keys read before the low half ends.
fn read_batch<K: Pod + Default + Send + Eq + std::hash::Hash>(
    fd: RawFd,
    table: u8,
    chunk_len: usize,
    split: Option<u32>,
    f: &mut dyn FnMut(Span, &K, &FlowCounters),
) -> Result<(), (usize, std::io::Error)> {
    let (full_tx, full_rx) = mpsc::sync_channel::<Chunk<K>>(2);
    std::thread::scope(|scope| {
        let mut empties = Vec::new();
        let mut walkers = Vec::new();
        let halves = match split {
            Some(at) => vec![(Half::Low, None, Some(at)), (Half::High, Some(at), None)],
            None => vec![(Half::Low, None, None)],
        };
        for (half, from, stop) in halves {
            let (empty_tx, empty_rx) = mpsc::sync_channel::<Chunk<K>>(2);
            for _ in 0..2 {
                let _ = empty_tx.send(Chunk::new(chunk_len));
            }
            empties.push(empty_tx);
            let full_tx = full_tx.clone();
            walkers.push(scope.spawn(move || walk(fd, half, from, stop, empty_rx, full_tx)));
        }
        // The walkers hold the only senders: the loop ends when both are done.
        drop(full_tx);
        let mut dedup = Dedup::default();
        for chunk in full_rx.iter() {
            dedup.pass(&chunk, table, f);
            // The walker may be done already.
            let _ = empties[chunk.half as usize].send(chunk);
        }
        let mut read = 0;
        let mut failed = None;
        for w in walkers {
            match w.join().expect("batch walker thread") {
                Ok(n) => read += n,
                Err((n, e)) => {
                    read += n;
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(()), |e| Err((read, e)))
    })
}

/// One walker of [`read_batch`]: from bucket `from` (the start when `None`) until the end of
/// the table or, given `stop`, the first call that reaches that bucket. Returns the entries
/// it read.
fn walk<K: Pod + Default>(
    fd: RawFd,
    half: Half,
    from: Option<u32>,
    stop: Option<u32>,
    empty: mpsc::Receiver<Chunk<K>>,
    full: mpsc::SyncSender<Chunk<K>>,
) -> Result<usize, (usize, std::io::Error)> {
    let mut read = 0usize;
    let mut token = from;
    // The consumer hangs up only by failing; its error is the one that matters.
    while let Ok(mut chunk) = empty.recv() {
        let mut next: u32 = 0;
        let (count, done) = loop {
            match lookup_batch(
                fd,
                token.as_ref(),
                &mut next,
                &mut chunk.keys,
                &mut chunk.values,
            ) {
                Ok(r) => break r,
                // One hash bucket holds more entries than the buffer: a bigger one.
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && chunk.keys.len() < 1 << 20 => {
                    chunk.grow()
                }
                Err(e) => return Err((read, e)),
            }
        };
        let last = done || stop.is_some_and(|s| next >= s);
        chunk.len = count;
        chunk.half = half;
        chunk.start = token.unwrap_or(0);
        chunk.end = if done { u32::MAX } else { next };
        chunk.low_tail = last && stop.is_some();
        read += count;
        if full.send(chunk).is_err() || last {
            break;
        }
        token = Some(next);
    }
    Ok(read)
}

/// Passes each entry of a split walk once. The low walk's last chunk covers buckets up to
/// its `end`, past the split; the high walk's chunks that start below that `end` hold the
/// same buckets. A key lives in one bucket, so the overlap is found by key: high-half keys
/// passed before the low tail came are remembered and left out of it, and once it came,
/// its keys are left out of the high chunks that start below its end.
struct Dedup<K> {
    high_seen: HashSet<K>,
    tail: Option<(u32, HashSet<K>)>,
}

type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

impl<K> Default for Dedup<K> {
    fn default() -> Self {
        Dedup {
            high_seen: HashSet::default(),
            tail: None,
        }
    }
}

impl<K: Copy + Eq + std::hash::Hash> Dedup<K> {
    fn pass(&mut self, c: &Chunk<K>, table: u8, f: &mut dyn FnMut(Span, &K, &FlowCounters)) {
        let span = Span {
            table,
            start: c.start,
            end: c.end,
        };
        let mut f = |k, v| f(span, k, v);
        let entries = c.keys[..c.len].iter().zip(&c.values[..c.len]);
        match (c.half, &self.tail) {
            (Half::Low, _) if !c.low_tail => entries.for_each(|(k, v)| f(k, v)),
            (Half::Low, _) => {
                for (k, v) in entries {
                    if !self.high_seen.contains(k) {
                        f(k, v);
                    }
                }
                self.tail = Some((c.end, c.keys[..c.len].iter().copied().collect()));
                self.high_seen = HashSet::default();
            }
            (Half::High, None) => {
                for (k, v) in entries {
                    self.high_seen.insert(*k);
                    f(k, v);
                }
            }
            (Half::High, Some((end, tail))) => {
                for (k, v) in entries {
                    if c.start >= *end || !tail.contains(k) {
                        f(k, v);
                    }
                }
            }
        }
    }
}

/// One batch read's buffers, how many entries it filled and which buckets it covered.
struct Chunk<K> {
    keys: Vec<K>,
    values: Vec<FlowCounters>,
    len: usize,
    half: Half,
    /// The first bucket of the call, and the bucket the next call starts at (`u32::MAX`
    /// when the call reached the end of the table).
    start: u32,
    end: u32,
    /// The last chunk of the low half of a split walk.
    low_tail: bool,
}

impl<K: Clone + Default> Chunk<K> {
    fn new(n: usize) -> Chunk<K> {
        Chunk {
            keys: vec![K::default(); n],
            values: vec![FlowCounters::default(); n],
            len: 0,
            half: Half::Low,
            start: 0,
            end: 0,
            low_tail: false,
        }
    }

    fn grow(&mut self) {
        let n = self.keys.len() * 2;
        self.keys.resize(n, K::default());
        self.values.resize(n, FlowCounters::default());
    }
}

/// Whether a batch walk may start at a bucket index of its own choosing on this kernel
/// (what [`read_batch`]'s split relies on): a scratch hash map of scattered entries, walked
/// split at its middle bucket in small chunks, must give every entry exactly once.
pub fn split_walk_works() -> std::io::Result<bool> {
    walk_check(300, 1024, 16, Some(512))
}

/// Whether [`read_batch`] gives every entry of a map of `entries` in a table of `capacity`
/// exactly once, reading `chunk_len` entries a call, split at bucket `split` (or in one walk).
fn walk_check(
    entries: u32,
    capacity: u32,
    chunk_len: usize,
    split: Option<u32>,
) -> std::io::Result<bool> {
    let map = scratch_map(capacity)?;
    let fd = map.as_raw_fd();
    let value = FlowCounters::default();
    for i in 0..entries {
        // Keys spread over the hash: the walk's position is not their order.
        let key = i.wrapping_mul(0x9e37_79b9);
        let mut attr = ElemAttr {
            map_fd: fd as u32,
            key: &key as *const u32 as u64,
            value: &value as *const FlowCounters as u64,
            ..ElemAttr::default()
        };
        // SAFETY: the attr points at a key and a value of the map's sizes.
        unsafe { sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }?;
    }
    let mut seen = Vec::new();
    read_batch(fd, 0, chunk_len, split, &mut |_, k: &u32, _| seen.push(*k)).map_err(|(_, e)| e)?;
    seen.sort_unstable();
    let mut want: Vec<u32> = (0..entries).map(|i| i.wrapping_mul(0x9e37_79b9)).collect();
    want.sort_unstable();
    Ok(seen == want)
}

/// A hash map of u32 keys and flow-table values, for [`walk_check`].
fn scratch_map(capacity: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    #[repr(C)]
    #[derive(Default)]
    struct CreateAttr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    let mut attr = CreateAttr {
        map_type: BPF_MAP_TYPE_HASH,
        key_size: 4,
        value_size: std::mem::size_of::<FlowCounters>() as u32,
        max_entries: capacity,
        map_flags: 0,
    };
    // SAFETY: the attr is the map-create part of `union bpf_attr`, without pointers.
    let fd = unsafe { sys_bpf(BPF_MAP_CREATE, &mut attr) }?;
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The element part of `union bpf_attr` (BPF_MAP_UPDATE_ELEM).
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Entries read per BPF_MAP_LOOKUP_BATCH call.
pub const BATCH_CHUNK: usize = 1024;
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_TYPE_HASH: u32 = 1;
const ENOTSUPP: i32 = 524;

/// `union bpf_attr` for the BPF_MAP_*_BATCH commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// One BPF_MAP_LOOKUP_BATCH call on a hash map: fills `keys`/`values` from the position
/// `token` (start when `None`), writes the next position to `next`. Returns the entries read
/// and whether the walk reached the end.
fn lookup_batch<K: Pod>(
    fd: RawFd,
    token: Option<&u32>,
    next: &mut u32,
    keys: &mut [K],
    values: &mut [FlowCounters],
) -> std::io::Result<(usize, bool)> {
    let mut attr = BatchAttr {
        in_batch: token.map_or(0, |t| t as *const u32 as u64),
        out_batch: next as *mut u32 as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: keys.len().min(values.len()) as u32,
        map_fd: fd as u32,
        ..BatchAttr::default()
    };
    // SAFETY: the attr points at live buffers of `count` keys and values of the map's key and
    // value types (the map was created with these types), and at two u32 batch tokens.
    match unsafe { sys_bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) } {
        Ok(_) => Ok((attr.count as usize, false)),
        // The end of the table; `count` holds what this last call read.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok((attr.count as usize, true)),
        Err(e) => Err(e),
    }
}

fn batch_err(name: &'static str, io_error: std::io::Error) -> TableError {
    map_err(name)(MapError::SyscallError(aya::sys::SyscallError {
        call: "bpf_map_lookup_batch",
        io_error,
    }))
}

fn batch_unsupported(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(ENOTSUPP))
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

    /// Every entry once, whatever the chunk size (1 forces the buffer to grow on a bucket of
    /// two), in one walk or split wherever (0 and past the end included: any bucket is a
    /// valid start), with the low walk's last call reaching past the split or not.
    #[test]
    fn batch_walk_gives_every_entry_once() {
        for (entries, capacity) in [(300, 1024), (1000, 1024), (50, 4096), (0, 64)] {
            for chunk in [1, 7, 16, 64, 1024] {
                for split in [
                    None,
                    Some(0),
                    Some(1),
                    Some(100),
                    Some(capacity / 2),
                    Some(capacity - 1),
                    Some(capacity * 4),
                ] {
                    assert!(
                        walk_check(entries, capacity, chunk, split).unwrap(),
                        "{entries} entries in {capacity}, chunks of {chunk}, split at {split:?}"
                    );
                }
            }
        }
        assert!(split_walk_works().unwrap());
    }

    #[test]
    fn reads_memlock_from_fdinfo() {
        let s = "pos:\t0\nflags:\t02000002\nmap_type:\t1\nmemlock:\t1835008\nmax_entries:\t16384\n";
        assert_eq!(parse_memlock(s), Some(1_835_008));
        assert_eq!(parse_memlock("pos:\t0\n"), None);
    }
}
