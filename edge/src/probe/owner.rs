//! The kernel side of "who sent it" (`shared::owner`): the cgroup socket programs, loaded
//! and attached on the cgroup v2 root, and the maps the drain reads — each slot's
//! [`FlowOwner`], mapped into memory like the flow table, and the programs' counters.
//!
//! What this machine cannot offer is said on start and the rest goes on: no cgroup v2
//! mounted (no process or service; MACs still), no `sock_release` hook (Linux < 5.9: the
//! socket map is not freed as sockets close, and fills).

use crate::{
    owner::cgroup,
    probe::table::{map_err, Mapped, TableError},
};
use aya::{
    maps::{MapData, PerCpuArray},
    programs::{CgroupAttachMode, CgroupSock},
    Ebpf,
};
use shared::owner::{
    FlowOwner, OwnerStat, BOUND_MAP, DEFAULT_MAX_PORTS, OWNERS_MAP, OWNER_STATS_LEN,
    OWNER_STATS_MAP, PORTS_MAP, SOCKETS_MAP,
};
use std::path::PathBuf;

pub const SOCK_CREATE_PROG: &str = "edgeflow_sock_create";
pub const SOCK_RELEASE_PROG: &str = "edgeflow_sock_release";
pub const POST_BIND4_PROG: &str = "edgeflow_post_bind4";
pub const POST_BIND6_PROG: &str = "edgeflow_post_bind6";

/// `[owner]` as loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnerOptions {
    /// Sockets the socket map holds.
    pub max_sockets: u32,
}

impl Default for OwnerOptions {
    fn default() -> OwnerOptions {
        OwnerOptions {
            max_sockets: shared::owner::DEFAULT_MAX_SOCKETS,
        }
    }
}

/// The cgroup v2 hierarchy's mount point, if one is mounted.
pub fn cgroup_root() -> Option<PathBuf> {
    cgroup::unified_mount(&std::fs::read_to_string("/proc/self/mountinfo").ok()?)
}

/// Loads the cgroup programs (before anything is attached). A failure is reported and
/// leaves owners to what the packet programs see (cgroup ids, MACs).
pub fn load_programs(ebpf: &mut Ebpf) -> Vec<String> {
    let mut unavailable = Vec::new();
    for name in [
        SOCK_CREATE_PROG,
        SOCK_RELEASE_PROG,
        POST_BIND4_PROG,
        POST_BIND6_PROG,
    ] {
        let r = ebpf
            .program_mut(name)
            .ok_or_else(|| "not in the object".to_string())
            .and_then(|p| {
                let p: &mut CgroupSock = p.try_into().map_err(|e| format!("{e}"))?;
                p.load()
                    .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
            });
        if let Err(e) = r {
            unavailable.push(format!("{name}: {e}"));
        }
    }
    unavailable
}

/// Attaches the cgroup programs on the cgroup v2 root, as links: beside any others there (a
/// second agent, systemd's own), detached when the programs are dropped or the agent dies.
/// Returns what did not work, for the start-up message.
pub fn attach(ebpf: &mut Ebpf) -> Vec<String> {
    let Some(root) = cgroup_root() else {
        return vec![
            "no cgroup v2 hierarchy mounted (cgroup2 in /proc/self/mountinfo): flows carry no \
             process and no service"
                .into(),
        ];
    };
    let dir = match std::fs::File::open(&root) {
        Ok(d) => d,
        Err(e) => return vec![format!("{}: {e}: flows carry no process", root.display())],
    };
    let mut unavailable = Vec::new();
    for (name, what) in [
        (
            SOCK_CREATE_PROG,
            "sockets' creators are not recorded: flows carry no process",
        ),
        (
            SOCK_RELEASE_PROG,
            "closed sockets are not removed from the socket map (Linux 5.9 has the hook): \
             it fills, and later sockets' flows carry no process",
        ),
        (
            POST_BIND4_PROG,
            "bound IPv4 ports are not recorded: accepted connections carry no process",
        ),
        (
            POST_BIND6_PROG,
            "bound IPv6 ports are not recorded: accepted connections carry no process",
        ),
    ] {
        let r = match ebpf
            .program_mut(name)
            .and_then(|p| <&mut CgroupSock>::try_from(p).ok())
        {
            Some(p) => p
                // As a link (Linux 5.7; aya's choice there), which always runs beside the
                // others on the cgroup and takes no flags: AllowMultiple is EINVAL for one.
                .attach(&dir, CgroupAttachMode::Single)
                .map(|_| ())
                .map_err(|e| format!("{:#}", anyhow::Error::from(e))),
            None => Err("not loaded".into()),
        };
        if let Err(e) = r {
            unavailable.push(format!("{name} on {}: {e}: {what}", root.display()));
        }
    }
    unavailable
}

/// The owner maps the drain reads.
pub struct OwnerMaps {
    owners: Mapped,
    slots: u32,
    stats: PerCpuArray<MapData, u64>,
}

/// The programs' owner counters, summed over CPUs (cumulative), indexed by [`OwnerStat`].
pub type OwnerStats = [u64; OWNER_STATS_LEN as usize];

impl OwnerMaps {
    /// The maps, when the programs were loaded with owners on (the per-slot map then has a
    /// value per table slot); `None` when off or when the object has none.
    pub fn take(ebpf: &mut Ebpf, slots: u32) -> Result<Option<OwnerMaps>, TableError> {
        let on = ebpf.map(OWNERS_MAP).is_some_and(|m| match m {
            aya::maps::Map::Array(d) => d.info().is_ok_and(|i| i.max_entries() == slots),
            _ => false,
        });
        if !on {
            return Ok(None);
        }
        let owners = Mapped::take(ebpf, OWNERS_MAP, slots, size_of::<FlowOwner>())?;
        let stats = ebpf
            .take_map(OWNER_STATS_MAP)
            .ok_or(TableError::MissingMap(OWNER_STATS_MAP))?;
        Ok(Some(OwnerMaps {
            owners,
            slots,
            stats: PerCpuArray::try_from(stats).map_err(map_err(OWNER_STATS_MAP))?,
        }))
    }

    /// Slot `i`'s owner as the programs wrote it (read as memory; it is written once per
    /// flow, before the slot is published, and at the flow's first egress packet).
    pub fn get(&self, i: u32) -> Option<FlowOwner> {
        if i >= self.slots {
            return None;
        }
        // SAFETY: `i` is within the mapping of `slots` values; a plain copy of integers (a
        // torn read of a value being written at the first egress packet shows its
        // resolution at the next drain).
        Some(unsafe {
            std::ptr::read_volatile(self.owners.base().cast::<FlowOwner>().add(i as usize))
        })
    }

    /// The owner counters, summed over CPUs.
    pub fn stats(&self) -> Result<OwnerStats, TableError> {
        let mut out = [0u64; OWNER_STATS_LEN as usize];
        for s in OwnerStat::ALL {
            let per_cpu = self
                .stats
                .get(&(*s as u32), 0)
                .map_err(map_err(OWNER_STATS_MAP))?;
            out[*s as usize] = per_cpu.iter().fold(0u64, |a, c| a.wrapping_add(*c));
        }
        Ok(out)
    }
}

/// Map sizes for the loader: the per-slot map as big as the table and the socket map as
/// asked when on, one entry each when off (nothing allocated, nothing touched).
pub fn map_sizes(opts: Option<OwnerOptions>, slots: u32) -> [(&'static str, u32); 4] {
    match opts {
        Some(o) => [
            (OWNERS_MAP, slots),
            (SOCKETS_MAP, o.max_sockets.max(1)),
            (PORTS_MAP, DEFAULT_MAX_PORTS),
            (BOUND_MAP, DEFAULT_MAX_PORTS),
        ],
        None => [
            (OWNERS_MAP, 1),
            (SOCKETS_MAP, 1),
            (PORTS_MAP, 1),
            (BOUND_MAP, 1),
        ],
    }
}
