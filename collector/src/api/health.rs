//! `/api/health`: one device's health over time, on the series' buckets.
//!
//! Per bucket, gauges (active flows, table fill, CPU, RSS, spool depth) take their highest
//! value and per-window counters (table full, parse errors) add up; `spool_dropped` is the
//! agent's running count since it started, so it takes its highest value too (adding it up
//! would count one drop once per later window). `None` where no window of the device starts
//! in the bucket. Rates are spread over the buckets as in [`super::series`].
//!
//! The agent's bad days (issue 24) the same way: `spool_fallback` is true when any window of
//! the bucket was on the in-memory spool, `clock_step_ms` adds up the window's steps (signed),
//! `header_excess` and `reclaimed` add up, and the agent's running counts
//! (`spool_write_errors`, `clock_steps`, `reattached`) take their highest value. `totals`
//! sums them over the range's windows, the running counts as the highest of each agent run
//! added over the runs (they restart at 0 with the agent).

use super::devices::opt_u64;
use super::series::{rate, Buckets, MAX_WINDOW_MS};
use super::{Range, Reader, Result};
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceHealth {
    /// `site/device`.
    pub id: String,
    pub step_ms: i64,
    /// Bucket starts.
    pub t: Vec<i64>,
    pub active_flows: Vec<Option<u64>>,
    pub table_fill: Vec<Option<f64>>,
    pub table_full: Vec<Option<u64>>,
    pub parse_errors: Vec<Option<u64>>,
    pub cpu_pct: Vec<Option<f64>>,
    pub rss_kib: Vec<Option<u64>>,
    pub spool_depth: Vec<Option<u64>>,
    pub spool_dropped: Vec<Option<u64>>,
    pub bytes_per_s: Vec<Option<f64>>,
    pub packets_per_s: Vec<Option<f64>>,
    pub spool_fallback: Vec<Option<bool>>,
    pub spool_write_errors: Vec<Option<u64>>,
    pub clock_step_ms: Vec<Option<i64>>,
    pub clock_steps: Vec<Option<u64>>,
    pub reattached: Vec<Option<u64>>,
    pub header_excess: Vec<Option<u64>>,
    pub reclaimed: Vec<Option<u64>>,
    /// Over the windows starting in the range.
    pub totals: BadDays,
    /// All runs stored, as in `/api/devices`.
    pub gaps: u64,
    pub boots: u64,
}

/// The agent's bad days over a range (see the module's comment).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BadDays {
    /// Windows on the in-memory spool (the file could not be written).
    pub spool_fallback_windows: u64,
    pub spool_write_errors: u64,
    /// Windows whose wall clock was stepped, and the steps' sizes added up (absolute).
    pub clock_stepped_windows: u64,
    pub clock_step_abs_ms: u64,
    pub clock_steps: u64,
    pub reattached: u64,
    pub header_excess: u64,
    pub reclaimed: u64,
}

const WINDOWS: &str = "SELECT window_start_ms, window_len_ms, boot_id,
        CAST(packets AS DOUBLE PRECISION) * sample_every AS packets,
        CAST(bytes AS DOUBLE PRECISION) * sample_every AS bytes,
        active_flows, table_capacity, table_full, parse_errors, cpu_ms, rss_kib, spool_depth,
        spool_dropped, spool_fallback, spool_write_errors, clock_step_ms, clock_steps,
        reattached, header_excess, reclaimed
    FROM summaries
    WHERE part = 0 AND site = $1 AND device = $2
      AND window_start_ms >= $3 AND window_start_ms < $4";

const LONGEST: &str = "SELECT MAX(window_len_ms) AS longest FROM summaries
    WHERE part = 0 AND site = $1 AND device = $2
      AND window_start_ms >= $3 AND window_start_ms < $4";

/// The device's health in `range`, bucketed as a series with `step_ms` (0: automatic).
/// `gaps` and `boots` come from its device entry.
pub fn health(
    db: &mut dyn Reader,
    (site, device): (&str, &str),
    range: Range,
    step_ms: i64,
    (gaps, boots): (u64, u64),
) -> Result<DeviceHealth> {
    let since = range.from.saturating_sub(MAX_WINDOW_MS);
    let params = [site.into(), device.into(), since.into(), range.to.into()];
    let longest = db.one(LONGEST, &params, |r| r.opt_i64("longest"))?;
    // Ten lines: as many points as ten devices' series.
    let b = Buckets::new(
        range,
        step_ms,
        longest,
        super::series::MAX_SERIES_POINTS / 10,
    );
    let n = b.n;
    let mut h = DeviceHealth {
        id: format!("{site}/{device}"),
        step_ms: b.step as i64,
        t: b.starts(),
        active_flows: vec![None; n],
        table_fill: vec![None; n],
        table_full: vec![None; n],
        parse_errors: vec![None; n],
        cpu_pct: vec![None; n],
        rss_kib: vec![None; n],
        spool_depth: vec![None; n],
        spool_dropped: vec![None; n],
        bytes_per_s: vec![None; n],
        packets_per_s: vec![None; n],
        spool_fallback: vec![None; n],
        spool_write_errors: vec![None; n],
        clock_step_ms: vec![None; n],
        clock_steps: vec![None; n],
        reattached: vec![None; n],
        header_excess: vec![None; n],
        reclaimed: vec![None; n],
        totals: BadDays::default(),
        gaps,
        boots,
    };
    // Bytes, packets, milliseconds covered.
    let mut traffic = vec![[0.0f64; 3]; n];
    fn max<T: PartialOrd + Copy>(slot: &mut Option<T>, v: T) {
        if slot.is_none_or(|s| v > s) {
            *slot = Some(v);
        }
    }
    fn add(slot: &mut Option<u64>, v: u64) {
        *slot = Some(slot.unwrap_or(0).saturating_add(v));
    }
    // Per agent run: the highest write errors, clock steps and re-attachments seen.
    let mut runs: std::collections::BTreeMap<i64, [u64; 3]> = Default::default();
    db.each(WINDOWS, &params, &mut |r| {
        let (start, len) = (r.i64("window_start_ms")?, r.i64("window_len_ms")?);
        let (bytes, packets) = (r.f64("bytes")?, r.f64("packets")?);
        b.spread(start, len, |i, share, covered| {
            traffic[i][0] += bytes * share;
            traffic[i][1] += packets * share;
            traffic[i][2] += covered;
        });
        let Some(i) = b.index(start) else {
            return Ok(());
        };
        let (active, capacity) = (r.u64("active_flows")?, r.u64("table_capacity")?);
        max(&mut h.active_flows[i], active);
        if capacity > 0 {
            max(&mut h.table_fill[i], active as f64 / capacity as f64);
        }
        add(&mut h.table_full[i], r.u64("table_full")?);
        add(&mut h.parse_errors[i], r.u64("parse_errors")?);
        max(
            &mut h.cpu_pct[i],
            r.f64("cpu_ms")? / len.max(1) as f64 * 100.0,
        );
        max(&mut h.rss_kib[i], r.u64("rss_kib")?);
        max(&mut h.spool_depth[i], r.u64("spool_depth")?);
        max(&mut h.spool_dropped[i], r.u64("spool_dropped")?);
        let fallback = r.opt_i64("spool_fallback")?.unwrap_or(0) != 0;
        h.spool_fallback[i] = Some(h.spool_fallback[i].unwrap_or(false) || fallback);
        let step = r.opt_i64("clock_step_ms")?.unwrap_or(0);
        h.clock_step_ms[i] = Some(h.clock_step_ms[i].unwrap_or(0).saturating_add(step));
        let running = [
            opt_u64(r, "spool_write_errors")?,
            opt_u64(r, "clock_steps")?,
            opt_u64(r, "reattached")?,
        ];
        max(&mut h.spool_write_errors[i], running[0]);
        max(&mut h.clock_steps[i], running[1]);
        max(&mut h.reattached[i], running[2]);
        let (excess, reclaimed) = (opt_u64(r, "header_excess")?, opt_u64(r, "reclaimed")?);
        add(&mut h.header_excess[i], excess);
        add(&mut h.reclaimed[i], reclaimed);
        let t = &mut h.totals;
        t.spool_fallback_windows += u64::from(fallback);
        t.clock_stepped_windows += u64::from(step != 0);
        t.clock_step_abs_ms = t.clock_step_abs_ms.saturating_add(step.unsigned_abs());
        t.header_excess = t.header_excess.saturating_add(excess);
        t.reclaimed = t.reclaimed.saturating_add(reclaimed);
        let run = runs.entry(r.i64("boot_id")?).or_default();
        for (m, v) in run.iter_mut().zip(running) {
            *m = (*m).max(v);
        }
        Ok(())
    })?;
    for [errors, steps, reattached] in runs.into_values() {
        h.totals.spool_write_errors += errors;
        h.totals.clock_steps += steps;
        h.totals.reattached += reattached;
    }
    h.bytes_per_s = traffic.iter().map(|x| rate(x[0], x[2])).collect();
    h.packets_per_s = traffic.iter().map(|x| rate(x[1], x[2])).collect();
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::testdb::{summary, TestDb};

    #[test]
    fn gauges_take_the_highest_counters_add_up() {
        let mut w: Vec<_> = (0..3)
            .map(|i| summary("d", i, i * 10_000, 10_000, 10_000, vec![]))
            .collect();
        for (s, (active, full, cpu)) in w.iter_mut().zip([(10, 1, 100), (30, 2, 500), (5, 0, 0)]) {
            s.health.active_flows = active;
            s.health.table_capacity = 100;
            s.health.table_full = full;
            s.health.cpu_ms = cpu;
            s.health.spool_dropped = full;
        }
        // Window 0: on the fallback, stepped forward 1 s; window 1: set back 3 s, flooded;
        // window 2: back on the file, a re-attachment.
        w[0].health.spool_fallback = true;
        w[0].health.spool_write_errors = 4;
        w[0].health.clock_step_ms = 1_000;
        w[0].health.clock_steps = 1;
        w[0].health.header_excess = 3;
        w[1].health.spool_write_errors = 4;
        w[1].health.clock_step_ms = -3_000;
        w[1].health.clock_steps = 2;
        w[1].health.reattached = 1;
        w[1].health.header_excess = 4;
        w[1].health.reclaimed = 3;
        w[2].health.spool_write_errors = 4;
        w[2].health.clock_steps = 2;
        w[2].health.reattached = 2;
        w[2].health.header_excess = 7;
        let mut t = TestDb::new(&w);
        let h = health(
            t.db(),
            ("s", "d"),
            Range {
                from: 0,
                to: 40_000,
            },
            20_000,
            (0, 1),
        )
        .unwrap();
        assert_eq!(h.t, [0, 20_000]);
        assert_eq!(h.active_flows, [Some(30), Some(5)]);
        assert_eq!(h.table_fill, [Some(0.3), Some(0.05)]);
        assert_eq!(h.table_full, [Some(3), Some(0)]);
        assert_eq!(h.spool_dropped, [Some(2), Some(0)]);
        assert_eq!(h.cpu_pct, [Some(5.0), Some(0.0)]);
        assert_eq!(h.bytes_per_s, [Some(1_000.0), Some(1_000.0)]);
        assert_eq!(h.spool_fallback, [Some(true), Some(false)]);
        assert_eq!(h.clock_step_ms, [Some(-2_000), Some(0)]);
        assert_eq!(h.spool_write_errors, [Some(4), Some(4)]);
        assert_eq!(h.reattached, [Some(1), Some(2)]);
        assert_eq!(h.reclaimed, [Some(3), Some(0)]);
        assert_eq!(h.header_excess, [Some(7), Some(7)]);
        assert_eq!(
            h.totals,
            BadDays {
                spool_fallback_windows: 1,
                spool_write_errors: 4,
                clock_stepped_windows: 2,
                clock_step_abs_ms: 4_000,
                clock_steps: 2,
                reattached: 2,
                header_excess: 14,
                reclaimed: 3,
            },
            "running counts as the run's highest"
        );
        let later = health(
            t.db(),
            ("s", "d"),
            Range {
                from: 40_000,
                to: 80_000,
            },
            20_000,
            (0, 1),
        )
        .unwrap();
        assert_eq!(later.active_flows, [None, None]);
    }
}
