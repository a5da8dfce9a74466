//! Hand-built summaries with known totals, as an agent would publish them.

use shared::wire::{Addr, Count, FlowRecord, Health, Summary};

/// A flow in a hand-built summary.
#[derive(Clone, Copy, Debug)]
pub struct F {
    pub proto: u8,
    pub src: [u8; 4],
    pub src_port: u16,
    pub dst: [u8; 4],
    pub dst_port: u16,
    pub fwd: (u64, u64),
    pub rev: (u64, u64),
}

/// Window length of the hand-built summaries.
pub const WINDOW_MS: u32 = 10_000;

/// A one-part summary whose totals are exactly its flows plus `overflow`.
pub fn summary(
    site: &str,
    device: &str,
    boot_id: u64,
    seq: u64,
    start_ms: u64,
    flows: &[F],
    overflow: (u64, u64),
) -> Summary {
    let mut addrs: Vec<Addr> = Vec::new();
    let mut index = |a: [u8; 4]| -> u32 {
        let a = Addr::V4(a);
        match addrs.iter().position(|x| *x == a) {
            Some(i) => i as u32,
            None => {
                addrs.push(a);
                (addrs.len() - 1) as u32
            }
        }
    };
    let mut totals = Count {
        packets: overflow.0,
        bytes: overflow.1,
    };
    let records: Vec<FlowRecord> = flows
        .iter()
        .map(|f| {
            let fwd = Count {
                packets: f.fwd.0,
                bytes: f.fwd.1,
            };
            let rev = Count {
                packets: f.rev.0,
                bytes: f.rev.1,
            };
            totals.add(&fwd);
            totals.add(&rev);
            FlowRecord {
                proto: f.proto,
                src: index(f.src),
                dst: index(f.dst),
                src_port: f.src_port,
                dst_port: f.dst_port,
                ifindex: 2,
                fwd,
                rev,
                first_seen_ms: 100,
                last_seen_ms: 9_000,
                ..Default::default()
            }
        })
        .collect();
    Summary {
        device: device.try_into().unwrap(),
        site: site.try_into().unwrap(),
        boot_id,
        seq,
        part: 0,
        parts: 1,
        window_start_ms: start_ms,
        window_len_ms: WINDOW_MS,
        sample_every: 1,
        totals,
        overflow: Count {
            packets: overflow.0,
            bytes: overflow.1,
        },
        other: Count::default(),
        other_flows: 0,
        health: Health {
            packets_seen: totals.packets,
            active_flows: records.len() as u32,
            table_capacity: 16_384,
            table_full: overflow.0,
            cpu_ms: 12,
            rss_kib: 6_000,
            ..Default::default()
        },
        addrs,
        flows: records,
        rtt_hist: heapless::Vec::new(),
        tcp_health: false,
        dns_hist: Default::default(),
        dns: false,
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
