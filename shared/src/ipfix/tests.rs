//! The encoder against RFC 7011's layout, read back by a small independent walker (the
//! real collectors read it in edge/tests/ipfix.rs).

use super::*;
use crate::wire::Count;
use alloc::{vec, vec::Vec};

pub(crate) fn sample_flows() -> Vec<Flow> {
    let base = Flow {
        proto: 17,
        src: Addr::V4([10, 0, 0, 1]),
        src_port: 40000,
        dst: Addr::V4([10, 0, 0, 2]),
        dst_port: 53,
        vlan: 100,
        vlan_inner: 0,
        ifindex: 3,
        fwd: Count {
            packets: 2,
            bytes: 140,
        },
        rev: Count {
            packets: 1,
            bytes: 300,
        },
        tcp_flags: 0,
        first_seen_ms: 1_700_000_000_000,
        last_seen_ms: 1_700_000_000_500,
        rtt: None,
        handshake_us: None,
        tcp: None,
        dns: None,
        owner: None,
    };
    let mut v6 = base;
    v6.src = Addr::V6([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    v6.dst = Addr::V6([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    v6.proto = 6;
    v6.tcp_flags = 0x1b;
    let mut icmp = base;
    icmp.proto = 1;
    icmp.src_port = 8;
    icmp.dst_port = 0;
    icmp.rev = Count::default();
    vec![base, v6, icmp]
}

/// (set id, set body) of every set in a message, after checking the header.
fn sets(m: &[u8]) -> Vec<(u16, &[u8])> {
    assert_eq!(u16::from_be_bytes([m[0], m[1]]), 10);
    assert_eq!(u16::from_be_bytes([m[2], m[3]]) as usize, m.len());
    let mut out = Vec::new();
    let mut at = HEADER;
    while at < m.len() {
        let id = u16::from_be_bytes([m[at], m[at + 1]]);
        let len = u16::from_be_bytes([m[at + 2], m[at + 3]]) as usize;
        assert!(len >= 4 && at + len <= m.len(), "set overruns the message");
        out.push((id, &m[at + 4..at + len]));
        at += len;
    }
    out
}

fn seq(m: &[u8]) -> u32 {
    u32::from_be_bytes(m[8..12].try_into().unwrap())
}

#[test]
fn templates_describe_the_records() {
    let mut e = Encoder::new(42, Mode::Biflow, DEFAULT_MTU, 4);
    let t = e.templates(1);
    assert_eq!(u32::from_be_bytes(t[12..16].try_into().unwrap()), 42);
    let s = sets(&t);
    assert_eq!(
        s.iter().map(|x| x.0).collect::<Vec<_>>(),
        [2, 3, SAMPLING_TEMPLATE]
    );
    // Walk the template set: each template's field lengths sum to the shape's record.
    let mut body = s[0].1;
    let mut ids = Vec::new();
    while !body.is_empty() {
        let id = u16::from_be_bytes([body[0], body[1]]);
        let n = u16::from_be_bytes([body[2], body[3]]) as usize;
        body = &body[4..];
        let mut len = 0;
        let mut reverse = 0;
        for _ in 0..n {
            let ie = u16::from_be_bytes([body[0], body[1]]);
            len += u16::from_be_bytes([body[2], body[3]]) as usize;
            if ie & 0x8000 != 0 {
                assert_eq!(u32::from_be_bytes(body[4..8].try_into().unwrap()), 29305);
                reverse += 1;
                body = &body[8..];
            } else {
                body = &body[4..];
            }
        }
        let shape = SHAPES[(id - 256) as usize];
        assert_eq!(len, shape.record_len(Mode::Biflow), "template {id}");
        assert_eq!(reverse, 2);
        ids.push(id);
    }
    assert_eq!(ids, [256, 257, 258, 259]);
    // The sampling record: domain, uniform probabilistic, 1 of 4.
    let r = s[2].1;
    assert_eq!(r.len(), 22);
    assert_eq!(u32::from_be_bytes(r[0..4].try_into().unwrap()), 42);
    assert_eq!(u16::from_be_bytes([r[4], r[5]]), 5);
    assert_eq!(u32::from_be_bytes(r[10..14].try_into().unwrap()), 3);
    assert_eq!(f64::from_be_bytes(r[14..22].try_into().unwrap()), 0.25);
    // The whole message (bench/RESULTS.md quotes it), then: templates do not count, the
    // options record does.
    assert_eq!(t.len(), 356);
    assert_eq!((seq(&t), e.sequence()), (0, 1));
}

#[test]
fn biflow_records_carry_both_directions() {
    let mut e = Encoder::new(1, Mode::Biflow, DEFAULT_MTU, 1);
    let flows = sample_flows();
    let msgs = e.data(&flows, 1);
    assert_eq!(msgs.len(), 1);
    let s = sets(&msgs[0]);
    assert_eq!(s.iter().map(|x| x.0).collect::<Vec<_>>(), [256, 258, 257]);
    let v4 = s[0].1;
    assert_eq!(v4.len(), SHAPES[0].record_len(Mode::Biflow));
    assert_eq!(&v4[0..8], &[10, 0, 0, 1, 10, 0, 0, 2]);
    assert_eq!(u16::from_be_bytes([v4[8], v4[9]]), 40000);
    assert_eq!(v4[12], 17);
    assert_eq!(u16::from_be_bytes([v4[19], v4[20]]), 100, "vlanId");
    let n = v4.len();
    let tail = |i: usize| u64::from_be_bytes(v4[n - 8 * i..n - 8 * (i - 1)].try_into().unwrap());
    // octets, packets, reverse octets, reverse packets.
    assert_eq!([tail(4), tail(3), tail(2), tail(1)], [140, 2, 300, 1]);
    let icmp = s[2].1;
    assert_eq!(
        u16::from_be_bytes([icmp[8], icmp[9]]),
        8 << 8,
        "type 8 code 0"
    );
    assert_eq!(e.sequence(), 3);
}

#[test]
fn uniflow_writes_the_reverse_as_its_own_record() {
    let mut e = Encoder::new(1, Mode::Uniflow, DEFAULT_MTU, 1);
    let msgs = e.data(&sample_flows(), 1);
    let s = sets(&msgs[0]);
    // The ICMP flow had no reply: one record; the others two.
    let len = |id: u16| SHAPES[(id - 260) as usize].record_len(Mode::Uniflow);
    let records: usize = s.iter().map(|(id, b)| b.len() / len(*id)).sum();
    assert_eq!(records, 5);
    assert_eq!(e.sequence(), 5);
    let v4 = s[0].1;
    let r2 = &v4[len(260)..];
    assert_eq!(&r2[0..8], &[10, 0, 0, 2, 10, 0, 0, 1], "swapped");
    assert_eq!(u16::from_be_bytes([r2[8], r2[9]]), 53);
    let n = r2.len();
    assert_eq!(
        u64::from_be_bytes(r2[n - 16..n - 8].try_into().unwrap()),
        300
    );
}

#[test]
fn messages_stay_below_the_mtu_and_sequence_counts_records() {
    let mut e = Encoder::new(9, Mode::Biflow, MIN_MTU, 1);
    let flows: Vec<Flow> = sample_flows().into_iter().cycle().take(1000).collect();
    let t = e.templates(5);
    assert!(t.len() <= MIN_MTU - HEADROOM);
    let msgs = e.data(&flows, 5);
    assert!(msgs.len() > 1);
    let mut expect = 1; // the sampling record
    let mut total = 0;
    for m in &msgs {
        assert!(m.len() <= MIN_MTU - HEADROOM, "{}", m.len());
        assert_eq!(seq(m), expect);
        let n: usize = sets(m)
            .iter()
            .map(|(id, b)| b.len() / SHAPES[(id - 256) as usize].record_len(Mode::Biflow))
            .sum();
        expect += n as u32;
        total += n;
    }
    assert_eq!(total, 1000);
    assert_eq!(e.sequence(), 1001);
}

#[test]
fn domain_ids_are_stable_and_distinct() {
    assert_eq!(domain_id("default", "box-1"), domain_id("default", "box-1"));
    assert_ne!(domain_id("default", "box-1"), domain_id("default", "box-2"));
    assert_ne!(domain_id("a", "b/c"), 0);
    // FNV-1a of "s/d": pinned, as collectors key on it across releases.
    assert_eq!(domain_id("s", "d"), 0xd996_cd49);
}
