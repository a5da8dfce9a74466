//! Publishing the spool over MQTT (QoS 1) with `rumqttc`, so that a summary leaves the spool
//! only once the broker's PUBACK for it came back.
//!
//! rumqttc's blocking `Connection` runs on a dedicated thread ("mqtt") that does nothing but
//! poll it; the smol side never touches the event loop. Both sides share one small state
//! behind a mutex (the spool and what is in flight) and submit with the non-blocking
//! `try_publish` into a request channel sized above the in-flight window, so neither side can
//! block the poller.
//!
//! rumqttc does not tie a PUBACK to a publish: it reports `Outgoing::Publish(pkid)` when it
//! writes a publish, in the order the requests were submitted, and `Incoming::PubAck(pkid)`
//! when the ack arrives. We keep the submitted tags in a queue, pair each
//! `Outgoing::Publish(pkid)` with the next tag, and each PUBACK with its tag by pkid. Two
//! things keep that pairing exact:
//! - The session is clean: on a reconnect rumqttc forgets what it had not sent (it clears its
//!   pending list when the broker has no session), and we resend from the spool ourselves.
//! - Submitting happens only while connected, under the lock; when the poller sees an error
//!   it takes the lock, marks the link down, and empties rumqttc's request channel and pending
//!   list, so nothing submitted just before the error can surface after the next CONNACK.

use crate::{
    cmd::config::Config,
    link::spool::{self, Spool},
    UsageError,
};
use rumqttc::{Client, ConnectionError, Event, Incoming, LastWill, MqttOptions, Outgoing, QoS};
use shared::{
    broker::Broker,
    identity::{OFFLINE, ONLINE},
};
use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::JoinHandle,
    time::Duration,
};

/// Summaries in flight at once (awaiting their PUBACK).
pub const WINDOW: usize = 16;
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The spool as the health of a window reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Summaries waiting.
    pub depth: usize,
    /// Summaries dropped since start (spool full, or unreadable on a failing disk).
    pub dropped: u64,
    pub mode: spool::Mode,
    /// Spool file writes that failed since start.
    pub write_errors: u64,
}

/// What a submitted publish was, to act on its PUBACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tag {
    Status,
    Summary(spool::Id),
}

/// What the link tells the smol side (wake-ups; the state itself is in [`Publisher`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    Connected,
    Disconnected(String),
    /// A summary was acknowledged and left the spool.
    Acked,
}

struct State {
    spool: Spool,
    connected: bool,
    /// Submitted this connection, not yet written by rumqttc (oldest first).
    submitted: VecDeque<Tag>,
    /// Written, waiting for the PUBACK, by packet id.
    sent: HashMap<u16, Tag>,
    /// The newest spool id submitted on this connection.
    cursor: Option<spool::Id>,
    /// Summaries submitted and not yet acknowledged on this connection.
    inflight: usize,
    /// The retained status to publish when connected ("online", or "offline" at shutdown).
    status: Option<&'static str>,
    stopping: bool,
}

struct Topics {
    flows: String,
    status: String,
}

struct Inner {
    state: Mutex<State>,
    client: Client,
    topics: Topics,
    events: smol::channel::Sender<LinkEvent>,
}

/// The MQTT side of the agent: owns the spool and the thread that polls the connection.
pub struct Publisher {
    inner: Arc<Inner>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Wake-ups for the smol side: connection changes and acknowledgements.
    pub events: smol::channel::Receiver<LinkEvent>,
}

/// rumqttc options from the configuration (TLS files are read here). The client id is
/// `site:device` ([`DeviceId::client_id`](shared::identity::DeviceId::client_id)): unambiguous,
/// and free of `/`, which the embedded broker (rumqttd) refuses in a client id; Mosquitto as
/// shipped replaces it with the username (`site/device`, `use_username_as_clientid`).
pub fn options(cfg: &Config, broker: &Broker) -> Result<MqttOptions, UsageError> {
    let mut o = broker
        .options(&cfg.id.client_id())
        .map_err(|e| UsageError::Invalid(format!("mqtt: {e}")))?;
    o.set_keep_alive(cfg.keep_alive)
        .set_clean_session(true)
        .set_inflight((WINDOW as u16) * 2)
        // A summary up to max_message_bytes plus the topic and MQTT header.
        .set_max_packet_size(64 * 1024, cfg.max_message_bytes + 1024)
        .set_last_will(LastWill::new(
            cfg.id.status_topic(),
            OFFLINE,
            QoS::AtLeastOnce,
            true,
        ));
    Ok(o)
}

impl Publisher {
    /// Starts the link thread with `opts` (from [`options`]); it connects (and reconnects,
    /// with backoff) on its own. Fails only if the thread cannot be started: a runtime
    /// failure, not the user's to fix.
    pub fn start(cfg: &Config, opts: MqttOptions, spool: Spool) -> std::io::Result<Publisher> {
        let (client, mut connection) = Client::new(opts, WINDOW * 2 + 8);
        let (tx, rx) = smol::channel::bounded(64);
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                spool,
                connected: false,
                submitted: VecDeque::new(),
                sent: HashMap::new(),
                cursor: None,
                inflight: 0,
                status: Some(ONLINE),
                stopping: false,
            }),
            client,
            topics: Topics {
                flows: cfg.id.flows_topic(),
                status: cfg.id.status_topic(),
            },
            events: tx,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let inner = inner.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("mqtt".into())
                .spawn(move || poll_loop(&inner, &mut connection, &stop))?
        };
        Ok(Publisher {
            inner,
            stop,
            thread: Some(thread),
            events: rx,
        })
    }

    /// Queues an encoded summary (part) and sends it if the link is up. Returns how many
    /// older summaries the spool dropped to make room.
    pub fn push(&self, payload: &[u8]) -> std::io::Result<u64> {
        let mut st = self.inner.lock();
        let before = st.spool.dropped();
        st.spool.push(payload)?;
        let dropped = st.spool.dropped() - before;
        self.inner.pump(&mut st);
        Ok(dropped)
    }

    /// The spool now: what waits, what was dropped, where it is kept.
    pub fn spool_stats(&self) -> SpoolStats {
        let st = self.inner.lock();
        SpoolStats {
            depth: st.spool.depth(),
            dropped: st.spool.dropped(),
            mode: st.spool.mode(),
            write_errors: st.spool.write_errors(),
        }
    }

    pub fn is_connected(&self) -> bool {
        self.inner.lock().connected
    }

    pub fn spool_is_file(&self) -> bool {
        self.inner.lock().spool.is_file()
    }

    /// Publishes the retained "offline" status (if connected), disconnects and stops the
    /// thread. Returns the summaries still waiting (kept in the spool file, if any).
    pub async fn shutdown(mut self, grace: Duration) -> usize {
        let deadline = std::time::Instant::now() + grace;
        {
            let mut st = self.inner.lock();
            st.stopping = true;
            st.status = Some(OFFLINE);
            self.inner.pump(&mut st);
        }
        // Wait (bounded) for the status to be written and acknowledged.
        loop {
            let done = {
                let st = self.inner.lock();
                !st.connected || (st.status.is_none() && st.inflight == 0 && st.sent.is_empty())
            };
            if done || std::time::Instant::now() >= deadline {
                break;
            }
            let _ = smol::future::or(
                async {
                    let _ = self.events.recv().await;
                },
                async {
                    smol::Timer::after(Duration::from_millis(50)).await;
                },
            )
            .await;
        }
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.inner.client.try_disconnect();
        let waiting = self.inner.lock().spool.depth();
        if let Some(t) = self.thread.take() {
            // The poller ends after the disconnect, or after its current connect attempt.
            // Bounded by a helper thread; without one (out of tasks) it is not waited for.
            let (tx, rx) = std::sync::mpsc::channel();
            let waiter = std::thread::Builder::new().spawn(move || {
                let _ = t.join();
                let _ = tx.send(());
            });
            if waiter.is_ok() {
                let _ = rx.recv_timeout(Duration::from_secs(3));
            }
        }
        waiting
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Submits what is due while connected: the status first, then spooled summaries in order,
    /// up to [`WINDOW`] in flight. Never blocks (`try_publish`).
    fn pump(&self, st: &mut State) {
        if !st.connected {
            return;
        }
        if let Some(s) = st.status {
            match self
                .client
                .try_publish(&self.topics.status, QoS::AtLeastOnce, true, s.as_bytes())
            {
                Ok(()) => {
                    st.submitted.push_back(Tag::Status);
                    st.status = None;
                }
                Err(e) => log::warn!("mqtt: queueing status: {e}"),
            }
        }
        if st.stopping {
            return;
        }
        while st.inflight < WINDOW {
            let Some(id) = st.spool.next_after(st.cursor) else {
                break;
            };
            let payload = match st.spool.get(id) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    log::error!("spool: reading a summary: {e}");
                    break;
                }
            };
            match self
                .client
                .try_publish(&self.topics.flows, QoS::AtLeastOnce, false, payload)
            {
                Ok(()) => {
                    st.submitted.push_back(Tag::Summary(id));
                    st.cursor = Some(id);
                    st.inflight += 1;
                }
                Err(e) => {
                    log::warn!("mqtt: queueing a summary: {e}");
                    break;
                }
            }
        }
    }

    fn notify(&self, e: LinkEvent) {
        // A wake-up, not data: if the smol side is behind, it will look at the state anyway.
        let _ = self.events.try_send(e);
    }
}

fn poll_loop(inner: &Inner, connection: &mut rumqttc::Connection, stop: &AtomicBool) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let ev = match connection.recv() {
            Ok(ev) => ev,
            // Every client handle is gone.
            Err(_) => return,
        };
        match ev {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                backoff = BACKOFF_MIN;
                log::info!("mqtt: connected ({:?})", ack.code);
                let mut st = inner.lock();
                st.connected = true;
                st.cursor = None;
                st.inflight = 0;
                st.submitted.clear();
                st.sent.clear();
                if !st.stopping {
                    st.status = Some(ONLINE);
                }
                inner.pump(&mut st);
                drop(st);
                inner.notify(LinkEvent::Connected);
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let mut st = inner.lock();
                match st.submitted.pop_front() {
                    Some(tag) => {
                        st.sent.insert(pkid, tag);
                    }
                    None => log::warn!("mqtt: publish {pkid} that we did not submit"),
                }
            }
            Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                let mut st = inner.lock();
                let acked = match st.sent.remove(&ack.pkid) {
                    Some(Tag::Summary(id)) => {
                        st.inflight = st.inflight.saturating_sub(1);
                        if let Err(e) = st.spool.ack(id) {
                            log::error!("spool: removing an acknowledged summary: {e}");
                        }
                        true
                    }
                    Some(Tag::Status) | None => false,
                };
                inner.pump(&mut st);
                drop(st);
                if acked {
                    inner.notify(LinkEvent::Acked);
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) if stop.load(Ordering::SeqCst) => return,
            Ok(_) => {}
            Err(e) => {
                let was_up = {
                    let mut st = inner.lock();
                    let was = st.connected;
                    st.connected = false;
                    // Nothing submitted before this point may be sent after the next CONNACK:
                    // the spool resends it, in order.
                    connection.eventloop.clean();
                    connection.eventloop.pending.clear();
                    st.submitted.clear();
                    st.sent.clear();
                    st.inflight = 0;
                    st.cursor = None;
                    was
                };
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let why = describe(&e);
                if was_up {
                    log::warn!("mqtt: connection lost: {why}");
                } else if backoff == BACKOFF_MIN {
                    // The first failed attempt is worth a line; the retries are not.
                    log::warn!("mqtt: cannot connect (retrying with backoff): {why}");
                } else {
                    log::debug!("mqtt: connecting: {why}");
                }
                inner.notify(LinkEvent::Disconnected(why));
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

fn describe(e: &ConnectionError) -> String {
    e.to_string()
}
