//! Payload fuzzing of the summary decoder (`shared::wire::decode`) and the collector's ingest
//! path, in process: a seeded generator of valid summaries, mutations of their encodings
//! (flips, interesting bytes, huge varints, cuts, splices), random bytes and hostile topics.
//!
//! Every input goes through `ingest::parse` (topic, decode, validation): no panic, a bounded
//! allocation peak per input, every accepted summary re-encodes to itself, and every refusal
//! has a known reason. A slice of the inputs also goes through `Ingest::handle` into a real
//! SQLite store, whose counters must match the refusals by reason exactly.
//!
//! `EDGEFLOW_FUZZ_PAYLOADS` (default 1,000,000) and `EDGEFLOW_FUZZ_SEED` reproduce or extend
//! a run. This file holds one test: the allocation counter below is process-wide.

use collector::{
    ingest::{parse, Incoming, Ingest, IngestStats, Outcome, Parsed},
    store::Store,
};
use shared::wire::{self, Addr, Count, FlowRecord, Health, Message, Rtt, Summary};
use std::{
    alloc::{GlobalAlloc, Layout, System},
    collections::BTreeMap,
    sync::{
        atomic::{AtomicUsize, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};
use testkit::rng::Rng;

/// Counts live heap bytes and their peak, to bound what one input can make the decoder hold.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Allocation a decode may peak at beyond its input. postcard refuses a sequence that
/// declares more elements than bytes are left, so serde's preallocation is at most one
/// element's size (a `FlowRecord`, about 100 bytes) per input byte, and decoded records are
/// no bigger.
fn peak_bound(input: usize) -> usize {
    256 * input + (64 << 10)
}

const DEVICES: &[&str] = &["gw-1", "gw-2", "edge.a_1", "x"];
const SITES: &[&str] = &["lab", "branch"];

fn summary(r: &mut Rng) -> Summary {
    let mut s = Summary {
        device: DEVICES[r.below(DEVICES.len())].try_into().unwrap(),
        site: SITES[r.below(SITES.len())].try_into().unwrap(),
        boot_id: r.below(4) as u64,
        seq: r.below(64) as u64,
        part: 0,
        parts: 1 + r.below(3) as u16,
        window_start_ms: 1_795_000_000_000 + r.below(1 << 20) as u64,
        window_len_ms: 10_000,
        sample_every: 1 + r.below(2) as u32 * 99,
        totals: Count {
            packets: r.num(),
            bytes: r.num(),
        },
        overflow: Count::default(),
        other: Count {
            packets: r.num(),
            bytes: r.num(),
        },
        other_flows: r.num() as u32,
        health: Health {
            packets_seen: r.num(),
            active_flows: r.num() as u32,
            table_capacity: 16384,
            cpu_ms: r.num() as u32,
            ..Health::default()
        },
        addrs: Vec::new(),
        flows: Vec::new(),
        rtt_hist: heapless::Vec::new(),
        tcp_health: false,
        dns_hist: Default::default(),
        dns: false,
    };
    s.part = r.below(s.parts as usize) as u16;
    for _ in 0..1 + r.below(4) {
        s.addrs.push(if r.chance(50) {
            Addr::V4([10, 0, 0, r.byte()])
        } else {
            let mut a = [0u8; 16];
            a[0] = 0xfd;
            a[15] = r.byte();
            Addr::V6(a)
        });
    }
    let n = s.addrs.len();
    for _ in 0..r.below(12) {
        s.flows.push(FlowRecord {
            proto: [6, 17, 1, 58][r.below(4)],
            src: r.below(n) as u32,
            dst: r.below(n) as u32,
            src_port: r.next_u64() as u16,
            dst_port: r.next_u64() as u16,
            vlan: if r.chance(10) {
                r.below(4096) as u16
            } else {
                0
            },
            vlan_inner: 0,
            ifindex: 2,
            fwd: Count {
                packets: r.num(),
                bytes: r.num(),
            },
            rev: Count {
                packets: r.num(),
                bytes: r.num(),
            },
            tcp_flags: r.byte(),
            first_seen_ms: -(r.below(5000) as i64),
            last_seen_ms: r.below(10_000) as i64,
            rtt: r.chance(30).then(|| Rtt {
                min_us: 100,
                avg_us: 150,
                max_us: 900,
                samples: r.num() as u32,
            }),
            tcp: None,
            dns: None,
        });
    }
    for _ in 0..r.below(8) {
        s.rtt_hist.push(r.num() as u32).unwrap();
    }
    s
}

/// Bytes that sit on decoder edges: varint continuation, enum tags, option tags, lengths.
const INTERESTING: &[u8] = &[0, 1, 2, 3, 0x7f, 0x80, 0x81, 0xfe, 0xff, 64, 65];

/// One mutation of an encoding.
fn mutate(r: &mut Rng, b: &mut Vec<u8>) {
    let at = |r: &mut Rng, b: &Vec<u8>| r.below(b.len().max(1));
    match r.below(8) {
        0 | 1 => {
            if !b.is_empty() {
                let i = at(r, b);
                b[i] = INTERESTING[r.below(INTERESTING.len())];
            }
        }
        2 => {
            if !b.is_empty() {
                let i = at(r, b);
                b[i] ^= 1 << r.below(8);
            }
        }
        // A huge varint where a length or number was: billions of records declared.
        3 => {
            let i = at(r, b).min(b.len());
            let n = 1 + r.below(10);
            let mut v: Vec<u8> = (0..n).map(|_| 0x80 | r.byte()).collect();
            v.push(r.byte() & 0x7f);
            b.splice(i..i, v);
        }
        4 => {
            let cut = r.below(b.len() + 1);
            b.truncate(cut);
        }
        5 => {
            if !b.is_empty() {
                let i = at(r, b);
                let n = 1 + r.below(8).min(b.len() - i - 1);
                b.drain(i..(i + n).min(b.len()));
            }
        }
        // A slice repeated: plausible-looking records, extra fields, trailing bytes.
        6 => {
            if !b.is_empty() {
                let i = at(r, b);
                let n = 1 + r.below(32).min(b.len() - i - 1);
                let piece = b[i..(i + n).min(b.len())].to_vec();
                let j = at(r, b);
                b.splice(j..j, piece);
            }
        }
        _ => {
            let i = at(r, b).min(b.len());
            let extra: Vec<u8> = (0..1 + r.below(8)).map(|_| r.byte()).collect();
            b.splice(i..i, extra);
        }
    }
}

/// One (topic, payload) pair.
fn input(r: &mut Rng) -> (String, Vec<u8>) {
    let s = summary(r);
    let own = format!("edgeflow/v1/{}/{}/flows", s.site, s.device);
    match r.below(20) {
        // Valid.
        0..=3 => (own, wire::encode_vec(&Message::V3(s))),
        // Mutated, one to a few times.
        4..=14 => {
            let mut b = wire::encode_vec(&Message::V3(s));
            for _ in 0..1 + r.below(3) {
                mutate(r, &mut b);
            }
            (own, b)
        }
        // Random bytes, half of them behind the V1, V2 or V3 tag (up to 200: 1 in 200 empty,
        // which longer V3 encodings, cut less often to nothing, no longer reach enough).
        15..=16 => {
            let mut b: Vec<u8> = (0..r.below(200)).map(|_| r.byte()).collect();
            if r.chance(50) && !b.is_empty() {
                b[0] = r.below(3) as u8;
            }
            (own, b)
        }
        // Valid, on another device's topic.
        17 => (
            "edgeflow/v1/lab/other/flows".into(),
            wire::encode_vec(&Message::V3(s)),
        ),
        // Status payloads, good and bad.
        18 => {
            let p: &[u8] = [
                &b"online"[..],
                b"offline",
                b" Online\n",
                b"maybe",
                b"\xff\xfe",
                b"",
            ][r.below(6)];
            (
                format!("edgeflow/v1/{}/{}/status", s.site, s.device),
                p.to_vec(),
            )
        }
        // Topics that are not ours.
        _ => {
            let t = [
                "edgeflow/v1/lab/gw-1/flows/extra",
                "edgeflow/v1//gw-1/flows",
                "edgeflow/v2/lab/gw-1/flows",
                "edgeflow/v1/lab/gw-1/other",
                "",
                "#",
            ][r.below(6)];
            (t.into(), wire::encode_vec(&Message::V3(s)))
        }
    }
}

const REASONS: &[&str] = &[
    "empty",
    "unknown_version",
    "malformed",
    "invalid",
    "topic_mismatch",
    "unknown_topic",
    "bad_id",
    "bad_status",
];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn hostile_payloads_are_refused_by_reason_in_bounded_memory() {
    let total = env_u64("EDGEFLOW_FUZZ_PAYLOADS", 1_000_000) as usize;
    let seed = env_u64("EDGEFLOW_FUZZ_SEED", 0x5eed_c011_ec70);
    // Every 20th input also goes through storage (SQLite is the slow part).
    const STORE_EVERY: usize = 20;
    let t0 = Instant::now();
    let dir = std::env::temp_dir().join(testkit::unique("effuzz"));
    std::fs::create_dir_all(&dir).unwrap();
    let stats = Arc::new(IngestStats::default());
    let mut ingest = Ingest::new(
        Store::open(&dir.join("fuzz.db")).unwrap(),
        stats.clone(),
        Duration::from_secs(1 << 30),
    );

    // The worst case on purpose: a valid header declaring 2^32 - 1 addresses. serde
    // preallocates at most 1 MiB for a declared length, whatever it says.
    let mut s = summary(&mut Rng(seed));
    s.addrs.clear();
    s.flows.clear();
    s.rtt_hist.clear();
    let mut b = wire::encode_vec(&Message::V3(s.clone()));
    assert_eq!(
        b[b.len() - 3..],
        [0, 0, 0],
        "addrs, flows, rtt_hist lengths"
    );
    b.splice(b.len() - 3..b.len() - 2, [0xff, 0xff, 0xff, 0xff, 0x0f]);
    let topic = format!("edgeflow/v1/{}/{}/flows", s.site, s.device);
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let r = parse(Incoming {
        topic: &topic,
        payload: &b,
    });
    assert!(
        matches!(r, Err(ref e) if e.reason() == "malformed"),
        "{r:?}"
    );
    let extra = PEAK.load(Relaxed) - before;
    assert!(
        extra <= peak_bound(b.len()),
        "{extra} bytes for 2^32 declared addresses"
    );
    eprintln!("fuzz_payload: 2^32 - 1 declared addresses in {} bytes: {extra} bytes allocated at the peak", b.len());

    let mut r = Rng(seed);
    let mut outcomes: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut stored_reasons: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut pending: Vec<(String, Vec<u8>)> = Vec::new();
    let mut handled = 0u64;
    let mut worst = (0usize, 0usize); // (peak over live, input length)
    for i in 0..total {
        let (topic, payload) = input(&mut r);
        let msg = Incoming {
            topic: &topic,
            payload: &payload,
        };
        let before = LIVE.load(Relaxed);
        PEAK.store(before, Relaxed);
        let verdict = std::panic::catch_unwind(|| match parse(msg) {
            Ok(Parsed::Summary(s)) => {
                // Accepted means well-formed: it encodes back to a message that decodes to
                // the same summary.
                let m = Message::V3(*s);
                let again = wire::decode(&wire::encode_vec(&m)).expect("re-encoded decodes");
                assert_eq!(again, m, "re-encoded summary differs");
                "accepted"
            }
            Ok(Parsed::Presence { .. }) => "presence",
            Err(e) => e.reason(),
        });
        let verdict = verdict.unwrap_or_else(|_| {
            let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
            panic!("seed {seed:#x}, input {i}: panicked on topic {topic:?} payload {hex}")
        });
        let extra = PEAK.load(Relaxed) - before;
        assert!(
            extra <= peak_bound(payload.len()),
            "seed {seed:#x}, input {i}: {extra} bytes allocated for a {}-byte payload",
            payload.len()
        );
        if extra > worst.0 {
            worst = (extra, payload.len());
        }
        assert!(
            matches!(verdict, "accepted" | "presence") || REASONS.contains(&verdict),
            "unknown reason {verdict}"
        );
        *outcomes.entry(verdict).or_default() += 1;
        if i % STORE_EVERY == 0 {
            if REASONS.contains(&verdict) {
                *stored_reasons.entry(verdict).or_default() += 1;
            }
            pending.push((topic, payload));
            if pending.len() == 200 {
                handled += handle(&mut ingest, &mut pending);
            }
        }
    }
    handled += handle(&mut ingest, &mut pending);
    let elapsed = t0.elapsed();
    eprintln!(
        "fuzz_payload: seed {seed:#x}: {total} inputs in {elapsed:.1?} ({handled} also stored); \
         outcomes {outcomes:?}; largest allocation peak {} bytes for a {}-byte payload",
        worst.0, worst.1
    );

    // The ingest path counted every message, and each refusal under the reason parse gave.
    let rejected: BTreeMap<&'static str, u64> = stats.rejected();
    assert_eq!(rejected, stored_reasons, "rejections by reason");
    assert_eq!(stats.messages.load(Relaxed), handled);
    let accounted = stats.summaries.load(Relaxed)
        + stats.duplicates.load(Relaxed)
        + stats.presence.load(Relaxed)
        + stats.rejected_total();
    assert_eq!(accounted, handled, "every stored message has one outcome");
    // The generator reached every reason (and acceptance), or it proves little.
    for what in REASONS.iter().chain(&["accepted", "presence"]) {
        assert!(
            outcomes.get(what).copied().unwrap_or(0) > total as u64 / 1000,
            "{what} barely reached: {outcomes:?}"
        );
    }
    // The store first: SQLite writes its last checkpoint when it closes.
    drop(ingest);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Stores a batch; every message must come back with an outcome.
fn handle(ingest: &mut Ingest, pending: &mut Vec<(String, Vec<u8>)>) -> u64 {
    let msgs: Vec<Incoming> = pending
        .iter()
        .map(|(t, p)| Incoming {
            topic: t,
            payload: p,
        })
        .collect();
    let outcomes = ingest.handle(&msgs).expect("storing a batch");
    assert_eq!(outcomes.len(), msgs.len());
    for o in &outcomes {
        if let Outcome::Stored { flows } = o {
            assert!(*flows <= wire::MAX_FLOWS_PER_MESSAGE);
        }
    }
    let n = msgs.len() as u64;
    pending.clear();
    n
}
