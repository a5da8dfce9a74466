//! `/api/owners`: who sent it (issue 22): bytes and flows by process (command name and
//! service), by service, and by LAN device (the initiator's MAC as the edge box saw it, with
//! the vendor and DHCP names `lan_devices` keeps and its top destinations).
//!
//! Read from the flow records' owner columns (`store::owner`); records without an owner (older
//! agents, owners off, nothing known) count nowhere here. Bytes and packets scale by
//! `sample_every`; `flows` counts distinct conversations (device, protocol, addresses, ports).

use super::{flows::flows_in_range, Count, Range, Reader, Result, Row};
use serde::Serialize;

#[derive(Debug, Clone, Default)]
pub struct OwnersQuery {
    pub device: Option<String>,
    pub site: Option<String>,
    pub limit: u32,
}

/// Traffic of one owner over the range.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    /// Initiator → responder, and back.
    pub fwd: Count,
    pub rev: Count,
    pub bytes: u64,
    pub packets: u64,
    /// Distinct conversations.
    pub flows: u64,
    /// Edge devices (`site/device`) that saw it.
    pub devices: u64,
}

impl Usage {
    fn read(r: &dyn Row) -> Result<Usage> {
        let fwd = r.count("fwd_p", "fwd_b")?;
        let rev = r.count("rev_p", "rev_b")?;
        Ok(Usage {
            bytes: fwd.bytes + rev.bytes,
            packets: fwd.packets + rev.packets,
            fwd,
            rev,
            flows: r.u64("flows")?,
            devices: r.u64("devices")?,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Process {
    /// The command name.
    pub process: String,
    pub service: Option<String>,
    /// Distinct process ids.
    pub pids: u64,
    #[serde(flatten)]
    pub usage: Usage,
}

#[derive(Debug, Clone, Serialize)]
pub struct Service {
    pub service: String,
    /// Distinct command names.
    pub processes: u64,
    #[serde(flatten)]
    pub usage: Usage,
}

#[derive(Debug, Clone, Serialize)]
pub struct Destination {
    pub addr: String,
    pub port: u16,
    pub proto: u8,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LanDevice {
    /// The edge device (`site/device`) it is behind.
    pub device: String,
    pub mac: String,
    /// The IEEE registry's organization for its OUI, its DHCP host name and client id.
    pub vendor: Option<String>,
    pub host_name: Option<String>,
    pub client_id: Option<String>,
    #[serde(flatten)]
    pub usage: Usage,
    /// Distinct responder addresses, and the largest by bytes (up to 5).
    pub destinations: u64,
    pub top_destinations: Vec<Destination>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OwnersAnswer {
    pub range: Range,
    /// The agents' own counts over the range: sockets (or bound ports) whose creator their
    /// maps had no room for (those flows carry no process), and DHCP requests from a new MAC
    /// that found the names map full.
    pub sockets_full: u64,
    pub devices_full: u64,
    pub processes: Vec<Process>,
    pub services: Vec<Service>,
    pub lan_devices: Vec<LanDevice>,
}

/// Traffic sums, and the distinct conversations and edge devices.
const SUMS: &str = "SUM(CAST(f.fwd_packets AS DOUBLE PRECISION) * s.sample_every) AS fwd_p,
    SUM(CAST(f.fwd_bytes AS DOUBLE PRECISION) * s.sample_every) AS fwd_b,
    SUM(CAST(f.rev_packets AS DOUBLE PRECISION) * s.sample_every) AS rev_p,
    SUM(CAST(f.rev_bytes AS DOUBLE PRECISION) * s.sample_every) AS rev_b,
    SUM((CAST(f.fwd_bytes AS DOUBLE PRECISION) + f.rev_bytes) * s.sample_every) AS bytes,
    COUNT(DISTINCT s.site || '/' || s.device || ' ' || f.proto || ' ' || f.src || ' '
          || f.src_port || ' ' || f.dst || ' ' || f.dst_port) AS flows,
    COUNT(DISTINCT s.site || '/' || s.device) AS devices";

/// The records in range (`$1`, `$2`) of device `$3` and site `$4`.
fn records(db: &dyn Reader) -> String {
    format!(
        "{} AND (CAST($4 AS TEXT) IS NULL OR s.site = $4)",
        flows_in_range(db.dialect())
    )
}

pub fn owners(db: &mut dyn Reader, range: Range, q: &OwnersQuery) -> Result<OwnersAnswer> {
    let params = [
        range.from.into(),
        range.to.into(),
        q.device.as_deref().into(),
        q.site.as_deref().into(),
        i64::from(q.limit).into(),
    ];
    let from = records(db);
    let (sockets_full, devices_full) = db.one(
        &format!(
            "SELECT SUM(CAST(owner_sockets_full AS DOUBLE PRECISION)) AS sockets,
                SUM(CAST(owner_devices_full AS DOUBLE PRECISION)) AS devices
             FROM summaries WHERE window_start_ms >= $1 AND window_start_ms < $2 AND {}
               AND (CAST($4 AS TEXT) IS NULL OR site = $4)",
            super::device_filter("", 3)
        ),
        &params[..4],
        |r| Ok((r.total("sockets")?, r.total("devices")?)),
    )?;
    let processes = db.rows(
        &format!(
            "SELECT f.owner_comm AS process, f.owner_service AS service,
                COUNT(DISTINCT f.owner_pid) AS pids, {SUMS}
             FROM {from} AND f.owner_comm IS NOT NULL
             GROUP BY f.owner_comm, f.owner_service
             ORDER BY bytes DESC, process LIMIT $5"
        ),
        &params,
        |r| {
            Ok(Process {
                process: r.text("process")?,
                service: r.opt_text("service")?,
                pids: r.u64("pids")?,
                usage: Usage::read(r)?,
            })
        },
    )?;
    let services = db.rows(
        &format!(
            "SELECT f.owner_service AS service, COUNT(DISTINCT f.owner_comm) AS processes, {SUMS}
             FROM {from} AND f.owner_service IS NOT NULL
             GROUP BY f.owner_service
             ORDER BY bytes DESC, service LIMIT $5"
        ),
        &params,
        |r| {
            Ok(Service {
                service: r.text("service")?,
                processes: r.u64("processes")?,
                usage: Usage::read(r)?,
            })
        },
    )?;
    // The top LAN devices, their names, then their top destinations in one more query.
    let top = format!(
        "SELECT s.site AS site, s.device AS device, f.owner_src_mac AS mac, {SUMS},
            COUNT(DISTINCT f.dst) AS destinations
         FROM {from} AND f.owner_src_mac IS NOT NULL
         GROUP BY s.site, s.device, f.owner_src_mac
         ORDER BY bytes DESC, site, device, mac LIMIT $5"
    );
    let mut lan_devices = db.rows(
        &format!(
            "SELECT x.*, l.vendor AS vendor, l.host_name AS host_name, l.client_id AS client_id
             FROM ({top}) x
             LEFT JOIN lan_devices l ON l.site = x.site AND l.device = x.device AND l.mac = x.mac
             ORDER BY x.bytes DESC, x.site, x.device, x.mac"
        ),
        &params,
        |r| {
            Ok(LanDevice {
                device: format!("{}/{}", r.text("site")?, r.text("device")?),
                mac: r.text("mac")?,
                vendor: r.opt_text("vendor")?,
                host_name: r.opt_text("host_name")?,
                client_id: r.opt_text("client_id")?,
                usage: Usage::read(r)?,
                destinations: r.u64("destinations")?,
                top_destinations: Vec::new(),
            })
        },
    )?;
    if !lan_devices.is_empty() {
        let sql = format!(
            "SELECT s.site || '/' || s.device AS id, f.owner_src_mac AS mac, f.dst AS addr,
                f.dst_port AS port, f.proto AS proto,
                SUM((CAST(f.fwd_bytes AS DOUBLE PRECISION) + f.rev_bytes) * s.sample_every)
                    AS bytes
             FROM {from} AND f.owner_src_mac IS NOT NULL
               AND s.site || '/' || s.device || ' ' || f.owner_src_mac IN
                   (SELECT t.site || '/' || t.device || ' ' || t.mac FROM ({top}) t)
             GROUP BY s.site, s.device, f.owner_src_mac, f.dst, f.dst_port, f.proto
             ORDER BY bytes DESC, addr, port"
        );
        let rows = db.rows(&sql, &params, |r| {
            Ok((
                r.text("id")?,
                r.text("mac")?,
                Destination {
                    addr: r.text("addr")?,
                    port: r.i64("port")?.clamp(0, 65_535) as u16,
                    proto: r.i64("proto")?.clamp(0, 255) as u8,
                    bytes: r.total("bytes")?,
                },
            ))
        })?;
        for (id, mac, d) in rows {
            if let Some(l) = lan_devices
                .iter_mut()
                .find(|l| l.device == id && l.mac == mac)
            {
                if l.top_destinations.len() < 5 {
                    l.top_destinations.push(d);
                }
            }
        }
    }
    Ok(OwnersAnswer {
        range,
        sockets_full,
        devices_full,
        processes,
        services,
        lan_devices,
    })
}

/// One service's traffic in its device's latest window (for `/metrics`).
#[derive(Debug, Clone)]
pub struct ServiceNow {
    pub site: String,
    pub device: String,
    pub service: String,
    pub bytes_per_s: f64,
    pub flows: u64,
}

/// Per device and service, the latest window's bytes per second and flow records (every part
/// of the window): costs the records of one window per device.
pub fn services_now(db: &mut dyn Reader) -> Result<Vec<ServiceNow>> {
    let days = match db.dialect() {
        super::Dialect::Sqlite => "",
        super::Dialect::Postgres => "AND f.window_start_ms = s.window_start_ms",
    };
    let sql = format!(
        "SELECT s.site AS site, s.device AS device, f.owner_service AS service,
            SUM((CAST(f.fwd_bytes AS DOUBLE PRECISION) + f.rev_bytes) * s.sample_every) AS bytes,
            MAX(s.window_len_ms) AS len, COUNT(*) AS records
         FROM device_totals t
         JOIN summaries l ON l.id = t.latest_id
         JOIN summaries s ON s.site = l.site AND s.device = l.device AND s.boot_id = l.boot_id
                          AND s.seq = l.seq AND s.window_start_ms = l.window_start_ms
         JOIN flows f ON f.summary_id = s.id {days}
         WHERE f.owner_service IS NOT NULL
         GROUP BY s.site, s.device, f.owner_service
         ORDER BY site, device, service"
    );
    db.rows(&sql, &[], |r| {
        let len = r.i64("len")?.max(1) as f64 / 1000.0;
        Ok(ServiceNow {
            site: r.text("site")?,
            device: r.text("device")?,
            service: r.text("service")?,
            bytes_per_s: r.f64("bytes")? / len,
            flows: r.u64("records")?,
        })
    })
}
