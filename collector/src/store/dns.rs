//! What DNS did (issue 21's DNS block, [`Dns`]) as both stores keep it, in the same three
//! places as the TCP figures (`store::tcp`), so each reader pays for only what it needs:
//!
//! - `flows`: the record's block as [`FLOW_COLUMNS`] (the names and resolvers of `/api/dns`);
//! - `summaries`: the window's figures added up ([`WindowDns`], [`SUMMARY_COLUMNS`]) and its
//!   latency histogram (`dns_hist`, like `rtt_hist`): totals, the distribution and the series
//!   over time without reading a flow record;
//! - `device_totals`: running sums ([`TOTAL_COLUMNS`]: `/metrics` costs the number of devices).
//!
//! A summary without DNS (an agent before version 3, or the feature switched off) leaves its
//! columns NULL and adds nothing; an old database gets the columns added in place.
//!
//! Query and response counts are DNS messages, i.e. packets: stored as counted and scaled by
//! `sample_every` like every packet count. Latency samples are not scaled (they are samples).
//! Names are stored in lower case (clients ask in any case, and 0x20 randomisation mixes it on
//! purpose). A record's latency min and max are its flow's since the flow began (the agent
//! keeps no per-window extremes), its average and samples the window's.

use shared::wire::{Dns, Summary};

/// The DNS columns of `flows`, after the others: the latest query's name (TEXT), then integers.
pub const FLOW_COLUMNS: [&str; 14] = [
    "dns_name",
    "dns_qtype",
    "dns_queries",
    "dns_responses",
    "dns_noerror",
    "dns_nxdomain",
    "dns_servfail",
    "dns_refused",
    "dns_other",
    "dns_unanswered",
    "dns_lat_min_us",
    "dns_lat_avg_us",
    "dns_lat_max_us",
    "dns_lat_samples",
];

/// Response codes as the columns and the API name them, in [`FlowDns::rcodes`] order.
pub const RCODES: [&str; 5] = ["noerror", "nxdomain", "servfail", "refused", "other"];

/// One record's DNS block as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowDns {
    pub name: Option<String>,
    pub qtype: i64,
    pub queries: i64,
    pub responses: i64,
    /// Responses per code, in [`RCODES`] order.
    pub rcodes: [i64; 5],
    pub unanswered: i64,
    /// min, avg, max µs and samples; `None` without a sample.
    pub latency: Option<[i64; 4]>,
}

/// A query name as stored: lower case (the wire keeps printable ASCII only), and `…` after a
/// name the agent cut at its 64-byte bound.
pub fn name_text(d: &Dns) -> Option<String> {
    if d.name.is_empty() {
        return None;
    }
    let mut s = d.name.as_str().to_ascii_lowercase();
    if d.name_truncated {
        s.push('…');
    }
    Some(s)
}

impl FlowDns {
    pub fn of(d: &Dns) -> FlowDns {
        FlowDns {
            name: name_text(d),
            qtype: i64::from(d.qtype),
            queries: i64::from(d.queries),
            responses: i64::from(d.responses),
            rcodes: [
                i64::from(d.noerror),
                i64::from(d.nxdomain),
                i64::from(d.servfail),
                i64::from(d.refused),
                i64::from(d.other_rcode),
            ],
            unanswered: i64::from(d.unanswered),
            latency: d.latency.map(|l| {
                [
                    i64::from(l.min_us),
                    i64::from(l.avg_us),
                    i64::from(l.max_us),
                    i64::from(l.samples),
                ]
            }),
        }
    }

    /// The integer columns (`FLOW_COLUMNS[1..]`), NULL without a block.
    pub fn ints(d: Option<&FlowDns>) -> [Option<i64>; 13] {
        let Some(d) = d else {
            return [None; 13];
        };
        let l = d.latency;
        [
            Some(d.qtype),
            Some(d.queries),
            Some(d.responses),
            Some(d.rcodes[0]),
            Some(d.rcodes[1]),
            Some(d.rcodes[2]),
            Some(d.rcodes[3]),
            Some(d.rcodes[4]),
            Some(d.unanswered),
            l.map(|l| l[0]),
            l.map(|l| l[1]),
            l.map(|l| l[2]),
            l.map(|l| l[3]),
        ]
    }
}

/// The DNS columns of `summaries` (besides `dns_hist`): messages as counted (queries,
/// responses, per response code, unanswered queries), then latency samples, their sum
/// (the records' averages times their samples) and the smallest and largest, then the agent's
/// own counts of port-53 payloads its parser rejected and of pending queries its bound pushed
/// out (`Health::dns_malformed`, `dns_evicted`).
pub const SUMMARY_COLUMNS: [&str; 14] = [
    "dns_queries",
    "dns_responses",
    "dns_noerror",
    "dns_nxdomain",
    "dns_servfail",
    "dns_refused",
    "dns_other",
    "dns_unanswered",
    "dns_lat_samples",
    "dns_lat_sum_us",
    "dns_lat_min_us",
    "dns_lat_max_us",
    "dns_malformed",
    "dns_evicted",
];

/// The running sums in `device_totals`: windows with DNS, then the message counts (scaled by
/// `sample_every`), then latency samples.
pub const TOTAL_COLUMNS: [&str; 10] = [
    "dns_windows",
    "dns_queries",
    "dns_responses",
    "dns_noerror",
    "dns_nxdomain",
    "dns_servfail",
    "dns_refused",
    "dns_other",
    "dns_unanswered",
    "dns_lat_samples",
];

/// One summary's DNS figures (see [`SUMMARY_COLUMNS`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowDns {
    /// queries, responses, the five response codes, unanswered.
    pub messages: [i64; 8],
    pub samples: i64,
    pub sum_us: i64,
    pub min_us: Option<i64>,
    pub max_us: Option<i64>,
    pub malformed: i64,
    pub evicted: i64,
    /// The window's latency histogram as stored (`"n0,n1,…"`), `None` when empty.
    pub hist: Option<String>,
}

impl WindowDns {
    /// `None` when the agent did not look at DNS in this summary.
    pub fn of(s: &Summary) -> Option<WindowDns> {
        if !s.dns {
            return None;
        }
        let mut w = WindowDns {
            malformed: super::n(s.health.dns_malformed),
            evicted: super::n(s.health.dns_evicted),
            ..WindowDns::default()
        };
        for f in &s.flows {
            let Some(d) = &f.dns else { continue };
            let d = FlowDns::of(d);
            let v = [
                d.queries,
                d.responses,
                d.rcodes[0],
                d.rcodes[1],
                d.rcodes[2],
                d.rcodes[3],
                d.rcodes[4],
                d.unanswered,
            ];
            for (sum, v) in w.messages.iter_mut().zip(v) {
                *sum = sum.saturating_add(v);
            }
            if let Some([min, avg, max, samples]) = d.latency {
                w.samples += samples;
                w.sum_us = w.sum_us.saturating_add(avg.saturating_mul(samples));
                w.min_us = Some(w.min_us.map_or(min, |m| m.min(min)));
                w.max_us = Some(w.max_us.map_or(max, |m| m.max(max)));
            }
        }
        w.hist = (!s.dns_hist.is_empty()).then(|| {
            let v: Vec<String> = s.dns_hist.iter().map(|b| b.to_string()).collect();
            v.join(",")
        });
        Some(w)
    }

    /// In [`SUMMARY_COLUMNS`] order; all NULL without DNS.
    pub fn columns(w: Option<&WindowDns>) -> [Option<i64>; 14] {
        let Some(w) = w else {
            return [None; 14];
        };
        let m = w.messages;
        [
            Some(m[0]),
            Some(m[1]),
            Some(m[2]),
            Some(m[3]),
            Some(m[4]),
            Some(m[5]),
            Some(m[6]),
            Some(m[7]),
            Some(w.samples),
            Some(w.sum_us),
            w.min_us,
            w.max_us,
            Some(w.malformed),
            Some(w.evicted),
        ]
    }

    /// What the summary adds to its device's running sums ([`TOTAL_COLUMNS`]); zeros without
    /// DNS.
    pub fn totals(w: Option<&WindowDns>, sample_every: u32) -> [f64; 10] {
        let Some(w) = w else {
            return [0.0; 10];
        };
        let scale = f64::from(sample_every);
        let m = w.messages.map(|v| v as f64 * scale);
        [
            1.0,
            m[0],
            m[1],
            m[2],
            m[3],
            m[4],
            m[5],
            m[6],
            m[7],
            w.samples as f64,
        ]
    }
}

/// The SQL expressions of [`TOTAL_COLUMNS`] over summaries (alias `d0`..`d9`), for the running
/// sums' retention and checks; the same text in both databases.
pub fn sum_totals_sql() -> String {
    let mut cols = vec!["COUNT(dns_queries) AS d0".to_string()];
    for (i, c) in SUMMARY_COLUMNS[..8].iter().enumerate() {
        cols.push(format!(
            "COALESCE(SUM(CAST({c} AS DOUBLE PRECISION) * sample_every), 0) AS d{}",
            i + 1
        ));
    }
    cols.push("COALESCE(SUM(CAST(dns_lat_samples AS DOUBLE PRECISION)), 0) AS d9".into());
    cols.join(", ")
}

/// `device_totals` columns set to themselves minus `d.d0`..`d.d9` ([`super::subtract_totals`]).
pub fn subtract_sql() -> String {
    TOTAL_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = device_totals.{c} - d.d{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
