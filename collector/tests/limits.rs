//! The collector's own limits, through a real Mosquitto and the collector binary: retention by
//! receive time, clock skew per device, API cost limits, HTTP server limits, bounded ingest.

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};
use testkit::mosquitto::Mosquitto;

/// The device entry named `name` in `/api/devices`.
fn device(c: &Collector, query: &str, name: &str) -> Option<Value> {
    c.json(&format!("/api/devices{query}"))["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == name)
        .cloned()
}

fn one_flow() -> Vec<F> {
    vec![F {
        proto: 17,
        src: [10, 1, 0, 1],
        src_port: 5000,
        dst: [10, 1, 0, 2],
        dst_port: 53,
        fwd: (1, 100),
        rev: (1, 200),
    }]
}

#[test]
fn retention_goes_by_receive_time_and_skew_is_reported() {
    let broker = Mosquitto::start();
    // 0.0001 days = 8.64 s; the collector then prunes every 2.16 s.
    let c = Collector::with_args(&["--broker", &broker.url(), "--retention-days", "0.0001"]);
    c.wait_subscribed();
    let now = now_ms();
    // A box without a real-time clock (1970), one 1,000 years ahead, one 2 minutes ahead.
    let early = summary("lab", "no-rtc", 1, 0, 5_000, &one_flow(), (0, 0));
    let late = summary("lab", "future", 2, 0, now + 1000 * 365 * 86_400_000, &one_flow(), (0, 0));
    let ahead = summary("lab", "ahead", 3, 0, now + 120_000 - WINDOW_MS as u64, &one_flow(), (0, 0));
    publish_all(
        broker.port,
        &[Msg::summary(&early), Msg::summary(&late), Msg::summary(&ahead)],
    );
    let received = Instant::now();
    c.wait_for("/api/ingest", Duration::from_secs(20), |v| {
        v["stored"]["summaries"] == 3
    });

    // Skew: window end by the device's clock minus receive time by the collector's.
    let all = "?from=0&to=9223372036854775807";
    let skew = |name: &str| -> i64 {
        device(&c, all, name).unwrap()["latest"]["clock_skew_ms"]
            .as_i64()
            .unwrap()
    };
    let s = skew("ahead");
    assert!((110_000..=120_500).contains(&s), "2 min ahead: {s}");
    assert!(skew("no-rtc") < -1_700_000_000_000, "behind by decades");
    assert!(skew("future") > 30_000_000_000_000, "ahead by centuries");
    let (status, metrics) = c.get("/metrics");
    assert_eq!(status, 200);
    let line = metrics
        .lines()
        .find(|l| l.starts_with("edgeflow_device_clock_skew_seconds{site=\"lab\",device=\"ahead\"}"))
        .unwrap_or_else(|| panic!("no skew series in\n{metrics}"));
    let secs: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((110.0..=120.5).contains(&secs), "{line}");

    // Prunes ran since (every 2.16 s), yet everything is younger than 8.64 s by receive time:
    // the 1970 window is still there.
    while received.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.json("/api/ingest")["stored"]["summaries"], 3, "{}", c.log());
    // After the retention (and one prune interval) all three are gone, the far-future one too.
    c.wait_for("/api/ingest", Duration::from_secs(20), |v| {
        v["stored"]["summaries"] == 0
    });
    assert!(
        received.elapsed() > Duration::from_millis(8_640),
        "pruned before its retention"
    );
    assert!(c.log().contains("retention: deleted"), "{}", c.log());
}
