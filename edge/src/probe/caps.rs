//! Checks the capabilities the agent needs before it tries to load anything, so a missing one
//! is named instead of surfacing as a bare EPERM.

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
