//! Shared by the collector's integration tests: the collector binary as a child process,
//! a QoS 1 publisher, hand-built summaries with known totals, and a tiny HTTP client.
#![allow(dead_code)] // each test binary uses a different part

pub mod browser;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use shared::wire::{self, Addr, Count, FlowRecord, Health, Message, Summary};
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// `edgeflow-collector` running against a broker, with its own database and log file.
pub struct Collector {
    child: Option<Child>,
    pub http: SocketAddr,
    pub dir: PathBuf,
    args: Vec<String>,
    token: Option<String>,
}

impl Collector {
    /// Starts against an external broker (`mqtt://127.0.0.1:PORT`).
    pub fn start(broker: &str) -> Collector {
        Collector::with_args(&["--broker", broker])
    }

    /// Starts with these extra arguments (a fresh database unless they name one with
    /// `--db`, a unique client id, HTTP on a free loopback port).
    pub fn with_args(extra: &[&str]) -> Collector {
        let dir = std::env::temp_dir().join(testkit::unique("efcol"));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("collector.db");
        let mut args: Vec<String> = Vec::new();
        if !extra.contains(&"--db") {
            args.extend(["--db".into(), db.to_string_lossy().into_owned()]);
        }
        args.extend([
            "--http".into(),
            "127.0.0.1:0".into(),
            "--client-id".into(),
            testkit::unique("efc-test"),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let token = extra
            .iter()
            .position(|a| *a == "--token")
            .map(|i| extra[i + 1].to_string());
        let mut c = Collector {
            child: None,
            http: "127.0.0.1:1".parse().unwrap(),
            dir,
            args,
            token,
        };
        c.spawn();
        c
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("collector.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgeflow-collector"))
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("starting edgeflow-collector");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("collector.log"))
            .unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The log gets stdout too (what a stopping collector reports).
                let _ = writeln!(log, "{line}");
                if let Some(url) = line.strip_prefix("edgeflow-collector: dashboard http://") {
                    let _ = tx.send(url.trim_end_matches('/').to_string());
                }
            }
        });
        self.child = Some(child);
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("collector did not start:\n{}", self.log()));
        self.http = addr.parse().unwrap();
    }

    /// The running collector's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The collector's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("collector.log")).unwrap_or_default()
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("collector ignored SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts again with the same database and client id (the broker kept the session).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// GET with the configured token, if any: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path, self.token.as_deref())
    }

    /// GET that must answer 200 with JSON.
    pub fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// Polls `path` until `done` holds (panics with the last answer after `timeout`).
    pub fn wait_for(&self, path: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.json(path);
            if done(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on {path}; last answer: {v}\nlog:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the log holds `needle` (panics with the log after `timeout`).
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the subscriber is connected and subscribed.
    pub fn wait_subscribed(&self) {
        self.wait_for("/api/ingest", Duration::from_secs(20), |v| {
            v["broker_connected"] == true
        });
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A minimal HTTP/1.1 GET (Connection: close): (status, body).
pub fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let (status, _, body) = http_get_head(addr, path, token);
    (status, body)
}

/// [`http_get`] with the response head (status line and headers) too.
pub fn http_get_head(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, head.to_string(), body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// One message to publish.
#[derive(Clone, Debug)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Msg {
    pub fn summary(s: &Summary) -> Msg {
        Msg {
            topic: format!("edgeflow/v1/{}/{}/flows", s.site, s.device),
            payload: wire::encode_vec(&Message::V1(s.clone())),
            retain: false,
        }
    }

    pub fn raw(topic: &str, payload: &[u8]) -> Msg {
        Msg {
            topic: topic.into(),
            payload: payload.to_vec(),
            retain: false,
        }
    }
}

/// Publishes every message with QoS 1 and returns once the broker acknowledged them all.
pub fn publish_all(broker_port: u16, msgs: &[Msg]) {
    let mut o = MqttOptions::new(testkit::unique("efpub"), "127.0.0.1", broker_port);
    o.set_max_packet_size(4 << 20, 4 << 20)
        .set_keep_alive(Duration::from_secs(30));
    let (client, mut conn) = Client::new(o, 64);
    let (tx, rx) = mpsc::channel();
    let poller = std::thread::spawn(move || {
        for ev in conn.iter() {
            match ev {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("publisher: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    });
    for m in msgs {
        client
            .publish(
                m.topic.clone(),
                QoS::AtLeastOnce,
                m.retain,
                m.payload.clone(),
            )
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..msgs.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        rx.recv_timeout(left)
            .unwrap_or_else(|_| panic!("only {i} of {} publishes acknowledged", msgs.len()));
    }
    let _ = client.disconnect();
    let _ = poller.join();
}

/// A flow in a hand-built summary.
#[derive(Clone, Copy, Debug)]
pub struct F {
    pub proto: u8,
    pub src: [u8; 4],
    pub src_port: u16,
    pub dst: [u8; 4],
    pub dst_port: u16,
    pub fwd: (u64, u64),
    pub rev: (u64, u64),
}

/// Window length of the hand-built summaries.
pub const WINDOW_MS: u32 = 10_000;

/// A one-part summary whose totals are exactly its flows plus `overflow`.
pub fn summary(
    site: &str,
    device: &str,
    boot_id: u64,
    seq: u64,
    start_ms: u64,
    flows: &[F],
    overflow: (u64, u64),
) -> Summary {
    let mut addrs: Vec<Addr> = Vec::new();
    let mut index = |a: [u8; 4]| -> u32 {
        let a = Addr::V4(a);
        match addrs.iter().position(|x| *x == a) {
            Some(i) => i as u32,
            None => {
                addrs.push(a);
                (addrs.len() - 1) as u32
            }
        }
    };
    let mut totals = Count {
        packets: overflow.0,
        bytes: overflow.1,
    };
    let records: Vec<FlowRecord> = flows
        .iter()
        .map(|f| {
            let fwd = Count {
                packets: f.fwd.0,
                bytes: f.fwd.1,
            };
            let rev = Count {
                packets: f.rev.0,
                bytes: f.rev.1,
            };
            totals.add(&fwd);
            totals.add(&rev);
            FlowRecord {
                proto: f.proto,
                src: index(f.src),
                dst: index(f.dst),
                src_port: f.src_port,
                dst_port: f.dst_port,
                ifindex: 2,
                fwd,
                rev,
                first_seen_ms: 100,
                last_seen_ms: 9_000,
                ..Default::default()
            }
        })
        .collect();
    Summary {
        device: device.try_into().unwrap(),
        site: site.try_into().unwrap(),
        boot_id,
        seq,
        part: 0,
        parts: 1,
        window_start_ms: start_ms,
        window_len_ms: WINDOW_MS,
        sample_every: 1,
        totals,
        overflow: Count {
            packets: overflow.0,
            bytes: overflow.1,
        },
        other: Count::default(),
        other_flows: 0,
        health: Health {
            packets_seen: totals.packets,
            active_flows: records.len() as u32,
            table_capacity: 16_384,
            table_full: overflow.0,
            cpu_ms: 12,
            rss_kib: 6_000,
            ..Default::default()
        },
        addrs,
        flows: records,
        rtt_hist: heapless::Vec::new(),
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `scripts/provision.sh` of this repository.
pub fn provision(args: &[&str]) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/provision.sh");
    let out = Command::new(script)
        .args(args)
        .output()
        .expect("running scripts/provision.sh");
    assert!(
        out.status.success(),
        "provision.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Mosquitto as `scripts/provision.sh init` configures it (TLS, a password per device, the
/// ACL, persistence), on a free loopback port; `devices` are provisioned before it starts.
/// The broker owns the folder (removed on drop).
pub fn provisioned_broker(devices: &[(&str, &str)]) -> testkit::mosquitto::Mosquitto {
    let dir = std::env::temp_dir().join(testkit::unique("efprov"));
    let port = testkit::mosquitto::free_port();
    let d = dir.to_str().unwrap();
    let cert_port = testkit::mosquitto::free_port();
    provision(&[
        "init",
        d,
        "--port",
        &port.to_string(),
        "--cert-port",
        &cert_port.to_string(),
    ]);
    for (site, device) in devices {
        provision(&["device", d, site, device]);
    }
    testkit::mosquitto::Mosquitto::with_conf_file(dir, port)
}

/// A `key = "value"` line of a TOML file provision.sh wrote.
pub fn toml_value(path: &std::path::Path, key: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{key} missing in {}", path.display()))
        .to_string()
}

/// The collector with the login provision.sh wrote for it.
pub fn secured_collector(broker: &testkit::mosquitto::Mosquitto) -> Collector {
    let conf = broker.dir().join("collector.toml");
    Collector::with_args(&["--config", conf.to_str().unwrap()])
}

/// A PostgreSQL server shared by the tests of one binary that run at once: the first starts
/// it, the last to let go stops it (one `initdb` per binary, not per test). Each test makes
/// its own database on it (`pg.create_database`).
pub struct SharedPostgres {
    pub pg: testkit::postgres::Postgres,
    /// Dropped after `pg`: the thread that started the server (its parent-death signal
    /// follows that thread) ends once the server is stopped.
    _holder: mpsc::Sender<()>,
}

impl SharedPostgres {
    pub fn get() -> std::sync::Arc<SharedPostgres> {
        use std::sync::{Arc, Mutex, Weak};
        static SHARED: Mutex<Weak<SharedPostgres>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = shared.upgrade() {
            return s;
        }
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (holder, done) = mpsc::channel::<()>();
            let _ = tx.send((testkit::postgres::Postgres::start(), holder));
            // Until every sender (the SharedPostgres) is gone.
            let _ = done.recv();
        });
        let (pg, holder) = rx.recv().expect("starting PostgreSQL failed");
        let s = Arc::new(SharedPostgres {
            pg,
            _holder: holder,
        });
        *shared = Arc::downgrade(&s);
        s
    }
}

/// What the load generator reported per device: (windows, packets, bytes, flow records).
pub type Acked = BTreeMap<String, (u64, u64, u64, u64)>;

/// `edgeflow-loadgen` publishing through a provisioned broker; killed on drop. Its report
/// (a line per device) is read as it comes: a thousand devices' lines fill a pipe.
pub struct Loadgen(Option<Child>, Option<std::thread::JoinHandle<String>>);

impl Loadgen {
    /// The devices of `creds` (`provision.sh bulk`), `windows` each, one every
    /// `interval_ms`, with `flows` (fewest, most) flows a window.
    pub fn start(
        broker: &testkit::mosquitto::Mosquitto,
        creds: &std::path::Path,
        windows: u64,
        interval_ms: u64,
        flows: (u32, u32),
    ) -> Loadgen {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgeflow-loadgen"))
            .args([
                "--broker",
                &format!("mqtts://127.0.0.1:{}", broker.port),
                "--ca",
                broker.dir().join("ca.crt").to_str().unwrap(),
                "--credentials",
                creds.to_str().unwrap(),
                "--windows",
                &windows.to_string(),
                "--interval-ms",
                &interval_ms.to_string(),
                "--flows-min",
                &flows.0.to_string(),
                "--flows-max",
                &flows.1.to_string(),
                "--top-k",
                "1500",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting edgeflow-loadgen");
        let mut stdout = child.stdout.take().unwrap();
        let report = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        Loadgen(Some(child), Some(report))
    }

    pub fn running(&mut self) -> bool {
        self.0
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Waits for the end; what each device got acknowledged.
    pub fn finish(mut self, timeout: Duration) -> Acked {
        let mut child = self.0.take().unwrap();
        let deadline = Instant::now() + timeout;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the load generator did not finish");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(child.wait().unwrap().success());
        let report = self.1.take().unwrap().join().unwrap();
        report
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                let n = |k: &str| v[k].as_u64().unwrap();
                (
                    v["id"].as_str().unwrap().to_string(),
                    (n("windows"), n("packets"), n("bytes"), n("flow_records")),
                )
            })
            .collect()
    }
}

impl Drop for Loadgen {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
