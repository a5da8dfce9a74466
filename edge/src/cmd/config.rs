//! `edgeflow run` settings: a TOML file (`configs/edgeflow.toml`), then command-line flags on
//! top. Everything the agent sizes (table, top-K, message, spool) is fixed here, so its memory
//! depends on the configuration and not on the traffic.

use crate::{
    owner::OwnerConfig,
    probe::{
        attach::AttachMode, bpf::RttOptions, drain::Expiry, ifstate::Reattach, owner::OwnerOptions,
        ProbeOptions,
    },
    UsageError,
};
use serde::Deserialize;
use shared::{
    broker::{Broker, BrokerUrl},
    flow::{DEFAULT_MAX_FLOWS, MAX_MAX_FLOWS, MIN_MAX_FLOWS},
    identity::DeviceId,
    ipfix::{
        export::{CollectorUrl, Settings},
        Mode,
    },
    wire::{DEFAULT_MAX_MESSAGE, MAX_FLOWS_PER_MESSAGE},
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
    /// Attach again to an interface made under a watched name (default true).
    pub reattach: Option<bool>,
    /// Seconds to wait for a deleted interface to come back when none is left (default 60).
    pub gone_wait_secs: Option<f64>,
    /// `[mqtt]`; without it MQTT is on with the defaults, unless `[ipfix]` is set (then the
    /// agent exports IPFIX only).
    pub mqtt: Option<MqttFile>,
    /// `[ipfix]`: export each window's flows to an IPFIX collector too (docs/ipfix.md).
    pub ipfix: Option<IpfixFile>,
    #[serde(default)]
    pub spool: SpoolFile,
    #[serde(default)]
    pub tcp: TcpFile,
    #[serde(default)]
    pub owner: OwnerFile,
    #[serde(default)]
    pub dns: DnsFile,
}

/// `[dns]`: DNS over UDP port 53 (docs/dns.md).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsFile {
    /// Queries, responses by RCODE, latency, names per DNS flow; default on.
    pub enabled: Option<bool>,
}

/// `[owner]`: who is behind the flows (docs/owners.md).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerFile {
    /// Processes, services and LAN devices; default on.
    pub enabled: Option<bool>,
    /// Sockets whose creator the kernel map holds (default 8192).
    pub max_sockets: Option<u32>,
    /// LAN devices whose DHCP name the agent keeps (default 4096).
    pub max_devices: Option<usize>,
    /// The IEEE OUI registry (default /usr/share/ieee-data/oui.csv; optional).
    pub oui_file: Option<PathBuf>,
}

/// `[tcp]`: what the agent measures of TCP connections besides the RTT.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpFile {
    /// Retransmissions, RST/FIN counts and connection outcomes (docs/tcp.md); default on.
    pub health: Option<bool>,
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

/// `[ipfix]`: where and how to export IPFIX (RFC 7011).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpfixFile {
    /// `udp://HOST[:PORT]` or `tcp://HOST[:PORT]` (port 4739).
    pub collector: Option<String>,
    /// RFC 5103 biflow records (default); false: two uniflow records per flow.
    pub biflow: Option<bool>,
    /// Path MTU towards the collector (default 1400); messages stay 48 bytes below it.
    pub mtu: Option<usize>,
    /// Seconds between template resends over UDP (default 60).
    pub template_refresh_secs: Option<f64>,
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
/// Long enough for a modem or VPN to reconnect (`ppp0`, `wwan0`, `wg0` are made again).
pub const DEFAULT_GONE_WAIT: Duration = Duration::from_secs(60);
pub const DEFAULT_URL: &str = "mqtt://127.0.0.1:1883";
/// Smallest message size accepted: a header and a handful of records must fit.
pub const MIN_MESSAGE: usize = 1024;

/// Settings after defaults and flags, checked.
#[derive(Clone, Debug)]
pub struct Config {
    pub interfaces: Vec<String>,
    pub netns: Option<String>,
    /// `(site, device)`: topics, client id and MQTT username derive from it.
    pub id: DeviceId,
    pub interval: Duration,
    pub max_flows: u32,
    pub top_k: u32,
    pub inactive_timeout: Duration,
    pub sample_every: u32,
    pub attach: AttachMode,
    pub max_message_bytes: usize,
    /// TCP RTT tracking; `None`: off.
    pub rtt: Option<RttOptions>,
    /// TCP health: retransmissions, resets, connection outcomes.
    pub tcp_health: bool,
    /// DNS over UDP port 53: queries, rcodes, latency, names.
    pub dns: bool,
    /// Who sent it; `None`: off.
    pub owner: Option<OwnerConfig>,
    /// Where and how to reach the MQTT broker; `None`: IPFIX only.
    pub broker: Option<Broker>,
    /// Where and how to export IPFIX; `None`: MQTT only.
    pub ipfix: Option<Settings>,
    pub keep_alive: Duration,
    pub spool_max_bytes: u64,
    pub spool_file: Option<PathBuf>,
    /// Interfaces deleted and made again under a watched name.
    pub reattach: Reattach,
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

/// A duration the user gives in seconds (fractions allowed), `name` as they spelled it.
pub fn positive_secs(name: &str, v: f64) -> Result<Duration, UsageError> {
    if v.is_finite() && v > 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(usage(format!(
            "{name} must be a positive number of seconds"
        )))
    }
}

/// Flows the table is sized for, checked against what the table supports.
pub fn max_flows(n: u32) -> Result<u32, UsageError> {
    if (MIN_MAX_FLOWS..=MAX_MAX_FLOWS).contains(&n) {
        Ok(n)
    } else {
        Err(UsageError::TableSize {
            got: n,
            min: MIN_MAX_FLOWS,
            max: MAX_MAX_FLOWS,
        })
    }
}

/// 1-in-N packet sampling: N is at least 1.
pub fn sample_every(n: u32, name: &str) -> Result<u32, UsageError> {
    if n == 0 {
        return Err(usage(format!("{name} must be at least 1")));
    }
    Ok(n)
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

/// This machine's host name (the default device id).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl Config {
    /// Applies defaults and checks every value; errors are the user's to fix.
    pub fn resolve(f: File) -> Result<Config, UsageError> {
        let interfaces = f.interfaces.unwrap_or_default();
        if interfaces.is_empty() {
            return Err(usage("no interfaces: set `interfaces` or pass --iface"));
        }
        let device = f.device.unwrap_or_else(hostname);
        let site = f.site.unwrap_or_else(|| "default".into());
        let id =
            DeviceId::new(&site, &device).map_err(|e| usage(format!("{e}: {site}/{device}")))?;
        let interval = match f.interval_secs {
            Some(s) => positive_secs("interval", s)?,
            None => DEFAULT_INTERVAL,
        };
        let inactive_timeout = match f.inactive_timeout_secs {
            Some(s) => positive_secs("inactive timeout", s)?,
            None => DEFAULT_INACTIVE,
        };
        let max_flows = max_flows(f.max_flows.unwrap_or(DEFAULT_MAX_FLOWS))?;
        let top_k = f.top_k.unwrap_or(DEFAULT_TOP_K);
        if top_k == 0 || top_k as usize > MAX_FLOWS_PER_MESSAGE * 64 {
            return Err(usage(format!("top_k {top_k} out of range (1..=1048576)")));
        }
        let sample_every = sample_every(f.sample_every.unwrap_or(1), "sample_every")?;
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
        let ipfix = f.ipfix.map(ipfix_settings).transpose()?;
        // MQTT unless only [ipfix] is configured.
        let m = match (f.mqtt, &ipfix) {
            (Some(m), _) => Some(m),
            (None, None) => Some(MqttFile::default()),
            (None, Some(_)) => None,
        };
        let keep_alive = Duration::from_secs(
            m.as_ref()
                .and_then(|m| m.keep_alive_secs)
                .unwrap_or(30)
                .max(5),
        );
        let broker = m.map(mqtt_broker).transpose()?;
        let spool_max_bytes = f.spool.max_bytes.unwrap_or(DEFAULT_SPOOL_BYTES);
        if spool_max_bytes < max_message_bytes as u64 {
            return Err(usage(format!(
                "spool max_bytes {spool_max_bytes} is smaller than one message ({max_message_bytes})"
            )));
        }
        let gone_wait = match f.gone_wait_secs {
            Some(s) if s.is_finite() && s >= 0.0 => Duration::from_secs_f64(s),
            Some(_) => return Err(usage("gone_wait must be zero or more seconds")),
            None => DEFAULT_GONE_WAIT,
        };
        let owner = owner_config(f.owner)?;
        Ok(Config {
            owner,
            interfaces,
            netns: f.netns,
            id,
            interval,
            max_flows,
            top_k,
            inactive_timeout,
            sample_every,
            attach,
            max_message_bytes,
            rtt,
            tcp_health: f.tcp.health.unwrap_or(true),
            dns: f.dns.enabled.unwrap_or(true),
            broker,
            ipfix,
            keep_alive,
            spool_max_bytes,
            spool_file: f.spool.file,
            reattach: Reattach {
                on: f.reattach.unwrap_or(true),
                gone_wait,
            },
        })
    }
}

/// The broker from `[mqtt]`, checked.
fn mqtt_broker(m: MqttFile) -> Result<Broker, UsageError> {
    let url = m.url.as_deref().unwrap_or(DEFAULT_URL);
    let parsed: BrokerUrl = url.parse().map_err(|e| usage(format!("mqtt: {e}")))?;
    if m.require_tls == Some(true) && !parsed.tls {
        // Checked after flags are applied: a --broker override cannot turn TLS off.
        return Err(usage(format!(
            "mqtt: require_tls is set, but the broker URL {url:?} is plaintext; \
             use mqtts://"
        )));
    }
    Broker::new(
        parsed,
        m.username,
        m.password,
        m.ca_file,
        m.cert_file,
        m.key_file,
    )
    .map_err(|e| usage(format!("mqtt: {e}")))
}

/// The exporter settings from `[ipfix]`, checked.
fn ipfix_settings(i: IpfixFile) -> Result<Settings, UsageError> {
    let url = i
        .collector
        .ok_or_else(|| usage("ipfix: no collector (udp://HOST[:PORT] or tcp://HOST[:PORT])"))?;
    let collector: CollectorUrl = url.parse().map_err(|e| usage(format!("ipfix: {e}")))?;
    let mut s = Settings::new(collector);
    if i.biflow == Some(false) {
        s.mode = Mode::Uniflow;
    }
    if let Some(mtu) = i.mtu {
        s.mtu = mtu;
    }
    if let Some(r) = i.template_refresh_secs {
        s.template_refresh = positive_secs("ipfix template_refresh_secs", r)?;
    }
    s.check().map_err(|e| usage(format!("ipfix: {e}")))?;
    Ok(s)
}

impl Config {
    /// What the probe session loads and where it attaches.
    pub fn probe(&self) -> ProbeOptions {
        ProbeOptions {
            ifaces: self.interfaces.clone(),
            netns: self.netns.clone(),
            max_flows: self.max_flows,
            attach: self.attach,
            sample_every: self.sample_every,
            rtt: self.rtt,
            tcp_health: self.tcp_health,
            dns: self.dns,
            expiry: Expiry {
                inactive: self.inactive_timeout,
                ..Expiry::default()
            },
            owner: self.owner.clone(),
        }
    }
}

/// `[owner]` checked: `None` when switched off.
pub fn owner_config(f: OwnerFile) -> Result<Option<OwnerConfig>, UsageError> {
    if f.enabled == Some(false) {
        return Ok(None);
    }
    let d = OwnerConfig::default();
    let max_sockets = f.max_sockets.unwrap_or(d.kernel.max_sockets);
    if !(1..=1 << 20).contains(&max_sockets) {
        return Err(usage(format!(
            "owner max_sockets {max_sockets} out of range (1..=1048576)"
        )));
    }
    let max_devices = f.max_devices.unwrap_or(d.max_devices);
    if !(1..=1 << 20).contains(&max_devices) {
        return Err(usage(format!(
            "owner max_devices {max_devices} out of range (1..=1048576)"
        )));
    }
    Ok(Some(OwnerConfig {
        kernel: OwnerOptions { max_sockets },
        max_devices,
        oui_file: f.oui_file.unwrap_or(d.oui_file),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../configs/edgeflow.toml");

    #[test]
    fn the_shipped_example_parses() {
        let c = Config::resolve(File::parse(EXAMPLE).unwrap()).unwrap();
        assert_eq!(c.interval, DEFAULT_INTERVAL);
        assert_eq!(c.id.site(), "default");
        assert!(!c.interfaces.is_empty());
    }

    #[test]
    fn defaults() {
        let f = File::parse("interfaces = [\"veth0\"]\ndevice = \"box-1\"\n").unwrap();
        let c = Config::resolve(f).unwrap();
        assert_eq!((c.id.site(), c.id.device()), ("default", "box-1"));
        assert_eq!(c.interval, Duration::from_secs(10));
        assert_eq!(c.max_message_bytes, 64 * 1024);
        assert_eq!(c.sample_every, 1);
        assert_eq!(c.rtt, Some(RttOptions::default()));
        assert!(c.tcp_health && c.probe().tcp_health);
        let b = c.broker.as_ref().expect("MQTT on by default");
        assert_eq!((b.url.host.as_str(), b.url.port), ("127.0.0.1", 1883));
        assert!(!b.url.tls && c.spool_file.is_none() && c.ipfix.is_none());
        assert_eq!(c.id.flows_topic(), "edgeflow/v1/default/box-1/flows");
    }

    #[test]
    fn reattaching_is_on_by_default_and_switches_off() {
        let c = Config::resolve(File::parse("interfaces = [\"ppp0\"]\n").unwrap()).unwrap();
        assert_eq!(
            c.reattach,
            Reattach {
                on: true,
                gone_wait: DEFAULT_GONE_WAIT
            }
        );
        let f = File::parse("interfaces = [\"ppp0\"]\nreattach = false\ngone_wait_secs = 0\n");
        let c = Config::resolve(f.unwrap()).unwrap();
        assert_eq!(
            (c.reattach.on, c.reattach.gone_wait),
            (false, Duration::ZERO)
        );
        let f = File::parse("interfaces = [\"ppp0\"]\ngone_wait_secs = -1\n").unwrap();
        assert!(Config::resolve(f).is_err());
    }

    #[test]
    fn tcp_health_switches_off_in_its_table() {
        let f = File::parse("interfaces = [\"veth0\"]\n[tcp]\nhealth = false\n").unwrap();
        let c = Config::resolve(f).unwrap();
        assert!(!c.tcp_health && !c.probe().tcp_health);
        assert!(File::parse("interfaces = [\"veth0\"]\n[tcp]\nhealthy = true\n").is_err());
    }

    #[test]
    fn dns_is_on_by_default_and_switches_off_in_its_table() {
        let c = Config::resolve(File::parse("interfaces = [\"veth0\"]\n").unwrap()).unwrap();
        assert!(c.dns && c.probe().dns);
        let f = File::parse("interfaces = [\"veth0\"]\n[dns]\nenabled = false\n").unwrap();
        let c = Config::resolve(f).unwrap();
        assert!(!c.dns && !c.probe().dns);
        assert!(File::parse("interfaces = [\"veth0\"]\n[dns]\non = true\n").is_err());
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
        let b = c.broker.unwrap();
        assert_eq!(b.url.port, 9999);
        let tls = b.tls;
        assert_eq!(tls.ca, Some(PathBuf::from("/ca.pem")));
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
            "interfaces = [\"a\"]\n[ipfix]\nbiflow = true",
            "interfaces = [\"a\"]\n[ipfix]\ncollector = \"http://h\"",
            "interfaces = [\"a\"]\n[ipfix]\ncollector = \"udp://h:0\"",
            "interfaces = [\"a\"]\n[ipfix]\ncollector = \"udp://h\"\nmtu = 100",
            "interfaces = [\"a\"]\n[ipfix]\ncollector = \"udp://h\"\ntemplate_refresh_secs = 0",
            "interfaces = [\"a\"]\n[ipfix]\ncollector = \"udp://h\"\nbiflows = true",
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
        assert!(Config::resolve(f).unwrap().broker.unwrap().url.tls);
    }

    #[test]
    fn ipfix_alone_or_beside_mqtt() {
        let only = File::parse(
            "interfaces = [\"a\"]\n[ipfix]\ncollector = \"tcp://[fd00::9]\"\nbiflow = false\nmtu = 9000\ntemplate_refresh_secs = 5",
        )
        .unwrap();
        let c = Config::resolve(only).unwrap();
        assert!(c.broker.is_none(), "no [mqtt]: IPFIX only");
        let i = c.ipfix.unwrap();
        assert_eq!(i.collector.to_string(), "tcp://[fd00::9]:4739");
        assert_eq!((i.mode, i.mtu), (Mode::Uniflow, 9000));
        assert_eq!(i.template_refresh, Duration::from_secs(5));
        let both = File::parse(
            "interfaces = [\"a\"]\n[mqtt]\nurl = \"mqtt://b\"\n[ipfix]\ncollector = \"udp://c:2055\"",
        )
        .unwrap();
        let c = Config::resolve(both).unwrap();
        assert_eq!(c.broker.unwrap().url.host, "b");
        let i = c.ipfix.unwrap();
        assert_eq!(
            (i.mode, i.mtu, i.collector.port),
            (Mode::Biflow, 1400, 2055)
        );
    }

    #[test]
    fn rtt_can_be_turned_off() {
        let f = File::parse("interfaces = [\"a\"]\nrtt = false\nrtt_interval_ms = 5").unwrap();
        assert_eq!(Config::resolve(f).unwrap().rtt, None);
    }
}
