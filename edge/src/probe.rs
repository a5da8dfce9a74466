//! One probe session: the programs loaded, the table taken, attached to the interfaces, drained
//! window by window, and detached when the session is dropped (also on an error or a panic).
//!
//! `run`, `watch`, the footprint benchmark and the kernel tests that attach all go through
//! [`Session`], so the order that keeps the counts exact is written once: the drainer's
//! baseline is read before the programs are attached (a packet counted between its two reads
//! would stay in one and not the other), and whatever was attached is detached, in the
//! interfaces' namespace.
//!
//! The kernel side lives in the modules below: loading ([`bpf`]), the maps ([`table`],
//! [`maps`], [`ticks`], [`clock`]), the drain ([`drain`]), hooking in ([`attach`], [`netlink`],
//! [`netdev`], [`leftover`], [`ifstate`]), and what the machine must offer ([`kernel`],
//! [`caps`]).

pub mod attach;
pub mod bpf;
pub mod caps;
pub mod clock;
pub mod drain;
pub mod ifstate;
pub mod kernel;
pub mod leftover;
pub mod maps;
pub mod netdev;
pub mod netlink;
pub mod owner;
pub mod table;
pub mod ticks;

use self::{
    attach::{AttachMode, Attachment},
    bpf::{LoadOptions, Loaded, RttOptions},
    drain::{Drainer, Expiry},
    ifstate::{IfaceStates, NoneLeft, Reattach},
    kernel::Kernel,
    maps::Maps,
    table::TableError,
};
use crate::owner::OwnerConfig;
use crate::report::window::Window;
use aya::programs::ProgramInfo;

/// What a session loads and where it attaches.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    pub ifaces: Vec<String>,
    /// Network namespace the interfaces are in (`ip netns` name or a path); `None`: ours.
    pub netns: Option<String>,
    /// Flows the table is sized for (checked where the user gives it: `config::max_flows`).
    pub max_flows: u32,
    pub attach: AttachMode,
    pub sample_every: u32,
    /// TCP RTT tracking; `None`: off.
    pub rtt: Option<RttOptions>,
    /// TCP health: retransmissions, resets, connection outcomes (docs/tcp.md).
    pub tcp_health: bool,
    /// DNS over UDP port 53 (docs/dns.md).
    pub dns: bool,
    pub expiry: Expiry,
    /// Who sent it: processes, services, LAN devices (docs/owners.md); `None`: off.
    pub owner: Option<OwnerConfig>,
}

/// Options checked against this machine, nothing loaded yet: [`Checked::start`] loads.
pub struct Checked<'a> {
    opts: &'a ProbeOptions,
    kernel: Kernel,
}

/// Checks what the user can fix before anything is loaded, the kernel last: what it offers.
pub fn check(opts: &ProbeOptions) -> anyhow::Result<Checked<'_>> {
    netdev::in_netns(opts.netns.as_deref(), || {
        attach::check_interfaces(&opts.ifaces)
    })??;
    caps::check()?;
    let kernel = kernel::check()?;
    if let Some(f) = kernel.fallbacks() {
        eprintln!("edgeflow: kernel {}: {f}", kernel::release());
    }
    Ok(Checked { opts, kernel })
}

impl Checked<'_> {
    /// Loads the programs, takes their maps, reads the drain's baseline, then attaches.
    pub fn start(self) -> anyhow::Result<Session> {
        let opts = self.opts;
        let mut loaded = bpf::load(LoadOptions {
            max_flows: opts.max_flows,
            sample_every: opts.sample_every,
            rtt: opts.rtt,
            tcp_health: opts.tcp_health,
            owner: opts.owner.as_ref().map(|o| o.kernel),
            dns: opts.dns,
        })?;
        eprintln!("edgeflow: {}", loaded.report);
        for u in &loaded.report.owner_unavailable {
            eprintln!("edgeflow: owners: {u}");
        }
        let maps = Maps::take(&mut loaded.ebpf)?;
        eprintln!("edgeflow: {}", maps.table.describe());
        let mut hooked = Hooked {
            loaded: Some(loaded),
            list: Vec::new(),
            netns: opts.netns.clone(),
        };
        // Before attaching: the baseline is then the empty table and zeroed counters.
        let mut drainer = Drainer::new(maps, opts.expiry, opts.tcp_health)?.with_dns(opts.dns)?;
        if let (Some(cfg), Some(_)) = (&opts.owner, &drainer.source().owner) {
            drainer.set_owners(crate::owner::Resolver::start(
                cfg,
                &opts.ifaces,
                opts.netns.as_deref(),
            ))?;
        }
        let hooks = attach::Hooks::new(self.kernel.tcx, self.kernel.xdp_link);
        // From here on a failure drops `hooked`, which undoes what was attached.
        let ebpf = &mut hooked.loaded.as_mut().expect("just loaded").ebpf;
        attach::attach_all(
            ebpf,
            &opts.ifaces,
            opts.netns.as_deref(),
            opts.attach,
            hooks,
            &mut hooked.list,
        )?;
        if opts.owner.is_some() {
            let ebpf = &mut hooked.loaded.as_mut().expect("just loaded").ebpf;
            for u in owner::attach(ebpf) {
                eprintln!("edgeflow: owners: {u}");
            }
        }
        let ifaces = IfaceStates::new(&hooked.list, opts.netns.as_deref());
        Ok(Session {
            hooked,
            drainer,
            ifaces,
            mode: opts.attach,
            hooks,
            reattach: Reattach::default(),
        })
    }
}

/// The programs attached and their table drained; dropping it detaches them.
pub struct Session {
    hooked: Hooked,
    drainer: Drainer,
    ifaces: IfaceStates,
    mode: AttachMode,
    hooks: attach::Hooks,
    reattach: Reattach,
}

impl Session {
    /// [`check`], then [`Checked::start`].
    pub fn start(opts: &ProbeOptions) -> anyhow::Result<Session> {
        check(opts)?.start()
    }

    /// Ends the current window (the programs' log flushed first) and starts the next.
    pub fn next_window(&mut self) -> Result<Window, TableError> {
        self.flush_log();
        self.drainer.drain()
    }

    /// Moves pending log records from the programs to the log.
    pub fn flush_log(&mut self) {
        self.hooked.loaded_mut().flush_log();
    }

    /// What to do when a watched interface is deleted (default: attach again when one of
    /// its name appears; stop at once when none is left).
    pub fn set_reattach(&mut self, how: Reattach) {
        self.reattach = how;
    }

    /// Gives up the capabilities the session no longer needs, on this thread and on the one
    /// in `--netns` (capabilities are per thread; threads started later inherit these):
    /// CAP_NET_ADMIN is kept when re-attaching is on or when stopping must delete clsact
    /// filters or a netlink XDP program (kernels without TCX/XDP links), everything else goes.
    /// Returns what was kept.
    pub fn drop_privileges(&self) -> anyhow::Result<u64> {
        let legacy = !(self.hooks.tcx && self.hooks.xdp_link);
        let keep = if self.reattach.on || legacy {
            1u64 << caps::CAP_NET_ADMIN
        } else {
            0
        };
        // Only what this process has can be kept.
        let keep = keep & caps::effective().unwrap_or(0);
        if let Some(ns) = &self.hooked.netns {
            netdev::in_netns(Some(ns), || caps::drop_to(keep))??;
        }
        caps::drop_to(keep)?;
        Ok(keep)
    }

    /// Re-attachments to interfaces made again under a watched name, since start.
    pub fn reattached(&self) -> u64 {
        self.ifaces.reattached()
    }

    /// Looks at the attached interfaces again (down, up, deleted, made again: attached to);
    /// fails when none has been left for longer than the wait.
    pub fn check_ifaces(&mut self) -> Result<(), NoneLeft> {
        let hooked = &mut self.hooked;
        let (mode, hooks) = (self.mode, self.hooks);
        self.ifaces.check(self.reattach, |name, old| {
            // The deleted interface's links went with it; what is left to undo is the new one.
            hooked
                .list
                .retain(|a| !(a.iface == name && a.ifindex == old));
            let netns = hooked.netns.clone();
            let ebpf = &mut hooked.loaded.as_mut().expect("loaded until dropped").ebpf;
            attach::attach_all(
                ebpf,
                &[name.to_string()],
                netns.as_deref(),
                mode,
                hooks,
                &mut hooked.list,
            )?;
            Ok(hooked.list.last().expect("attached").ifindex)
        })
    }

    /// Each program by its hook, with what the kernel knows of it: its runs and their run
    /// time (counted while `BPF_ENABLE_STATS` is on), for measuring the in-kernel cost. A
    /// program this session did not attach shows no runs.
    pub fn program_stats(&mut self) -> anyhow::Result<[(&'static str, ProgramInfo); 3]> {
        let ebpf = &mut self.hooked.loaded_mut().ebpf;
        Ok([
            ("xdp", bpf::xdp(ebpf).info()?),
            ("tc ingress", bpf::tc(ebpf).info()?),
            ("tc egress", bpf::tc_egress(ebpf).info()?),
        ])
    }

    /// The programs' maps (the flow table among them).
    pub fn maps(&self) -> &Maps {
        self.drainer.source()
    }
}

/// The loaded programs and where they are attached: detached on drop.
struct Hooked {
    /// Always `Some` until dropped.
    loaded: Option<Loaded>,
    list: Vec<Attachment>,
    netns: Option<String>,
}

impl Hooked {
    fn loaded_mut(&mut self) -> &mut Loaded {
        self.loaded.as_mut().expect("loaded until dropped")
    }
}

impl Drop for Hooked {
    fn drop(&mut self) {
        if let Some(mut loaded) = self.loaded.take() {
            loaded.flush_log();
            attach::detach_all(loaded, &self.list, self.netns.as_deref());
            eprintln!("edgeflow: detached");
        }
    }
}
