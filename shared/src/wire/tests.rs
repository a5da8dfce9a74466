use super::*;
use alloc::{string::String, vec};

fn id(s: &str) -> Id {
    Id::try_from(s).unwrap()
}

/// A fixed version-1 summary whose bytes are pinned below (as version 1 shipped).
fn golden() -> Message {
    Message::V1(v1::Summary {
        device: id("edge-01"),
        site: id("lab"),
        boot_id: 0x0123_4567_89ab_cdef,
        seq: 42,
        part: 0,
        parts: 1,
        window_start_ms: 1_795_000_000_000,
        window_len_ms: 10_000,
        sample_every: 1,
        totals: Count {
            packets: 1003,
            bytes: 151_240,
        },
        overflow: Count {
            packets: 1,
            bytes: 60,
        },
        other: Count {
            packets: 2,
            bytes: 180,
        },
        other_flows: 2,
        health: v2::Health {
            packets_seen: 1010,
            active_flows: 5,
            table_capacity: 16384,
            table_full: 1,
            parse_errors: 3,
            fragments: 2,
            non_ip: 2,
            cpu_ms: 4,
            rss_kib: 9000,
            spool_depth: 0,
            spool_dropped: 0,
        },
        addrs: vec![
            Addr::V4([10, 0, 0, 1]),
            Addr::V4([192, 0, 2, 7]),
            Addr::V6([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
        ],
        flows: vec![
            v1::FlowRecord {
                proto: 6,
                src: 0,
                dst: 1,
                src_port: 43210,
                dst_port: 443,
                vlan: 0,
                vlan_inner: 0,
                ifindex: 2,
                fwd: Count {
                    packets: 600,
                    bytes: 40_000,
                },
                rev: Count {
                    packets: 400,
                    bytes: 111_000,
                },
                tcp_flags: 0x1b,
                first_seen_ms: -1500,
                last_seen_ms: 9_990,
                rtt: Some(Rtt {
                    min_us: 900,
                    avg_us: 1_100,
                    max_us: 4_000,
                    samples: 12,
                }),
            },
            v1::FlowRecord {
                proto: 58,
                src: 2,
                dst: 2,
                src_port: 128,
                dst_port: 0,
                vlan: 100,
                vlan_inner: 0,
                ifindex: 3,
                fwd: Count {
                    packets: 0,
                    bytes: 0,
                },
                rev: Count {
                    packets: 0,
                    bytes: 0,
                },
                tcp_flags: 0,
                first_seen_ms: 10,
                last_seen_ms: 10,
                rtt: None,
            },
        ],
        rtt_hist: heapless::Vec::from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 8, 1]).unwrap(),
    })
}

const GOLDEN_HEX: &str = include_str!("golden_v1.hex");

fn hex(b: &[u8]) -> alloc::string::String {
    ::hex::encode(b)
}

#[test]
fn golden_bytes_are_pinned() {
    let bytes = encode_vec(&golden());
    assert_eq!(hex(&bytes), GOLDEN_HEX.trim(), "the V1 wire format changed");
    assert_eq!(decode(&bytes), Ok(golden()));
}

/// The version-2 summary: the V1 golden's content, upgraded, with TCP health on and the TCP
/// flow carrying a block with every field set.
fn golden_v2() -> Message {
    Message::V2(v2::Summary::from(&golden_v2_current()))
}

/// [`golden_v2`] as the current summary.
fn golden_v2_current() -> Summary {
    let mut s = golden().into_summary();
    s.tcp_health = true;
    s.flows[0].tcp = Some(Tcp {
        outcome: Outcome::Closed,
        decided: true,
        syn_retries: 1,
        fwd: TcpDir {
            retrans: Count {
                packets: 3,
                bytes: 4344,
            },
            rst: 1,
            fin: 1,
        },
        rev: TcpDir {
            retrans: Count {
                packets: 1,
                bytes: 1448,
            },
            rst: 2,
            fin: 1,
        },
    });
    s
}

/// The version-3 summary: the V2 golden's content, upgraded, with DNS on, a third flow (UDP to
/// port 53) carrying a DNS block with every field set, a DNS histogram and DNS health counters.
fn golden_v3() -> Message {
    let mut s = golden_v2_current();
    s.dns = true;
    s.health.dns_malformed = 4;
    s.health.dns_evicted = 1;
    s.health.spool_fallback = true;
    s.health.spool_write_errors = 3;
    s.health.clock_step_ms = -30_000;
    s.health.clock_steps = 2;
    s.health.reattached = 5;
    s.health.header_excess = 2;
    s.health.reclaimed = 300;
    s.dns_hist =
        heapless::Vec::from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 1]).unwrap();
    s.flows.push(FlowRecord {
        proto: 17,
        src: 0,
        dst: 1,
        src_port: 40000,
        dst_port: 53,
        ifindex: 2,
        fwd: Count {
            packets: 4,
            bytes: 250,
        },
        rev: Count {
            packets: 3,
            bytes: 390,
        },
        first_seen_ms: 100,
        last_seen_ms: 180,
        dns: Some(Dns {
            queries: 4,
            responses: 3,
            noerror: 1,
            nxdomain: 1,
            servfail: 1,
            refused: 0,
            other_rcode: 0,
            unanswered: 1,
            qtype: 28,
            latency: Some(Latency {
                min_us: 20_100,
                avg_us: 25_000,
                max_us: 31_000,
                samples: 3,
            }),
            name: DnsName::new("www.example.com").unwrap(),
            name_truncated: false,
        }),
        ..FlowRecord::default()
    });
    // Owners (issue 22): a local flow's process, service and both ends' devices.
    s.names = [
        "curl",
        "nginx.service",
        "Cisco Systems, Inc",
        "printer-2",
        "01:f4:bd:9e:00:00:01",
    ]
    .map(String::from)
    .to_vec();
    s.devices = vec![
        Device {
            mac: [0xf4, 0xbd, 0x9e, 0, 0, 1],
            vendor: Some(2),
            host_name: Some(3),
            client_id: Some(4),
        },
        Device {
            mac: [0x02, 0, 0x5e, 0, 2, 2],
            ..Device::default()
        },
    ];
    s.flows[0].owner = Some(Owner {
        process: Some(Process { pid: 4242, comm: 0 }),
        service: Some(1),
        initiator: Some(0),
        responder: Some(1),
    });
    s.flows[1].owner = Some(Owner {
        initiator: Some(1),
        ..Owner::default()
    });
    s.health.owner_sockets_full = 2;
    s.health.owner_devices_full = 1;
    Message::V3(s)
}

#[test]
fn owner_indices_must_be_in_range() {
    let Message::V3(s) = golden_v3() else {
        unreachable!()
    };
    let bad = |f: &dyn Fn(&mut Summary)| {
        let mut s = s.clone();
        f(&mut s);
        decode(&encode_vec(&Message::V3(s)))
    };
    assert!(bad(&|_| ()).is_ok());
    let out = Err(DecodeError::Invalid("owner index out of range"));
    assert_eq!(
        bad(&|s| s.flows[0].owner.as_mut().unwrap().service = Some(5)),
        out
    );
    assert_eq!(
        bad(&|s| s.flows[1].owner.as_mut().unwrap().initiator = Some(2)),
        out
    );
    assert_eq!(
        bad(&|s| s.devices[1].vendor = Some(9)),
        Err(DecodeError::Invalid("device name index out of range"))
    );
    assert_eq!(
        bad(&|s| s.names[0] = "x".repeat(MAX_NAME_LEN + 1)),
        Err(DecodeError::Invalid("name too long"))
    );
}

const GOLDEN_V3_HEX: &str = include_str!("golden_v3.hex");

#[test]
fn golden_v3_bytes_are_pinned() {
    let bytes = encode_vec(&golden_v3());
    assert_eq!(
        hex(&bytes),
        GOLDEN_V3_HEX.trim(),
        "the V3 wire format changed"
    );
    assert_eq!(decode(&bytes), Ok(golden_v3()));
    assert_eq!(bytes[0], V3);
    assert_eq!(golden_v3().version(), 3);
}

#[test]
fn version_2_reads_as_the_current_summary_without_dns() {
    let m = decode(&hex_bytes(GOLDEN_V2_HEX.trim())).unwrap();
    assert_eq!(m.version(), 2);
    let s = m.into_summary();
    assert_eq!(s, golden_v2_current());
    assert!(!s.dns && s.dns_hist.is_empty() && s.flows.iter().all(|f| f.dns.is_none()));
    assert_eq!((s.health.dns_malformed, s.health.dns_evicted), (0, 0));
    assert_eq!((s.health.header_excess, s.health.reclaimed), (0, 0));
    // Down to version 2 drops only what version 3 added, byte for byte.
    let Message::V3(cur) = golden_v3() else {
        unreachable!()
    };
    let mut down = v2::Summary::from(&cur);
    down.flows.pop();
    assert_eq!(
        encode_vec(&Message::V2(down)),
        hex_bytes(GOLDEN_V2_HEX.trim())
    );
    assert_eq!(Message::from(s.clone()), Message::V3(s));
}

#[test]
fn dns_blocks_only_on_udp_or_tcp_flows_with_dns_on() {
    let Message::V3(mut s) = golden_v3() else {
        unreachable!()
    };
    s.flows[1].dns = s.flows[2].dns;
    assert_eq!(
        decode(&encode_vec(&Message::V3(s.clone()))),
        Err(DecodeError::Invalid(
            "DNS block on a flow that is not UDP or TCP"
        ))
    );
    s.flows[1].dns = None;
    s.flows[0].dns = s.flows[2].dns;
    assert!(decode(&encode_vec(&Message::V3(s.clone()))).is_ok());
    s.dns = false;
    assert_eq!(
        decode(&encode_vec(&Message::V3(s))),
        Err(DecodeError::Invalid("DNS block with DNS off"))
    );
}

const GOLDEN_V2_HEX: &str = include_str!("golden_v2.hex");

#[test]
fn golden_v2_bytes_are_pinned() {
    let bytes = encode_vec(&golden_v2());
    assert_eq!(
        hex(&bytes),
        GOLDEN_V2_HEX.trim(),
        "the V2 wire format changed"
    );
    assert_eq!(decode(&bytes), Ok(golden_v2()));
    assert_eq!(bytes[0], V2);
}

#[test]
fn version_1_reads_as_the_current_summary_without_tcp() {
    let v1 = decode(&hex_bytes(GOLDEN_HEX.trim())).unwrap();
    assert_eq!(v1.version(), 1);
    let Message::V1(old) = v1.clone() else {
        panic!("not V1")
    };
    let s = v1.into_summary();
    assert!(!s.tcp_health);
    assert!(s.flows.iter().all(|f| f.tcp.is_none()));
    assert_eq!(s.flows.len(), old.flows.len());
    assert_eq!(
        (s.seq, s.totals, s.health),
        (old.seq, old.totals, old.health.into())
    );
    assert_eq!(s.flows[0].rtt, old.flows[0].rtt);
    // Apart from TCP health, V2 carries the same summary one byte per flow and one more.
    let Message::V2(mut cur) = golden_v2() else {
        unreachable!()
    };
    cur.tcp_health = false;
    cur.flows[0].tcp = None;
    assert_eq!(Summary::from(cur.clone()), s);
    let (n1, n2) = (encoded_len(&golden()), encoded_len(&Message::V2(cur)));
    assert_eq!(n2, n1 + s.flows.len() + 1);
    // V3 adds one byte per flow (no DNS block), the empty histogram, the flag and the two
    // DNS health counters; a byte each for the five agent health fields at their zero (spool
    // fallback, spool write errors, clock step, clock steps, re-attachments); for owners
    // (issue 22) one byte per flow (none), the empty names and devices and two more health
    // counters; and header_excess and reclaimed (issue 24).
    let n3 = encoded_len(&Message::from(s.clone()));
    assert_eq!(n3, n2 + s.flows.len() + 4 + 5 + s.flows.len() + 4 + 2);
}

#[test]
fn tcp_blocks_only_on_tcp_flows_with_tcp_health_on() {
    for v3 in [false, true] {
        let mut s = golden_v2_current();
        let enc = |s: &Summary| {
            if v3 {
                encode_vec(&Message::V3(s.clone()))
            } else {
                encode_vec(&Message::V2(v2::Summary::from(s)))
            }
        };
        s.flows[1].tcp = s.flows[0].tcp;
        assert_eq!(
            decode(&enc(&s)),
            Err(DecodeError::Invalid("TCP block on a flow that is not TCP"))
        );
        s.flows[1].tcp = None;
        s.tcp_health = false;
        assert_eq!(
            decode(&enc(&s)),
            Err(DecodeError::Invalid("TCP block with TCP health off"))
        );
    }
}

fn hex_bytes(h: &str) -> alloc::vec::Vec<u8> {
    ::hex::decode(h).expect("golden vectors are hex")
}

#[test]
fn encode_into_a_slice_matches_and_reports_too_small() {
    let v = encode_vec(&golden());
    let mut buf = [0u8; 512];
    assert_eq!(encode(&golden(), &mut buf).unwrap(), &v[..]);
    assert_eq!(encoded_len(&golden()), v.len());
    let mut small = [0u8; 16];
    assert!(encode(&golden(), &mut small).is_none());
}

#[test]
fn unknown_version_is_named() {
    let mut b = encode_vec(&golden());
    b[0] = 3;
    assert_eq!(decode(&b), Err(DecodeError::UnknownVersion(3)));
    let text = alloc::format!("{}", decode(&b).unwrap_err());
    assert!(
        text.contains("version 4") && text.contains("versions 1 to 3"),
        "{text}"
    );
    assert_eq!(decode(&[0x80, 0x01]), Err(DecodeError::UnknownVersion(128)));
}

#[test]
fn empty_truncated_and_garbage_are_errors() {
    assert_eq!(decode(&[]), Err(DecodeError::Empty));
    let b = encode_vec(&golden());
    for cut in 1..b.len() {
        assert!(
            matches!(decode(&b[..cut]), Err(DecodeError::Malformed(_))),
            "cut at {cut}"
        );
    }
    for (v, b) in [(2, encode_vec(&golden_v2())), (3, encode_vec(&golden_v3()))] {
        for cut in 1..b.len() {
            assert!(
                matches!(decode(&b[..cut]), Err(DecodeError::Malformed(_))),
                "V{v} cut at {cut}"
            );
        }
    }
    let mut trailing = b.clone();
    trailing.push(0);
    assert_eq!(
        decode(&trailing),
        Err(DecodeError::Malformed("trailing bytes"))
    );
    assert!(decode(&[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
}

#[test]
fn rule_breaking_summaries_are_invalid() {
    let Message::V1(mut s) = golden() else {
        unreachable!()
    };
    s.flows[0].dst = 99;
    assert_eq!(
        decode(&encode_vec(&Message::V1(s.clone()))),
        Err(DecodeError::Invalid("address index out of range"))
    );
    s.flows[0].dst = 1;
    s.part = 1;
    assert_eq!(
        decode(&encode_vec(&Message::V1(s.clone()))),
        Err(DecodeError::Invalid("part out of range"))
    );
    s.part = 0;
    s.device = Id::new();
    assert_eq!(
        decode(&encode_vec(&Message::V1(s))),
        Err(DecodeError::Invalid("empty device id"))
    );
}

#[test]
fn mapped_addresses() {
    let mut m = [0u8; 16];
    m[10] = 0xff;
    m[11] = 0xff;
    m[12..].copy_from_slice(&[10, 1, 2, 3]);
    assert_eq!(Addr::from_mapped(&m), Addr::V4([10, 1, 2, 3]));
    m[0] = 0xfd;
    assert_eq!(Addr::from_mapped(&m), Addr::V6(m));
}

#[test]
fn rtt_buckets_are_log2() {
    assert_eq!(rtt_bucket(0), 0);
    assert_eq!(rtt_bucket(1), 0);
    assert_eq!(rtt_bucket(2), 1);
    assert_eq!(rtt_bucket(1023), 9);
    assert_eq!(rtt_bucket(1024), 10);
    assert_eq!(rtt_bucket(u32::MAX), RTT_BUCKETS - 1);
}

#[test]
fn a_summary_as_version_1_drops_only_the_tcp_blocks() {
    let Message::V1(old) = golden() else {
        unreachable!()
    };
    let new = golden_v2_current();
    // Down to version 1 gives the golden version-1 summary back, byte for byte.
    let down = v1::Summary::from(&new);
    assert_eq!(down, old);
    assert_eq!(
        encode_vec(&Message::V1(down)),
        encode_vec(&golden()),
        "as version 1 shipped"
    );
}
