//! The `HOST[:PORT][/]` part of the URLs edgeflow takes (broker, IPFIX collector), one
//! grammar for all of them: `[v6]:port`, `[v6]`, `host:port`, `host`; port 1..=65535.

use alloc::string::{String, ToString};

/// Host and port of `rest` (the URL after `scheme://`), `default_port` when none is given;
/// the error says what is wrong, for the caller to put in context.
pub fn host_port(rest: &str, default_port: u16) -> Result<(String, u16), &'static str> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("unclosed [")?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err("junk after ]"),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() || host.contains('/') || host.contains('@') {
        return Err("no host");
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| "bad port")?,
        None => default_port,
    };
    if port == 0 {
        return Err("port 0");
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn hosts_and_ports() {
        let ok = |s: &str| host_port(s, 9).unwrap();
        assert_eq!(ok("h"), ("h".into(), 9));
        assert_eq!(ok("h:1/"), ("h".into(), 1));
        assert_eq!(ok("[::1]"), ("::1".into(), 9));
        assert_eq!(ok("[fd00::1]:65535"), ("fd00::1".into(), 65535));
        for bad in [
            "", ":1", "h:0", "h:65536", "h:x", "[::1", "[::1]x", "a/b", "u@h", "h:",
        ] {
            assert!(host_port(bad, 9).is_err(), "{bad}");
        }
    }
}
