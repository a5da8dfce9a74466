//! Who sent it (issue 22's owner, [`Owner`]) as both stores keep it:
//!
//! - `flows`: the record's owner resolved through its message's names and devices
//!   ([`FLOW_COLUMNS`]: process id and command, service, the initiator's and responder's MACs),
//!   so `/api/owners` and the flow filters read one table;
//! - `lan_devices`: per (site, device, MAC) what the messages said about a LAN device (vendor,
//!   DHCP host name and client id; the latest non-empty value wins) and when it was last
//!   received, so a device's names survive windows that do not repeat them.
//!
//! A record without an owner (an older agent, owners off, nothing known) stores NULLs. Names
//! are stored as the agent sent them (commands, units and vendors mind case).

use shared::wire::{owner::mac_text, Owner, Summary};

/// The owner columns of `flows`, after the others: the process id (INTEGER), then text.
pub const FLOW_COLUMNS: [&str; 5] = [
    "owner_pid",
    "owner_comm",
    "owner_service",
    "owner_src_mac",
    "owner_dst_mac",
];

/// The agent's own counts of what its owner maps had no room for, per window (`summaries`:
/// `Health::owner_sockets_full`, `owner_devices_full`; 0 from an agent before owners).
pub const SUMMARY_COLUMNS: [&str; 2] = ["owner_sockets_full", "owner_devices_full"];

/// A summary's [`SUMMARY_COLUMNS`].
pub fn summary_values(s: &Summary) -> [Option<i64>; 2] {
    [
        Some(super::n(s.health.owner_sockets_full)),
        Some(super::n(s.health.owner_devices_full)),
    ]
}

/// One record's owner as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowOwner {
    pub pid: Option<i64>,
    /// comm, service, initiator MAC, responder MAC.
    pub text: [Option<String>; 4],
}

/// A summary's name by index (decoding checked the bounds).
fn name(s: &Summary, i: u32) -> Option<String> {
    s.names.get(i as usize).cloned()
}

fn mac(s: &Summary, i: u32) -> Option<String> {
    s.devices
        .get(i as usize)
        .map(|d| mac_text(&d.mac).to_string())
}

impl FlowOwner {
    /// `None` without an owner.
    pub fn of(o: &Option<Owner>, s: &Summary) -> Option<FlowOwner> {
        let o = o.as_ref()?;
        Some(FlowOwner {
            pid: o.process.map(|p| i64::from(p.pid)),
            text: [
                o.process.and_then(|p| name(s, p.comm)),
                o.service.and_then(|i| name(s, i)),
                o.initiator.and_then(|i| mac(s, i)),
                o.responder.and_then(|i| mac(s, i)),
            ],
        })
    }
}

/// One LAN device a summary describes: MAC, vendor, DHCP host name, client id.
pub type LanDevice = (String, Option<String>, Option<String>, Option<String>);

/// The summary's LAN devices as `lan_devices` keeps them.
pub fn lan_devices(s: &Summary) -> Vec<LanDevice> {
    s.devices
        .iter()
        .map(|d| {
            (
                mac_text(&d.mac).to_string(),
                d.vendor.and_then(|i| name(s, i)),
                d.host_name.and_then(|i| name(s, i)),
                d.client_id.and_then(|i| name(s, i)),
            )
        })
        .collect()
}

/// The `lan_devices` table (both databases: TEXT and BIGINT/INTEGER spelled by `int`).
pub fn table_sql(int: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS lan_devices (
            site TEXT NOT NULL,
            device TEXT NOT NULL,
            mac TEXT NOT NULL,
            vendor TEXT,
            host_name TEXT,
            client_id TEXT,
            first_received_ms {int} NOT NULL,
            last_received_ms {int} NOT NULL,
            PRIMARY KEY (site, device, mac)
        );\n"
    )
}

/// Upserts one LAN device (`$1`..`$7`: site, device, MAC, vendor, host name, client id,
/// received): a value the message leaves out keeps the stored one.
pub const UPSERT_SQL: &str = "INSERT INTO lan_devices (site, device, mac, vendor, host_name,
        client_id, first_received_ms, last_received_ms)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
    ON CONFLICT (site, device, mac) DO UPDATE SET
        vendor = COALESCE(EXCLUDED.vendor, lan_devices.vendor),
        host_name = COALESCE(EXCLUDED.host_name, lan_devices.host_name),
        client_id = COALESCE(EXCLUDED.client_id, lan_devices.client_id),
        last_received_ms = CASE WHEN EXCLUDED.last_received_ms > lan_devices.last_received_ms
            THEN EXCLUDED.last_received_ms ELSE lan_devices.last_received_ms END";
