//! What a killed edgeflow leaves on an interface, and how the next one knows it for its own.
//!
//! TCX and XDP links die with the process that holds them (Linux 6.6 and 5.9). Without them
//! the programs hang in through netlink — a clsact filter, an XDP program on the device —
//! and stay there after a `kill -9` or a panic, counting into a table nobody reads; each
//! restart would add one more beside them. So on start the agent looks at each interface's
//! clsact hooks and XDP hook for what is unmistakably an edgeflow's:
//! - a TC filter: a `bpf` filter named after one of our programs (aya names the filter after
//!   its program) at our own pref and handle ([`TC_PREF`], [`TC_HANDLE`]), which the agent
//!   always uses on clsact;
//! - an XDP program: named `edgeflow_xdp` and using a map named like our flow table's held-slot
//!   bitmap (`FLOWS_HELD`);
//!
//! and whose program no live process holds (a running edgeflow on the same interface is an
//! error, not a leftover). Those are replaced in place where the agent attaches the same
//! way, and removed otherwise. Anything else on the hooks — another tool's filter or XDP
//! program, or an edgeflow-named filter without our tag — is left alone.

use crate::probe::{
    bpf,
    netlink::{self, TcFilter, XdpProg, PARENT_EGRESS, PARENT_INGRESS},
};
use aya::programs::ProgramFd;
use shared::flow::HELD_MAP;

/// The pref every clsact filter of ours sits at: above the range `tc` gives filters added
/// without one (49152 downwards), so ours runs after them, as a TCX program appended last
/// does; passing the packet on (TC_ACT_UNSPEC), it never hides a packet from a later filter.
pub const TC_PREF: u16 = 0xedf0;
/// The handle of our clsact filters (`tc` shows it as 0xedf00001).
pub const TC_HANDLE: u32 = 0xedf0_0001;

/// A hook's leftover, found by [`find`].
pub struct Found {
    /// Tagged filters of a stopped edgeflow: (clsact parent, filter).
    pub filters: Vec<(u32, TcFilter)>,
    /// Its XDP program (netlink-attached), with an fd for replacing or removing exactly it.
    pub xdp: Option<(XdpProg, ProgramFd)>,
    /// Edgeflow-named filters without our tag (older builds, or set up by hand): reported,
    /// left alone.
    pub untagged: Vec<String>,
}

impl Found {
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty() && self.xdp.is_none()
    }
}

/// Whether `f` is a clsact filter an edgeflow attached.
pub fn is_ours(f: &TcFilter) -> bool {
    f.kind == "bpf"
        && f.prio == TC_PREF
        && f.handle == TC_HANDLE
        && f.bpf_name
            .as_deref()
            .is_some_and(|n| n == bpf::TC_PROG || n == bpf::TC_EGRESS_PROG)
}

/// The clsact parent of a hook direction, as the filters name it.
pub fn parent_name(parent: u32) -> &'static str {
    if parent == PARENT_INGRESS {
        "ingress"
    } else {
        "egress"
    }
}

/// Looks at interface `ifindex` (in the calling thread's namespace) for what a stopped
/// edgeflow left. An edgeflow still running there is an error.
pub fn find(iface: &str, ifindex: u32) -> anyhow::Result<Found> {
    let mut found = Found {
        filters: Vec::new(),
        xdp: None,
        untagged: Vec::new(),
    };
    for parent in [PARENT_INGRESS, PARENT_EGRESS] {
        let filters = netlink::tc_filters(ifindex, parent).map_err(|e| {
            anyhow::anyhow!("{iface}: listing the {} filters: {e}", parent_name(parent))
        })?;
        for f in filters {
            if is_ours(&f) {
                if let Some(pid) = f.prog_id.and_then(holder) {
                    anyhow::bail!(
                        "{iface}: an edgeflow (pid {pid}) is attached here already (clsact {} \
                         filter pref {:#x}); stop it first",
                        parent_name(parent),
                        f.prio
                    );
                }
                found.filters.push((parent, f));
            } else if f.kind == "bpf"
                && f.bpf_name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("edgeflow_"))
            {
                found.untagged.push(format!(
                    "a clsact {} filter {:?} at pref {} handle {:#x} is not tagged as an \
                     edgeflow's (ours sit at pref {TC_PREF} handle {TC_HANDLE:#x}); left alone",
                    parent_name(parent),
                    f.bpf_name.as_deref().unwrap_or(""),
                    f.prio,
                    f.handle
                ));
            }
        }
    }
    let progs =
        netlink::xdp_progs(ifindex).map_err(|e| anyhow::anyhow!("{iface}: reading XDP: {e}"))?;
    for x in progs {
        let Some(fd) = our_xdp(x.id) else { continue };
        if let Some(pid) = holder(x.id) {
            anyhow::bail!(
                "{iface}: an edgeflow (pid {pid}) is attached here already (XDP program id \
                 {}); stop it first",
                x.id
            );
        }
        found.xdp = Some((x, fd));
    }
    Ok(found)
}

/// The name of program `id` ("?" when it cannot be read).
pub fn prog_name(id: u32) -> String {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(String::from))
        .unwrap_or_else(|| "?".into())
}

/// An fd of program `id` if it is an edgeflow XDP program: its name and a map of ours.
fn our_xdp(id: u32) -> Option<ProgramFd> {
    let info = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)?;
    if info.name_as_str() != Some(bpf::XDP_PROG) {
        return None;
    }
    let maps = info.map_ids().ok()??;
    let ours = maps
        .into_iter()
        .any(|m| aya::maps::MapInfo::from_id(m).is_ok_and(|mi| mi.name_as_str() == Some(HELD_MAP)));
    if !ours {
        return None;
    }
    info.fd().ok()
}

/// A live process (not this one) that holds program `prog_id` (an fd of the program or of a
/// link to it, from /proc/PID/fdinfo): its pid. Processes whose fds we may not read count as
/// not holding it.
pub fn holder(prog_id: u32) -> Option<u32> {
    let me = std::process::id();
    let want = format!("prog_id:\t{prog_id}\n");
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(e.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_to_string(fd.path()).is_ok_and(|s| s.contains(&want)) {
                return Some(pid);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(name: &str, prio: u16, handle: u32) -> TcFilter {
        TcFilter {
            prio,
            handle,
            kind: "bpf".into(),
            bpf_name: Some(name.into()),
            prog_id: Some(1),
        }
    }

    #[test]
    fn ours_by_name_pref_and_handle_only() {
        assert!(is_ours(&filter("edgeflow_tc", TC_PREF, TC_HANDLE)));
        assert!(is_ours(&filter("edgeflow_tc_egress", TC_PREF, TC_HANDLE)));
        // Our tag on another program, our name without the tag: not ours.
        assert!(!is_ours(&filter("other_tc", TC_PREF, TC_HANDLE)));
        assert!(!is_ours(&filter("edgeflow_tc", 49152, TC_HANDLE)));
        assert!(!is_ours(&filter("edgeflow_tc", TC_PREF, 1)));
        let mut u32f = filter("edgeflow_tc", TC_PREF, TC_HANDLE);
        u32f.kind = "u32".into();
        assert!(!is_ours(&u32f));
    }

    #[test]
    fn nobody_holds_a_program_that_does_not_exist() {
        assert_eq!(holder(u32::MAX), None);
    }
}
