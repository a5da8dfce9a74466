//! The dashboard with a fleet of 1,000 devices, in headless Chromium driven in real time
//! (`testkit::browser`). 997 simulated devices (`edgeflow-loadgen`: real summaries, each device
//! its own MQTT connection) and three hand-built ones that need attention (one said offline, one
//! lost a window, one with a full flow table) publish through Mosquitto to the collector, and
//! keep publishing while the page runs:
//!
//! - the summary counts 1,000 devices; the device list shows one page of them, the ones needing
//!   attention first; search and the site filter narrow it; pages move on;
//! - a device's page (`#/device/<site>/<device>`) draws its health over time and lists only
//!   its flows;
//! - the TCP, DNS and owners panels fill from the simulated fleet's blocks;
//! - the page measures itself (`performance.now()` around each refresh, fetch and render, into
//!   `#perf`): the first load and every refresh finish within the 2 s refresh period, and the
//!   figures it shows change as data arrives.
//!
//! The broker is plain Mosquitto on loopback: TLS and per-device logins for simulated fleets
//! are proven in durability.rs; 1,000 handshakes here would only cost CI time.

use serde_json::Value;
use std::{
    path::Path,
    time::{Duration, Instant},
};
use testkit::mosquitto::Mosquitto;
use testkit::{browser::Browser, collector::*, output_dir, publisher::*, summary::*};

const SITES: [&str; 4] = ["ams", "fra", "lon", "par"];
const SIMULATED: usize = 997;
const REFRESH_MS: f64 = 2000.0;

/// `edgeflow-loadgen` with `SIMULATED` devices `<site>/edge-NNNN` spread over `SITES`, a
/// window every 5 s each, for longer than the test runs.
fn start_fleet(broker: &Mosquitto, dir: &Path) -> Loadgen {
    let creds = dir.join("fleet.txt");
    let lines: String = (0..SIMULATED)
        .map(|i| format!("{}/edge-{i:04}\n", SITES[i % SITES.len()]))
        .collect();
    std::fs::write(&creds, lines).unwrap();
    let creds = creds.to_str().unwrap();
    Loadgen::with_args(&[
        "--broker",
        &broker.url(),
        "--credentials",
        creds,
        "--windows",
        "60",
        "--interval-ms",
        "5000",
        "--flows-min",
        "5",
        "--flows-max",
        "40",
        "--top-k",
        "40",
        "--tcp-health",
        "--dns",
        "--owners",
    ])
}

/// Three devices at site `zrh` that need attention, with names that sort after every simulated
/// one: `gw-offline` (its status says offline), `gw-gapped` (window 3 of 6 never arrives),
/// `gw-full` (its flow table was full: 50 packets not tracked).
fn attention_devices(broker: &Mosquitto) {
    let now = now_ms();
    let mut msgs = Vec::new();
    for seq in 0..6u64 {
        let start = now - (6 - seq) * u64::from(WINDOW_MS);
        let flow = |last: u8| F {
            proto: 6,
            src: [10, 250, 0, last],
            src_port: 40_000 + seq as u16,
            dst: [192, 0, 2, 80],
            dst_port: 443,
            fwd: (10, 4_000 + 100 * seq),
            rev: (12, 9_000),
        };
        if seq < 4 {
            msgs.push(Msg::summary(&summary(
                "zrh",
                "gw-offline",
                7,
                seq,
                start,
                &[flow(1)],
                (0, 0),
            )));
        }
        if seq != 3 {
            msgs.push(Msg::summary(&summary(
                "zrh",
                "gw-gapped",
                8,
                seq,
                start,
                &[flow(2)],
                (0, 0),
            )));
        }
        msgs.push(Msg::summary(&summary(
            "zrh",
            "gw-full",
            9,
            seq,
            start,
            &[flow(3)],
            if seq == 5 { (50, 40_000) } else { (0, 0) },
        )));
    }
    msgs.push(Msg {
        retain: true,
        ..Msg::raw("edgeflow/v1/zrh/gw-offline/status", b"offline")
    });
    publish_all(broker.port, &msgs);
}

/// The device ids in the list as shown, top to bottom.
const ROWS: &str =
    "[...document.querySelectorAll('#devices tbody tr[data-device]')].map(r => r.dataset.device)";

/// The page's own measurements (`#perf`): refreshes done, first load, last and slowest refresh.
fn perf(b: &mut Browser) -> (u64, f64, f64, f64) {
    let v = b.eval(
        "(() => { const d = document.getElementById('perf').dataset;
           return [Number(d.refreshes), Number(d.firstMs), Number(d.lastMs), Number(d.maxMs)]; })()",
    );
    let n = |i: usize| v[i].as_f64().unwrap_or(f64::NAN);
    (n(0) as u64, n(1), n(2), n(3))
}

fn rows(b: &mut Browser) -> Vec<String> {
    serde_json::from_value(b.eval(ROWS)).unwrap()
}

/// Types `text` into the field `id` as a user would (focus, select all, insert).
fn type_into(b: &mut Browser, id: &str, text: &str) {
    b.eval(&format!(
        "(() => {{ const e = document.getElementById('{id}'); e.focus(); e.select(); }})()"
    ));
    if text.is_empty() {
        b.call(
            "Input.dispatchKeyEvent",
            serde_json::json!({"type": "keyDown", "key": "Backspace", "code": "Backspace",
                               "windowsVirtualKeyCode": 8}),
        );
        b.call(
            "Input.dispatchKeyEvent",
            serde_json::json!({"type": "keyUp", "key": "Backspace", "code": "Backspace",
                               "windowsVirtualKeyCode": 8}),
        );
    } else {
        b.call("Input.insertText", serde_json::json!({ "text": text }));
    }
}

#[test]
fn dashboard_with_a_thousand_devices_searches_sorts_and_keeps_up() {
    let started = Instant::now();
    let broker = Mosquitto::start();
    let c = Collector::with_args(&["--broker", &broker.url(), "--token", "s3cret"]);
    c.wait_subscribed();
    let _fleet = start_fleet(&broker, &c.dir);
    attention_devices(&broker);
    // Every device reported once (the generator spreads its 997 first windows over 5 s).
    c.wait_for("/api/devices", Duration::from_secs(60), |v| {
        v["devices"].as_array().map(Vec::len) == Some(1000)
    });
    eprintln!("fleet of 1,000 reporting after {:?}", started.elapsed());

    let dir = output_dir();
    let mut b = Browser::launch(1440, 1800);
    b.goto(&format!("{}/#token=s3cret", c.base_url()));

    // The summary counts the fleet; the list shows a page of it, attention first.
    b.wait_for(
        "the summary to count 1,000 devices",
        "document.getElementById('s-devices').dataset.n === '1000'",
        Duration::from_secs(10),
    );
    let (_, first_ms, _, _) = perf(&mut b);
    assert!(
        first_ms > 0.0 && first_ms < REFRESH_MS,
        "first load took {first_ms} ms"
    );
    let text = b.eval("document.getElementById('summary').innerText");
    let text = text.as_str().unwrap();
    assert!(text.contains("1,000"), "summary: {text}");
    b.wait_for(
        "a page of devices",
        &format!("{ROWS}.length === 50"),
        Duration::from_secs(10),
    );
    let first = rows(&mut b);
    assert_eq!(
        first[0], "zrh/gw-offline",
        "the offline device first: {first:?}"
    );
    let mut next_two = first[1..3].to_vec();
    next_two.sort();
    assert_eq!(
        next_two,
        ["zrh/gw-full", "zrh/gw-gapped"],
        "then the gapped device and the one whose table was full: {first:?}"
    );
    assert!(
        first[3..].iter().all(|d| !d.starts_with("zrh/")),
        "healthy devices after them: {first:?}"
    );
    let attention = b.eval(
        "document.querySelector('#devices tr[data-device=\"zrh/gw-gapped\"]').dataset.attention",
    );
    assert!(
        attention.as_str().unwrap().split(' ').any(|a| a == "gaps"),
        "gw-gapped is marked for its gap: {attention}"
    );
    let total = b.eval("document.getElementById('dev-count').dataset.total");
    assert_eq!(total, "1000", "the list says how many match");
    let page = b.eval("document.getElementById('dev-count').innerText");
    assert!(
        page.as_str().unwrap().contains("1–50 of 1,000"),
        "page: {page}"
    );
    b.screenshot(&dir.join("dashboard-fleet.png"));

    // The next page: devices 51..100 of the same order.
    b.eval("document.getElementById('next').click()");
    b.wait_for(
        "page 2",
        "document.getElementById('dev-count').innerText.includes('51–100 of 1,000')",
        Duration::from_secs(10),
    );
    let second = b.wait_for(
        "the rows of page 2",
        &format!("(() => {{ const r = {ROWS}; return r.length === 50 && !r.includes('zrh/gw-offline') ? r : null; }})()"),
        Duration::from_secs(10),
    );
    let second: Vec<String> = serde_json::from_value(second).unwrap();
    assert!(
        second.iter().all(|d| !first.contains(d)),
        "page 2 repeats none of page 1"
    );

    // Search narrows the list (and goes back to its first page): edge-0120..edge-0129.
    type_into(&mut b, "q", "edge-012");
    let found = b.wait_for(
        "the search to narrow the list",
        &format!(
            "(() => {{ const r = {ROWS}; return r.length === 10 && r.every(d => d.includes('edge-012')) ? r : null; }})()"
        ),
        Duration::from_secs(10),
    );
    assert_eq!(found.as_array().unwrap().len(), 10);
    b.wait_for(
        "the count to follow the search",
        "document.getElementById('dev-count').dataset.total === '10'",
        Duration::from_secs(5),
    );
    // The site filter on top of it: edge-0120, 0124, 0128 are at ams (i % 4 == 0).
    b.eval(
        "(() => { const s = document.getElementById('site'); s.value = 'ams';
                  s.dispatchEvent(new Event('change', { bubbles: true })); })()",
    );
    let at_ams = b.wait_for(
        "the site filter",
        &format!("(() => {{ const r = {ROWS}; return r.length === 3 && r.every(d => d.startsWith('ams/edge-012')) ? r : null; }})()"),
        Duration::from_secs(10),
    );
    assert_eq!(
        at_ams,
        serde_json::json!(["ams/edge-0120", "ams/edge-0124", "ams/edge-0128"])
    );
    // The summary follows the site: 250 devices at ams (997 / 4, rounded up for i % 4 == 0).
    b.wait_for(
        "the summary to follow the site",
        "document.getElementById('s-devices').dataset.n === '250'",
        Duration::from_secs(10),
    );
    // Cleared: the whole fleet again.
    type_into(&mut b, "q", "");
    b.eval(
        "(() => { const s = document.getElementById('site'); s.value = '';
                  s.dispatchEvent(new Event('change', { bubbles: true })); })()",
    );
    b.wait_for(
        "the whole fleet again",
        "document.getElementById('dev-count').dataset.total === '1000'",
        Duration::from_secs(10),
    );

    // The fleet chart: the total, the top devices and the rest as "others".
    let chart = b.wait_for(
        "the fleet chart",
        "(() => { const l = [...document.querySelectorAll('#legend [data-series]')].map(e => e.dataset.series);
                  return l.includes('fleet') && l.includes('others') ? l : null; })()",
        Duration::from_secs(10),
    );
    let series = chart.as_array().unwrap();
    assert!(
        series.len() >= 3 && series.len() <= 2 + 8,
        "fleet, others and up to 8 devices: {chart}"
    );
    // Drawn, not only listed: the fleet total is a line of several points above the zero line
    // (the hand-drawn SVG: y(0) sits 24 px above the bottom), and every top device has a line
    // or a dot in the chart below.
    let drawn = b.wait_for(
        "the fleet chart drawn",
        "(() => { const c = document.querySelector('#chart svg'), t = document.querySelector('#chart-top svg');
                  if (!c || !t) return null;
                  const H = c.viewBox.baseVal.height;
                  const ys = [...c.querySelectorAll('polyline.thick')].flatMap(p =>
                      p.getAttribute('points').trim().split(' ').map(xy => Number(xy.split(',')[1])));
                  const marks = t.querySelectorAll('polyline.line, circle').length;
                  return ys.length > 1 && ys.some(y => y < H - 25) ? [ys.length, marks] : null; })()",
        Duration::from_secs(10),
    );
    assert!(
        drawn[1].as_u64().unwrap() as usize >= series.len() - 2,
        "a line or dot per top device: {drawn} for {chart}"
    );

    // The DNS panel of the whole fleet: top names (the generator's eight, one NXDOMAIN), its
    // resolvers and the latency distribution.
    let dns = b.wait_for(
        "the DNS panel",
        "(() => { const n = [...document.querySelectorAll('#dns-names tbody tr[data-name]')].map(r => r.dataset.name);
                  const r = document.querySelectorAll('#dns-resolvers tbody tr[data-resolver]').length;
                  const h = document.querySelectorAll('#dns-hist rect').length;
                  return n.length >= 5 && r > 0 && h > 0 ? [n, r, h] : null; })()",
        Duration::from_secs(15),
    );
    eprintln!("DNS panel: {dns}");
    assert!(
        dns[0]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().starts_with("gone.example.invalid ")),
        "the NXDOMAIN name among the top names by errors: {dns}"
    );

    // Who sent it, fleet-wide: the simulated boxes' processes and services, their LAN devices
    // with vendor and DHCP name.
    let owners = b.wait_for(
        "the owners panel",
        "(() => { const p = [...document.querySelectorAll('#owner-processes tbody tr[data-process]')].map(r => r.dataset.process);
                  const s = document.querySelectorAll('#owner-services tbody tr[data-service]').length;
                  const l = [...document.querySelectorAll('#owner-lan tbody tr[data-mac]')].map(r => r.dataset.vendor + '/' + r.dataset.name);
                  return p.length === 5 && s === 5 && l.length === 10 ? [p, l] : null; })()",
        Duration::from_secs(15),
    );
    assert!(
        owners[1].as_array().unwrap().iter().all(|l| l
            .as_str()
            .unwrap()
            .starts_with("Raspberry Pi Trading Ltd/sensor-")),
        "LAN devices with their vendor and DHCP name: {owners}"
    );

    // A process in the owners panel narrows the flow table to its flows (/api/flows?process=).
    let top = owners[0][0].as_str().unwrap().to_string();
    b.eval("document.querySelector('#owner-processes tbody tr[data-process]').click()");
    let narrowed = b.wait_for(
        "the flow table narrowed to the process",
        &format!(
            "(() => {{ const r = [...document.querySelectorAll('#flows tbody tr[data-flow]')].map(t => t.dataset.owner);
                      return document.getElementById('f-process').value === '{top}' && r.length && r.every(o => o === '{top}') ? r.length : null; }})()"
        ),
        Duration::from_secs(10),
    );
    eprintln!("{narrowed} flows of {top}");
    b.eval(
        "(() => { const e = document.getElementById('f-process'); e.value = '';
                  e.dispatchEvent(new Event('input', { bubbles: true })); })()",
    );

    // Live: later refreshes show more traffic, each within the refresh period, patching the
    // rows in place (the same elements before and after) with one page of devices in the DOM.
    let (n0, ..) = perf(&mut b);
    let bytes0 = b.eval("Number(document.getElementById('s-bytes').dataset.n)");
    b.eval("document.querySelectorAll('#devices tbody tr').forEach(r => { r.kept = true; })");
    b.wait_for(
        "two more refreshes",
        &format!(
            "Number(document.getElementById('perf').dataset.refreshes) >= {}",
            n0 + 2
        ),
        Duration::from_secs(10),
    );
    let bytes1 = b.wait_for(
        "more traffic in the summary",
        &format!("(() => {{ const n = Number(document.getElementById('s-bytes').dataset.n); return n > {bytes0} ? n : null; }})()"),
        Duration::from_secs(15),
    );
    eprintln!("traffic in range {bytes0} -> {bytes1} bytes");
    let kept = b.eval(
        "(() => { const r = [...document.querySelectorAll('#devices tbody tr')];
                  return [r.length, r.filter(t => t.kept).length]; })()",
    );
    assert_eq!(
        kept,
        serde_json::json!([50, 50]),
        "rows patched, not rebuilt"
    );
    let elements = b.eval("document.getElementsByTagName('*').length");
    let elements = elements.as_u64().unwrap();
    eprintln!("{elements} elements in the page");
    assert!(
        elements < 8_000,
        "one page of devices in the DOM, not 1,000: {elements} elements"
    );

    // A device's page, through its link in a searched list: its health over time and only its
    // flows.
    type_into(&mut b, "q", "zrh/");
    b.wait_for(
        "the three zrh devices",
        &format!("{ROWS}.length === 3"),
        Duration::from_secs(10),
    );
    b.eval("document.querySelector('#devices a[href=\"#/device/zrh/gw-gapped\"]').click()");
    b.wait_for(
        "the device page",
        "!document.getElementById('view-device').hidden && document.getElementById('d-title').dataset.device === 'zrh/gw-gapped'",
        Duration::from_secs(10),
    );
    let health = b.wait_for(
        "the health chart",
        "(() => { const m = [...document.querySelectorAll('#health [data-metric]')];
                  const drawn = m.filter(e => Number(e.dataset.points) > 0 && e.querySelector('svg'));
                  return drawn.length >= 4 ? drawn.map(e => e.dataset.metric) : null; })()",
        Duration::from_secs(10),
    );
    eprintln!("health charts drawn: {health}");
    let gaps = b.eval("document.getElementById('d-gaps').innerText");
    assert!(
        gaps.as_str().unwrap().contains("1 window missing"),
        "gaps: {gaps}"
    );
    let flows = b.wait_for(
        "the device's flows",
        "(() => { const r = [...document.querySelectorAll('#flows tbody tr[data-flow]')];
                  return r.length ? r.map(t => t.dataset.device) : null; })()",
        Duration::from_secs(10),
    );
    assert!(
        flows
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d == "zrh/gw-gapped"),
        "only its flows: {flows}"
    );
    let talkers = b.eval(
        "[...document.querySelectorAll('#talkers tbody tr[data-addr]')].map(t => t.dataset.addr).sort()",
    );
    assert_eq!(
        talkers,
        serde_json::json!(["10.250.0.2", "192.0.2.80"]),
        "only its talkers"
    );
    b.screenshot(&dir.join("dashboard-device.png"));

    // A simulated device's page opened by its address: its health has many windows.
    b.eval("location.hash = '#/device/lon/edge-0002'");
    b.wait_for(
        "a simulated device's health",
        "document.getElementById('d-title').dataset.device === 'lon/edge-0002'
         && Number(document.querySelector('#health [data-metric=active_flows]')?.dataset.points) > 0",
        Duration::from_secs(10),
    );
    // A device that never reported: said so, and the page stays live.
    b.eval("location.hash = '#/device/nowhere/none'");
    b.wait_for(
        "the unknown device's page",
        "document.getElementById('d-facts').innerText.includes('no device nowhere/none has reported')
         && document.getElementById('health').innerText.includes('no health reported')
         && document.getElementById('live').className === 'live ok'",
        Duration::from_secs(10),
    );
    // Back to the fleet: the list as it was left (the search is in the address).
    b.eval("document.querySelector('#view-device a.back').click()");
    b.wait_for(
        "the fleet view again, still searched",
        &format!(
            "!document.getElementById('view-fleet').hidden && location.hash === '#/?q=zrh%2F'
             && document.getElementById('q').value === 'zrh/' && {ROWS}.length === 3"
        ),
        Duration::from_secs(10),
    );

    let (n, first_ms, last_ms, max_ms) = perf(&mut b);
    eprintln!(
        "page timing: first load {first_ms:.0} ms, {n} refreshes, last {last_ms:.0} ms, slowest {max_ms:.0} ms"
    );
    // The traffic tables (every flow record in the range, fleet-wide) refresh on their own
    // lane, as often as the collector answers: reported, not bounded here.
    let traffic = b.eval(
        "(() => { const d = document.getElementById('perf').dataset;
           return `${d.trafficRefreshes} refreshes, first ${d.trafficFirstMs} ms, slowest ${d.trafficMaxMs} ms`; })()",
    );
    eprintln!("traffic tables: {}", traffic.as_str().unwrap_or("?"));
    assert!(n >= 4, "refreshed {n} times");
    assert!(
        max_ms < REFRESH_MS,
        "every refresh within the refresh period: slowest {max_ms} ms"
    );
    let errors: Vec<String> = b
        .console
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("exception") || l.starts_with("console.error"))
        .cloned()
        .collect();
    assert!(errors.is_empty(), "the page logged errors: {errors:?}");
    let _: Value = c.json("/api/ingest");
    eprintln!("test took {:?}", started.elapsed());
}
