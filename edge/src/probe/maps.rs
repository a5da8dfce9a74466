//! The programs' maps beside the flow table, one type per concept: the per-CPU counters
//! ([`CpuStats`]), the RTT maps ([`RttMaps`]), and [`Maps`], everything a drain reads taken
//! out of one loaded object.

use crate::probe::{
    owner::OwnerMaps,
    table::{map_err, FlowTable, TableError},
    ticks::TickClock,
};
use aya::{
    maps::{Array, HashMap, MapData, MapError, PerCpuArray},
    Ebpf,
};
use shared::{
    cpu::{SlotBytes, CPU_SLOTS_MAP},
    dns::{DnsState, DNS_HIST_MAP, DNS_MAP},
    rtt::{TsKey, HIST_MAP, PENDING_MAP, RTT_BUCKETS},
    stats::STATS_LEN,
    Count, FlowKey,
};

pub use shared::stats::Stats;
/// RTT samples per log2 bucket, summed over CPUs (`shared::rtt::rtt_bucket`).
pub type RttHist = [u64; RTT_BUCKETS];

/// The programs' counters: one block in each CPU's slot of `CPU_SLOTS_MAP`.
pub struct CpuStats {
    slots: Array<MapData, SlotBytes>,
}

impl CpuStats {
    pub fn take(ebpf: &mut Ebpf) -> Result<CpuStats, TableError> {
        let slots = ebpf
            .take_map(CPU_SLOTS_MAP)
            .ok_or(TableError::MissingMap(CPU_SLOTS_MAP))?;
        Ok(CpuStats {
            slots: Array::try_from(slots).map_err(map_err(CPU_SLOTS_MAP))?,
        })
    }

    /// The counters, summed over CPUs.
    pub fn read(&self) -> Result<Stats, TableError> {
        let mut out = [Count::default(); STATS_LEN as usize];
        for cpu in 0..self.slots.len() {
            let slot = self.slots.get(&cpu, 0).map_err(map_err(CPU_SLOTS_MAP))?;
            for (o, c) in out.iter_mut().zip(slot.stats().iter()) {
                o.add(c);
            }
        }
        Ok(out)
    }
}

/// The RTT maps: timestamps waiting for their echo, and the per-CPU histogram of samples.
pub struct RttMaps {
    pending: HashMap<MapData, TsKey, u64>,
    hist: PerCpuArray<MapData, u64>,
}

impl RttMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<RttMaps, TableError> {
        let pending = ebpf
            .take_map(PENDING_MAP)
            .ok_or(TableError::MissingMap(PENDING_MAP))?;
        let hist = ebpf
            .take_map(HIST_MAP)
            .ok_or(TableError::MissingMap(HIST_MAP))?;
        Ok(RttMaps {
            pending: HashMap::try_from(pending).map_err(map_err(PENDING_MAP))?,
            hist: PerCpuArray::try_from(hist).map_err(map_err(HIST_MAP))?,
        })
    }

    /// The RTT histogram, summed over CPUs (cumulative since load).
    pub fn hist(&self) -> Result<RttHist, TableError> {
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

/// The DNS state of port-53 flows and the DNS latency histogram (`shared::dns`).
pub struct DnsMaps {
    flows: HashMap<MapData, FlowKey, DnsState>,
    hist: PerCpuArray<MapData, u64>,
}

impl DnsMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<DnsMaps, TableError> {
        let flows = ebpf
            .take_map(DNS_MAP)
            .ok_or(TableError::MissingMap(DNS_MAP))?;
        let hist = ebpf
            .take_map(DNS_HIST_MAP)
            .ok_or(TableError::MissingMap(DNS_HIST_MAP))?;
        Ok(DnsMaps {
            flows: HashMap::try_from(flows).map_err(map_err(DNS_MAP))?,
            hist: PerCpuArray::try_from(hist).map_err(map_err(DNS_HIST_MAP))?,
        })
    }

    /// Every DNS flow's state (cumulative).
    pub fn flows(&self) -> Result<std::collections::HashMap<FlowKey, DnsState>, TableError> {
        let mut out = std::collections::HashMap::new();
        for kv in self.flows.iter() {
            match kv {
                Ok((k, v)) => {
                    out.insert(k, v);
                }
                // Removed while iterating.
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(DNS_MAP)(e)),
            }
        }
        Ok(out)
    }

    /// Drops a flow's DNS state (the flow left the table).
    pub fn forget(&mut self, key: &FlowKey) -> Result<(), TableError> {
        match self.flows.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err(DNS_MAP)(e)),
        }
    }

    /// The DNS latency histogram, summed over CPUs (cumulative since load).
    pub fn hist(&self) -> Result<RttHist, TableError> {
        let mut out = [0u64; RTT_BUCKETS];
        for (i, slot) in out.iter_mut().enumerate() {
            let per_cpu = self
                .hist
                .get(&(i as u32), 0)
                .map_err(map_err(DNS_HIST_MAP))?;
            *slot = per_cpu.iter().fold(0u64, |a, c| a.wrapping_add(*c));
        }
        Ok(out)
    }
}

/// Everything a drain reads, taken out of one loaded object.
pub struct Maps {
    pub table: FlowTable,
    pub stats: CpuStats,
    pub rtt: RttMaps,
    pub dns: DnsMaps,
    /// Turns the entries' tick stamps into time.
    pub ticks: TickClock,
    /// Each slot's owner, when the programs record owners.
    pub owner: Option<OwnerMaps>,
}

impl Maps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Maps, TableError> {
        // The table first: it reads its shape from the CPU slots before they are taken.
        let table = FlowTable::take(ebpf)?;
        let owner = OwnerMaps::take(ebpf, table.slots().shape().slots)?;
        Ok(Maps {
            owner,
            table,
            stats: CpuStats::take(ebpf)?,
            rtt: RttMaps::take(ebpf)?,
            dns: DnsMaps::take(ebpf)?,
            ticks: TickClock::take(ebpf)?,
        })
    }
}
