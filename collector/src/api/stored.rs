//! What the store holds (`/api/ingest`'s `stored`): from the running totals and the two
//! ends of the time index, cheap at any size.

use super::{Reader, Result};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Stored {
    pub summaries: u64,
    pub flow_records: u64,
    pub oldest_window_ms: Option<i64>,
    pub newest_window_ms: Option<i64>,
}

pub(crate) const STORED: &str = "SELECT
        (SELECT SUM(CAST(summaries AS DOUBLE PRECISION)) FROM device_totals) AS summaries,
        (SELECT SUM(CAST(flow_records AS DOUBLE PRECISION)) FROM device_totals) AS flow_records,
        (SELECT MIN(window_start_ms) FROM summaries) AS oldest,
        (SELECT MAX(window_start_ms) FROM summaries) AS newest";

pub fn stored(db: &mut dyn Reader) -> Result<Stored> {
    db.one(STORED, &[], |r| {
        Ok(Stored {
            summaries: r.total("summaries")?,
            flow_records: r.total("flow_records")?,
            oldest_window_ms: r.opt_i64("oldest")?,
            newest_window_ms: r.opt_i64("newest")?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        devices,
        testdb::{summary, TestDb},
        Range,
    };

    #[test]
    fn counts_what_is_stored() {
        let mut t = TestDb::new(&[
            summary("d", 0, 5, 10_000, 1_000, vec![]),
            summary("e", 0, 7, 10_000, 2_000, vec![]),
        ]);
        let s = stored(t.db()).unwrap();
        assert_eq!(
            (s.summaries, s.oldest_window_ms, s.newest_window_ms),
            (2, Some(5), Some(7))
        );
        let _ = devices::devices(t.db(), Range::ALL, 0, None).unwrap();
    }

    #[test]
    fn metrics_and_ingest_queries_do_not_scan_the_history() {
        // What /metrics (devices over everything) and /api/ingest (stored) run: their cost
        // must follow the number of devices, not of stored windows.
        let mut t = TestDb::new(&[
            summary("d", 0, 0, 10_000, 1_000, vec![]),
            summary("e", 0, 0, 10_000, 2_000, vec![]),
        ]);
        let d = devices::devices(t.db(), Range::ALL, 0, None).unwrap();
        assert_eq!(
            d.iter().map(|d| d.totals.bytes).collect::<Vec<_>>(),
            [1_000, 2_000]
        );
        let mut plans = String::new();
        for sql in [devices::LATEST, devices::TOTALS_ALL, STORED] {
            let c = t.sqlite().conn();
            let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = st.query_map([], |r| r.get::<_, String>(3)).unwrap();
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
    }
}
