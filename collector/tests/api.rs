//! The fleet API (docs: the README's API section) through a real Mosquitto and the collector
//! binary: a small fleet of hand-built devices, each with one thing wrong or nothing, must
//! come out of /api/devices (search, site, sort, pages), /api/fleet, /api/series (top, fleet,
//! others, site) and /api/health exactly. Every test runs against both stores: `sqlite::NAME`
//! and `postgres::NAME`.

use serde_json::{json, Value};
use shared::wire::{self, Message, Outcome, Summary, Tcp};
use std::time::Duration;
use testkit::mosquitto::Mosquitto;
use testkit::{collector::*, postgres::SharedPostgres, publisher::*, summary::*};

/// Where the collector stores and the API reads.
#[derive(Debug, Clone, Copy)]
enum Store {
    Sqlite,
    /// A database of its own on the binary's shared server.
    Postgres,
}

/// Each test once per store.
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name(super::Store::Sqlite)
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                super::$name(super::Store::Postgres)
            })*
        }
    };
}

on_every_store!(
    devices_state_attention_search_sort_and_pages,
    fleet_counts_states_reasons_sites_and_traffic,
    series_top_devices_the_fleet_and_the_others,
    health_of_one_device_over_time,
    flows_talkers_conversations_rtt_stored_and_metrics,
    tcp_destinations_totals_series_and_metrics_in_a_mixed_fleet,
    dns_names_resolvers_totals_series_and_metrics_in_a_mixed_fleet,
    owners_processes_services_lan_devices_flow_filters_and_metrics,
    bad_days_in_health_attention_fleet_and_metrics,
);

/// A fleet of four devices in two sites, published once and stored.
struct Fleet {
    c: Collector,
    _broker: Mosquitto,
    /// Held while the collector runs (declared after it: dropped after it stops).
    _pg: Option<(std::sync::Arc<SharedPostgres>, String)>,
    /// The first window's start (windows are 10 s, aligned to 10 s).
    base: u64,
}

fn flows(bytes: u64) -> Vec<F> {
    vec![F {
        proto: 6,
        src: [10, 2, 0, 1],
        src_port: 40_000,
        dst: [10, 2, 0, 2],
        dst_port: 443,
        fwd: (bytes / 1_000, bytes),
        rev: (0, 0),
    }]
}

/// A collector on `broker` storing in `store` (PostgreSQL: a database of its own, named from
/// `label`), subscribed; with what to hold while it runs (see [`Fleet`]).
fn collector(
    store: Store,
    broker: &Mosquitto,
    label: &str,
) -> (Collector, Option<(std::sync::Arc<SharedPostgres>, String)>) {
    let (c, pg) = match store {
        Store::Sqlite => (Collector::start(&broker.url()), None),
        Store::Postgres => {
            let pg = SharedPostgres::get();
            let name = testkit::unique(label);
            let db = pg.pg.create_database(&name);
            let c = Collector::with_args(&["--broker", &broker.url(), "--db", &db]);
            (c, Some((pg, name)))
        }
    };
    c.wait_subscribed();
    (c, pg)
}

/// s1/a healthy (3 windows of 30 kB); s1/b a gap (seq 1 missing) and a full table in its
/// latest window (2 windows of 10 kB); s2/c a spool that dropped (2 windows of 20 kB);
/// s2/d said offline after its one window (5 kB).
fn start(store: Store) -> Fleet {
    let broker = Mosquitto::start();
    let (c, pg) = collector(store, &broker, "efapi");
    let base = (now_ms() / 10_000 - 60) * 10_000;
    let w = |i: u64| base + i * WINDOW_MS as u64;
    let mut msgs = Vec::new();
    for seq in 0..3 {
        let mut s = summary("s1", "a", 1, seq, w(seq), &flows(30_000), (0, 0));
        s.rtt_hist = [0, 0, 0, 2, 1].into_iter().collect();
        msgs.push(s);
    }
    msgs.push(summary("s1", "b", 2, 0, w(0), &flows(10_000), (0, 0)));
    msgs.push(summary("s1", "b", 2, 2, w(2), &flows(9_000), (1, 1_000)));
    for seq in 0..2 {
        let mut s = summary("s2", "c", 3, seq, w(seq), &flows(20_000), (0, 0));
        s.health.spool_dropped = seq;
        s.health.spool_depth = 7;
        msgs.push(s);
    }
    msgs.push(summary("s2", "d", 4, 0, w(0), &flows(5_000), (0, 0)));
    let mut msgs: Vec<Msg> = msgs.iter().map(Msg::summary).collect();
    msgs.push(Msg::raw("edgeflow/v1/s2/d/status", b"offline"));
    publish_all(broker.port, &msgs);
    let n = msgs.len() as u64;
    c.wait_for("/api/ingest", Duration::from_secs(30), |v| {
        v["messages"] == n
    });
    Fleet {
        c,
        _broker: broker,
        _pg: pg,
        base,
    }
}

/// The ids in a /api/devices answer and its X-Total-Count.
fn ids(c: &Collector, query: &str) -> (Vec<String>, u64) {
    let (status, head, body) = http_get_head(c.http, &format!("/api/devices{query}"), None);
    assert_eq!(status, 200, "{query}: {body}");
    let total = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-total-count")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no X-Total-Count in {head}"));
    let v: Value = serde_json::from_str(&body).unwrap();
    let ids = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    (ids, total)
}

fn devices_state_attention_search_sort_and_pages(store: Store) {
    let f = start(store);
    let c = &f.c;
    let v = c.json("/api/devices");
    let by_id = |id: &str| -> Value {
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} missing: {v}"))
    };
    for (id, state, attention) in [
        ("s1/a", "online", json!([])),
        ("s1/b", "online", json!(["gaps", "table_full"])),
        ("s2/c", "online", json!(["spool_dropping"])),
        ("s2/d", "offline", json!(["offline"])),
    ] {
        let d = by_id(id);
        assert_eq!(
            (&d["state"], &d["attention"]),
            (&json!(state), &attention),
            "{d}"
        );
    }
    assert_eq!(by_id("s2/d")["reported"], "offline");
    assert_eq!(by_id("s1/a")["reported"], Value::Null);
    let all = |v: &[&str]| -> Vec<String> { v.iter().map(|s| s.to_string()).collect() };
    // Most severe first, then more reasons, then the id.
    assert_eq!(ids(c, ""), (all(&["s2/d", "s1/b", "s2/c", "s1/a"]), 4));
    assert_eq!(
        ids(c, "?sort=name"),
        (all(&["s1/a", "s1/b", "s2/c", "s2/d"]), 4)
    );
    // Latest window: a 30 kB, c 20 kB, b 10 kB (9,000 + the overflow's 1,000), d 5 kB.
    assert_eq!(
        ids(c, "?sort=throughput"),
        (all(&["s1/a", "s2/c", "s1/b", "s2/d"]), 4)
    );
    assert_eq!(ids(c, "?q=S1%2F"), (all(&["s1/b", "s1/a"]), 2));
    assert_eq!(ids(c, "?site=s2&sort=name"), (all(&["s2/c", "s2/d"]), 2));
    assert_eq!(ids(c, "?q=nothing"), (vec![], 0));
    assert_eq!(
        ids(c, "?sort=name&limit=2&offset=1"),
        (all(&["s1/b", "s2/c"]), 4)
    );
    assert_eq!(ids(c, "?sort=name&offset=9"), (vec![], 4));
    refuses_sort(
        c,
        "/api/devices?sort=loudest",
        "attention, name, throughput",
    );
}

fn fleet_counts_states_reasons_sites_and_traffic(store: Store) {
    let f = start(store);
    let v = f.c.json("/api/fleet");
    assert_eq!(v["devices"], 4, "{v}");
    assert_eq!(v["states"], json!({"online": 3, "silent": 0, "offline": 1}));
    assert_eq!(
        v["attention"],
        json!({"offline": 1, "silent": 0, "gaps": 1, "flooded": 0, "table_full": 1,
               "spool_dropping": 1, "spool_fallback": 0, "clock_stepped": 0, "any": 3})
    );
    assert_eq!(
        v["sites"],
        json!([{"site": "s1", "devices": 2, "attention": 1},
               {"site": "s2", "devices": 2, "attention": 2}])
    );
    let bytes = 3 * 30_000 + 10_000 + 10_000 + 2 * 20_000 + 5_000;
    let packets = 3 * 30 + 10 + (9 + 1) + 2 * 20 + 5;
    assert_eq!(v["totals"], json!({"packets": packets, "bytes": bytes}));
    // The windows missing (b's seq 1), and the online devices' latest windows now: a 30 kB,
    // b 10 kB, c 20 kB (d is offline), 10 s each.
    assert_eq!(v["gaps"], 1);
    assert_eq!(v["now"]["bytes_per_s"], 6_000.0);
    assert_eq!(v["now"]["packets_per_s"], 6.0);
    let s1 = f.c.json("/api/fleet?site=s1");
    assert_eq!(
        (&s1["devices"], &s1["attention"]["any"]),
        (&json!(2), &json!(1))
    );
    assert_eq!(s1["totals"]["bytes"], 3 * 30_000 + 10_000 + 10_000);
    // A range: only the first window of each.
    let first = f.c.json(&format!(
        "/api/fleet?from={}&to={}",
        f.base,
        f.base + 10_000
    ));
    assert_eq!(first["totals"]["bytes"], 30_000 + 10_000 + 20_000 + 5_000);
}

/// Rates per 10 s bucket from a JSON array.
fn rates(v: &Value) -> Vec<Option<f64>> {
    v.as_array().unwrap().iter().map(Value::as_f64).collect()
}

fn series_top_devices_the_fleet_and_the_others(store: Store) {
    let f = start(store);
    let range = format!("from={}&to={}&step=10000", f.base, f.base + 40_000);
    let v = f.c.json(&format!("/api/series?{range}&top=2"));
    assert_eq!(v["step_ms"], 10_000, "{v}");
    let top: Vec<_> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    // Bytes in the range: a 90 kB, c 40 kB, b 20 kB, d 5 kB.
    assert_eq!(top, ["s1/a", "s2/c"]);
    assert_eq!(
        rates(&v["devices"][0]["bytes_per_s"]),
        [Some(3_000.0), Some(3_000.0), Some(3_000.0), None]
    );
    // Per bucket: a + b + c + d; a + c + nothing of b (its gap); a + b.
    assert_eq!(
        rates(&v["fleet"]["bytes_per_s"]),
        [Some(6_500.0), Some(5_000.0), Some(4_000.0), None]
    );
    assert_eq!(
        rates(&v["others"]["bytes_per_s"]),
        [Some(1_500.0), None, Some(1_000.0), None]
    );
    assert_eq!(
        rates(&v["fleet"]["packets_per_s"]),
        [Some(6.5), Some(5.0), Some(4.0), None]
    );
    // One site; without `top` the answer has no fleet or others.
    let s2 = f.c.json(&format!("/api/series?{range}&top=1&site=s2"));
    assert_eq!(s2["devices"][0]["id"], "s2/c");
    assert_eq!(
        rates(&s2["others"]["bytes_per_s"]),
        [Some(500.0), None, None, None]
    );
    let plain = f.c.json(&format!("/api/series?{range}"));
    assert_eq!(plain["devices"].as_array().unwrap().len(), 4);
    assert!(plain.get("fleet").is_none_or(Value::is_null), "{plain}");
    for bad in ["top=0", "top=51", "top=x"] {
        let (status, body) = f.c.get(&format!("/api/series?{range}&{bad}"));
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("top"), "{bad}: {body}");
    }
}

fn health_of_one_device_over_time(store: Store) {
    let f = start(store);
    let range = format!("from={}&to={}&step=10000", f.base, f.base + 40_000);
    let v = f.c.json(&format!("/api/health?device=s1/b&{range}"));
    assert_eq!(v["id"], "s1/b");
    assert_eq!(v["step_ms"], 10_000);
    let t: Vec<u64> = (0..4).map(|i| f.base + i * 10_000).collect();
    assert_eq!(v["t"], json!(t));
    assert_eq!(v["table_full"], json!([0, null, 1, null]), "{v}");
    assert_eq!(v["active_flows"], json!([1, null, 1, null]));
    assert_eq!(v["rss_kib"], json!([6_000, null, 6_000, null]));
    assert_eq!(
        rates(&v["bytes_per_s"]),
        [Some(1_000.0), None, Some(1_000.0), None]
    );
    assert_eq!((&v["gaps"], &v["boots"]), (&json!(1), &json!(1)));
    let c = f.c.json(&format!("/api/health?device=s2/c&{range}"));
    assert_eq!(c["spool_dropped"], json!([0, 1, null, null]));
    assert_eq!(c["spool_depth"], json!([7, 7, null, null]));
    let cpu = c["cpu_pct"][0].as_f64().unwrap();
    assert!(
        (cpu - 0.12).abs() < 1e-9,
        "12 ms of CPU in a 10 s window: {cpu}"
    );
    let (status, body) = f.c.get(&format!("/api/health?device=s9/zz&{range}"));
    assert_eq!(status, 404, "{body}");
    let (status, body) = f.c.get(&format!("/api/health?{range}"));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("device"), "{body}");
}

fn flows_talkers_conversations_rtt_stored_and_metrics(store: Store) {
    let mut f = start(store);
    let c = &f.c;
    // Every device's one flow 10.2.0.1:40000 -> 10.2.0.2:443: a 90 kB, c 40 kB, b 19 kB, d 5 kB.
    let all = 90_000 + 40_000 + 19_000 + 5_000;
    let t = c.json("/api/talkers?limit=10");
    assert_eq!(t[0]["addr"], "10.2.0.1", "{t}");
    assert_eq!(
        (&t[0]["sent"]["bytes"], &t[0]["received"]["bytes"]),
        (&json!(all), &json!(0))
    );
    assert_eq!(
        (&t[1]["addr"], &t[1]["received"]["bytes"]),
        (&json!("10.2.0.2"), &json!(all))
    );
    let conv = c.json("/api/conversations?limit=10");
    assert_eq!(conv.as_array().unwrap().len(), 1, "{conv}");
    assert_eq!(
        (&conv[0]["fwd"]["bytes"], &conv[0]["flows"]),
        (&json!(all), &json!(4))
    );
    let flows = c.json("/api/flows?limit=100");
    assert_eq!(flows["matching"], 4, "{flows}");
    let order: Vec<_> = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["device"].as_str().unwrap(), f["bytes"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        order,
        [
            ("s1/a", 90_000),
            ("s2/c", 40_000),
            ("s1/b", 19_000),
            ("s2/d", 5_000)
        ]
    );
    let narrow = c.json("/api/flows?addr=2.0.2&port=443&proto=tcp&device=s2/c");
    assert_eq!(narrow["matching"], 1, "{narrow}");
    assert_eq!(
        (
            &narrow["flows"][0]["windows"],
            &narrow["flows"][0]["fwd"]["packets"]
        ),
        (&json!(2), &json!(40))
    );
    assert_eq!(c.json("/api/flows?proto=udp")["matching"], 0);
    assert_eq!(c.json("/api/flows?addr=10_2")["matching"], 0);
    let rtt = c.json("/api/rtt");
    assert_eq!(rtt["samples"], 9, "{rtt}");
    assert_eq!(
        (&rtt["p50_us"], &rtt["p90_us"], &rtt["p99_us"]),
        (&json!(16), &json!(32), &json!(32))
    );
    assert_eq!(c.json("/api/rtt?device=s1/b")["samples"], 0);
    let stored = &c.json("/api/ingest")["stored"];
    assert_eq!(
        (&stored["summaries"], &stored["flow_records"]),
        (&json!(8), &json!(8))
    );
    assert_eq!(stored["oldest_window_ms"], f.base);
    assert_eq!(stored["newest_window_ms"], f.base + 20_000);
    let metrics = metrics_with(
        c,
        &[
            "edgeflow_device_up{site=\"s2\",device=\"d\"} 0\n",
            "edgeflow_device_up{site=\"s1\",device=\"a\"} 1\n",
            "edgeflow_device_bytes_total{site=\"s1\",device=\"a\"} 90000\n",
            "edgeflow_device_missing_windows{site=\"s1\",device=\"b\"} 1\n",
        ],
    );
    // A real parser reads the whole exposition: every family with its type, and the values
    // of the data published above.
    let m = parse_metrics(&metrics);
    for (name, kind) in FAMILIES {
        let f = m
            .families
            .get(*name)
            .unwrap_or_else(|| panic!("{name} missing in\n{metrics}"));
        assert_eq!(f.family_type.to_string(), *kind, "{name}");
    }
    assert_eq!(
        sample(
            &m,
            "edgeflow_device_bytes_total",
            &[("site", "s1"), ("device", "a")]
        ),
        90_000.0
    );
    let bytes: f64 = m.families["edgeflow_device_bytes_total"]
        .iter_samples()
        .map(|s| number(&s.value))
        .sum();
    // The devices' totals: the flows plus b's overflow record (1 packet, 1,000 bytes).
    assert_eq!(bytes, (all + 1_000) as f64, "every device's bytes");
    assert_eq!(
        sample(&m, "edgeflow_device_up", &[("site", "s1"), ("device", "a")]),
        1.0
    );
    assert_eq!(
        sample(&m, "edgeflow_device_up", &[("site", "s2"), ("device", "d")]),
        0.0
    );
    assert_eq!(
        sample(
            &m,
            "edgeflow_device_missing_windows",
            &[("site", "s1"), ("device", "b")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "edgeflow_collector_messages_total",
            &[("outcome", "stored")]
        ),
        8.0
    );
    // With its readers open, the collector still stops cleanly.
    let status = f.c.terminate();
    assert!(status.success(), "{status}: {}", f.c.log());
}

/// Every family /metrics exposes, with its type.
const FAMILIES: &[(&str, &str)] = &[
    ("edgeflow_collector_messages_total", "counter"),
    ("edgeflow_collector_decode_errors_total", "counter"),
    ("edgeflow_collector_flow_records_total", "counter"),
    ("edgeflow_collector_payload_bytes_total", "counter"),
    ("edgeflow_collector_store_errors_total", "counter"),
    ("edgeflow_collector_ingest_backpressure_total", "counter"),
    ("edgeflow_collector_ingest_queue_bytes", "gauge"),
    ("edgeflow_collector_broker_connected", "gauge"),
    ("edgeflow_collector_ingest_messages_per_second", "gauge"),
    ("edgeflow_collector_ingest_flow_records_per_second", "gauge"),
    ("edgeflow_device_up", "gauge"),
    ("edgeflow_device_bytes_total", "counter"),
    ("edgeflow_device_packets_total", "counter"),
    ("edgeflow_device_bytes_per_second", "gauge"),
    ("edgeflow_device_packets_per_second", "gauge"),
    ("edgeflow_device_last_seen_seconds", "gauge"),
    ("edgeflow_device_clock_skew_seconds", "gauge"),
    ("edgeflow_device_table_fill_ratio", "gauge"),
    ("edgeflow_device_table_full_packets", "gauge"),
    ("edgeflow_device_missing_windows", "gauge"),
    ("edgeflow_device_spool_dropped", "gauge"),
    ("edgeflow_device_cpu_percent", "gauge"),
    ("edgeflow_device_spool_fallback", "gauge"),
    ("edgeflow_device_spool_write_errors", "gauge"),
    ("edgeflow_device_clock_step_seconds", "gauge"),
    ("edgeflow_device_clock_steps", "gauge"),
    ("edgeflow_device_reattached", "gauge"),
    ("edgeflow_device_header_excess_packets", "gauge"),
    ("edgeflow_device_reclaimed_packets", "gauge"),
    ("edgeflow_device_tcp_connections_total", "counter"),
    (
        "edgeflow_device_tcp_retransmitted_segments_total",
        "counter",
    ),
    ("edgeflow_device_tcp_retransmitted_bytes_total", "counter"),
    ("edgeflow_device_dns_responses_total", "counter"),
    ("edgeflow_device_dns_queries_total", "counter"),
    ("edgeflow_device_dns_unanswered_total", "counter"),
    ("edgeflow_device_dns_latency_samples_total", "counter"),
    ("edgeflow_service_bytes_per_second", "gauge"),
    ("edgeflow_service_flow_records", "gauge"),
];

type Exposition = openmetrics_parser::MetricsExposition<
    openmetrics_parser::PrometheusType,
    openmetrics_parser::PrometheusValue,
>;

/// /metrics through a Prometheus text-format parser (not ours): it fails on any bad line.
fn parse_metrics(text: &str) -> Exposition {
    openmetrics_parser::prometheus::parse_prometheus(text)
        .unwrap_or_else(|e| panic!("/metrics does not parse: {e:?}\n{text}"))
}

fn number(v: &openmetrics_parser::PrometheusValue) -> f64 {
    use openmetrics_parser::PrometheusValue as V;
    match v {
        V::Counter(c) => c.value.as_f64(),
        V::Gauge(n) | V::Unknown(n) => n.as_f64(),
        other => panic!("not a number: {other:?}"),
    }
}

/// The value of `family`'s series whose labels are exactly `labels` (name, value).
fn sample(m: &Exposition, family: &str, labels: &[(&str, &str)]) -> f64 {
    let f = m
        .families
        .get(family)
        .unwrap_or_else(|| panic!("no {family}"));
    let found: Vec<f64> = f
        .iter_samples()
        .filter(|s| {
            let set = s.get_labelset().expect("a parsed sample has label names");
            set.iter().count() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| set.get_label_value(k) == Some(*v))
        })
        .map(|s| number(&s.value))
        .collect();
    match found[..] {
        [v] => v,
        _ => panic!("{family}{labels:?}: {found:?}"),
    }
}

/// `path` (a sort the API does not know) answers 400, naming the sorts it knows.
fn refuses_sort(c: &Collector, path: &str, known: &str) {
    let (status, body) = c.get(path);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains(known), "{body}");
}

/// `/metrics` answers 200 with every one of `lines`; its text.
fn metrics_with(c: &Collector, lines: &[&str]) -> String {
    let (status, metrics) = c.get("/metrics");
    assert_eq!(status, 200);
    for line in lines {
        assert!(metrics.contains(line), "{line:?} missing in\n{metrics}");
    }
    metrics
}

/// A TCP block as the agent writes it.
fn tcp(outcome: Outcome, decided: bool, f: impl FnOnce(&mut Tcp)) -> Option<Tcp> {
    let mut t = Tcp {
        outcome,
        decided,
        ..Tcp::default()
    };
    f(&mut t);
    Some(t)
}

/// A version 1 message (an agent from before TCP health) of `s`, which has no TCP block.
fn v1_message(s: &Summary) -> Msg {
    let v1 = wire::v1::Summary::from(s);
    Msg {
        topic: format!("edgeflow/v1/{}/{}/flows", s.site, s.device),
        payload: wire::encode_vec(&Message::V1(v1)),
        retain: false,
    }
}

fn tcp_flow(
    src: [u8; 4],
    src_port: u16,
    dst: [u8; 4],
    dst_port: u16,
    fwd: (u64, u64),
    rev: (u64, u64),
) -> F {
    F {
        proto: 6,
        src,
        src_port,
        dst,
        dst_port,
        fwd,
        rev,
    }
}

/// Two devices with TCP health (s1/a: two windows, s2/c: one) and one agent from before it
/// (s2/d, a version 1 message): every figure of /api/tcp and the TCP metrics is known.
fn tcp_fleet(store: Store) -> Fleet {
    let broker = Mosquitto::start();
    let (c, pg) = collector(store, &broker, "eftcp");
    let base = (now_ms() / 10_000 - 60) * 10_000;
    let (a, c_ip, d_ip) = ([10, 2, 0, 1], [10, 3, 0, 1], [10, 4, 0, 1]);
    let (web, ssh, plain) = ([192, 0, 2, 80], [192, 0, 2, 81], [192, 0, 2, 82]);
    use Outcome::*;
    // s1/a, window 0: established after one SYN retry, 2 segments retransmitted; refused
    // (RST back); unanswered after 3 retries.
    let mut a0 = summary(
        "s1",
        "a",
        1,
        0,
        base,
        &[
            tcp_flow(a, 40_000, web, 443, (100, 100_000), (0, 0)),
            tcp_flow(a, 40_001, ssh, 22, (1, 60), (1, 40)),
            tcp_flow(a, 40_002, ssh, 22, (4, 240), (0, 0)),
        ],
        (0, 0),
    );
    a0.tcp_health = true;
    a0.flows[0].tcp = tcp(Established, true, |t| {
        t.syn_retries = 1;
        t.fwd.retrans = wire::Count {
            packets: 2,
            bytes: 2_000,
        };
    });
    a0.flows[1].tcp = tcp(Refused, true, |t| t.rev.rst = 1);
    a0.flows[2].tcp = tcp(Unanswered, true, |t| t.syn_retries = 3);
    // Window 1: the first connection is reset (1 segment retransmitted back); another
    // refused; a mid-stream connection first seen in this window (unknown) and one first seen
    // before it (not counted again).
    let mut a1 = summary(
        "s1",
        "a",
        1,
        1,
        base + 10_000,
        &[
            tcp_flow(a, 40_000, web, 443, (10, 10_000), (5, 5_000)),
            tcp_flow(a, 40_003, ssh, 22, (1, 60), (1, 40)),
            tcp_flow(a, 40_004, plain, 80, (1, 1_000), (1, 1_000)),
            tcp_flow(a, 40_005, plain, 80, (1, 500), (1, 500)),
        ],
        (0, 0),
    );
    a1.tcp_health = true;
    a1.flows[0].tcp = tcp(Reset, true, |t| {
        t.syn_retries = 1;
        t.rev.rst = 1;
        t.rev.retrans = wire::Count {
            packets: 1,
            bytes: 1_000,
        };
    });
    a1.flows[1].tcp = tcp(Refused, true, |t| t.rev.rst = 1);
    a1.flows[2].tcp = tcp(Unknown, false, |_| {});
    a1.flows[3].tcp = tcp(Unknown, false, |_| {});
    a1.flows[3].first_seen_ms = -5_000;
    // s2/c, window 0: unanswered after 2 retries; closed by FIN both ways, 1 segment
    // retransmitted.
    let mut c0 = summary(
        "s2",
        "c",
        3,
        0,
        base,
        &[
            tcp_flow(c_ip, 50_000, ssh, 22, (3, 180), (0, 0)),
            tcp_flow(c_ip, 50_001, web, 443, (10, 50_000), (10, 50_000)),
        ],
        (0, 0),
    );
    c0.tcp_health = true;
    c0.flows[0].tcp = tcp(Unanswered, true, |t| t.syn_retries = 2);
    c0.flows[1].tcp = tcp(Closed, true, |t| {
        t.fwd.fin = 1;
        t.rev.fin = 1;
        t.fwd.retrans = wire::Count {
            packets: 1,
            bytes: 500,
        };
    });
    // s2/d: an old agent's TCP flow to the same web server: no TCP block.
    let d0 = summary(
        "s2",
        "d",
        4,
        0,
        base,
        &[tcp_flow(d_ip, 1_234, web, 443, (10, 10_000), (10, 10_000))],
        (0, 0),
    );
    let msgs = vec![
        Msg::summary(&a0),
        Msg::summary(&a1),
        Msg::summary(&c0),
        v1_message(&d0),
    ];
    publish_all(broker.port, &msgs);
    c.wait_for("/api/ingest", Duration::from_secs(30), |v| {
        v["summaries"] == 4
    });
    Fleet {
        c,
        _broker: broker,
        _pg: pg,
        base,
    }
}

fn tcp_destinations_totals_series_and_metrics_in_a_mixed_fleet(store: Store) {
    let f = tcp_fleet(store);
    let c = &f.c;
    let range = format!("from={}&to={}&step=10000", f.base, f.base + 40_000);
    let v = c.json(&format!("/api/tcp?{range}"));
    let web_bytes = 100_000 + 15_000 + 100_000;
    let all_bytes = web_bytes + (100 + 240 + 100 + 180) + (2_000 + 1_000);
    assert_eq!(
        v["totals"],
        json!({
            "windows": 3, "devices": 2,
            "connections": {"established": 1, "refused": 2, "unanswered": 2, "reset": 1,
                            "closed": 1, "unknown": 1},
            "failed": 4, "syn_retries": 1 + 3 + 2,
            "retransmitted": {"packets": 4, "bytes": 3_500},
            "rst": 3, "bytes": all_bytes,
            "retransmit_rate": 3_500.0 / all_bytes as f64,
        }),
        "{v}"
    );
    let order = |v: &Value| -> Vec<String> {
        v["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| format!("{}:{}", d["addr"].as_str().unwrap(), d["port"]))
            .collect()
    };
    assert_eq!(
        order(&v),
        ["192.0.2.81:22", "192.0.2.80:443", "192.0.2.82:80"],
        "by failed connects, then resets"
    );
    let ssh = &v["destinations"][0];
    assert_eq!(
        (
            &ssh["failed"],
            &ssh["connections"]["refused"],
            &ssh["connections"]["unanswered"]
        ),
        (&json!(4), &json!(2), &json!(2)),
        "{ssh}"
    );
    assert_eq!(
        (
            &ssh["syn_retries"],
            &ssh["rst_fwd"],
            &ssh["rst_rev"],
            &ssh["bytes"]
        ),
        (&json!(5), &json!(0), &json!(2), &json!(620))
    );
    assert_eq!(ssh["retransmit_rate"], 0.0);
    let web = &v["destinations"][1];
    assert_eq!(
        web["connections"],
        json!({"established": 1, "refused": 0, "unanswered": 0, "reset": 1, "closed": 1,
               "unknown": 0}),
        "{web}"
    );
    assert_eq!(
        (&web["retransmitted_fwd"], &web["retransmitted_rev"]),
        (
            &json!({"packets": 3, "bytes": 2_500}),
            &json!({"packets": 1, "bytes": 1_000})
        )
    );
    assert_eq!(
        (&web["bytes"], &web["syn_retries"], &web["rst_rev"]),
        (&json!(web_bytes), &json!(1), &json!(1)),
        "the old agent's bytes to it are not in the rate"
    );
    assert_eq!(web["retransmit_rate"], 3_500.0 / web_bytes as f64);
    assert_eq!(v["destinations"][2]["connections"]["unknown"], 1);
    assert_eq!(
        order(&c.json(&format!("/api/tcp?{range}&sort=retransmits"))),
        ["192.0.2.80:443", "192.0.2.81:22", "192.0.2.82:80"]
    );
    let resets = c.json(&format!("/api/tcp?{range}&sort=resets&limit=2"));
    assert_eq!(order(&resets), ["192.0.2.80:443", "192.0.2.81:22"]);
    // Over time: a window counts in the bucket of its start.
    let s = &v["series"];
    assert_eq!(s["step_ms"], 10_000);
    assert_eq!(s["failed"], json!([3, 1, null, null]), "{s}");
    assert_eq!(s["reset"], json!([0, 1, null, null]));
    assert_eq!(s["retransmitted_bytes"], json!([2_500, 1_000, null, null]));
    assert_eq!(
        s["retransmit_rate"],
        json!([
            2_500.0 / (100_340 + 100_180) as f64,
            1_000.0 / 18_100.0,
            null,
            null
        ])
    );
    // One device.
    let one = c.json(&format!("/api/tcp?{range}&device=s2/c"));
    assert_eq!(
        (
            &one["totals"]["windows"],
            &one["totals"]["failed"],
            &one["totals"]["connections"]["closed"]
        ),
        (&json!(1), &json!(1), &json!(1)),
        "{one}"
    );
    assert_eq!(order(&one), ["192.0.2.81:22", "192.0.2.80:443"]);
    let old = c.json(&format!("/api/tcp?{range}&device=s2/d"));
    assert_eq!(
        (&old["totals"]["windows"], &old["destinations"]),
        (&json!(0), &json!([])),
        "an old agent's flows are stored, without TCP figures: {old}"
    );
    assert_eq!(c.json("/api/flows?device=s2/d")["matching"], 1);
    refuses_sort(c, "/api/tcp?sort=loudest", "failed, resets, retransmits");
    let metrics = metrics_with(
        c,
        &[
        "edgeflow_device_tcp_connections_total{site=\"s1\",device=\"a\",outcome=\"refused\"} 2\n",
        "edgeflow_device_tcp_connections_total{site=\"s1\",device=\"a\",outcome=\"reset\"} 1\n",
        "edgeflow_device_tcp_connections_total{site=\"s2\",device=\"c\",outcome=\"unanswered\"} 1\n",
        "edgeflow_device_tcp_connections_total{site=\"s2\",device=\"c\",outcome=\"closed\"} 1\n",
        "edgeflow_device_tcp_retransmitted_segments_total{site=\"s1\",device=\"a\"} 3\n",
        "edgeflow_device_tcp_retransmitted_bytes_total{site=\"s1\",device=\"a\"} 3000\n",
        "edgeflow_device_tcp_retransmitted_bytes_total{site=\"s2\",device=\"c\"} 500\n",
        ],
    );
    let m = parse_metrics(&metrics);
    assert_eq!(
        sample(
            &m,
            "edgeflow_device_tcp_connections_total",
            &[("site", "s1"), ("device", "a"), ("outcome", "refused")]
        ),
        2.0
    );
    assert_eq!(
        sample(
            &m,
            "edgeflow_device_tcp_retransmitted_segments_total",
            &[("site", "s1"), ("device", "a")]
        ),
        3.0
    );
    assert!(
        !metrics.contains("tcp_retransmitted_segments_total{site=\"s2\",device=\"d\"}"),
        "no TCP series for an agent that does not measure it"
    );
}

/// A DNS block as the agent writes it: `rcodes` = NOERROR, NXDOMAIN, SERVFAIL, REFUSED;
/// `latency` = (avg µs, samples), min and max around it.
fn dns(
    name: &str,
    qtype: u16,
    queries: u32,
    rcodes: [u32; 4],
    unanswered: u32,
    latency: Option<(u32, u32)>,
) -> Option<wire::Dns> {
    Some(wire::Dns {
        queries,
        responses: rcodes.iter().sum(),
        noerror: rcodes[0],
        nxdomain: rcodes[1],
        servfail: rcodes[2],
        refused: rcodes[3],
        unanswered,
        qtype,
        latency: latency.map(|(avg_us, samples)| wire::Latency {
            min_us: avg_us / 2,
            avg_us,
            max_us: avg_us * 2,
            samples,
        }),
        name: wire::DnsName::new(name).unwrap(),
        ..wire::Dns::default()
    })
}

fn udp53(src: [u8; 4], src_port: u16, dst: [u8; 4]) -> F {
    F {
        proto: 17,
        src,
        src_port,
        dst,
        dst_port: 53,
        fwd: (1, 70),
        rev: (1, 120),
    }
}

/// A log2 latency histogram with one sample in each of `buckets`.
fn hist(buckets: &[usize]) -> heapless::Vec<u32, { wire::RTT_BUCKETS }> {
    let mut h = [0u32; wire::RTT_BUCKETS];
    for &b in buckets {
        h[b] += 1;
    }
    let used = buckets.iter().max().map_or(0, |m| m + 1);
    h[..used].iter().copied().collect()
}

/// Two devices that look at DNS (s1/a: two windows, s2/c: one, sampling 1 in 2) and one agent
/// from before it (s2/d, a version 2 message): every figure of /api/dns and the DNS metrics
/// is known.
fn dns_fleet(store: Store) -> Fleet {
    let broker = Mosquitto::start();
    let (c, pg) = collector(store, &broker, "efdns");
    let base = (now_ms() / 10_000 - 60) * 10_000;
    let (a, c_ip, d_ip) = ([10, 2, 0, 1], [10, 3, 0, 1], [10, 4, 0, 1]);
    let (r53, r54) = ([192, 0, 2, 53], [192, 0, 2, 54]);
    // s1/a, window 0, both to 192.0.2.53: example.com A answered twice (1.5 ms on average);
    // nope.example NXDOMAIN (3 ms).
    let mut a0 = summary(
        "s1",
        "a",
        1,
        0,
        base,
        &[udp53(a, 50_000, r53), udp53(a, 50_001, r53)],
        (0, 0),
    );
    a0.dns = true;
    a0.flows[0].dns = dns("example.com", 1, 2, [2, 0, 0, 0], 0, Some((1_500, 2)));
    a0.flows[1].dns = dns("nope.example", 1, 1, [0, 1, 0, 0], 0, Some((3_000, 1)));
    a0.dns_hist = hist(&[9, 10, 11]);
    a0.health.dns_malformed = 2;
    // Window 1, both to 192.0.2.54: EXAMPLE.com A (the same name in another case) SERVFAIL
    // after 40 ms; slow.example AAAA asked three times, never answered.
    let mut a1 = summary(
        "s1",
        "a",
        1,
        1,
        base + 10_000,
        &[udp53(a, 50_002, r54), udp53(a, 50_003, r54)],
        (0, 0),
    );
    a1.dns = true;
    a1.flows[0].dns = dns("EXAMPLE.com", 1, 1, [0, 0, 1, 0], 0, Some((40_000, 1)));
    a1.flows[1].dns = dns("slow.example", 28, 3, [0, 0, 0, 0], 3, None);
    a1.dns_hist = hist(&[15]);
    a1.health.dns_evicted = 1;
    // s2/c, window 0, sampling 1 in 2: example.com AAAA refused once (0.5 ms) as counted.
    let mut c0 = summary("s2", "c", 3, 0, base, &[udp53(c_ip, 40_000, r53)], (0, 0));
    c0.dns = true;
    c0.sample_every = 2;
    c0.flows[0].dns = dns("example.com", 28, 1, [0, 0, 0, 1], 0, Some((500, 1)));
    c0.dns_hist = hist(&[8]);
    // s2/d: an old agent's lookup: no DNS block.
    let d0 = summary("s2", "d", 4, 0, base, &[udp53(d_ip, 1_234, r53)], (0, 0));
    let old = Msg {
        topic: "edgeflow/v1/s2/d/flows".into(),
        payload: wire::encode_vec(&Message::V2(wire::v2::Summary::from(&d0))),
        retain: false,
    };
    let msgs = vec![Msg::summary(&a0), Msg::summary(&a1), Msg::summary(&c0), old];
    publish_all(broker.port, &msgs);
    c.wait_for("/api/ingest", Duration::from_secs(30), |v| {
        v["summaries"] == 4
    });
    Fleet {
        c,
        _broker: broker,
        _pg: pg,
        base,
    }
}

fn dns_names_resolvers_totals_series_and_metrics_in_a_mixed_fleet(store: Store) {
    let f = dns_fleet(store);
    let c = &f.c;
    let range = format!("from={}&to={}&step=10000", f.base, f.base + 40_000);
    let v = c.json(&format!("/api/dns?{range}"));
    // Latency: samples 2 x 1.5 ms, 3 ms, 40 ms, 0.5 ms; min 0.25 ms, max 80 ms.
    assert_eq!(
        v["totals"],
        json!({
            "windows": 3, "devices": 2,
            "queries": 2 + 1 + 1 + 3 + 2, "responses": 2 + 1 + 1 + 2,
            "rcodes": {"noerror": 2, "nxdomain": 1, "servfail": 1, "refused": 2, "other": 0},
            "errors": 4, "unanswered": 3,
            "error_rate": 4.0 / 6.0, "unanswered_rate": 3.0 / 9.0,
            "latency": {"samples": 5, "min_us": 250, "avg_us": 46_500 / 5, "max_us": 80_000},
            "malformed": 2, "evicted": 1,
        }),
        "{v}"
    );
    // The windows' histograms added up: buckets 8, 9, 10, 11 and 15 (of 2^i µs).
    let h = &v["latency"];
    assert_eq!(h["samples"], 5, "{h}");
    assert_eq!(
        (&h["p50_us"], &h["p90_us"], &h["p99_us"]),
        (&json!(2_048), &json!(65_536), &json!(65_536))
    );
    let buckets: Vec<(u64, u64)> = h["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["lo_us"].as_u64().unwrap(), b["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        buckets,
        [
            (256, 1),
            (512, 1),
            (1_024, 1),
            (2_048, 1),
            (4_096, 0),
            (8_192, 0),
            (16_384, 0),
            (32_768, 1)
        ]
    );
    let names = |v: &Value| -> Vec<String> {
        v["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                format!(
                    "{} {}",
                    n["name"].as_str().unwrap(),
                    n["qtype_name"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        names(&v),
        [
            "slow.example AAAA",
            "example.com AAAA",
            "example.com A",
            "nope.example A"
        ],
        "by error responses + unanswered, then queries"
    );
    let ex = &v["names"][2];
    assert_eq!(
        (
            &ex["queries"],
            &ex["responses"],
            &ex["errors"],
            &ex["resolvers"],
            &ex["devices"]
        ),
        (&json!(3), &json!(3), &json!(1), &json!(2), &json!(1)),
        "both cases of example.com A, at two resolvers: {ex}"
    );
    assert_eq!(
        ex["latency"],
        json!({"samples": 3, "min_us": 750, "avg_us": 43_000 / 3, "max_us": 80_000})
    );
    assert_eq!(
        (
            &v["names"][1]["queries"],
            &v["names"][1]["rcodes"]["refused"],
            &v["names"][1]["qtype"]
        ),
        (&json!(2), &json!(2), &json!(28)),
        "sampled 1 in 2: counts scaled"
    );
    let slow = &v["names"][0];
    assert_eq!(
        (
            &slow["unanswered"],
            &slow["unanswered_rate"],
            &slow["latency"]["avg_us"],
            &slow["error_rate"]
        ),
        (&json!(3), &json!(1.0), &Value::Null, &Value::Null)
    );
    assert_eq!(
        names(&c.json(&format!("/api/dns?{range}&sort=latency"))),
        [
            "example.com A",
            "nope.example A",
            "example.com AAAA",
            "slow.example AAAA"
        ]
    );
    assert_eq!(
        names(&c.json(&format!("/api/dns?{range}&sort=queries&limit=2"))),
        ["slow.example AAAA", "example.com A"]
    );
    let resolvers: Vec<(String, u64, u64, u64, u64)> = v["resolvers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                format!("{}:{}", r["addr"].as_str().unwrap(), r["port"]),
                r["queries"].as_u64().unwrap(),
                r["errors"].as_u64().unwrap(),
                r["names"].as_u64().unwrap(),
                r["devices"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        resolvers,
        [
            ("192.0.2.54:53".to_string(), 4, 1, 2, 1),
            ("192.0.2.53:53".to_string(), 5, 3, 2, 2),
        ],
        "by errors + unanswered: {v}"
    );
    assert_eq!(
        v["resolvers"][1]["latency"],
        json!({"samples": 4, "min_us": 250, "avg_us": 6_500 / 4, "max_us": 6_000})
    );
    // Over time: a window counts in the bucket of its start.
    let s = &v["series"];
    assert_eq!(s["step_ms"], 10_000);
    assert_eq!(s["queries"], json!([5, 4, null, null]), "{s}");
    assert_eq!(s["errors"], json!([3, 1, null, null]));
    assert_eq!(s["unanswered"], json!([0, 3, null, null]));
    assert_eq!(s["error_rate"], json!([0.6, 1.0, null, null]));
    assert_eq!(s["unanswered_rate"], json!([0.0, 0.75, null, null]));
    assert_eq!(s["latency_avg_us"], json!([6_500 / 4, 40_000, null, null]));
    // One device, one site.
    let one = c.json(&format!("/api/dns?{range}&device=s2/c"));
    assert_eq!(
        (
            &one["totals"]["windows"],
            &one["totals"]["queries"],
            &one["latency"]["samples"]
        ),
        (&json!(1), &json!(2), &json!(1)),
        "{one}"
    );
    assert_eq!(names(&one), ["example.com AAAA"]);
    let site = c.json(&format!("/api/dns?{range}&site=s1"));
    assert_eq!(
        (
            &site["totals"]["devices"],
            &site["totals"]["queries"],
            &site["latency"]["samples"]
        ),
        (&json!(1), &json!(7), &json!(4)),
        "{site}"
    );
    assert_eq!(site["resolvers"].as_array().unwrap().len(), 2);
    let old = c.json(&format!("/api/dns?{range}&device=s2/d"));
    assert_eq!(
        (&old["totals"]["windows"], &old["names"], &old["resolvers"]),
        (&json!(0), &json!([]), &json!([])),
        "an old agent's lookups are stored, without DNS figures: {old}"
    );
    assert_eq!(c.json("/api/flows?device=s2/d")["matching"], 1);
    refuses_sort(c, "/api/dns?sort=slowest", "errors, latency, queries");
    let metrics = metrics_with(
        c,
        &[
            "edgeflow_device_dns_queries_total{site=\"s1\",device=\"a\"} 7\n",
            "edgeflow_device_dns_queries_total{site=\"s2\",device=\"c\"} 2\n",
            "edgeflow_device_dns_responses_total{site=\"s1\",device=\"a\",rcode=\"servfail\"} 1\n",
            "edgeflow_device_dns_responses_total{site=\"s2\",device=\"c\",rcode=\"refused\"} 2\n",
            "edgeflow_device_dns_responses_total{site=\"s1\",device=\"a\",rcode=\"noerror\"} 2\n",
            "edgeflow_device_dns_unanswered_total{site=\"s1\",device=\"a\"} 3\n",
            "edgeflow_device_dns_latency_samples_total{site=\"s1\",device=\"a\"} 4\n",
        ],
    );
    let m = parse_metrics(&metrics);
    assert_eq!(
        sample(
            &m,
            "edgeflow_device_dns_responses_total",
            &[("site", "s2"), ("device", "c"), ("rcode", "refused")]
        ),
        2.0
    );
    assert_eq!(
        sample(
            &m,
            "edgeflow_device_dns_queries_total",
            &[("site", "s1"), ("device", "a")]
        ),
        7.0
    );
    assert!(
        !metrics.contains("dns_queries_total{site=\"s2\",device=\"d\"}"),
        "no DNS series for an agent that does not look at DNS"
    );
}

fn local(pid: u32, comm: u32, service: u32) -> Option<wire::Owner> {
    Some(wire::Owner {
        process: Some(wire::Process { pid, comm }),
        service: Some(service),
        ..wire::Owner::default()
    })
}

fn lan(initiator: u32, responder: Option<u32>) -> Option<wire::Owner> {
    Some(wire::Owner {
        initiator: Some(initiator),
        responder,
        ..wire::Owner::default()
    })
}

/// s1/a: a box's own processes (curl twice in backup.service, nginx in nginx.service) and a
/// Raspberry Pi on its LAN (vendor, DHCP name and client id) whose flows it forwards; s2/c,
/// sampling 1 in 2: an Apple device in two windows, the second without its vendor; s2/d: an
/// agent before owners (a version 2 message).
fn owners_fleet(store: Store) -> Fleet {
    let broker = Mosquitto::start();
    let (c, pg) = collector(store, &broker, "efown");
    let base = (now_ms() / 10_000 - 60) * 10_000;
    let (box_ip, pi) = ([10, 2, 0, 1], [192, 168, 1, 20]);
    let mut a0 = summary(
        "s1",
        "a",
        1,
        0,
        base,
        &[
            tcp_flow(
                box_ip,
                40_000,
                [192, 0, 2, 80],
                443,
                (10, 10_000),
                (10, 50_000),
            ),
            tcp_flow(box_ip, 40_001, [192, 0, 2, 81], 443, (1, 1_000), (1, 1_000)),
            tcp_flow(
                [198, 51, 100, 9],
                5_555,
                box_ip,
                80,
                (5, 5_000),
                (5, 20_000),
            ),
            tcp_flow(pi, 50_000, [192, 0, 2, 90], 443, (4, 4_000), (4, 16_000)),
            F {
                proto: 17,
                ..udp53(pi, 50_001, [192, 0, 2, 91])
            },
        ],
        (0, 0),
    );
    a0.names = [
        "curl",
        "nginx",
        "backup.service",
        "nginx.service",
        "Raspberry Pi Trading Ltd",
        "kitchen-pi",
        "01:b8:27:eb:11:22:33",
    ]
    .map(String::from)
    .to_vec();
    a0.devices = vec![
        wire::Device {
            mac: [0xb8, 0x27, 0xeb, 0x11, 0x22, 0x33],
            vendor: Some(4),
            host_name: Some(5),
            client_id: Some(6),
        },
        wire::Device {
            mac: [0x02, 0, 0, 0, 0, 1],
            ..wire::Device::default()
        },
    ];
    a0.health.owner_sockets_full = 3;
    a0.flows[0].owner = local(100, 0, 2);
    a0.flows[1].owner = local(101, 0, 2);
    a0.flows[2].owner = local(200, 1, 3);
    a0.flows[3].owner = lan(0, Some(1));
    a0.flows[4].owner = lan(0, None);
    let apple = |seq: u64, vendor: bool| {
        let mut s = summary(
            "s2",
            "c",
            3,
            seq,
            base + seq * 10_000,
            &[tcp_flow(
                [192, 168, 7, 5],
                60_000,
                [192, 0, 2, 90],
                443,
                (1, 500),
                (1, 500),
            )],
            (0, 0),
        );
        s.sample_every = 2;
        s.names = vec!["Apple, Inc.".to_string()];
        s.devices = vec![wire::Device {
            mac: [0x00, 0x1b, 0x63, 0xaa, 0x0f, 0xff],
            vendor: vendor.then_some(0),
            ..wire::Device::default()
        }];
        s.flows[0].owner = lan(0, None);
        s
    };
    let d0 = summary(
        "s2",
        "d",
        4,
        0,
        base,
        &[tcp_flow(
            [10, 4, 0, 1],
            1_234,
            [192, 0, 2, 80],
            443,
            (1, 100),
            (1, 100),
        )],
        (0, 0),
    );
    let old = Msg {
        topic: "edgeflow/v1/s2/d/flows".into(),
        payload: wire::encode_vec(&Message::V2(wire::v2::Summary::from(&d0))),
        retain: false,
    };
    let msgs = vec![
        Msg::summary(&a0),
        Msg::summary(&apple(0, true)),
        Msg::summary(&apple(1, false)),
        old,
    ];
    publish_all(broker.port, &msgs);
    c.wait_for("/api/ingest", Duration::from_secs(30), |v| {
        v["summaries"] == 4
    });
    Fleet {
        c,
        _broker: broker,
        _pg: pg,
        base,
    }
}

fn owners_processes_services_lan_devices_flow_filters_and_metrics(store: Store) {
    let f = owners_fleet(store);
    let c = &f.c;
    let range = format!("from={}&to={}", f.base, f.base + 40_000);
    let v = c.json(&format!("/api/owners?{range}"));
    assert_eq!(
        (&v["sockets_full"], &v["devices_full"]),
        (&json!(3), &json!(0)),
        "the agent's own count of what its maps had no room for"
    );
    assert_eq!(
        v["processes"],
        json!([
            {"process": "curl", "service": "backup.service", "pids": 2,
             "fwd": {"packets": 11, "bytes": 11_000}, "rev": {"packets": 11, "bytes": 51_000},
             "bytes": 62_000, "packets": 22, "flows": 2, "devices": 1},
            {"process": "nginx", "service": "nginx.service", "pids": 1,
             "fwd": {"packets": 5, "bytes": 5_000}, "rev": {"packets": 5, "bytes": 20_000},
             "bytes": 25_000, "packets": 10, "flows": 1, "devices": 1},
        ]),
        "{v}"
    );
    let services: Vec<(String, u64, u64)> = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["service"].as_str().unwrap().to_string(),
                s["bytes"].as_u64().unwrap(),
                s["processes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        services,
        [
            ("backup.service".to_string(), 62_000, 1),
            ("nginx.service".to_string(), 25_000, 1)
        ]
    );
    let lan = &v["lan_devices"];
    assert_eq!(lan.as_array().unwrap().len(), 2, "initiators only: {lan}");
    assert_eq!(
        (
            &lan[0]["device"],
            &lan[0]["mac"],
            &lan[0]["vendor"],
            &lan[0]["host_name"],
            &lan[0]["client_id"]
        ),
        (
            &json!("s1/a"),
            &json!("b8:27:eb:11:22:33"),
            &json!("Raspberry Pi Trading Ltd"),
            &json!("kitchen-pi"),
            &json!("01:b8:27:eb:11:22:33")
        ),
        "{lan}"
    );
    assert_eq!(
        (&lan[0]["bytes"], &lan[0]["flows"], &lan[0]["destinations"]),
        (&json!(20_190), &json!(2), &json!(2))
    );
    assert_eq!(
        lan[0]["top_destinations"],
        json!([
            {"addr": "192.0.2.90", "port": 443, "proto": 6, "bytes": 20_000},
            {"addr": "192.0.2.91", "port": 53, "proto": 17, "bytes": 190},
        ])
    );
    assert_eq!(
        (
            &lan[1]["device"],
            &lan[1]["mac"],
            &lan[1]["vendor"],
            &lan[1]["host_name"],
            &lan[1]["bytes"],
            &lan[1]["flows"]
        ),
        (
            &json!("s2/c"),
            &json!("00:1b:63:aa:0f:ff"),
            &json!("Apple, Inc."),
            &Value::Null,
            &json!(4_000),
            &json!(1)
        ),
        "the vendor kept from the first window, counts x 2: {lan}"
    );
    // One device, one site.
    let one = c.json(&format!("/api/owners?{range}&device=s2/c"));
    assert_eq!(
        (
            &one["processes"],
            one["lan_devices"].as_array().unwrap().len()
        ),
        (&json!([]), 1),
        "{one}"
    );
    let site = c.json(&format!("/api/owners?{range}&site=s1"));
    assert_eq!(site["lan_devices"][0]["mac"], "b8:27:eb:11:22:33");
    assert_eq!(site["lan_devices"].as_array().unwrap().len(), 1);
    let old = c.json(&format!("/api/owners?{range}&device=s2/d"));
    assert_eq!(
        (&old["processes"], &old["services"], &old["lan_devices"]),
        (&json!([]), &json!([]), &json!([])),
        "{old}"
    );
    // The flows endpoint's owner filters and fields.
    let flows = |q: &str| -> Vec<String> {
        let v = c.json(&format!("/api/flows?{range}&{q}"));
        v["flows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| format!("{}:{}", f["dst"].as_str().unwrap(), f["dst_port"]))
            .collect()
    };
    assert_eq!(flows("process=curl"), ["192.0.2.80:443", "192.0.2.81:443"]);
    assert_eq!(flows("service=nginx.service"), ["10.2.0.1:80"]);
    assert_eq!(
        flows("mac=B8-27-EB-11-22-33"),
        ["192.0.2.90:443", "192.0.2.91:53"]
    );
    assert_eq!(flows("mac=02:00:00:00:00:01"), ["192.0.2.90:443"]);
    let fw = c.json(&format!("/api/flows?{range}&mac=020000000001"));
    assert_eq!(
        fw["flows"][0]["owner"],
        json!({"process": null, "pid": null, "service": null,
               "src_mac": "b8:27:eb:11:22:33", "dst_mac": "02:00:00:00:00:01"})
    );
    let nginx = c.json(&format!("/api/flows?{range}&process=nginx"));
    assert_eq!(nginx["flows"][0]["owner"]["pid"], 200);
    assert_eq!(
        c.json(&format!("/api/flows?{range}&device=s2/d"))["flows"][0]["owner"],
        Value::Null
    );
    let (status, body) = c.get("/api/flows?mac=nope");
    assert_eq!(status, 400, "{body}");
    metrics_with(
        c,
        &[
        "edgeflow_service_bytes_per_second{site=\"s1\",device=\"a\",service=\"backup.service\"} 6200\n",
        "edgeflow_service_bytes_per_second{site=\"s1\",device=\"a\",service=\"nginx.service\"} 2500\n",
        "edgeflow_service_flow_records{site=\"s1\",device=\"a\",service=\"backup.service\"} 2\n",
        ],
    );
}

/// Issue 24's bad days, one device each, published as real V3 summaries: s1/flood's table is
/// flooded in its latest window (reclaimed 40 of its 50 overflow packets, lying headers);
/// s1/clock's wall clock was set back 2 s in its latest window after a step in its first;
/// s2/disk's spool file failed in its first window and is still on the in-memory spool in its
/// latest, after re-attaching twice; s2/ok has a clean latest window after a flood in its first.
fn bad_days_in_health_attention_fleet_and_metrics(store: Store) {
    let broker = Mosquitto::start();
    let (c, _pg) = collector(store, &broker, "efbad");
    let base = (now_ms() / 10_000 - 60) * 10_000;
    let w = |i: u64| base + i * WINDOW_MS as u64;
    let mut msgs = Vec::new();
    for seq in 0..2 {
        let mut s = summary("s1", "flood", 1, seq, w(seq), &flows(10_000), (50, 5_000));
        s.health.reclaimed = 20 * (seq + 1);
        s.health.header_excess = 3;
        msgs.push(s);
        let mut s = summary("s1", "clock", 2, seq, w(seq), &flows(10_000), (0, 0));
        s.health.clock_step_ms = if seq == 0 { 60_000 } else { -2_000 };
        s.health.clock_steps = seq as u32 + 1;
        msgs.push(s);
        let mut s = summary("s2", "disk", 3, seq, w(seq), &flows(10_000), (0, 0));
        s.health.spool_fallback = true;
        s.health.spool_write_errors = 5 * (seq as u32 + 1);
        s.health.reattached = 2;
        msgs.push(s);
        let mut s = summary("s2", "ok", 4, seq, w(seq), &flows(10_000), (0, 0));
        s.health.reclaimed = if seq == 0 { 9 } else { 0 };
        msgs.push(s);
    }
    let msgs: Vec<Msg> = msgs.iter().map(Msg::summary).collect();
    publish_all(broker.port, &msgs);
    let n = msgs.len() as u64;
    c.wait_for("/api/ingest", Duration::from_secs(30), |v| {
        v["messages"] == n
    });

    let v = c.json("/api/devices");
    let by_id = |id: &str| -> Value {
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} missing: {v}"))
    };
    for (id, attention) in [
        ("s1/flood", json!(["flooded", "table_full"])),
        ("s1/clock", json!(["clock_stepped"])),
        ("s2/disk", json!(["spool_fallback"])),
        ("s2/ok", json!([])),
    ] {
        assert_eq!(by_id(id)["attention"], attention, "{id}");
    }
    let latest = by_id("s2/disk")["latest"]["health"].clone();
    assert_eq!(
        (
            &latest["spool_fallback"],
            &latest["spool_write_errors"],
            &latest["reattached"]
        ),
        (&json!(true), &json!(10), &json!(2)),
        "{latest}"
    );
    assert_eq!(
        by_id("s1/clock")["latest"]["health"]["clock_step_ms"],
        -2_000
    );
    assert_eq!(by_id("s1/flood")["latest"]["health"]["reclaimed"], 40);
    // Most severe first: the flood (it is why the table is full), the failing disk, the clock.
    let all = |v: &[&str]| -> Vec<String> { v.iter().map(|s| s.to_string()).collect() };
    assert_eq!(
        ids(&c, ""),
        (all(&["s1/flood", "s2/disk", "s1/clock", "s2/ok"]), 4)
    );
    let fleet = c.json("/api/fleet");
    assert_eq!(
        fleet["attention"],
        json!({"offline": 0, "silent": 0, "gaps": 0, "flooded": 1, "table_full": 1,
               "spool_dropping": 0, "spool_fallback": 1, "clock_stepped": 1, "any": 3})
    );

    let range = format!("from={base}&to={}&step=10000", base + 30_000);
    let h = c.json(&format!("/api/health?device=s1/flood&{range}"));
    assert_eq!(h["reclaimed"], json!([20, 40, null]), "{h}");
    assert_eq!(h["header_excess"], json!([3, 3, null]));
    assert_eq!(h["totals"]["reclaimed"], 60);
    assert_eq!(h["totals"]["header_excess"], 6);
    let h = c.json(&format!("/api/health?device=s1/clock&{range}"));
    assert_eq!(h["clock_step_ms"], json!([60_000, -2_000, null]), "{h}");
    assert_eq!(h["clock_steps"], json!([1, 2, null]));
    assert_eq!(
        (
            &h["totals"]["clock_stepped_windows"],
            &h["totals"]["clock_step_abs_ms"],
            &h["totals"]["clock_steps"]
        ),
        (&json!(2), &json!(62_000), &json!(2))
    );
    let h = c.json(&format!("/api/health?device=s2/disk&{range}"));
    assert_eq!(h["spool_fallback"], json!([true, true, null]), "{h}");
    assert_eq!(h["spool_write_errors"], json!([5, 10, null]));
    assert_eq!(
        (
            &h["totals"]["spool_fallback_windows"],
            &h["totals"]["spool_write_errors"],
            &h["totals"]["reattached"]
        ),
        (&json!(2), &json!(10), &json!(2)),
        "running counts: the run's highest, not their sum"
    );
    let h = c.json(&format!("/api/health?device=s2/ok&{range}"));
    assert_eq!(h["reclaimed"], json!([9, 0, null]));
    assert_eq!(h["spool_fallback"], json!([false, false, null]));

    let m = parse_metrics(&metrics_with(&c, &[]));
    let at = |family: &str, site: &str, device: &str| {
        sample(&m, family, &[("site", site), ("device", device)])
    };
    assert_eq!(at("edgeflow_device_reclaimed_packets", "s1", "flood"), 40.0);
    assert_eq!(at("edgeflow_device_reclaimed_packets", "s2", "ok"), 0.0);
    assert_eq!(
        at("edgeflow_device_header_excess_packets", "s1", "flood"),
        3.0
    );
    assert_eq!(
        at("edgeflow_device_clock_step_seconds", "s1", "clock"),
        -2.0
    );
    assert_eq!(at("edgeflow_device_clock_steps", "s1", "clock"), 2.0);
    assert_eq!(at("edgeflow_device_spool_fallback", "s2", "disk"), 1.0);
    assert_eq!(at("edgeflow_device_spool_fallback", "s2", "ok"), 0.0);
    assert_eq!(at("edgeflow_device_spool_write_errors", "s2", "disk"), 10.0);
    assert_eq!(at("edgeflow_device_reattached", "s2", "disk"), 2.0);
    drop(c);
    drop(broker);
}
