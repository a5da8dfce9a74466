//! Sending IPFIX: `udp://HOST[:PORT]` or `tcp://HOST[:PORT]` (port 4739), one [`Encoder`] per
//! observation domain. Templates go first on every TCP connection and, over UDP, before the
//! first data and again every `template_refresh` (RFC 7011 §8.4: a UDP collector that
//! restarts learns them again). IPFIX has no acknowledgements: what a send fails to deliver
//! is counted ([`Exporter::lost_records`]) and logged by the caller, never retried forever.

use super::{domain_id, Encoder, Mode, DEFAULT_MTU, MIN_MTU, PORT};
use crate::wire::Flow;
use std::{
    collections::BTreeMap,
    format,
    io::Write,
    net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket},
    string::{String, ToString},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
    vec::Vec,
};

/// Default seconds between template resends over UDP.
pub const DEFAULT_TEMPLATE_REFRESH: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the collector is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectorUrl {
    pub tcp: bool,
    pub host: String,
    pub port: u16,
}

/// A setting the user has to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlError(pub String);

impl core::fmt::Display for UrlError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UrlError {}

impl core::str::FromStr for CollectorUrl {
    type Err = UrlError;
    fn from_str(url: &str) -> Result<CollectorUrl, UrlError> {
        let bad = |why: &str| {
            UrlError(format!(
                "IPFIX collector {url:?}: {why} (expected udp://HOST[:PORT] or tcp://HOST[:PORT])"
            ))
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let tcp = match scheme {
            "udp" => false,
            "tcp" => true,
            _ => return Err(bad("scheme must be udp or tcp")),
        };
        let (host, port) = crate::url::host_port(rest, PORT).map_err(bad)?;
        Ok(CollectorUrl { tcp, host, port })
    }
}

impl core::fmt::Display for CollectorUrl {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let scheme = if self.tcp { "tcp" } else { "udp" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Settings of an exporter.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub collector: CollectorUrl,
    pub mode: Mode,
    /// Path MTU; messages stay 48 bytes below it.
    pub mtu: usize,
    pub template_refresh: Duration,
}

impl Settings {
    pub fn new(collector: CollectorUrl) -> Settings {
        Settings {
            collector,
            mode: Mode::Biflow,
            mtu: DEFAULT_MTU,
            template_refresh: DEFAULT_TEMPLATE_REFRESH,
        }
    }

    /// Checks the numbers a user gave.
    pub fn check(&self) -> Result<(), UrlError> {
        if !(MIN_MTU..=65_535).contains(&self.mtu) {
            return Err(UrlError(format!(
                "IPFIX mtu {} out of range ({MIN_MTU}..=65535)",
                self.mtu
            )));
        }
        if self.template_refresh.is_zero() {
            return Err(UrlError("IPFIX template refresh must be positive".into()));
        }
        Ok(())
    }
}

enum Link {
    Udp(UdpSocket),
    /// `None` while disconnected; reconnected on the next export.
    Tcp(Option<TcpStream>),
}

struct Domain {
    encoder: Encoder,
    /// When templates last went out on the current connection/socket; `None`: never.
    templates_at: Option<Instant>,
}

/// Sends flows to one collector, any number of observation domains.
pub struct Exporter {
    settings: Settings,
    addr: SocketAddr,
    link: Link,
    domains: BTreeMap<u32, Domain>,
    lost: u64,
    sent_messages: u64,
    sent_bytes: u64,
}

/// What went wrong sending; the exporter has counted the records and stays usable.
#[derive(Debug)]
pub struct SendError(pub String);

impl core::fmt::Display for SendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for SendError {}

impl Exporter {
    /// Resolves the collector's address and, for UDP, opens the socket. TCP connects on the
    /// first export (and again after a failure).
    pub fn new(settings: Settings) -> Result<Exporter, SendError> {
        let c = &settings.collector;
        let addr = (c.host.as_str(), c.port)
            .to_socket_addrs()
            .map_err(|e| SendError(format!("IPFIX collector {c}: {e}")))?
            .next()
            .ok_or_else(|| SendError(format!("IPFIX collector {c}: no address")))?;
        let link = if c.tcp {
            Link::Tcp(None)
        } else {
            let any: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0".parse().unwrap()
            } else {
                "[::]:0".parse().unwrap()
            };
            let s = UdpSocket::bind(any).map_err(|e| SendError(format!("IPFIX socket: {e}")))?;
            s.connect(addr)
                .map_err(|e| SendError(format!("IPFIX collector {c}: {e}")))?;
            Link::Udp(s)
        };
        Ok(Exporter {
            settings,
            addr,
            link,
            domains: BTreeMap::new(),
            lost: 0,
            sent_messages: 0,
            sent_bytes: 0,
        })
    }

    pub fn collector(&self) -> &CollectorUrl {
        &self.settings.collector
    }

    /// Flow records that could not be sent since the start.
    pub fn lost_records(&self) -> u64 {
        self.lost
    }

    /// Messages and bytes (IPFIX, without UDP/TCP/IP headers) sent since the start.
    pub fn sent(&self) -> (u64, u64) {
        (self.sent_messages, self.sent_bytes)
    }

    /// Exports `flows` of the device `site/device` (sampled 1 in `sample_every`).
    pub fn export_device(
        &mut self,
        site: &str,
        device: &str,
        sample_every: u32,
        flows: &[Flow],
    ) -> Result<(), SendError> {
        self.export(domain_id(site, device), sample_every, flows)
    }

    /// Exports `flows` from observation domain `domain`.
    pub fn export(
        &mut self,
        domain: u32,
        sample_every: u32,
        flows: &[Flow],
    ) -> Result<(), SendError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        let (mode, mtu) = (self.settings.mode, self.settings.mtu);
        let records = match mode {
            Mode::Biflow => flows.len() as u64,
            Mode::Uniflow => flows
                .iter()
                .map(|f| 1 + (f.rev.packets > 0 || f.rev.bytes > 0) as u64)
                .sum(),
        };
        if let Link::Tcp(None) = self.link {
            match TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    let _ = s.set_write_timeout(Some(WRITE_TIMEOUT));
                    let _ = s.set_nodelay(true);
                    self.link = Link::Tcp(Some(s));
                    // A new connection is a new transport session: templates again.
                    for d in self.domains.values_mut() {
                        d.templates_at = None;
                    }
                }
                Err(e) => {
                    self.lost += records;
                    return Err(SendError(format!(
                        "IPFIX collector {}: {e}",
                        self.settings.collector
                    )));
                }
            }
        }
        let d = self.domains.entry(domain).or_insert_with(|| Domain {
            encoder: Encoder::new(domain, mode, mtu, sample_every),
            templates_at: None,
        });
        let mut msgs = Vec::new();
        let changed = d.encoder.sample_every != sample_every.max(1);
        let due = match (&self.link, d.templates_at) {
            (_, None) => true,
            (Link::Udp(_), Some(t)) => t.elapsed() >= self.settings.template_refresh,
            (Link::Tcp(_), Some(_)) => false,
        };
        if due || changed {
            d.encoder.set_sample_every(sample_every);
            msgs.push(d.encoder.templates(now));
            d.templates_at = Some(Instant::now());
        }
        msgs.extend(d.encoder.data(flows, now));
        for (i, m) in msgs.iter().enumerate() {
            let r = match &mut self.link {
                Link::Udp(s) => s.send(m).map(|_| ()),
                Link::Tcp(Some(s)) => s.write_all(m),
                Link::Tcp(None) => unreachable!("connected above"),
            };
            match r {
                Ok(()) => {
                    self.sent_messages += 1;
                    self.sent_bytes += m.len() as u64;
                }
                Err(e) => {
                    // What did not go out is lost: count the flow records left.
                    let left: u64 = msgs[i..].iter().map(|m| data_records(m)).sum();
                    self.lost += left;
                    if let Link::Tcp(s) = &mut self.link {
                        *s = None;
                    }
                    d.templates_at = None;
                    return Err(SendError(format!(
                        "IPFIX collector {}: {e}",
                        self.settings.collector
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Flow records in a message (data sets of the flow templates); 0 for a template message.
fn data_records(m: &[u8]) -> u64 {
    let mut n = 0;
    let mut at = super::HEADER;
    while at + 4 <= m.len() {
        let id = u16::from_be_bytes([m[at], m[at + 1]]);
        let len = u16::from_be_bytes([m[at + 2], m[at + 3]]) as usize;
        if len < 4 {
            break;
        }
        if (256..264).contains(&id) {
            let shape = super::SHAPES[(id as usize - 256) % 4];
            let mode = if id < 260 {
                Mode::Biflow
            } else {
                Mode::Uniflow
            };
            n += ((len - 4) / shape.record_len(mode)) as u64;
        }
        at += len;
    }
    n
}

impl From<UrlError> for SendError {
    fn from(e: UrlError) -> SendError {
        SendError(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_urls() {
        let u: CollectorUrl = "udp://10.0.0.1".parse().unwrap();
        assert_eq!((u.tcp, u.host.as_str(), u.port), (false, "10.0.0.1", 4739));
        let u: CollectorUrl = "tcp://[fd00::2]:9995/".parse().unwrap();
        assert_eq!((u.tcp, u.host.as_str(), u.port), (true, "fd00::2", 9995));
        assert_eq!(u.to_string(), "tcp://[fd00::2]:9995");
        for bad in ["10.0.0.1", "mqtt://h", "udp://", "udp://h:0", "tcp://h:x"] {
            assert!(bad.parse::<CollectorUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_are_checked() {
        let mut s = Settings::new("udp://h".parse().unwrap());
        assert!(s.check().is_ok());
        s.mtu = 100;
        assert!(s.check().is_err());
    }

    #[test]
    fn udp_sends_templates_first_and_counts_records() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let url = format!("udp://127.0.0.1:{}", rx.local_addr().unwrap().port());
        let mut e = Exporter::new(Settings::new(url.parse().unwrap())).unwrap();
        let flows = super::super::tests::sample_flows();
        e.export(7, 1, &flows).unwrap();
        let mut b = [0u8; 2048];
        let n = rx.recv(&mut b).unwrap();
        assert_eq!(data_records(&b[..n]), 0, "templates first");
        let n = rx.recv(&mut b).unwrap();
        assert_eq!(data_records(&b[..n]), flows.len() as u64);
        // Second export: no templates (refresh not due), the sequence counts records.
        e.export(7, 1, &flows).unwrap();
        let n = rx.recv(&mut b).unwrap();
        assert_eq!(data_records(&b[..n]), flows.len() as u64);
        let seq = u32::from_be_bytes(b[8..12].try_into().unwrap());
        assert_eq!(
            seq as usize,
            1 + flows.len(),
            "options record + first batch"
        );
        assert_eq!(e.lost_records(), 0);
    }
    #[test]
    fn udp_resends_templates_when_the_refresh_is_due() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let url = format!("udp://127.0.0.1:{}", rx.local_addr().unwrap().port());
        let mut s = Settings::new(url.parse().unwrap());
        s.template_refresh = Duration::from_millis(50);
        let mut e = Exporter::new(s).unwrap();
        let flows = super::super::tests::sample_flows();
        let mut b = [0u8; 2048];
        let mut kinds = Vec::new();
        for pause in [0, 0, 80] {
            std::thread::sleep(Duration::from_millis(pause));
            e.export(7, 1, &flows).unwrap();
            e.export(9, 4, &flows[..1]).unwrap();
        }
        while let Ok(n) = rx.recv(&mut b) {
            let domain = u32::from_be_bytes(b[12..16].try_into().unwrap());
            kinds.push((domain, data_records(&b[..n])));
            if kinds.len() == 10 {
                break;
            }
        }
        // Per domain: templates, data; data only; templates again after the pause, data.
        let of = |d: u32| {
            kinds
                .iter()
                .filter(|k| k.0 == d)
                .map(|k| k.1)
                .collect::<Vec<_>>()
        };
        assert_eq!(of(7), [0, 3, 3, 0, 3]);
        assert_eq!(of(9), [0, 1, 1, 0, 1]);
    }

    /// Reads one IPFIX message from a stream (the header's length frames it).
    fn read_msg(s: &mut TcpStream) -> Vec<u8> {
        use std::io::Read;
        let mut m = std::vec![0u8; 4];
        s.read_exact(&mut m).unwrap();
        let len = u16::from_be_bytes([m[2], m[3]]) as usize;
        m.resize(len, 0);
        s.read_exact(&mut m[4..]).unwrap();
        m
    }

    #[test]
    fn tcp_sends_templates_once_per_connection_and_counts_what_it_cannot_send() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let url = format!("tcp://127.0.0.1:{port}");
        let mut e = Exporter::new(Settings::new(url.parse().unwrap())).unwrap();
        let flows = super::super::tests::sample_flows();
        e.export(7, 1, &flows).unwrap();
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(data_records(&read_msg(&mut c)), 0, "templates first");
        assert_eq!(data_records(&read_msg(&mut c)), 3);
        e.export(7, 1, &flows).unwrap();
        assert_eq!(data_records(&read_msg(&mut c)), 3, "no templates again");
        // The collector goes away: a send fails (at the latest a few later), its records
        // are counted lost, and the next connection starts with templates again.
        drop(c);
        drop(l);
        let mut failed = false;
        for _ in 0..50 {
            if e.export(7, 1, &flows).is_err() {
                failed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(failed && e.lost_records() >= 3);
        let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        e.export(7, 1, &flows).unwrap();
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(
            data_records(&read_msg(&mut c)),
            0,
            "templates on the new connection"
        );
        assert_eq!(data_records(&read_msg(&mut c)), 3);
    }
}
