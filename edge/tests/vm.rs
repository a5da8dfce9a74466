//! The agent on Debian's stock kernels, each booted under QEMU (TCG) by `cross/vm/run.sh` with
//! the static musl build for its architecture: the checks in `cross/vm/guest/checks/` run
//! inside and print result lines, which these tests assert on (and, for `edgeflow run`, what a
//! Mosquitto on this host received from the guest).
//!
//! x86_64 (6.1, and bullseye's 5.10 for the kernel probe) runs by default; arm64 and armv7
//! need `EDGEFLOW_TEST_VM=1` (their cross builds take minutes on a fresh machine);
//! `EDGEFLOW_TEST_VM=0` skips them all. VMs run one at a time. The Debian packages' tests
//! (at the end) boot a full Debian with systemd the same way, only with `EDGEFLOW_TEST_VM=1`:
//! on a fresh machine the static collector build and the root file system alone take longer
//! than CI's 30-minute budget for the whole run (docs/install.md has the timings).

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

    /// [`VmRun::field`] for each of `names`, empty where the line lacks it.
    fn fields(&self, key: &str, names: &[&str]) -> Vec<String> {
        names
            .iter()
            .map(|n| self.field(key, n).unwrap_or_default())
            .collect()
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

/// One of the repo's scripts. Their cross builds are cargos of their own: they must see the
/// environment a shell would, not the one cargo gives this test (its CARGO_*, RUSTC*, library
/// path).
fn script(path: &str) -> Command {
    let mut cmd = Command::new(path);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        let keep = k == "CARGO_TARGET_DIR" || k == "CARGO_HOME";
        if !keep && (k.starts_with("CARGO") || k.starts_with("RUSTC") || k == "LD_LIBRARY_PATH") {
            cmd.env_remove(&k);
        }
    }
    cmd
}

fn vm(arch: &str, kernel: &str, check: &str, extra: &[&str]) -> VmRun {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let mut args = vec!["--arch", arch, "--kernel", kernel, "--timeout", "600"];
    args.extend_from_slice(extra);
    args.push(check);
    let started = Instant::now();
    let out = script(RUN)
        .args(&args)
        .output()
        .expect("running cross/vm/run.sh");
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
    assert_published(&sub, &r, &format!("vm-{arch}"));
}

/// What `sub` received from the guest's agent `device` adds up to exactly the guest's `sent`
/// lines (per flow and in total), in at least two windows, and ended with "offline".
fn assert_published(sub: &Subscriber, r: &VmRun, device: &str) {
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
    assert_eq!(
        totals, total,
        "window totals against what the guest sent; flows: {per_flow:?}"
    );
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

// --- The Debian packages (packaging/build.sh) on Debian booted with systemd ---
// cross/vm/debian/run.sh boots a bookworm root file system built by mmdebstrap (cached under
// the target dir) with Debian's stock kernel; the checks in cross/vm/debian/checks/ install the
// packages there. Only with EDGEFLOW_TEST_VM=1 (the module doc says why).

/// Whether the Debian package tests run: only when asked for.
fn packages_enabled() -> bool {
    std::env::var("EDGEFLOW_TEST_VM").as_deref() == Ok("1")
}

const PACKAGES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/build.sh");
const DEBIAN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../cross/vm/debian/run.sh");

/// The packages for `arch`, (agent, collector), from packaging/build.sh, which fails on any
/// lintian tag the packaging does not argue.
fn packages(arch: &str) -> (String, String) {
    // One build at a time: two would write the same files.
    static ONE_BUILD: Mutex<()> = Mutex::new(());
    let _one = ONE_BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let out = script(PACKAGES)
        .arg(arch)
        .output()
        .expect("running packaging/build.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "packaging/build.sh {arch}:\n{stderr}");
    let debs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let find = |name: &str| {
        debs.iter()
            .find(|d| {
                let f = d.rsplit('/').next().unwrap_or_default();
                f.starts_with(&format!("{name}_")) && f.ends_with(&format!("_{arch}.deb"))
            })
            .cloned()
            .unwrap_or_else(|| panic!("no {name} package for {arch} in {debs:?}"))
    };
    (find("edgeflow"), find("edgeflow-collector"))
}

/// A run.sh still running when the test ends (a failed assertion): SIGTERM, whose trap stops
/// the VM.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let _ = self.0.wait();
        }
    }
}

/// Boots Debian for `arch` with `check`; `on_line` sees each result line as the guest prints
/// it, while the VM runs.
fn debian(arch: &str, check: &str, extra: &[&str], mut on_line: impl FnMut(&str)) -> VmRun {
    use std::io::{BufRead, Read};
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let mut run = Running(
        script(DEBIAN)
            .args(["--arch", arch, "--timeout", "900"])
            .args(extra)
            .arg(check)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("running cross/vm/debian/run.sh"),
    );
    let stdout = run.0.stdout.take().unwrap();
    let mut stderr = run.0.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut lines = Vec::new();
    for l in std::io::BufReader::new(stdout).lines() {
        let l = l.expect("run.sh output");
        eprintln!("debian {arch} {check}: {l}");
        on_line(&l);
        lines.push(l);
    }
    let code = run.0.wait().unwrap().code().unwrap_or(-1);
    eprintln!(
        "debian {arch} {check}: {:.0?}, exit {code}\n{}",
        started.elapsed(),
        err.join().unwrap_or_default()
    );
    VmRun { code, lines }
}

/// The agent's package: installed and enabled but not started until configured; started by
/// systemd as the user edgeflow with exactly CAP_NET_ADMIN, CAP_PERFMON and CAP_BPF; its
/// summaries add up exactly; stopped: "offline" and nothing attached; purged: no user, unit,
/// state or config left.
fn debian_agent(arch: &str) {
    if !packages_enabled() {
        eprintln!("skipped: EDGEFLOW_TEST_VM=1 runs the Debian package tests ({arch})");
        return;
    }
    let (agent, _) = packages(arch);
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "edgeflow/#");
    let port = broker.port.to_string();
    let r = debian(
        arch,
        "agent",
        &["--broker-port", &port, "--deb", &agent],
        |_| {},
    );
    r.assert_ok("debian agent");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        r.field("installed", "package"),
        Some(format!("edgeflow_{version}-1_{arch}")),
        "versioned from the workspace"
    );
    assert_eq!(
        r.values("user"),
        ["edgeflow:/var/lib/edgeflow:/usr/sbin/nologin group=edgeflow conf=root:edgeflow:640"]
    );
    assert_eq!(
        r.values("after-install"),
        ["enabled=enabled active=inactive"]
    );
    assert_eq!(
        r.field("unconfigured-start", "active").as_deref(),
        Some("inactive")
    );
    assert_eq!(r.field("unconfigured-start", "rc").as_deref(), Some("0"));
    assert_eq!(r.values("unconfigured-reason"), ["ok"]);
    let started = |k: &str| r.field("started", k);
    assert_eq!(started("user").as_deref(), Some("edgeflow"));
    // CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39) and nothing else.
    assert_eq!(started("capeff").as_deref(), Some("000000c000001000"));
    let attached = r.fields("started", &["ingress", "egress", "xdp"]);
    assert_eq!(attached, ["1", "1", "0"], "{:#?}", r.lines);
    let stopped = |k: &str| r.field("stopped", k);
    assert_eq!(stopped("status").as_deref(), Some("0"));
    assert_eq!(stopped("result").as_deref(), Some("success"));
    let detached = r.fields("stopped", &["ingress", "egress", "xdp"]);
    assert_eq!(detached, ["0", "0", "0"], "nothing attached after the stop");
    assert_published(&sub, &r, &format!("deb-{arch}"));
    let purged = r.values("purged");
    assert_eq!(purged.len(), 1, "{:#?}", r.lines);
    for gone in [
        "user=absent",
        "group=absent",
        "unit=absent",
        "dropin=absent",
        "enabled-link=absent",
        "state=absent",
        "config=absent",
        "binary=absent",
        "unit-known=0",
    ] {
        assert!(purged[0].contains(gone), "{gone}: {}", purged[0]);
    }
}

#[test]
fn amd64_debian_agent_package_installs_runs_and_purges() {
    debian_agent("amd64");
}

#[test]
fn arm64_debian_agent_package_installs_runs_and_purges() {
    debian_agent("arm64");
}

/// The collector's package on amd64: not started until configured, then started by systemd
/// with no capabilities; its dashboard answers on the host (QEMU forwards a loopback port) and
/// its API shows a summary published to the host's broker with exact totals; purged: no user,
/// unit, database or config left.
#[test]
fn amd64_debian_collector_package_serves_its_dashboard() {
    use testkit::publisher::{publish_all, Msg};
    use testkit::summary::{now_ms, summary, F};
    if !packages_enabled() {
        eprintln!("skipped: EDGEFLOW_TEST_VM=1 runs the Debian package tests (amd64)");
        return;
    }
    let (_, collector) = packages("amd64");
    let broker = Mosquitto::start();
    let port = broker.port.to_string();
    let http = testkit::mosquitto::free_port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], http));
    let token = "deb-vm-token";
    let flow = F {
        proto: 17,
        src: [10, 1, 0, 1],
        src_port: 4000,
        dst: [10, 1, 0, 2],
        dst_port: 53,
        fwd: (3, 300),
        rev: (2, 500),
    };
    let s = summary("vm", "deb-src", 7, 1, now_ms(), &[flow], (1, 60));
    let mut seen = None;
    let r = debian(
        "amd64",
        "collector",
        &[
            "--broker-port",
            &port,
            "--http-port",
            &http.to_string(),
            "--deb",
            &collector,
            &format!("EFVM_TOKEN={token}"),
        ],
        |l| {
            if !l.starts_with("collector-up") {
                return;
            }
            publish_all(broker.port, &[Msg::summary(&s)]);
            let page = testkit::collector::http_get(addr, "/", None);
            let open = testkit::collector::http_get(addr, "/api/devices", None).0;
            let deadline = Instant::now() + Duration::from_secs(120);
            let device = loop {
                let (code, body) = testkit::collector::http_get(addr, "/api/devices", Some(token));
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let d = v["devices"]
                    .as_array()
                    .and_then(|a| a.iter().find(|d| d["id"] == "vm/deb-src").cloned());
                if code == 200 && d.is_some() || Instant::now() > deadline {
                    break d;
                }
                std::thread::sleep(Duration::from_millis(500));
            };
            seen = Some((page, open, device));
            // The guest waits for this (retained: it may subscribe after it is sent).
            let mut go = Msg::raw("efvm/go", b"go");
            go.retain = true;
            publish_all(broker.port, &[go]);
        },
    );
    r.assert_ok("debian collector");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        r.field("installed", "package"),
        Some(format!("edgeflow-collector_{version}-1_amd64"))
    );
    assert_eq!(
        r.values("after-install"),
        ["enabled=enabled active=inactive"]
    );
    assert_eq!(
        r.field("unconfigured-start", "active").as_deref(),
        Some("inactive")
    );
    assert_eq!(r.values("unconfigured-reason"), ["ok"]);
    assert_eq!(r.field("collector-up", "user").as_deref(), Some("edgeflow"));
    assert_eq!(
        r.field("collector-up", "capeff").as_deref(),
        Some("0000000000000000"),
        "no capabilities"
    );
    let ((status, page), open, device) = seen.expect("the guest never said collector-up");
    assert_eq!(status, 200, "the dashboard page");
    assert!(
        page.contains("<html") || page.contains("<!doctype"),
        "{page:.200}"
    );
    assert_eq!(open, 401, "the API wants the token");
    let d = device.expect("the published summary never showed in /api/devices");
    assert_eq!(d["totals"]["packets"], s.totals.packets, "{d}");
    assert_eq!(d["totals"]["bytes"], s.totals.bytes, "{d}");
    assert_eq!(r.field("stopped", "status").as_deref(), Some("0"));
    let purged = r.values("purged");
    assert_eq!(purged.len(), 1, "{:#?}", r.lines);
    for gone in [
        "user=absent",
        "unit=absent",
        "db=absent",
        "state=absent",
        "config=absent",
        "unit-known=0",
    ] {
        assert!(purged[0].contains(gone), "{gone}: {}", purged[0]);
    }
}
