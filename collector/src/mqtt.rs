//! The subscriber: reads summaries and status from the broker and feeds the store.
//!
//! Persistent session (clean session off, a fixed client id) and QoS 1, with manual acks: a
//! message is acknowledged only after the transaction holding it committed. A collector that
//! stops (or crashes) between the two gets the message again from the broker on its next
//! start and the store's dedup key drops the second copy, so a restart loses nothing and
//! stores nothing twice.
//!
//! rumqttc's event loop runs on tokio and must keep being polled (acks travel through it), so
//! it never waits for storage: publishes go to a writer thread over an unbounded channel. The
//! broker bounds how many unacknowledged QoS 1 messages it sends us, which bounds the channel.

use crate::{
    config::MqttConfig,
    ingest::{Incoming, Ingest},
    UsageError,
};
use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet, Publish, QoS};
use shared::identity::FILTERS;
use std::{
    sync::{atomic::Ordering::Relaxed, mpsc},
    time::{Duration, Instant},
};

/// Largest MQTT packet accepted (a summary is at most 64 KiB by default; parts above that).
pub const MAX_PACKET: usize = 4 << 20;
/// Messages stored per transaction at most.
const MAX_BATCH: usize = 512;

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

/// Runs the subscriber until the task is dropped. The writer thread stores and acknowledges;
/// it ends (after finishing its batch) when this future is dropped.
pub async fn run(opts: MqttOptions, ingest: Ingest) {
    let stats = ingest.stats().clone();
    let (client, mut eventloop) = AsyncClient::new(opts, 4096);
    let (tx, rx) = mpsc::channel::<Publish>();
    let handle = tokio::runtime::Handle::current();
    let acker = client.clone();
    std::thread::Builder::new()
        .name("ingest".into())
        .spawn(move || writer(ingest, rx, acker, handle))
        .expect("spawning the ingest thread");
    let mut backoff = Duration::from_millis(100);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if tx.send(p).is_err() {
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
                let filters =
                    FILTERS.map(|f| rumqttc::SubscribeFilter::new(f.into(), QoS::AtLeastOnce));
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
                    stats.connected.store(true, Relaxed);
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

fn log_connection_error(e: &ConnectionError) {
    log::warn!("broker connection: {e}; retrying");
}

/// Stores batches and acknowledges them once committed. Retries a batch that failed to
/// store (a full disk, a locked database) rather than dropping it.
fn writer(
    mut ingest: Ingest,
    rx: mpsc::Receiver<Publish>,
    client: AsyncClient,
    rt: tokio::runtime::Handle,
) {
    let mut batch: Vec<Publish> = Vec::with_capacity(MAX_BATCH);
    let mut next_prune = Instant::now();
    loop {
        if Instant::now() >= next_prune {
            ingest.prune();
            next_prune = Instant::now() + PRUNE_EVERY;
        }
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(p) => batch.push(p),
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
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
            log::error!("storing {} messages: {e}; retrying", msgs.len());
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        drop(msgs);
        for p in batch.drain(..) {
            if p.qos != QoS::AtMostOnce {
                // Fails only when the event loop is gone (shutdown): the broker redelivers.
                let _ = rt.block_on(client.ack(&p));
            }
        }
    }
}

/// How often old rows are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
