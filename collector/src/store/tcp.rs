//! What connections did (issue 21's TCP block, [`Tcp`]) as both stores keep it, in three
//! places so each reader pays for only what it needs:
//!
//! - `flows`: the record's block as [`FLOW_COLUMNS`] (the destinations of `/api/tcp`);
//! - `summaries`: the window's figures added up ([`WindowTcp`], [`SUMMARY_COLUMNS`]: totals
//!   and the series over time without reading a flow record);
//! - `device_totals`: running sums ([`TOTAL_COLUMNS`]: `/metrics` costs the number of devices).
//!
//! A summary without TCP health (a version 1 agent, or the feature switched off) leaves its
//! columns NULL and adds nothing; an old database gets the columns added in place (NULL for
//! what it holds), so a fleet of old and new agents shares one store.
//!
//! Connections are counted once per outcome they reach: by the record whose `decided` bit says
//! the outcome was reached in its window (established and later closed counts once for each).
//! `unknown` (no handshake seen) is never decided: it counts a connection whose first window
//! (first seen at or after the window start) ended without a handshake seen. Counts of
//! connections are as seen; retransmissions and RSTs are segments, scaled by `sample_every`
//! like every packet count.

use super::n;
use shared::wire::{Outcome, Summary, Tcp};

/// The TCP columns of `flows`, after the others: the outcome by name, then integers.
pub const FLOW_COLUMNS: [&str; 11] = [
    "tcp_outcome",
    "tcp_decided",
    "tcp_syn_retries",
    "tcp_fwd_retrans_packets",
    "tcp_fwd_retrans_bytes",
    "tcp_rev_retrans_packets",
    "tcp_rev_retrans_bytes",
    "tcp_fwd_rst",
    "tcp_rev_rst",
    "tcp_fwd_fin",
    "tcp_rev_fin",
];

/// A record's outcome as stored (NULL without a block).
pub fn outcome(t: &Option<Tcp>) -> Option<&'static str> {
    t.as_ref().map(|t| t.outcome.name())
}

/// A record's integer TCP columns (`FLOW_COLUMNS[1..]`), NULL without a block.
pub fn flow_ints(t: &Option<Tcp>) -> [Option<i64>; 10] {
    let Some(t) = t else {
        return [None; 10];
    };
    [
        i64::from(t.decided),
        i64::from(t.syn_retries),
        n(t.fwd.retrans.packets),
        n(t.fwd.retrans.bytes),
        n(t.rev.retrans.packets),
        n(t.rev.retrans.bytes),
        i64::from(t.fwd.rst),
        i64::from(t.rev.rst),
        i64::from(t.fwd.fin),
        i64::from(t.rev.fin),
    ]
    .map(Some)
}

/// The outcomes counted per connection, in the order of [`WindowTcp::connections`].
pub const OUTCOMES: [Outcome; 6] = [
    Outcome::Established,
    Outcome::Refused,
    Outcome::Unanswered,
    Outcome::Reset,
    Outcome::Closed,
    Outcome::Unknown,
];

/// The TCP columns of `summaries`: connections per outcome ([`OUTCOMES`]), then SYN retries,
/// retransmitted segments and bytes (both ways), RST segments (both ways), and the bytes (both
/// ways) of the flows that carry a block (a retransmit rate's denominator).
pub const SUMMARY_COLUMNS: [&str; 11] = [
    "tcp_established",
    "tcp_refused",
    "tcp_unanswered",
    "tcp_reset",
    "tcp_closed",
    "tcp_unknown",
    "tcp_syn_retries",
    "tcp_retrans_packets",
    "tcp_retrans_bytes",
    "tcp_rst",
    "tcp_bytes",
];

/// The running sums in `device_totals`: windows with TCP health, connections per outcome,
/// retransmitted segments and bytes (scaled by `sample_every`).
pub const TOTAL_COLUMNS: [&str; 9] = [
    "tcp_windows",
    "tcp_established",
    "tcp_refused",
    "tcp_unanswered",
    "tcp_reset",
    "tcp_closed",
    "tcp_unknown",
    "tcp_retrans_packets",
    "tcp_retrans_bytes",
];

/// One summary's TCP figures (see [`SUMMARY_COLUMNS`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowTcp {
    pub connections: [i64; 6],
    pub syn_retries: i64,
    pub retrans_packets: i64,
    pub retrans_bytes: i64,
    pub rst: i64,
    pub bytes: i64,
}

impl WindowTcp {
    /// `None` when the agent did not measure TCP in this summary.
    pub fn of(s: &Summary) -> Option<WindowTcp> {
        if !s.tcp_health {
            return None;
        }
        let mut w = WindowTcp::default();
        for f in &s.flows {
            let Some(t) = &f.tcp else { continue };
            if t.decided {
                if let Some(i) = OUTCOMES.iter().position(|&o| o == t.outcome) {
                    w.connections[i] += 1;
                }
                // The handshake's retries, once per connection: they are a running count.
                if matches!(
                    t.outcome,
                    Outcome::Established | Outcome::Refused | Outcome::Unanswered
                ) {
                    w.syn_retries += i64::from(t.syn_retries);
                }
            }
            if t.outcome == Outcome::Unknown && f.first_seen_ms >= 0 {
                w.connections[5] += 1;
            }
            let r = t.retrans();
            w.retrans_packets = w.retrans_packets.saturating_add(n(r.packets));
            w.retrans_bytes = w.retrans_bytes.saturating_add(n(r.bytes));
            w.rst += i64::from(t.fwd.rst) + i64::from(t.rev.rst);
            w.bytes = w
                .bytes
                .saturating_add(n(f.fwd.bytes))
                .saturating_add(n(f.rev.bytes));
        }
        Some(w)
    }

    /// In [`SUMMARY_COLUMNS`] order.
    pub fn columns(&self) -> [i64; 11] {
        let c = self.connections;
        [
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5],
            self.syn_retries,
            self.retrans_packets,
            self.retrans_bytes,
            self.rst,
            self.bytes,
        ]
    }

    /// What the summary adds to its device's running sums ([`TOTAL_COLUMNS`]); zeros without
    /// TCP health.
    pub fn totals(w: Option<WindowTcp>, sample_every: u32) -> [f64; 9] {
        let Some(w) = w else {
            return [0.0; 9];
        };
        let c = w.connections.map(|v| v as f64);
        let scale = f64::from(sample_every);
        [
            1.0,
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5],
            w.retrans_packets as f64 * scale,
            w.retrans_bytes as f64 * scale,
        ]
    }
}

/// The SQL expressions of [`TOTAL_COLUMNS`] over summaries (alias `t0`..`t8`), for the running
/// sums' retention and checks; the same text in both databases.
pub fn sum_totals_sql() -> String {
    let mut cols = vec!["COUNT(tcp_established) AS t0".to_string()];
    for (i, c) in SUMMARY_COLUMNS[..6].iter().enumerate() {
        cols.push(format!(
            "COALESCE(SUM(CAST({c} AS DOUBLE PRECISION)), 0) AS t{}",
            i + 1
        ));
    }
    for (i, c) in ["tcp_retrans_packets", "tcp_retrans_bytes"]
        .iter()
        .enumerate()
    {
        cols.push(format!(
            "COALESCE(SUM(CAST({c} AS DOUBLE PRECISION) * sample_every), 0) AS t{}",
            i + 7
        ));
    }
    cols.join(", ")
}

/// `device_totals` columns set to themselves minus `d.t0`..`d.t8`.
pub fn subtract_sql() -> String {
    TOTAL_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = device_totals.{c} - d.t{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::wire::{Count, FlowRecord, Health, TcpDir};

    fn tcp(outcome: Outcome, decided: bool) -> Option<Tcp> {
        Some(Tcp {
            outcome,
            decided,
            ..Tcp::default()
        })
    }

    #[test]
    fn a_window_counts_decided_outcomes_unknown_first_windows_and_retransmissions() {
        let rec = |t: Option<Tcp>, first_seen_ms: i64| FlowRecord {
            proto: 6,
            fwd: Count {
                packets: 10,
                bytes: 1_000,
            },
            rev: Count {
                packets: 10,
                bytes: 3_000,
            },
            first_seen_ms,
            tcp: t,
            ..Default::default()
        };
        let mut unanswered = tcp(Outcome::Unanswered, true).unwrap();
        unanswered.syn_retries = 3;
        let mut retrans = tcp(Outcome::Established, false).unwrap();
        retrans.fwd = TcpDir {
            retrans: Count {
                packets: 2,
                bytes: 2_800,
            },
            rst: 0,
            fin: 0,
        };
        retrans.rev.rst = 1;
        let mut s = Summary {
            device: "d".try_into().unwrap(),
            site: "s".try_into().unwrap(),
            boot_id: 1,
            seq: 0,
            part: 0,
            parts: 1,
            window_start_ms: 0,
            window_len_ms: 10_000,
            sample_every: 2,
            totals: Count::default(),
            overflow: Count::default(),
            other: Count::default(),
            other_flows: 0,
            health: Health::default(),
            addrs: vec![shared::wire::Addr::V4([10, 0, 0, 1])],
            flows: vec![
                rec(tcp(Outcome::Established, true), 5),
                rec(tcp(Outcome::Refused, true), 5),
                rec(Some(unanswered), -20_000),
                rec(Some(retrans), -20_000),
                // Mid-stream in its first window: unknown; in a later one: nothing new.
                rec(tcp(Outcome::Unknown, false), 0),
                rec(tcp(Outcome::Unknown, false), -1),
                // Still connecting: nothing decided yet.
                rec(tcp(Outcome::Connecting, false), 5),
                rec(None, 0),
            ],
            rtt_hist: heapless::Vec::new(),
            tcp_health: true,
            dns_hist: Default::default(),
            dns: false,
        };
        let w = WindowTcp::of(&s).unwrap();
        assert_eq!(w.connections, [1, 1, 1, 0, 0, 1]);
        assert_eq!(w.syn_retries, 3);
        assert_eq!((w.retrans_packets, w.retrans_bytes, w.rst), (2, 2_800, 1));
        assert_eq!(w.bytes, 7 * 4_000, "only the flows with a block");
        assert_eq!(
            WindowTcp::totals(Some(w), s.sample_every),
            [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 4.0, 5_600.0]
        );
        s.tcp_health = false;
        assert_eq!(WindowTcp::of(&s), None);
        assert_eq!(WindowTcp::totals(None, 2), [0.0; 9]);
        assert_eq!(flow_ints(&None), [None; 10]);
        assert_eq!(outcome(&Some(retrans)), Some("established"));
    }
}
