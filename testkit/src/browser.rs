//! Headless Chromium (Debian's `chromium`) driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: it reads commands on fd 3 and writes answers on fd 4, one JSON
//! object each, NUL-terminated). The page runs in real time, so a test can type into it, follow
//! its links and read what it measured itself; no WebDriver, no websocket crate.

use serde_json::{json, Value};
use std::{
    io::{BufRead, BufReader, Write},
    os::{
        fd::AsRawFd,
        unix::process::{CommandExt, ExitStatusExt},
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

/// One headless Chromium with one page; the whole process group is killed on drop.
pub struct Browser {
    child: Child,
    to: std::io::PipeWriter,
    from: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    profile: PathBuf,
    /// `Page.loadEventFired` seen so far.
    loads: u64,
    /// What the page logged to its console, and uncaught exceptions.
    pub console: Arc<Mutex<Vec<String>>>,
}

impl Browser {
    /// Starts Chromium with a fresh profile and opens a blank page of `width`×`height` CSS px.
    pub fn launch(width: u32, height: u32) -> Browser {
        let profile = std::env::temp_dir().join(crate::unique("efchrome"));
        let (in_r, in_w) = std::io::pipe().expect("pipe");
        let (out_r, out_w) = std::io::pipe().expect("pipe");
        let (a, b) = (in_r.as_raw_fd(), out_w.as_raw_fd());
        let mut cmd = Command::new("chromium");
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-extensions",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
            &format!("--window-size={width},{height}"),
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: the renderer and GPU helpers go with it on drop.
        .process_group(0);
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Out of the way first, in case a pipe already sits on fd 3 or 4.
                let a2 = libc::fcntl(a, libc::F_DUPFD_CLOEXEC, 10);
                let b2 = libc::fcntl(b, libc::F_DUPFD_CLOEXEC, 10);
                if a2 < 0 || b2 < 0 || libc::dup2(a2, 3) < 0 || libc::dup2(b2, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .expect("running chromium (apt-get install chromium; scripts/setup.sh does)");
        drop((in_r, out_w));
        let (tx, from) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out_r);
            let mut buf = Vec::new();
            while r.read_until(0, &mut buf).is_ok_and(|n| n > 0) {
                if buf.last() == Some(&0) {
                    buf.pop();
                }
                if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
                buf.clear();
            }
        });
        let mut br = Browser {
            child,
            to: in_w,
            from,
            next_id: 0,
            session: String::new(),
            profile,
            loads: 0,
            console: Arc::default(),
        };
        let target = br.send("Target.createTarget", json!({"url": "about:blank"}), false);
        let target = target["targetId"]
            .as_str()
            .expect("a target id")
            .to_string();
        let attached = br.send(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
            false,
        );
        br.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        br.call("Page.enable", json!({}));
        br.call("Runtime.enable", json!({}));
        br.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
        br
    }

    /// A command to the browser (`page: false`) or to the page; its result.
    fn send(&mut self, method: &str, params: Value, page: bool) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if page {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("chromium is gone ({e}): {:?}", self.child.try_wait()));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.from.recv_timeout(left).unwrap_or_else(|_| {
                let status = self.child.try_wait().ok().flatten();
                panic!(
                    "chromium did not answer {method} (exit: {:?})",
                    status.map(|s| (s.code(), s.signal()))
                )
            });
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
            self.event(&v);
        }
    }

    /// A command to the page.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, true)
    }

    fn event(&mut self, v: &Value) {
        let line = match v["method"].as_str() {
            Some("Page.loadEventFired") => {
                self.loads += 1;
                return;
            }
            Some("Runtime.consoleAPICalled") => {
                let p = &v["params"];
                let args: Vec<String> = p["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| match &a["value"] {
                        Value::String(s) => s.clone(),
                        Value::Null => a["description"].as_str().unwrap_or("").to_string(),
                        other => other.to_string(),
                    })
                    .collect();
                format!(
                    "console.{}: {}",
                    p["type"].as_str().unwrap_or("?"),
                    args.join(" ")
                )
            }
            Some("Runtime.exceptionThrown") => {
                let d = &v["params"]["exceptionDetails"];
                let text = d["exception"]["description"]
                    .as_str()
                    .or(d["text"].as_str())
                    .unwrap_or("?");
                format!("exception: {text}")
            }
            _ => return,
        };
        self.console.lock().unwrap().push(line);
    }

    /// Loads `url` and waits for its load event.
    pub fn goto(&mut self, url: &str) {
        let before = self.loads;
        self.call("Page.navigate", json!({"url": url}));
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.loads == before {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("{url} did not load"));
            self.event(&v);
        }
    }

    /// Evaluates `js` in the page (a promise is awaited); its value as JSON.
    pub fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(d) = r.get("exceptionDetails") {
            let text = d["exception"]["description"]
                .as_str()
                .or(d["text"].as_str())
                .unwrap_or("?");
            panic!("{js}: {text}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `js` every 50 ms until it is truthy; its value. Panics after `timeout` with the
    /// last value, the page's text and its console.
    pub fn wait_for(&mut self, what: &str, js: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(js);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let text = self.eval("document.body ? document.body.innerText.slice(0, 3000) : ''");
                panic!(
                    "timed out waiting for {what} ({js} = {v}).\npage:\n{}\nconsole:\n{}",
                    text.as_str().unwrap_or(""),
                    self.console.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PNG of the whole page.
    pub fn screenshot(&mut self, path: &Path) {
        let m = self.call("Page.getLayoutMetrics", json!({}));
        let size = &m["cssContentSize"];
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true, "clip": {
                "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}}),
        );
        let png = base64(shot["data"].as_str().expect("image data"));
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: signalling our own child's process group (it leads it: process_group(0)).
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Standard base64 (what DevTools sends images in).
fn base64(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("DevTools sends standard base64")
}
