//! The payload path: topic + bytes → decoded, validated, deduplicated, stored, counted.
//!
//! Anything that is not a valid summary or status is rejected with a reason and counted;
//! nothing here panics on untrusted input. Counters move only after the batch's transaction
//! committed, so a batch that failed to store (and will be retried) is not counted twice.

use crate::store::{Storage, StoreError, Write};
pub use shared::identity::Reject;
use shared::{
    identity::{Kind, Presence, Topic},
    ipfix::export::Exporter,
    wire::{self, Summary},
};
use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One message as it came off the broker.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
}

/// A payload that passed every check.
#[derive(Debug)]
pub enum Parsed<'a> {
    Summary(Box<Summary>),
    Presence {
        site: &'a str,
        device: &'a str,
        state: Presence,
    },
}

/// Decodes and validates one message (no storage).
pub fn parse<'a>(msg: Incoming<'a>) -> Result<Parsed<'a>, Reject> {
    let Topic { site, device, kind } = Topic::parse(msg.topic)?;
    match kind {
        Kind::Flows => {
            let s = wire::decode_summary(msg.payload).map_err(Reject::Decode)?;
            if s.site.as_str() != site || s.device.as_str() != device {
                return Err(Reject::TopicMismatch);
            }
            Ok(Parsed::Summary(Box::new(s)))
        }
        Kind::Status => {
            let state = Presence::parse(msg.payload).ok_or(Reject::BadStatus)?;
            Ok(Parsed::Presence {
                site,
                device,
                state,
            })
        }
    }
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Stored { flows: usize },
    Duplicate,
    Presence,
    Rejected(Reject),
}

/// Counters since the collector started (the dashboard's ingest panel and `/metrics`).
#[derive(Debug, Default)]
pub struct IngestStats {
    pub messages: AtomicU64,
    pub payload_bytes: AtomicU64,
    pub summaries: AtomicU64,
    pub flow_records: AtomicU64,
    pub duplicates: AtomicU64,
    pub presence: AtomicU64,
    /// Subscribed to the broker right now.
    pub connected: AtomicBool,
    /// Failed attempts to store a batch (each retried until it succeeds).
    pub store_errors: AtomicU64,
    /// Times the subscriber stopped reading from the broker because the queue was full.
    pub backpressure: AtomicU64,
    /// Received messages waiting to be stored, KiB (of the `--ingest-queue-mib` room).
    pub queued_kib: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
}

impl IngestStats {
    /// Rejections by reason.
    pub fn rejected(&self) -> BTreeMap<&'static str, u64> {
        self.rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected().values().sum()
    }

    /// Counts a message refused before it reached the writer.
    pub fn refuse(&self, payload_len: usize, why: &Reject) {
        let msg = Incoming {
            topic: "",
            payload: &[],
        };
        self.count(&msg, &Outcome::Rejected(why.clone()));
        self.payload_bytes.fetch_add(payload_len as u64, Relaxed);
    }

    fn count(&self, msg: &Incoming, outcome: &Outcome) {
        self.messages.fetch_add(1, Relaxed);
        self.payload_bytes
            .fetch_add(msg.payload.len() as u64, Relaxed);
        match outcome {
            Outcome::Stored { flows } => {
                self.summaries.fetch_add(1, Relaxed);
                self.flow_records.fetch_add(*flows as u64, Relaxed);
            }
            Outcome::Duplicate => {
                self.duplicates.fetch_add(1, Relaxed);
            }
            Outcome::Presence => {
                self.presence.fetch_add(1, Relaxed);
            }
            Outcome::Rejected(r) => {
                *self
                    .rejected
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(r.reason())
                    .or_default() += 1;
            }
        }
    }
}

/// Sends a stored summary's flows as IPFIX; a failure is counted by the exporter and logged.
fn export(e: &mut Exporter, s: &Summary) {
    let flows: Vec<_> = s.to_flows().collect();
    let before = e.lost_records();
    if let Err(err) = e.export_device(&s.site, &s.device, s.sample_every, &flows) {
        log::warn!(
            "{err}: {} flow records of {}/{} not exported ({} since start)",
            e.lost_records() - before,
            s.site,
            s.device,
            e.lost_records()
        );
    }
}

/// Owns the write side of the store.
pub struct Ingest {
    store: Box<dyn Storage>,
    stats: Arc<IngestStats>,
    retention: Duration,
    /// `--ipfix-export`: every stored window's flows go out as IPFIX too.
    ipfix: Option<Exporter>,
}

impl Ingest {
    /// Keeps windows received within `retention` of now (see [`Ingest::prune`]).
    pub fn new(
        store: impl Storage + 'static,
        stats: Arc<IngestStats>,
        retention: Duration,
    ) -> Ingest {
        Ingest {
            store: Box::new(store),
            stats,
            retention,
            ipfix: None,
        }
    }

    /// Re-exports what is stored (not duplicates, not rejects) through `e`, each device as
    /// its own observation domain.
    pub fn export_ipfix(mut self, e: Exporter) -> Ingest {
        self.ipfix = Some(e);
        self
    }

    /// Deletes what is older than the retention. A failure is logged and tried next time.
    pub fn prune(&mut self) {
        let before = now_ms().saturating_sub(self.retention.as_millis() as i64);
        match self.store.prune(before) {
            Ok((0, _)) => {}
            Ok((s, f)) => log::info!("retention: deleted {s} summaries and {f} flow records"),
            Err(e) => log::error!("retention: {e}"),
        }
    }

    /// How often [`Ingest::prune`] should run: hourly, or four times per retention when
    /// that is shorter, so nothing outlives its retention by more than a quarter of it.
    pub fn prune_every(&self) -> Duration {
        (self.retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600))
    }

    pub fn stats(&self) -> &Arc<IngestStats> {
        &self.stats
    }

    pub fn store(&mut self) -> &mut dyn Storage {
        &mut *self.store
    }

    /// Handles a batch in one transaction. On error nothing was stored or counted: the
    /// caller must not acknowledge the messages (the broker delivers them again).
    pub fn handle(&mut self, msgs: &[Incoming]) -> Result<Vec<Outcome>, StoreError> {
        let now = now_ms();
        let parsed: Vec<Result<Parsed, Reject>> = msgs.iter().map(|&m| parse(m)).collect();
        let writes: Vec<Write> = parsed
            .iter()
            .filter_map(|p| match p {
                Ok(Parsed::Summary(s)) => Some(Write::Summary(s)),
                Ok(Parsed::Presence {
                    site,
                    device,
                    state,
                }) => Some(Write::Presence {
                    site,
                    device,
                    state: *state,
                }),
                Err(_) => None,
            })
            .collect();
        let stored = self.store.write(&writes, now)?;
        drop(writes);
        if let Some(e) = &mut self.ipfix {
            // After the store: what is kept (once) goes out; duplicates and rejects do not.
            let mut kept = stored.iter();
            for p in &parsed {
                match p {
                    Ok(Parsed::Summary(s)) => {
                        if kept.next() == Some(&true) {
                            export(e, s);
                        }
                    }
                    Ok(Parsed::Presence { .. }) => {
                        kept.next();
                    }
                    Err(_) => {}
                }
            }
        }
        let mut stored = stored.into_iter();
        let outcomes: Vec<Outcome> = parsed
            .into_iter()
            .map(|p| match p {
                Ok(Parsed::Summary(s)) => {
                    if stored.next() == Some(true) {
                        Outcome::Stored {
                            flows: s.flows.len(),
                        }
                    } else {
                        Outcome::Duplicate
                    }
                }
                Ok(Parsed::Presence { .. }) => {
                    stored.next();
                    Outcome::Presence
                }
                Err(r) => Outcome::Rejected(r),
            })
            .collect();
        for (msg, o) in msgs.iter().zip(&outcomes) {
            self.stats.count(msg, o);
        }
        Ok(outcomes)
    }
}
