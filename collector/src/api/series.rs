//! `/api/series`: bytes/s and packets/s per device over time, and with `top` the fleet's sum,
//! the top devices and the rest as one line (a thousand lines are unreadable).
//!
//! Each window's counts are spread over the buckets it overlaps in proportion to the
//! overlap, and a bucket's rate is its counts over the time its windows cover, so a bucket
//! only half covered yet (the current one) is not shown as a drop. The step is at least the
//! longest window seen (finer buckets would only repeat a window's average), capped so the
//! range keeps 20 buckets, and wide enough for [`MAX_BUCKETS`] and [`MAX_SERIES_POINTS`].

use super::{device_filter, Error, Param, Range, Reader, Result, Row};
use serde::Serialize;
use std::collections::BTreeMap;

/// Most buckets a series has; a longer range gets a wider step.
pub const MAX_BUCKETS: i64 = 1000;
/// Most points (lines × buckets) one series answer holds; more lines get fewer buckets.
pub const MAX_SERIES_POINTS: i64 = 100_000;
/// Most points (devices × buckets) added up for one answer (with `top`, every device is
/// summed although few are shown): 500,000 × 24 bytes.
const MAX_WORK_POINTS: i64 = 500_000;
/// Longest window a series looks back for (one that started before the range may reach into it).
pub(crate) const MAX_WINDOW_MS: i64 = 3_600_000;
/// Most devices `top` shows.
pub const MAX_TOP: usize = 50;

/// Bytes/s and packets/s per device over time.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub from: i64,
    pub to: i64,
    pub step_ms: i64,
    /// Bucket starts.
    pub t: Vec<i64>,
    /// Every device, or with `top` the top devices by bytes in the range.
    pub devices: Vec<DeviceSeries>,
    /// With `top`: the sum over every device (of the site, if one is given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<Rates>,
    /// With `top`: the sum over the devices not in `devices`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub others: Option<Rates>,
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

/// A sum of devices' rates per bucket; `None` where none of them covered it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rates {
    pub bytes_per_s: Vec<Option<f64>>,
    pub packets_per_s: Vec<Option<f64>>,
}

/// Which devices, and how they are shown.
#[derive(Debug, Clone, Default)]
pub struct SeriesQuery {
    /// `step_ms` wanted (0: automatic); it may come out wider.
    pub step_ms: i64,
    /// One device (`site/device`, or a name in every site).
    pub device: Option<String>,
    /// Only this site's devices.
    pub site: Option<String>,
    /// Show the `top` devices by bytes, the fleet's sum and the others'.
    pub top: Option<usize>,
}

/// Equal buckets over a range, in i128: the range may be as wide as i64 allows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Buckets {
    from: i128,
    span: i128,
    pub step: i128,
    pub n: usize,
}

impl Buckets {
    /// At most `max` buckets, each at least `step_ms` and the longest window (capped so the
    /// range keeps 20 buckets).
    pub fn new(range: Range, step_ms: i64, longest_window_ms: Option<i64>, max: i64) -> Buckets {
        let (from, span) = (i128::from(range.from), i128::from(range.to - range.from));
        let buckets = i128::from(max.clamp(1, MAX_BUCKETS));
        let longest = i128::from(longest_window_ms.unwrap_or(1).max(1)).min(span / 20);
        let step = i128::from(step_ms)
            .max(longest)
            .max(1)
            .max((span + buckets - 1) / buckets);
        let n = ((span + step - 1) / step) as usize;
        Buckets {
            from,
            span,
            step,
            n,
        }
    }

    pub fn starts(&self) -> Vec<i64> {
        (0..self.n as i128)
            .map(|i| (self.from + i * self.step) as i64)
            .collect()
    }

    /// The bucket holding `t`, if in the range.
    pub fn index(&self, t: i64) -> Option<usize> {
        let t = i128::from(t);
        (t >= self.from && t < self.from + self.span)
            .then(|| ((t - self.from) / self.step) as usize)
    }

    /// Calls `add(bucket, share, covered_ms)` for each bucket the window overlaps (a window
    /// never spans more than 21): `share` of the window's counts fall in it.
    pub fn spread(&self, start: i64, len: i64, mut add: impl FnMut(usize, f64, f64)) {
        let (start, len) = (i128::from(start), i128::from(len.max(1)));
        let (lo, hi) = (
            start.max(self.from),
            (start + len).min(self.from + self.span),
        );
        if lo >= hi {
            return;
        }
        for i in (lo - self.from) / self.step..=(hi - 1 - self.from) / self.step {
            let b_lo = (self.from + i * self.step).max(lo);
            let b_hi = (self.from + (i + 1) * self.step).min(hi);
            if (i as usize) < self.n {
                add(
                    i as usize,
                    (b_hi - b_lo) as f64 / len as f64,
                    (b_hi - b_lo) as f64,
                );
            }
        }
    }
}

/// A rate from counts over the milliseconds covered.
pub(crate) fn rate(v: f64, covered_ms: f64) -> Option<f64> {
    (covered_ms > 0.0).then(|| v / (covered_ms / 1000.0))
}

/// Per-window figures in buckets of `step_ms` (no finer than the longest window) over
/// `range`: the windows `from_where` selects (`FROM … WHERE …` with `$1`, `$2` the range, then
/// `filters`), each bucket's `sums` as `read` reads them, with the bucket's index.
pub(crate) fn window_buckets<T>(
    db: &mut dyn Reader,
    range: Range,
    step_ms: i64,
    from_where: &str,
    filters: &[Param<'_>],
    sums: &str,
    mut read: impl FnMut(&dyn Row) -> Result<T>,
) -> Result<(Buckets, Vec<(usize, T)>)> {
    let mut params = vec![range.from.into(), range.to.into()];
    params.extend_from_slice(filters);
    let longest = db.one(
        &format!("SELECT MAX(window_len_ms) AS longest {from_where}"),
        &params,
        |r| r.opt_i64("longest"),
    )?;
    let b = Buckets::new(range, step_ms, longest, MAX_BUCKETS);
    // A window counts in the bucket of its start.
    let sql = format!(
        "SELECT (window_start_ms - $1) / ${} AS bucket, {sums} {from_where} GROUP BY bucket",
        params.len() + 1
    );
    params.push((b.step as i64).into());
    let mut out = Vec::new();
    db.each(&sql, &params, &mut |r| {
        if let Some(i) = usize::try_from(r.i64("bucket")?).ok().filter(|&i| i < b.n) {
            out.push((i, read(r)?));
        }
        Ok(())
    })?;
    Ok((b, out))
}

/// The part-0 windows starting in `[$1, $2)` of the device `$3` and site `$4` (NULL: all).
fn windows_sql(select: &str) -> String {
    format!(
        "SELECT {select} FROM summaries
         WHERE part = 0 AND window_start_ms >= $1 AND window_start_ms < $2
           AND {} AND (CAST($4 AS TEXT) IS NULL OR site = $4)",
        device_filter("", 3)
    )
}

/// `range` must have `0 <= from < to`; `step_ms` must be `>= 0` (0: automatic).
pub fn series(db: &mut dyn Reader, range: Range, q: &SeriesQuery) -> Result<Series> {
    if range.from < 0 || range.from >= range.to || q.step_ms < 0 {
        return Err(Error::Bad(
            "a series needs 0 <= from < to and a step >= 0".into(),
        ));
    }
    if q.top.is_some_and(|n| n == 0 || n > MAX_TOP) {
        return Err(Error::Bad(format!("top is 1..={MAX_TOP}")));
    }
    let since = range.from.saturating_sub(MAX_WINDOW_MS);
    let params = [
        since.into(),
        range.to.into(),
        q.device.as_deref().into(),
        q.site.as_deref().into(),
    ];
    let (longest, devices) = db.one(
        &windows_sql(
            "MAX(window_len_ms) AS longest, COUNT(DISTINCT site || '/' || device) AS devices",
        ),
        &params,
        |r| Ok((r.opt_i64("longest")?, r.i64("devices")?.max(1))),
    )?;
    // Lines shown: every device, or the top ones, the fleet and the others.
    let lines = q.top.map_or(devices, |n| (n as i64).min(devices) + 2);
    let max = (MAX_SERIES_POINTS / lines).min(MAX_WORK_POINTS / devices);
    let b = Buckets::new(range, q.step_ms, longest, max);
    // Per device and bucket: bytes, packets, milliseconds covered.
    let mut per: BTreeMap<(String, String), Vec<[f64; 3]>> = BTreeMap::new();
    db.each(
        &windows_sql(
            "site, device, window_start_ms, window_len_ms,
             CAST(packets AS DOUBLE PRECISION) * sample_every AS packets,
             CAST(bytes AS DOUBLE PRECISION) * sample_every AS bytes",
        ),
        &params,
        &mut |r| {
            let (packets, bytes) = (r.f64("packets")?, r.f64("bytes")?);
            let (start, len) = (r.i64("window_start_ms")?, r.i64("window_len_ms")?);
            let mut shares = Vec::new();
            b.spread(start, len, |i, share, covered| {
                shares.push((i, share, covered))
            });
            if shares.is_empty() {
                return Ok(());
            }
            let v = per
                .entry((r.text("site")?, r.text("device")?))
                .or_insert_with(|| vec![[0.0; 3]; b.n]);
            for (i, share, covered) in shares {
                v[i][0] += bytes * share;
                v[i][1] += packets * share;
                v[i][2] += covered;
            }
            Ok(())
        },
    )?;
    let line = |((site, device), v): ((String, String), Vec<[f64; 3]>)| DeviceSeries {
        id: format!("{site}/{device}"),
        site,
        device,
        bytes_per_s: v.iter().map(|x| rate(x[0], x[2])).collect(),
        packets_per_s: v.iter().map(|x| rate(x[1], x[2])).collect(),
    };
    let mut s = Series {
        from: range.from,
        to: range.to,
        step_ms: b.step as i64,
        t: b.starts(),
        devices: Vec::new(),
        fleet: None,
        others: None,
    };
    let Some(top) = q.top else {
        s.devices = per.into_iter().map(line).collect();
        return Ok(s);
    };
    let mut all: Vec<DeviceSeries> = per.into_iter().map(line).collect();
    let bytes = |d: &DeviceSeries| -> f64 { d.bytes_per_s.iter().flatten().sum() };
    // Rates over equal buckets add up like bytes (the last, shorter bucket alike for all).
    all.sort_by(|a, b| bytes(b).total_cmp(&bytes(a)).then(a.id.cmp(&b.id)));
    let others = all.split_off(top.min(all.len()));
    s.fleet = Some(sum(all.iter().chain(&others), b.n));
    s.others = Some(sum(&others, b.n));
    s.devices = all;
    Ok(s)
}

/// The lines' rates added up per bucket.
fn sum<'a>(lines: impl IntoIterator<Item = &'a DeviceSeries>, n: usize) -> Rates {
    let mut r = Rates {
        bytes_per_s: vec![None; n],
        packets_per_s: vec![None; n],
    };
    for l in lines {
        for (to, from) in [
            (&mut r.bytes_per_s, &l.bytes_per_s),
            (&mut r.packets_per_s, &l.packets_per_s),
        ] {
            for (t, f) in to.iter_mut().zip(from) {
                if let Some(f) = f {
                    *t = Some(t.unwrap_or(0.0) + f);
                }
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::testdb::{summary, TestDb};

    fn q(step_ms: i64) -> SeriesQuery {
        SeriesQuery {
            step_ms,
            ..Default::default()
        }
    }

    #[test]
    fn spreads_windows_and_leaves_gaps_empty() {
        // 10 s windows of 10,000 bytes at 0..10 s and 10..20 s, none after; buckets of 10 s
        // over 0..40 s, offset by 5 s so each window straddles two buckets.
        let mut t = TestDb::new(&[
            summary("d", 0, 5_000, 10_000, 10_000, vec![]),
            summary("d", 1, 15_000, 10_000, 30_000, vec![]),
        ]);
        let s = series(
            t.db(),
            Range {
                from: 0,
                to: 40_000,
            },
            &q(10_000),
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
        assert!(s.fleet.is_none() && s.others.is_none());
    }

    #[test]
    fn step_is_at_least_a_window() {
        let mut t = TestDb::new(&[summary("d", 0, 0, 10_000, 10_000, vec![])]);
        let s = series(
            t.db(),
            Range {
                from: 0,
                to: 600_000,
            },
            &q(1_000),
        )
        .unwrap();
        assert_eq!(s.step_ms, 10_000);
        let s = series(
            t.db(),
            Range {
                from: 0,
                to: 100_000,
            },
            &q(1_000),
        )
        .unwrap();
        assert_eq!(s.step_ms, 5_000, "but the range keeps 20 buckets");
    }

    #[test]
    fn top_devices_the_fleet_and_the_others() {
        let mut in_t = summary("c", 0, 10_000, 10_000, 50_000, vec![]);
        in_t.site = "t".try_into().unwrap();
        let mut t = TestDb::new(&[
            summary("a", 0, 0, 10_000, 10_000, vec![]),
            summary("b", 0, 0, 10_000, 20_000, vec![]),
            summary("b", 1, 10_000, 10_000, 20_000, vec![]),
            in_t,
        ]);
        let range = Range {
            from: 0,
            to: 20_000,
        };
        let top = |n, site: Option<&str>| SeriesQuery {
            step_ms: 10_000,
            top: Some(n),
            site: site.map(Into::into),
            ..Default::default()
        };
        let s = series(t.db(), range, &top(1, None)).unwrap();
        let ids: Vec<_> = s.devices.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["t/c"], "the most bytes in the range");
        let fleet = s.fleet.unwrap();
        assert_eq!(fleet.bytes_per_s, [Some(3_000.0), Some(7_000.0)]);
        assert_eq!(fleet.packets_per_s, [Some(30.0), Some(70.0)]);
        let others = s.others.unwrap();
        assert_eq!(others.bytes_per_s, [Some(3_000.0), Some(2_000.0)]);
        // One site; more room than devices: the others are nobody.
        let s = series(t.db(), range, &top(5, Some("s"))).unwrap();
        let ids: Vec<_> = s.devices.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["s/b", "s/a"]);
        assert_eq!(s.fleet.unwrap().bytes_per_s, [Some(3_000.0), Some(2_000.0)]);
        assert_eq!(s.others.unwrap().bytes_per_s, [None, None]);
        assert!(series(t.db(), range, &top(0, None)).is_err());
        assert!(series(t.db(), range, &top(51, None)).is_err());
    }
}
