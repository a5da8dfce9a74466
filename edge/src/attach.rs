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

use crate::{bpf, netdev, UsageError};
use aya::{
    programs::{tc, TcAttachType, XdpMode},
    util::KernelVersion,
    Ebpf,
};
use std::{fmt, str::FromStr};

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

/// One interface the programs are attached to.
#[derive(Clone, Debug)]
pub struct Attachment {
    pub iface: String,
    pub ifindex: u32,
    pub ingress: Ingress,
    pub egress: Egress,
    /// Why this ingress hook (shown to the operator).
    pub reason: String,
    /// Whether we added a clsact qdisc that must go when we detach.
    added_clsact: bool,
}

impl fmt::Display for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ing = match self.ingress {
            Ingress::XdpNative => "xdp (native)",
            Ingress::Tc => "tc",
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

/// Attaches both programs to `iface`.
pub fn attach(ebpf: &mut Ebpf, iface: &str, mode: AttachMode) -> anyhow::Result<Attachment> {
    let ifindex = netdev::ifindex(iface)?;
    let (mut ingress, mut reason) = choose(iface, mode);
    let tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
    let mut added_clsact = false;
    if !tcx {
        // Netlink TC needs a clsact qdisc; only remove it on detach if we made it.
        added_clsact = tc::qdisc_add_clsact(iface).is_ok();
    }
    if ingress == Ingress::XdpNative {
        if let Err(e) = bpf::xdp(ebpf).attach(iface, XdpMode::Driver) {
            // With its cause: aya's message only names the syscall.
            let mut e = format!("{:#}", anyhow::Error::new(e));
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
    if ingress == Ingress::Tc {
        bpf::tc(ebpf)
            .attach(iface, TcAttachType::Ingress)
            .map_err(|e| anyhow::anyhow!("{iface}: TC ingress attach failed: {e}"))?;
    }
    bpf::tc_egress(ebpf)
        .attach(iface, TcAttachType::Egress)
        .map_err(|e| anyhow::anyhow!("{iface}: TC egress attach failed: {e}"))?;
    Ok(Attachment {
        iface: iface.into(),
        ifindex,
        ingress,
        egress: if tcx { Egress::Tcx } else { Egress::Clsact },
        reason,
        added_clsact,
    })
}

/// Undoes what the links do not: a clsact qdisc we added. The programs' links themselves are
/// detached when the `Ebpf` that owns them is dropped (or the process exits).
pub fn cleanup(att: &Attachment) {
    if att.added_clsact {
        let _ = std::process::Command::new("tc")
            .args(["qdisc", "del", "dev", &att.iface, "clsact"])
            .status();
    }
}

/// Attaches to every interface, inside `netns` when given (links and fds stay valid in this
/// namespace afterwards), printing what it chose. Stops at the first failure: what was attached
/// so far is in `done` for [`cleanup_all`].
pub fn attach_all(
    ebpf: &mut Ebpf,
    ifaces: &[String],
    netns: Option<&str>,
    mode: AttachMode,
    done: &mut Vec<Attachment>,
) -> anyhow::Result<()> {
    netdev::in_netns(netns, || {
        for iface in ifaces {
            let a = attach(ebpf, iface, mode)?;
            eprintln!("edgeflow: attached {a}");
            done.push(a);
        }
        anyhow::Ok(())
    })?
}

/// [`cleanup`] for each, in the namespace they were attached in.
pub fn cleanup_all(attached: &[Attachment], netns: Option<&str>) {
    let _ = netdev::in_netns(netns, || {
        for a in attached {
            cleanup(a);
        }
    });
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
