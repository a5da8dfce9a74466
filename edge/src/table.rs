//! Reading the kernel flow table and the programs' counters, RTT histogram and pending
//! timestamps.

use aya::{
    maps::{HashMap, Map, MapData, MapError, PerCpuArray},
    Ebpf,
};
use shared::{
    flow::FLOWS_MAP,
    rtt::{TsKey, HIST_MAP, PENDING_MAP, RTT_BUCKETS},
    stats::{STATS_LEN, STATS_MAP},
    Counter, FlowCounters, FlowKey, Stat,
};
use std::os::fd::{AsFd, AsRawFd};

/// Every stat, summed over CPUs, indexed by `Stat as usize`.
pub type Stats = [Counter; STATS_LEN as usize];
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
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> TableError {
    move |source| TableError::Map { name, source }
}

/// The flow table and the stats array, taken out of the loaded object.
pub struct FlowTable {
    flows: HashMap<MapData, FlowKey, FlowCounters>,
    stats: PerCpuArray<MapData, Counter>,
    pending: HashMap<MapData, TsKey, u64>,
    hist: PerCpuArray<MapData, u64>,
    /// Entries the table was created with.
    pub capacity: u32,
    /// Kernel memory charged for the table (fdinfo `memlock`), when known.
    pub memory_bytes: Option<u64>,
}

impl FlowTable {
    pub fn take(ebpf: &mut Ebpf) -> Result<FlowTable, TableError> {
        let flows = ebpf
            .take_map(FLOWS_MAP)
            .ok_or(TableError::MissingMap(FLOWS_MAP))?;
        let (capacity, memory_bytes) = match &flows {
            Map::HashMap(data) => (
                data.info().map(|i| i.max_entries()).unwrap_or(0),
                memlock(data.fd().as_fd().as_raw_fd()),
            ),
            _ => (0, None),
        };
        let flows = HashMap::try_from(flows).map_err(map_err(FLOWS_MAP))?;
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
        Ok(FlowTable {
            flows,
            stats,
            pending,
            hist,
            capacity,
            memory_bytes,
        })
    }

    /// All entries, into `out` (cleared first).
    pub fn read_flows(&self, out: &mut Vec<(FlowKey, FlowCounters)>) -> Result<(), TableError> {
        out.clear();
        for kv in self.flows.iter() {
            match kv {
                Ok(kv) => out.push(kv),
                // The entry went away between listing and reading it.
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(map_err(FLOWS_MAP)(e)),
            }
        }
        Ok(())
    }

    pub fn get(&self, key: &FlowKey) -> Option<FlowCounters> {
        self.flows.get(key, 0).ok()
    }

    pub fn remove(&mut self, key: &FlowKey) -> Result<(), TableError> {
        match self.flows.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err(FLOWS_MAP)(e)),
        }
    }

    /// The programs' counters, summed over CPUs.
    pub fn read_stats(&self) -> Result<Stats, TableError> {
        let mut out = [Counter::default(); STATS_LEN as usize];
        for s in Stat::ALL {
            let per_cpu = self
                .stats
                .get(&(*s as u32), 0)
                .map_err(map_err(STATS_MAP))?;
            for c in per_cpu.iter() {
                out[*s as usize].add(c);
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
