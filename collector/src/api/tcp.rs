//! `/api/tcp`: what connections did (issue 21's TCP block): the destinations (responder
//! address and port) whose connections fail, reset or retransmit, the range's totals per
//! outcome, and failed connects, resets and the retransmit rate over time.
//!
//! Totals and the series read the windows' own TCP figures (`summaries`, one row per window);
//! only the destinations read flow records. Connections count once per outcome they reached
//! (see `store::tcp`); retransmitted and RST segments scale by `sample_every`. The retransmit
//! rate is retransmitted TCP payload bytes over the bytes (IP, both ways) of the flows that
//! carry a TCP block: windows of agents without TCP health neither add nor dilute it.

use super::series::window_buckets;
use super::{device_filter, flows::flows_in_range, Count, Error, Range, Reader};
use super::{Result, Row};
use serde::Serialize;

/// Connections per outcome reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Outcomes {
    pub established: u64,
    pub refused: u64,
    pub unanswered: u64,
    pub reset: u64,
    pub closed: u64,
    /// First seen without their handshake (begun before the agent, or mid-stream).
    pub unknown: u64,
}

impl Outcomes {
    fn read(r: &dyn Row) -> Result<Outcomes> {
        Ok(Outcomes {
            established: r.total("established")?,
            refused: r.total("refused")?,
            unanswered: r.total("unanswered")?,
            reset: r.total("reset")?,
            closed: r.total("closed")?,
            unknown: r.total("unknown")?,
        })
    }

    /// Refused and unanswered: connections that never came up.
    pub fn failed(&self) -> u64 {
        self.refused + self.unanswered
    }
}

/// The range's totals over the windows with TCP health.
#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    /// Windows that carried TCP health, and the devices that sent them.
    pub windows: u64,
    pub devices: u64,
    pub connections: Outcomes,
    /// Refused + unanswered.
    pub failed: u64,
    /// SYNs sent again by connections whose handshake ended in the range.
    pub syn_retries: u64,
    pub retransmitted: Count,
    /// RST segments, both ways.
    pub rst: u64,
    /// Bytes of the flows that carry a TCP block.
    pub bytes: u64,
    /// retransmitted.bytes / bytes; None without bytes.
    pub retransmit_rate: Option<f64>,
}

/// One destination (responder address and port) over the range.
#[derive(Debug, Clone, Serialize)]
pub struct Destination {
    pub addr: String,
    pub port: u16,
    pub connections: Outcomes,
    pub failed: u64,
    pub syn_retries: u64,
    /// Initiator → responder and back.
    pub retransmitted_fwd: Count,
    pub retransmitted_rev: Count,
    pub rst_fwd: u64,
    pub rst_rev: u64,
    pub bytes: u64,
    pub retransmit_rate: Option<f64>,
}

/// Per bucket of window starts; None where no window with TCP health started.
#[derive(Debug, Clone, Serialize)]
pub struct TcpSeries {
    pub step_ms: i64,
    pub t: Vec<i64>,
    pub failed: Vec<Option<u64>>,
    pub reset: Vec<Option<u64>>,
    pub retransmitted_bytes: Vec<Option<u64>>,
    pub retransmit_rate: Vec<Option<f64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TcpAnswer {
    pub range: Range,
    pub totals: Totals,
    pub destinations: Vec<Destination>,
    pub series: TcpSeries,
}

/// How destinations are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Failed connects, then resets, then the retransmit rate.
    #[default]
    Failed,
    /// Connections reset, then RST segments.
    Resets,
    /// The retransmit rate, then retransmitted bytes.
    Retransmits,
}

impl std::str::FromStr for Sort {
    type Err = Error;

    fn from_str(s: &str) -> Result<Sort> {
        super::choose(
            "sort",
            s,
            &[
                ("failed", Sort::Failed),
                ("resets", Sort::Resets),
                ("retransmits", Sort::Retransmits),
            ],
        )
    }
}

impl Sort {
    fn order_by(self) -> &'static str {
        match self {
            Sort::Failed => "failed DESC, reset DESC, rate DESC",
            Sort::Resets => "reset DESC, rst DESC, failed DESC",
            Sort::Retransmits => "rate DESC, retrans_b DESC, failed DESC",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct TcpQuery {
    pub device: Option<String>,
    pub limit: u32,
    pub sort: Sort,
    /// Series bucket width wanted (0: automatic).
    pub step_ms: i64,
}

fn rate(retransmitted: u64, bytes: u64) -> Option<f64> {
    (bytes > 0).then(|| retransmitted as f64 / bytes as f64)
}

/// The summaries' TCP figures, summed (alias names as [`Outcomes::read`] and below read them).
const WINDOW_SUMS: &str = "COUNT(tcp_established) AS windows,
    SUM(CAST(tcp_established AS DOUBLE PRECISION)) AS established,
    SUM(CAST(tcp_refused AS DOUBLE PRECISION)) AS refused,
    SUM(CAST(tcp_unanswered AS DOUBLE PRECISION)) AS unanswered,
    SUM(CAST(tcp_reset AS DOUBLE PRECISION)) AS reset,
    SUM(CAST(tcp_closed AS DOUBLE PRECISION)) AS closed,
    SUM(CAST(tcp_unknown AS DOUBLE PRECISION)) AS unknown,
    SUM(CAST(tcp_syn_retries AS DOUBLE PRECISION)) AS syn_retries,
    SUM(CAST(tcp_retrans_packets AS DOUBLE PRECISION) * sample_every) AS retrans_p,
    SUM(CAST(tcp_retrans_bytes AS DOUBLE PRECISION) * sample_every) AS retrans_b,
    SUM(CAST(tcp_rst AS DOUBLE PRECISION) * sample_every) AS rst,
    SUM(CAST(tcp_bytes AS DOUBLE PRECISION) * sample_every) AS bytes";

/// Windows with TCP health starting in `[$1, $2)` of the device `$3` (NULL: all).
fn windows_where() -> String {
    format!(
        "FROM summaries WHERE window_start_ms >= $1 AND window_start_ms < $2 AND {}
           AND tcp_established IS NOT NULL",
        device_filter("", 3)
    )
}

/// The answer over `range`; the series covers `series_range` (the range, up to now).
pub fn tcp(
    db: &mut dyn Reader,
    range: Range,
    series_range: Range,
    q: &TcpQuery,
) -> Result<TcpAnswer> {
    let device = q.device.as_deref();
    let params = [range.from.into(), range.to.into(), device.into()];
    let totals = db.one(
        &format!(
            "SELECT {WINDOW_SUMS}, COUNT(DISTINCT site || '/' || device) AS devices {}",
            windows_where()
        ),
        &params,
        |r| {
            let connections = Outcomes::read(r)?;
            let retransmitted = Count {
                packets: r.total("retrans_p")?,
                bytes: r.total("retrans_b")?,
            };
            let bytes = r.total("bytes")?;
            Ok(Totals {
                windows: r.u64("windows")?,
                devices: r.u64("devices")?,
                failed: connections.failed(),
                connections,
                syn_retries: r.total("syn_retries")?,
                retransmit_rate: rate(retransmitted.bytes, bytes),
                retransmitted,
                rst: r.total("rst")?,
                bytes,
            })
        },
    )?;
    Ok(TcpAnswer {
        range,
        totals,
        destinations: destinations(db, range, q)?,
        series: series(db, series_range, q)?,
    })
}

/// Counts the records of `$o` (an outcome name) decided in their window.
fn decided(outcome: &str) -> String {
    format!(
        "COUNT(CASE WHEN f.tcp_decided = 1 AND f.tcp_outcome = '{outcome}' THEN 1 END) AS {outcome}"
    )
}

fn destinations(db: &mut dyn Reader, range: Range, q: &TcpQuery) -> Result<Vec<Destination>> {
    let scaled = |col: &str, name: &str| {
        format!("SUM(CAST(f.{col} AS DOUBLE PRECISION) * s.sample_every) AS {name}")
    };
    let sql = format!(
        "SELECT f.dst AS addr, f.dst_port AS port, {}, {}, {}, {}, {},
            COUNT(CASE WHEN f.tcp_outcome = 'unknown' AND f.first_seen_ms >= s.window_start_ms
                       THEN 1 END) AS unknown,
            COUNT(CASE WHEN f.tcp_decided = 1 AND f.tcp_outcome IN ('refused', 'unanswered')
                       THEN 1 END) AS failed,
            SUM(CASE WHEN f.tcp_decided = 1
                      AND f.tcp_outcome IN ('established', 'refused', 'unanswered')
                     THEN CAST(f.tcp_syn_retries AS DOUBLE PRECISION) END) AS syn_retries,
            {}, {}, {}, {}, {}, {},
            SUM((CAST(f.tcp_fwd_rst AS DOUBLE PRECISION) + f.tcp_rev_rst) * s.sample_every)
                AS rst,
            SUM((CAST(f.tcp_fwd_retrans_bytes AS DOUBLE PRECISION) + f.tcp_rev_retrans_bytes)
                * s.sample_every) AS retrans_b,
            SUM((CAST(f.fwd_bytes AS DOUBLE PRECISION) + f.rev_bytes) * s.sample_every) AS bytes,
            COALESCE(SUM((CAST(f.tcp_fwd_retrans_bytes AS DOUBLE PRECISION)
                          + f.tcp_rev_retrans_bytes) * s.sample_every)
                     / NULLIF(SUM((CAST(f.fwd_bytes AS DOUBLE PRECISION) + f.rev_bytes)
                                  * s.sample_every), 0), 0) AS rate
         FROM {} AND f.tcp_outcome IS NOT NULL
         GROUP BY f.dst, f.dst_port
         ORDER BY {}, bytes DESC, addr, port
         LIMIT $4",
        decided("established"),
        decided("refused"),
        decided("unanswered"),
        decided("reset"),
        decided("closed"),
        scaled("tcp_fwd_retrans_packets", "fwd_rp"),
        scaled("tcp_fwd_retrans_bytes", "fwd_rb"),
        scaled("tcp_rev_retrans_packets", "rev_rp"),
        scaled("tcp_rev_retrans_bytes", "rev_rb"),
        scaled("tcp_fwd_rst", "fwd_rst"),
        scaled("tcp_rev_rst", "rev_rst"),
        flows_in_range(db.dialect()),
        q.sort.order_by(),
    );
    let params = [
        range.from.into(),
        range.to.into(),
        q.device.as_deref().into(),
        i64::from(q.limit).into(),
    ];
    db.rows(&sql, &params, |r| {
        let connections = Outcomes::read(r)?;
        let fwd = Count {
            packets: r.total("fwd_rp")?,
            bytes: r.total("fwd_rb")?,
        };
        let rev = Count {
            packets: r.total("rev_rp")?,
            bytes: r.total("rev_rb")?,
        };
        let bytes = r.total("bytes")?;
        Ok(Destination {
            addr: r.text("addr")?,
            port: r.i64("port")?.clamp(0, 65_535) as u16,
            failed: r.u64("failed")?,
            connections,
            syn_retries: r.total("syn_retries")?,
            retransmit_rate: rate(fwd.bytes + rev.bytes, bytes),
            retransmitted_fwd: fwd,
            retransmitted_rev: rev,
            rst_fwd: r.total("fwd_rst")?,
            rst_rev: r.total("rev_rst")?,
            bytes,
        })
    })
}

fn series(db: &mut dyn Reader, range: Range, q: &TcpQuery) -> Result<TcpSeries> {
    let filters = [q.device.as_deref().into()];
    let (b, rows) = window_buckets(
        db,
        range,
        q.step_ms,
        &windows_where(),
        &filters,
        WINDOW_SUMS,
        |r| Ok((Outcomes::read(r)?, r.total("retrans_b")?, r.total("bytes")?)),
    )?;
    let mut s = TcpSeries {
        step_ms: b.step as i64,
        t: b.starts(),
        failed: vec![None; b.n],
        reset: vec![None; b.n],
        retransmitted_bytes: vec![None; b.n],
        retransmit_rate: vec![None; b.n],
    };
    for (i, (c, retrans, bytes)) in rows {
        s.failed[i] = Some(c.failed());
        s.reset[i] = Some(c.reset);
        s.retransmitted_bytes[i] = Some(retrans);
        s.retransmit_rate[i] = rate(retrans, bytes);
    }
    Ok(s)
}

/// A device's running TCP sums (for `/metrics`): connections per outcome and retransmitted
/// segments and bytes over its stored windows.
#[derive(Debug, Clone)]
pub struct DeviceTcp {
    pub site: String,
    pub device: String,
    pub connections: Outcomes,
    pub retransmitted: Count,
}

/// Every device that sent a window with TCP health, from the running totals.
pub fn device_totals(db: &mut dyn Reader) -> Result<Vec<DeviceTcp>> {
    db.rows(
        "SELECT site, device, tcp_established AS established, tcp_refused AS refused,
                tcp_unanswered AS unanswered, tcp_reset AS reset, tcp_closed AS closed,
                tcp_unknown AS unknown, tcp_retrans_packets AS retrans_p,
                tcp_retrans_bytes AS retrans_b
         FROM device_totals WHERE tcp_windows > 0 ORDER BY site, device",
        &[],
        |r| {
            Ok(DeviceTcp {
                site: r.text("site")?,
                device: r.text("device")?,
                connections: Outcomes::read(r)?,
                retransmitted: Count {
                    packets: r.total("retrans_p")?,
                    bytes: r.total("retrans_b")?,
                },
            })
        },
    )
}
