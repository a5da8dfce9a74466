//! `/api/devices` (and `/metrics`): each device's latest window, its own presence message,
//! its totals in the range, its gaps, and what about it needs attention.
//!
//! Over everything stored the totals come from the running totals (`device_totals`, a row
//! per device), so the cost follows the number of devices, not the stored history.

use super::{Count, Error, Range, Reader, Result, Row};
use serde::{Serialize, Serializer};
use shared::identity::Presence;
use std::collections::BTreeMap;

/// As the device said it: `online` or `offline`.
fn presence<S: Serializer>(p: &Option<Presence>, s: S) -> std::result::Result<S::Ok, S::Error> {
    p.map(Presence::as_str).serialize(s)
}

/// Where a device is, as the collector sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    /// Reporting.
    Online,
    /// No summary for three windows (at least 30 s), yet no offline message.
    Silent,
    /// It said so, or its Last Will did, after its latest summary.
    Offline,
}

/// Why a device needs a look, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Attention {
    Offline,
    Silent,
    /// Windows it numbered that are not stored (loss on the way).
    Gaps,
    /// Its flow table is being flooded: flows were reclaimed for new ones in the latest
    /// window (`reclaimed` > 0; their packets are in the overflow record). Before
    /// [`Attention::TableFull`], which it implies: it says why the table is full.
    Flooded,
    /// Its flow table overflowed in the latest window.
    TableFull,
    /// Its spool dropped summaries since the agent started.
    SpoolDropping,
    /// Its spool file cannot be written in the latest window (full, read-only or failing
    /// disk): summaries wait in memory and a restart would lose them.
    SpoolFallback,
    /// Its wall clock was stepped in the latest window (window lengths are measured without
    /// the step, but its timestamps moved).
    ClockStepped,
}

impl Attention {
    pub const ALL: [Attention; 8] = [
        Attention::Offline,
        Attention::Silent,
        Attention::Gaps,
        Attention::Flooded,
        Attention::TableFull,
        Attention::SpoolDropping,
        Attention::SpoolFallback,
        Attention::ClockStepped,
    ];
}

/// A device: its latest report, its own presence message, and its totals in the range.
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    /// `site/device`: the identity (a device name alone may repeat across sites).
    pub id: String,
    pub device: String,
    pub site: String,
    pub state: DeviceState,
    /// What needs attention, most severe first; empty when healthy.
    pub attention: Vec<Attention>,
    /// The last presence message (`online`/`offline`), if any.
    #[serde(serialize_with = "presence")]
    pub reported: Option<Presence>,
    pub latest: Option<Latest>,
    /// Window totals in the range.
    pub totals: Count,
    pub overflow: Count,
    pub windows: u64,
    pub flow_records: u64,
    /// Windows the device numbered (`seq`) that are not stored, or not all their parts,
    /// over all its runs stored (not limited to the range): loss anywhere on the way.
    pub gaps: u64,
    /// Agent runs (boot ids) seen.
    pub boots: u64,
}

impl Device {
    fn new(site: String, device: String) -> Device {
        Device {
            id: format!("{site}/{device}"),
            device,
            site,
            state: DeviceState::Online,
            attention: Vec::new(),
            reported: None,
            latest: None,
            totals: Count::default(),
            overflow: Count::default(),
            windows: 0,
            flow_records: 0,
            gaps: 0,
            boots: 0,
        }
    }

    /// Whether the `device` parameter of the API names this device: `site/device`, or a
    /// bare device name (that name in every site).
    pub fn named(&self, name: &str) -> bool {
        self.device == name || self.id == name
    }

    fn judge(&mut self, presence_ms: i64, now_ms: i64) {
        let said_offline_last = self.reported == Some(Presence::Offline)
            && self
                .latest
                .as_ref()
                .is_none_or(|l| presence_ms >= l.received_ms);
        self.state = if said_offline_last {
            DeviceState::Offline
        } else {
            match &self.latest {
                Some(l) if now_ms - l.received_ms > silent_after_ms(l.window_len_ms) => {
                    DeviceState::Silent
                }
                _ => DeviceState::Online,
            }
        };
        let health = self.latest.as_ref().map(|l| &l.health);
        self.attention = Attention::ALL
            .into_iter()
            .filter(|a| match a {
                Attention::Offline => self.state == DeviceState::Offline,
                Attention::Silent => self.state == DeviceState::Silent,
                Attention::Gaps => self.gaps > 0,
                Attention::Flooded => health.is_some_and(|h| h.reclaimed > 0),
                Attention::TableFull => health.is_some_and(|h| h.table_full > 0),
                Attention::SpoolDropping => health.is_some_and(|h| h.spool_dropped > 0),
                Attention::SpoolFallback => health.is_some_and(|h| h.spool_fallback),
                Attention::ClockStepped => health.is_some_and(|h| h.clock_step_ms != 0),
            })
            .collect();
    }
}

/// A device's most recent window (part 0).
#[derive(Debug, Clone, Serialize)]
pub struct Latest {
    /// Hex: it is a random u64.
    pub boot_id: String,
    pub seq: u64,
    pub window_start_ms: i64,
    pub window_len_ms: i64,
    pub received_ms: i64,
    /// The window's end by the agent's clock minus when the collector received it (by its
    /// own): about 0 for a live device with a good clock; negative when the agent's clock is
    /// behind or the window came late (a spool replay), positive when its clock is ahead.
    pub clock_skew_ms: i64,
    pub sample_every: u32,
    pub bytes_per_s: f64,
    pub packets_per_s: f64,
    pub health: Health,
}

#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub packets_seen: u64,
    pub active_flows: u64,
    pub table_capacity: u64,
    /// active / capacity, 0..1.
    pub table_fill: f64,
    pub table_full: u64,
    pub parse_errors: u64,
    pub fragments: u64,
    pub non_ip: u64,
    /// Agent CPU time as a share of one core over the window, percent.
    pub cpu_pct: f64,
    pub rss_kib: u64,
    pub spool_depth: u64,
    pub spool_dropped: u64,
    /// The spool file could not be written; summaries wait in memory.
    pub spool_fallback: bool,
    /// Failed spool file writes since the agent started.
    pub spool_write_errors: u64,
    /// How far the wall clock was stepped in the window (negative: set back), 0 if not.
    pub clock_step_ms: i64,
    /// Wall-clock steps since the agent started.
    pub clock_steps: u64,
    /// Re-attachments to re-created interfaces since the agent started.
    pub reattached: u64,
    /// Packets whose IP header claimed more than the frame held, in the window.
    pub header_excess: u64,
    /// Packets of flows reclaimed under a flood in the window (part of `table_full`).
    pub reclaimed: u64,
}

/// How long without a summary before a device counts as silent.
fn silent_after_ms(window_len_ms: i64) -> i64 {
    (3 * window_len_ms).max(30_000)
}

/// Each device's latest window, through the running totals (as many rows as devices).
pub(crate) const LATEST: &str = "SELECT s.device, s.site, s.boot_id, s.seq, s.window_start_ms,
        s.window_len_ms, s.received_ms, s.sample_every, s.packets, s.bytes, s.packets_seen,
        s.active_flows, s.table_capacity, s.table_full, s.parse_errors, s.fragments, s.non_ip,
        s.cpu_ms, s.rss_kib, s.spool_depth, s.spool_dropped, s.spool_fallback,
        s.spool_write_errors, s.clock_step_ms, s.clock_steps, s.reattached, s.header_excess,
        s.reclaimed
    FROM device_totals t JOIN summaries s ON s.id = t.latest_id";

/// Each device's totals over everything stored: the running totals.
pub(crate) const TOTALS_ALL: &str = "SELECT site, device, packets, bytes, overflow_packets,
        overflow_bytes, windows, flow_records
    FROM device_totals";

/// Each device's totals over the windows in `[$1, $2)`, of the device `$3` names if not NULL
/// (a device's page sums its own windows, not the fleet's).
fn totals_in_range() -> String {
    format!(
        "SELECT site, device,
            SUM(CAST(packets AS DOUBLE PRECISION) * sample_every) AS packets,
            SUM(CAST(bytes AS DOUBLE PRECISION) * sample_every) AS bytes,
            SUM(CAST(overflow_packets AS DOUBLE PRECISION) * sample_every) AS overflow_packets,
            SUM(CAST(overflow_bytes AS DOUBLE PRECISION) * sample_every) AS overflow_bytes,
            COUNT(CASE WHEN part = 0 THEN 1 END) AS windows,
            SUM(CAST(flow_count AS DOUBLE PRECISION)) AS flow_records
         FROM summaries WHERE window_start_ms >= $1 AND window_start_ms < $2 AND {}
         GROUP BY site, device",
        super::device_filter("", 3)
    )
}

const PRESENCE: &str = "SELECT site, device, state, received_ms FROM presence";

/// Gaps and runs per device, from the runs' own bookkeeping (a row per boot).
const GAPS: &str = "SELECT site, device,
        SUM(CAST(max_seq + 1 - base_seq - complete AS DOUBLE PRECISION)) AS gaps,
        COUNT(*) AS boots
    FROM boots GROUP BY site, device";

fn latest(r: &dyn Row) -> Result<Latest> {
    let len = r.i64("window_len_ms")?;
    let secs = len.max(1) as f64 / 1000.0;
    let every = r.i64("sample_every")?;
    let scale = every.max(1) as f64;
    let (packets, bytes) = (r.f64("packets")?, r.f64("bytes")?);
    let active = r.u64("active_flows")?;
    let capacity = r.u64("table_capacity")?;
    let (start, received) = (r.i64("window_start_ms")?, r.i64("received_ms")?);
    Ok(Latest {
        boot_id: format!("{:016x}", r.i64("boot_id")? as u64),
        seq: r.u64("seq")?,
        window_start_ms: start,
        window_len_ms: len,
        received_ms: received,
        clock_skew_ms: start.saturating_add(len).saturating_sub(received),
        sample_every: every.clamp(0, u32::MAX as i64) as u32,
        bytes_per_s: bytes * scale / secs,
        packets_per_s: packets * scale / secs,
        health: Health {
            packets_seen: r.u64("packets_seen")?,
            active_flows: active,
            table_capacity: capacity,
            table_fill: if capacity > 0 {
                active as f64 / capacity as f64
            } else {
                0.0
            },
            table_full: r.u64("table_full")?,
            parse_errors: r.u64("parse_errors")?,
            fragments: r.u64("fragments")?,
            non_ip: r.u64("non_ip")?,
            cpu_pct: r.f64("cpu_ms")? / len.max(1) as f64 * 100.0,
            rss_kib: r.u64("rss_kib")?,
            spool_depth: r.u64("spool_depth")?,
            spool_dropped: r.u64("spool_dropped")?,
            // NULL in windows stored before schema 5 (SQLite) / 4 (PostgreSQL): nothing known.
            spool_fallback: r.opt_i64("spool_fallback")?.unwrap_or(0) != 0,
            spool_write_errors: opt_u64(r, "spool_write_errors")?,
            clock_step_ms: r.opt_i64("clock_step_ms")?.unwrap_or(0),
            clock_steps: opt_u64(r, "clock_steps")?,
            reattached: opt_u64(r, "reattached")?,
            header_excess: opt_u64(r, "header_excess")?,
            reclaimed: opt_u64(r, "reclaimed")?,
        },
    })
}

/// A counter column that is NULL in windows stored before it existed: 0.
pub(crate) fn opt_u64(r: &dyn Row, column: &str) -> Result<u64> {
    Ok(r.opt_i64(column)?.unwrap_or(0).max(0) as u64)
}

fn key(r: &dyn Row) -> Result<(String, String)> {
    Ok((r.text("site")?, r.text("device")?))
}

/// Every device, or with `device` only the one it names (`site/device`, or a bare device name
/// for that name in every site), as the other endpoints narrow. Sorted by id.
pub fn devices(
    db: &mut dyn Reader,
    range: Range,
    now_ms: i64,
    device: Option<&str>,
) -> Result<Vec<Device>> {
    let mut out: BTreeMap<(String, String), Device> = BTreeMap::new();
    db.each(LATEST, &[], &mut |r| {
        let (site, device) = key(r)?;
        let mut d = Device::new(site.clone(), device.clone());
        d.latest = Some(latest(r)?);
        out.insert((site, device), d);
        Ok(())
    })?;
    let (sql, params) = if range.is_all() {
        (TOTALS_ALL.to_string(), vec![])
    } else {
        (
            totals_in_range(),
            vec![range.from.into(), range.to.into(), device.into()],
        )
    };
    db.each(&sql, &params, &mut |r| {
        if let Some(d) = out.get_mut(&key(r)?) {
            d.totals = r.count("packets", "bytes")?;
            d.overflow = r.count("overflow_packets", "overflow_bytes")?;
            d.windows = r.u64("windows")?;
            d.flow_records = r.total("flow_records")?;
        }
        Ok(())
    })?;
    let mut reported_at = BTreeMap::new();
    db.each(PRESENCE, &[], &mut |r| {
        let k = key(r)?;
        let d = out
            .entry(k.clone())
            .or_insert_with(|| Device::new(k.0.clone(), k.1.clone()));
        let state = r.text("state")?;
        d.reported = Some(
            Presence::parse(state.as_bytes()).ok_or_else(|| Error::Column {
                column: "state".into(),
                why: format!("{state:?} is not a presence (online, offline)"),
            })?,
        );
        reported_at.insert(k, r.i64("received_ms")?);
        Ok(())
    })?;
    db.each(GAPS, &[], &mut |r| {
        if let Some(d) = out.get_mut(&key(r)?) {
            d.gaps = r.total("gaps")?;
            d.boots = r.u64("boots")?;
        }
        Ok(())
    })?;
    for (k, d) in out.iter_mut() {
        d.judge(reported_at.get(k).copied().unwrap_or(0), now_ms);
    }
    Ok(out
        .into_values()
        .filter(|d| device.is_none_or(|n| d.named(n)))
        .collect())
}

/// How a device list is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Most severe reason first, then more reasons first, then id.
    #[default]
    Attention,
    /// By id.
    Name,
    /// Latest bytes per second, highest first (devices without a window last).
    Throughput,
}

impl std::str::FromStr for Sort {
    type Err = Error;

    fn from_str(s: &str) -> Result<Sort> {
        super::choose(
            "sort",
            s,
            &[
                ("attention", Sort::Attention),
                ("name", Sort::Name),
                ("throughput", Sort::Throughput),
            ],
        )
    }
}

/// Which devices of a list, in which order.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// A case-insensitive part of the id (`site/device`).
    pub q: Option<String>,
    /// Exactly this site.
    pub site: Option<String>,
    pub sort: Sort,
    pub limit: Option<usize>,
    pub offset: usize,
}

/// Most devices one answer lists.
pub const MAX_LIMIT: usize = 10_000;

impl Listing {
    /// The matching devices, sorted, and how many matched before `offset` and `limit`.
    pub fn apply(&self, devices: Vec<Device>) -> (usize, Vec<Device>) {
        let q = self.q.as_ref().map(|q| q.to_lowercase());
        let mut hits: Vec<Device> = devices
            .into_iter()
            .filter(|d| {
                self.site.as_ref().is_none_or(|s| &d.site == s)
                    && q.as_ref()
                        .is_none_or(|q| d.id.to_lowercase().contains(q.as_str()))
            })
            .collect();
        match self.sort {
            Sort::Name => hits.sort_by(|a, b| a.id.cmp(&b.id)),
            Sort::Attention => hits.sort_by(|a, b| {
                let severity = |d: &Device| d.attention.first().map_or(usize::MAX, |&a| a as usize);
                severity(a)
                    .cmp(&severity(b))
                    .then(b.attention.len().cmp(&a.attention.len()))
                    .then(a.id.cmp(&b.id))
            }),
            Sort::Throughput => hits.sort_by(|a, b| {
                let rate = |d: &Device| d.latest.as_ref().map_or(-1.0, |l| l.bytes_per_s);
                rate(b).total_cmp(&rate(a)).then(a.id.cmp(&b.id))
            }),
        }
        let matching = hits.len();
        let limit = self.limit.unwrap_or(MAX_LIMIT).min(MAX_LIMIT);
        let page = hits.into_iter().skip(self.offset).take(limit).collect();
        (matching, page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::testdb::{summary, TestDb};

    #[test]
    fn one_name_in_two_sites_is_two_devices() {
        let mut other = summary("d", 0, 0, 10_000, 500, vec![]);
        other.site = "t".try_into().unwrap();
        let mut t = TestDb::new(&[
            summary("d", 0, 0, 10_000, 1_000, vec![]),
            summary("d", 2, 10_000, 10_000, 1_000, vec![]),
            other,
        ]);
        let d = devices(t.db(), Range::ALL, 0, None).unwrap();
        let got: Vec<_> = d
            .iter()
            .map(|d| (d.id.as_str(), d.totals.bytes, d.windows, d.gaps))
            .collect();
        assert_eq!(got, vec![("s/d", 2_000, 2, 1), ("t/d", 500, 1, 0)]);
        assert_eq!(d[0].attention, [Attention::Gaps]);
        // `device` narrows as on the other endpoints: a bare name in every site, or one device.
        let mut ids = |n| -> Vec<String> {
            devices(t.db(), Range::ALL, 0, Some(n))
                .unwrap()
                .into_iter()
                .map(|d| d.id)
                .collect()
        };
        assert_eq!(ids("d"), ["s/d", "t/d"]);
        assert_eq!(ids("t/d"), ["t/d"]);
        assert!(ids("e").is_empty() && ids("s").is_empty());
        // The same over a range (summed from the windows, not the running totals).
        let r = Range { from: 0, to: 5_000 };
        let d = devices(t.db(), r, 0, None).unwrap();
        let got: Vec<_> = d.iter().map(|d| (d.totals.bytes, d.windows)).collect();
        assert_eq!(got, [(1_000, 1), (500, 1)]);
        let one = devices(t.db(), r, 0, Some("t/d")).unwrap();
        assert_eq!((one.len(), one[0].totals.bytes), (1, 500));
        assert_eq!(devices(t.db(), r, 0, Some("d")).unwrap().len(), 2);
    }

    #[test]
    fn state_from_presence_and_recency() {
        let now = 1_000_000_000;
        let mut t = TestDb::new(&[summary("d", 0, 0, 10_000, 1_000, vec![])]);
        // Received at 0: long ago, and no presence message: silent.
        let d = devices(t.db(), Range::ALL, now, None).unwrap();
        assert_eq!(
            (d[0].state, d[0].totals.bytes),
            (DeviceState::Silent, 1_000)
        );
        assert_eq!(d[0].attention, [Attention::Silent]);
        let d = devices(t.db(), Range::ALL, 5_000, None).unwrap();
        assert_eq!(d[0].state, DeviceState::Online);
        assert!(d[0].attention.is_empty());
    }

    fn dev(id: &str, attention: &[Attention], rate: Option<f64>) -> Device {
        let (site, name) = id.split_once('/').unwrap();
        let mut d = Device::new(site.into(), name.into());
        d.attention = attention.to_vec();
        d.latest = rate.map(|r| Latest {
            boot_id: String::new(),
            seq: 0,
            window_start_ms: 0,
            window_len_ms: 1,
            received_ms: 0,
            clock_skew_ms: 0,
            sample_every: 1,
            bytes_per_s: r,
            packets_per_s: 0.0,
            health: Health {
                packets_seen: 0,
                active_flows: 0,
                table_capacity: 0,
                table_fill: 0.0,
                table_full: 0,
                parse_errors: 0,
                fragments: 0,
                non_ip: 0,
                cpu_pct: 0.0,
                rss_kib: 0,
                spool_depth: 0,
                spool_dropped: 0,
                spool_fallback: false,
                spool_write_errors: 0,
                clock_step_ms: 0,
                clock_steps: 0,
                reattached: 0,
                header_excess: 0,
                reclaimed: 0,
            },
        });
        d
    }

    #[test]
    fn listing_filters_sorts_and_pages() {
        use Attention::*;
        let all = vec![
            dev("a/ok", &[], Some(5.0)),
            dev("a/gaps", &[Gaps], Some(50.0)),
            dev("b/gaps-full", &[Gaps, TableFull], None),
            dev("b/Off", &[Offline], Some(1.0)),
            dev("c/silent", &[Silent, SpoolDropping], Some(2.0)),
        ];
        let ids = |l: &Listing| -> (usize, Vec<String>) {
            let (n, d) = l.apply(all.clone());
            (n, d.into_iter().map(|d| d.id).collect())
        };
        let by_attention = ids(&Listing::default());
        assert_eq!(
            by_attention.1,
            ["b/Off", "c/silent", "b/gaps-full", "a/gaps", "a/ok"]
        );
        let by_rate = Listing {
            sort: Sort::Throughput,
            ..Default::default()
        };
        assert_eq!(
            ids(&by_rate).1,
            ["a/gaps", "a/ok", "c/silent", "b/Off", "b/gaps-full"]
        );
        let q = Listing {
            q: Some("OFF".into()),
            ..Default::default()
        };
        assert_eq!(ids(&q), (1, vec!["b/Off".to_string()]));
        let page = Listing {
            site: Some("b".into()),
            sort: Sort::Name,
            offset: 1,
            limit: Some(5),
            ..Default::default()
        };
        assert_eq!(ids(&page), (2, vec!["b/gaps-full".to_string()]));
        assert!("loudest".parse::<Sort>().is_err());
    }
}
