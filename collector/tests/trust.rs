//! The broker side as shipped (scripts/provision.sh + configs/mosquitto.conf + the ACL) on a
//! real Mosquitto over TLS: device A's credentials cannot publish as device B (nothing
//! stored, the attempt in the broker's log), cannot read other devices' messages by
//! subscribing to `#`, cannot take the collector's session; wrong or missing credentials
//! are refused.

use rumqttc::{Client, ConnectionError, Event, MqttOptions, Packet, QoS};
use shared::{
    broker::Broker,
    wire::{self, Message},
};
use std::{
    path::Path,
    sync::mpsc,
    time::{Duration, Instant},
};
use testkit::mosquitto::Mosquitto;
use testkit::{collector::*, provision::*, summary::*};

/// Client options for `user` with `password`, over TLS to the provisioned broker.
fn login(broker: &Mosquitto, user: Option<&str>, password: Option<&str>, id: &str) -> MqttOptions {
    let b = Broker::new(
        format!("mqtts://127.0.0.1:{}", broker.port)
            .parse()
            .unwrap(),
        user.map(Into::into),
        password.map(Into::into),
        Some(broker.dir().join("ca.crt")),
        None,
        None,
    )
    .unwrap();
    let mut o = b.options(id).unwrap();
    o.set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 20, 1 << 20);
    o
}

fn password(dir: &Path, site: &str, device: &str) -> String {
    toml_value(
        &dir.join(format!("devices/{site}/{device}/edgeflow.toml")),
        "password",
    )
}

/// What one connection saw: its CONNACK's outcome and the publishes it received.
enum Seen {
    Connected,
    Refused(String),
    Message(String),
    Acked,
}

/// Connects and forwards what happens on a thread; the client publishes and subscribes.
fn connect(o: MqttOptions) -> (Client, mpsc::Receiver<Seen>) {
    let (client, mut conn) = Client::new(o, 64);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for ev in conn.iter() {
            let seen = match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => Seen::Connected,
                Ok(Event::Incoming(Packet::Publish(p))) => Seen::Message(p.topic),
                Ok(Event::Incoming(Packet::PubAck(_))) => Seen::Acked,
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                Ok(_) => continue,
                Err(ConnectionError::ConnectionRefused(code)) => {
                    let _ = tx.send(Seen::Refused(format!("{code:?}")));
                    return;
                }
                Err(e) => Seen::Refused(e.to_string()),
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    (client, rx)
}

fn first(rx: &mpsc::Receiver<Seen>) -> Seen {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("an answer from the broker")
}

/// Waits for `n` PUBACKs; returns the topics of the messages received meanwhile.
fn wait_acked(rx: &mpsc::Receiver<Seen>, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut acks, mut topics) = (0, Vec::new());
    while acks < n {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Seen::Acked) => acks += 1,
            Ok(Seen::Message(t)) => topics.push(t),
            Ok(_) => {}
            Err(_) => panic!("{acks} of {n} publishes acknowledged"),
        }
    }
    topics
}

#[test]
fn a_device_speaks_only_for_itself() {
    let broker = provisioned_broker(&[("lab", "a"), ("lab", "b")]);
    let dir = broker.dir().to_path_buf();
    let c = secured_collector(&broker);
    c.wait_subscribed();
    let (pa, pb) = (password(&dir, "lab", "a"), password(&dir, "lab", "b"));
    let base = now_ms() - 600_000;

    // Wrong password, no password, no TLS: refused.
    for (user, pass) in [(Some("lab/b"), Some(pa.as_str())), (None, None)] {
        let (_c, rx) = connect(login(&broker, user, pass, "x"));
        match first(&rx) {
            Seen::Refused(why) => eprintln!("{user:?} refused: {why}"),
            _ => panic!("{user:?} logged in with a wrong or no password"),
        }
    }
    let mut plain = MqttOptions::new("plain", "127.0.0.1", broker.port);
    plain.set_credentials("lab/a", pa.clone());
    let (_c, rx) = connect(plain);
    assert!(matches!(first(&rx), Seen::Refused(_)), "plaintext accepted");

    // A reads with `#` while B publishes its own summary and A tries B's topic.
    let (a, arx) = connect(login(&broker, Some("lab/a"), Some(&pa), "lab/a"));
    assert!(matches!(first(&arx), Seen::Connected));
    a.subscribe("#", QoS::AtLeastOnce).unwrap();
    let (b, brx) = connect(login(&broker, Some("lab/b"), Some(&pb), "lab/b"));
    assert!(matches!(first(&brx), Seen::Connected));
    std::thread::sleep(Duration::from_millis(300));

    let own_b = summary("lab", "b", 2, 0, base, &[], (10, 1_000));
    b.publish(
        "edgeflow/v1/lab/b/flows",
        QoS::AtLeastOnce,
        false,
        wire::encode_vec(&Message::V3(own_b)),
    )
    .unwrap();
    wait_acked(&brx, 1);
    // A forges B: a valid summary on B's topic, B's presence, and a summary on its own topic
    // that claims to be B (the collector's topic check).
    let forged = summary("lab", "b", 666, 1, base, &[], (1, 999_999));
    let forged = wire::encode_vec(&Message::V3(forged));
    a.publish(
        "edgeflow/v1/lab/b/flows",
        QoS::AtLeastOnce,
        false,
        forged.clone(),
    )
    .unwrap();
    a.publish(
        "edgeflow/v1/lab/b/status",
        QoS::AtLeastOnce,
        true,
        "offline",
    )
    .unwrap();
    a.publish("edgeflow/v1/lab/a/flows", QoS::AtLeastOnce, false, forged)
        .unwrap();
    let own_a = summary("lab", "a", 1, 0, base, &[], (5, 500));
    a.publish(
        "edgeflow/v1/lab/a/flows",
        QoS::AtLeastOnce,
        false,
        wire::encode_vec(&Message::V3(own_a)),
    )
    .unwrap();
    let mut read = wait_acked(&arx, 4);

    // The collector got A's own summary and B's, and a topic mismatch; nothing forged.
    let ingest = c.wait_for("/api/ingest", Duration::from_secs(10), |v| {
        v["summaries"] == 2 && v["rejected"]["topic_mismatch"] == 1
    });
    std::thread::sleep(Duration::from_millis(500));
    let devices = c.json("/api/devices");
    let list = devices["devices"].as_array().unwrap();
    let got: Vec<_> = list
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap(),
                d["totals"]["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [("lab/a", 500), ("lab/b", 1_000)],
        "{devices}\n{ingest}"
    );
    assert!(list[1]["reported"].is_null(), "B's presence was not forged");
    // A saw nothing of B's (nor its own: the ACL gives devices no read).
    read.extend(arx.try_iter().filter_map(|s| match s {
        Seen::Message(t) => Some(t),
        _ => None,
    }));
    assert!(read.is_empty(), "a device read {read:?} with #");
    let log = broker.log();
    assert!(
        log.contains("Denied PUBLISH from lab/a") && log.contains("'edgeflow/v1/lab/b/flows'"),
        "the attempt is in the broker's log:\n{log}"
    );

    // A asks for the collector's client id: the broker gives it its own (its username),
    // so the collector's session stays where it is and it keeps ingesting.
    a.disconnect().unwrap();
    let (_thief, trx) = connect(login(
        &broker,
        Some("lab/a"),
        Some(&pa),
        "edgeflow-collector",
    ));
    assert!(matches!(first(&trx), Seen::Connected));
    std::thread::sleep(Duration::from_millis(500));
    let log = broker.log();
    assert!(
        !log.contains("Client edgeflow-collector already connected"),
        "the collector was knocked off:\n{log}"
    );
    let more = summary("lab", "b", 2, 1, base + 10_000, &[], (10, 1_000));
    b.publish(
        "edgeflow/v1/lab/b/flows",
        QoS::AtLeastOnce,
        false,
        wire::encode_vec(&Message::V3(more)),
    )
    .unwrap();
    wait_acked(&brx, 1);
    c.wait_for("/api/ingest", Duration::from_secs(10), |v| {
        v["summaries"] == 3 && v["broker_connected"] == true
    });

    // A device with a client certificate (CN = lab/c) instead of a password: the same rule.
    provision(&["device", dir.to_str().unwrap(), "lab", "c", "--cert"]);
    let conf = dir.join("devices/lab/c/edgeflow.toml");
    let url = toml_value(&conf, "url");
    assert!(
        !url.ends_with(&format!(":{}", broker.port)),
        "its own listener"
    );
    let b = Broker::new(
        url.parse().unwrap(),
        None,
        None,
        Some(toml_value(&conf, "ca_file").into()),
        Some(toml_value(&conf, "cert_file").into()),
        Some(toml_value(&conf, "key_file").into()),
    )
    .unwrap();
    let (cc, crx) = connect(b.options("anything").unwrap());
    assert!(matches!(first(&crx), Seen::Connected));
    let own_c = summary("lab", "c", 3, 0, base, &[], (7, 700));
    let as_b = summary("lab", "b", 2, 9, base, &[], (7, 77_777));
    cc.publish(
        "edgeflow/v1/lab/b/flows",
        QoS::AtLeastOnce,
        false,
        wire::encode_vec(&Message::V3(as_b)),
    )
    .unwrap();
    cc.publish(
        "edgeflow/v1/lab/c/flows",
        QoS::AtLeastOnce,
        false,
        wire::encode_vec(&Message::V3(own_c)),
    )
    .unwrap();
    wait_acked(&crx, 2);
    c.wait_for("/api/ingest", Duration::from_secs(10), |v| {
        v["summaries"] == 4
    });
    std::thread::sleep(Duration::from_millis(300));
    let devices = c.json("/api/devices");
    let got: Vec<_> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap(),
                d["totals"]["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [("lab/a", 500), ("lab/b", 2_000), ("lab/c", 700)]);
    assert!(broker.log().contains("Denied PUBLISH from lab/c"));
    // Without a certificate that listener refuses.
    let no_cert = Broker::new(
        url.parse().unwrap(),
        None,
        None,
        Some(toml_value(&conf, "ca_file").into()),
        None,
        None,
    )
    .unwrap();
    let (_n, nrx) = connect(no_cert.options("x").unwrap());
    assert!(
        matches!(first(&nrx), Seen::Refused(_)),
        "no certificate, no login"
    );
}
