//! The broker as `scripts/provision.sh` sets it up for a fleet (TLS, a login and ACL block
//! per device, persistence).

use crate::mosquitto::{free_port, Mosquitto};
use std::process::Command;

/// `scripts/provision.sh` of this repository.
pub fn provision(args: &[&str]) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/provision.sh");
    let out = Command::new(script)
        .args(args)
        .output()
        .expect("running scripts/provision.sh");
    assert!(
        out.status.success(),
        "provision.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
