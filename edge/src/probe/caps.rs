//! Checks the capabilities the agent needs before it tries to load anything, so a missing one
//! is named instead of surfacing as a bare EPERM; and gives up what it no longer needs once
//! the programs are loaded and attached ([`drop_to`]).
//!
//! After attaching, the maps are read and the links held through file descriptors, which
//! need no capability. CAP_BPF and CAP_PERFMON are only for loading (programs, maps), and
//! CAP_SYS_ADMIN only for entering `--netns` (done once, by a thread that stays there). What
//! may be kept is CAP_NET_ADMIN: to attach again to an interface made again under a watched
//! name, and, on kernels without TCX/XDP links, to delete our clsact filters and netlink XDP
//! program when stopping (links go when their fd closes).

use crate::UsageError;

pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// What the agent needs: attach to interfaces, load programs and maps, read kernel time.
pub const REQUIRED: &[(u32, &str)] = &[
    (CAP_BPF, "CAP_BPF"),
    (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
    (CAP_PERFMON, "CAP_PERFMON"),
];

/// Gives up every capability but `keep` (a bit mask) in the calling thread: permitted and
/// effective sets reduced to `keep`, inheritable and ambient sets emptied (a child gets none
/// of them), and the bounding set reduced to `keep` where allowed (it needs CAP_SETPCAP,
/// which a root agent has and the shipped unit's does not: there systemd's
/// CapabilityBoundingSet already bounds it). Capabilities are per thread: call it on every
/// thread that lives on (see `netdev::in_netns`), and before starting new ones, which
/// inherit the caller's sets.
pub fn drop_to(keep: u64) -> std::io::Result<()> {
    let os = std::io::Error::last_os_error;
    // SAFETY: prctl with integer arguments only.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(os());
    }
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    for cap in (0..=last).filter(|c| keep & (1 << c) == 0) {
        // SAFETY: as above. EPERM without CAP_SETPCAP: the bounding set stays as it was.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let half = |shift: u32| Data {
        effective: (keep >> shift) as u32,
        permitted: (keep >> shift) as u32,
        inheritable: 0,
    };
    let data = [half(0), half(32)];
    // SAFETY: a v3 header and two data structs, as capset(2) wants; pid 0 is this thread.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(os());
    }
    Ok(())
}

/// The names of the capabilities in mask `caps` that this module knows.
pub fn names(caps: u64) -> Vec<&'static str> {
    [
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_BPF, "CAP_BPF"),
    ]
    .iter()
    .filter(|(c, _)| caps & (1 << c) != 0)
    .map(|(_, n)| *n)
    .collect()
}

/// The effective capability set of this process, from /proc/self/status.
pub fn effective() -> std::io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    parse_cap_eff(&status)
        .ok_or_else(|| std::io::Error::other("no CapEff line in /proc/self/status"))
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

/// The required capabilities missing from `eff`. CAP_SYS_ADMIN stands in for CAP_BPF and
/// CAP_PERFMON, as the kernel allows.
pub fn missing(eff: u64) -> Vec<&'static str> {
    let has = |c: u32| eff & (1u64 << c) != 0;
    REQUIRED
        .iter()
        .filter(|(c, _)| !(has(*c) || (*c != CAP_NET_ADMIN && has(CAP_SYS_ADMIN))))
        .map(|(_, name)| *name)
        .collect()
}

/// Fails with a usage error naming each missing capability.
pub fn check() -> Result<(), UsageError> {
    let eff = effective()
        .map_err(|e| UsageError::MissingCapability(format!("reading capabilities: {e}")))?;
    let miss = missing(eff);
    if miss.is_empty() {
        Ok(())
    } else {
        Err(UsageError::MissingCapability(format!(
            "missing capability {}: run as root, or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON \
             (see configs/edgeflow.service)",
            miss.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cap_eff() {
        let s = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(s), Some(0x1ff_ffff_ffff));
    }

    #[test]
    fn names_what_is_missing() {
        let all = (1u64 << CAP_BPF) | (1 << CAP_NET_ADMIN) | (1 << CAP_PERFMON);
        assert!(missing(all).is_empty());
        assert_eq!(missing(all & !(1 << CAP_PERFMON)), vec!["CAP_PERFMON"]);
        assert_eq!(missing(0), vec!["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"]);
        // SYS_ADMIN covers BPF and PERFMON but not NET_ADMIN.
        assert_eq!(missing(1 << CAP_SYS_ADMIN), vec!["CAP_NET_ADMIN"]);
    }
}
