//! How a client (agent, collector, load generator) reaches the broker: the URL grammar, the
//! credentials and TLS files, and the `rumqttc` options built from them. One copy, so agent
//! and collector accept the same URLs and read certificates the same way.

use std::{
    path::{Path, PathBuf},
    string::String,
    vec::Vec,
};

/// Where the broker is: `mqtt://HOST[:PORT]` (1883) or `mqtts://HOST[:PORT]` (8883).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

/// A setting the user has to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerError(pub String);

impl core::fmt::Display for BrokerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BrokerError {}

impl core::str::FromStr for BrokerUrl {
    type Err = BrokerError;
    fn from_str(url: &str) -> Result<BrokerUrl, BrokerError> {
        let bad = |why: &str| {
            BrokerError(std::format!(
                "broker URL {url:?}: {why} (expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT])"
            ))
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let tls = match scheme {
            "mqtt" => false,
            "mqtts" => true,
            _ => return Err(bad("scheme must be mqtt or mqtts")),
        };
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = crate::url::host_port(rest, default_port).map_err(bad)?;
        Ok(BrokerUrl { tls, host, port })
    }
}

impl core::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Files for `mqtts://`: the CA that signed the broker's certificate, and optionally this
/// client's own certificate and key (brokers that authenticate clients by certificate).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// `None`: the system's roots (Debian's ca-certificates bundle).
    pub ca: Option<PathBuf>,
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Where Debian keeps the system's CA bundle.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Everything a client needs to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub url: BrokerUrl,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: TlsFiles,
}

impl Broker {
    /// Checks the combination: TLS files need `mqtts://`, a client key goes with its
    /// certificate, a password needs a username.
    pub fn new(
        url: BrokerUrl,
        username: Option<String>,
        password: Option<String>,
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Broker, BrokerError> {
        let client = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(BrokerError(
                    "a client certificate and its key go together".into(),
                ))
            }
        };
        if !url.tls && (ca.is_some() || client.is_some()) {
            return Err(BrokerError(
                "a CA or client certificate needs an mqtts:// broker URL".into(),
            ));
        }
        if password.is_some() && username.is_none() {
            return Err(BrokerError("a password needs a username".into()));
        }
        Ok(Broker {
            url,
            username,
            password,
            tls: TlsFiles { ca, client },
        })
    }

    /// rumqttc options for `client_id` (TLS files are read here). Keep-alive, session and
    /// packet sizes are the caller's to set.
    pub fn options(&self, client_id: &str) -> Result<rumqttc::MqttOptions, BrokerError> {
        let mut o = rumqttc::MqttOptions::new(client_id, self.url.host.clone(), self.url.port);
        if let Some(user) = &self.username {
            o.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        if self.url.tls {
            let read = |p: &Path| -> Result<Vec<u8>, BrokerError> {
                std::fs::read(p)
                    .map_err(|e| BrokerError(std::format!("mqtt TLS {}: {e}", p.display())))
            };
            let ca = read(
                self.tls
                    .ca
                    .as_deref()
                    .unwrap_or_else(|| Path::new(SYSTEM_CA_FILE)),
            )?;
            let client_auth = match &self.tls.client {
                Some((c, k)) => Some((read(c)?, read(k)?)),
                None => None,
            };
            // rumqttc builds its rustls config with the process-wide provider: ring.
            let _ = rustls::crypto::ring::default_provider().install_default();
            o.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Simple {
                    ca,
                    alpn: None,
                    client_auth,
                },
            ));
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn urls() {
        let u: BrokerUrl = "mqtt://broker.lan".parse().unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (false, "broker.lan", 1883)
        );
        let u: BrokerUrl = "mqtts://10.0.0.5:9000/".parse().unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (true, "10.0.0.5", 9000));
        let u: BrokerUrl = "mqtts://[fd00::1]".parse().unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (true, "fd00::1", 8883));
        assert_eq!(u.to_string(), "mqtts://[fd00::1]:8883");
        for bad in [
            "broker",
            "http://x",
            "tcp://x",
            "mqtt://",
            "mqtt://h:port",
            "mqtt://h:0",
            "mqtt://[::1",
        ] {
            assert!(bad.parse::<BrokerUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn combinations() {
        let plain: BrokerUrl = "mqtt://h".parse().unwrap();
        let tls: BrokerUrl = "mqtts://h".parse().unwrap();
        let p = |s: &str| Some(PathBuf::from(s));
        assert!(Broker::new(plain.clone(), None, None, p("/ca"), None, None).is_err());
        assert!(Broker::new(tls.clone(), None, None, None, p("/c"), None).is_err());
        assert!(Broker::new(plain.clone(), None, Some("pw".into()), None, None, None).is_err());
        let b = Broker::new(tls, Some("u".into()), None, p("/ca"), p("/c"), p("/k")).unwrap();
        assert_eq!(b.tls.client.unwrap().1, PathBuf::from("/k"));
        assert!(
            Broker::new(plain, None, None, None, None, None)
                .unwrap()
                .options("x")
                .is_ok(),
            "plain needs no files"
        );
    }
}
