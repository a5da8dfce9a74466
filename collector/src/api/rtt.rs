//! `/api/rtt`: the RTT distribution, the windows' log2 histograms added up (the same sum
//! serves `/api/dns`'s latency).

use super::{device_filter, Range, Reader, Result};
use serde::Serialize;

/// A latency distribution: the windows' log2 histograms (bucket i: [2^i, 2^(i+1)) µs, see
/// [`shared::wire::RTT_BUCKETS`]) added up. `/api/rtt` answers one of TCP round-trip times,
/// `/api/dns` one of DNS query→response latency.
#[derive(Debug, Clone, Serialize)]
pub struct Histogram {
    pub samples: u64,
    /// Bucket i holds samples in [lo_us, hi_us) (the last one: everything from lo_us up).
    pub buckets: Vec<RttBucket>,
    /// Upper bucket bounds at these quantiles (None without samples).
    pub p50_us: Option<u64>,
    pub p90_us: Option<u64>,
    pub p99_us: Option<u64>,
}

pub type RttDistribution = Histogram;

#[derive(Debug, Clone, Serialize)]
pub struct RttBucket {
    pub lo_us: u64,
    pub hi_us: Option<u64>,
    pub count: u64,
}

pub fn rtt(db: &mut dyn Reader, range: Range, device: Option<&str>) -> Result<RttDistribution> {
    histogram(db, "rtt_hist", range, device, None)
}

/// The histograms in the `summaries` column `column` ("n0,n1,…") of the windows starting in
/// `range`, of `device` and `site` where given, added up.
pub(crate) fn histogram(
    db: &mut dyn Reader,
    column: &str,
    range: Range,
    device: Option<&str>,
    site: Option<&str>,
) -> Result<Histogram> {
    const N: usize = shared::wire::RTT_BUCKETS;
    let mut counts = [0u64; N];
    let sql = format!(
        "SELECT {column} AS hist FROM summaries
         WHERE window_start_ms >= $1 AND window_start_ms < $2 AND {}
           AND (CAST($4 AS TEXT) IS NULL OR site = $4) AND {column} IS NOT NULL",
        device_filter("", 3)
    );
    db.each(
        &sql,
        &[
            range.from.into(),
            range.to.into(),
            device.into(),
            site.into(),
        ],
        &mut |r| {
            for (i, v) in r.text("hist")?.split(',').enumerate().take(N) {
                counts[i] = counts[i].saturating_add(v.parse().unwrap_or(0));
            }
            Ok(())
        },
    )?;
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
    Ok(Histogram {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::testdb::{summary, TestDb};

    #[test]
    fn histograms_add_up() {
        let mut a = summary("d", 0, 0, 10_000, 0, vec![]);
        a.rtt_hist = [0, 0, 0, 4, 4].into_iter().collect();
        let mut b = summary("d", 1, 10_000, 10_000, 0, vec![]);
        b.rtt_hist = [0, 0, 0, 0, 1, 1].into_iter().collect();
        let mut t = TestDb::new(&[a, b]);
        let r = rtt(t.db(), Range::ALL, None).unwrap();
        assert_eq!(r.samples, 10);
        let counts: Vec<_> = r.buckets.iter().map(|b| (b.lo_us, b.count)).collect();
        assert_eq!(counts, vec![(8, 4), (16, 5), (32, 1)]);
        assert_eq!(
            (r.p50_us, r.p90_us, r.p99_us),
            (Some(32), Some(32), Some(64))
        );
        assert_eq!(
            rtt(t.db(), Range { from: 1, to: 2 }, None).unwrap().samples,
            0
        );
    }
}
