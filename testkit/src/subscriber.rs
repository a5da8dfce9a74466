//! A test MQTT subscriber (rumqttc, QoS 1) that collects every message it receives, in
//! arrival order, and re-subscribes by itself after the broker comes back.

use rumqttc::{Client, Event, Incoming, MqttOptions, QoS};
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// One received message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

pub struct Subscriber {
    msgs: Arc<Mutex<Vec<Received>>>,
    subacks: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    client: Client,
    thread: Option<JoinHandle<()>>,
}

impl Subscriber {
    /// Connects to 127.0.0.1:`port`, subscribes to `filter` with QoS 1 and waits (bounded)
    /// until the broker confirmed the subscription.
    pub fn start(port: u16, filter: &str) -> Subscriber {
        Subscriber::start_as(port, filter, None)
    }

    /// [`Subscriber::start`] with a username and password.
    pub fn start_as(port: u16, filter: &str, login: Option<(&str, &str)>) -> Subscriber {
        let id = crate::unique("efsub");
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(1 << 20, 1 << 20);
        if let Some((user, pass)) = login {
            o.set_credentials(user, pass);
        }
        let (client, mut conn) = Client::new(o, 16);
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let subacks = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (client, msgs, subacks, stop) =
                (client.clone(), msgs.clone(), subacks.clone(), stop.clone());
            let filter = filter.to_string();
            std::thread::spawn(move || {
                for ev in conn.iter() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    match ev {
                        Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                            // A clean session: subscribe again after every (re)connect.
                            let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                        }
                        Ok(Event::Incoming(Incoming::SubAck(_))) => {
                            subacks.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(Event::Incoming(Incoming::Publish(p))) => {
                            msgs.lock().unwrap().push(Received {
                                topic: p.topic.clone(),
                                payload: p.payload.to_vec(),
                                retain: p.retain,
                            });
                        }
                        Ok(_) => {}
                        // Broker away: retry soon (bounded by the test's own deadlines).
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        let s = Subscriber {
            msgs,
            subacks,
            stop,
            client,
            thread: Some(thread),
        };
        s.wait_subscribed(0);
        s
    }

    /// Subscriptions confirmed so far (one per connection).
    pub fn subacks(&self) -> u32 {
        self.subacks.load(Ordering::SeqCst)
    }

    /// Waits (at most 20 s) until more than `seen` subscriptions were confirmed.
    pub fn wait_subscribed(&self, seen: u32) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.subacks() <= seen {
            assert!(Instant::now() < deadline, "subscription not confirmed");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Everything received so far, in arrival order.
    pub fn messages(&self) -> Vec<Received> {
        self.msgs.lock().unwrap().clone()
    }

    /// The flow summaries received (topics ending in `/flows`), decoded, each (device, boot,
    /// seq, part) once, in first-arrival order. Panics on one that does not decode.
    pub fn summaries(&self) -> Vec<shared::wire::Summary> {
        let mut seen = std::collections::HashSet::new();
        self.messages()
            .into_iter()
            .filter(|m| m.topic.ends_with("/flows"))
            .map(|m| shared::wire::decode_summary(&m.payload).expect("a valid summary"))
            .filter(|s| seen.insert((s.device.clone(), s.boot_id, s.seq, s.part)))
            .collect()
    }

    /// Waits until nothing new arrived for `quiet`, or `max` passed.
    pub fn wait_quiet(&self, quiet: Duration, max: Duration) {
        let end = Instant::now() + max;
        let mut n = self.messages().len();
        let mut since = Instant::now();
        while Instant::now() < end && since.elapsed() < quiet {
            std::thread::sleep(Duration::from_millis(20));
            let m = self.messages().len();
            if m != n {
                n = m;
                since = Instant::now();
            }
        }
    }

    /// Waits (at most `max`) until `done` holds for the messages received.
    pub fn wait_for(&self, max: Duration, done: impl Fn(&[Received]) -> bool) -> bool {
        let end = Instant::now() + max;
        loop {
            if done(&self.messages()) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.client.try_disconnect();
        // The thread ends at its next event; do not wait on a broker that may be gone.
        drop(self.thread.take());
    }
}
