//! A QoS 1 publisher: every message acknowledged by the broker before it returns.

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use shared::wire::{self, Message, Summary};
use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

/// One message to publish.
#[derive(Clone, Debug)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Msg {
    pub fn summary(s: &Summary) -> Msg {
        Msg {
            topic: format!("edgeflow/v1/{}/{}/flows", s.site, s.device),
            payload: wire::encode_vec(&Message::V3(s.clone())),
            retain: false,
        }
    }

    pub fn raw(topic: &str, payload: &[u8]) -> Msg {
        Msg {
            topic: topic.into(),
            payload: payload.to_vec(),
            retain: false,
        }
    }
}

/// Publishes every message with QoS 1 and returns once the broker acknowledged them all.
pub fn publish_all(broker_port: u16, msgs: &[Msg]) {
    let mut o = MqttOptions::new(crate::unique("efpub"), "127.0.0.1", broker_port);
    o.set_max_packet_size(4 << 20, 4 << 20)
        .set_keep_alive(Duration::from_secs(30));
    let (client, mut conn) = Client::new(o, 64);
    let (tx, rx) = mpsc::channel();
    let poller = std::thread::spawn(move || {
        for ev in conn.iter() {
            match ev {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("publisher: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    });
    for m in msgs {
        client
            .publish(
                m.topic.clone(),
                QoS::AtLeastOnce,
                m.retain,
                m.payload.clone(),
            )
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..msgs.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        rx.recv_timeout(left)
            .unwrap_or_else(|_| panic!("only {i} of {} publishes acknowledged", msgs.len()));
    }
    let _ = client.disconnect();
    let _ = poller.join();
}

/// Publishes with QoS 0 and returns once the client has sent everything.
pub fn publish_qos0(port: u16, msgs: &[Msg]) {
    let mut o = MqttOptions::new(crate::unique("efq0"), "127.0.0.1", port);
    o.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut conn) = Client::new(o, 64);
    for m in msgs {
        client
            .publish(m.topic.clone(), QoS::AtMostOnce, false, m.payload.clone())
            .unwrap();
    }
    client.disconnect().unwrap();
    for ev in conn.iter() {
        match ev {
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
            Ok(_) => {}
        }
    }
}
