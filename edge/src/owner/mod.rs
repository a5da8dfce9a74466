//! Who sent it (docs/owners.md): what the agent adds to what the programs record
//! (`crate::probe::owner`): cgroup ids named as paths and services ([`cgroup`]), MAC vendors
//! from the IEEE registry ([`oui`]), and LAN devices' DHCP host names ([`dhcp`]).

pub mod cgroup;
pub mod dhcp;
pub mod oui;

use crate::probe::{netdev, owner::OwnerOptions};
use cgroup::Cgroups;
use dhcp::{Names, Snoop};
use oui::Oui;
use shared::{
    owner::FlowOwner,
    wire::{Device, Owner, Process},
    Initiator,
};
use std::{collections::HashMap, path::PathBuf};

/// `[owner]` settings, checked (`crate::cmd::config::owner_config`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerConfig {
    /// What the programs are loaded with.
    pub kernel: OwnerOptions,
    /// LAN devices whose DHCP names are kept.
    pub max_devices: usize,
    /// The IEEE OUI registry (optional: without it devices carry no vendor).
    pub oui_file: PathBuf,
}

impl Default for OwnerConfig {
    fn default() -> OwnerConfig {
        OwnerConfig {
            kernel: OwnerOptions::default(),
            max_devices: dhcp::DEFAULT_MAX_DEVICES,
            oui_file: PathBuf::from(oui::DEFAULT_PATH),
        }
    }
}

/// Cgroup ids whose service is remembered, at most (then forgotten and looked up again).
const MAX_SERVICES: usize = 16_384;
/// DHCP frames read per interface per window, at most.
const MAX_DHCP_READ: usize = 4096;

/// A window's strings and devices, each once; flows' [`Owner`]s index into them.
#[derive(Clone, Debug, Default)]
pub struct Tables {
    pub names: Vec<String>,
    name_ix: HashMap<String, u32>,
    pub devices: Vec<Device>,
    dev_ix: HashMap<[u8; 6], u32>,
}

impl Tables {
    pub fn name(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.name_ix.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(s.to_string());
        self.name_ix.insert(s.to_string(), i);
        i
    }
}

/// What owners cost and missed since the agent started (cumulative).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnoopStats {
    /// DHCP requests read.
    pub dhcp_requests: u64,
    /// DHCP requests from a new MAC that found the names map full.
    pub dhcp_names_full: u64,
    /// DHCP frames the snooping sockets' buffers dropped.
    pub dhcp_dropped: u64,
}

/// Turns the programs' per-flow records into [`Owner`]s with names.
pub struct Resolver {
    cgroups: Option<Cgroups>,
    services: HashMap<u64, Option<Box<str>>>,
    oui: Oui,
    dhcp: Names,
    snoops: Vec<Snoop>,
    dhcp_dropped: u64,
    tables: Tables,
}

impl Resolver {
    /// Reads the OUI registry, finds the cgroup v2 hierarchy and opens a DHCP snooping
    /// socket on each interface (in `netns`); says what is not available.
    pub fn start(cfg: &OwnerConfig, ifaces: &[String], netns: Option<&str>) -> Resolver {
        let cgroups = crate::probe::owner::cgroup_root().map(Cgroups::new);
        let oui = match Oui::load(&cfg.oui_file) {
            Ok(o) => o,
            Err(e) => {
                eprintln!(
                    "edgeflow: owners: {}: {e}: LAN devices carry no vendor (Debian: ieee-data)",
                    cfg.oui_file.display()
                );
                Oui::default()
            }
        };
        let mut snoops = Vec::new();
        let opened = netdev::in_netns(netns, || {
            for iface in ifaces {
                let r = netdev::ifindex(iface)
                    .map_err(|e| std::io::Error::other(e.to_string()))
                    .and_then(|i| Snoop::open(iface, i));
                match r {
                    Ok(s) => snoops.push(s),
                    Err(e) => eprintln!(
                        "edgeflow: owners: {iface}: DHCP snooping socket: {e}: no DHCP names"
                    ),
                }
            }
        });
        if let Err(e) = opened {
            eprintln!("edgeflow: owners: DHCP snooping: {e:#}");
        }
        eprintln!(
            "edgeflow: owners: services from the cgroup v2 hierarchy at {}; {} MAC vendors; \
             DHCP names snooped on {} of {} interfaces",
            cgroups
                .as_ref()
                .map_or("(none)".to_string(), |c| c.root().display().to_string()),
            oui.len(),
            snoops.len(),
            ifaces.len()
        );
        Resolver {
            cgroups,
            services: HashMap::new(),
            oui,
            dhcp: Names::new(cfg.max_devices),
            snoops,
            dhcp_dropped: 0,
            tables: Tables::default(),
        }
    }

    /// The cgroup v2 mount point in use, if any.
    pub fn cgroup_root(&self) -> Option<&std::path::Path> {
        self.cgroups.as_ref().map(|c| c.root())
    }

    /// Reads the DHCP requests that arrived since the last call.
    pub fn refresh(&mut self) {
        for s in &self.snoops {
            match s.read_into(&mut self.dhcp, MAX_DHCP_READ) {
                Ok(d) => self.dhcp_dropped += d,
                Err(e) => log::warn!("owners: {}: reading DHCP: {e}", s.iface),
            }
        }
    }

    pub fn snoop_stats(&self) -> SnoopStats {
        SnoopStats {
            dhcp_requests: self.dhcp.requests,
            dhcp_names_full: self.dhcp.refused,
            dhcp_dropped: self.dhcp_dropped,
        }
    }

    /// The owner of a flow from its slot's record; `initiator` says which end started it.
    pub fn resolve(&mut self, o: &FlowOwner, initiator: Initiator) -> Option<Owner> {
        let process = (o.has_sock != 0).then(|| Process {
            pid: o.sock.pid,
            comm: self.tables.name(&String::from_utf8_lossy(o.sock.comm())),
        });
        let cgroup = if o.cgroup != 0 {
            o.cgroup
        } else if o.has_sock != 0 {
            o.sock.cgroup
        } else {
            0
        };
        let service = (cgroup != 0)
            .then(|| self.service(cgroup))
            .flatten()
            .map(|s| self.tables.name(&s));
        let (initiator, responder) = match o.macs_ab() {
            Some((a, b)) => {
                let (i, r) = match initiator {
                    Initiator::A => (a, b),
                    Initiator::B => (b, a),
                };
                (Some(self.device(i)), Some(self.device(r)))
            }
            None => (None, None),
        };
        let owner = Owner {
            process,
            service,
            initiator,
            responder,
        };
        (owner != Owner::default()).then_some(owner)
    }

    /// The service of cgroup `id` (`cgroup::service_of` its path).
    fn service(&mut self, id: u64) -> Option<String> {
        if let Some(s) = self.services.get(&id) {
            return s.as_deref().map(str::to_string);
        }
        let s = self
            .cgroups
            .as_mut()
            .and_then(|c| c.path(id).map(cgroup::service_of));
        if self.services.len() >= MAX_SERVICES {
            self.services.clear();
        }
        // A cgroup not found yet (made after the walk) is looked for again next time.
        if s.is_some() {
            self.services.insert(id, s.as_deref().map(Into::into));
        }
        s
    }

    fn device(&mut self, mac: [u8; 6]) -> u32 {
        if let Some(&i) = self.tables.dev_ix.get(&mac) {
            return i;
        }
        let vendor = self.oui.vendor(&mac).map(str::to_string);
        let named = self.dhcp.get(&mac).cloned().unwrap_or_default();
        let t = &mut self.tables;
        let d = Device {
            mac,
            vendor: vendor.map(|v| t.name(&v)),
            host_name: named.host_name.map(|h| t.name(&h)),
            client_id: named.client_id.map(|c| t.name(&c)),
        };
        let i = t.devices.len() as u32;
        t.devices.push(d);
        t.dev_ix.insert(mac, i);
        i
    }

    /// This window's tables, leaving empty ones for the next.
    pub fn take_tables(&mut self) -> Tables {
        std::mem::take(&mut self.tables)
    }
}
