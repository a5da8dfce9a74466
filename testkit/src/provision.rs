//! The broker as `scripts/provision.sh` sets it up for a fleet (TLS, a login and ACL block
//! per device, persistence).

use crate::mosquitto::{free_port, Mosquitto};

/// `scripts/provision.sh` of this repository (panics with its output if it fails).
pub fn provision(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/provision.sh");
    crate::sh(&[&[script], args].concat());
}

/// Mosquitto as `scripts/provision.sh init` configures it (TLS, a password per device, the
/// ACL, persistence), on a free loopback port; `devices` are provisioned before it starts.
/// The broker owns the folder (removed on drop).
pub fn provisioned_broker(devices: &[(&str, &str)]) -> Mosquitto {
    let dir = std::env::temp_dir().join(crate::unique("efprov"));
    let port = free_port();
    let d = dir.to_str().unwrap();
    let cert_port = free_port();
    provision(&[
        "init",
        d,
        "--port",
        &port.to_string(),
        "--cert-port",
        &cert_port.to_string(),
    ]);
    for (site, device) in devices {
        provision(&["device", d, site, device]);
    }
    Mosquitto::with_conf_file(dir, port)
}

/// A `key = "value"` line of a TOML file provision.sh wrote.
pub fn toml_value(path: &std::path::Path, key: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{key} missing in {}", path.display()))
        .to_string()
}
