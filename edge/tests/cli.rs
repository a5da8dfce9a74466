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
