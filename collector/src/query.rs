//! The read model behind the JSON API and the dashboard.
//!
//! Counts are estimates of what crossed the wire: stored counts times the summary's
//! `sample_every` (1 unless the agent samples). Sums use SQLite's `TOTAL` (a float that never
//! overflows, exact below 2^53) so one absurd record cannot break a query.

use rusqlite::{params, Connection};
use serde::Serialize;
use std::collections::BTreeMap;

pub type Result<T> = std::result::Result<T, rusqlite::Error>;

/// A time range of window starts, `[from, to)` in ms since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Range {
    pub from: i64,
    pub to: i64,
}

impl Range {
    pub const ALL: Range = Range {
        from: 0,
        to: i64::MAX,
    };
}

/// Packets and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

fn total(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v as u64
    } else {
        0
    }
}

/// A device: its latest report, its own presence message, and its totals in the range.
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    /// `site/device`: the identity (a device name alone may repeat across sites).
    pub id: String,
    pub device: String,
    pub site: String,
    /// `online`, `offline` (it said so, or its Last Will did), or `silent` (no summary for
    /// three windows, yet no offline message).
    pub state: &'static str,
    /// The last presence message (`online`/`offline`), if any.
    pub reported: Option<String>,
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
            state: "online",
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
}

/// How long without a summary before a device counts as silent.
fn silent_after_ms(window_len_ms: i64) -> i64 {
    (3 * window_len_ms).max(30_000)
}

/// Each device's latest window, through the running totals (as many rows as devices).
const LATEST: &str = "SELECT s.device, s.site, s.boot_id, s.seq, s.window_start_ms,
        s.window_len_ms, s.received_ms, s.sample_every, s.packets, s.bytes, s.packets_seen,
        s.active_flows, s.table_capacity, s.table_full, s.parse_errors, s.fragments, s.non_ip,
        s.cpu_ms, s.rss_kib, s.spool_depth, s.spool_dropped
    FROM device_totals t JOIN summaries s ON s.id = t.latest_id
    ORDER BY s.id";

/// Each device's totals over everything stored: the running totals.
const TOTALS_ALL: &str = "SELECT site, device, packets, bytes, overflow_packets, overflow_bytes,
        windows, flow_records
    FROM device_totals WHERE ?1 <= 0 AND ?2 > 0";

/// What the store holds: the running totals and two index lookups.
const STORED: &str = "SELECT (SELECT TOTAL(summaries) FROM device_totals),
        (SELECT TOTAL(flow_records) FROM device_totals),
        (SELECT MIN(window_start_ms) FROM summaries),
        (SELECT MAX(window_start_ms) FROM summaries)";

/// Every device, or with `device` only the one it names (`site/device`, or a bare device name
/// for that name in every site), as the other endpoints narrow.
pub fn devices(
    conn: &Connection,
    range: Range,
    now_ms: i64,
    device: Option<&str>,
) -> Result<Vec<Device>> {
    let mut out: BTreeMap<(String, String), Device> = BTreeMap::new();
    let mut latest = conn.prepare_cached(LATEST)?;
    let rows = latest.query_map([], |r| {
        let len: i64 = r.get(5)?;
        let secs = (len.max(1)) as f64 / 1000.0;
        let every: i64 = r.get(7)?;
        let scale = every.max(1) as f64;
        let (packets, bytes): (i64, i64) = (r.get(8)?, r.get(9)?);
        let active: i64 = r.get(11)?;
        let capacity: i64 = r.get(12)?;
        let cpu_ms: i64 = r.get(17)?;
        let (start, received): (i64, i64) = (r.get(4)?, r.get(6)?);
        let latest = Latest {
            boot_id: format!("{:016x}", r.get::<_, i64>(2)? as u64),
            seq: r.get::<_, i64>(3)? as u64,
            window_start_ms: start,
            window_len_ms: len,
            received_ms: received,
            clock_skew_ms: start.saturating_add(len).saturating_sub(received),
            sample_every: every as u32,
            bytes_per_s: bytes as f64 * scale / secs,
            packets_per_s: packets as f64 * scale / secs,
            health: Health {
                packets_seen: r.get::<_, i64>(10)? as u64,
                active_flows: active as u64,
                table_capacity: capacity as u64,
                table_fill: if capacity > 0 {
                    active as f64 / capacity as f64
                } else {
                    0.0
                },
                table_full: r.get::<_, i64>(13)? as u64,
                parse_errors: r.get::<_, i64>(14)? as u64,
                fragments: r.get::<_, i64>(15)? as u64,
                non_ip: r.get::<_, i64>(16)? as u64,
                cpu_pct: cpu_ms as f64 / len.max(1) as f64 * 100.0,
                rss_kib: r.get::<_, i64>(18)? as u64,
                spool_depth: r.get::<_, i64>(19)? as u64,
                spool_dropped: r.get::<_, i64>(20)? as u64,
            },
        };
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, latest))
    })?;
    for row in rows {
        let (device, site, latest) = row?;
        let mut d = Device::new(site.clone(), device.clone());
        d.latest = Some(latest);
        out.insert((site, device), d);
    }
    // Over everything stored: the running totals (as many rows as devices); otherwise the
    // windows in the range.
    let mut sums = if range.from <= 0 && range.to == i64::MAX {
        conn.prepare_cached(TOTALS_ALL)?
    } else {
        conn.prepare_cached(
            "SELECT site, device, TOTAL(packets * sample_every), TOTAL(bytes * sample_every),
                    TOTAL(overflow_packets * sample_every), TOTAL(overflow_bytes * sample_every),
                    SUM(part = 0), TOTAL(flow_count)
             FROM summaries WHERE window_start_ms >= ?1 AND window_start_ms < ?2
             GROUP BY site, device",
        )?
    };
    let rows = sums.query_map([range.from, range.to], |r| {
        Ok((
            (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
            Count {
                packets: total(r.get(2)?),
                bytes: total(r.get(3)?),
            },
            Count {
                packets: total(r.get(4)?),
                bytes: total(r.get(5)?),
            },
            r.get::<_, i64>(6)? as u64,
            total(r.get(7)?),
        ))
    })?;
    for row in rows {
        let (key, totals, overflow, windows, flow_records) = row?;
        if let Some(d) = out.get_mut(&key) {
            d.totals = totals;
            d.overflow = overflow;
            d.windows = windows;
            d.flow_records = flow_records;
        }
    }
    let mut presence =
        conn.prepare_cached("SELECT site, device, state, received_ms FROM presence")?;
    let rows = presence.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut reported_at = BTreeMap::new();
    for row in rows {
        let (site, device, state, at) = row?;
        let key = (site, device);
        let d = out
            .entry(key.clone())
            .or_insert_with(|| Device::new(key.0.clone(), key.1.clone()));
        d.reported = Some(state);
        reported_at.insert(key, at);
    }
    let mut gaps = conn.prepare_cached(
        "SELECT site, device, TOTAL(max_seq + 1 - base_seq - complete), COUNT(*)
         FROM boots GROUP BY site, device",
    )?;
    let rows = gaps.query_map([], |r| {
        Ok((
            (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
            total(r.get(2)?),
            r.get::<_, i64>(3)? as u64,
        ))
    })?;
    for row in rows {
        let (key, gaps, boots) = row?;
        if let Some(d) = out.get_mut(&key) {
            d.gaps = gaps;
            d.boots = boots;
        }
    }
    for ((site, device), d) in out.iter_mut() {
        let at = reported_at
            .get(&(site.clone(), device.clone()))
            .copied()
            .unwrap_or(0);
        let said_offline_last = d.reported.as_deref() == Some("offline")
            && d.latest.as_ref().is_none_or(|l| at >= l.received_ms);
        d.state = if said_offline_last {
            "offline"
        } else {
            match &d.latest {
                Some(l) if now_ms - l.received_ms > silent_after_ms(l.window_len_ms) => "silent",
                _ => "online",
            }
        };
    }
    Ok(out
        .into_values()
        .filter(|d| device.is_none_or(|n| d.device == n || d.id == n))
        .collect())
}

/// Bytes/s and packets/s per device over time.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub from: i64,
    pub to: i64,
    pub step_ms: i64,
    /// Bucket starts.
    pub t: Vec<i64>,
    pub devices: Vec<DeviceSeries>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceSeries {
    /// `site/device`.
    pub id: String,
    pub site: String,
    pub device: String,
    /// `None` where no window of the device covers the bucket (not reported, or not yet).
    pub bytes_per_s: Vec<Option<f64>>,
    pub packets_per_s: Vec<Option<f64>>,
}

/// Most buckets a series has; a longer range gets a wider step.
pub const MAX_BUCKETS: i64 = 1000;
/// Most points (devices × buckets) one series answer holds; more devices get fewer buckets.
pub const MAX_SERIES_POINTS: i64 = 100_000;
/// Longest window a series looks back for (one that started before the range may reach into it).
const MAX_WINDOW_MS: i64 = 3_600_000;

/// Each window's counts are spread over the buckets it overlaps in proportion to the
/// overlap, and a bucket's rate is its counts over the time its windows cover, so a bucket
/// only half covered yet (the current one) is not shown as a drop. The step is at least the
/// longest window seen (finer buckets would only repeat a window's average), capped so the
/// range keeps 20 buckets, and wide enough for [`MAX_BUCKETS`] and [`MAX_SERIES_POINTS`].
/// `range` must have `0 <= from < to`; `step_ms` must be `>= 0` (0: automatic).
pub fn series(
    conn: &Connection,
    range: Range,
    step_ms: i64,
    device: Option<&str>,
) -> Result<Series> {
    if range.from < 0 || range.from >= range.to || step_ms < 0 {
        return Err(rusqlite::Error::ToSqlConversionFailure(
            "a series needs 0 <= from < to and a step >= 0".into(),
        ));
    }
    let since = range.from.saturating_sub(MAX_WINDOW_MS);
    let (longest, devices): (Option<i64>, i64) = conn
        .prepare_cached(
            "SELECT MAX(window_len_ms), COUNT(DISTINCT site || '/' || device) FROM summaries
             WHERE part = 0 AND window_start_ms >= ?1 AND window_start_ms < ?2
               AND (?3 IS NULL OR device = ?3 OR site || '/' || device = ?3)",
        )?
        .query_row(params![since, range.to, device], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    // Bucket arithmetic in i128: the range may be as wide as i64 allows.
    let (from, span) = (i128::from(range.from), i128::from(range.to - range.from));
    let buckets = (MAX_SERIES_POINTS / devices.max(1)).clamp(1, MAX_BUCKETS) as i128;
    let longest = i128::from(longest.unwrap_or(1).max(1)).min(span / 20);
    let step = i128::from(step_ms)
        .max(longest)
        .max(1)
        .max((span + buckets - 1) / buckets);
    let n = ((span + step - 1) / step) as usize;
    // Per device and bucket: bytes, packets, milliseconds covered.
    let mut per: BTreeMap<(String, String), Vec<[f64; 3]>> = BTreeMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT site, device, window_start_ms, window_len_ms, packets * sample_every,
                bytes * sample_every
         FROM summaries
         WHERE part = 0 AND window_start_ms >= ?1 AND window_start_ms < ?2
           AND (?3 IS NULL OR device = ?3 OR site || '/' || device = ?3)",
    )?;
    let mut rows = stmt.query(params![since, range.to, device])?;
    while let Some(r) = rows.next()? {
        let (start, len): (i64, i64) = (r.get(2)?, r.get(3)?);
        let (packets, bytes): (f64, f64) = (r.get(4)?, r.get(5)?);
        let (start, len) = (i128::from(start), i128::from(len.max(1)));
        let (lo, hi) = (start.max(from), (start + len).min(from + span));
        if lo >= hi {
            continue;
        }
        let buckets = per
            .entry((r.get(0)?, r.get(1)?))
            .or_insert_with(|| vec![[0.0; 3]; n]);
        // The buckets this window overlaps, no more (a window never spans more than 21).
        for i in (lo - from) / step..=(hi - 1 - from) / step {
            let b_lo = (from + i * step).max(lo);
            let b_hi = (from + (i + 1) * step).min(hi);
            let share = (b_hi - b_lo) as f64 / len as f64;
            if let Some(b) = buckets.get_mut(i as usize) {
                b[0] += bytes * share;
                b[1] += packets * share;
                b[2] += (b_hi - b_lo) as f64;
            }
        }
    }
    let rate = |v: f64, covered: f64| (covered > 0.0).then(|| v / (covered / 1000.0));
    Ok(Series {
        from: range.from,
        to: range.to,
        step_ms: step as i64,
        t: (0..n as i128).map(|i| (from + i * step) as i64).collect(),
        devices: per
            .into_iter()
            .map(|((site, device), b)| DeviceSeries {
                id: format!("{site}/{device}"),
                site,
                device,
                bytes_per_s: b.iter().map(|x| rate(x[0], x[2])).collect(),
                packets_per_s: b.iter().map(|x| rate(x[1], x[2])).collect(),
            })
            .collect(),
    })
}

/// An address and what it sent and received.
#[derive(Debug, Clone, Serialize)]
pub struct Talker {
    pub addr: String,
    pub sent: Count,
    pub received: Count,
    pub bytes: u64,
}

/// The flow records of the windows in `[?1, ?2)`, of device ?3 if not NULL.
const FLOWS_IN_RANGE: &str = "summaries s JOIN flows f ON f.summary_id = s.id
    WHERE s.window_start_ms >= ?1 AND s.window_start_ms < ?2 AND (?3 IS NULL OR s.device = ?3 OR s.site || '/' || s.device = ?3)";

pub fn top_talkers(
    conn: &Connection,
    range: Range,
    device: Option<&str>,
    limit: u32,
) -> Result<Vec<Talker>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT addr, TOTAL(tx_p), TOTAL(tx_b), TOTAL(rx_p), TOTAL(rx_b) FROM (
            SELECT f.src AS addr, f.fwd_packets * s.sample_every AS tx_p,
                   f.fwd_bytes * s.sample_every AS tx_b, f.rev_packets * s.sample_every AS rx_p,
                   f.rev_bytes * s.sample_every AS rx_b
            FROM {FLOWS_IN_RANGE}
            UNION ALL
            SELECT f.dst, f.rev_packets * s.sample_every, f.rev_bytes * s.sample_every,
                   f.fwd_packets * s.sample_every, f.fwd_bytes * s.sample_every
            FROM {FLOWS_IN_RANGE})
         GROUP BY addr ORDER BY TOTAL(tx_b) + TOTAL(rx_b) DESC, addr LIMIT ?4"
    ))?;
    let rows = stmt.query_map(params![range.from, range.to, device, limit], |r| {
        let sent = Count {
            packets: total(r.get(1)?),
            bytes: total(r.get(2)?),
        };
        let received = Count {
            packets: total(r.get(3)?),
            bytes: total(r.get(4)?),
        };
        Ok(Talker {
            addr: r.get(0)?,
            bytes: sent.bytes + received.bytes,
            sent,
            received,
        })
    })?;
    rows.collect()
}

/// Two addresses, initiator → responder, over all their flows.
#[derive(Debug, Clone, Serialize)]
pub struct Conversation {
    pub src: String,
    pub dst: String,
    pub fwd: Count,
    pub rev: Count,
    pub bytes: u64,
    /// Distinct (protocol, ports, VLAN, interface) flows between them.
    pub flows: u64,
}

pub fn top_conversations(
    conn: &Connection,
    range: Range,
    device: Option<&str>,
    limit: u32,
) -> Result<Vec<Conversation>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT f.src, f.dst, TOTAL(f.fwd_packets * s.sample_every),
                TOTAL(f.fwd_bytes * s.sample_every), TOTAL(f.rev_packets * s.sample_every),
                TOTAL(f.rev_bytes * s.sample_every),
                COUNT(DISTINCT f.proto || ' ' || f.src_port || ' ' || f.dst_port || ' ' || f.vlan
                               || ' ' || f.vlan_inner || ' ' || f.ifindex || ' ' || s.site || '/' || s.device)
         FROM {FLOWS_IN_RANGE}
         GROUP BY f.src, f.dst
         ORDER BY TOTAL((f.fwd_bytes + f.rev_bytes) * s.sample_every) DESC, f.src, f.dst
         LIMIT ?4"
    ))?;
    let rows = stmt.query_map(params![range.from, range.to, device, limit], |r| {
        let fwd = Count {
            packets: total(r.get(2)?),
            bytes: total(r.get(3)?),
        };
        let rev = Count {
            packets: total(r.get(4)?),
            bytes: total(r.get(5)?),
        };
        Ok(Conversation {
            src: r.get(0)?,
            dst: r.get(1)?,
            bytes: fwd.bytes + rev.bytes,
            fwd,
            rev,
            flows: r.get::<_, i64>(6)? as u64,
        })
    })?;
    rows.collect()
}

/// What to show of the flow table.
#[derive(Debug, Clone, Default)]
pub struct FlowFilter {
    pub device: Option<String>,
    /// Matches any part of either address.
    pub addr: Option<String>,
    /// Either port (for ICMP: the type or code).
    pub port: Option<u16>,
    pub proto: Option<u8>,
    pub limit: u32,
}

/// One flow (a conversation's 5-tuple plus VLANs and interface) summed over the range.
#[derive(Debug, Clone, Serialize)]
pub struct Flow {
    /// `site/device` that reported it.
    pub device: String,
    pub proto: u8,
    pub src: String,
    pub src_port: u16,
    pub dst: String,
    pub dst_port: u16,
    pub vlan: u16,
    pub vlan_inner: u16,
    pub ifindex: u32,
    pub fwd: Count,
    pub rev: Count,
    pub bytes: u64,
    pub packets: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// Windows this flow appeared in.
    pub windows: u64,
    pub rtt: Option<FlowRtt>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlowRtt {
    pub min_us: u64,
    /// Sample-weighted mean of the windows' smoothed RTTs.
    pub avg_us: u64,
    pub max_us: u64,
    pub samples: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Flows {
    /// Flows that match the filter (the list holds the first `limit` by bytes).
    pub matching: u64,
    pub flows: Vec<Flow>,
}

const FLOW_FILTER: &str = "AND (?4 IS NULL OR instr(f.src, ?4) > 0 OR instr(f.dst, ?4) > 0)
    AND (?5 IS NULL OR f.src_port = ?5 OR f.dst_port = ?5)
    AND (?6 IS NULL OR f.proto = ?6)";
const FLOW_KEY: &str = "s.site || '/' || s.device, f.proto, f.src, f.src_port, f.dst, f.dst_port,
    f.vlan, f.vlan_inner, f.ifindex";

pub fn flows(conn: &Connection, range: Range, f: &FlowFilter) -> Result<Flows> {
    let args = params![range.from, range.to, f.device, f.addr, f.port, f.proto, f.limit];
    let matching: i64 = conn
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM {FLOWS_IN_RANGE} {FLOW_FILTER} GROUP BY {FLOW_KEY})"
        ))?
        .query_row(&args[..6], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {FLOW_KEY},
                TOTAL(f.fwd_packets * s.sample_every), TOTAL(f.fwd_bytes * s.sample_every),
                TOTAL(f.rev_packets * s.sample_every), TOTAL(f.rev_bytes * s.sample_every),
                MIN(f.first_seen_ms), MAX(f.last_seen_ms), COUNT(*),
                MIN(f.rtt_min_us), MAX(f.rtt_max_us), TOTAL(f.rtt_avg_us * f.rtt_samples),
                TOTAL(f.rtt_samples)
         FROM {FLOWS_IN_RANGE} {FLOW_FILTER} GROUP BY {FLOW_KEY}
         ORDER BY TOTAL((f.fwd_bytes + f.rev_bytes) * s.sample_every) DESC, {FLOW_KEY}
         LIMIT ?7"
    ))?;
    let rows = stmt.query_map(args, |r| {
        let fwd = Count {
            packets: total(r.get(9)?),
            bytes: total(r.get(10)?),
        };
        let rev = Count {
            packets: total(r.get(11)?),
            bytes: total(r.get(12)?),
        };
        let samples = total(r.get(19)?);
        let rtt = match (r.get::<_, Option<i64>>(16)?, r.get::<_, Option<i64>>(17)?) {
            (Some(min), Some(max)) if samples > 0 => Some(FlowRtt {
                min_us: min as u64,
                avg_us: (r.get::<_, f64>(18)? / samples as f64).round() as u64,
                max_us: max as u64,
                samples,
            }),
            _ => None,
        };
        Ok(Flow {
            device: r.get(0)?,
            proto: r.get(1)?,
            src: r.get(2)?,
            src_port: r.get(3)?,
            dst: r.get(4)?,
            dst_port: r.get(5)?,
            vlan: r.get(6)?,
            vlan_inner: r.get(7)?,
            ifindex: r.get(8)?,
            bytes: fwd.bytes + rev.bytes,
            packets: fwd.packets + rev.packets,
            fwd,
            rev,
            first_seen_ms: r.get(13)?,
            last_seen_ms: r.get(14)?,
            windows: r.get::<_, i64>(15)? as u64,
            rtt,
        })
    })?;
    Ok(Flows {
        matching: matching as u64,
        flows: rows.collect::<Result<_>>()?,
    })
}

/// The RTT distribution: the windows' log2 histograms added up.
#[derive(Debug, Clone, Serialize)]
pub struct RttDistribution {
    pub samples: u64,
    /// Bucket i holds samples in [lo_us, hi_us) (the last one: everything from lo_us up).
    pub buckets: Vec<RttBucket>,
    /// Upper bucket bounds at these quantiles (None without samples).
    pub p50_us: Option<u64>,
    pub p90_us: Option<u64>,
    pub p99_us: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RttBucket {
    pub lo_us: u64,
    pub hi_us: Option<u64>,
    pub count: u64,
}

pub fn rtt(conn: &Connection, range: Range, device: Option<&str>) -> Result<RttDistribution> {
    const N: usize = shared::wire::RTT_BUCKETS;
    let mut counts = [0u64; N];
    let mut stmt = conn.prepare_cached(
        "SELECT rtt_hist FROM summaries
         WHERE window_start_ms >= ?1 AND window_start_ms < ?2 AND (?3 IS NULL OR device = ?3 OR site || '/' || device = ?3)
           AND rtt_hist IS NOT NULL",
    )?;
    let rows = stmt.query_map(params![range.from, range.to, device], |r| {
        r.get::<_, String>(0)
    })?;
    for row in rows {
        for (i, v) in row?.split(',').enumerate().take(N) {
            counts[i] = counts[i].saturating_add(v.parse().unwrap_or(0));
        }
    }
    let samples: u64 = counts.iter().sum();
    let quantile = |q: f64| -> Option<u64> {
        if samples == 0 {
            return None;
        }
        let target = (q * samples as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        counts.iter().enumerate().find_map(|(i, c)| {
            seen += c;
            (seen >= target).then_some(1u64 << (i + 1))
        })
    };
    let last = counts.iter().rposition(|&c| c > 0).map_or(0, |i| i + 1);
    let first = counts.iter().position(|&c| c > 0).unwrap_or(0);
    Ok(RttDistribution {
        samples,
        buckets: (first..last)
            .map(|i| RttBucket {
                lo_us: if i == 0 { 0 } else { 1 << i },
                hi_us: (i + 1 < N).then_some(1 << (i + 1)),
                count: counts[i],
            })
            .collect(),
        p50_us: quantile(0.5),
        p90_us: quantile(0.9),
        p99_us: quantile(0.99),
    })
}

/// What the store holds.
#[derive(Debug, Clone, Serialize)]
pub struct Stored {
    pub summaries: u64,
    pub flow_records: u64,
    pub oldest_window_ms: Option<i64>,
    pub newest_window_ms: Option<i64>,
}

pub fn stored(conn: &Connection) -> Result<Stored> {
    // The running totals and two index lookups: cheap at any size.
    conn.prepare_cached(STORED)?.query_row([], |r| {
        Ok(Stored {
            summaries: total(r.get(0)?),
            flow_records: total(r.get(1)?),
            oldest_window_ms: r.get(2)?,
            newest_window_ms: r.get(3)?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use shared::wire::{Addr, Count as C, FlowRecord, Health, Rtt, Summary};

    fn summary(
        device: &str,
        seq: u64,
        start: u64,
        len: u32,
        bytes: u64,
        flows: Vec<FlowRecord>,
    ) -> Summary {
        Summary {
            device: device.try_into().unwrap(),
            site: "s".try_into().unwrap(),
            boot_id: 1,
            seq,
            part: 0,
            parts: 1,
            window_start_ms: start,
            window_len_ms: len,
            sample_every: 1,
            totals: C {
                packets: bytes / 100,
                bytes,
            },
            overflow: C::default(),
            other: C::default(),
            other_flows: 0,
            health: Health::default(),
            addrs: vec![
                Addr::V4([10, 0, 0, 1]),
                Addr::V4([10, 0, 0, 2]),
                Addr::V6([0xfd; 16]),
            ],
            flows,
            rtt_hist: heapless::Vec::new(),
        }
    }

    fn flow(src: u32, dst: u32, fwd: u64, rev: u64) -> FlowRecord {
        FlowRecord {
            proto: 6,
            src,
            dst,
            src_port: 1000 + src as u16,
            dst_port: 80,
            fwd: C {
                packets: 1,
                bytes: fwd,
            },
            rev: C {
                packets: 1,
                bytes: rev,
            },
            ..Default::default()
        }
    }

    /// A store in a temporary file, and a reader on it.
    fn db(summaries: &[Summary]) -> (Connection, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "efc-q-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("q.db");
        let mut store = Store::open(&path).unwrap();
        let mut b = store.batch().unwrap();
        for s in summaries {
            assert!(b.insert_summary(s, 0).unwrap());
        }
        b.commit().unwrap();
        (crate::store::open_reader(&path).unwrap(), dir)
    }

    #[test]
    fn series_spreads_windows_and_leaves_gaps_empty() {
        // 10 s windows of 10,000 bytes at 0..10 s and 10..20 s, none after; buckets of 10 s
        // over 0..40 s, offset by 5 s so each window straddles two buckets.
        let (c, dir) = db(&[
            summary("d", 0, 5_000, 10_000, 10_000, vec![]),
            summary("d", 1, 15_000, 10_000, 30_000, vec![]),
        ]);
        let s = series(
            &c,
            Range {
                from: 0,
                to: 40_000,
            },
            10_000,
            None,
        )
        .unwrap();
        assert_eq!(s.step_ms, 10_000);
        assert_eq!(s.t, vec![0, 10_000, 20_000, 30_000]);
        let b = &s.devices[0].bytes_per_s;
        // Bucket 0 is half covered by window 0: 5,000 bytes over 5 s.
        assert_eq!(b[0], Some(1_000.0));
        // Bucket 1: halves of both windows, 5,000 + 15,000 bytes over 10 s.
        assert_eq!(b[1], Some(2_000.0));
        assert_eq!(b[2], Some(3_000.0));
        assert_eq!(b[3], None, "no window covers it");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn series_step_is_at_least_a_window() {
        let (c, dir) = db(&[summary("d", 0, 0, 10_000, 10_000, vec![])]);
        let s = series(
            &c,
            Range {
                from: 0,
                to: 600_000,
            },
            1_000,
            None,
        )
        .unwrap();
        assert_eq!(s.step_ms, 10_000);
        let s = series(
            &c,
            Range {
                from: 0,
                to: 100_000,
            },
            1_000,
            None,
        )
        .unwrap();
        assert_eq!(s.step_ms, 5_000, "but the range keeps 20 buckets");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn talkers_conversations_and_flow_filters() {
        let mut a = summary(
            "d",
            0,
            0,
            10_000,
            0,
            vec![flow(0, 1, 100, 1_000), flow(0, 2, 5, 5)],
        );
        a.flows[1].proto = 17;
        a.flows[1].rtt = Some(Rtt {
            min_us: 10,
            avg_us: 20,
            max_us: 30,
            samples: 2,
        });
        let mut b = summary("d", 1, 10_000, 10_000, 0, vec![flow(0, 1, 100, 1_000)]);
        b.flows[0].rtt = None;
        let mut c2 = summary("d", 2, 20_000, 10_000, 0, vec![flow(0, 2, 5, 5)]);
        c2.flows[0].proto = 17;
        c2.flows[0].rtt = Some(Rtt {
            min_us: 5,
            avg_us: 40,
            max_us: 50,
            samples: 6,
        });
        let (c, dir) = db(&[a, b, c2]);

        let t = top_talkers(&c, Range::ALL, None, 10).unwrap();
        assert_eq!(t[0].addr, "10.0.0.1");
        assert_eq!((t[0].sent.bytes, t[0].received.bytes), (210, 2_010));
        assert_eq!(t[1].addr, "10.0.0.2");
        assert_eq!((t[1].sent.bytes, t[1].received.bytes), (2_000, 200));

        let conv = top_conversations(&c, Range::ALL, None, 10).unwrap();
        assert_eq!(
            (conv[0].src.as_str(), conv[0].dst.as_str()),
            ("10.0.0.1", "10.0.0.2")
        );
        assert_eq!(
            (conv[0].fwd.bytes, conv[0].rev.bytes, conv[0].flows),
            (200, 2_000, 1)
        );

        let all = flows(
            &c,
            Range::ALL,
            &FlowFilter {
                limit: 10,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(all.matching, 2);
        assert_eq!(all.flows[0].windows, 2);
        let udp = flows(
            &c,
            Range::ALL,
            &FlowFilter {
                proto: Some(17),
                limit: 10,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(udp.matching, 1);
        assert_eq!(udp.flows[0].dst, "fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd");
        let r = udp.flows[0].rtt.as_ref().unwrap();
        // Sample-weighted: (20*2 + 40*6) / 8 = 35.
        assert_eq!((r.min_us, r.avg_us, r.max_us, r.samples), (5, 35, 50, 8));
        let by_addr = FlowFilter {
            addr: Some("fdfd:".into()),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(flows(&c, Range::ALL, &by_addr).unwrap().matching, 1);
        let by_port = FlowFilter {
            port: Some(1000),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(flows(&c, Range::ALL, &by_port).unwrap().matching, 2);
        let none = FlowFilter {
            port: Some(9),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(flows(&c, Range::ALL, &none).unwrap().matching, 0);
        let later = Range {
            from: 10_000,
            to: 20_000,
        };
        assert_eq!(
            flows(
                &c,
                later,
                &FlowFilter {
                    limit: 10,
                    ..Default::default()
                }
            )
            .unwrap()
            .matching,
            1
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn rtt_histograms_add_up() {
        let mut a = summary("d", 0, 0, 10_000, 0, vec![]);
        a.rtt_hist = [0, 0, 0, 4, 4].into_iter().collect();
        let mut b = summary("d", 1, 10_000, 10_000, 0, vec![]);
        b.rtt_hist = [0, 0, 0, 0, 1, 1].into_iter().collect();
        let (c, dir) = db(&[a, b]);
        let r = rtt(&c, Range::ALL, None).unwrap();
        assert_eq!(r.samples, 10);
        let counts: Vec<_> = r.buckets.iter().map(|b| (b.lo_us, b.count)).collect();
        assert_eq!(counts, vec![(8, 4), (16, 5), (32, 1)]);
        assert_eq!(
            (r.p50_us, r.p90_us, r.p99_us),
            (Some(32), Some(32), Some(64))
        );
        assert_eq!(rtt(&c, Range { from: 1, to: 2 }, None).unwrap().samples, 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn one_name_in_two_sites_is_two_devices() {
        let mut other = summary("d", 0, 0, 10_000, 500, vec![flow(0, 1, 5, 5)]);
        other.site = "t".try_into().unwrap();
        let (c, dir) = db(&[
            summary("d", 0, 0, 10_000, 1_000, vec![flow(0, 1, 7, 7)]),
            summary("d", 2, 10_000, 10_000, 1_000, vec![]),
            other,
        ]);
        let d = devices(&c, Range::ALL, 0, None).unwrap();
        let got: Vec<_> = d
            .iter()
            .map(|d| (d.id.as_str(), d.totals.bytes, d.windows, d.gaps))
            .collect();
        assert_eq!(got, vec![("s/d", 2_000, 2, 1), ("t/d", 500, 1, 0)]);
        // `device` narrows as on the other endpoints: a bare name in every site, or one device.
        let ids = |n| -> Vec<String> {
            devices(&c, Range::ALL, 0, Some(n))
                .unwrap()
                .into_iter()
                .map(|d| d.id)
                .collect()
        };
        assert_eq!(ids("d"), ["s/d", "t/d"]);
        assert_eq!(ids("t/d"), ["t/d"]);
        assert!(ids("e").is_empty() && ids("s").is_empty());
        let s = series(
            &c,
            Range {
                from: 0,
                to: 20_000,
            },
            10_000,
            None,
        )
        .unwrap();
        let ids: Vec<_> = s.devices.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["s/d", "t/d"]);
        let one = series(
            &c,
            Range {
                from: 0,
                to: 20_000,
            },
            10_000,
            Some("t/d"),
        )
        .unwrap();
        assert_eq!(one.devices.len(), 1);
        let f = flows(
            &c,
            Range::ALL,
            &FlowFilter {
                limit: 10,
                ..Default::default()
            },
        )
        .unwrap();
        let who: Vec<_> = f.flows.iter().map(|f| f.device.as_str()).collect();
        assert_eq!(
            who,
            ["s/d", "t/d"],
            "the same flow in two sites stays apart"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn metrics_and_ingest_queries_do_not_scan_the_history() {
        // What /metrics (devices over everything) and /api/ingest (stored) run: their cost
        // must follow the number of devices, not of stored windows.
        let (c, dir) = db(&[
            summary("d", 0, 0, 10_000, 1_000, vec![]),
            summary("e", 0, 0, 10_000, 2_000, vec![]),
        ]);
        let d = devices(&c, Range::ALL, 0, None).unwrap();
        assert_eq!(
            d.iter().map(|d| d.totals.bytes).collect::<Vec<_>>(),
            [1_000, 2_000]
        );
        let mut plans = String::new();
        for sql in [LATEST, TOTALS_ALL, STORED] {
            let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let n = st.parameter_count();
            let rows = st
                .query_map(rusqlite::params_from_iter(vec![0i64; n]), |r| {
                    r.get::<_, String>(3)
                })
                .unwrap();
            for r in rows {
                plans.push_str(&r.unwrap());
                plans.push('\n');
            }
        }
        // Only the per-device table is walked; summaries are reached by id or index ends.
        for line in plans.lines().filter(|l| l.contains("SCAN")) {
            assert!(
                ["SCAN t", "SCAN device_totals", "SCAN CONSTANT ROW"].contains(&line),
                "{line:?} in\n{plans}"
            );
        }
        assert!(plans.contains("SCAN t"), "{plans}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn devices_state_from_presence_and_recency() {
        let now = 1_000_000_000;
        let (c, dir) = db(&[summary("d", 0, 0, 10_000, 1_000, vec![])]);
        // Received at 0: long ago, and no presence message: silent.
        let d = devices(&c, Range::ALL, now, None).unwrap();
        assert_eq!((d[0].state, d[0].totals.bytes), ("silent", 1_000));
        assert_eq!(
            devices(&c, Range::ALL, 5_000, None).unwrap()[0].state,
            "online"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
