//! Nothing acknowledged is lost, and what is lost shows. Simulated devices
//! (`edgeflow-loadgen`: real summaries, each device its own login, boot id and gapless seq)
//! publish through the shipped broker setup (Mosquitto from scripts/provision.sh: TLS, ACL,
//! persistence) to the collector.
//!
//! - The collector is SIGKILLed and restarted again and again, once while another connection
//!   holds SQLite's write lock (a stalled store): the API's totals per device equal what the
//!   broker acknowledged to the devices, every window is stored once, gaps are 0.
//! - Mosquitto itself is SIGKILLed while it holds messages queued for the (stopped)
//!   collector: whatever it loses shows as gaps, and stored + gaps = what was published.

use serde_json::Value;
use std::{collections::BTreeMap, time::Duration};
use testkit::{collector::*, provision::*};

/// Devices by id from /api/devices.
fn devices(c: &Collector) -> BTreeMap<String, Value> {
    c.json("/api/devices")["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap().to_string(), d.clone()))
        .collect()
}

/// Rows and distinct (site, device, boot, seq, part) in the store: equal if nothing twice.
fn stored_once(c: &Collector) -> (i64, i64) {
    let db = rusqlite::Connection::open(c.dir.join("collector.db")).unwrap();
    db.query_row(
        "SELECT COUNT(*), (SELECT COUNT(*) FROM (SELECT DISTINCT site, device, boot_id, seq, part
                                                 FROM summaries)) FROM summaries",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

/// Provisions `n` simulated devices (site `sim`, `dev-*`; logins in `loadgen-sim.txt`), has the
/// broker load them, and starts a collector subscribed with its own login.
fn sim_devices_and_collector(broker: &testkit::mosquitto::Mosquitto, n: usize) -> Collector {
    let dir = broker.dir();
    provision(&["bulk", dir.to_str().unwrap(), "sim", "dev", &n.to_string()]);
    broker.reload();
    let c = secured_collector(broker);
    c.wait_subscribed();
    c
}

#[test]
fn collector_killed_again_and_again_also_while_its_store_stalls_loses_nothing() {
    const DEVICES: usize = 4;
    const WINDOWS: u64 = 150;
    let broker = provisioned_broker(&[]);
    let dir = broker.dir().to_path_buf();
    let mut c = sim_devices_and_collector(&broker, DEVICES);

    let mut load = Loadgen::start(
        &broker,
        &dir.join("loadgen-sim.txt"),
        WINDOWS,
        200,
        (50, 2000),
    );
    let mut kills = 0;
    let db_path = c.dir.join("collector.db");
    for round in 0..4 {
        std::thread::sleep(Duration::from_millis(1_500));
        if round == 2 {
            // Stall the store: another connection holds SQLite's write lock for 12 s (longer
            // than the writer's 10 s busy timeout, so its batch fails and is retried); the
            // collector is killed in the middle and restarted while the lock is still held.
            let locker = rusqlite::Connection::open(&db_path).unwrap();
            locker.execute_batch("BEGIN IMMEDIATE").unwrap();
            std::thread::sleep(Duration::from_millis(4_000));
            c.kill();
            std::thread::sleep(Duration::from_millis(500));
            c.restart();
            std::thread::sleep(Duration::from_millis(7_500));
            locker.execute_batch("ROLLBACK").unwrap();
        } else {
            c.kill();
            std::thread::sleep(Duration::from_millis(300));
            c.restart();
        }
        kills += 1;
        assert!(
            load.running(),
            "kill {kills} happened while devices published"
        );
    }
    let acked = load.finish(Duration::from_secs(120));
    assert_eq!(acked.len(), DEVICES);

    let want_windows: u64 = acked.values().map(|a| a.0).sum();
    c.wait_for("/api/devices", Duration::from_secs(60), |v| {
        v["devices"].as_array().is_some_and(|d| {
            d.iter()
                .map(|d| d["windows"].as_u64().unwrap())
                .sum::<u64>()
                == want_windows
        })
    });
    std::thread::sleep(Duration::from_millis(500));
    let got = devices(&c);
    for (id, &(windows, packets, bytes, records)) in &acked {
        assert_eq!(windows, WINDOWS, "{id}: every window acknowledged");
        let d = &got[id];
        assert_eq!(d["windows"], windows, "{id}");
        assert_eq!(d["totals"]["packets"], packets, "{id}");
        assert_eq!(d["totals"]["bytes"], bytes, "{id}");
        assert_eq!(d["flow_records"], records, "{id}");
        assert_eq!(d["gaps"], 0, "{id}: {d}");
    }
    let (rows, distinct) = stored_once(&c);
    assert_eq!(rows, distinct, "nothing stored twice");
    let ingest = c.json("/api/ingest");
    assert!(
        ingest["rejected"].as_object().unwrap().is_empty(),
        "{ingest}"
    );
}

#[test]
fn what_a_killed_broker_loses_shows_as_gaps() {
    const DEVICES: usize = 3;
    let mut broker = provisioned_broker(&[]);
    let dir = broker.dir().to_path_buf();
    let mut c = sim_devices_and_collector(&broker, DEVICES);

    // 60 windows a device, 5 a second. The collector stops for a while, so the broker
    // queues for its session; the broker is then killed (its last autosave may hold some of
    // the queue, the rest is gone) and restarted with the collector; the devices carry on.
    let mut load = Loadgen::start(&broker, &dir.join("loadgen-sim.txt"), 60, 200, (50, 2000));
    std::thread::sleep(Duration::from_millis(1_500));
    c.kill();
    std::thread::sleep(Duration::from_millis(2_500));
    broker.stop();
    std::thread::sleep(Duration::from_millis(300));
    broker.resume();
    c.restart();
    assert!(load.running(), "the broker died while devices published");
    let acked = load.finish(Duration::from_secs(120));

    let want: u64 = acked.values().map(|a| a.0).sum();
    c.wait_for("/api/devices", Duration::from_secs(60), |v| {
        v["devices"].as_array().is_some_and(|d| {
            d.len() == DEVICES
                && d.iter()
                    .map(|d| d["windows"].as_u64().unwrap() + d["gaps"].as_u64().unwrap())
                    .sum::<u64>()
                    == want
        })
    });
    std::thread::sleep(Duration::from_millis(500));
    let got = devices(&c);
    let mut lost = 0;
    for (id, &(windows, ..)) in &acked {
        let d = &got[id];
        let (stored, gaps) = (d["windows"].as_u64().unwrap(), d["gaps"].as_u64().unwrap());
        assert_eq!(
            stored + gaps,
            windows,
            "{id}: every window stored or counted missing"
        );
        lost += gaps;
    }
    eprintln!("broker SIGKILL: {lost} of {want} acknowledged windows lost, all shown as gaps");
    assert!(lost > 0, "the broker's loss shows as gaps: {got:?}");
    let (rows, distinct) = stored_once(&c);
    assert_eq!(rows, distinct, "nothing stored twice");
    let (_, metrics) = c.get("/metrics");
    let shown: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("edgeflow_device_missing_windows{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .sum();
    assert_eq!(shown, lost, "the same gaps in /metrics");
}
