//! Command line and configuration file. Flags override the file; the file overrides defaults.

use crate::{store::Db, UsageError};
use argh::FromArgs;
use serde::Deserialize;
use shared::{
    broker::{Broker, BrokerUrl},
    ipfix::export as ipfix,
};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";
pub const DEFAULT_BROKER: &str = "mqtt://127.0.0.1:1883";
pub const DEFAULT_CLIENT_ID: &str = "edgeflow-collector";
pub const DEFAULT_DB: &str = "edgeflow.db";
pub const DEFAULT_RETENTION_DAYS: f64 = 7.0;
pub const DEFAULT_QUERY_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_HTTP_READERS: usize = 4;
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 256;
pub const DEFAULT_HTTP_HEADER_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_INGEST_QUEUE_MIB: u64 = 64;
/// Secrets may come from the environment rather than the command line (visible in `ps`).
pub const ENV_TOKEN: &str = "EDGEFLOW_COLLECTOR_TOKEN";
pub const ENV_PASSWORD: &str = "EDGEFLOW_MQTT_PASSWORD";

/// edgeflow-collector: receives edgeflow summaries over MQTT, stores them in SQLite and serves
/// a dashboard, a JSON API and Prometheus metrics.
#[derive(FromArgs, Default, Debug)]
pub struct Cli {
    /// configuration file (TOML, same keys as the flags with underscores); flags override it
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// where to store: a SQLite file (default edgeflow.db) or a PostgreSQL URL
    /// (postgres://USER[:PASS]@HOST[:PORT]/DB, or postgres://USER@/DB?host=/socket/dir)
    #[argh(option)]
    pub db: Option<String>,
    /// days of data to keep (default 7; fractions allowed)
    #[argh(option)]
    pub retention_days: Option<f64>,
    /// HTTP listen address (default 127.0.0.1:8080; port 0 picks a free one)
    #[argh(option)]
    pub http: Option<SocketAddr>,
    /// bearer token the API and /metrics require (or env EDGEFLOW_COLLECTOR_TOKEN)
    #[argh(option)]
    pub token: Option<String>,
    /// longest an API query may run, ms (default 5000); a longer one is stopped and answers 400
    #[argh(option)]
    pub query_timeout_ms: Option<u64>,
    /// database connections answering API queries at once (default 4); more requests wait
    #[argh(option)]
    pub http_readers: Option<usize>,
    /// most HTTP connections open at once (default 256); further ones wait to be accepted
    #[argh(option)]
    pub http_max_connections: Option<usize>,
    /// time a client has to send a request's headers (or to take any of an answer), ms
    /// (default 10000), then it is cut
    #[argh(option)]
    pub http_header_timeout_ms: Option<u64>,
    /// a host name the collector is reached by (besides IP addresses and localhost); repeatable
    #[argh(option)]
    pub http_host: Vec<String>,
    /// memory for received messages not yet stored, MiB (default 64); when it is full the
    /// collector stops reading from the broker until the store catches up
    #[argh(option)]
    pub ingest_queue_mib: Option<u64>,
    /// external broker: mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (default mqtt://127.0.0.1:1883)
    #[argh(option)]
    pub broker: Option<String>,
    /// run an MQTT broker inside the collector, listening on ADDR (e.g. 127.0.0.1:1883)
    #[argh(option)]
    pub embedded_broker: Option<SocketAddr>,
    /// MQTT client id; the broker keeps this id's session across restarts (default edgeflow-collector)
    #[argh(option)]
    pub client_id: Option<String>,
    /// share the devices' summaries with the other collectors of group NAME (an MQTT shared
    /// subscription: each summary goes to one of them; use a PostgreSQL --db they all reach)
    #[argh(option)]
    pub share_group: Option<String>,
    /// MQTT username (the embedded broker then requires it from every client)
    #[argh(option)]
    pub username: Option<String>,
    /// MQTT password (or env EDGEFLOW_MQTT_PASSWORD)
    #[argh(option)]
    pub password: Option<String>,
    /// CA certificate (PEM) that signed the broker's certificate (mqtts://; default: system roots)
    #[argh(option)]
    pub ca: Option<PathBuf>,
    /// client certificate (PEM) for mqtts:// brokers that ask for one
    #[argh(option)]
    pub client_cert: Option<PathBuf>,
    /// the client certificate's private key (PEM)
    #[argh(option)]
    pub client_key: Option<PathBuf>,
    /// re-export every stored window's flows as IPFIX to udp://HOST[:PORT] or
    /// tcp://HOST[:PORT], one observation domain per device (docs/ipfix.md)
    #[argh(option)]
    pub ipfix_export: Option<String>,
    /// IPFIX: two uniflow records per flow instead of one RFC 5103 biflow record
    #[argh(switch)]
    pub ipfix_uniflow: bool,
    /// IPFIX: path MTU towards the collector (default 1400)
    #[argh(option)]
    pub ipfix_mtu: Option<usize>,
    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
}

/// The configuration file: the flags' names, all optional.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct File {
    db: Option<String>,
    retention_days: Option<f64>,
    http: Option<SocketAddr>,
    token: Option<String>,
    query_timeout_ms: Option<u64>,
    http_readers: Option<usize>,
    http_max_connections: Option<usize>,
    http_header_timeout_ms: Option<u64>,
    http_host: Option<Vec<String>>,
    ingest_queue_mib: Option<u64>,
    broker: Option<String>,
    embedded_broker: Option<SocketAddr>,
    client_id: Option<String>,
    share_group: Option<String>,
    username: Option<String>,
    password: Option<String>,
    ca: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    ipfix_export: Option<String>,
    ipfix_uniflow: Option<bool>,
    ipfix_mtu: Option<usize>,
}

/// How the subscriber reaches its broker.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub broker: Broker,
    pub client_id: String,
    /// Shared-subscription group for the flows topics (`$share/GROUP/...`), if any.
    pub share_group: Option<String>,
}

/// The collector's own resource limits (HTTP, queries, ingest).
#[derive(Debug, Clone)]
pub struct Limits {
    pub query_timeout: Duration,
    pub http_readers: usize,
    pub http_max_connections: usize,
    pub http_header_timeout: Duration,
    /// Host names accepted in the `Host` header besides IP addresses and `localhost`.
    pub http_hosts: Vec<String>,
    pub ingest_queue_bytes: usize,
}

impl Limits {
    fn resolve(cli: &Cli, file: &File) -> Result<Limits, UsageError> {
        fn within<T: PartialOrd + Copy + std::fmt::Display>(
            name: &str,
            v: Option<T>,
            default: T,
            lo: T,
            hi: T,
        ) -> Result<T, UsageError> {
            let v = v.unwrap_or(default);
            if v < lo || v > hi {
                return Err(UsageError(format!("{name} {v} must be {lo} to {hi}")));
            }
            Ok(v)
        }
        let mut hosts = cli.http_host.clone();
        if hosts.is_empty() {
            hosts = file.http_host.clone().unwrap_or_default();
        }
        for h in &mut hosts {
            *h = h.trim().trim_end_matches('.').to_ascii_lowercase();
            if h.is_empty() || h.contains([':', '/', ' ']) {
                return Err(UsageError(format!(
                    "http_host {h:?}: a host name without port"
                )));
            }
        }
        Ok(Limits {
            query_timeout: Duration::from_millis(within(
                "query_timeout_ms",
                cli.query_timeout_ms.or(file.query_timeout_ms),
                DEFAULT_QUERY_TIMEOUT_MS,
                10,
                3_600_000,
            )?),
            http_readers: within(
                "http_readers",
                cli.http_readers.or(file.http_readers),
                DEFAULT_HTTP_READERS,
                1,
                64,
            )?,
            http_max_connections: within(
                "http_max_connections",
                cli.http_max_connections.or(file.http_max_connections),
                DEFAULT_HTTP_MAX_CONNECTIONS,
                1,
                65_536,
            )?,
            http_header_timeout: Duration::from_millis(within(
                "http_header_timeout_ms",
                cli.http_header_timeout_ms.or(file.http_header_timeout_ms),
                DEFAULT_HTTP_HEADER_TIMEOUT_MS,
                100,
                600_000,
            )?),
            http_hosts: hosts,
            ingest_queue_bytes: within(
                "ingest_queue_mib",
                cli.ingest_queue_mib.or(file.ingest_queue_mib),
                DEFAULT_INGEST_QUEUE_MIB,
                1,
                65_536,
            )? as usize
                * (1 << 20),
        })
    }
}

/// Everything the collector runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub db: Db,
    pub retention: Duration,
    pub http: SocketAddr,
    pub token: Option<String>,
    /// Listen address of the in-process broker, if any; `mqtt` then points at it.
    pub embedded_broker: Option<SocketAddr>,
    pub mqtt: MqttConfig,
    pub limits: Limits,
    /// Where to re-export stored flows as IPFIX, if anywhere.
    pub ipfix: Option<ipfix::Settings>,
}

impl Config {
    /// Resolves flags over the file over defaults; `env` looks up secrets.
    pub fn resolve(cli: Cli, env: impl Fn(&str) -> Option<String>) -> Result<Config, UsageError> {
        let file = match &cli.config {
            Some(p) => read_file(p)?,
            None => File::default(),
        };
        let retention_days = cli
            .retention_days
            .or(file.retention_days)
            .unwrap_or(DEFAULT_RETENTION_DAYS);
        if !(retention_days.is_finite() && retention_days > 0.0 && retention_days < 100_000.0) {
            return Err(UsageError(format!(
                "retention_days {retention_days} must be a positive number of days"
            )));
        }
        let limits = Limits::resolve(&cli, &file)?;
        let embedded_broker = cli.embedded_broker.or(file.embedded_broker);
        let broker = cli.broker.or(file.broker);
        let url: BrokerUrl = match (embedded_broker, &broker) {
            (Some(_), Some(_)) => {
                return Err(UsageError(
                    "--broker and --embedded-broker exclude each other".into(),
                ))
            }
            (Some(addr), None) => BrokerUrl {
                tls: false,
                host: connect_ip(addr).to_string(),
                port: addr.port(),
            },
            (None, Some(url)) => url.parse().map_err(|e| UsageError(format!("{e}")))?,
            (None, None) => DEFAULT_BROKER.parse().expect("valid default"),
        };
        if embedded_broker.is_some_and(|a| a.port() == 0) {
            return Err(UsageError("--embedded-broker needs a port".into()));
        }
        if embedded_broker.is_some_and(|a| !a.ip().is_loopback()) {
            // rumqttd has no per-device ACL or TLS here: anyone who reaches it could speak
            // for any device. Mosquitto with configs/mosquitto.conf is the fleet broker.
            return Err(UsageError(
                "--embedded-broker listens on loopback only (it has no per-device ACL or TLS); \
                 for devices on the network run Mosquitto with configs/mosquitto.conf"
                    .into(),
            ));
        }
        let client_id = cli
            .client_id
            .or(file.client_id)
            .unwrap_or_else(|| DEFAULT_CLIENT_ID.into());
        if let Err(why) = shared::identity::check_client_id(&client_id) {
            return Err(UsageError(format!("client_id {client_id:?} {why}")));
        }
        let share_group = cli.share_group.or(file.share_group);
        if let Some(g) = &share_group {
            // MQTT 5 / Mosquitto: a share name is one topic level without wildcards.
            if g.is_empty() || g.len() > 64 || g.contains(['/', '+', '#', '\0']) {
                return Err(UsageError(format!(
                    "share_group {g:?}: 1 to 64 bytes, no '/', '+' or '#'"
                )));
            }
        }
        let db = match cli.db.or(file.db) {
            Some(s) => Db::parse(&s).map_err(UsageError)?,
            None => Db::Sqlite(PathBuf::from(DEFAULT_DB)),
        };
        let broker = Broker::new(
            url,
            cli.username.or(file.username),
            cli.password.or(file.password).or_else(|| env(ENV_PASSWORD)),
            cli.ca.or(file.ca),
            cli.client_cert.or(file.client_cert),
            cli.client_key.or(file.client_key),
        )
        .map_err(|e| UsageError(e.0))?;
        let ipfix = match cli.ipfix_export.or(file.ipfix_export) {
            None => None,
            Some(url) => {
                let mut s = ipfix::Settings::new(
                    url.parse()
                        .map_err(|e| UsageError(format!("--ipfix-export: {e}")))?,
                );
                if cli.ipfix_uniflow || file.ipfix_uniflow == Some(true) {
                    s.mode = shared::ipfix::Mode::Uniflow;
                }
                if let Some(m) = cli.ipfix_mtu.or(file.ipfix_mtu) {
                    s.mtu = m;
                }
                s.check()
                    .map_err(|e| UsageError(format!("--ipfix-export: {e}")))?;
                Some(s)
            }
        };
        let token = cli
            .token
            .or(file.token)
            .or_else(|| env(ENV_TOKEN))
            .filter(|t| !t.is_empty());
        Ok(Config {
            db,
            retention: Duration::from_secs_f64(retention_days * 86_400.0),
            http: cli
                .http
                .or(file.http)
                .unwrap_or_else(|| DEFAULT_HTTP.parse().expect("valid default")),
            token,
            embedded_broker,
            mqtt: MqttConfig {
                broker,
                client_id,
                share_group,
            },
            limits,
            ipfix,
        })
    }
}

/// Where to connect to reach a listener on `addr` (an unspecified address means loopback).
pub fn connect_ip(addr: SocketAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match addr.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}

fn read_file(path: &Path) -> Result<File, UsageError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| UsageError(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults() {
        let c = Config::resolve(Cli::default(), no_env).unwrap();
        assert_eq!(c.http.to_string(), DEFAULT_HTTP);
        assert_eq!(c.mqtt.broker.url.port, 1883);
        assert_eq!(c.mqtt.client_id, DEFAULT_CLIENT_ID);
        assert_eq!(c.retention, Duration::from_secs(7 * 86_400));
        assert!(c.token.is_none() && c.embedded_broker.is_none());
    }

    #[test]
    fn flags_override_the_file_and_secrets_come_from_env() {
        let dir = std::env::temp_dir().join(format!("efc-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "db = \"/tmp/x.db\"\nretention_days = 2\nhttp = \"127.0.0.1:9000\"\nusername = \"u\"\n",
        )
        .unwrap();
        let cli = Cli {
            config: Some(path.clone()),
            http: Some("127.0.0.1:9001".parse().unwrap()),
            embedded_broker: Some("127.0.0.1:1999".parse().unwrap()),
            ..Cli::default()
        };
        let env = |k: &str| (k == ENV_PASSWORD || k == ENV_TOKEN).then(|| format!("{k}-v"));
        let c = Config::resolve(cli, env).unwrap();
        assert_eq!(c.db, Db::Sqlite(PathBuf::from("/tmp/x.db")));
        assert_eq!(c.retention, Duration::from_secs(2 * 86_400));
        assert_eq!(c.http.port(), 9001);
        assert_eq!(c.mqtt.broker.url.host, "127.0.0.1");
        assert_eq!(c.mqtt.broker.url.port, 1999);
        assert_eq!(
            c.mqtt.broker.password.as_deref(),
            Some("EDGEFLOW_MQTT_PASSWORD-v")
        );
        assert_eq!(c.token.as_deref(), Some("EDGEFLOW_COLLECTOR_TOKEN-v"));
        std::fs::write(&path, "colour = 3\n").unwrap();
        let cli = Cli {
            config: Some(path),
            ..Cli::default()
        };
        assert!(
            Config::resolve(cli, no_env).is_err(),
            "unknown keys are errors"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn limits_from_flags_and_file() {
        let c = Config::resolve(Cli::default(), no_env).unwrap();
        assert_eq!(c.limits.query_timeout, Duration::from_secs(5));
        assert_eq!(c.limits.ingest_queue_bytes, 64 << 20);
        assert!(c.limits.http_hosts.is_empty());
        let dir = std::env::temp_dir().join(format!("efc-lim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "query_timeout_ms = 250\nhttp_readers = 2\nhttp_max_connections = 9\n\
             http_header_timeout_ms = 1500\nhttp_host = [\"Flows.LAN.\"]\ningest_queue_mib = 3\n",
        )
        .unwrap();
        let cli = Cli {
            config: Some(path.clone()),
            http_readers: Some(3),
            ..Cli::default()
        };
        let l = Config::resolve(cli, no_env).unwrap().limits;
        assert_eq!(l.query_timeout, Duration::from_millis(250));
        assert_eq!(l.http_readers, 3, "the flag wins");
        assert_eq!(l.http_max_connections, 9);
        assert_eq!(l.http_header_timeout, Duration::from_millis(1500));
        assert_eq!(l.http_hosts, ["flows.lan"]);
        assert_eq!(l.ingest_queue_bytes, 3 << 20);
        for bad in [
            Cli {
                http_max_connections: Some(0),
                ..Cli::default()
            },
            Cli {
                query_timeout_ms: Some(1),
                ..Cli::default()
            },
            Cli {
                http_host: vec!["flows.lan:8080".into()],
                ..Cli::default()
            },
        ] {
            assert!(Config::resolve(bad, no_env).is_err());
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn broker_urls_follow_the_agents_rules() {
        // One parser (shared::broker::BrokerUrl) for agent and collector: the same URLs in,
        // the same ones out.
        for ok in ["mqtt://h", "mqtts://h:9000/", "mqtt://[fd00::1]:1884"] {
            let cli = Cli {
                broker: Some(ok.into()),
                ..Cli::default()
            };
            assert!(Config::resolve(cli, no_env).is_ok(), "{ok}");
        }
        for bad in [
            "tcp://h",
            "ssl://h",
            "mqtt://h:0",
            "mqtt://",
            "h:1883",
            "mqtt://u@h",
        ] {
            let cli = Cli {
                broker: Some(bad.into()),
                ..Cli::default()
            };
            assert!(Config::resolve(cli, no_env).is_err(), "{bad}");
        }
    }

    #[test]
    fn ipfix_export_settings() {
        assert!(Config::resolve(Cli::default(), no_env)
            .unwrap()
            .ipfix
            .is_none());
        let cli = Cli {
            ipfix_export: Some("udp://[fd00::9]:2055".into()),
            ipfix_uniflow: true,
            ipfix_mtu: Some(9000),
            ..Cli::default()
        };
        let i = Config::resolve(cli, no_env).unwrap().ipfix.unwrap();
        assert_eq!(i.collector.to_string(), "udp://[fd00::9]:2055");
        assert_eq!((i.mode, i.mtu), (shared::ipfix::Mode::Uniflow, 9000));
        for (url, mtu) in [
            ("http://h", None),
            ("udp://h:0", None),
            ("tcp://h", Some(10)),
        ] {
            let cli = Cli {
                ipfix_export: Some(url.into()),
                ipfix_mtu: mtu,
                ..Cli::default()
            };
            assert!(Config::resolve(cli, no_env).is_err(), "{url} {mtu:?}");
        }
    }

    #[test]
    fn usage_errors() {
        let both = Cli {
            broker: Some("mqtt://x".into()),
            embedded_broker: Some("127.0.0.1:1883".parse().unwrap()),
            ..Cli::default()
        };
        assert!(Config::resolve(both, no_env).is_err());
        let bad_days = Cli {
            retention_days: Some(0.0),
            ..Cli::default()
        };
        assert!(Config::resolve(bad_days, no_env).is_err());
        let pw_only = Cli {
            password: Some("p".into()),
            ..Cli::default()
        };
        assert!(Config::resolve(pw_only, no_env).is_err());
        let open = Cli {
            embedded_broker: Some("0.0.0.0:1883".parse().unwrap()),
            ..Cli::default()
        };
        assert!(
            Config::resolve(open, no_env).is_err(),
            "the embedded broker stays on loopback"
        );
        let wildcard_group = Cli {
            share_group: Some("a/b".into()),
            ..Cli::default()
        };
        assert!(Config::resolve(wildcard_group, no_env).is_err());
        let bad_url = Cli {
            db: Some("postgres://h:port/db".into()),
            ..Cli::default()
        };
        assert!(
            Config::resolve(bad_url, no_env).is_err(),
            "a bad URL is not taken for a file name"
        );
    }

    #[test]
    fn a_fleet_collector() {
        let cli = Cli {
            db: Some("postgres://edgeflow@/edgeflow?host=/run/postgresql".into()),
            share_group: Some("fleet".into()),
            ..Cli::default()
        };
        let c = Config::resolve(cli, no_env).unwrap();
        assert!(matches!(c.db, Db::Postgres(_)));
        assert_eq!(c.mqtt.share_group.as_deref(), Some("fleet"));
        assert_eq!(
            crate::mqtt::filters(&c.mqtt),
            [
                "$share/fleet/edgeflow/v1/+/+/flows",
                "edgeflow/v1/+/+/status"
            ],
            "status stays a plain subscription (retained messages)"
        );
        let c = Config::resolve(Cli::default(), no_env).unwrap();
        assert_eq!(
            crate::mqtt::filters(&c.mqtt),
            ["edgeflow/v1/+/+/flows", "edgeflow/v1/+/+/status"]
        );
    }
}
