//! Each interval: read the table, turn cumulative counters into deltas, expire what is done.

use crate::{
    clock::ClockPair,
    table::{FlowTable, RttHist, Stats, TableError},
    window::{self, Counts, Window},
};
use shared::{flow::tcp, Count, Direction, FlowCounters, Stat};
use std::time::Duration;

/// When entries leave the kernel table.
#[derive(Clone, Copy, Debug)]
pub struct Expiry {
    /// A flow with no packet for this long is removed.
    pub inactive: Duration,
    /// A TCP flow that saw FIN both ways, or RST, is removed once idle this long.
    pub finished: Duration,
    /// A timestamp whose echo has not come for this long is dropped from the pending map.
    pub rtt_pending: Duration,
}

impl Default for Expiry {
    fn default() -> Expiry {
        Expiry {
            inactive: Duration::from_secs(60),
            finished: Duration::from_secs(5),
            rtt_pending: Duration::from_secs(10),
        }
    }
}

/// Keeps the last counters of every slot, to report deltas.
pub struct Drainer {
    pub table: FlowTable,
    expiry: Expiry,
    /// Per slot: its flow's counts at the last drain (zero for a slot freed since).
    baseline: Vec<Counts>,
    /// Flows in the table at the last drain.
    active: usize,
    prev_stats: Stats,
    prev_hist: RttHist,
    last: ClockPair,
    /// Flows to free: slot, packets when read.
    expired: Vec<(u32, [u64; 2])>,
    /// Kernel `parsed` minus reported totals, summed since the start (see `Window::unsettled`).
    unsettled: Count,
}

impl Drainer {
    /// Starts the first window now; what the table already holds counts as the baseline. Make
    /// it before the programs are attached: the baseline reads the flows and then the
    /// counters, and a packet counted between the two would stay in one and not the other.
    pub fn new(table: FlowTable, expiry: Expiry) -> Result<Drainer, TableError> {
        let slots = table.slots();
        let mut baseline = vec![Counts::default(); slots.shape().slots as usize];
        let mut active = 0;
        slots.for_each_flow(&mut |i, _, v| {
            baseline[i as usize] = Counts::of(v);
            active += 1;
        });
        let prev_stats = table.read_stats()?;
        let prev_hist = table.read_rtt_hist()?;
        Ok(Drainer {
            baseline,
            active,
            table,
            expiry,
            prev_stats,
            prev_hist,
            last: ClockPair::now(),
            expired: Vec::new(),
            unsettled: Count::default(),
        })
    }

    /// Ends the current window and starts the next. The table is read once, as memory,
    /// straight into the deltas: no copy of the whole table is held.
    pub fn drain(&mut self) -> Result<Window, TableError> {
        let now = ClockPair::now();
        let ticks = self.table.ticks.now()?;
        // Tick stamps to wall-clock ms, through the monotonic clock.
        let to_ms = |t: u64| now.to_unix_ms(ticks.to_mono_ns(t));
        let expiry = self.expiry;
        // Sized once from the last drain: growing by doubling would briefly hold 3x as much.
        let mut flows = Vec::with_capacity(self.active);
        let mut expired = std::mem::take(&mut self.expired);
        expired.clear();
        let mut in_flows = Count::default();
        let mut active = 0;
        let baseline = &mut self.baseline;
        let slots = self.table.slots();
        // Flows first, then the counters: a packet counted between the two reads is in the
        // kernel's `parsed` but not yet in a flow delta. Totals are taken from the flows (so
        // every window conserves exactly) and the kernel counter checks them through
        // `unsettled`, which such packets raise for one window only.
        slots.for_each_flow(&mut |i, key, cur| {
            active += 1;
            let now = Counts::of(cur);
            let delta = now.since(&std::mem::replace(&mut baseline[i as usize], now));
            if delta.any_packets() {
                in_flows.add(&delta.total());
                flows.push(window::flow(key, cur, &delta, to_ms));
            }
            let idle = Duration::from_nanos(
                ticks
                    .mono_ns
                    .saturating_sub(ticks.to_mono_ns(cur.last_seen())),
            );
            if idle >= expiry.inactive || (finished(cur) && idle >= expiry.finished) {
                expired.push((i, cur.packets()));
            }
        });
        let stats = self.table.read_stats()?;
        let hist = self.table.read_rtt_hist()?;
        let mut removed = 0u32;
        for &(i, packets) in &expired {
            // A packet that came since the read keeps the flow for the next window. Compared
            // by count, not by last_seen: that has tick resolution.
            if slots.free(i, Some(packets)) {
                // A flow that comes back counts from zero.
                baseline[i as usize] = Counts::default();
                removed += 1;
                slots.tidy_from(i);
            }
        }
        self.expired = expired;

        let delta: Stats = std::array::from_fn(|i| stats[i].delta_since(&self.prev_stats[i]));
        self.prev_stats = stats;
        let rtt_hist = hist_delta(&hist, &self.prev_hist);
        self.prev_hist = hist;
        self.table.sweep_pending(
            now.mono_ns
                .saturating_sub(self.expiry.rtt_pending.as_nanos() as u64),
        )?;
        let overflow = delta[Stat::Overflow as usize];
        let mut totals = in_flows;
        totals.add(&overflow);
        self.unsettled.add(&delta[Stat::Parsed as usize]);
        self.unsettled = self.unsettled.delta_since(&totals);
        let w = Window {
            window_start_ms: self.last.unix_ms,
            window_end_ms: now.unix_ms,
            totals,
            overflow,
            unsettled: self.unsettled,
            stats: delta,
            active_flows: (active as u32).saturating_sub(removed),
            expired_flows: removed,
            flows,
            rtt_hist,
        };
        self.last = now;
        self.active = active;
        Ok(w)
    }
}

/// The window's RTT histogram, trailing empty buckets cut (empty: no samples).
fn hist_delta(now: &RttHist, before: &RttHist) -> Vec<u64> {
    let mut d: Vec<u64> = now
        .iter()
        .zip(before)
        .map(|(n, b)| n.wrapping_sub(*b))
        .collect();
    while d.last() == Some(&0) {
        d.pop();
    }
    d
}

/// A TCP conversation that is over: FIN from both sides, or a RST.
fn finished(c: &FlowCounters) -> bool {
    let a = c.flags(Direction::AToB);
    let b = c.flags(Direction::BToA);
    (a | b) & tcp::RST != 0 || (a & tcp::FIN != 0 && b & tcp::FIN != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_delta_drops_trailing_empty_buckets() {
        let mut now = [0u64; shared::rtt::RTT_BUCKETS];
        let mut before = now;
        assert!(hist_delta(&now, &before).is_empty());
        now[3] = 5;
        now[10] = 7;
        before[3] = 2;
        before[10] = 7;
        assert_eq!(hist_delta(&now, &before), vec![0, 0, 0, 3]);
    }

    #[test]
    fn finished_needs_both_fins_or_a_reset() {
        let mut c = FlowCounters {
            tcp_flags: tcp::FIN as u32,
            ..Default::default()
        };
        assert!(!finished(&c));
        c.tcp_flags |= (tcp::FIN as u32) << 8;
        assert!(finished(&c));
        c.tcp_flags = (tcp::RST as u32) << 8;
        assert!(finished(&c));
    }
}
