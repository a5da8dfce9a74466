//! Runs `edgeflow watch --json` inside a namespace and collects its windows.

use serde_json::Value;
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    thread::JoinHandle,
    time::Duration,
};

/// How long traffic gets to settle before a watch is stopped: more than the longest round
/// trip the tests build (2 x 50 ms delay line) plus scheduling slack under load.
pub const SETTLE: Duration = Duration::from_millis(500);

/// A running `edgeflow watch --json`.
pub struct Watch {
    child: Child,
    out: Option<JoinHandle<Vec<Value>>>,
    err: Option<JoinHandle<String>>,
}

impl Watch {
    /// Starts `bin watch --json ARGS` in namespace `ns` and waits until it says it is ready.
    pub fn start(bin: &str, ns: &str, args: &[&str]) -> Watch {
        let mut cmd = vec!["ip", "netns", "exec", ns, bin, "watch", "--json"];
        cmd.extend_from_slice(args);
        Watch::spawn(&cmd)
    }

    /// Starts `bin watch --json --netns NS ARGS` from this (the root) namespace.
    pub fn start_with_netns(bin: &str, ns: &str, args: &[&str]) -> Watch {
        let mut cmd = vec![bin, "watch", "--json", "--netns", ns];
        cmd.extend_from_slice(args);
        Watch::spawn(&cmd)
    }

    /// Runs `cmd` (a watch command line) and waits until it says it is ready.
    pub fn spawn(cmd: &[&str]) -> Watch {
        let mut child = Command::new(cmd[0])
            .args(&cmd[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning edgeflow watch");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let out = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .map(|l| {
                    serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}"))
                })
                .collect()
        });
        let err = crate::ready::await_ready(&mut child, stderr, "edgeflow watch");
        Watch {
            child,
            out: Some(out),
            err: Some(err),
        }
    }

    /// The agent's process id (`ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT, then waits (bounded) for the final window and the exit.
    pub fn stop(self) -> Windows {
        self.stop_with(libc::SIGINT)
    }

    /// Sends `signal`, then waits (bounded) for the final window and the exit.
    ///
    /// Waits `SETTLE` first: packets still on their way (a close crossing a delay line, the
    /// last ACKs) must be counted before the final drain, or they show up as `unsettled`.
    pub fn stop_with(self, signal: libc::c_int) -> Windows {
        std::thread::sleep(SETTLE);
        // SAFETY: signalling our own child (`ip netns exec` execs the agent in place).
        unsafe { libc::kill(self.child.id() as i32, signal) };
        self.finish()
    }

    /// SIGKILL: no chance to detach or print a last window. Waits (bounded) for the exit and
    /// returns what it wrote to stderr.
    pub fn kill(mut self) -> String {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let status = self.child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        let _ = self.out.take().unwrap().join();
        self.err.take().unwrap().join().unwrap()
    }

    /// Waits for a watch that ends by itself (`--count`), bounded.
    pub fn finish(self) -> Windows {
        let (status, w) = self.exit_status();
        assert!(
            status.success(),
            "edgeflow watch exited with {status}:\n{}",
            w.stderr
        );
        w
    }

    /// Waits (bounded) for a watch that ends by itself, successfully or not.
    pub fn exit_status(mut self) -> (std::process::ExitStatus, Windows) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("edgeflow watch did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = self.err.take().unwrap().join().unwrap();
        let windows = self.out.take().unwrap().join().unwrap();
        (status, Windows { windows, stderr })
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.out.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Per-direction sums of matching flow records over all windows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSum {
    pub packets_fwd: u64,
    pub bytes_fwd: u64,
    pub packets_rev: u64,
    pub bytes_rev: u64,
    /// How many records (one per window the flow was active in).
    pub records: u64,
}

/// What a watch printed.
pub struct Windows {
    pub windows: Vec<Value>,
    pub stderr: String,
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

impl Windows {
    pub fn flows(&self) -> impl Iterator<Item = &Value> {
        self.windows
            .iter()
            .flat_map(|w| w["flows"].as_array().into_iter().flatten())
    }

    /// Sums the records for which `pred` holds.
    pub fn sum(&self, pred: impl Fn(&Value) -> bool) -> FlowSum {
        self.sums_by(|f| pred(f).then_some(()))
            .remove(&())
            .unwrap_or_default()
    }

    /// Sums the records of every flow `key` names (records it maps to `None` are left out):
    /// one entry per distinct key.
    pub fn sums_by<K: std::hash::Hash + Eq>(
        &self,
        key: impl Fn(&Value) -> Option<K>,
    ) -> std::collections::HashMap<K, FlowSum> {
        let mut out = std::collections::HashMap::<K, FlowSum>::new();
        for f in self.flows() {
            if let Some(k) = key(f) {
                let s = out.entry(k).or_default();
                s.packets_fwd += u(&f["packets_fwd"]);
                s.bytes_fwd += u(&f["bytes_fwd"]);
                s.packets_rev += u(&f["packets_rev"]);
                s.bytes_rev += u(&f["bytes_rev"]);
                s.records += 1;
            }
        }
        out
    }

    /// Sum of one stat (`"seen"`, `"non_ip"`, ...) over all windows: (packets, bytes).
    pub fn stat(&self, name: &str) -> (u64, u64) {
        self.windows.iter().fold((0, 0), |(p, b), w| {
            (
                p + u(&w["stats"][name]["packets"]),
                b + u(&w["stats"][name]["bytes"]),
            )
        })
    }

    /// Sum of a top-level counter (`"totals"` or `"overflow"`).
    pub fn counter(&self, name: &str) -> (u64, u64) {
        self.windows.iter().fold((0, 0), |(p, b), w| {
            (p + u(&w[name]["packets"]), b + u(&w[name]["bytes"]))
        })
    }

    /// In every window: totals == sum(flows) + overflow (packets and bytes); and against the
    /// kernel's own counter: sum(stats.parsed) == sum(totals) + the last window's `unsettled`,
    /// which must be 0 once traffic has stopped (the watch was stopped after the traffic).
    pub fn assert_conserved(&self) {
        let parsed = self.stat("parsed");
        let totals = self.counter("totals");
        let last = self.windows.last().expect("no window");
        let unsettled = (
            u(&last["unsettled"]["packets"]),
            u(&last["unsettled"]["bytes"]),
        );
        assert_eq!(
            (parsed.0, parsed.1),
            (totals.0 + unsettled.0, totals.1 + unsettled.1),
            "kernel parsed counter vs reported totals"
        );
        assert_eq!(unsettled, (0, 0), "packets never reported: {last}");
        for (i, w) in self.windows.iter().enumerate() {
            let (mut p, mut b) = (u(&w["overflow"]["packets"]), u(&w["overflow"]["bytes"]));
            for f in w["flows"].as_array().into_iter().flatten() {
                p += u(&f["packets_fwd"]) + u(&f["packets_rev"]);
                b += u(&f["bytes_fwd"]) + u(&f["bytes_rev"]);
            }
            assert_eq!(
                (u(&w["totals"]["packets"]), u(&w["totals"]["bytes"])),
                (p, b),
                "window {i} does not conserve: {w}"
            );
        }
    }
}
