//! Ingest rates over the last few seconds, from the ingest counters sampled once a second.

use crate::ingest::IngestStats;
use serde::Serialize;
use std::{
    collections::VecDeque,
    sync::{atomic::Ordering::Relaxed, Mutex},
    time::{Duration, Instant},
};

/// Rates are averaged over this long.
pub const WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Rates {
    pub messages_per_s: f64,
    pub summaries_per_s: f64,
    pub flow_records_per_s: f64,
    pub payload_bytes_per_s: f64,
    pub rejected_per_s: f64,
}

#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    messages: u64,
    summaries: u64,
    flow_records: u64,
    payload_bytes: u64,
    rejected: u64,
}

/// Keeps the samples of the last [`WINDOW`].
#[derive(Default)]
pub struct RateTracker {
    samples: Mutex<VecDeque<Sample>>,
}

impl RateTracker {
    /// Takes a sample now; call about once a second.
    pub fn sample(&self, stats: &IngestStats) {
        self.sample_at(stats, Instant::now());
    }

    fn sample_at(&self, stats: &IngestStats, at: Instant) {
        let s = Sample {
            at,
            messages: stats.messages.load(Relaxed),
            summaries: stats.summaries.load(Relaxed),
            flow_records: stats.flow_records.load(Relaxed),
            payload_bytes: stats.payload_bytes.load(Relaxed),
            rejected: stats.rejected_total(),
        };
        let mut q = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        q.push_back(s);
        while q.len() > 2 && at.duration_since(q[1].at) >= WINDOW {
            q.pop_front();
        }
    }

    pub fn rates(&self) -> Rates {
        let q = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let (Some(a), Some(b)) = (q.front(), q.back()) else {
            return Rates::default();
        };
        let secs = b.at.duration_since(a.at).as_secs_f64();
        if secs <= 0.0 {
            return Rates::default();
        }
        let per = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
        Rates {
            messages_per_s: per(a.messages, b.messages),
            summaries_per_s: per(a.summaries, b.summaries),
            flow_records_per_s: per(a.flow_records, b.flow_records),
            payload_bytes_per_s: per(a.payload_bytes, b.payload_bytes),
            rejected_per_s: per(a.rejected, b.rejected),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_over_the_window() {
        let stats = IngestStats::default();
        let t = RateTracker::default();
        let t0 = Instant::now();
        assert_eq!(t.rates(), Rates::default());
        t.sample_at(&stats, t0);
        stats.messages.store(20, Relaxed);
        stats.flow_records.store(2000, Relaxed);
        t.sample_at(&stats, t0 + Duration::from_secs(2));
        let r = t.rates();
        assert_eq!(r.messages_per_s, 10.0);
        assert_eq!(r.flow_records_per_s, 1000.0);
        // Old samples fall out of the window.
        for i in 3..30 {
            t.sample_at(&stats, t0 + Duration::from_secs(i));
        }
        assert_eq!(t.rates().messages_per_s, 0.0);
    }
}
