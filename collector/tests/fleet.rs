//! A fleet's central side: three collectors in one MQTT shared-subscription group on the
//! shipped broker setup (Mosquitto from scripts/provision.sh: TLS, a login and ACL block per
//! collector), storing into one PostgreSQL database; 1,000 simulated devices
//! (`edgeflow-loadgen`) publish while one collector is SIGKILLed and restarted twice.
//!
//! Per device, the database's running totals equal what the broker acknowledged to the
//! device; every (site, device, boot, seq, part) is stored once although three collectors
//! share one store and the killed one gets its unacknowledged messages again; gaps are 0; the
//! load was really shared.

use postgres::{Client, NoTls};
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};
use testkit::postgres::Postgres;
use testkit::{collector::*, provision::*};

const DEVICES: usize = 1_000;
const WINDOWS: u64 = 12;
const INTERVAL_MS: u64 = 700;
const GROUP: &str = "fleet";

/// Per device from the database: (windows, packets, bytes, flow records, gaps).
fn stored(db: &mut Client) -> BTreeMap<String, (u64, u64, u64, u64, u64)> {
    db.query(
        "SELECT t.site || '/' || t.device, t.windows, t.packets, t.bytes, t.flow_records,
                COALESCE((SELECT SUM(max_seq + 1 - base_seq - complete) FROM boots b
                          WHERE b.site = t.site AND b.device = t.device), 0)::bigint
         FROM device_totals t",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get(0),
            (
                r.get::<_, i64>(1) as u64,
                r.get::<_, f64>(2) as u64,
                r.get::<_, f64>(3) as u64,
                r.get::<_, i64>(4) as u64,
                r.get::<_, i64>(5) as u64,
            ),
        )
    })
    .collect()
}

#[test]
fn three_collectors_share_the_fleet_one_killed_twice_nothing_lost_or_doubled() {
    let started = Instant::now();
    let pg = Postgres::start();
    let url = pg.create_database("fleet");
    let broker = provisioned_broker(&[]);
    let dir = broker.dir().to_path_buf();
    let d = dir.to_str().unwrap();
    provision(&["bulk", d, "sim", "dev", &DEVICES.to_string()]);
    for name in ["col0", "col1", "col2"] {
        provision(&["collector", d, name, "--share-group", GROUP]);
    }
    broker.reload();
    let mut collectors: Vec<Collector> = (0..3)
        .map(|i| {
            let conf = dir.join(format!("collector-col{i}.toml"));
            Collector::with_args(&["--config", conf.to_str().unwrap(), "--db", &url])
        })
        .collect();
    for c in &collectors {
        c.wait_log(
            "subscribed to $share/fleet/edgeflow/v1/+/+/flows, edgeflow/v1/+/+/status",
            Duration::from_secs(20),
        );
    }

    let mut load = Loadgen::start(
        &broker,
        &dir.join("loadgen-sim.txt"),
        WINDOWS,
        INTERVAL_MS,
        (5, 40),
    );
    for kill in 1..=2 {
        std::thread::sleep(Duration::from_millis(2_500));
        collectors[1].kill();
        std::thread::sleep(Duration::from_millis(400));
        collectors[1].restart();
        assert!(
            load.running(),
            "kill {kill} happened while devices published"
        );
    }
    let acked = load.finish(Duration::from_secs(120));
    assert_eq!(acked.len(), DEVICES);
    let want_windows: u64 = acked.values().map(|a| a.0).sum();
    assert_eq!(
        want_windows,
        DEVICES as u64 * WINDOWS,
        "every window acknowledged"
    );

    let mut db = Client::connect(&url, NoTls).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let windows: i64 = db
            .query_one(
                "SELECT COALESCE(SUM(windows), 0)::bigint FROM device_totals",
                &[],
            )
            .unwrap()
            .get(0);
        if windows as u64 == want_windows {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stored {windows} of {want_windows} windows\ncol1 log:\n{}",
            collectors[1].log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));

    let got = stored(&mut db);
    assert_eq!(got.len(), DEVICES);
    for (id, &(windows, packets, bytes, records)) in &acked {
        let g = got[id];
        assert_eq!(
            g,
            (windows, packets, bytes, records, 0),
            "{id}: stored vs acked"
        );
    }
    // The same through the API, from each collector (any of them serves the shared store).
    for c in &collectors {
        let v = c.json("/api/devices?from=0&limit=10000");
        let list = v["devices"].as_array().unwrap();
        assert_eq!(list.len(), DEVICES);
        for d in list {
            let id = d["id"].as_str().unwrap();
            let (windows, packets, bytes, records) = acked[id];
            let n = |v: &serde_json::Value| v.as_u64().unwrap();
            assert_eq!(
                (
                    n(&d["windows"]),
                    n(&d["totals"]["packets"]),
                    n(&d["totals"]["bytes"]),
                    n(&d["flow_records"]),
                    n(&d["gaps"])
                ),
                (windows, packets, bytes, records, 0),
                "{id}: the API vs acked"
            );
        }
    }
    let (rows, distinct, records): (i64, i64, i64) = {
        let r = db
            .query_one(
                "SELECT COUNT(*), (SELECT COUNT(*) FROM (SELECT DISTINCT site, device, boot_id,
                                    seq, part FROM summaries) k),
                        (SELECT COUNT(*) FROM flows) FROM summaries",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(rows, distinct, "nothing stored twice");
    let want_records: u64 = acked.values().map(|a| a.3).sum();
    assert_eq!(records as u64, want_records, "every flow record once");

    // Shared, not copied: the two collectors never killed each stored a part of the
    // messages, not all of them (what each reports as it stops).
    let mut shares = Vec::new();
    for c in &mut collectors {
        assert!(c.terminate().success());
        let log = c.log();
        let line = log
            .lines()
            .rfind(|l| l.contains("stopped; stored "))
            .unwrap_or_else(|| panic!("no stop report:\n{log}"));
        let n: u64 = line
            .split("stored ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(!log.contains("rejected"), "{log}");
        shares.push(n);
    }
    eprintln!(
        "fleet: {DEVICES} devices, {want_windows} windows, {want_records} records; summaries \
         stored per collector since its last start: {shares:?}; {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(shares[0] > 0 && shares[2] > 0, "{shares:?}");
    assert!(
        shares[0] < rows as u64 / 2 && shares[2] < rows as u64 / 2,
        "each collector stored only its share: {shares:?} of {rows}"
    );
}
