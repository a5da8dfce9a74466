use super::*;
use crate::craft::{ext_body, frag_body, Ip, Packet, L4, TPID_8021AD, TPID_8021Q};
use crate::flow::tcp;
use alloc::vec;
use alloc::vec::Vec;

const A: [u8; 4] = [10, 0, 0, 1];
const B: [u8; 4] = [10, 0, 0, 2];

fn run(p: &Packet) -> Result<Parsed, Stat> {
    parse(p.build().as_slice(), None)
}

fn v6(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[15] = last;
    a
}

#[test]
fn udp4_key_and_lengths() {
    let p = Packet::udp4(A, B, 40000, 53, 100);
    let r = run(&p).unwrap();
    assert_eq!(r.key.proto, 17);
    assert_eq!(&r.key.addr_a[12..], &A);
    assert_eq!(
        &r.key.addr_a[..12],
        &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
    );
    assert_eq!((r.key.port_a, r.key.port_b), (40000, 53));
    assert_eq!(r.dir, Direction::AToB);
    assert_eq!(r.ip_len, 20 + 8 + 100);
    assert_eq!(r.hdr_len, 28);
    assert_eq!(r.initiator, Initiator::A);
}

#[test]
fn both_directions_share_one_key() {
    let fwd = run(&Packet::udp4(B, A, 5000, 6000, 1)).unwrap();
    let rev = run(&Packet::udp4(A, B, 6000, 5000, 1)).unwrap();
    assert_eq!(fwd.key, rev.key);
    assert_ne!(fwd.dir, rev.dir);
}

#[test]
fn response_from_well_known_port_names_the_client_initiator() {
    // DNS answer seen first: 10.0.0.1:53 → 10.0.0.2:40000; the client (b) initiated.
    let r = run(&Packet::udp4(A, B, 53, 40000, 10)).unwrap();
    assert_eq!(r.dir, Direction::AToB);
    assert_eq!(r.initiator, Initiator::B);
}

#[test]
fn tcp_syn_and_synack_agree_on_initiator() {
    let syn = run(&Packet::tcp4(B, A, 33000, 80, tcp::SYN)).unwrap();
    let synack = run(&Packet::tcp4(A, B, 80, 33000, tcp::SYN | tcp::ACK)).unwrap();
    assert_eq!(syn.key, synack.key);
    // The client, 10.0.0.2:33000, is endpoint b.
    assert_eq!(syn.initiator, Initiator::B);
    assert_eq!(synack.initiator, Initiator::B);
    assert_eq!(syn.tcp_flags, tcp::SYN);
    assert_eq!(syn.hdr_len, 40);
}

#[test]
fn tcp_options_count_in_header_length() {
    let mut p = Packet::tcp4(A, B, 1, 2, tcp::ACK);
    p.l4 = L4::Tcp {
        sport: 1,
        dport: 2,
        flags: tcp::ACK,
        seq: 1,
        ack: 0,
        options: vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
    };
    p.payload = 1000;
    let r = run(&p).unwrap();
    assert_eq!(r.hdr_len, 20 + 32);
    assert_eq!(r.ip_len, 20 + 32 + 1000);
    // A 10-segment GSO aggregate: headers once per segment.
    assert_eq!(r.wire_bytes(10), (20 + 32 + 1000) + 9 * 52);
    assert_eq!(r.wire_bytes(1), r.ip_len as u64);
    assert_eq!(r.wire_bytes(0), r.ip_len as u64);
}

#[test]
fn ipv4_options_are_honoured() {
    let mut p = Packet::udp4(A, B, 7, 9, 4);
    if let Ip::V4 { options, .. } = &mut p.ip {
        *options = vec![0x94, 0x04, 0, 0, 1, 1, 1, 0]; // router alert + NOPs
    }
    let r = run(&p).unwrap();
    assert_eq!((r.key.port_a, r.key.port_b), (7, 9));
    assert_eq!(r.hdr_len, 28 + 8);
}

#[test]
fn ihl_below_five_is_an_ipv4_error() {
    let mut f = Packet::udp4(A, B, 7, 9, 4).build();
    f[14] = 0x44;
    assert_eq!(parse(f.as_slice(), None), Err(Stat::ErrIpv4));
}

#[test]
fn total_length_below_header_is_an_ipv4_error() {
    let mut f = Packet::udp4(A, B, 7, 9, 4).build();
    f[16] = 0;
    f[17] = 10;
    assert_eq!(parse(f.as_slice(), None), Err(Stat::ErrIpv4));
}

#[test]
fn wrong_version_is_an_error() {
    let mut f = Packet::udp4(A, B, 7, 9, 4).build();
    f[14] = 0x65;
    assert_eq!(parse(f.as_slice(), None), Err(Stat::ErrIpv4));
    let mut f = Packet::udp6(v6(1), v6(2), 7, 9, 4).build();
    f[14] = 0x40;
    assert_eq!(parse(f.as_slice(), None), Err(Stat::ErrIpv6));
}

#[test]
fn ipv4_fragments() {
    let mut first = Packet::udp4(A, B, 7, 9, 100);
    if let Ip::V4 { frag, .. } = &mut first.ip {
        *frag = 0x2000; // MF, offset 0: the L4 header is here
    }
    assert!(run(&first).is_ok());
    let mut later = first.clone();
    if let Ip::V4 { frag, .. } = &mut later.ip {
        *frag = 0x0010; // offset 16 * 8
    }
    assert_eq!(run(&later), Err(Stat::Fragment));
}

#[test]
fn ipv6_udp_and_extension_chain() {
    let mut p = Packet::udp6(v6(1), v6(2), 1000, 2000, 10);
    assert_eq!(run(&p).unwrap().ip_len, 40 + 8 + 10);
    if let Ip::V6 { ext, .. } = &mut p.ip {
        *ext = vec![
            (0, ext_body(0)),
            (60, ext_body(1)),
            (43, ext_body(0)),
            (44, frag_body(0, true)),
        ];
    }
    let r = run(&p).unwrap();
    assert_eq!((r.key.port_a, r.key.port_b), (1000, 2000));
    assert_eq!(r.hdr_len, 40 + 8 + 16 + 8 + 8 + 8);
    assert_eq!(r.key.addr_a, v6(1));
}

#[test]
fn ipv6_chain_at_and_over_the_limit() {
    let mut p = Packet::udp6(v6(1), v6(2), 1, 2, 0);
    if let Ip::V6 { ext, .. } = &mut p.ip {
        *ext = (0..MAX_IPV6_EXT).map(|_| (60u8, ext_body(0))).collect();
    }
    assert!(run(&p).is_ok(), "a chain of exactly the limit parses");
    if let Ip::V6 { ext, .. } = &mut p.ip {
        ext.push((60, ext_body(0)));
    }
    assert_eq!(run(&p), Err(Stat::ErrIpv6Ext));
}

#[test]
fn truncated_extension_header_is_an_extension_error() {
    let mut p = Packet::udp6(v6(1), v6(2), 1, 2, 0);
    if let Ip::V6 { ext, .. } = &mut p.ip {
        *ext = vec![(0, ext_body(1)), (44, frag_body(0, true))];
    }
    let full = p.build();
    // 14 eth + 40 IPv6, then hop-by-hop 54..70, fragment 70..78, UDP 78..86.
    for cut in 54..78 {
        assert_eq!(
            parse(&full[..cut], None),
            Err(Stat::ErrIpv6Ext),
            "cut at {cut}"
        );
    }
    for cut in 78..86 {
        assert_eq!(parse(&full[..cut], None), Err(Stat::ErrL4), "cut at {cut}");
    }
    assert!(parse(full.as_slice(), None).is_ok());
}

#[test]
fn ipv6_non_first_fragment() {
    let mut p = Packet::udp6(v6(1), v6(2), 1, 2, 0);
    if let Ip::V6 { ext, .. } = &mut p.ip {
        *ext = vec![(44, frag_body(185, false))];
    }
    assert_eq!(run(&p), Err(Stat::Fragment));
}

#[test]
fn vlan_single_stacked_and_too_deep() {
    let mut p = Packet::udp4(A, B, 1, 2, 0);
    p.vlans = vec![(TPID_8021Q, 100)];
    let r = run(&p).unwrap();
    assert_eq!((r.key.vlan_outer, r.key.vlan_inner), (100, 0));

    p.vlans = vec![(TPID_8021AD, 300), (TPID_8021Q, 42)];
    let r = run(&p).unwrap();
    assert_eq!((r.key.vlan_outer, r.key.vlan_inner), (300, 42));

    p.vlans = vec![(TPID_8021AD, 1), (TPID_8021Q, 2), (TPID_8021Q, 3)];
    assert_eq!(run(&p), Err(Stat::ErrVlan));
}

#[test]
fn accelerated_tag_is_the_outer_one() {
    let mut p = Packet::udp4(A, B, 1, 2, 0);
    p.vlans = vec![(TPID_8021Q, 7)];
    let r = parse(p.build().as_slice(), Some(0x2000 | 300)).unwrap();
    assert_eq!((r.key.vlan_outer, r.key.vlan_inner), (300, 7));
    p.vlans = vec![(TPID_8021Q, 7), (TPID_8021Q, 8)];
    assert_eq!(parse(p.build().as_slice(), Some(300)), Err(Stat::ErrVlan));
}

#[test]
fn icmp_echo_request_and_reply_share_a_key() {
    let mut req = Packet::udp4(A, B, 0, 0, 56);
    req.l4 = L4::Icmp { ty: 8, code: 0 };
    let mut rep = Packet::udp4(B, A, 0, 0, 56);
    rep.l4 = L4::Icmp { ty: 0, code: 0 };
    let (q, r) = (run(&req).unwrap(), run(&rep).unwrap());
    assert_eq!(q.key, r.key);
    assert_eq!(q.key.proto, 1);
    assert_eq!(q.key.port_a, 8 << 8);
    assert_eq!(q.initiator, Initiator::A);
    assert_eq!(r.initiator, Initiator::A, "the reply names the requester");

    let mut req6 = Packet::udp6(v6(1), v6(2), 0, 0, 8);
    req6.l4 = L4::Icmp { ty: 128, code: 0 };
    let mut rep6 = Packet::udp6(v6(2), v6(1), 0, 0, 8);
    rep6.l4 = L4::Icmp { ty: 129, code: 0 };
    assert_eq!(run(&req6).unwrap().key, run(&rep6).unwrap().key);
    assert_eq!(run(&req6).unwrap().key.proto, 58);
}

#[test]
fn other_protocols_have_zero_ports() {
    let mut p = Packet::udp4(A, B, 0, 0, 30);
    p.l4 = L4::Raw(47); // GRE
    let r = run(&p).unwrap();
    assert_eq!((r.key.proto, r.key.port_a, r.key.port_b), (47, 0, 0));
}

#[test]
fn non_ip_and_runts() {
    let p = Packet {
        ip: Ip::Other { ethertype: 0x0806 },
        ..Packet::udp4(A, B, 0, 0, 28)
    };
    assert_eq!(run(&p), Err(Stat::NonIp));
    assert_eq!(parse(&[0u8; 0][..], None), Err(Stat::ErrEthernet));
    assert_eq!(parse(&[0u8; 13][..], None), Err(Stat::ErrEthernet));
}

/// Truncating a valid frame anywhere gives the stat of the layer it was cut in, never a flow
/// (except past the last header byte, where payload is cut, which the kernel does not see).
#[test]
fn truncation_at_every_layer() {
    let cases: Vec<(Packet, Vec<(usize, Stat)>)> = vec![
        (
            {
                let mut p = Packet::tcp4(A, B, 1, 2, tcp::SYN);
                p.vlans = vec![(TPID_8021Q, 5)];
                p
            },
            vec![
                (14, Stat::ErrVlan),
                (18, Stat::ErrIpv4),
                (38, Stat::ErrL4),
                (58, Stat::ErrL4),
            ],
        ),
        (
            Packet::udp6(v6(1), v6(2), 1, 2, 0),
            vec![(14, Stat::ErrIpv6), (54, Stat::ErrL4), (62, Stat::ErrL4)],
        ),
    ];
    for (p, bounds) in cases {
        let full = p.build();
        for cut in 0..full.len() {
            let r = parse(&full[..cut], None);
            let want = if cut < 14 {
                Stat::ErrEthernet
            } else {
                bounds
                    .iter()
                    .rev()
                    .find(|(start, _)| cut >= *start)
                    .unwrap()
                    .1
            };
            assert_eq!(r, Err(want), "cut at {cut} of {}", full.len());
        }
        assert!(parse(full.as_slice(), None).is_ok());
    }
}

/// A TCP segment with these option bytes, sequence and acknowledgement numbers.
fn tcp_with(flags: u8, options: Vec<u8>, seq: u32, ack: u32) -> Vec<u8> {
    let mut p = Packet::tcp4(A, B, 40000, 80, flags);
    p.l4 = L4::Tcp {
        sport: 40000,
        dport: 80,
        flags,
        seq,
        ack,
        options,
    };
    p.build()
}

fn ts_opt(val: u32, ecr: u32) -> Vec<u8> {
    let mut v = vec![8, 10];
    v.extend_from_slice(&val.to_be_bytes());
    v.extend_from_slice(&ecr.to_be_bytes());
    v
}

#[test]
fn tcp_sequence_numbers() {
    let f = tcp_with(tcp::SYN | tcp::ACK, vec![], 0xdead_beef, 0x0102_0304);
    let r = parse(f.as_slice(), None).unwrap();
    assert_eq!((r.seq, r.ack), (0xdead_beef, 0x0102_0304));
    assert!(!r.has_ts);
    let u = run(&Packet::udp4(A, B, 1, 2, 3)).unwrap();
    assert_eq!((u.seq, u.ack, u.has_ts), (0, 0, false));
}

#[test]
fn tcp_timestamp_common_layout() {
    // NOP NOP TS: what Linux sends on every segment after the SYN.
    let mut o = vec![1, 1];
    o.extend(ts_opt(0x1122_3344, 0x5566_7788));
    let r = parse(tcp_with(tcp::ACK, o, 1, 2).as_slice(), None).unwrap();
    assert!(r.has_ts);
    assert_eq!((r.tsval, r.tsecr), (0x1122_3344, 0x5566_7788));
}

#[test]
fn tcp_timestamp_in_a_linux_syn() {
    // MSS 1460, SACK permitted, TS, NOP, window scale 7.
    let mut o = vec![2, 4, 0x05, 0xb4, 4, 2];
    o.extend(ts_opt(777, 0));
    o.extend([1, 3, 3, 7]);
    let r = parse(tcp_with(tcp::SYN, o, 9, 0).as_slice(), None).unwrap();
    assert!(r.has_ts);
    assert_eq!((r.tsval, r.tsecr), (777, 0));
}

#[test]
fn tcp_timestamp_after_sack_blocks() {
    // NOP NOP SACK(2 blocks) NOP NOP TS: a different order than Linux uses, still found.
    let mut o = vec![1, 1, 5, 18];
    o.extend([0u8; 16]);
    o.extend([1, 1]);
    o.extend(ts_opt(5, 6));
    assert_eq!(o.len(), 32);
    let r = parse(tcp_with(tcp::ACK, o, 1, 2).as_slice(), None).unwrap();
    assert_eq!((r.has_ts, r.tsval, r.tsecr), (true, 5, 6));
}

#[test]
fn tcp_timestamp_absent_or_malformed() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("no options", vec![]),
        ("only MSS", vec![2, 4, 0x05, 0xb4]),
        ("EOL before TS", {
            let mut o = vec![0, 1, 1, 1];
            o.extend(ts_opt(1, 2));
            o
        }),
        ("TS with a wrong length", vec![8, 8, 0, 0, 0, 1, 0, 0]),
        ("option length 0", vec![3, 0, 1, 1]),
        ("option longer than the area", vec![1, 1, 8, 10, 0, 0, 0, 1]),
        ("TS past the option limit", {
            let mut o = vec![1; MAX_TCP_OPTIONS];
            o.extend(ts_opt(1, 2));
            o
        }),
    ];
    for (what, o) in cases {
        let r = parse(tcp_with(tcp::ACK, o, 1, 2).as_slice(), None)
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert!(!r.has_ts, "{what}");
        assert_eq!((r.tsval, r.tsecr), (0, 0), "{what}");
    }
}

#[test]
fn tcp_timestamp_over_ipv6() {
    let mut p = Packet::udp6(v6(1), v6(2), 1, 2, 0);
    let mut o = vec![1, 1];
    o.extend(ts_opt(42, 43));
    p.l4 = L4::Tcp {
        sport: 1,
        dport: 2,
        flags: tcp::ACK,
        seq: 1,
        ack: 0,
        options: o,
    };
    let r = run(&p).unwrap();
    assert_eq!((r.has_ts, r.tsval, r.tsecr), (true, 42, 43));
}

/// A header's length is believed only as far as the frame goes: a 60-byte frame claiming
/// 65,535 bytes counts the 46 it holds, the rest is the excess (issue 24). A frame holding
/// more than its header says (Ethernet padding) counts what the header says.
#[test]
fn lengths_are_clamped_to_the_frame() {
    let mut f = Packet::udp4(A, B, 7, 9, 18).build();
    assert_eq!(f.len(), 60);
    f[16] = 0xff;
    f[17] = 0xff;
    let r = parse(f.as_slice(), None).unwrap();
    assert_eq!((r.ip_len, r.excess), (46, 65_535 - 46));
    assert_eq!(r.wire_bytes(1), 46);

    let mut f = Packet::udp6(v6(1), v6(2), 7, 9, 10).build();
    let held = f.len() as u32 - 14;
    f[18] = 0xff;
    f[19] = 0xff;
    let r = parse(f.as_slice(), None).unwrap();
    assert_eq!((r.ip_len, r.excess as u32), (held, 40 + 65_535 - held));

    // Padded to 60 bytes on the wire: the header's 28 count, nothing is excess.
    let mut f = Packet::udp4(A, B, 7, 9, 0).build();
    f.resize(60, 0);
    let r = parse(f.as_slice(), None).unwrap();
    assert_eq!((r.ip_len, r.excess), (28, 0));
}
