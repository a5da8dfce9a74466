//! `edgeflow decode` as an operator runs it: payloads in, JSON out; bad payloads give a
//! clear message and exit code 1, an unreadable file exit code 2.

use shared::wire::{self, Addr, Count, FlowRecord, Health, Id, Message, Summary};
use std::{
    io::Write,
    process::{Command, Output, Stdio},
};

const BIN: &str = env!("CARGO_BIN_EXE_edgeflow");

fn payload(seq: u64) -> Vec<u8> {
    wire::encode_vec(&Message::V3(Summary {
        device: Id::try_from("edge-7").unwrap(),
        site: Id::try_from("lab").unwrap(),
        boot_id: 0x1234,
        seq,
        part: 0,
        parts: 1,
        window_start_ms: 1_795_000_000_000,
        window_len_ms: 10_000,
        sample_every: 1,
        totals: Count {
            packets: 10,
            bytes: 1000,
        },
        overflow: Count::default(),
        other: Count {
            packets: 4,
            bytes: 400,
        },
        other_flows: 2,
        health: Health {
            packets_seen: 12,
            ..Health::default()
        },
        addrs: vec![Addr::V4([10, 0, 0, 1]), Addr::V4([10, 0, 0, 2])],
        flows: vec![FlowRecord {
            proto: 6,
            src: 0,
            dst: 1,
            src_port: 40000,
            dst_port: 443,
            fwd: Count {
                packets: 4,
                bytes: 400,
            },
            rev: Count {
                packets: 2,
                bytes: 200,
            },
            ..FlowRecord::default()
        }],
        rtt_hist: heapless::Vec::new(),
        tcp_health: false,
        dns_hist: Default::default(),
        dns: false,
    }))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn decode(args: &[&str], stdin: &[u8]) -> Output {
    let mut c = Command::new(BIN)
        .arg("decode")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(stdin).unwrap();
    c.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn mosquitto_sub_hex_lines_become_json_lines() {
    // As `mosquitto_sub -t 'edgeflow/#' -F '%t %x'` prints them, status lines included.
    let input = format!(
        "edgeflow/v1/lab/edge-7/status {}\nedgeflow/v1/lab/edge-7/flows {}\n{}\n",
        hex(b"online"),
        hex(&payload(1)),
        hex(&payload(2))
    );
    let out = decode(&[], input.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["topic"], "edgeflow/v1/lab/edge-7/flows");
    assert_eq!(lines[1]["seq"], 2);
    let v = &lines[0];
    assert_eq!(
        (v["device"].as_str(), v["site"].as_str()),
        (Some("edge-7"), Some("lab"))
    );
    assert_eq!(v["boot_id"], "0000000000001234");
    assert_eq!(
        (v["part"].as_u64(), v["parts"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(v["other"]["bytes"], 400);
    assert_eq!(v["health"]["packets_seen"], 12);
    assert_eq!(v["flows"][0]["src"], "10.0.0.1");
    assert_eq!(v["flows"][0]["bytes_fwd"], 400);
    assert_eq!(v["flows"][0]["first_seen_ms"], 1_795_000_000_000u64);
}

#[test]
fn a_raw_payload_file() {
    let path = std::env::temp_dir().join(format!("efdecode-{}.bin", std::process::id()));
    std::fs::write(&path, payload(5)).unwrap();
    let out = decode(&[path.to_str().unwrap()], b"");
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["seq"], 5);
}

#[test]
fn bad_payloads_are_named_and_exit_1() {
    let mut newer = payload(1);
    newer[0] = 3;
    let good = payload(1);
    let cases: [(&[u8], &str); 3] = [
        (
            &newer,
            "unknown message version 4 (this build reads versions 1 to 3)",
        ),
        (&good[..good.len() - 3], "malformed summary: truncated"),
        (
            b"\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            "malformed summary",
        ),
    ];
    for (bytes, want) in cases {
        let out = decode(&["-"], bytes);
        assert_eq!(out.status.code(), Some(1), "{want}");
        let err = text(&out.stderr);
        assert!(err.contains(want), "wanted {want:?} in {err:?}");
        assert!(out.stdout.is_empty());
    }
    // Hex lines: the good line is printed, the bad one named by its number.
    let input = format!("{}\nabc\n", hex(&good));
    let out = decode(&[], input.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout).lines().count(), 1);
    assert!(
        text(&out.stderr).contains("line 2: not hex"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn unreadable_file_is_a_usage_error() {
    let out = decode(&["/no/such/file"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/no/such/file"));
}

#[test]
fn run_rejects_a_bad_config_with_exit_2() {
    let path = std::env::temp_dir().join(format!("efbadcfg-{}.toml", std::process::id()));
    std::fs::write(&path, "interfaces = [\"lo\"]\nintervall_secs = 3\n").unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("intervall_secs"),
        "{}",
        text(&out.stderr)
    );
    let out = Command::new(BIN)
        .args(["run", "--iface", "lo", "--broker", "http://x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("broker URL"));
}

/// Every version's golden payload (shared/src/wire/golden_v*.hex) as hex lines: V1 prints
/// without TCP, V2 with `tcp_health` and the TCP flow's block, named, V3 with `dns`,
/// `dns_hist` and the DNS flow's block.
#[test]
fn version_1_2_and_3_payloads_all_decode() {
    // The shared crate's files, found from the workspace root.
    let golden = |v: u8| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap();
        let path = root.join(format!("shared/src/wire/golden_v{v}.hex"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let input = format!(
        "{}\n{}\n{}\n",
        golden(1).trim(),
        golden(2).trim(),
        golden(3).trim()
    );
    let out = decode(&[], input.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let (v1, v2) = (&lines[0], &lines[1]);
    assert_eq!(
        (&v1["device"], &v2["device"]),
        (&"edge-01".into(), &"edge-01".into())
    );
    assert!(v1.get("tcp_health").is_none() && v1["flows"][0].get("tcp").is_none());
    assert_eq!(v2["tcp_health"], true);
    let t = &v2["flows"][0]["tcp"];
    assert_eq!(
        (&t["outcome"], &t["decided"]),
        (&"closed".into(), &true.into())
    );
    assert_eq!(t["syn_retries"], 1);
    assert_eq!(t["fwd"]["retrans"]["packets"], 3);
    assert_eq!(t["fwd"]["retrans"]["bytes"], 4344);
    assert_eq!(t["rev"]["rst"], 2);
    // The ICMPv6 flow has none.
    assert!(v2["flows"][1].get("tcp").is_none());
    assert_eq!(v1["flows"][0]["bytes_rev"], v2["flows"][0]["bytes_rev"]);
    assert!(v2.get("dns").is_none() && v2.get("dns_hist").is_none());
    let v3 = &lines[2];
    assert_eq!(
        (&v3["dns"], &v3["tcp_health"]),
        (&true.into(), &true.into())
    );
    assert_eq!(v3["dns_hist"][14], 2);
    assert_eq!(v3["health"]["dns_malformed"], 4);
    assert!(v3["flows"][0].get("dns").is_none());
    let d = &v3["flows"][2]["dns"];
    assert_eq!(v3["flows"][2]["dst_port"], 53);
    assert_eq!(
        (&d["queries"], &d["responses"], &d["unanswered"]),
        (&4.into(), &3.into(), &1.into())
    );
    assert_eq!((&d["nxdomain"], &d["qtype"]), (&1.into(), &28.into()));
    assert_eq!(d["name"], "www.example.com");
    assert_eq!(d["latency"]["avg_us"], 25_000);
    assert_eq!(d["latency"]["samples"], 3);
}
