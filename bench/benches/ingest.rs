//! Ingest benchmark (not a test): how many summaries and flow records per second this
//! machine decodes and stores. Prints a table. Run: `bench/bench ingest`.
//!
//! Workload: summaries of 500 flow records each (a busy edge box's top-K), IPv4 and IPv6
//! peers, RTT on TCP flows, spread over 20 devices, stored into a fresh SQLite file in WAL
//! mode with synchronous=FULL (as the collector runs) in transactions of 16 messages (what the
//! MQTT writer batches when messages queue).

use collector::{
    ingest::{parse, Incoming, Ingest, IngestStats},
    store::Store,
};
use shared::wire::{self, Addr, Count, FlowRecord, Health, Message, Rtt, Summary};
use std::{hint::black_box, sync::Arc, time::Duration, time::Instant};

const SUMMARIES: usize = 2_000;
const FLOWS: usize = 500;
const BATCH: usize = 16;

fn workload() -> Vec<(String, Vec<u8>)> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..SUMMARIES)
        .map(|i| {
            let dev = i % 20;
            let mut addrs = vec![Addr::V4([10, 0, 0, dev as u8])];
            for k in 0..200u32 {
                addrs.push(if k % 5 == 0 {
                    let mut a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                    a[12..].copy_from_slice(&k.to_be_bytes());
                    Addr::V6(a)
                } else {
                    Addr::V4((0xc633_6400 + k).to_be_bytes())
                });
            }
            let flows = (0..FLOWS)
                .map(|f| {
                    let r = rnd();
                    let tcp = f % 3 != 0;
                    FlowRecord {
                        proto: if tcp { 6 } else { 17 },
                        src: 0,
                        dst: 1 + (f % 200) as u32,
                        src_port: 32_768 + (r % 28_000) as u16,
                        dst_port: [443, 80, 53, 8883, 22][f % 5],
                        ifindex: 2,
                        fwd: Count {
                            packets: r % 1000,
                            bytes: r % 1_000_000,
                        },
                        rev: Count {
                            packets: (r >> 20) % 1000,
                            bytes: (r >> 20) % 5_000_000,
                        },
                        tcp_flags: 0x18,
                        first_seen_ms: -(((r >> 40) % 60_000) as i64),
                        last_seen_ms: ((r >> 30) % 10_000) as i64,
                        rtt: tcp.then_some(Rtt {
                            min_us: 900,
                            avg_us: 1_400,
                            max_us: 9_000,
                            samples: (r % 50) as u32,
                        }),
                        ..Default::default()
                    }
                })
                .collect();
            let s = Summary {
                device: format!("edge-{dev:02}").as_str().try_into().unwrap(),
                site: "bench".try_into().unwrap(),
                boot_id: 77,
                seq: (i / 20) as u64,
                part: 0,
                parts: 1,
                window_start_ms: 1_790_000_000_000 + (i / 20) as u64 * 10_000,
                window_len_ms: 10_000,
                sample_every: 1,
                totals: Count {
                    packets: 1,
                    bytes: 1,
                },
                overflow: Count::default(),
                other: Count::default(),
                other_flows: 0,
                health: Health::default(),
                addrs,
                flows,
                rtt_hist: [0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 40, 80, 12, 1]
                    .into_iter()
                    .collect(),
                tcp_health: false,
                dns_hist: Default::default(),
                dns: false,
            };
            let topic = format!("edgeflow/v1/bench/{}/flows", s.device);
            (topic, wire::encode_vec(&Message::V3(s)))
        })
        .collect()
}

fn row(name: &str, secs: f64, summaries: usize, bytes: usize) {
    println!(
        "| {name:<34} | {:>12.0} | {:>15.0} | {:>8.1} |",
        summaries as f64 / secs,
        (summaries * FLOWS) as f64 / secs,
        bytes as f64 / secs / 1e6
    );
}

fn main() {
    let msgs = workload();
    let bytes: usize = msgs.iter().map(|m| m.1.len()).sum();
    println!(
        "collector ingest: {SUMMARIES} summaries x {FLOWS} flow records, {:.1} KiB per payload \
         ({:.1} B per record), {} CPUs",
        bytes as f64 / SUMMARIES as f64 / 1024.0,
        bytes as f64 / (SUMMARIES * FLOWS) as f64,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!();
    println!(
        "| {:<34} | {:>12} | {:>15} | {:>8} |",
        "stage", "summaries/s", "flow records/s", "MB/s"
    );
    println!("|{:-<36}|{:->14}|{:->17}|{:->10}|", "", "", "", "");

    // Decode only (best of 3 passes).
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for (_, p) in &msgs {
            black_box(wire::decode(black_box(p)).unwrap());
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    row("decode (wire::decode)", best, SUMMARIES, bytes);

    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for (topic, p) in &msgs {
            black_box(parse(Incoming { topic, payload: p }).unwrap());
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    row("decode + validate topic (parse)", best, SUMMARIES, bytes);

    // Decode and store, into a fresh database each time.
    let dir = std::env::temp_dir().join(format!("efc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bench.db");
    for f in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{f}", path.display()));
    }
    let stats = Arc::new(IngestStats::default());
    let mut ingest = Ingest::new(
        Store::open(&path).unwrap(),
        stats.clone(),
        Duration::from_secs(u32::MAX as u64),
    );
    // Every message through ingest, BATCH per transaction; seconds taken.
    let mut pass = || {
        let t = Instant::now();
        for chunk in msgs.chunks(BATCH) {
            let batch: Vec<Incoming> = chunk
                .iter()
                .map(|(topic, payload)| Incoming { topic, payload })
                .collect();
            ingest.handle(&batch).unwrap();
        }
        t.elapsed().as_secs_f64()
    };
    let secs = pass();
    row(
        &format!("decode + store (WAL, FULL, {BATCH}/tx)"),
        secs,
        SUMMARIES,
        bytes,
    );
    // A second pass is all duplicates: what a redelivery storm costs.
    row("decode + dedup (all duplicates)", pass(), SUMMARIES, bytes);
    let size = std::fs::metadata(&path).map_or(0, |m| m.len())
        + std::fs::metadata(format!("{}-wal", path.display())).map_or(0, |m| m.len());
    println!();
    println!(
        "stored: {} summaries, {} flow records, database {:.1} MiB ({:.0} B per record)",
        stats.summaries.load(std::sync::atomic::Ordering::Relaxed),
        stats
            .flow_records
            .load(std::sync::atomic::Ordering::Relaxed),
        size as f64 / (1 << 20) as f64,
        size as f64 / (SUMMARIES * FLOWS) as f64
    );
    println!("targets: >= 1,000,000 flow records/s decoded, >= 200,000 flow records/s stored");
    let _ = std::fs::remove_dir_all(dir);
}
