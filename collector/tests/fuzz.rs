//! Fuzzing the payload path (seeded, 120,000 inputs): valid summaries, mutations of them and
//! garbage, on right, wrong and foreign topics, through `Ingest::handle` into a real SQLite
//! store. Nothing panics; every input gets an outcome; every rejection is counted under the
//! reason the wire decoder gives; what is counted as stored is what the database holds.

use collector::{
    ingest::{Incoming, Ingest, IngestStats, Outcome, Reject},
    metrics::REASONS,
    store::Store,
};
use shared::wire::{self, Addr, Count, FlowRecord, Health, Message, Rtt, Summary};
use std::{collections::BTreeMap, sync::atomic::Ordering::Relaxed, sync::Arc, time::Duration};

const INPUTS: usize = 120_000;

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn count(r: &mut Rng) -> Count {
    // Mostly plausible, sometimes huge: the store clamps, queries never overflow.
    let big = r.chance(3);
    Count {
        packets: if big { r.next() } else { r.below(10_000) },
        bytes: if big { r.next() } else { r.below(10_000_000) },
    }
}

fn valid(r: &mut Rng, seq: u64) -> Summary {
    let naddrs = 1 + r.below(12) as usize;
    let addrs: Vec<Addr> = (0..naddrs)
        .map(|_| {
            if r.chance(70) {
                Addr::V4((r.next() as u32).to_be_bytes())
            } else {
                let mut a = [0u8; 16];
                a.copy_from_slice(&r.bytes(16));
                Addr::V6(a)
            }
        })
        .collect();
    let flows: Vec<FlowRecord> = (0..r.below(24))
        .map(|_| FlowRecord {
            proto: [6, 17, 1, 58, 47][r.below(5) as usize],
            src: r.below(naddrs as u64) as u32,
            dst: r.below(naddrs as u64) as u32,
            src_port: r.next() as u16,
            dst_port: r.next() as u16,
            vlan: if r.chance(10) {
                r.below(4095) as u16
            } else {
                0
            },
            vlan_inner: 0,
            ifindex: r.below(8) as u32,
            fwd: count(r),
            rev: count(r),
            tcp_flags: r.next() as u8,
            first_seen_ms: -(r.below(60_000) as i64),
            last_seen_ms: r.below(10_000) as i64,
            rtt: r.chance(30).then(|| Rtt {
                min_us: r.below(1000) as u32,
                avg_us: r.below(5000) as u32,
                max_us: r.below(50_000) as u32,
                samples: r.below(100) as u32,
            }),
        })
        .collect();
    let parts = 1 + r.below(3) as u16;
    Summary {
        device: ["gw-a", "gw-b", "gw-c"][r.below(3) as usize]
            .try_into()
            .unwrap(),
        site: "fuzz".try_into().unwrap(),
        boot_id: r.below(4),
        seq,
        part: r.below(parts as u64) as u16,
        parts,
        window_start_ms: 1_700_000_000_000 + seq * 10_000,
        window_len_ms: 10_000,
        sample_every: 1 + r.below(4) as u32,
        totals: count(r),
        overflow: count(r),
        other: count(r),
        other_flows: r.below(100) as u32,
        health: Health {
            packets_seen: r.next(),
            active_flows: r.next() as u32,
            table_capacity: r.next() as u32,
            table_full: r.next(),
            cpu_ms: r.next() as u32,
            rss_kib: r.next() as u32,
            ..Default::default()
        },
        addrs,
        flows,
        rtt_hist: (0..r.below(25)).map(|_| r.next() as u32).collect(),
    }
}

/// One input: a topic and a payload, and whether it is an unmodified valid summary.
fn input(r: &mut Rng, i: usize, pool: &[Vec<u8>]) -> (String, Vec<u8>, bool) {
    // Seq numbers repeat now and then: duplicates.
    let seq = if r.chance(5) { r.below(50) } else { i as u64 };
    let s = valid(r, seq);
    let topic = format!("edgeflow/v1/{}/{}/flows", s.site, s.device);
    let enc = wire::encode_vec(&Message::V1(s));
    let other = &pool[r.below(pool.len() as u64) as usize];
    let (payload, pristine) = match r.below(10) {
        0 | 1 => (enc, true),
        2 => {
            let mut p = enc;
            for _ in 0..1 + r.below(8) {
                let at = r.below(p.len() as u64) as usize;
                p[at] ^= 1 << r.below(8);
            }
            (p, false)
        }
        3 => {
            let n = r.below(enc.len() as u64) as usize;
            (enc[..n].to_vec(), false)
        }
        4 => {
            let mut p = enc;
            let n = 1 + r.below(16) as usize;
            p.extend(r.bytes(n));
            (p, false)
        }
        5 => {
            let n = r.below(300) as usize;
            (r.bytes(n), false)
        }
        6 => {
            let n = r.below(300) as usize + 1;
            let mut p = r.bytes(n);
            p[0] = 0;
            (p, false)
        }
        7 => {
            let cut = r.below(enc.len() as u64) as usize;
            let from = r.below(other.len() as u64) as usize;
            ([&enc[..cut], &other[from..]].concat(), false)
        }
        8 => {
            let mut p = enc;
            let at = r.below(p.len() as u64) as usize;
            let n = (p.len() - at).min(1 + r.below(10) as usize);
            p[at..at + n].fill(0xff);
            (p, false)
        }
        _ => {
            let mut p = enc;
            p[0] = 1 + r.below(255) as u8;
            (p, false)
        }
    };
    let own = topic.clone();
    let topic = match r.below(100) {
        0..=3 => "edgeflow/v1/fuzz/gw-zzz/flows".to_string(), // mismatch (if it decodes)
        4..=6 => ["edgeflow/v1/x/y/nope", "edgeflow/v2/a/b/flows", "x", ""][r.below(4) as usize]
            .to_string(),
        7..=11 => {
            let status: &[u8] = [
                &b"online"[..],
                b"offline",
                b" Online\n",
                b"on",
                &payload[..],
            ][r.below(5) as usize];
            return (
                "edgeflow/v1/fuzz/gw-a/status".to_string(),
                status.to_vec(),
                false,
            );
        }
        _ => topic,
    };
    let pristine = pristine && topic == own;
    (topic, payload, pristine)
}

#[test]
fn payload_path_never_panics_and_counts_every_rejection() {
    let dir = std::env::temp_dir().join(testkit::unique("effuzz"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fuzz.db");
    let stats = Arc::new(IngestStats::default());
    let mut ingest = Ingest::new(
        Store::open(&path).unwrap(),
        stats.clone(),
        Duration::from_secs(86_400 * 365 * 100),
    );
    let mut r = Rng(0x5eed_ed9e_f10f_0001);
    let pool: Vec<Vec<u8>> = (0..64)
        .map(|i| wire::encode_vec(&Message::V1(valid(&mut r, 1_000_000 + i))))
        .collect();

    let mut tally: BTreeMap<&'static str, u64> = BTreeMap::new();
    let (mut stored, mut dups, mut presence, mut stored_flows) = (0u64, 0u64, 0u64, 0u64);
    let mut done = 0;
    while done < INPUTS {
        let n = (INPUTS - done).min(512);
        let batch: Vec<(String, Vec<u8>, bool)> =
            (0..n).map(|k| input(&mut r, done + k, &pool)).collect();
        let msgs: Vec<Incoming> = batch
            .iter()
            .map(|(t, p, _)| Incoming {
                topic: t,
                payload: p,
            })
            .collect();
        let outcomes = ingest.handle(&msgs).expect("storing never fails here");
        assert_eq!(outcomes.len(), n);
        for ((topic, payload, pristine), o) in batch.iter().zip(&outcomes) {
            // The wire decoder is the oracle for the flows topic.
            if topic.starts_with("edgeflow/v1/fuzz/gw-") && topic.ends_with("/flows") {
                match (wire::decode(payload), o) {
                    (Err(e), Outcome::Rejected(Reject::Decode(got))) => assert_eq!(&e, got),
                    (Err(e), o) => panic!("decoder says {e}, ingest says {o:?}"),
                    (Ok(_), Outcome::Stored { .. } | Outcome::Duplicate) => {}
                    (Ok(_), Outcome::Rejected(Reject::TopicMismatch)) => {}
                    (Ok(_), o) => panic!("decodes, but {o:?}"),
                }
            }
            if *pristine {
                assert!(
                    matches!(o, Outcome::Stored { .. } | Outcome::Duplicate),
                    "{o:?}"
                );
            }
            match o {
                Outcome::Stored { flows } => {
                    stored += 1;
                    stored_flows += *flows as u64;
                }
                Outcome::Duplicate => dups += 1,
                Outcome::Presence => presence += 1,
                Outcome::Rejected(why) => {
                    assert!(REASONS.contains(&why.reason()), "{why:?}");
                    *tally.entry(why.reason()).or_default() += 1;
                }
            }
        }
        done += n;
    }

    let rejected: u64 = tally.values().sum();
    assert_eq!(stored + dups + presence + rejected, INPUTS as u64);
    assert_eq!(stats.messages.load(Relaxed), INPUTS as u64);
    assert_eq!(stats.summaries.load(Relaxed), stored);
    assert_eq!(stats.duplicates.load(Relaxed), dups);
    assert_eq!(stats.presence.load(Relaxed), presence);
    assert_eq!(stats.flow_records.load(Relaxed), stored_flows);
    assert_eq!(stats.rejected(), tally, "every rejection counted by reason");
    // Every path was exercised.
    for reason in REASONS {
        assert!(
            tally.get(reason).copied().unwrap_or(0) > 0,
            "no {reason} input"
        );
    }
    assert!(
        stored > 10_000 && dups > 100 && presence > 1_000,
        "{stored} {dups} {presence}"
    );

    let db = rusqlite::Connection::open(&path).unwrap();
    let rows: i64 = db
        .query_row("SELECT COUNT(*) FROM summaries", [], |r| r.get(0))
        .unwrap();
    let flow_rows: i64 = db
        .query_row("SELECT COUNT(*) FROM flows", [], |r| r.get(0))
        .unwrap();
    assert_eq!((rows as u64, flow_rows as u64), (stored, stored_flows));
    eprintln!("{INPUTS} inputs: {stored} stored, {dups} duplicates, {presence} status, rejected {tally:?}");
    let _ = std::fs::remove_dir_all(dir);
}
