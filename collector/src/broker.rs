//! The in-process MQTT broker (`rumqttd`), so one machine needs nothing else.
//!
//! The collector's own subscriber connects to it over loopback like any other client, so the
//! ingest path is the same with an embedded or an external broker.

use std::{
    collections::HashMap,
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("embedded broker cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("embedded broker did not start listening on {0}")]
    NotListening(SocketAddr),
}

/// Starts the broker on `listen` (MQTT 3.1.1) and returns once it accepts connections. With
/// `auth`, every client must log in with that username and password.
pub fn start(listen: SocketAddr, auth: Option<(String, String)>) -> Result<(), BrokerError> {
    // rumqttd only logs a bind failure from its own thread; find out here, with a reason.
    drop(TcpListener::bind(listen).map_err(|e| BrokerError::Listen(listen, e))?);
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: crate::mqtt::MAX_PACKET,
        max_inflight_count: 100,
        auth: auth.map(|(u, p)| HashMap::from([(u, p)])),
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = rumqttd::Config {
        router: rumqttd::RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 200,
            // The router keeps recent messages per topic filter in memory segments: bound them.
            max_segment_size: 16 << 20,
            max_segment_count: 4,
            ..Default::default()
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    };
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                log::error!("embedded broker stopped: {e}");
            }
        })
        .map_err(|e| BrokerError::Listen(listen, e))?;
    let target = SocketAddr::new(crate::config::connect_ip(listen), listen.port());
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err(BrokerError::NotListening(listen));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
