//! The agent on Debian's stock kernels, each booted under QEMU (TCG) by `cross/vm/run.sh` with
//! the static musl build for its architecture: the checks in `cross/vm/guest/checks/` run
//! inside and print result lines, which these tests assert on (and, for `edgeflow run`, what a
//! Mosquitto on this host received from the guest).
//!
//! x86_64 (6.1, and bullseye's 5.10 for the kernel probe) runs by default; arm64 and armv7
//! need `EDGEFLOW_TEST_VM=1` (their cross builds take minutes on a fresh machine);
//! `EDGEFLOW_TEST_VM=0` skips them all. VMs run one at a time.

use shared::wire::{self, Count};
use std::{
    collections::{BTreeMap, HashSet},
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};
use testkit::{mosquitto::Mosquitto, subscriber::Subscriber};

const RUN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../cross/vm/run.sh");
/// One VM at a time: each is two emulated CPUs on a 2-core machine.
static ONE_VM: Mutex<()> = Mutex::new(());

/// Whether the VM tests for `arch` are on (see the module doc).
fn enabled(arch: &str) -> bool {
    match std::env::var("EDGEFLOW_TEST_VM").as_deref() {
        Ok("0") => false,
        Ok("1") => true,
        _ => arch == "x86_64",
    }
}

/// The result of one `run.sh`: its exit code and the guest's `EFVM` lines (prefix removed).
struct VmRun {
    code: i32,
    lines: Vec<String>,
}

impl VmRun {
    /// Lines starting with `key `, without the key.
    fn values(&self, key: &str) -> Vec<&str> {
        let k = format!("{key} ");
        self.lines
            .iter()
            .filter_map(|l| l.strip_prefix(k.as_str()))
            .collect()
    }

    /// `name=value` from the first `key` line that has it.
    fn field(&self, key: &str, name: &str) -> Option<String> {
        let n = format!("{name}=");
        self.values(key)
            .iter()
            .flat_map(|l| l.split_whitespace())
            .find_map(|w| w.strip_prefix(n.as_str()).map(str::to_string))
    }

    fn assert_ok(&self, what: &str) {
        let bad: Vec<&String> = self
            .lines
            .iter()
            .filter(|l| l.starts_with("fail ") || l.contains("-bad ") || l.starts_with("bad "))
            .collect();
        assert!(
            self.code == 0 && bad.is_empty(),
            "{what}: run.sh exit {}, failures {bad:#?}\nall lines:\n{}",
            self.code,
            self.lines.join("\n")
        );
    }
}

fn vm(arch: &str, kernel: &str, check: &str, extra: &[&str]) -> VmRun {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let mut args = vec!["--arch", arch, "--kernel", kernel, "--timeout", "600"];
    args.extend_from_slice(extra);
    args.push(check);
    let started = Instant::now();
    let mut cmd = Command::new(RUN);
    // run.sh's cross build is a cargo of its own: it must see the environment a shell would,
    // not the one cargo gives this test (its CARGO_*, RUSTC*, library path).
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        let keep = k == "CARGO_TARGET_DIR" || k == "CARGO_HOME";
        if !keep && (k.starts_with("CARGO") || k.starts_with("RUSTC") || k == "LD_LIBRARY_PATH") {
            cmd.env_remove(&k);
        }
    }
    let out = cmd.args(&args).output().expect("running cross/vm/run.sh");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    eprintln!(
        "{arch} {kernel} {check}: {:.0?}\n{}\n{}",
        started.elapsed(),
        lines.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    VmRun {
        code: out.status.code().unwrap_or(-1),
        lines,
    }
}

/// Flows (exact counts per flow, UDP/TCP/ICMP v4 and v6, RTT) and crash leftovers.
fn flows_and_crash(arch: &str, extra: &[&str]) {
    if !enabled(arch) {
        eprintln!("skipped: EDGEFLOW_TEST_VM=1 runs the {arch} VM tests");
        return;
    }
    // auto: TC ingress and egress on a veth; xdp: native XDP ingress, TC egress.
    for attach in ["auto", "xdp"] {
        let mode = format!("EFVM_ATTACH={attach}");
        let mut args = extra.to_vec();
        args.push(&mode);
        let r = vm(arch, "6.1", "flows", &args);
        r.assert_ok(&format!("flows --attach {attach}"));
        // Every expected flow was checked: 2 UDP, 2 ICMP, 2 TCP; both TCP flows had RTT.
        assert_eq!(r.values("flow-ok").len(), 6, "{:#?}", r.lines);
        assert_eq!(r.values("tcp-ok").len(), 2, "{:#?}", r.lines);
        assert_eq!(r.field("unsettled", "packets").as_deref(), Some("0"));
    }

    let r = vm(arch, "6.1", "crash", extra);
    r.assert_ok("crash");
    let restarted = r.values("restarted");
    assert_eq!(
        restarted,
        [
            "mode=tc ingress=1 egress=1 xdp=0",
            "mode=xdp ingress=0 egress=1 xdp=1",
            "mode=xdp-netlink ingress=0 egress=1 xdp=1"
        ]
    );
}

/// `edgeflow run` in the guest: the summaries a subscriber on this host receives add up to
/// exactly what the guest sent, per flow and in total.
fn mqtt(arch: &str) {
    if !enabled(arch) {
        eprintln!("skipped: EDGEFLOW_TEST_VM=1 runs the {arch} VM tests");
        return;
    }
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "edgeflow/#");
    let port = broker.port.to_string();
    let r = vm(arch, "6.1", "mqtt", &["--broker-port", &port]);
    r.assert_ok("mqtt");
    let device = format!("vm-{arch}");
    let done = |ms: &[testkit::subscriber::Received]| {
        ms.iter()
            .any(|m| m.topic.ends_with("/status") && m.payload == b"offline")
    };
    assert!(
        sub.wait_for(Duration::from_secs(10), done),
        "no offline status from the guest's agent"
    );

    let sent = |proto: &str| -> (u16, u16, Count) {
        let l = r
            .values("sent")
            .into_iter()
            .find(|l| l.starts_with(proto))
            .unwrap_or_else(|| panic!("no `sent {proto}` line"));
        let f = |k: &str| -> u64 {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")).map(|v| v.parse().unwrap()))
                .unwrap_or(0)
        };
        let (a, b) = match proto {
            "udp" => (f("sport"), f("dport")),
            "icmp" => (f("type"), f("code")),
            _ => (0, 0),
        };
        (
            a as u16,
            b as u16,
            Count {
                packets: f("packets"),
                bytes: f("bytes"),
            },
        )
    };

    let mut seen = HashSet::new();
    let mut per_flow: BTreeMap<(u8, u16, u16), Count> = BTreeMap::new();
    let (mut totals, mut accounted) = (Count::default(), Count::default());
    let mut windows = 0;
    for m in sub.messages() {
        if !m.topic.ends_with("/flows") {
            continue;
        }
        let s = wire::decode_summary(&m.payload).expect("a valid summary");
        assert_eq!(s.device.as_str(), device);
        if !seen.insert((s.boot_id, s.seq, s.part)) {
            continue;
        }
        if s.part == 0 {
            windows += 1;
            totals.add(&s.totals);
        }
        accounted.add(&s.other);
        accounted.add(&s.overflow);
        for f in &s.flows {
            accounted.add(&f.fwd);
            accounted.add(&f.rev);
            let c = per_flow
                .entry((f.proto, f.src_port, f.dst_port))
                .or_default();
            c.add(&f.fwd);
            c.add(&f.rev);
        }
    }
    assert!(windows >= 2, "{windows} windows received");
    let (sport, dport, udp) = sent("udp");
    let (ty, code, icmp) = sent("icmp");
    let (_, _, total) = sent("total");
    assert_eq!(
        per_flow.get(&(17, sport, dport)),
        Some(&udp),
        "{per_flow:?}"
    );
    assert_eq!(per_flow.get(&(1, ty, code)), Some(&icmp), "{per_flow:?}");
    assert_eq!(totals, total, "window totals against what the guest sent");
    assert_eq!(
        accounted, totals,
        "records + other + overflow against totals"
    );
}

#[test]
fn x86_64_debian_6_1_flows_and_crash() {
    flows_and_crash("x86_64", &[]);
}

#[test]
fn x86_64_debian_6_1_run_publishes_to_host_broker() {
    mqtt("x86_64");
}

/// Bullseye's 5.10 lacks what the programs need: one line naming it, exit 2.
#[test]
fn x86_64_debian_5_10_refused_in_one_line() {
    if !enabled("x86_64") {
        eprintln!("skipped: EDGEFLOW_TEST_VM=0");
        return;
    }
    let r = vm("x86_64", "5.10", "probe", &[]);
    r.assert_ok("probe");
    assert_eq!(r.field("probe", "rc").as_deref(), Some("2"));
    let err = r.values("probe-err");
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(err[0].contains("needs Linux 5.12"), "{err:?}");
}

#[test]
fn aarch64_debian_6_1_flows_and_crash() {
    flows_and_crash("aarch64", &[]);
}

#[test]
fn aarch64_debian_6_1_run_publishes_to_host_broker() {
    mqtt("aarch64");
}

/// Debian's armmp kernel runs BPF in the interpreter by default (`bpf_jit_enable=0`).
#[test]
fn armv7_debian_6_1_flows_and_crash_interpreted() {
    flows_and_crash("armv7", &["EFVM_JIT=0"]);
}

/// The 32-bit ARM JIT switched on, as an operator tuning a slow box would: it cannot compile
/// BPF atomic instructions (6.1's arch/arm/net/bpf_jit_32.c has none) and this kernel does not
/// fall back to the interpreter (ENOTSUPP), so the agent's probe refuses in one line naming the
/// sysctl, exit 2, before any verifier run of the programs; nothing attached.
#[test]
fn armv7_debian_6_1_jit_on_refused_in_one_line() {
    if !enabled("armv7") {
        eprintln!("skipped: EDGEFLOW_TEST_VM=1 runs the armv7 VM tests");
        return;
    }
    let r = vm("armv7", "6.1", "jit", &["EFVM_JIT=1"]);
    r.assert_ok("jit");
    assert_eq!(
        r.field("jit-refused", "bpf_jit_enable").as_deref(),
        Some("1")
    );
    assert_eq!(r.field("jit-refused", "rc").as_deref(), Some("2"));
    assert_eq!(r.field("jit-refused", "stderr_lines").as_deref(), Some("1"));
    let err = r.values("jit-err");
    assert!(
        err[0].contains("cannot compile BPF atomic instructions")
            && err[0].contains("set net.core.bpf_jit_enable=0"),
        "{err:?}"
    );
}

/// arm64 runs the programs JIT-compiled (and says so in its load report).
#[test]
fn aarch64_debian_6_1_programs_are_jit_compiled() {
    if !enabled("aarch64") {
        eprintln!("skipped: EDGEFLOW_TEST_VM=1 runs the aarch64 VM tests");
        return;
    }
    let r = vm("aarch64", "6.1", "jit", &[]);
    r.assert_ok("jit");
    let load = r.values("jit-load");
    assert_eq!(load.len(), 1, "{:#?}", r.lines);
    assert!(load[0].starts_with("bpf_jit_enable=1 rc=0"), "{load:?}");
    assert_eq!(
        load[0].matches("instructions verified, JIT").count(),
        3,
        "{load:?}"
    );
}

#[test]
fn armv7_debian_6_1_run_publishes_to_host_broker() {
    mqtt("armv7");
}
