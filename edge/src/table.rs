//! Reading the kernel flow table and the programs' counters, RTT histogram and pending
//! timestamps.

use crate::bpf::sys_bpf;
use crate::ticks::{TickClock, TickError};
use aya::{
    maps::{HashMap, Map, MapData, MapError, PerCpuArray},
    Ebpf, Pod,
};
use shared::{
    flow::{FLOWS4_MAP, FLOWS6_MAP},
    rtt::{TsKey, HIST_MAP, PENDING_MAP, RTT_BUCKETS},
    stats::{STATS_LEN, STATS_MAP},
    Counter, FlowCounters, FlowKey, FlowKey4,
};
use std::{
    cell::Cell,
    os::fd::{AsFd, AsRawFd, RawFd},
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
}

impl<K: Pod> Family<K> {
    /// The table, its capacity and the kernel memory charged for it (when known).
    fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<(Self, u32, Option<u64>), TableError> {
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
        Ok((Family { map, fd, name }, capacity, memory))
    }

    /// Every entry through the map iterator (two syscalls per entry).
    fn for_each_one_by_one(&self, f: &mut dyn FnMut(&K, &FlowCounters)) -> Result<(), TableError> {
        for kv in self.map.iter() {
            match kv {
                Ok((k, v)) => f(&k, &v),
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
    stats: PerCpuArray<MapData, Stats>,
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
        let (flows4, capacity, mem4) = Family::take(ebpf, FLOWS4_MAP)?;
        let (flows6, _, mem6) = Family::take(ebpf, FLOWS6_MAP)?;
        let memory_bytes = mem4.zip(mem6).map(|(a, b)| a + b);
        let stats = ebpf
            .take_map(STATS_MAP)
            .ok_or(TableError::MissingMap(STATS_MAP))?;
        let stats = PerCpuArray::try_from(stats).map_err(map_err(STATS_MAP))?;
        let pending = ebpf
            .take_map(PENDING_MAP)
            .ok_or(TableError::MissingMap(PENDING_MAP))?;
        let pending = HashMap::try_from(pending).map_err(map_err(PENDING_MAP))?;
        let hist = ebpf
            .take_map(HIST_MAP)
            .ok_or(TableError::MissingMap(HIST_MAP))?;
        let hist = PerCpuArray::try_from(hist).map_err(map_err(HIST_MAP))?;
        let ticks = TickClock::take(ebpf)?;
        Ok(FlowTable {
            flows4,
            flows6,
            batch_ok: Cell::new(true),
            stats,
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
        self.for_each_flow(&mut |k, v| out.push((*k, *v)))
    }

    /// Calls `f` for every entry of both tables. Reads with BPF_MAP_LOOKUP_BATCH (kernel
    /// 5.6+), a chunk of [`BATCH_CHUNK`] entries per syscall into a fixed buffer, so memory
    /// does not grow with the table; the map iterator (two syscalls per entry, ~10x slower on
    /// a full table) is the fallback on older kernels.
    pub fn for_each_flow(
        &self,
        f: &mut dyn FnMut(&FlowKey, &FlowCounters),
    ) -> Result<(), TableError> {
        if self.batch_ok.get() {
            match read_batch(self.flows4.fd, &mut |k: &FlowKey4, v| f(&k.to_key(), v)) {
                Ok(()) => {
                    return read_batch(self.flows6.fd, f)
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
        f: &mut dyn FnMut(&FlowKey, &FlowCounters),
    ) -> Result<(), TableError> {
        self.flows4
            .for_each_one_by_one(&mut |k, v| f(&k.to_key(), v))?;
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
        let per_cpu = self.stats.get(&0, 0).map_err(map_err(STATS_MAP))?;
        for block in per_cpu.iter() {
            for (o, c) in out.iter_mut().zip(block.iter()) {
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

/// The batch walk of one table; on failure, how many entries `f` had already seen, and the error.
///
/// The kernel's walk is memory-bound and most of a drain (bench/RESULTS.md), so it runs on
/// a helper thread, one chunk ahead of `f` on this one: a drain takes about the longer of
/// the two instead of their sum. Two chunk buffers circulate; memory does not grow with the
/// table.
fn read_batch<K: Pod + Default + Send>(
    fd: RawFd,
    f: &mut dyn FnMut(&K, &FlowCounters),
) -> Result<(), (usize, std::io::Error)> {
    let (full_tx, full_rx) = mpsc::sync_channel::<Chunk<K>>(1);
    let (empty_tx, empty_rx) = mpsc::sync_channel::<Chunk<K>>(2);
    for _ in 0..2 {
        let _ = empty_tx.send(Chunk::new(BATCH_CHUNK));
    }
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut seen = 0usize;
            let mut token: u32 = 0;
            let mut first = true;
            // The consumer hangs up only by failing; its error is the one that matters.
            while let Ok(mut chunk) = empty_rx.recv() {
                let mut next: u32 = 0;
                let (count, done) = loop {
                    match lookup_batch(
                        fd,
                        (!first).then_some(&token),
                        &mut next,
                        &mut chunk.keys,
                        &mut chunk.values,
                    ) {
                        Ok(r) => break r,
                        // One hash bucket holds more entries than the buffer: a bigger one.
                        Err(e)
                            if e.raw_os_error() == Some(libc::ENOSPC)
                                && chunk.keys.len() < 1 << 20 =>
                        {
                            chunk.grow()
                        }
                        Err(e) => return Err((seen, e)),
                    }
                };
                chunk.len = count;
                seen += count;
                if full_tx.send(chunk).is_err() || done {
                    break;
                }
                token = next;
                first = false;
            }
            Ok(())
        });
        for chunk in full_rx.iter() {
            for (k, v) in chunk.keys[..chunk.len]
                .iter()
                .zip(&chunk.values[..chunk.len])
            {
                f(k, v);
            }
            // The reader may be done already.
            let _ = empty_tx.send(chunk);
        }
        reader.join().expect("batch reader thread")
    })
}

/// One batch read's buffers and how many entries it filled.
struct Chunk<K> {
    keys: Vec<K>,
    values: Vec<FlowCounters>,
    len: usize,
}

impl<K: Clone + Default> Chunk<K> {
    fn new(n: usize) -> Chunk<K> {
        Chunk {
            keys: vec![K::default(); n],
            values: vec![FlowCounters::default(); n],
            len: 0,
        }
    }

    fn grow(&mut self) {
        let n = self.keys.len() * 2;
        self.keys.resize(n, K::default());
        self.values.resize(n, FlowCounters::default());
    }
}

/// Entries read per BPF_MAP_LOOKUP_BATCH call.
pub const BATCH_CHUNK: usize = 1024;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
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
        Ok(()) => Ok((attr.count as usize, false)),
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

    #[test]
    fn reads_memlock_from_fdinfo() {
        let s = "pos:\t0\nflags:\t02000002\nmap_type:\t1\nmemlock:\t1835008\nmax_entries:\t16384\n";
        assert_eq!(parse_memlock(s), Some(1_835_008));
        assert_eq!(parse_memlock("pos:\t0\n"), None);
    }
}
