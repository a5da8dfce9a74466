//! Prometheus text exposition (`/metrics`): ingest counters and rates, decode errors by
//! reason, and per-device throughput and health from the store.
//!
//! The text is written by `prometheus-client` (its Prometheus 0.0.4 encoder: names, `_total`
//! on counters, HELP escaping, label-value escaping, number formatting); this module only
//! gathers each scrape's values into [`Families`], in a fixed order, and hands them over as
//! one `Collector`. The values come from the store at scrape time, so nothing is registered
//! for the process's lifetime.

use crate::{
    api::{
        devices::{Device, DeviceState},
        dns::DeviceDns,
        owners::ServiceNow,
        tcp::DeviceTcp,
    },
    ingest::IngestStats,
    rate::Rates,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Registry,
};
use std::sync::atomic::Ordering::Relaxed;

/// Every rejection reason, so each series exists (at 0) before its first occurrence.
pub const REASONS: [&str; 9] = shared::identity::Reject::REASONS;

/// A series' labels, in the order they are written.
pub type Labels = Vec<(&'static str, String)>;

/// One sample's value: counts stay integers; a gauge that is a whole number is written as
/// one too (`6200`, not `6200.0`), as the hand-written text did, so series read the same.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}

/// One metric family of a scrape: name (a counter's without `_total`: the encoder adds it),
/// help, type and its series.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    series: Vec<(Labels, Value)>,
}

/// The families of one scrape, in the order they are exposed.
#[derive(Debug, Default)]
pub struct Families(Vec<Family>);

impl Families {
    /// Starts a counter family; `name` ends in `_total` as exposed.
    pub fn counter(&mut self, name: &'static str, help: &'static str) -> &mut Self {
        let name = name
            .strip_suffix("_total")
            .expect("a counter's name ends in _total");
        self.family(name, help, MetricType::Counter)
    }

    /// Starts a gauge family.
    pub fn gauge(&mut self, name: &'static str, help: &'static str) -> &mut Self {
        self.family(name, help, MetricType::Gauge)
    }

    fn family(&mut self, name: &'static str, help: &'static str, kind: MetricType) -> &mut Self {
        self.0.push(Family {
            name,
            help,
            kind,
            series: Vec::new(),
        });
        self
    }

    /// Adds a series to the family started last.
    pub fn push(&mut self, labels: Labels, v: impl Into<Value>) -> &mut Self {
        let f = self.0.last_mut().expect("a family was started");
        f.series.push((labels, v.into()));
        self
    }

    /// The Prometheus text (version 0.0.4) of these families.
    pub fn encode(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Largest integer an f64 holds exactly.
const EXACT: f64 = (1u64 << 53) as f64;

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let mut m = encoder.encode_descriptor(f.name, f.help, None, f.kind)?;
            for (labels, v) in &f.series {
                let e = m.encode_family(labels)?;
                match (f.kind, *v) {
                    (MetricType::Counter, Value::Int(v)) => ConstCounter::new(v).encode(e)?,
                    (MetricType::Counter, Value::Float(v)) => ConstCounter::new(v).encode(e)?,
                    (_, Value::Int(v)) => ConstGauge::new(v as i64).encode(e)?,
                    (_, Value::Float(v)) if v.fract() == 0.0 && v.abs() < EXACT => {
                        ConstGauge::new(v as i64).encode(e)?
                    }
                    (_, Value::Float(v)) => ConstGauge::new(v).encode(e)?,
                }
            }
        }
        Ok(())
    }
}

/// `site` and `device` labels.
fn dev(site: &str, device: &str) -> Labels {
    vec![("site", site.to_string()), ("device", device.to_string())]
}

/// `site`, `device` and one more label.
fn dev_and(site: &str, device: &str, k: &'static str, v: &str) -> Labels {
    let mut l = dev(site, device);
    l.push((k, v.to_string()));
    l
}

pub fn render(
    stats: &IngestStats,
    rates: &Rates,
    devices: &[Device],
    tcp: &[DeviceTcp],
    dns: &[DeviceDns],
    services: &[ServiceNow],
) -> String {
    let mut o = Families::default();
    let rejected = stats.rejected();
    o.counter(
        "edgeflow_collector_messages_total",
        "MQTT messages handled since start, by outcome.",
    );
    for (outcome, v) in [
        ("stored", stats.summaries.load(Relaxed)),
        ("duplicate", stats.duplicates.load(Relaxed)),
        ("presence", stats.presence.load(Relaxed)),
        ("rejected", rejected.values().sum()),
    ] {
        o.push(vec![("outcome", outcome.to_string())], v);
    }
    o.counter(
        "edgeflow_collector_decode_errors_total",
        "Payloads rejected since start, by reason.",
    );
    let mut reasons: Vec<&str> = REASONS.to_vec();
    reasons.extend(rejected.keys().filter(|k| !REASONS.contains(k)));
    for r in reasons {
        let v = rejected.get(r).copied().unwrap_or(0);
        o.push(vec![("reason", r.to_string())], v);
    }
    for (name, help, v) in [
        (
            "edgeflow_collector_flow_records_total",
            "Flow records stored since start.",
            stats.flow_records.load(Relaxed),
        ),
        (
            "edgeflow_collector_payload_bytes_total",
            "MQTT payload bytes handled since start.",
            stats.payload_bytes.load(Relaxed),
        ),
        (
            "edgeflow_collector_store_errors_total",
            "Failed attempts to store a batch (each retried until it succeeds).",
            stats.store_errors.load(Relaxed),
        ),
        (
            "edgeflow_collector_ingest_backpressure_total",
            "Times the collector stopped reading from the broker because its queue was full.",
            stats.backpressure.load(Relaxed),
        ),
    ] {
        o.counter(name, help).push(vec![], v);
    }
    o.gauge(
        "edgeflow_collector_ingest_queue_bytes",
        "Received messages waiting to be stored (room counted in KiB).",
    )
    .push(vec![], stats.queued_kib.load(Relaxed) * 1024);
    o.gauge(
        "edgeflow_collector_broker_connected",
        "1 while subscribed to the broker.",
    )
    .push(vec![], u64::from(stats.connected.load(Relaxed)));
    for (name, help, v) in [
        (
            "edgeflow_collector_ingest_messages_per_second",
            "Messages handled per second over the last 10 s.",
            rates.messages_per_s,
        ),
        (
            "edgeflow_collector_ingest_flow_records_per_second",
            "Flow records stored per second over the last 10 s.",
            rates.flow_records_per_s,
        ),
    ] {
        o.gauge(name, help).push(vec![], v);
    }
    type Get = fn(&Device) -> Option<Value>;
    let per_device: [(&str, bool, &str, Get); 19] = [
        (
            "edgeflow_device_up",
            false,
            "1 when the device is online.",
            |d| Some(Value::Int(u64::from(d.state == DeviceState::Online))),
        ),
        (
            "edgeflow_device_bytes_total",
            true,
            "Bytes the device counted, over the stored windows.",
            |d| Some(d.totals.bytes.into()),
        ),
        (
            "edgeflow_device_packets_total",
            true,
            "Packets the device counted, over the stored windows.",
            |d| Some(d.totals.packets.into()),
        ),
        (
            "edgeflow_device_bytes_per_second",
            false,
            "Throughput in the device's latest window.",
            |d| d.latest.as_ref().map(|l| l.bytes_per_s.into()),
        ),
        (
            "edgeflow_device_packets_per_second",
            false,
            "Packet rate in the device's latest window.",
            |d| d.latest.as_ref().map(|l| l.packets_per_s.into()),
        ),
        (
            "edgeflow_device_last_seen_seconds",
            false,
            "When the collector received the device's latest summary (Unix time).",
            |d| d.latest.as_ref().map(|l| (l.received_ms as f64 / 1000.0).into()),
        ),
        (
            "edgeflow_device_clock_skew_seconds",
            false,
            "The latest window's end by the device's clock minus its receive time by the collector's.",
            |d| d.latest.as_ref().map(|l| (l.clock_skew_ms as f64 / 1000.0).into()),
        ),
        (
            "edgeflow_device_table_fill_ratio",
            false,
            "Active flows over flow-table capacity in the latest window.",
            |d| d.latest.as_ref().map(|l| l.health.table_fill.into()),
        ),
        (
            "edgeflow_device_table_full_packets",
            false,
            "Packets that went to the overflow record in the latest window.",
            |d| d.latest.as_ref().map(|l| Value::Int(l.health.table_full)),
        ),
        (
            "edgeflow_device_missing_windows",
            false,
            "Windows the device numbered that the collector does not have (gaps), all runs stored.",
            |d| Some(Value::Int(d.gaps)),
        ),
        (
            "edgeflow_device_spool_dropped",
            false,
            "Windows the device's spool dropped since the agent started (its own count).",
            |d| d.latest.as_ref().map(|l| Value::Int(l.health.spool_dropped)),
        ),
        (
            "edgeflow_device_spool_fallback",
            false,
            "1 when the device's spool file could not be written in its latest window (summaries wait in memory).",
            |d| d.latest.as_ref().map(|l| Value::Int(u64::from(l.health.spool_fallback))),
        ),
        (
            "edgeflow_device_spool_write_errors",
            false,
            "Failed spool file writes since the agent started (its own count).",
            |d| d.latest.as_ref().map(|l| Value::Int(l.health.spool_write_errors)),
        ),
        (
            "edgeflow_device_clock_step_seconds",
            false,
            "How far the device's wall clock was stepped in its latest window (negative: set back).",
            |d| d.latest.as_ref().map(|l| (l.health.clock_step_ms as f64 / 1000.0).into()),
        ),
        (
            "edgeflow_device_clock_steps",
            false,
            "Wall-clock steps since the agent started (its own count).",
            |d| d.latest.as_ref().map(|l| Value::Int(l.health.clock_steps)),
        ),
        (
            "edgeflow_device_reattached",
            false,
            "Re-attachments to interfaces re-created under a watched name since the agent started.",
            |d| d.latest.as_ref().map(|l| Value::Int(l.health.reattached)),
        ),
        (
            "edgeflow_device_header_excess_packets",
            false,
            "Packets whose IP header claimed more than the frame held, in the latest window.",
            |d| d.latest.as_ref().map(|l| Value::Int(l.health.header_excess)),
        ),
        (
            "edgeflow_device_reclaimed_packets",
            false,
            "Packets of flows reclaimed under a flood in the latest window (part of table_full).",
            |d| d.latest.as_ref().map(|l| Value::Int(l.health.reclaimed)),
        ),
        (
            "edgeflow_device_cpu_percent",
            false,
            "Agent CPU time as a share of one core in the latest window.",
            |d| d.latest.as_ref().map(|l| l.health.cpu_pct.into()),
        ),
    ];
    for (name, counter, help, get) in per_device {
        if counter {
            o.counter(name, help);
        } else {
            o.gauge(name, help);
        }
        for d in devices {
            if let Some(v) = get(d) {
                o.push(dev(&d.site, &d.device), v);
            }
        }
    }
    render_tcp(&mut o, tcp);
    render_dns(&mut o, dns);
    render_services(&mut o, services);
    o.encode()
}

/// Per device and service (systemd unit, container or cgroup of the box's own sockets, where
/// the agent knows the owner): the latest window's throughput and flow records.
fn render_services(o: &mut Families, services: &[ServiceNow]) {
    type Get = fn(&ServiceNow) -> Value;
    let gauges: [(&str, &str, Get); 2] = [
        (
            "edgeflow_service_bytes_per_second",
            "Throughput of a service's flows in its device's latest window (both ways).",
            |s| s.bytes_per_s.into(),
        ),
        (
            "edgeflow_service_flow_records",
            "Flow records of a service in its device's latest window.",
            |s| Value::Int(s.flows),
        ),
    ];
    for (name, help, get) in gauges {
        o.gauge(name, help);
        for s in services {
            o.push(dev_and(&s.site, &s.device, "service", &s.service), get(s));
        }
    }
}

/// Per device that measures TCP: connections per outcome reached, retransmitted segments and
/// bytes, over the stored windows (running sums: retention takes its share off).
fn render_tcp(o: &mut Families, tcp: &[DeviceTcp]) {
    o.counter(
        "edgeflow_device_tcp_connections_total",
        "TCP connections that reached each outcome (refused and unanswered: failed connects), over the stored windows.",
    );
    for d in tcp {
        let c = &d.connections;
        for (outcome, v) in [
            ("established", c.established),
            ("refused", c.refused),
            ("unanswered", c.unanswered),
            ("reset", c.reset),
            ("closed", c.closed),
            ("unknown", c.unknown),
        ] {
            o.push(dev_and(&d.site, &d.device, "outcome", outcome), v);
        }
    }
    type Get = fn(&DeviceTcp) -> u64;
    let counts: [(&str, &str, Get); 2] = [
        (
            "edgeflow_device_tcp_retransmitted_segments_total",
            "TCP segments retransmitted (both ways), over the stored windows.",
            |d| d.retransmitted.packets,
        ),
        (
            "edgeflow_device_tcp_retransmitted_bytes_total",
            "TCP payload bytes retransmitted (both ways), over the stored windows.",
            |d| d.retransmitted.bytes,
        ),
    ];
    for (name, help, get) in counts {
        o.counter(name, help);
        for d in tcp {
            o.push(dev(&d.site, &d.device), get(d));
        }
    }
}

/// Per device that looks at DNS: queries, responses by code, unanswered queries and latency
/// samples over the stored windows (running sums, like the TCP ones).
fn render_dns(o: &mut Families, dns: &[DeviceDns]) {
    o.counter(
        "edgeflow_device_dns_responses_total",
        "DNS responses by response code (noerror, nxdomain, servfail, refused, other), over the stored windows.",
    );
    for d in dns {
        let c = &d.rcodes;
        for (rcode, v) in [
            ("noerror", c.noerror),
            ("nxdomain", c.nxdomain),
            ("servfail", c.servfail),
            ("refused", c.refused),
            ("other", c.other),
        ] {
            o.push(dev_and(&d.site, &d.device, "rcode", rcode), v);
        }
    }
    type Get = fn(&DeviceDns) -> u64;
    let counts: [(&str, &str, Get); 3] = [
        (
            "edgeflow_device_dns_queries_total",
            "DNS queries, over the stored windows.",
            |d| d.queries,
        ),
        (
            "edgeflow_device_dns_unanswered_total",
            "DNS queries that got no response, over the stored windows.",
            |d| d.unanswered,
        ),
        (
            "edgeflow_device_dns_latency_samples_total",
            "DNS queries whose response was matched and timed, over the stored windows.",
            |d| d.latency_samples,
        ),
    ];
    for (name, help, get) in counts {
        o.counter(name, help);
        for d in dns {
            o.push(dev(&d.site, &d.device), get(d));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        let mut o = Families::default();
        o.gauge("g", "A gauge.")
            .push(vec![("site", "a\"b\\c\nd".into())], 1.5);
        assert!(
            o.encode().contains("g{site=\"a\\\"b\\\\c\\nd\"} 1.5\n"),
            "escaped"
        );
    }

    #[test]
    fn counters_gain_total_and_whole_gauges_stay_integers() {
        let mut o = Families::default();
        o.counter("c_total", "Help \\ with\na newline.")
            .push(vec![], 7u64);
        o.gauge("g", "G.").push(vec![], 6200.0).push(vec![], 0.25);
        assert_eq!(
            o.encode(),
            "# HELP c_total Help \\\\ with\\na newline.\n# TYPE c_total counter\nc_total 7\n\
             # HELP g G.\n# TYPE g gauge\ng 6200\ng 0.25\n"
        );
    }

    #[test]
    fn every_reason_has_a_series() {
        let text = render(
            &IngestStats::default(),
            &Rates::default(),
            &[],
            &[],
            &[],
            &[],
        );
        for r in REASONS {
            assert!(
                text.contains(&format!(
                    "edgeflow_collector_decode_errors_total{{reason=\"{r}\"}} 0"
                )),
                "{r}"
            );
        }
    }
}
