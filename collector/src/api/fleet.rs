//! `/api/fleet`: the fleet at a glance — how many devices in which state, how many need
//! attention and why, per site, and the traffic they counted in the range.

use super::devices::{Attention, Device, DeviceState};
use super::Count;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Fleet {
    pub devices: u64,
    pub states: States,
    pub attention: AttentionCounts,
    /// Sorted by site.
    pub sites: Vec<Site>,
    /// Window totals in the range, all devices.
    pub totals: Count,
    /// Windows missing, all devices (their `gaps` added up).
    pub gaps: u64,
    /// Throughput now: the online devices' latest windows added up.
    pub now: Now,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Now {
    pub bytes_per_s: f64,
    pub packets_per_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct States {
    pub online: u64,
    pub silent: u64,
    pub offline: u64,
}

/// Devices with each reason, and with any.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct AttentionCounts {
    pub offline: u64,
    pub silent: u64,
    pub gaps: u64,
    pub flooded: u64,
    pub table_full: u64,
    pub spool_dropping: u64,
    pub spool_fallback: u64,
    pub clock_stepped: u64,
    pub any: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Site {
    pub site: String,
    pub devices: u64,
    /// Devices of the site that need attention.
    pub attention: u64,
}

/// Counts `devices` (already narrowed to a site if one was asked for).
pub fn fleet(devices: &[Device]) -> Fleet {
    let mut f = Fleet::default();
    let mut sites: BTreeMap<&str, Site> = BTreeMap::new();
    for d in devices {
        f.devices += 1;
        *match d.state {
            DeviceState::Online => &mut f.states.online,
            DeviceState::Silent => &mut f.states.silent,
            DeviceState::Offline => &mut f.states.offline,
        } += 1;
        for a in &d.attention {
            *match a {
                Attention::Offline => &mut f.attention.offline,
                Attention::Silent => &mut f.attention.silent,
                Attention::Gaps => &mut f.attention.gaps,
                Attention::Flooded => &mut f.attention.flooded,
                Attention::TableFull => &mut f.attention.table_full,
                Attention::SpoolDropping => &mut f.attention.spool_dropping,
                Attention::SpoolFallback => &mut f.attention.spool_fallback,
                Attention::ClockStepped => &mut f.attention.clock_stepped,
            } += 1;
        }
        let needs = u64::from(!d.attention.is_empty());
        f.attention.any += needs;
        let s = sites.entry(&d.site).or_insert_with(|| Site {
            site: d.site.clone(),
            ..Site::default()
        });
        s.devices += 1;
        s.attention += needs;
        f.totals.add(&d.totals);
        f.gaps += d.gaps;
        if let (DeviceState::Online, Some(l)) = (d.state, &d.latest) {
            f.now.bytes_per_s += l.bytes_per_s;
            f.now.packets_per_s += l.packets_per_s;
        }
    }
    f.sites = sites.into_values().collect();
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        devices::devices,
        testdb::{summary, TestDb},
        Range,
    };

    #[test]
    fn counts_states_reasons_and_sites() {
        let mut far = summary("b", 0, 0, 10_000, 500, vec![]);
        far.site = "t".try_into().unwrap();
        far.health.table_full = 3;
        let mut t = TestDb::new(&[
            summary("a", 0, 0, 10_000, 1_000, vec![]),
            summary("a", 2, 10_000, 10_000, 1_000, vec![]),
            far,
        ]);
        // Received at 0; at 20 s both are online.
        let f = fleet(&devices(t.db(), Range::ALL, 20_000, None).unwrap());
        assert_eq!(f.devices, 2);
        assert_eq!(
            f.states,
            States {
                online: 2,
                silent: 0,
                offline: 0
            }
        );
        assert_eq!(
            f.attention,
            AttentionCounts {
                gaps: 1,
                table_full: 1,
                any: 2,
                ..Default::default()
            }
        );
        let sites: Vec<_> = f
            .sites
            .iter()
            .map(|s| (s.site.as_str(), s.devices, s.attention))
            .collect();
        assert_eq!(sites, [("s", 1, 1), ("t", 1, 1)]);
        assert_eq!(f.totals.bytes, 2_500);
        assert_eq!(f.gaps, 1);
        // Latest windows: 1,000 B of s/a, 500 B of t/b, 10 s each.
        assert_eq!(f.now.bytes_per_s, 150.0);
        // Much later both are silent.
        let f = fleet(&devices(t.db(), Range::ALL, 1 << 40, None).unwrap());
        assert_eq!(
            (f.states.silent, f.attention.silent, f.attention.any),
            (2, 2, 2)
        );
    }
}
