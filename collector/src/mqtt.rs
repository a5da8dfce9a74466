//! The subscriber: reads summaries and status from the broker and feeds the store.
//!
//! Persistent session (clean session off, a fixed client id) and QoS 1, with manual acks: a
//! message is acknowledged only after the transaction holding it committed. A collector that
//! stops (or crashes) between the two gets the message again from the broker on its next
//! start and the store's dedup key drops the second copy, so a restart loses nothing and
//! stores nothing twice.
//!
//! rumqttc's event loop runs on tokio and must keep being polled (acks travel through it), so
//! it does not wait for storage: publishes go to a writer thread. What waits there is bounded
//! in bytes (`--ingest-queue-mib`): when the queue is full the event loop stops polling, so it
//! stops reading the broker's socket and TCP pushes back to the broker, which keeps the
//! messages (nothing is dropped; a stall longer than 1.5 keep-alives ends the connection and
//! the broker redelivers on the next). QoS 0 publishes on a flows topic are refused and
//! counted (`qos0`): they bypass the broker's in-flight bound and could not be redelivered.

use crate::{
    config::MqttConfig,
    ingest::{Incoming, Ingest, IngestStats},
    UsageError,
};
use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet, Publish, QoS};
use shared::identity::{Kind, Reject, Topic, FILTERS};
use std::{
    collections::VecDeque,
    sync::{atomic::Ordering::Relaxed, mpsc, Arc},
    time::{Duration, Instant},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Largest MQTT packet accepted (a summary is at most 64 KiB by default; parts above that).
pub const MAX_PACKET: usize = 4 << 20;
/// Messages stored per transaction at most.
const MAX_BATCH: usize = 512;

/// The topic filters this collector subscribes to. With a share group the flows go to one
/// collector of the group each (`$share/GROUP/...`); the status topics stay a plain
/// subscription on every collector, because the broker does not deliver retained messages
/// (the devices' online/offline reports) to shared subscriptions.
pub fn filters(cfg: &MqttConfig) -> Vec<String> {
    FILTERS
        .iter()
        .map(|f| match &cfg.share_group {
            Some(g) if f.ends_with("/flows") => format!("$share/{g}/{f}"),
            _ => f.to_string(),
        })
        .collect()
}

/// Client options from the configuration.
pub fn options(cfg: &MqttConfig) -> Result<MqttOptions, UsageError> {
    let mut o = cfg
        .broker
        .options(&cfg.client_id)
        .map_err(|e| UsageError(e.0))?;
    o.set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_request_channel_capacity(4096);
    Ok(o)
}

/// A message's share of the ingest queue, KiB: its payload and topic plus what holding it costs.
fn cost_kib(p: &Publish) -> usize {
    (p.payload.len() + p.topic.len() + 256).div_ceil(1024)
}

/// A received message and its room in the queue (given back once it is stored).
type Queued = (Publish, OwnedSemaphorePermit);

/// Runs the subscriber until the task is dropped. The writer thread stores and acknowledges;
/// it ends (after finishing its batch) when this future is dropped. At most `queue_bytes`
/// of received messages wait for the writer.
pub async fn run(opts: MqttOptions, filters: Vec<String>, ingest: Ingest, queue_bytes: usize) {
    let stats = ingest.stats().clone();
    let (client, mut eventloop) = AsyncClient::new(opts, 4096);
    let (tx, rx) = mpsc::channel::<Queued>();
    let room_kib = (queue_bytes / 1024).clamp(1, Semaphore::MAX_PERMITS);
    let room = Arc::new(Semaphore::new(room_kib));
    let acker = client.clone();
    std::thread::Builder::new()
        .name("ingest".into())
        .spawn(move || writer(ingest, rx, acker))
        .expect("spawning the ingest thread");
    let mut backoff = Duration::from_millis(100);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if let Some(why) = refuse(&p) {
                    stats.refuse(p.payload.len(), &why);
                    continue;
                }
                let kib = cost_kib(&p).min(room_kib) as u32;
                let permit = match room.clone().try_acquire_many_owned(kib) {
                    Ok(permit) => permit,
                    Err(_) => {
                        // The writer is behind: stop reading from the broker until it catches up.
                        stats.backpressure.fetch_add(1, Relaxed);
                        room.clone()
                            .acquire_many_owned(kib)
                            .await
                            .expect("the semaphore is never closed")
                    }
                };
                stats.queued_kib.fetch_add(u64::from(kib), Relaxed);
                if tx.send((p, permit)).is_err() {
                    log::error!("ingest thread is gone; stopping the subscriber");
                    return;
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                log::info!(
                    "connected to the broker (session present: {})",
                    ack.session_present
                );
                backoff = Duration::from_millis(100);
                // Subscribing again on every connect is harmless and covers a broker that
                // lost the session.
                let filters = filters
                    .iter()
                    .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                if let Err(e) = client.try_subscribe_many(filters) {
                    log::error!("subscribing: {e}");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    log::error!("the broker refused a subscription: {:?}", ack.return_codes);
                } else {
                    if !stats.connected.swap(true, Relaxed) {
                        log::info!("subscribed to {}", filters.join(", "));
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                stats.connected.store(false, Relaxed);
                log_connection_error(&e);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// A publish refused before it is queued: QoS 0 on a flows topic (the broker neither bounds
/// how many it sends unacknowledged nor keeps them for a redelivery).
fn refuse(p: &Publish) -> Option<Reject> {
    (p.qos == QoS::AtMostOnce
        && matches!(
            Topic::parse(&p.topic),
            Ok(Topic {
                kind: Kind::Flows,
                ..
            })
        ))
    .then_some(Reject::Qos0)
}

fn log_connection_error(e: &ConnectionError) {
    log::warn!("broker connection: {e}; retrying");
}

/// Stores batches and acknowledges them once committed. Retries a batch that failed to
/// store (a full disk, a locked database) rather than dropping it, counting each failure;
/// meanwhile the queue fills and the event loop stops reading.
fn writer(mut ingest: Ingest, rx: mpsc::Receiver<Queued>, client: AsyncClient) {
    let stats: Arc<IngestStats> = ingest.stats().clone();
    let mut batch: Vec<Publish> = Vec::with_capacity(MAX_BATCH);
    let mut room: Vec<OwnedSemaphorePermit> = Vec::with_capacity(MAX_BATCH);
    let mut next_prune = Instant::now();
    let mut acks: VecDeque<Publish> = VecDeque::new();
    loop {
        if Instant::now() >= next_prune {
            ingest.prune();
            next_prune = Instant::now() + ingest.prune_every();
        }
        send_acks(&client, &mut acks);
        // Acks waiting for room in rumqttc's request channel are tried again soon.
        let wait = if acks.is_empty() {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(10)
        };
        let first = match rx.recv_timeout(wait) {
            Ok(q) => q,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        for (p, permit) in std::iter::once(first).chain(rx.try_iter().take(MAX_BATCH - 1)) {
            batch.push(p);
            room.push(permit);
        }
        let msgs: Vec<Incoming> = batch
            .iter()
            .map(|p| Incoming {
                topic: &p.topic,
                payload: &p.payload,
            })
            .collect();
        let mut delay = Duration::from_millis(100);
        while let Err(e) = ingest.handle(&msgs) {
            stats.store_errors.fetch_add(1, Relaxed);
            log::error!("storing {} messages: {e}; retrying", msgs.len());
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        drop(msgs);
        // Room back first: the event loop must run to pass the acks on.
        for permit in room.drain(..) {
            stats
                .queued_kib
                .fetch_sub(u64::from(permit.num_permits() as u32), Relaxed);
        }
        for p in batch.drain(..) {
            if p.qos != QoS::AtMostOnce {
                // What an ack needs: the packet id (not the payload).
                let mut ack = Publish::new("", p.qos, Vec::new());
                ack.pkid = p.pkid;
                acks.push_back(ack);
            }
        }
        send_acks(&client, &mut acks);
    }
}

/// Hands the stored messages' acks to the event loop, as many as its request channel takes.
/// Never waits for room there: the event loop drains that channel only when it polls, and it
/// stops polling while the ingest queue is full, which only this thread empties (waiting here
/// stalled both for good). Acks left over go on the next call; until then the broker holds
/// those messages in flight (a crash meanwhile: delivered again, and the store drops the copy).
fn send_acks(client: &AsyncClient, acks: &mut VecDeque<Publish>) {
    while let Some(ack) = acks.front() {
        if client.try_ack(ack).is_err() {
            // Full (or, at shutdown, gone: then the broker delivers them again).
            return;
        }
        acks.pop_front();
    }
}
