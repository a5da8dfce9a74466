//! `edgeflow-collector` and `edgeflow-loadgen` as child processes for the collector's
//! integration tests, and a tiny HTTP client for the collector's API.

use crate::mosquitto::Mosquitto;
use serde_json::Value;
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
        let dir = std::env::temp_dir().join(crate::unique("efcol"));
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
            crate::unique("efc-test"),
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
        let mut child = Command::new(crate::cargo_bin("edgeflow-collector"))
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

/// The collector with the login provision.sh wrote for it.
pub fn secured_collector(broker: &Mosquitto) -> Collector {
    let conf = broker.dir().join("collector.toml");
    Collector::with_args(&["--config", conf.to_str().unwrap()])
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
        broker: &Mosquitto,
        creds: &std::path::Path,
        windows: u64,
        interval_ms: u64,
        flows: (u32, u32),
    ) -> Loadgen {
        Loadgen::with_args(&[
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
    }

    /// `edgeflow-loadgen ARGS`, its report read as it comes.
    pub fn with_args(args: &[&str]) -> Loadgen {
        let mut child = Command::new(crate::cargo_bin("edgeflow-loadgen"))
            .args(args)
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
