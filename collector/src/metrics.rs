//! Prometheus text exposition (`/metrics`): ingest counters and rates, decode errors by
//! reason, and per-device throughput and health from the store.

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
use std::{fmt::Write, sync::atomic::Ordering::Relaxed};

/// Every rejection reason, so each series exists (at 0) before its first occurrence.
pub const REASONS: [&str; 9] = shared::identity::Reject::REASONS;

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub fn render(
    stats: &IngestStats,
    rates: &Rates,
    devices: &[Device],
    tcp: &[DeviceTcp],
    dns: &[DeviceDns],
    services: &[ServiceNow],
) -> String {
    let mut o = String::with_capacity(4096);
    head(
        &mut o,
        "edgeflow_collector_messages_total",
        "counter",
        "MQTT messages handled since start, by outcome.",
    );
    let rejected = stats.rejected();
    for (outcome, v) in [
        ("stored", stats.summaries.load(Relaxed)),
        ("duplicate", stats.duplicates.load(Relaxed)),
        ("presence", stats.presence.load(Relaxed)),
        ("rejected", rejected.values().sum()),
    ] {
        let _ = writeln!(
            o,
            "edgeflow_collector_messages_total{{outcome=\"{outcome}\"}} {v}"
        );
    }
    head(
        &mut o,
        "edgeflow_collector_decode_errors_total",
        "counter",
        "Payloads rejected since start, by reason.",
    );
    let mut reasons: Vec<&str> = REASONS.to_vec();
    reasons.extend(rejected.keys().filter(|k| !REASONS.contains(k)));
    for r in reasons {
        let v = rejected.get(r).copied().unwrap_or(0);
        let _ = writeln!(
            o,
            "edgeflow_collector_decode_errors_total{{reason=\"{r}\"}} {v}"
        );
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
    ] {
        head(&mut o, name, "counter", help);
        let _ = writeln!(o, "{name} {v}");
    }
    for (name, help, v) in [
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
        head(&mut o, name, "counter", help);
        let _ = writeln!(o, "{name} {v}");
    }
    head(
        &mut o,
        "edgeflow_collector_ingest_queue_bytes",
        "gauge",
        "Received messages waiting to be stored (room counted in KiB).",
    );
    let _ = writeln!(
        o,
        "edgeflow_collector_ingest_queue_bytes {}",
        stats.queued_kib.load(Relaxed) * 1024
    );
    head(
        &mut o,
        "edgeflow_collector_broker_connected",
        "gauge",
        "1 while subscribed to the broker.",
    );
    let _ = writeln!(
        o,
        "edgeflow_collector_broker_connected {}",
        u8::from(stats.connected.load(Relaxed))
    );
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
        head(&mut o, name, "gauge", help);
        let _ = writeln!(o, "{name} {v}");
    }
    type Get = fn(&Device) -> Option<f64>;
    let per_device: [(&str, &str, &str, Get); 12] = [
        (
            "edgeflow_device_up",
            "gauge",
            "1 when the device is online.",
            |d| Some(if d.state == DeviceState::Online { 1.0 } else { 0.0 }),
        ),
        (
            "edgeflow_device_bytes_total",
            "counter",
            "Bytes the device counted, over the stored windows.",
            |d| Some(d.totals.bytes as f64),
        ),
        (
            "edgeflow_device_packets_total",
            "counter",
            "Packets the device counted, over the stored windows.",
            |d| Some(d.totals.packets as f64),
        ),
        (
            "edgeflow_device_bytes_per_second",
            "gauge",
            "Throughput in the device's latest window.",
            |d| d.latest.as_ref().map(|l| l.bytes_per_s),
        ),
        (
            "edgeflow_device_packets_per_second",
            "gauge",
            "Packet rate in the device's latest window.",
            |d| d.latest.as_ref().map(|l| l.packets_per_s),
        ),
        (
            "edgeflow_device_last_seen_seconds",
            "gauge",
            "When the collector received the device's latest summary (Unix time).",
            |d| d.latest.as_ref().map(|l| l.received_ms as f64 / 1000.0),
        ),
        (
            "edgeflow_device_clock_skew_seconds",
            "gauge",
            "The latest window's end by the device's clock minus its receive time by the collector's.",
            |d| d.latest.as_ref().map(|l| l.clock_skew_ms as f64 / 1000.0),
        ),
        (
            "edgeflow_device_table_fill_ratio",
            "gauge",
            "Active flows over flow-table capacity in the latest window.",
            |d| d.latest.as_ref().map(|l| l.health.table_fill),
        ),
        (
            "edgeflow_device_table_full_packets",
            "gauge",
            "Packets that went to the overflow record in the latest window.",
            |d| d.latest.as_ref().map(|l| l.health.table_full as f64),
        ),
        (
            "edgeflow_device_missing_windows",
            "gauge",
            "Windows the device numbered that the collector does not have (gaps), all runs stored.",
            |d| Some(d.gaps as f64),
        ),
        (
            "edgeflow_device_spool_dropped",
            "gauge",
            "Windows the device's spool dropped since the agent started (its own count).",
            |d| d.latest.as_ref().map(|l| l.health.spool_dropped as f64),
        ),
        (
            "edgeflow_device_cpu_percent",
            "gauge",
            "Agent CPU time as a share of one core in the latest window.",
            |d| d.latest.as_ref().map(|l| l.health.cpu_pct),
        ),
    ];
    for (name, kind, help, get) in per_device {
        head(&mut o, name, kind, help);
        for d in devices {
            if let Some(v) = get(d) {
                let _ = writeln!(
                    o,
                    "{name}{{site=\"{}\",device=\"{}\"}} {v}",
                    label(&d.site),
                    label(&d.device)
                );
            }
        }
    }
    render_tcp(&mut o, tcp);
    render_dns(&mut o, dns);
    render_services(&mut o, services);
    o
}

/// Per device and service (systemd unit, container or cgroup of the box's own sockets, where
/// the agent knows the owner): the latest window's throughput and flow records.
fn render_services(o: &mut String, services: &[ServiceNow]) {
    type Get = fn(&ServiceNow) -> f64;
    let gauges: [(&str, &str, Get); 2] = [
        (
            "edgeflow_service_bytes_per_second",
            "Throughput of a service's flows in its device's latest window (both ways).",
            |s| s.bytes_per_s,
        ),
        (
            "edgeflow_service_flow_records",
            "Flow records of a service in its device's latest window.",
            |s| s.flows as f64,
        ),
    ];
    for (name, help, get) in gauges {
        head(o, name, "gauge", help);
        for s in services {
            let _ = writeln!(
                o,
                "{name}{{site=\"{}\",device=\"{}\",service=\"{}\"}} {}",
                label(&s.site),
                label(&s.device),
                label(&s.service),
                get(s)
            );
        }
    }
}

/// Per device that measures TCP: connections per outcome reached, retransmitted segments and
/// bytes, over the stored windows (running sums: retention takes its share off).
fn render_tcp(o: &mut String, tcp: &[DeviceTcp]) {
    let name = "edgeflow_device_tcp_connections_total";
    head(
        o,
        name,
        "counter",
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
            let _ = writeln!(
                o,
                "{name}{{site=\"{}\",device=\"{}\",outcome=\"{outcome}\"}} {v}",
                label(&d.site),
                label(&d.device)
            );
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
        head(o, name, "counter", help);
        for d in tcp {
            let _ = writeln!(
                o,
                "{name}{{site=\"{}\",device=\"{}\"}} {}",
                label(&d.site),
                label(&d.device),
                get(d)
            );
        }
    }
}

/// Per device that looks at DNS: queries, responses by code, unanswered queries and latency
/// samples over the stored windows (running sums, like the TCP ones).
fn render_dns(o: &mut String, dns: &[DeviceDns]) {
    let name = "edgeflow_device_dns_responses_total";
    head(
        o,
        name,
        "counter",
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
            let _ = writeln!(
                o,
                "{name}{{site=\"{}\",device=\"{}\",rcode=\"{rcode}\"}} {v}",
                label(&d.site),
                label(&d.device)
            );
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
        head(o, name, "counter", help);
        for d in dns {
            let _ = writeln!(
                o,
                "{name}{{site=\"{}\",device=\"{}\"}} {}",
                label(&d.site),
                label(&d.device),
                get(d)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
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
