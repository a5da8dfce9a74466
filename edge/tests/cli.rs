//! The `edgeflow` command line: usage errors exit 2 with a message that says what to fix,
//! and a stopped agent leaves nothing attached.
//!
//! Every run happens inside a test namespace, so even a wrong argument can never attach
//! anything to an interface of this machine.

use std::process::{Command, Output, Stdio};
use testkit::{bpfobj, watch::Watch, TestNet};

const BIN: &str = env!("CARGO_BIN_EXE_edgeflow");

/// Runs `edgeflow ARGS` in namespace `ns`, optionally under `setpriv` with `drop` removed
/// from its capability bounding set (as root, that is what it is left with after exec).
fn run_in(ns: &str, drop: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]);
    if let Some(caps) = drop {
        cmd.args(["setpriv", "--inh-caps", caps, "--bounding-set", caps]);
    }
    cmd.arg(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running edgeflow")
}

fn assert_usage_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr:\n{stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in:\n{stderr}");
    assert!(
        !stderr.contains("edgeflow: attached"),
        "attached before failing:\n{stderr}"
    );
}

#[test]
fn unknown_interface_is_a_usage_error() {
    let net = TestNet::new();
    let out = run_in(&net.ns_b, None, &["watch", "--iface", "nosuch0"]);
    assert_usage_error(&out, "unknown interface \"nosuch0\"");
    // One bad name among good ones is still an error before anything loads.
    let out = run_in(
        &net.ns_b,
        None,
        &["watch", "--iface", &net.veth_b, "--iface", "nosuch1"],
    );
    assert_usage_error(&out, "unknown interface \"nosuch1\"");
}

#[test]
fn table_size_out_of_range_is_a_usage_error() {
    let net = TestNet::new();
    for n in ["0", "15", "4194305"] {
        let out = run_in(
            &net.ns_b,
            None,
            &["watch", "--iface", &net.veth_b, "--max-flows", n],
        );
        assert_usage_error(
            &out,
            &format!("--max-flows {n} is out of range (16..=4194304)"),
        );
    }
    let out = run_in(
        &net.ns_b,
        None,
        &["watch", "--iface", &net.veth_b, "--max-flows", "many"],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "a table size that is not a number"
    );
}

#[test]
fn missing_capability_is_named() {
    let net = TestNet::new();
    let args = ["watch", "--iface", &net.veth_b, "--count", "1"];
    // CAP_SYS_ADMIN goes too: it would stand in for CAP_BPF and CAP_PERFMON.
    let out = run_in(&net.ns_b, Some("-bpf,-perfmon,-sys_admin"), &args);
    assert_usage_error(&out, "missing capability CAP_BPF, CAP_PERFMON");
    let out = run_in(&net.ns_b, Some("-net_admin"), &args);
    assert_usage_error(&out, "missing capability CAP_NET_ADMIN");
}

/// Native XDP refuses an interface whose MTU is above a page (these programs have no
/// multi-buffer support): a runtime failure (1) that says why, with nothing left attached.
#[test]
fn xdp_on_a_jumbo_mtu_fails_clearly() {
    let net = TestNet::new();
    for (ns, dev) in [(&net.ns_a, &net.veth_a), (&net.ns_b, &net.veth_b)] {
        net.exec(ns, &["ip", "link", "set", dev, "mtu", "9000"]);
    }
    let out = run_in(
        &net.ns_b,
        None,
        &[
            "watch",
            "--iface",
            &net.veth_b,
            "--attach",
            "xdp",
            "--count",
            "1",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("native XDP attach failed") && stderr.contains("multi-buffer"),
        "{stderr}"
    );
    assert_eq!(
        attached(&net, &net.veth_b),
        ("xdp [] tc []".to_string(), false, false)
    );
}

/// What the namespace's own tools say is attached to `dev`: (bpftool's xdp and tc lists,
/// whether `ip -d link` shows an XDP program, whether a clsact qdisc is there).
fn attached(net: &TestNet, dev: &str) -> (String, bool, bool) {
    let bpftool = net.exec(&net.ns_b, &["bpftool", "-j", "net", "show", "dev", dev]);
    let v: serde_json::Value = serde_json::from_slice(&bpftool.stdout).unwrap();
    let lists = format!("xdp {} tc {}", v[0]["xdp"], v[0]["tc"]);
    let link = net.exec(&net.ns_b, &["ip", "-d", "link", "show", "dev", dev]);
    let link = String::from_utf8_lossy(&link.stdout).into_owned();
    let qdisc = net.exec(&net.ns_b, &["tc", "qdisc", "show", "dev", dev]);
    let clsact = String::from_utf8_lossy(&qdisc.stdout).contains("clsact");
    (lists, link.contains("prog/xdp"), clsact)
}

/// The kinds of `links` on the test's interface in ns_b: "xdp", "tcx ingress", "tcx egress".
fn link_kinds(net: &TestNet, links: &[bpfobj::Link]) -> Vec<String> {
    let ifindex: u32 = {
        let o = net.exec(
            &net.ns_b,
            &["cat", &format!("/sys/class/net/{}/ifindex", net.veth_b)],
        );
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    };
    let mut kinds: Vec<String> = links
        .iter()
        .filter(|l| l.ifindex == Some(ifindex))
        .map(|l| {
            let dir = l.attach_type.as_deref().unwrap_or("");
            match l.link_type.as_str() {
                "tcx" if dir.contains("ingress") => "tcx ingress".to_string(),
                "tcx" if dir.contains("egress") => "tcx egress".to_string(),
                t => t.to_string(),
            }
        })
        .collect();
    kinds.sort();
    kinds
}

/// Attaches, checks the attachments are there (so the checks can see one), stops the agent
/// with `signal` and checks everything is gone: its programs and links no longer exist in
/// the kernel, and neither bpftool nor ip nor tc shows anything on the interface.
/// `from_outside`: the agent runs in this namespace and attaches in the test's (`--netns`).
fn detaches_on(attach: &str, signal: libc::c_int, from_outside: bool) {
    let net = TestNet::new();
    let args = [
        "--iface",
        &net.veth_b,
        "--attach",
        attach,
        "--interval",
        "1",
    ];
    let w = if from_outside {
        Watch::start_with_netns(BIN, &net.ns_b, &args)
    } else {
        Watch::start(BIN, &net.ns_b, &args)
    };
    let (progs, links) = bpfobj::held_by(w.pid());
    let kinds = link_kinds(&net, &links);
    let (lists, xdp_in_link, _) = attached(&net, &net.veth_b);
    if attach == "xdp" {
        assert_eq!(kinds, ["tcx egress", "xdp"], "links while running");
        assert!(lists.contains("\"mode\":\"driver\""), "bpftool: {lists}");
        assert!(
            xdp_in_link,
            "ip -d link shows the XDP program while running"
        );
    } else {
        assert_eq!(kinds, ["tcx egress", "tcx ingress"], "links while running");
        assert!(!xdp_in_link);
    }

    let got = w.stop_with(signal);
    assert!(got.stderr.contains("edgeflow: detached"), "{}", got.stderr);
    for id in &progs {
        assert!(!bpfobj::prog_exists(*id), "program {id} still loaded");
    }
    for l in &links {
        assert!(!bpfobj::link_exists(l.id), "link {l:?} still exists");
    }
    assert_eq!(
        attached(&net, &net.veth_b),
        ("xdp [] tc []".to_string(), false, false),
        "left on the interface"
    );
}

#[test]
fn sigterm_leaves_nothing_attached_tc() {
    detaches_on("tc", libc::SIGTERM, false);
}

#[test]
fn sigint_leaves_nothing_attached_xdp() {
    detaches_on("xdp", libc::SIGINT, false);
}

#[test]
fn sigterm_leaves_nothing_attached_xdp() {
    detaches_on("xdp", libc::SIGTERM, false);
}

#[test]
fn sigterm_leaves_nothing_attached_from_outside_the_namespace() {
    detaches_on("xdp", libc::SIGTERM, true);
}

/// SIGKILL gives the agent no chance to detach. Its XDP and TCX attachments are BPF links,
/// which the kernel releases with the last file descriptor, so nothing is left on the
/// interface (bpftool, ip and tc agree) and a restarted agent attaches exactly one program
/// per hook, never a second one next to a leftover, and counts again from its first packet.
#[test]
fn sigkill_leaves_nothing_attached_and_a_restart_attaches_once() {
    let net = TestNet::new();
    net.static_neighbours();
    let args = ["--iface", &net.veth_b, "--attach", "xdp", "--interval", "1"];
    let w = Watch::start(BIN, &net.ns_b, &args);
    let (progs, links) = bpfobj::held_by(w.pid());
    assert_eq!(link_kinds(&net, &links), ["tcx egress", "xdp"]);
    let stderr = w.kill();
    assert!(!stderr.contains("edgeflow: detached"), "{stderr}");
    // Links go with the process's last fd; programs once the kernel has freed them (RCU),
    // so allow a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while progs.iter().any(|id| bpfobj::prog_exists(*id)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for l in &links {
        assert!(!bpfobj::link_exists(l.id), "link {l:?} outlived SIGKILL");
    }
    for id in &progs {
        assert!(!bpfobj::prog_exists(*id), "program {id} outlived SIGKILL");
    }
    assert_eq!(
        attached(&net, &net.veth_b),
        ("xdp [] tc []".to_string(), false, false),
        "left on the interface after SIGKILL"
    );

    let w = Watch::start(BIN, &net.ns_b, &args);
    let (_, links) = bpfobj::held_by(w.pid());
    assert_eq!(link_kinds(&net, &links), ["tcx egress", "xdp"]);
    let o = net.exec(
        &net.ns_b,
        &["bpftool", "-j", "net", "show", "dev", &net.veth_b],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // This bpftool lists XDP but not TCX programs; the old TCX links are gone by id above,
    // so the new agent's are the only ones.
    let xdp = v[0]["xdp"].as_array().map_or(0, Vec::len);
    assert_eq!(xdp, 1, "one XDP program: {v}");
    let (sport, dport) = testkit::traffic::udp_exchange(
        &net,
        testkit::A4.into(),
        testkit::B4.into(),
        &[100, 200],
        50,
    );
    let got = w.stop();
    got.assert_conserved();
    let s = got.sum(|f| f["src_port"] == sport && f["dst_port"] == dport);
    assert_eq!((s.packets_fwd, s.bytes_fwd), (2, 300 + 2 * 28));
    assert_eq!((s.packets_rev, s.bytes_rev), (2, 2 * (50 + 28)));
}

/// With `require_tls` in the configuration the agent refuses a plaintext broker URL, from
/// the file or from `--broker`, before it attaches or connects anything.
#[test]
fn require_tls_refuses_a_plaintext_broker() {
    let net = TestNet::new();
    let cfg = std::env::temp_dir().join(testkit::unique("efcfg"));
    std::fs::write(
        &cfg,
        format!(
            "interfaces = [\"{}\"]\n[mqtt]\nrequire_tls = true\nurl = \"mqtts://127.0.0.1:1\"\n",
            net.veth_b
        ),
    )
    .unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let out = run_in(
        &net.ns_b,
        None,
        &["run", "--config", cfg_s, "--broker", "mqtt://127.0.0.1:1"],
    );
    assert_usage_error(
        &out,
        "require_tls is set, but the broker URL \"mqtt://127.0.0.1:1\"",
    );
    let _ = std::fs::remove_file(&cfg);
}

/// IPFIX flags: a bad collector URL, or `--ipfix-uniflow` without a collector, is a usage
/// error before anything attaches.
#[test]
fn ipfix_flags_are_checked() {
    let net = TestNet::new();
    for (args, needle) in [
        (
            &["--ipfix", "http://127.0.0.1"][..],
            "scheme must be udp or tcp",
        ),
        (&["--ipfix", "udp://127.0.0.1:0"][..], "port 0"),
        (&["--ipfix-uniflow"][..], "ipfix: no collector"),
    ] {
        let mut all = vec!["run", "--iface", &net.veth_b];
        all.extend_from_slice(args);
        assert_usage_error(&run_in(&net.ns_b, None, &all), needle);
    }
}

/// `setpriv` arguments that leave only `caps` (e.g. "+bpf,+net_admin") to a non-root user:
/// no root uid to fall back on, the rest of the bounding set gone.
fn only_caps(caps: &str) -> Vec<String> {
    [
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        &format!("--inh-caps=-all,{caps}"),
        &format!("--ambient-caps=-all,{caps}"),
        &format!("--bounding-set=-all,{caps}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// As `nobody` with exactly CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (what
/// configs/edgeflow.service grants), the agent loads, attaches and counts exactly; with any
/// one of them missing it names that one and attaches nothing.
#[test]
fn runs_with_only_the_three_capabilities_and_names_a_missing_one() {
    const ALL: [(&str, &str); 3] = [
        ("+bpf", "CAP_BPF"),
        ("+net_admin", "CAP_NET_ADMIN"),
        ("+perfmon", "CAP_PERFMON"),
    ];
    let net = TestNet::new();
    net.static_neighbours();
    for (i, (_, name)) in ALL.iter().enumerate() {
        let others: Vec<&str> = ALL
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, c)| c.0)
            .collect();
        let mut cmd = vec![
            "ip".to_string(),
            "netns".into(),
            "exec".into(),
            net.ns_b.clone(),
        ];
        cmd.extend(only_caps(&others.join(",")));
        cmd.extend([BIN, "watch", "--iface", &net.veth_b, "--count", "1"].map(String::from));
        let out = Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_usage_error(&out, &format!("missing capability {name}:"));
    }

    let mut cmd = vec!["ip", "netns", "exec", &net.ns_b];
    let caps = only_caps("+bpf,+net_admin,+perfmon");
    cmd.extend(caps.iter().map(String::as_str));
    cmd.extend([
        BIN,
        "watch",
        "--json",
        "--iface",
        &net.veth_b,
        "--interval",
        "1",
    ]);
    let w = Watch::spawn(&cmd);
    let status = std::fs::read_to_string(format!("/proc/{}/status", w.pid())).unwrap();
    let field = |k: &str| {
        let l = status.lines().find(|l| l.starts_with(k)).unwrap();
        u64::from_str_radix(l[k.len()..].trim(), 16).unwrap()
    };
    assert_eq!(
        field("CapEff:"),
        (1 << 39) | (1 << 38) | (1 << 12),
        "{status}"
    );
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap();
    assert_eq!(
        uid.split_whitespace().next(),
        Some("65534"),
        "runs as nobody"
    );
    let (sport, dport) = testkit::traffic::udp_exchange(
        &net,
        testkit::A4.into(),
        testkit::B4.into(),
        &[100, 200, 300],
        50,
    );
    let got = w.stop();
    got.assert_conserved();
    let s = got.sum(|f| f["src_port"] == sport && f["dst_port"] == dport);
    assert_eq!((s.packets_fwd, s.bytes_fwd), (3, 600 + 3 * 28));
    assert_eq!((s.packets_rev, s.bytes_rev), (3, 3 * (50 + 28)));
}

/// With `--netns` the agent enters the namespace on a thread of its own, started once (at the
/// interface check) and staying there to attach, look at its interfaces and detach. When that
/// thread cannot be started it is a clear error, never a panic: a runtime failure (exit 1)
/// before the agent is ready, nothing attached. Detaching needs no new thread any more, so it
/// cannot fail for want of one: every run that got ready detaches cleanly. Provoked for real
/// as above: limits of 1 to 6 tasks in a pids cgroup.
#[test]
fn no_thread_to_enter_the_namespace_is_a_runtime_failure() {
    let net = TestNet::new();
    let (mut before_ready, mut while_detaching) = (0, 0);
    for max in 1..=6 {
        let out = PidsCgroup::run(
            max,
            Command::new(BIN)
                .args(["run", "--netns", &net.ns_b])
                .args(one_window_run(&net.veth_b)),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{max} tasks: {:?}\n{stderr}",
            out.status
        );
        assert_eq!(
            attached(&net, &net.veth_b),
            ("xdp [] tc []".to_string(), false, false),
            "{max} tasks: {stderr}"
        );
        if !stderr.contains("starting a thread to enter network namespace") {
            continue;
        }
        if !stderr.contains("edgeflow: ready") {
            before_ready += 1;
            assert_eq!(out.status.code(), Some(1), "{max} tasks: {stderr}");
        }
        if stderr.contains("edgeflow: detaching: starting a thread") {
            while_detaching += 1;
            assert!(
                stderr.contains("edgeflow: detached"),
                "{max} tasks: {stderr}"
            );
        }
        if stderr.contains("edgeflow: ready") {
            assert!(
                stderr.contains("edgeflow: detached") && !stderr.contains("detaching:"),
                "{max} tasks: {stderr}"
            );
        }
    }
    assert!(
        before_ready > 0 && while_detaching == 0,
        "task limits from 1 to 6 kept the namespace thread from starting {before_ready} times \
         before the agent was ready and {while_detaching} times while it detached"
    );
}

/// `run`'s arguments for one short window on `iface` towards a broker that is not there.
fn one_window_run(iface: &str) -> [&str; 12] {
    [
        "--iface",
        iface,
        "--attach",
        "tc",
        "--device",
        "t",
        "--interval",
        "0.2",
        "--count",
        "1",
        "--broker",
        "mqtt://127.0.0.1:9",
    ]
}

/// A pids cgroup of this test's, limited to `max` tasks, removed when dropped (its tasks have
/// exited by then). cgroup v1's pids hierarchy, or v2's with the pids controller.
struct PidsCgroup(std::path::PathBuf);

impl PidsCgroup {
    /// Runs `cmd` in a cgroup of its own limited to `max` tasks (it joins between fork and
    /// exec); its output.
    fn run(max: u32, cmd: &mut Command) -> Output {
        use std::os::unix::process::CommandExt;
        let cg = PidsCgroup::new(max);
        let procs = cg.0.join("cgroup.procs");
        // SAFETY: between fork and exec only a write(2) through std's file API, no allocation
        // the child depends on afterwards.
        unsafe {
            cmd.pre_exec(move || std::fs::write(&procs, "0"));
        }
        cmd.stdin(Stdio::null()).output().expect("running edgeflow")
    }

    fn new(max: u32) -> PidsCgroup {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let root = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
            .into_iter()
            .find(|r| {
                // v1: the pids hierarchy's own mount; v2: pids enabled for the root's children.
                (r.ends_with("/pids") && std::path::Path::new(r).join("tasks").exists())
                    || std::fs::read_to_string(format!("{r}/cgroup.subtree_control"))
                        .is_ok_and(|c| c.split_whitespace().any(|x| x == "pids"))
            })
            .expect("a pids cgroup controller (v1 or v2) to limit the agent's threads with");
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::path::Path::new(root).join(format!("edgeflow-test-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).expect("creating a pids cgroup");
        let g = PidsCgroup(dir);
        std::fs::write(g.0.join("pids.max"), max.to_string()).expect("setting pids.max");
        g
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("could not remove {}", self.0.display());
    }
}

/// When the agent cannot start the thread that talks to the broker, that is a runtime failure
/// (exit 1), not the user's to fix (2), and nothing stays attached. Provoked for real: the
/// agent runs in a pids cgroup with room for the threads it starts before the MQTT one and
/// not for that (how many that is is found by trying: 1 to 6 tasks; with fewer, another
/// thread fails first, with more the agent runs).
#[test]
fn no_thread_for_the_broker_link_is_a_runtime_failure() {
    let net = TestNet::new();
    let mut provoked = false;
    for max in 1..=6 {
        // In the namespace through `ip netns exec`, not --netns: entering it takes the agent
        // a short-lived thread of its own each time, which would fail first.
        let out = PidsCgroup::run(
            max,
            Command::new("ip")
                .args(["netns", "exec", &net.ns_b, BIN, "run"])
                .args(one_window_run(&net.veth_b)),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.contains("spawning the MQTT thread") {
            continue;
        }
        provoked = true;
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("edgeflow: detached"), "{stderr}");
        assert_eq!(
            attached(&net, &net.veth_b),
            ("xdp [] tc []".to_string(), false, false)
        );
    }
    assert!(
        provoked,
        "no task limit from 1 to 6 kept the MQTT thread from starting"
    );
}

/// Each thread of process `pid`: (name, CapInh, CapPrm, CapEff, CapAmb).
fn thread_caps(pid: i32) -> Vec<(String, [u64; 4])> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let status = std::fs::read_to_string(t.join("status")).unwrap();
        let field = |k: &str| {
            let l = status.lines().find(|l| l.starts_with(k)).unwrap();
            u64::from_str_radix(l[k.len()..].trim(), 16).unwrap()
        };
        let name = std::fs::read_to_string(t.join("comm")).unwrap();
        out.push((
            name.trim().to_string(),
            [
                field("CapInh:"),
                field("CapPrm:"),
                field("CapEff:"),
                field("CapAmb:"),
            ],
        ));
    }
    out
}

/// Started as configs/edgeflow.service starts it (a user of its own, here `nobody`, with
/// ambient CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON and no new privileges), plus
/// CAP_SYS_ADMIN, which the unit says to add for `--netns`: once attached, every thread of
/// the agent (main, namespace, reactor, MQTT) has CAP_NET_ADMIN left and nothing else,
/// nothing inheritable or ambient for a child, and with that it still attaches again to an
/// interface made again under its name. With `--no-reattach` it keeps nothing at all.
/// Without CAP_SYS_ADMIN, `--netns` is a usage error naming it.
#[test]
fn after_attaching_only_cap_net_admin_is_left_on_every_thread() {
    let net = TestNet::new();
    let name = format!("efcap{}", std::process::id() % 100_000);
    let pair = |net: &TestNet| {
        for args in [
            vec![
                "ip", "link", "add", &name, "type", "veth", "peer", "name", "efcapp0",
            ],
            vec!["ip", "link", "set", &name, "up"],
            vec!["ip", "link", "set", "efcapp0", "up"],
        ] {
            net.exec(&net.ns_b, &args);
        }
    };
    pair(&net);
    let agent = |caps: &str, extra: &[&str]| {
        let set = only_caps(caps);
        let mut cmd = Command::new(&set[0]);
        cmd.args(&set[1..])
            .arg("--no-new-privs")
            .arg(BIN)
            .arg("run");
        cmd.args(["--iface", &name, "--netns", &net.ns_b, "--interval", "0.5"])
            .args(["--broker", "mqtt://127.0.0.1:9", "--device", "t"])
            .args(extra);
        cmd
    };
    let unit_and_sys_admin = "+bpf,+net_admin,+perfmon,+sys_admin";

    let a = testkit::agent::Agent::start_command(agent(unit_and_sys_admin, &[]));
    let threads = thread_caps(a.pid());
    assert!(threads.len() >= 4, "{threads:?}");
    for (t, caps) in &threads {
        assert_eq!(*caps, [0, 1 << 12, 1 << 12, 0], "thread {t}: {threads:?}");
    }
    net.exec(&net.ns_b, &["ip", "link", "del", &name]);
    pair(&net);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let exit = a.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    assert!(
        exit.stderr
            .contains("capabilities kept: CAP_NET_ADMIN (attaching again, detaching)"),
        "{}",
        exit.stderr
    );
    assert!(
        exit.stderr.contains(&format!("{name} is back")) && !exit.stderr.contains("failed"),
        "{}",
        exit.stderr
    );

    let a = testkit::agent::Agent::start_command(agent(unit_and_sys_admin, &["--no-reattach"]));
    let threads = thread_caps(a.pid());
    for (t, caps) in &threads {
        assert_eq!(*caps, [0; 4], "thread {t}: {threads:?}");
    }
    let exit = a.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    assert!(
        exit.stderr.contains("capabilities kept: none"),
        "{}",
        exit.stderr
    );

    let out = agent("+bpf,+net_admin,+perfmon", &[])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_usage_error(&out, "needs CAP_SYS_ADMIN");
}
