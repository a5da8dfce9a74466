//! Where the programs hook in, per interface, and why.
//!
//! Egress is always the TC program (TCX where the kernel has it, clsact otherwise). Ingress is
//! native XDP or the same TC program, chosen per interface:
//! - veth: TC. Native XDP on a veth turns TSO off on its peer, so bulk TCP crossed as 1.5 KB
//!   packets at 0.25x the throughput (docs/veth-baseline.md), while TC with a map update cost
//!   nothing measurable (0.96x), and TC sees GRO/GSO aggregates whole and counts their
//!   segments.
//! - other drivers: native XDP, which runs before any skb exists; if the driver has no native
//!   XDP, TC ingress (generic XDP would run after GRO without seeing `gso_segs`).

use crate::{
    probe::{bpf, leftover, netdev, netlink},
    UsageError,
};
use aya::{
    programs::{
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions},
        LinkOrder, ProgramFd, TcAttachType, XdpMode,
    },
    Ebpf,
};
use std::{
    fmt,
    os::fd::{AsFd, AsRawFd},
    str::FromStr,
};

/// About the largest MTU whose frames fit one page, the limit of XDP without multi-buffer
/// support: 4 KiB less XDP headroom, skb_shared_info and the Ethernet header, as veth
/// computes it (other drivers differ by a few bytes).
const XDP_MAX_SINGLE_BUFFER_MTU: u32 = 3506;

/// What the user asked for (`--attach`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    #[default]
    Auto,
    Xdp,
    Tc,
}

impl FromStr for AttachMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(AttachMode::Auto),
            "xdp" => Ok(AttachMode::Xdp),
            "tc" => Ok(AttachMode::Tc),
            _ => Err(format!("unknown attach mode {s:?} (auto, xdp or tc)")),
        }
    }
}

/// The ingress hook in use on one interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingress {
    XdpNative,
    Tc,
}

/// The egress hook flavour in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Egress {
    Tcx,
    Clsact,
}

/// How this kernel lets the programs hook in: TCX links (Linux 6.6) or else clsact filters
/// through netlink; XDP links (5.9) or else an XDP program set through netlink. Both old ways
/// outlive the process, so a killed agent leaves them ([`crate::probe::leftover`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hooks {
    pub tcx: bool,
    pub xdp_link: bool,
}

/// Set to 1, the agent attaches the old way (clsact filters and netlink XDP) even where the
/// kernel has TCX and XDP links: how the tests exercise the path kernels before 6.6 take.
pub const LEGACY_ATTACH_ENV: &str = "EDGEFLOW_LEGACY_ATTACH";

impl Hooks {
    /// Both link kinds as the kernel offers them, unless [`LEGACY_ATTACH_ENV`] asks for the
    /// old ways.
    pub fn new(tcx: bool, xdp_link: bool) -> Hooks {
        if std::env::var_os(LEGACY_ATTACH_ENV).is_some_and(|v| v == "1") {
            eprintln!(
                "edgeflow: {LEGACY_ATTACH_ENV}=1: attaching as on a kernel without TCX and XDP \
                 links (clsact filters, netlink XDP)"
            );
            return Hooks {
                tcx: false,
                xdp_link: false,
            };
        }
        Hooks { tcx, xdp_link }
    }
}

/// One interface the programs are attached to.
#[derive(Debug)]
pub struct Attachment {
    pub iface: String,
    pub ifindex: u32,
    pub ingress: Ingress,
    pub egress: Egress,
    /// Why this ingress hook (shown to the operator).
    pub reason: String,
    /// The clsact qdisc is ours to remove on detach, once no filter is left on it: we added
    /// it, or a stopped edgeflow whose filters we replaced did.
    clsact_ours: bool,
    /// Our XDP program when set through netlink (no link to drop): removed on detach if it is
    /// still the one there.
    xdp_netlink: Option<(ProgramFd, u32)>,
}

impl fmt::Display for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ing = match (self.ingress, &self.xdp_netlink) {
            (Ingress::XdpNative, None) => "xdp (native)",
            (Ingress::XdpNative, Some(_)) => "xdp (native, netlink)",
            (Ingress::Tc, _) => "tc",
        };
        let eg = match self.egress {
            Egress::Tcx => "tcx",
            Egress::Clsact => "clsact",
        };
        write!(
            f,
            "{}: ingress {ing}, egress tc ({eg}) — {}",
            self.iface, self.reason
        )
    }
}

/// The ingress hook `mode` asks for on `iface`, with the reason.
pub fn choose(iface: &str, mode: AttachMode) -> (Ingress, String) {
    match mode {
        AttachMode::Xdp => (Ingress::XdpNative, "asked for with --attach xdp".into()),
        AttachMode::Tc => (Ingress::Tc, "asked for with --attach tc".into()),
        AttachMode::Auto => match netdev::driver(iface) {
            Ok(d) if d == "veth" => (
                Ingress::Tc,
                "veth: native XDP would turn TSO off on the peer (bulk TCP at 0.25x in our \
                 measurements); TC counts GRO/GSO aggregates by segment at no measurable cost"
                    .into(),
            ),
            Ok(d) => (
                Ingress::XdpNative,
                format!("driver {d}: native XDP sees every wire packet before the stack"),
            ),
            Err(e) => (
                Ingress::XdpNative,
                format!("driver unknown ({e}): trying native XDP"),
            ),
        },
    }
}

/// Attaches both programs to `iface`, replacing or removing what a stopped edgeflow left
/// there ([`crate::probe::leftover`]).
pub fn attach(
    ebpf: &mut Ebpf,
    iface: &str,
    mode: AttachMode,
    hooks: Hooks,
    done: &mut Vec<Attachment>,
) -> anyhow::Result<()> {
    let ifindex = netdev::ifindex(iface)?;
    let mut found = leftover::find(iface, ifindex)?;
    for u in &found.untagged {
        eprintln!("edgeflow: {iface}: {u}");
    }
    let (mut ingress, mut reason) = choose(iface, mode);
    // In `done` from here on: whatever fails below, [`detach_all`] undoes what was done.
    done.push(Attachment {
        iface: iface.into(),
        ifindex,
        ingress,
        egress: if hooks.tcx {
            Egress::Tcx
        } else {
            Egress::Clsact
        },
        reason: String::new(),
        clsact_ours: !found.filters.is_empty(),
        xdp_netlink: None,
    });
    let att = done.last_mut().expect("just pushed");
    let mut replaced = Vec::new();
    if !hooks.tcx && tc::qdisc_add_clsact(iface).is_ok() {
        att.clsact_ours = true;
    }
    if ingress == Ingress::XdpNative {
        match attach_xdp(ebpf, iface, ifindex, hooks, &mut found, att) {
            Ok(true) => replaced.push("xdp"),
            Ok(false) => {}
            Err(e) => {
                let mut e = format!("{e:#}");
                if netdev::mtu(iface).is_ok_and(|m| m > XDP_MAX_SINGLE_BUFFER_MTU) {
                    e.push_str(
                        "; the MTU is above what one page holds, and these programs do not \
                         declare multi-buffer (frags) XDP support",
                    );
                }
                if mode == AttachMode::Xdp {
                    anyhow::bail!("{iface}: native XDP attach failed ({e}); try --attach tc");
                }
                ingress = Ingress::Tc;
                reason = format!(
                    "native XDP not available here ({e}); TC ingress instead of generic XDP, \
                     which would not see GRO aggregates' segment counts"
                );
            }
        }
    }
    att.ingress = ingress;
    att.reason = reason;
    if ingress == Ingress::Tc && attach_tc(ebpf, iface, TcAttachType::Ingress, hooks, &mut found)? {
        replaced.push("tc ingress");
    }
    if attach_tc(ebpf, iface, TcAttachType::Egress, hooks, &mut found)? {
        replaced.push("tc egress");
    }
    // What the stopped agent had where this one does not hook in.
    let mut removed = Vec::new();
    for (parent, f) in &found.filters {
        netlink::tc_filter_del(ifindex, *parent, f.prio, f.handle)
            .map_err(|e| anyhow::anyhow!("{iface}: removing a stopped edgeflow's filter: {e}"))?;
        removed.push(leftover::parent_name(*parent));
    }
    if let Some((x, fd)) = &found.xdp {
        netlink::xdp_set(ifindex, None, Some(fd.as_fd().as_raw_fd()), x.mode).map_err(|e| {
            anyhow::anyhow!("{iface}: removing a stopped edgeflow's XDP program: {e}")
        })?;
        removed.push("xdp");
    }
    if !replaced.is_empty() || !removed.is_empty() {
        eprintln!(
            "edgeflow: {iface}: a stopped edgeflow's programs were left attached: replaced \
             [{}], removed [{}]",
            replaced.join(", "),
            removed.join(", ")
        );
    }
    Ok(())
}

/// Native XDP: a link where the kernel has them (a leftover netlink program of ours is
/// removed first: a link cannot go where one is), else through netlink, replacing our
/// leftover in one step or refusing to replace anyone else's.
fn attach_xdp(
    ebpf: &mut Ebpf,
    iface: &str,
    ifindex: u32,
    hooks: Hooks,
    found: &mut leftover::Found,
    att: &mut Attachment,
) -> anyhow::Result<bool> {
    let prog = bpf::xdp(ebpf);
    if hooks.xdp_link {
        if let Some((x, fd)) = &found.xdp {
            netlink::xdp_set(ifindex, None, Some(fd.as_fd().as_raw_fd()), x.mode)?;
            found.xdp = None;
        }
        prog.attach(iface, XdpMode::Driver)
            .map_err(anyhow::Error::new)?;
        return Ok(false);
    }
    let fd = prog.fd()?.try_clone()?;
    let mode = netlink::XDP_FLAGS_DRV_MODE;
    // A leftover in another mode cannot be replaced by this one: it goes first.
    if let Some((x, old)) = found.xdp.as_ref().filter(|(x, _)| x.mode != mode) {
        netlink::xdp_set(ifindex, None, Some(old.as_fd().as_raw_fd()), x.mode)?;
        found.xdp = None;
    }
    let expected = found
        .xdp
        .as_ref()
        .filter(|(x, _)| x.mode == mode)
        .map(|(_, fd)| fd.as_fd().as_raw_fd());
    match netlink::xdp_set(ifindex, Some(fd.as_fd().as_raw_fd()), expected, mode) {
        Ok(()) => {
            if expected.is_some() {
                found.xdp = None;
            }
            att.xdp_netlink = Some((fd, mode));
            Ok(expected.is_some())
        }
        Err(e)
            if e.raw_os_error() == Some(libc::EBUSY) || e.raw_os_error() == Some(libc::EEXIST) =>
        {
            let theirs: Vec<String> = netlink::xdp_progs(ifindex)
                .unwrap_or_default()
                .iter()
                .map(|x| format!("{} (id {})", leftover::prog_name(x.id), x.id))
                .collect();
            anyhow::bail!(
                "another XDP program is attached to {iface}, not an edgeflow's: {} ({e})",
                theirs.join(", ")
            )
        }
        Err(e) => Err(anyhow::anyhow!("netlink: {e}")),
    }
}

/// TC on one hook: a TCX link, or a clsact filter at our pref and handle — replacing a
/// stopped edgeflow's filter there in one step (no packet goes uncounted meanwhile). Returns
/// whether it replaced one.
fn attach_tc(
    ebpf: &mut Ebpf,
    iface: &str,
    dir: TcAttachType,
    hooks: Hooks,
    found: &mut leftover::Found,
) -> anyhow::Result<bool> {
    let (prog, what) = match dir {
        TcAttachType::Ingress => (bpf::tc(ebpf), "ingress"),
        _ => (bpf::tc_egress(ebpf), "egress"),
    };
    let failed =
        |e: aya::programs::ProgramError| anyhow::anyhow!("{iface}: TC {what} attach failed: {e}");
    if hooks.tcx {
        prog.attach_with_options(iface, dir, TcAttachOptions::TcxOrder(LinkOrder::default()))
            .map_err(failed)?;
        return Ok(false);
    }
    let parent = match dir {
        TcAttachType::Ingress => netlink::PARENT_INGRESS,
        _ => netlink::PARENT_EGRESS,
    };
    if let Some(i) = found.filters.iter().position(|(p, _)| *p == parent) {
        let old = SchedClassifierLink::attached(
            iface,
            dir,
            leftover::TC_PREF,
            leftover::TC_HANDLE.into(),
            None,
        )?;
        prog.attach_to_link(old).map_err(failed)?;
        found.filters.remove(i);
        return Ok(true);
    }
    let opts = NlOptions {
        priority: leftover::TC_PREF,
        handle: leftover::TC_HANDLE.into(),
        ..NlOptions::default()
    };
    prog.attach_with_options(iface, dir, TcAttachOptions::Netlink(opts))
        .map_err(failed)?;
    Ok(false)
}

/// Undoes what links do not: our netlink XDP program (if it is still the one there), and a
/// clsact qdisc that is ours and has no filter left. Clsact filters and links are detached
/// when the `Ebpf` that owns them is dropped ([`detach_all`]).
pub fn cleanup(att: &Attachment) {
    if let Some((fd, mode)) = &att.xdp_netlink {
        if let Err(e) = netlink::xdp_set(att.ifindex, None, Some(fd.as_fd().as_raw_fd()), *mode) {
            eprintln!("edgeflow: {}: removing our XDP program: {e}", att.iface);
        }
    }
    if att.clsact_ours {
        let empty = [netlink::PARENT_INGRESS, netlink::PARENT_EGRESS]
            .iter()
            .all(|p| netlink::tc_filters(att.ifindex, *p).is_ok_and(|f| f.is_empty()));
        if empty {
            if let Err(e) = netlink::clsact_del(att.ifindex) {
                eprintln!("edgeflow: {}: removing the clsact qdisc: {e}", att.iface);
            }
        }
    }
}

/// Attaches to every interface, inside `netns` when given (links and fds stay valid in this
/// namespace afterwards), printing what it chose. Stops at the first failure: what was attached
/// so far is in `done` for [`detach_all`].
pub fn attach_all(
    ebpf: &mut Ebpf,
    ifaces: &[String],
    netns: Option<&str>,
    mode: AttachMode,
    hooks: Hooks,
    done: &mut Vec<Attachment>,
) -> anyhow::Result<()> {
    netdev::in_netns(netns, || {
        for iface in ifaces {
            attach(ebpf, iface, mode, hooks, done)?;
            eprintln!("edgeflow: attached {}", done.last().expect("attached"));
        }
        anyhow::Ok(())
    })?
}

/// Detaches everything: drops the programs (their links, and their clsact filters, which are
/// deleted through netlink in the namespace they are in), then [`cleanup`] for each.
pub fn detach_all(loaded: bpf::Loaded, attached: &[Attachment], netns: Option<&str>) {
    let detached = netdev::in_netns(netns, move || {
        drop(loaded);
        for a in attached {
            cleanup(a);
        }
    });
    // Without a thread in the namespace the programs were dropped here instead: closing
    // their links detaches XDP and TCX links; what is deleted through netlink in the
    // namespace (TC filters, a netlink XDP program, our clsact qdisc) may stay, so say so.
    if let Err(e) = detached {
        eprintln!("edgeflow: detaching: {e:#}");
    }
}

/// Validates interface names up front, so a typo is a usage error before anything loads.
pub fn check_interfaces(ifaces: &[String]) -> Result<(), UsageError> {
    if ifaces.is_empty() {
        return Err(UsageError::Invalid("no interface given (--iface)".into()));
    }
    for i in ifaces {
        netdev::ifindex(i)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modes() {
        assert_eq!("auto".parse::<AttachMode>(), Ok(AttachMode::Auto));
        assert_eq!("xdp".parse::<AttachMode>(), Ok(AttachMode::Xdp));
        assert_eq!("tc".parse::<AttachMode>(), Ok(AttachMode::Tc));
        assert!("generic".parse::<AttachMode>().is_err());
    }

    #[test]
    fn explicit_modes_are_obeyed() {
        assert_eq!(choose("lo", AttachMode::Tc).0, Ingress::Tc);
        assert_eq!(choose("lo", AttachMode::Xdp).0, Ingress::XdpNative);
    }

    #[test]
    fn no_interfaces_is_a_usage_error() {
        assert!(check_interfaces(&[]).is_err());
        assert!(check_interfaces(&["lo".into()]).is_ok());
        assert!(check_interfaces(&["lo".into(), "nope0".into()]).is_err());
    }
}
