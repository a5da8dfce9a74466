//! Kernels before 6.6 have no TCX and before 5.9 no XDP links: there the programs hang in as
//! clsact filters and a netlink XDP program, which outlive a killed agent. These tests take
//! that path on this kernel (`EDGEFLOW_LEGACY_ATTACH=1`) and check that a restarted agent
//! replaces what a SIGKILLed one left — exactly one edgeflow program per hook — that a clean
//! exit leaves nothing, and that another tool's filters and XDP program on the same interface
//! are never touched.

use serde_json::Value;
use std::process::Command;
use testkit::{foreign::Foreign, watch::Watch, TestNet};

const BIN: &str = env!("CARGO_BIN_EXE_edgeflow");

/// `edgeflow watch --json ARGS` in ns_b, attaching the old way.
fn legacy_watch(net: &TestNet, args: &[&str]) -> Watch {
    let mut cmd = vec![
        "ip",
        "netns",
        "exec",
        &net.ns_b,
        "env",
        "EDGEFLOW_LEGACY_ATTACH=1",
        BIN,
        "watch",
        "--json",
        "--interval",
        "1",
        "--iface",
        &net.veth_b,
    ];
    cmd.extend_from_slice(args);
    Watch::spawn(&cmd)
}

/// One bpf filter on a clsact hook, as `tc -j filter show` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Filter {
    name: String,
    pref: u64,
    handle: String,
    prog_id: u64,
}

/// What is on ns_b's veth: the bpf filters on each clsact hook, the XDP program ids, and
/// whether a clsact qdisc is there.
#[derive(Debug)]
struct Hooks {
    ingress: Vec<Filter>,
    egress: Vec<Filter>,
    xdp: Vec<u64>,
    clsact: bool,
}

fn in_ns(net: &TestNet, args: &[&str]) -> Vec<u8> {
    let o = Command::new("ip")
        .args(["netns", "exec", &net.ns_b])
        .args(args)
        .output()
        .unwrap();
    o.stdout
}

fn hooks(net: &TestNet) -> Hooks {
    let dev = net.veth_b.as_str();
    let filters = |hook: &str| -> Vec<Filter> {
        let out = in_ns(net, &["tc", "-j", "filter", "show", "dev", dev, hook]);
        let v: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["kind"] == "bpf" && f["options"].is_object())
            .map(|f| Filter {
                name: f["options"]["bpf_name"].as_str().unwrap_or("").to_string(),
                pref: f["pref"].as_u64().unwrap(),
                handle: f["options"]["handle"].as_str().unwrap_or("").to_string(),
                prog_id: f["options"]["prog"]["id"].as_u64().unwrap(),
            })
            .collect()
    };
    let net_show: Value =
        serde_json::from_slice(&in_ns(net, &["bpftool", "-j", "net", "show", "dev", dev])).unwrap();
    let xdp = net_show[0]["xdp"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| x["id"].as_u64().unwrap())
        .collect();
    let qdisc = in_ns(net, &["tc", "qdisc", "show", "dev", dev]);
    Hooks {
        ingress: filters("ingress"),
        egress: filters("egress"),
        xdp,
        clsact: String::from_utf8_lossy(&qdisc).contains("clsact"),
    }
}

fn names(fs: &[Filter]) -> Vec<&str> {
    fs.iter().map(|f| f.name.as_str()).collect()
}

/// The edgeflow filters' tag: pref 0xedf0, handle 0xedf00001.
fn assert_tagged(fs: &[Filter]) {
    for f in fs.iter().filter(|f| f.name.starts_with("edgeflow_")) {
        assert_eq!((f.pref, f.handle.as_str()), (0xedf0, "0xedf00001"), "{f:?}");
    }
}

fn prog_name(id: u64) -> String {
    let o = Command::new("bpftool")
        .args(["-j", "prog", "show", "id", &id.to_string()])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    v["name"].as_str().unwrap_or("").to_string()
}

/// Sends a UDP exchange (`sizes` out, 50-byte replies), stops the agent and checks the flow
/// was counted exactly once each way (two programs on a hook would count it twice). Returns
/// the agent's stderr.
fn counted_once(net: &TestNet, w: Watch, sizes: &[usize]) -> String {
    let (sport, dport) =
        testkit::traffic::udp_exchange(net, testkit::A4.into(), testkit::B4.into(), sizes, 50);
    let got = w.stop();
    got.assert_conserved();
    let s = got.sum(|f| f["src_port"] == sport && f["dst_port"] == dport);
    let n = sizes.len() as u64;
    let bytes: u64 = sizes.iter().map(|s| *s as u64 + 28).sum();
    assert_eq!(
        (s.packets_fwd, s.bytes_fwd, s.packets_rev, s.bytes_rev),
        (n, bytes, n, n * 78),
        "{}",
        got.stderr
    );
    got.stderr
}

/// TC on both hooks: a SIGKILLed agent's two filters stay (that is the crash this is about);
/// a second agent on the interface while the first runs is refused; the restarted agent
/// replaces both filters in place — one edgeflow filter per hook, holding its own programs —
/// and counts exactly; its clean exit removes the filters and the clsact qdisc it inherited.
#[test]
fn sigkill_leftover_filters_are_replaced_and_a_clean_exit_leaves_nothing() {
    let net = TestNet::new();
    net.static_neighbours();
    let w = legacy_watch(&net, &["--attach", "tc"]);
    let h = hooks(&net);
    assert_eq!(names(&h.ingress), ["edgeflow_tc"], "{h:?}");
    assert_eq!(names(&h.egress), ["edgeflow_tc_egress"], "{h:?}");
    assert_tagged(&h.ingress);
    assert_tagged(&h.egress);
    assert!(h.xdp.is_empty() && h.clsact);

    // A second agent while the first runs: refused, the first one's filters untouched.
    let second = Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.ns_b,
            "env",
            "EDGEFLOW_LEGACY_ATTACH=1",
            BIN,
        ])
        .args([
            "watch",
            "--iface",
            &net.veth_b,
            "--attach",
            "tc",
            "--count",
            "1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "edgeflow (pid {}) is attached here already",
            w.pid()
        )),
        "{err}"
    );
    let again = hooks(&net);
    assert_eq!((&again.ingress, &again.egress), (&h.ingress, &h.egress));

    let stderr = w.kill();
    assert!(!stderr.contains("edgeflow: detached"), "{stderr}");
    let left = hooks(&net);
    assert_eq!(
        (&left.ingress, &left.egress),
        (&h.ingress, &h.egress),
        "the killed agent's filters stay attached"
    );

    let w = legacy_watch(&net, &["--attach", "tc"]);
    let (progs, _) = testkit::bpfobj::held_by(w.pid());
    let now = hooks(&net);
    assert_eq!(names(&now.ingress), ["edgeflow_tc"], "{now:?}");
    assert_eq!(names(&now.egress), ["edgeflow_tc_egress"], "{now:?}");
    assert_tagged(&now.ingress);
    assert_tagged(&now.egress);
    for f in now.ingress.iter().chain(&now.egress) {
        assert!(
            progs.contains(&(f.prog_id as u32)),
            "{f:?} is not the new agent's"
        );
    }
    let stderr = counted_once(&net, w, &[100, 200, 300]);
    assert!(
        stderr.contains("replaced [tc ingress, tc egress], removed []"),
        "{stderr}"
    );
    let end = hooks(&net);
    assert!(
        end.ingress.is_empty() && end.egress.is_empty() && end.xdp.is_empty() && !end.clsact,
        "left after a clean exit: {end:?}"
    );
}

/// XDP ingress through netlink beside another tool's filters on both clsact hooks: after a
/// SIGKILL the restarted agent replaces its XDP program and its egress filter, one of each;
/// the foreign filters keep their programs throughout, and after the clean exit they (and
/// the clsact qdisc, which is theirs) are all that is left.
#[test]
fn sigkill_leftover_xdp_is_replaced_and_foreign_filters_stay() {
    let net = TestNet::new();
    net.static_neighbours();
    let foreign = Foreign::new();
    let dev = net.veth_b.as_str();
    net.exec(&net.ns_b, &["tc", "qdisc", "add", "dev", dev, "clsact"]);
    for hook in ["ingress", "egress"] {
        let pinned = foreign.path("tc");
        net.exec(
            &net.ns_b,
            &[
                "tc",
                "filter",
                "add",
                "dev",
                dev,
                hook,
                "bpf",
                "da",
                "object-pinned",
                &pinned,
            ],
        );
    }
    let theirs = hooks(&net);
    assert_eq!(
        (theirs.ingress.len(), theirs.egress.len()),
        (1, 1),
        "{theirs:?}"
    );
    assert_eq!(
        prog_name(theirs.ingress[0].prog_id),
        testkit::foreign::TC_NAME
    );

    let w = legacy_watch(&net, &["--attach", "xdp"]);
    let h = hooks(&net);
    assert_eq!(h.xdp.len(), 1, "{h:?}");
    assert_eq!(prog_name(h.xdp[0]), "edgeflow_xdp");
    w.kill();
    assert_eq!(
        hooks(&net).xdp,
        h.xdp,
        "the killed agent's XDP program stays"
    );

    let w = legacy_watch(&net, &["--attach", "xdp"]);
    let (progs, _) = testkit::bpfobj::held_by(w.pid());
    let now = hooks(&net);
    assert_eq!(now.xdp.len(), 1, "{now:?}");
    assert!(
        progs.contains(&(now.xdp[0] as u32)),
        "not the new agent's XDP"
    );
    assert_eq!(
        now.ingress, theirs.ingress,
        "foreign ingress filter touched"
    );
    let ours: Vec<_> = now
        .egress
        .iter()
        .filter(|f| f.name == "edgeflow_tc_egress")
        .collect();
    assert_eq!(ours.len(), 1, "{now:?}");
    assert!(progs.contains(&(ours[0].prog_id as u32)));
    assert!(
        now.egress.contains(&theirs.egress[0]),
        "foreign egress filter touched"
    );
    let stderr = counted_once(&net, w, &[100, 200]);
    assert!(
        stderr.contains("replaced [xdp, tc egress], removed []"),
        "{stderr}"
    );
    let end = hooks(&net);
    assert_eq!(
        prog_name(theirs.egress[0].prog_id),
        testkit::foreign::TC_NAME
    );
    assert_eq!(
        (end.ingress, end.egress, end.xdp, end.clsact),
        (theirs.ingress, theirs.egress, vec![], true),
        "after a clean exit only the foreign filters are left"
    );
}

/// Another tool's XDP program on the interface: an agent on TC survives a SIGKILL and
/// restart without touching it, and `--attach xdp` is refused with a clear error instead of
/// replacing it.
#[test]
fn a_foreign_xdp_program_is_left_alone() {
    let net = TestNet::new();
    net.static_neighbours();
    let foreign = Foreign::new();
    let dev = net.veth_b.as_str();
    let pinned = foreign.path("xdp");
    net.exec(
        &net.ns_b,
        &["ip", "link", "set", "dev", dev, "xdpdrv", "pinned", &pinned],
    );
    assert_eq!(hooks(&net).xdp, [foreign.xdp_id as u64]);

    let w = legacy_watch(&net, &["--attach", "tc"]);
    w.kill();
    let w = legacy_watch(&net, &["--attach", "tc"]);
    let h = hooks(&net);
    assert_eq!(h.xdp, [foreign.xdp_id as u64]);
    assert_eq!(names(&h.ingress), ["edgeflow_tc"]);
    counted_once(&net, w, &[100]);
    let end = hooks(&net);
    assert_eq!(end.xdp, [foreign.xdp_id as u64]);
    assert!(
        end.ingress.is_empty() && end.egress.is_empty() && !end.clsact,
        "{end:?}"
    );

    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.ns_b,
            "env",
            "EDGEFLOW_LEGACY_ATTACH=1",
            BIN,
        ])
        .args(["watch", "--iface", dev, "--attach", "xdp", "--count", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "another XDP program is attached to {dev}, not an edgeflow's: foreign_xdp (id {})",
            foreign.xdp_id
        )) && err.contains("try --attach tc"),
        "{err}"
    );
    let end = hooks(&net);
    assert_eq!(end.xdp, [foreign.xdp_id as u64]);
    assert!(
        end.ingress.is_empty() && end.egress.is_empty() && !end.clsact,
        "{end:?}"
    );
}
