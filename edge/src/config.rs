//! `edgeflow run` settings: a TOML file (`configs/edgeflow.toml`), then command-line flags on
//! top. Everything the agent sizes (table, top-K, message, spool) is fixed here, so its memory
//! depends on the configuration and not on the traffic.

use crate::{attach::AttachMode, bpf::RttOptions, UsageError};
use serde::Deserialize;
use shared::{
    flow::{DEFAULT_MAX_FLOWS, MAX_MAX_FLOWS, MIN_MAX_FLOWS},
    wire::{DEFAULT_MAX_MESSAGE, MAX_FLOWS_PER_MESSAGE, MAX_ID_LEN},
};
use std::{path::PathBuf, time::Duration};

/// The file as written: every field optional, defaults applied by [`Config::resolve`].
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub interfaces: Option<Vec<String>>,
    pub netns: Option<String>,
    pub device: Option<String>,
    pub site: Option<String>,
    pub interval_secs: Option<f64>,
    pub max_flows: Option<u32>,
    pub top_k: Option<u32>,
    pub inactive_timeout_secs: Option<f64>,
    pub sample_every: Option<u32>,
    pub attach: Option<String>,
    pub max_message_bytes: Option<usize>,
    pub rtt: Option<bool>,
    pub rtt_interval_ms: Option<f64>,
    #[serde(default)]
    pub mqtt: MqttFile,
    #[serde(default)]
    pub spool: SpoolFile,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttFile {
    pub url: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub keep_alive_secs: Option<u64>,
    /// Refuse a plaintext `mqtt://` URL, also one given with `--broker`.
    pub require_tls: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolFile {
    pub max_bytes: Option<u64>,
    pub file: Option<PathBuf>,
}

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_TOP_K: u32 = 1024;
pub const DEFAULT_INACTIVE: Duration = Duration::from_secs(60);
pub const DEFAULT_SPOOL_BYTES: u64 = 4 << 20;
pub const DEFAULT_URL: &str = "mqtt://127.0.0.1:1883";
/// Where `mqtts://` finds CAs when `ca_file` is not set (Debian's ca-certificates bundle).
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Smallest message size accepted: a header and a handful of records must fit.
pub const MIN_MESSAGE: usize = 1024;

/// Settings after defaults and flags, checked.
#[derive(Clone, Debug)]
pub struct Config {
    pub interfaces: Vec<String>,
    pub netns: Option<String>,
    pub device: String,
    pub site: String,
    pub interval: Duration,
    pub max_flows: u32,
    pub top_k: u32,
    pub inactive_timeout: Duration,
    pub sample_every: u32,
    pub attach: AttachMode,
    pub max_message_bytes: usize,
    /// TCP RTT tracking; `None`: off.
    pub rtt: Option<RttOptions>,
    pub broker: Broker,
    pub spool_max_bytes: u64,
    pub spool_file: Option<PathBuf>,
}

/// Where and how to reach the MQTT broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    pub tls: Option<Tls>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    pub ca_file: PathBuf,
    /// Client certificate and key (PEM), for brokers that authenticate clients by certificate.
    pub client: Option<(PathBuf, PathBuf)>,
}

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError::Invalid(msg.into())
}

impl File {
    pub fn parse(text: &str) -> Result<File, UsageError> {
        toml::from_str(text).map_err(|e| usage(format!("config: {e}")))
    }

    pub fn load(path: &std::path::Path) -> Result<File, UsageError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("config {}: {e}", path.display())))?;
        File::parse(&text).map_err(|e| usage(format!("{}: {e}", path.display())))
    }
}

fn positive_secs(name: &str, v: f64) -> Result<Duration, UsageError> {
    if v.is_finite() && v > 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(usage(format!(
            "{name} must be a positive number of seconds"
        )))
    }
}

/// RTT settings from `rtt` (on unless false) and `rtt_interval_ms` (default 100), as `watch`
/// and `run` take them.
pub fn rtt_options(on: bool, interval_ms: Option<f64>) -> Result<Option<RttOptions>, UsageError> {
    if !on {
        return Ok(None);
    }
    match interval_ms {
        None => Ok(Some(RttOptions::default())),
        Some(ms) if ms.is_finite() && ms >= 0.0 => Ok(Some(RttOptions {
            interval: Duration::from_secs_f64(ms / 1000.0),
        })),
        Some(_) => Err(usage(
            "rtt interval must be a number of milliseconds, 0 or more",
        )),
    }
}

/// A device or site name: goes into MQTT topics, so no `/`, `+`, `#`, and bounded.
pub fn check_id(what: &str, s: &str) -> Result<(), UsageError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(usage(format!(
            "{what} {s:?} must be 1..={MAX_ID_LEN} characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

/// This machine's host name (the default device id).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Parses `mqtt://host[:port]` or `mqtts://host[:port]`.
pub fn parse_url(url: &str) -> Result<(String, u16, bool), UsageError> {
    let bad = || {
        usage(format!(
            "broker URL {url:?}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"
        ))
    };
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err(bad());
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let default_port = if tls { 8883 } else { 1883 };
    // [v6addr]:port, host:port, host
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (h, after) = r.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => default_port,
            None => return Err(bad()),
        };
        (h.to_string(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad())?),
            None => (rest.to_string(), default_port),
        }
    };
    if host.is_empty() || host.contains('/') || port == 0 {
        return Err(bad());
    }
    Ok((host, port, tls))
}

impl Config {
    /// Applies defaults and checks every value; errors are the user's to fix.
    pub fn resolve(f: File) -> Result<Config, UsageError> {
        let interfaces = f.interfaces.unwrap_or_default();
        if interfaces.is_empty() {
            return Err(usage("no interfaces: set `interfaces` or pass --iface"));
        }
        let device = f.device.unwrap_or_else(hostname);
        check_id("device", &device)?;
        let site = f.site.unwrap_or_else(|| "default".into());
        check_id("site", &site)?;
        let interval = match f.interval_secs {
            Some(s) => positive_secs("interval", s)?,
            None => DEFAULT_INTERVAL,
        };
        let inactive_timeout = match f.inactive_timeout_secs {
            Some(s) => positive_secs("inactive timeout", s)?,
            None => DEFAULT_INACTIVE,
        };
        let max_flows = f.max_flows.unwrap_or(DEFAULT_MAX_FLOWS);
        if !(MIN_MAX_FLOWS..=MAX_MAX_FLOWS).contains(&max_flows) {
            return Err(UsageError::TableSize {
                got: max_flows,
                min: MIN_MAX_FLOWS,
                max: MAX_MAX_FLOWS,
            });
        }
        let top_k = f.top_k.unwrap_or(DEFAULT_TOP_K);
        if top_k == 0 || top_k as usize > MAX_FLOWS_PER_MESSAGE * 64 {
            return Err(usage(format!("top_k {top_k} out of range (1..=1048576)")));
        }
        let sample_every = f.sample_every.unwrap_or(1);
        if sample_every == 0 {
            return Err(usage("sample_every must be at least 1"));
        }
        let attach = match f.attach {
            Some(a) => a.parse().map_err(usage)?,
            None => AttachMode::Auto,
        };
        let max_message_bytes = f.max_message_bytes.unwrap_or(DEFAULT_MAX_MESSAGE);
        if !(MIN_MESSAGE..=16 << 20).contains(&max_message_bytes) {
            return Err(usage(format!(
                "max_message_bytes {max_message_bytes} out of range ({MIN_MESSAGE}..=16777216)"
            )));
        }
        let rtt = rtt_options(f.rtt.unwrap_or(true), f.rtt_interval_ms)?;
        let m = f.mqtt;
        let url = m.url.as_deref().unwrap_or(DEFAULT_URL);
        let (host, port, tls) = parse_url(url)?;
        if m.require_tls == Some(true) && !tls {
            // Checked after flags are applied: a --broker override cannot turn TLS off.
            return Err(usage(format!(
                "mqtt: require_tls is set, but the broker URL {url:?} is plaintext; \
                 use mqtts://"
            )));
        }
        let client = match (m.cert_file, m.key_file) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(usage("mqtt: cert_file and key_file go together")),
        };
        let tls = if tls {
            Some(Tls {
                ca_file: m.ca_file.unwrap_or_else(|| SYSTEM_CA_FILE.into()),
                client,
            })
        } else if client.is_some() || m.ca_file.is_some() {
            return Err(usage(
                "mqtt: ca_file/cert_file/key_file need an mqtts:// URL",
            ));
        } else {
            None
        };
        if m.password.is_some() && m.username.is_none() {
            return Err(usage("mqtt: a password needs a username"));
        }
        let spool_max_bytes = f.spool.max_bytes.unwrap_or(DEFAULT_SPOOL_BYTES);
        if spool_max_bytes < max_message_bytes as u64 {
            return Err(usage(format!(
                "spool max_bytes {spool_max_bytes} is smaller than one message ({max_message_bytes})"
            )));
        }
        Ok(Config {
            interfaces,
            netns: f.netns,
            device,
            site,
            interval,
            max_flows,
            top_k,
            inactive_timeout,
            sample_every,
            attach,
            max_message_bytes,
            rtt,
            broker: Broker {
                host,
                port,
                tls,
                username: m.username,
                password: m.password,
                keep_alive: Duration::from_secs(m.keep_alive_secs.unwrap_or(30).max(5)),
            },
            spool_max_bytes,
            spool_file: f.spool.file,
        })
    }

    /// `edgeflow/v1/<site>/<device>/flows`
    pub fn flows_topic(&self) -> String {
        format!("edgeflow/v1/{}/{}/flows", self.site, self.device)
    }

    /// `edgeflow/v1/<site>/<device>/status` (retained "online"; Last Will "offline")
    pub fn status_topic(&self) -> String {
        format!("edgeflow/v1/{}/{}/status", self.site, self.device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../configs/edgeflow.toml");

    #[test]
    fn the_shipped_example_parses() {
        let c = Config::resolve(File::parse(EXAMPLE).unwrap()).unwrap();
        assert_eq!(c.interval, DEFAULT_INTERVAL);
        assert_eq!(c.site, "default");
        assert!(!c.interfaces.is_empty());
    }

    #[test]
    fn defaults() {
        let f = File::parse("interfaces = [\"veth0\"]\ndevice = \"box-1\"\n").unwrap();
        let c = Config::resolve(f).unwrap();
        assert_eq!(c.device, "box-1");
        assert_eq!(c.site, "default");
        assert_eq!(c.interval, Duration::from_secs(10));
        assert_eq!(c.max_message_bytes, 64 * 1024);
        assert_eq!(c.sample_every, 1);
        assert_eq!(c.rtt, Some(RttOptions::default()));
        assert_eq!((c.broker.host.as_str(), c.broker.port), ("127.0.0.1", 1883));
        assert!(c.broker.tls.is_none() && c.spool_file.is_none());
        assert_eq!(c.flows_topic(), "edgeflow/v1/default/box-1/flows");
        assert_eq!(c.status_topic(), "edgeflow/v1/default/box-1/status");
    }

    #[test]
    fn full_file() {
        let f = File::parse(
            r#"
            interfaces = ["a", "b"]
            netns = "ns1"
            device = "d"
            site = "s"
            interval_secs = 2.5
            max_flows = 1024
            top_k = 10
            inactive_timeout_secs = 30
            sample_every = 4
            attach = "tc"
            max_message_bytes = 4096
            rtt_interval_ms = 250
            [mqtt]
            url = "mqtts://broker.example:9999"
            username = "u"
            password = "p"
            ca_file = "/ca.pem"
            cert_file = "/c.pem"
            key_file = "/k.pem"
            [spool]
            max_bytes = 100000
            file = "/var/lib/edgeflow/spool"
            "#,
        )
        .unwrap();
        let c = Config::resolve(f).unwrap();
        assert_eq!(c.interfaces, ["a", "b"]);
        assert_eq!(c.interval, Duration::from_millis(2500));
        assert_eq!(c.attach, AttachMode::Tc);
        assert_eq!(c.rtt.unwrap().interval, Duration::from_millis(250));
        assert_eq!(c.broker.port, 9999);
        let tls = c.broker.tls.unwrap();
        assert_eq!(tls.ca_file, PathBuf::from("/ca.pem"));
        assert_eq!(tls.client.unwrap().1, PathBuf::from("/k.pem"));
        assert_eq!(
            c.spool_file.unwrap(),
            PathBuf::from("/var/lib/edgeflow/spool")
        );
    }

    #[test]
    fn mistakes_are_usage_errors() {
        let bad = [
            "interfaces = []",
            "interfaces = [\"a\"]\nintervall_secs = 3",
            "interfaces = [\"a\"]\ninterval_secs = 0",
            "interfaces = [\"a\"]\ndevice = \"a/b\"",
            "interfaces = [\"a\"]\nsample_every = 0",
            "interfaces = [\"a\"]\nmax_flows = 1",
            "interfaces = [\"a\"]\nattach = \"xdpp\"",
            "interfaces = [\"a\"]\n[mqtt]\nurl = \"http://x\"",
            "interfaces = [\"a\"]\n[mqtt]\nca_file = \"/x\"",
            "interfaces = [\"a\"]\n[mqtt]\nurl = \"mqtts://x\"\ncert_file = \"/x\"",
            "interfaces = [\"a\"]\n[spool]\nmax_bytes = 10",
            "interfaces = [\"a\"]\nrtt_interval_ms = -1",
            "interfaces = [\"a\"]\n[mqtt]\nrequire_tls = true",
            "interfaces = [\"a\"]\n[mqtt]\nrequire_tls = true\nurl = \"mqtt://h:8883\"",
        ];
        for text in bad {
            let r = File::parse(text).and_then(Config::resolve);
            assert!(r.is_err(), "accepted: {text}");
        }
    }

    #[test]
    fn require_tls_takes_mqtts() {
        let f =
            File::parse("interfaces = [\"a\"]\n[mqtt]\nrequire_tls = true\nurl = \"mqtts://h\"")
                .unwrap();
        assert!(Config::resolve(f).unwrap().broker.tls.is_some());
    }

    #[test]
    fn rtt_can_be_turned_off() {
        let f = File::parse("interfaces = [\"a\"]\nrtt = false\nrtt_interval_ms = 5").unwrap();
        assert_eq!(Config::resolve(f).unwrap().rtt, None);
    }

    #[test]
    fn urls() {
        assert_eq!(parse_url("mqtt://h").unwrap(), ("h".into(), 1883, false));
        assert_eq!(parse_url("mqtts://h").unwrap(), ("h".into(), 8883, true));
        assert_eq!(parse_url("mqtt://h:1/").unwrap(), ("h".into(), 1, false));
        assert_eq!(
            parse_url("mqtt://[::1]:5").unwrap(),
            ("::1".into(), 5, false)
        );
        for bad in [
            "tcp://h",
            "mqtt://",
            "mqtt://h:x",
            "mqtt://h:0",
            "mqtt://[::1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
