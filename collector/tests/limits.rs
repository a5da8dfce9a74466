//! The collector's own limits, through a real Mosquitto and the collector binary: retention by
//! receive time, clock skew per device, API cost limits, HTTP server limits, bounded ingest.

use serde_json::Value;
use std::time::{Duration, Instant};
use testkit::mosquitto::Mosquitto;
use testkit::{collector::*, publisher::*, summary::*};

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
    let late = summary(
        "lab",
        "future",
        2,
        0,
        now + 1000 * 365 * 86_400_000,
        &one_flow(),
        (0, 0),
    );
    let ahead = summary(
        "lab",
        "ahead",
        3,
        0,
        now + 120_000 - WINDOW_MS as u64,
        &one_flow(),
        (0, 0),
    );
    publish_all(
        broker.port,
        &[
            Msg::summary(&early),
            Msg::summary(&late),
            Msg::summary(&ahead),
        ],
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
        .find(|l| {
            l.starts_with("edgeflow_device_clock_skew_seconds{site=\"lab\",device=\"ahead\"}")
        })
        .unwrap_or_else(|| panic!("no skew series in\n{metrics}"));
    let secs: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((110.0..=120.5).contains(&secs), "{line}");

    // Prunes ran since (every 2.16 s), yet everything is younger than 8.64 s by receive time:
    // the 1970 window is still there.
    while received.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        c.json("/api/ingest")["stored"]["summaries"],
        3,
        "{}",
        c.log()
    );
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

/// `n` flows with few distinct addresses (the summary builder looks addresses up linearly).
fn many_flows(n: usize, salt: u64) -> Vec<F> {
    (0..n)
        .map(|i| F {
            proto: 6,
            src: [10, 2, 0, 1 + (i % 4) as u8],
            src_port: 1024 + (i as u16),
            dst: [10, 3, 0, 1 + (i % 3) as u8],
            dst_port: 443 + (salt % 7) as u16,
            fwd: (1 + i as u64, 100),
            rev: (1, 60 + salt),
        })
        .collect()
}

/// GET and the time it took.
fn timed(c: &Collector, path: &str) -> (u16, Value, Duration) {
    let t = Instant::now();
    let (status, body) = c.get(path);
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"));
    (status, v, t.elapsed())
}

#[test]
fn api_abuse_answers_400_fast_while_ingest_goes_on() {
    let broker = Mosquitto::with_config("max_queued_messages 100000\n");
    // A tight query time limit, so that a query over 100,000 flow records runs into it.
    let c = Collector::with_args(&["--broker", &broker.url(), "--query-timeout-ms", "10"]);
    c.wait_subscribed();
    let base = now_ms() - 3_600_000;
    let heavy: Vec<Msg> = (0..200u64)
        .map(|seq| {
            let s = summary(
                "lab",
                "heavy",
                1,
                seq,
                base + seq * 10_000,
                &many_flows(500, seq),
                (0, 0),
            );
            Msg::summary(&s)
        })
        .collect();
    publish_all(broker.port, &heavy);
    // A window claiming to be 49 days long.
    let mut long = summary("lab", "long", 2, 0, base, &one_flow(), (0, 0));
    long.window_len_ms = u32::MAX;
    publish_all(broker.port, &[Msg::summary(&long)]);
    c.wait_for("/api/ingest", Duration::from_secs(60), |v| {
        v["stored"]["summaries"] == 201
    });

    // Meanwhile a device keeps publishing.
    let port = broker.port;
    let live: Vec<Msg> = (0..300u64)
        .map(|seq| {
            Msg::summary(&summary(
                "lab",
                "live",
                3,
                seq,
                base + seq * 10_000,
                &one_flow(),
                (0, 0),
            ))
        })
        .collect();
    let publisher = std::thread::spawn(move || {
        for chunk in live.chunks(10) {
            publish_all(port, chunk);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let stored = |c: &Collector| {
        c.json("/api/ingest")["stored"]["summaries"]
            .as_u64()
            .unwrap()
    };
    let before = stored(&c);

    let fast = Duration::from_secs(2);
    // Rounds of abuse for as long as the device publishes (at least 2 s, at least 3 rounds).
    let t = Instant::now();
    let mut rounds = 0;
    while rounds < 3 || (t.elapsed() < Duration::from_secs(2) && !publisher.is_finished()) {
        rounds += 1;
        for (path, why) in [
            (
                "/api/series?from=-9223372036854775808&to=9223372036854775807&step=1",
                "0 or more",
            ),
            ("/api/devices?from=-1", "0 or more"),
            ("/api/talkers?from=10&to=10", "before"),
            ("/api/series?step=-5", "step"),
            ("/api/flows?from=abc", "from"),
            ("/api/flows?to=99999999999999999999", "to"),
            ("/api/flows?limit=-1", "limit"),
            // 100,000 records grouped and sorted: longer than 10 ms.
            ("/api/flows?from=0&limit=10000", "longer than 10 ms"),
        ] {
            let (status, v, took) = timed(&c, path);
            assert_eq!(status, 400, "{path}: {v}");
            let error = v["error"].as_str().unwrap_or_else(|| panic!("{path}: {v}"));
            assert!(error.contains(why), "{path}: {error}");
            assert!(took < fast, "{path} took {took:?}");
        }
        // The widest range there is answers with at most 1,000 buckets, quickly, the 49-day
        // window spread over them.
        for path in [
            "/api/series?from=0&to=9223372036854775807&step=1",
            "/api/series?from=0&to=9223372036854775807&step=9223372036854775807",
            "/api/series?from=1&to=2&step=1",
        ] {
            let (status, v, took) = timed(&c, path);
            assert_eq!(status, 200, "{path}: {v}");
            let n = v["t"].as_array().unwrap().len();
            assert!((1..=1000).contains(&n), "{path}: {n} buckets");
            assert!(took < fast, "{path} took {took:?}");
        }
    }
    let (_, v, _) = timed(
        &c,
        &format!(
            "/api/series?device=long&from={base}&to={}",
            base + 86_400_000
        ),
    );
    let rates = v["devices"][0]["bytes_per_s"].as_array().unwrap();
    assert!(
        rates.iter().all(|r| r.is_number()),
        "the long window covers every bucket: {v}"
    );

    let during = stored(&c);
    publisher.join().unwrap();
    assert!(
        during > before,
        "ingest went on during {rounds} rounds of abuse ({before} -> {during})"
    );
    c.wait_for("/api/ingest", Duration::from_secs(30), |v| {
        v["stored"]["summaries"] == 501
    });
}

/// Sends `head` on a fresh connection and reads the whole answer: (status line, body).
fn raw(addr: std::net::SocketAddr, head: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (h, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (h.lines().next().unwrap_or("").to_string(), body.to_string())
}

/// How long until the server closes `s` (reads return 0 or fail), while `send` is
/// written one byte every `every`.
fn closed_after(mut s: std::net::TcpStream, send: &[u8], every: Duration) -> Duration {
    use std::io::{Read, Write};
    let t = Instant::now();
    s.set_read_timeout(Some(every)).unwrap();
    let mut buf = [0u8; 4096];
    let mut i = 0;
    loop {
        assert!(t.elapsed() < Duration::from_secs(30), "never cut");
        if i < send.len() && s.write_all(&send[i..i + 1]).is_err() {
            return t.elapsed();
        }
        i += 1;
        match s.read(&mut buf) {
            Ok(0) => return t.elapsed(),
            Ok(_) => {} // an error answer before the close
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return t.elapsed(),
        }
    }
}

#[test]
fn http_cuts_slow_and_idle_clients_caps_connections_and_checks_the_host() {
    let broker = Mosquitto::start();
    let c = Collector::with_args(&[
        "--broker",
        &broker.url(),
        "--http-header-timeout-ms",
        "1000",
        "--http-max-connections",
        "4",
        "--http-host",
        "Flows.Example.NET",
    ]);
    let addr = c.http;
    // Slowloris: a request head one byte every 200 ms (the whole head would take 16 s).
    let head = format!(
        "GET /api/ingest HTTP/1.1\r\nHost: {addr}\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(40)
    );
    let s = std::net::TcpStream::connect(addr).unwrap();
    let took = closed_after(s, head.as_bytes(), Duration::from_millis(200));
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(4)).contains(&took),
        "slow head cut after {took:?}"
    );
    // An idle connection, and one idle after a kept-alive request, are cut the same way.
    let s = std::net::TcpStream::connect(addr).unwrap();
    let took = closed_after(s, b"", Duration::from_millis(100));
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(4)).contains(&took),
        "idle: {took:?}"
    );
    let s = std::net::TcpStream::connect(addr).unwrap();
    let keep = format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let took = closed_after(s, keep.as_bytes(), Duration::from_millis(1));
    assert!(took < Duration::from_secs(4), "kept alive for {took:?}");

    // Four idle connections take every slot: a fifth client is served only once the header
    // timeout has cut one of them.
    let idle: Vec<_> = (0..4)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let (status, _) = c.get("/api/ingest");
    let waited = t.elapsed();
    assert_eq!(status, 200);
    assert!(
        waited > Duration::from_millis(700),
        "served at once despite the cap ({waited:?})"
    );
    drop(idle);

    // A client that asks for 2,000 copies of the script (34 MB, pipelined) and reads none of
    // them is cut once a write has made no progress for the timeout.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let one = format!("GET /assets/app.js HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        let _ = s.write_all(one.repeat(2_000).as_bytes());
        std::thread::sleep(Duration::from_millis(3_000));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let end = s.read_to_end(&mut got);
        if let Err(e) = &end {
            assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "still open after {} bytes",
                got.len()
            );
        }
        assert!(got.len() < 2_000 * 17_000, "all {} bytes came", got.len());
    }

    // Host: IP literals, localhost and the configured name pass; another name gets 421.
    for (host, want) in [
        (addr.to_string(), "200"),
        (format!("localhost:{}", addr.port()), "200"),
        (format!("flows.example.net:{}", addr.port()), "200"),
        (format!("rebind.attacker.example:{}", addr.port()), "421"),
        ("flows.example.net.attacker.example".to_string(), "421"),
    ] {
        let (status, body) = raw(
            addr,
            &format!("GET /api/ingest HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        );
        assert!(status.contains(want), "Host {host}: {status} {body}");
        if want == "421" {
            assert!(body.contains("--http-host"), "{body}");
        }
    }
    // A body is refused without being read.
    let (status, _) = raw(
        addr,
        &format!("GET /api/ingest HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100000\r\n\r\n"),
    );
    assert!(status.contains("413"), "{status}");
    // A head larger than the server reads is refused.
    let (status, _) = raw(
        addr,
        &format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nX-Big: {}\r\n\r\n",
            "b".repeat(40_000)
        ),
    );
    assert!(status.contains("431") || status.is_empty(), "{status}");
}

/// The collector's resident memory, bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn qos0_summaries_are_refused_and_counted() {
    let broker = Mosquitto::start();
    let c = Collector::start(&broker.url());
    c.wait_subscribed();
    let s = summary("lab", "q0", 1, 0, now_ms() - 10_000, &one_flow(), (0, 0));
    publish_qos0(
        broker.port,
        &[
            Msg::summary(&s),
            Msg::raw("edgeflow/v1/lab/q0/status", b"online"),
        ],
    );
    let v = c.wait_for("/api/ingest", Duration::from_secs(20), |v| {
        v["messages"] == 2
    });
    assert_eq!(v["rejected"]["qos0"], 1, "{v}");
    assert_eq!(v["presence"], 1, "a status may come with QoS 0");
    assert_eq!(v["stored"]["summaries"], 0);
    let (_, metrics) = c.get("/metrics");
    assert!(
        metrics.contains("edgeflow_collector_decode_errors_total{reason=\"qos0\"} 1\n"),
        "{metrics}"
    );
    // The same summary with QoS 1 is stored.
    publish_all(broker.port, &[Msg::summary(&s)]);
    c.wait_for("/api/ingest", Duration::from_secs(20), |v| {
        v["stored"]["summaries"] == 1
    });
}

#[test]
fn a_stalled_store_holds_memory_to_the_queue_and_loses_nothing() {
    // The broker sends as fast as it can (no in-flight window) and queues without limit.
    let broker = Mosquitto::with_config("max_inflight_messages 0\nmax_queued_messages 0\n");
    let c = Collector::with_args(&["--broker", &broker.url(), "--ingest-queue-mib", "4"]);
    c.wait_subscribed();
    let pid = c.pid();
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss(pid);

    // Another process holds SQLite's write lock (a backup, a slow card).
    let db = rusqlite::Connection::open(c.dir.join("collector.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    // Ten summaries the writer gets stuck on, then 96 MiB of payloads behind them.
    let base = now_ms() - 60_000;
    let mut msgs: Vec<Msg> = (0..10u64)
        .map(|seq| {
            Msg::summary(&summary(
                "lab",
                "stall",
                1,
                seq,
                base + seq * 10_000,
                &one_flow(),
                (0, 0),
            ))
        })
        .collect();
    let junk = vec![3u8; 256 * 1024]; // version 4: refused as unknown_version once read
    msgs.extend((0..384).map(|_| Msg::raw("edgeflow/v1/lab/stall/flows", &junk)));
    let total = msgs.len() as u64;
    let port = broker.port;
    let publisher = std::thread::spawn(move || publish_all(port, &msgs));

    let t = Instant::now();
    let mut peak = idle;
    let mut last = Value::Null;
    // At least 7 s, and until the first failed commit (a 5 s lock wait) has been counted.
    while t.elapsed() < Duration::from_secs(7)
        || (last["store_errors"] == 0 && t.elapsed() < Duration::from_secs(30))
    {
        peak = peak.max(rss(pid));
        last = c.json("/api/ingest");
        assert!(last["queued_bytes"].as_u64().unwrap() <= 4 << 20, "{last}");
        std::thread::sleep(Duration::from_millis(100));
    }
    publisher.join().unwrap();
    peak = peak.max(rss(pid));
    let grown = peak.saturating_sub(idle);
    eprintln!("memory: idle {} MiB, peak {} MiB", idle >> 20, peak >> 20);
    assert!(
        grown < 40 << 20,
        "memory grew by {} MiB with a 4 MiB queue while 96 MiB waited",
        grown >> 20
    );
    assert_eq!(
        last["stored"]["summaries"], 0,
        "the store is stalled: {last}"
    );
    assert!(last["backpressure"].as_u64().unwrap() >= 1, "{last}");
    assert!(
        last["store_errors"].as_u64().unwrap() >= 1,
        "a 5 s lock wait failed: {last}"
    );
    let (_, metrics) = c.get("/metrics");
    assert!(
        !metrics.contains("edgeflow_collector_store_errors_total 0\n"),
        "{metrics}"
    );

    // The lock goes: everything is handled, the ten summaries stored.
    db.execute_batch("ROLLBACK").unwrap();
    let v = c.wait_for("/api/ingest", Duration::from_secs(60), |v| {
        v["messages"] == total && v["queued_bytes"] == 0
    });
    assert_eq!(v["stored"]["summaries"], 10, "{v}");
    assert_eq!(v["rejected"]["unknown_version"], 384, "{v}");
}
