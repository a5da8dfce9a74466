//! SQLite storage: one row per summary message, one per flow record.
//!
//! WAL mode so the dashboard reads while ingest writes. Counts are stored as counted (see
//! `sample_every`); queries scale them. Dedup is the UNIQUE (site, device, boot_id, seq, part)
//! constraint, so it holds across collector restarts. The `boots` table follows each agent
//! run's `seq` as summaries are stored (same transaction), so the windows a device numbered
//! and the collector never got (gaps) are counted without scanning the summaries. `u64` fields that may exceed `i64`
//! (the random boot id) are stored bit-cast; counters are clamped to `i64::MAX`.

use super::{addr, addr_text, agent, dns, n, owner, tcp, Storage, StoreError, Write};
use rusqlite::{params, Connection, OpenFlags, Transaction};
use shared::identity::Presence;
use shared::wire::Summary;
use std::{path::Path, sync::LazyLock};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS summaries (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    site TEXT NOT NULL,
    boot_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    part INTEGER NOT NULL,
    parts INTEGER NOT NULL,
    window_start_ms INTEGER NOT NULL,
    window_len_ms INTEGER NOT NULL,
    sample_every INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    packets INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    overflow_packets INTEGER NOT NULL,
    overflow_bytes INTEGER NOT NULL,
    other_packets INTEGER NOT NULL,
    other_bytes INTEGER NOT NULL,
    other_flows INTEGER NOT NULL,
    packets_seen INTEGER NOT NULL,
    active_flows INTEGER NOT NULL,
    table_capacity INTEGER NOT NULL,
    table_full INTEGER NOT NULL,
    parse_errors INTEGER NOT NULL,
    fragments INTEGER NOT NULL,
    non_ip INTEGER NOT NULL,
    cpu_ms INTEGER NOT NULL,
    rss_kib INTEGER NOT NULL,
    spool_depth INTEGER NOT NULL,
    spool_dropped INTEGER NOT NULL,
    flow_count INTEGER NOT NULL,
    rtt_hist TEXT,
    UNIQUE (site, device, boot_id, seq, part)
);
CREATE INDEX IF NOT EXISTS summaries_time ON summaries (window_start_ms);
-- Retention goes by the collector's receive time (the agent's clock may be wrong).
CREATE INDEX IF NOT EXISTS summaries_received ON summaries (received_ms);
-- Clustered by (summary, record): inserts append, a time range reaches its records through
-- the summaries' time index, and there is no second index to keep up to date.
CREATE TABLE IF NOT EXISTS flows (
    summary_id INTEGER NOT NULL,
    n INTEGER NOT NULL,
    proto INTEGER NOT NULL,
    src TEXT NOT NULL,
    src_port INTEGER NOT NULL,
    dst TEXT NOT NULL,
    dst_port INTEGER NOT NULL,
    vlan INTEGER NOT NULL,
    vlan_inner INTEGER NOT NULL,
    ifindex INTEGER NOT NULL,
    fwd_packets INTEGER NOT NULL,
    fwd_bytes INTEGER NOT NULL,
    rev_packets INTEGER NOT NULL,
    rev_bytes INTEGER NOT NULL,
    tcp_flags INTEGER NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    rtt_min_us INTEGER,
    rtt_avg_us INTEGER,
    rtt_max_us INTEGER,
    rtt_samples INTEGER,
    PRIMARY KEY (summary_id, n)
) WITHOUT ROWID;
-- One row per agent run (boot): windows are numbered from base_seq (0 for a run first seen
-- by this schema) up to max_seq; complete counts windows with every part stored.
CREATE TABLE IF NOT EXISTS boots (
    site TEXT NOT NULL,
    device TEXT NOT NULL,
    boot_id INTEGER NOT NULL,
    base_seq INTEGER NOT NULL,
    max_seq INTEGER NOT NULL,
    complete INTEGER NOT NULL,
    first_received_ms INTEGER NOT NULL,
    last_received_ms INTEGER NOT NULL,
    PRIMARY KEY (site, device, boot_id)
);
-- Running totals per device over the stored windows (kept by inserts and retention), so
-- /metrics and the default device list cost the number of devices, not the stored history.
CREATE TABLE IF NOT EXISTS device_totals (
    site TEXT NOT NULL,
    device TEXT NOT NULL,
    packets REAL NOT NULL,
    bytes REAL NOT NULL,
    overflow_packets REAL NOT NULL,
    overflow_bytes REAL NOT NULL,
    windows INTEGER NOT NULL,
    summaries INTEGER NOT NULL,
    flow_records INTEGER NOT NULL,
    -- The device's latest window (part 0): the highest summaries.id.
    latest_id INTEGER,
    PRIMARY KEY (site, device)
);
CREATE TABLE IF NOT EXISTS presence (
    site TEXT NOT NULL,
    device TEXT NOT NULL,
    state TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (site, device)
);
";

/// `?1, ?2, …, ?n`.
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The summary's columns, then its TCP and DNS figures.
static INSERT_SUMMARY: LazyLock<String> = LazyLock::new(|| {
    let cols = format!(
        "device, site, boot_id, seq, part, parts, window_start_ms, window_len_ms, sample_every,
         received_ms, packets, bytes, overflow_packets, overflow_bytes, other_packets,
         other_bytes, other_flows, packets_seen, active_flows, table_capacity, table_full,
         parse_errors, fragments, non_ip, cpu_ms, rss_kib, spool_depth, spool_dropped,
         flow_count, rtt_hist, {}, {}, dns_hist, {}, {}",
        tcp::SUMMARY_COLUMNS.join(", "),
        dns::SUMMARY_COLUMNS.join(", "),
        owner::SUMMARY_COLUMNS.join(", "),
        agent::SUMMARY_COLUMNS.join(", ")
    );
    let n = 30
        + tcp::SUMMARY_COLUMNS.len()
        + dns::SUMMARY_COLUMNS.len()
        + 1
        + owner::SUMMARY_COLUMNS.len()
        + agent::SUMMARY_COLUMNS.len();
    format!(
        "INSERT OR IGNORE INTO summaries ({cols}) VALUES ({})",
        placeholders(n)
    )
});

/// The record's columns, then its TCP and DNS blocks.
static INSERT_FLOW: LazyLock<String> = LazyLock::new(|| {
    let cols = format!(
        "summary_id, n, proto, src, src_port, dst, dst_port, vlan, vlan_inner, ifindex,
         fwd_packets, fwd_bytes, rev_packets, rev_bytes, tcp_flags, first_seen_ms, last_seen_ms,
         rtt_min_us, rtt_avg_us, rtt_max_us, rtt_samples, {}, {}, {}",
        tcp::FLOW_COLUMNS.join(", "),
        dns::FLOW_COLUMNS.join(", "),
        owner::FLOW_COLUMNS.join(", ")
    );
    let n = 21 + tcp::FLOW_COLUMNS.len() + dns::FLOW_COLUMNS.len() + owner::FLOW_COLUMNS.len();
    format!("INSERT INTO flows ({cols}) VALUES ({})", placeholders(n))
});

/// `PRAGMA user_version` of this schema; versions 1 to 4 are migrated (see [`migrate`]),
/// any other version is refused.
pub(crate) const SCHEMA_VERSION: i64 = 5;

/// Version 3 adds the TCP columns ([`tcp`]): every table created by [`SCHEMA`] gets them by
/// `ALTER TABLE … ADD COLUMN`, a new database as an old one, so they are written once. SQLite
/// only rewrites the schema text: no row is touched; old rows read NULL (and 0 in
/// `device_totals`, which matches what they hold).
fn tcp_columns() -> String {
    add_columns(
        &tcp::SUMMARY_COLUMNS,
        &[],
        &tcp::FLOW_COLUMNS,
        &tcp::TOTAL_COLUMNS,
    )
}

/// Version 4 adds the DNS columns ([`dns`]) the same way as [`tcp_columns`].
fn dns_columns() -> String {
    add_columns(
        &dns::SUMMARY_COLUMNS,
        &["dns_hist"],
        &dns::FLOW_COLUMNS,
        &dns::TOTAL_COLUMNS,
    )
}

/// The `ALTER TABLE` statements of a block of columns: integer (then text) columns of
/// `summaries`, flow columns (the first one text, the rest integers), running sums.
fn add_columns(summary: &[&str], summary_text: &[&str], flow: &[&str], totals: &[&str]) -> String {
    let mut sql = String::new();
    for c in summary {
        sql += &format!("ALTER TABLE summaries ADD COLUMN {c} INTEGER;\n");
    }
    for c in summary_text {
        sql += &format!("ALTER TABLE summaries ADD COLUMN {c} TEXT;\n");
    }
    for (i, c) in flow.iter().enumerate() {
        let kind = if i == 0 { "TEXT" } else { "INTEGER" };
        sql += &format!("ALTER TABLE flows ADD COLUMN {c} {kind};\n");
    }
    for c in totals {
        sql += &format!("ALTER TABLE device_totals ADD COLUMN {c} REAL NOT NULL DEFAULT 0;\n");
    }
    sql
}

/// Version 4 also adds the owner columns ([`owner`]) and the `lan_devices` table.
fn owner_columns() -> String {
    let mut sql = owner::table_sql("INTEGER");
    for c in owner::SUMMARY_COLUMNS {
        sql += &format!("ALTER TABLE summaries ADD COLUMN {c} INTEGER;\n");
    }
    for (i, c) in owner::FLOW_COLUMNS.iter().enumerate() {
        let kind = if i == 0 { "INTEGER" } else { "TEXT" };
        sql += &format!("ALTER TABLE flows ADD COLUMN {c} {kind};\n");
    }
    sql
}

/// Version 1 keyed summaries by (device, boot, seq, part) without the site and had no
/// `boots`. Its rows are kept (ids too, the flow records point at them): the table is rebuilt
/// with the new key, and `boots` is filled from what is stored, each run counted from its
/// lowest stored seq (older windows may have been pruned; they are not gaps).
const MIGRATE_V1: &str = "
ALTER TABLE summaries RENAME TO summaries_v1;
DROP INDEX IF EXISTS summaries_time;
";
const MIGRATE_V1_FILL: &str = "
INSERT INTO summaries SELECT * FROM summaries_v1;
DROP TABLE summaries_v1;
INSERT INTO boots (site, device, boot_id, base_seq, max_seq, complete, first_received_ms,
                   last_received_ms)
SELECT site, device, boot_id, MIN(seq), MAX(seq), SUM(done), MIN(first), MAX(last) FROM (
    SELECT site, device, boot_id, seq, COUNT(*) >= MAX(parts) AS done,
           MIN(received_ms) AS first, MAX(received_ms) AS last
    FROM summaries GROUP BY site, device, boot_id, seq)
GROUP BY site, device, boot_id;
";

/// Adds one stored summary (`?1`..`?9`, then its TCP and DNS figures) to its device's running
/// totals.
static ADD_TOTALS: LazyLock<String> = LazyLock::new(|| {
    let extra: Vec<&str> = tcp::TOTAL_COLUMNS
        .iter()
        .chain(dns::TOTAL_COLUMNS.iter())
        .copied()
        .collect();
    let params: Vec<String> = (10..10 + extra.len()).map(|i| format!("?{i}")).collect();
    let add: Vec<String> = extra
        .iter()
        .zip(&params)
        .map(|(c, p)| format!("{c} = {c} + {p}"))
        .collect();
    format!(
        "INSERT INTO device_totals (site, device, packets, bytes, overflow_packets,
            overflow_bytes, windows, summaries, flow_records, latest_id, {})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, {})
         ON CONFLICT (site, device) DO UPDATE SET packets = packets + ?3, bytes = bytes + ?4,
            overflow_packets = overflow_packets + ?5, overflow_bytes = overflow_bytes + ?6,
            windows = windows + ?7, summaries = summaries + 1, flow_records = flow_records + ?8,
            latest_id = MAX(COALESCE(latest_id, 0), COALESCE(?9, 0)), {}",
        extra.join(", "),
        params.join(", "),
        add.join(", ")
    )
});

/// The running totals of the summaries selected by `{}` (a WHERE clause), by device.
const SUM_TOTALS: &str = "SELECT site, device, TOTAL(packets * sample_every) AS p,
    TOTAL(bytes * sample_every) AS b, TOTAL(overflow_packets * sample_every) AS op,
    TOTAL(overflow_bytes * sample_every) AS ob, SUM(part = 0) AS w, COUNT(*) AS n,
    SUM(flow_count) AS f,
    MAX(CASE WHEN part = 0 THEN id END) AS l
    FROM summaries WHERE {} GROUP BY site, device";

/// How long a write waits for a lock another connection holds before the batch fails (and
/// is retried, counted as a store error).
pub const WRITE_BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The write side. One per database: SQLite allows one writer at a time.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the database at `path` in WAL mode.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        // 16 KiB pages: fewer b-tree splits per record, about 20% faster ingest here (takes
        // effect on a new database only).
        conn.pragma_update(None, "page_size", 16384)?;
        // WAL: readers do not block the writer. FULL: a commit returns only after the WAL is
        // fsynced, because the broker is acknowledged right after the commit and then forgets
        // the message; NORMAL would let a power cut or kernel crash roll back committed (and
        // acknowledged) transactions. One fsync per batch of up to 512 messages.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(WRITE_BUSY_TIMEOUT)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let tables: i64 = conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))?;
        let mut conn = conn;
        if tables > 0 && (1..SCHEMA_VERSION).contains(&version) {
            migrate(&mut conn, version)?;
        } else if tables > 0 && version != SCHEMA_VERSION {
            return Err(StoreError::Version(version));
        }
        if tables == 0 {
            let tx = conn.transaction()?;
            tx.execute_batch(SCHEMA)?;
            tx.execute_batch(&tcp_columns())?;
            tx.execute_batch(&dns_columns())?;
            tx.execute_batch(&owner_columns())?;
            tx.execute_batch(&agent::add_columns_sql("INTEGER"))?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            tx.commit()?;
        }
        // An existing database is only read here: a collector restarted while another
        // connection holds the write lock (a backup, a stalled disk) starts, and its writer
        // waits for the lock like every other batch.
        Ok(Store { conn })
    }

    /// Starts a transaction; nothing is visible or durable until [`Batch::commit`].
    pub fn batch(&mut self) -> Result<Batch<'_>, StoreError> {
        Ok(Batch {
            tx: self.conn.transaction()?,
        })
    }

    /// Deletes summaries and flows the collector received before `before_ms` (its own
    /// clock: a window stamped in 1970 by a box without a real-time clock stays its full
    /// retention, one stamped in the far future goes when its time is up).
    pub fn prune(&mut self, before_ms: i64) -> Result<(usize, usize), StoreError> {
        let tx = self.conn.transaction()?;
        // What goes comes off the running totals, in the same transaction.
        tx.execute(
            &format!(
                "UPDATE device_totals SET packets = device_totals.packets - d.p,
                    bytes = device_totals.bytes - d.b,
                    overflow_packets = device_totals.overflow_packets - d.op,
                    overflow_bytes = device_totals.overflow_bytes - d.ob,
                    windows = device_totals.windows - d.w,
                    summaries = device_totals.summaries - d.n,
                    flow_records = device_totals.flow_records - d.f
                 FROM ({}) AS d
                 WHERE device_totals.site = d.site AND device_totals.device = d.device",
                SUM_TOTALS.replace("{}", "received_ms < ?1")
            ),
            [before_ms],
        )?;
        for (subtract, sums) in [
            (tcp::subtract_sql(), tcp::sum_totals_sql()),
            (dns::subtract_sql(), dns::sum_totals_sql()),
        ] {
            tx.execute(
                &super::subtract_totals(&subtract, &sums, "summaries", "received_ms < ?1"),
                [before_ms],
            )?;
        }
        let flows = tx.execute(
            "DELETE FROM flows WHERE summary_id IN
               (SELECT id FROM summaries WHERE received_ms < ?1)",
            [before_ms],
        )?;
        let summaries = tx.execute("DELETE FROM summaries WHERE received_ms < ?1", [before_ms])?;
        if summaries > 0 {
            // A device whose windows all went has no totals; one whose latest went (only
            // when all its windows went: the latest is the last received) has none either.
            tx.execute(
                "DELETE FROM device_totals WHERE NOT EXISTS (SELECT 1 FROM summaries s
                    WHERE s.device = device_totals.device AND s.site = device_totals.site)",
                [],
            )?;
            tx.execute(
                "UPDATE device_totals SET latest_id = (SELECT MAX(id) FROM summaries s
                    WHERE s.part = 0 AND s.device = device_totals.device
                      AND s.site = device_totals.site)
                 WHERE NOT EXISTS (SELECT 1 FROM summaries WHERE id = device_totals.latest_id)",
                [],
            )?;
        }
        // Runs that sent nothing since: their gap count goes with their data.
        tx.execute("DELETE FROM boots WHERE last_received_ms < ?1", [before_ms])?;
        tx.execute(
            "DELETE FROM lan_devices WHERE last_received_ms < ?1",
            [before_ms],
        )?;
        tx.commit()?;
        Ok((summaries, flows))
    }
}

/// Brings a version 1 to 4 database to this version in place, in one transaction (all or
/// nothing): 1 → 2 rebuilds `summaries` with the site in its key (see [`MIGRATE_V1`]), 2 → 3
/// adds the TCP columns, 3 → 4 the DNS and owner columns, 4 → 5 the agent's bad-day columns
/// ([`agent`]; old rows read NULL).
fn migrate(conn: &mut Connection, from: i64) -> Result<(), StoreError> {
    log::info!("database: migrating schema {from} to {SCHEMA_VERSION}");
    let tx = conn.transaction()?;
    if from == 1 {
        tx.execute_batch(MIGRATE_V1)?;
        tx.execute_batch(SCHEMA)?;
        tx.execute_batch(MIGRATE_V1_FILL)?;
        tx.execute(
            &format!(
                "INSERT INTO device_totals {}",
                SUM_TOTALS.replace("{}", "1")
            ),
            [],
        )?;
    }
    if from <= 2 {
        tx.execute_batch(&tcp_columns())?;
    }
    if from <= 3 {
        tx.execute_batch(&dns_columns())?;
        tx.execute_batch(&owner_columns())?;
    }
    tx.execute_batch(&agent::add_columns_sql("INTEGER"))?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// A read-only connection for queries (the HTTP side).
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

/// One write transaction.
pub struct Batch<'c> {
    tx: Transaction<'c>,
}

impl Batch<'_> {
    /// Stores a summary and its flow records; `false` if (site, device, boot, seq, part) was
    /// already stored (a duplicate delivery), in which case nothing changes.
    pub fn insert_summary(&mut self, s: &Summary, received_ms: i64) -> Result<bool, StoreError> {
        let h = &s.health;
        let hist = (!s.rtt_hist.is_empty()).then(|| {
            let v: Vec<String> = s.rtt_hist.iter().map(|b| b.to_string()).collect();
            v.join(",")
        });
        let start = n(s.window_start_ms);
        let window_tcp = tcp::WindowTcp::of(s);
        let wc = window_tcp.map(|w| w.columns());
        let w = |i: usize| wc.map(|c| c[i]);
        // Inserting a summary and its records is the whole ingest cost: one cached statement
        // each, addresses formatted once per summary.
        let window_dns = dns::WindowDns::of(s);
        let dc = dns::WindowDns::columns(window_dns.as_ref());
        let dns_hist = window_dns.as_ref().and_then(|w| w.hist.as_deref());
        let owner_full = owner::summary_values(s);
        let bad_day = agent::summary_values(s);
        let base = params![
            s.device.as_str(),
            s.site.as_str(),
            s.boot_id as i64,
            n(s.seq),
            s.part,
            s.parts,
            start,
            s.window_len_ms,
            s.sample_every,
            received_ms,
            n(s.totals.packets),
            n(s.totals.bytes),
            n(s.overflow.packets),
            n(s.overflow.bytes),
            n(s.other.packets),
            n(s.other.bytes),
            s.other_flows,
            n(h.packets_seen),
            h.active_flows,
            h.table_capacity,
            n(h.table_full),
            n(h.parse_errors),
            n(h.fragments),
            n(h.non_ip),
            h.cpu_ms,
            h.rss_kib,
            h.spool_depth,
            n(h.spool_dropped),
            s.flows.len() as i64,
            hist,
            w(0),
            w(1),
            w(2),
            w(3),
            w(4),
            w(5),
            w(6),
            w(7),
            w(8),
            w(9),
            w(10),
        ];
        let all: Vec<&dyn rusqlite::ToSql> = base
            .iter()
            .copied()
            .chain(dc.iter().map(|v| v as &dyn rusqlite::ToSql))
            .chain(std::iter::once(&dns_hist as &dyn rusqlite::ToSql))
            .chain(owner_full.iter().map(|v| v as &dyn rusqlite::ToSql))
            .chain(bad_day.iter().map(|v| v as &dyn rusqlite::ToSql))
            .collect();
        let inserted = self
            .tx
            .prepare_cached(&INSERT_SUMMARY)?
            .execute(all.as_slice())?;
        if inserted == 0 {
            return Ok(false);
        }
        let id = self.tx.last_insert_rowid();
        self.track_seq(s, received_ms)?;
        let scaled = |v: u64| n(v) as f64 * f64::from(s.sample_every);
        let t = tcp::WindowTcp::totals(window_tcp, s.sample_every);
        let d = dns::WindowDns::totals(window_dns.as_ref(), s.sample_every);
        let base = params![
            s.site.as_str(),
            s.device.as_str(),
            scaled(s.totals.packets),
            scaled(s.totals.bytes),
            scaled(s.overflow.packets),
            scaled(s.overflow.bytes),
            i64::from(s.part == 0),
            s.flows.len() as i64,
            (s.part == 0).then_some(id),
            t[0],
            t[1],
            t[2],
            t[3],
            t[4],
            t[5],
            t[6],
            t[7],
            t[8],
        ];
        let all: Vec<&dyn rusqlite::ToSql> = base
            .iter()
            .copied()
            .chain(d.iter().map(|v| v as &dyn rusqlite::ToSql))
            .collect();
        self.tx
            .prepare_cached(&ADD_TOTALS)?
            .execute(all.as_slice())?;
        let addrs: Vec<String> = s.addrs.iter().map(addr_text).collect();
        let mut stmt = self.tx.prepare_cached(&INSERT_FLOW)?;
        for (i, f) in s.flows.iter().enumerate() {
            let rtt = f.rtt;
            let t = tcp::flow_ints(&f.tcp);
            let d = f.dns.as_ref().map(dns::FlowDns::of);
            let di = dns::FlowDns::ints(d.as_ref());
            let name = d.as_ref().and_then(|d| d.name.as_deref());
            let base = params![
                id,
                i as i64,
                f.proto,
                addr(&addrs, f.src),
                f.src_port,
                addr(&addrs, f.dst),
                f.dst_port,
                f.vlan,
                f.vlan_inner,
                f.ifindex,
                n(f.fwd.packets),
                n(f.fwd.bytes),
                n(f.rev.packets),
                n(f.rev.bytes),
                f.tcp_flags,
                start.saturating_add(f.first_seen_ms),
                start.saturating_add(f.last_seen_ms),
                rtt.map(|r| r.min_us),
                rtt.map(|r| r.avg_us),
                rtt.map(|r| r.max_us),
                rtt.map(|r| r.samples),
                tcp::outcome(&f.tcp),
                t[0],
                t[1],
                t[2],
                t[3],
                t[4],
                t[5],
                t[6],
                t[7],
                t[8],
                t[9],
                name,
            ];
            let o = owner::FlowOwner::of(&f.owner, s).unwrap_or_default();
            let all: Vec<&dyn rusqlite::ToSql> = base
                .iter()
                .copied()
                .chain(di.iter().map(|v| v as &dyn rusqlite::ToSql))
                .chain(std::iter::once(&o.pid as &dyn rusqlite::ToSql))
                .chain(o.text.iter().map(|v| v as &dyn rusqlite::ToSql))
                .collect();
            stmt.execute(all.as_slice())?;
        }
        drop(stmt);
        let mut up = self
            .tx
            .prepare_cached(&owner::UPSERT_SQL.replace('$', "?"))?;
        for (mac, vendor, host, client) in owner::lan_devices(s) {
            up.execute(params![
                s.site.as_str(),
                s.device.as_str(),
                mac,
                vendor,
                host,
                client,
                received_ms
            ])?;
        }
        Ok(true)
    }

    /// Moves the run's `boots` row: its highest seq, and one more complete window once every
    /// part of this window is stored.
    fn track_seq(&mut self, s: &Summary, received_ms: i64) -> Result<(), StoreError> {
        let (site, device, boot, seq) = (
            s.site.as_str(),
            s.device.as_str(),
            s.boot_id as i64,
            n(s.seq),
        );
        let parts: i64 = self
            .tx
            .prepare_cached(
                "SELECT COUNT(*) FROM summaries
                 WHERE site = ?1 AND device = ?2 AND boot_id = ?3 AND seq = ?4",
            )?
            .query_row(params![site, device, boot, seq], |r| r.get(0))?;
        let complete = i64::from(parts == i64::from(s.parts));
        self.tx
            .prepare_cached(
                "INSERT INTO boots (site, device, boot_id, base_seq, max_seq, complete,
                                    first_received_ms, last_received_ms)
                 VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6, ?6)
                 ON CONFLICT (site, device, boot_id) DO UPDATE SET
                    max_seq = MAX(max_seq, ?4), complete = complete + ?5,
                    last_received_ms = MAX(last_received_ms, ?6)",
            )?
            .execute(params![site, device, boot, seq, complete, received_ms])?;
        Ok(())
    }

    /// Records a device's own online/offline report.
    pub fn set_presence(
        &mut self,
        site: &str,
        device: &str,
        state: Presence,
        received_ms: i64,
    ) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT INTO presence (site, device, state, received_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (site, device) DO UPDATE SET state = ?3, received_ms = ?4",
            )?
            .execute(params![site, device, state.as_str(), received_ms])?;
        Ok(())
    }

    pub fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit()?)
    }
}

impl Storage for Store {
    fn write(&mut self, items: &[Write<'_>], received_ms: i64) -> Result<Vec<bool>, StoreError> {
        let mut batch = self.batch()?;
        let mut stored = Vec::with_capacity(items.len());
        for item in items {
            stored.push(match *item {
                Write::Summary(s) => batch.insert_summary(s, received_ms)?,
                Write::Presence {
                    site,
                    device,
                    state,
                } => {
                    batch.set_presence(site, device, state, received_ms)?;
                    true
                }
            });
        }
        batch.commit()?;
        Ok(stored)
    }

    fn prune(&mut self, before_ms: i64) -> Result<(usize, usize), StoreError> {
        Store::prune(self, before_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::wire::{Addr, Count, FlowRecord, Health};

    fn summary(seq: u64, start: u64) -> Summary {
        Summary {
            device: "d".try_into().unwrap(),
            site: "s".try_into().unwrap(),
            boot_id: u64::MAX,
            seq,
            part: 0,
            parts: 1,
            window_start_ms: start,
            window_len_ms: 10_000,
            sample_every: 1,
            totals: Count::default(),
            overflow: Count::default(),
            other: Count::default(),
            other_flows: 0,
            health: Health::default(),
            addrs: vec![Addr::V4([10, 0, 0, 1]), Addr::V4([10, 0, 0, 2])],
            flows: vec![
                FlowRecord {
                    src: 0,
                    dst: 1,
                    ..Default::default()
                };
                3
            ],
            rtt_hist: heapless::Vec::new(),
            tcp_health: false,
            dns_hist: Default::default(),
            dns: false,
            names: Default::default(),
            devices: Default::default(),
        }
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("efc-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("s.db")
    }

    fn count(conn: &Connection, table: &str) -> i64 {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn dedups_and_prunes_by_receive_time() {
        let path = temp("prune");
        let mut store = Store::open(&path).unwrap();
        let mut b = store.batch().unwrap();
        // Stamped far in the future but received long ago; stamped in 1970 (no real-time
        // clock) but received recently.
        assert!(b.insert_summary(&summary(0, 1 << 62), 1_000).unwrap());
        assert!(b.insert_summary(&summary(1, 2_000), 2_000).unwrap());
        assert!(
            !b.insert_summary(&summary(1, 2_000), 2_000).unwrap(),
            "a duplicate"
        );
        b.commit().unwrap();
        assert_eq!(store.prune(1_500).unwrap(), (1, 3));
        let left: i64 = store
            .conn
            .query_row("SELECT window_start_ms FROM summaries", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            left, 2_000,
            "the far-future window went, the 1970 one stayed"
        );
        assert_eq!(running_totals(&store.conn), scanned_totals(&store.conn));
        assert_eq!(count(&store.conn, "summaries"), 1);
        assert_eq!(count(&store.conn, "flows"), 3);
        // Still deduplicated after a reopen (the key is in the database, not in memory).
        drop(store);
        let mut store = Store::open(&path).unwrap();
        let mut b = store.batch().unwrap();
        assert!(!b.insert_summary(&summary(1, 2_000), 0).unwrap());
        b.commit().unwrap();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    type Totals = Vec<(String, String, f64, f64, i64, i64, i64, Option<i64>)>;

    /// The rows of `sql` (site, device, packets, bytes, windows, summaries, flow records,
    /// latest id), in order.
    fn totals_of(conn: &Connection, sql: &str) -> Totals {
        let mut st = conn.prepare(sql).unwrap();
        let rows = st.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        });
        rows.unwrap().map(Result::unwrap).collect()
    }

    fn running_totals(conn: &Connection) -> Totals {
        totals_of(
            conn,
            "SELECT site, device, packets, bytes, windows, summaries, flow_records, latest_id
             FROM device_totals ORDER BY site, device",
        )
    }

    fn scanned_totals(conn: &Connection) -> Totals {
        let sql = SUM_TOTALS.replace("{}", "1");
        totals_of(
            conn,
            &format!("SELECT site, device, p, b, w, n, f, l FROM ({sql}) ORDER BY site, device"),
        )
    }

    #[test]
    fn running_totals_follow_inserts_parts_and_retention() {
        let path = temp("totals");
        let mut store = Store::open(&path).unwrap();
        let mut b = store.batch().unwrap();
        for seq in 0..20u64 {
            let mut s = summary(seq, seq * 10_000);
            s.totals.packets = seq + 1;
            s.totals.bytes = 1_000 * seq;
            s.sample_every = 1 + (seq % 3) as u32;
            s.device = if seq % 2 == 0 { "a" } else { "b" }.try_into().unwrap();
            assert!(b.insert_summary(&s, seq as i64).unwrap());
            // A second part of the same window: not a window of its own.
            s.part = 1;
            s.parts = 2;
            assert!(b.insert_summary(&s, seq as i64).unwrap());
        }
        b.commit().unwrap();
        let before = running_totals(&store.conn);
        assert_eq!(before, scanned_totals(&store.conn));
        assert_eq!((before[0].4, before[0].5, before[0].6), (10, 20, 60));
        assert_eq!(store.prune(7).unwrap().0, 14);
        assert_eq!(running_totals(&store.conn), scanned_totals(&store.conn));
        assert_eq!(store.prune(19).unwrap().0, 24);
        let left = running_totals(&store.conn);
        assert_eq!(left, scanned_totals(&store.conn));
        assert_eq!(left.len(), 1, "device a's windows all went: {left:?}");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn the_site_is_part_of_the_key_and_gaps_are_tracked() {
        let path = temp("identity");
        let mut store = Store::open(&path).unwrap();
        let mut b = store.batch().unwrap();
        let mut other_site = summary(0, 1_000);
        other_site.site = "t".try_into().unwrap();
        assert!(b.insert_summary(&summary(0, 1_000), 0).unwrap());
        assert!(
            b.insert_summary(&other_site, 0).unwrap(),
            "same device name, boot and seq in another site is another message"
        );
        // seq 1 and 3 of s/d, not 2: one gap; seq 4 in two parts, one missing: another.
        assert!(b.insert_summary(&summary(1, 2_000), 0).unwrap());
        assert!(b.insert_summary(&summary(3, 4_000), 0).unwrap());
        let mut part = summary(4, 5_000);
        part.parts = 2;
        assert!(b.insert_summary(&part, 0).unwrap());
        assert!(!b.insert_summary(&summary(3, 4_000), 0).unwrap());
        b.commit().unwrap();
        let gaps = |store: &Store, site: &str| -> i64 {
            store
                .conn
                .query_row(
                    "SELECT max_seq + 1 - base_seq - complete FROM boots WHERE site = ?1",
                    [site],
                    |r| r.get(0),
                )
                .unwrap()
        };
        assert_eq!(gaps(&store, "s"), 2);
        assert_eq!(gaps(&store, "t"), 0);
        let mut b = store.batch().unwrap();
        part.part = 1;
        assert!(b.insert_summary(&part, 0).unwrap());
        assert!(b.insert_summary(&summary(2, 3_000), 0).unwrap());
        b.commit().unwrap();
        assert_eq!(gaps(&store, "s"), 0, "late arrivals close the gaps");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn migrates_a_version_1_database() {
        let path = temp("v1");
        {
            // Version 1's summaries table: the same columns, keyed without the site.
            let conn = Connection::open(&path).unwrap();
            let v2 = SCHEMA.split("CREATE INDEX").next().unwrap();
            let v1 = v2.replace(
                "UNIQUE (site, device, boot_id, seq, part)",
                "UNIQUE (device, boot_id, seq, part)",
            );
            conn.execute_batch(&v1).unwrap();
            conn.execute_batch(
                "CREATE INDEX summaries_time ON summaries (window_start_ms);
                 CREATE TABLE flows (summary_id INTEGER NOT NULL, n INTEGER NOT NULL,
                   PRIMARY KEY (summary_id, n)) WITHOUT ROWID;",
            )
            .unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            for seq in [5i64, 6, 8] {
                old_window(&conn, seq, 0);
            }
        }
        let mut store = Store::open(&path).unwrap();
        let (version, rows, gaps): (i64, i64, i64) = store
            .conn
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version), COUNT(*),
                        (SELECT max_seq + 1 - base_seq - complete FROM boots)
                 FROM summaries",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            (version, rows, gaps),
            (SCHEMA_VERSION, 3, 1),
            "rows kept, counted from the lowest stored seq: seq 7 is the gap"
        );
        let totals = running_totals(&store.conn);
        assert_eq!(totals.len(), 1, "the migration fills the running totals");
        assert_eq!(totals, scanned_totals(&store.conn));
        let mut b = store.batch().unwrap();
        assert!(
            !b.insert_summary(&summary(5, 0), 0).unwrap(),
            "still deduplicated"
        );
        b.commit().unwrap();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// One window of device s/d (boot -1) as an older schema stored it: 1 packet, 1 byte.
    fn old_window(conn: &Connection, seq: i64, flow_count: i64) {
        conn.execute(
            "INSERT INTO summaries (device, site, boot_id, seq, part, parts,
               window_start_ms, window_len_ms, sample_every, received_ms, packets, bytes,
               overflow_packets, overflow_bytes, other_packets, other_bytes, other_flows,
               packets_seen, active_flows, table_capacity, table_full, parse_errors,
               fragments, non_ip, cpu_ms, rss_kib, spool_depth, spool_dropped, flow_count)
             VALUES ('d', 's', -1, ?1, 0, 1, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                     0, 0, 0, 0, 0, 0, 0, ?2)",
            [seq, flow_count],
        )
        .unwrap();
    }

    /// The running totals of [`old_window`]'s device as an older schema stored them.
    fn old_totals(conn: &Connection, flow_records: i64) {
        conn.execute(
            "INSERT INTO device_totals (site, device, packets, bytes, overflow_packets,
               overflow_bytes, windows, summaries, flow_records, latest_id)
             VALUES ('s', 'd', 1, 1, 0, 0, 1, 1, ?1, 1)",
            [flow_records],
        )
        .unwrap();
    }

    /// A block's running sums as stored (`columns`), and as a scan of the summaries finds
    /// them (`sums`, aliased `{alias}0`, `{alias}1`, ...).
    fn block_totals(
        conn: &Connection,
        columns: &[&str],
        sums: &str,
        alias: char,
    ) -> (Vec<f64>, Vec<f64>) {
        let read = |sql: &str| -> Vec<f64> {
            let mut st = conn.prepare(sql).unwrap();
            let rows = st.query_map([], |r| {
                (0..columns.len())
                    .map(|i| r.get::<_, f64>(i))
                    .collect::<Result<Vec<_>, _>>()
            });
            rows.unwrap().flat_map(Result::unwrap).collect()
        };
        let running = read(&format!(
            "SELECT {} FROM device_totals ORDER BY site, device",
            columns.join(", ")
        ));
        let aliases: Vec<String> = (0..columns.len()).map(|i| format!("{alias}{i}")).collect();
        let scanned = read(&format!(
            "SELECT {} FROM (SELECT site, device, {sums}
               FROM summaries GROUP BY site, device) ORDER BY site, device",
            aliases.join(", ")
        ));
        (running, scanned)
    }

    /// The TCP running sums as stored, and as a scan of the summaries finds them.
    fn tcp_totals(conn: &Connection) -> (Vec<f64>, Vec<f64>) {
        block_totals(conn, &tcp::TOTAL_COLUMNS, &tcp::sum_totals_sql(), 't')
    }

    #[test]
    fn migrates_a_version_2_database_in_place_and_keeps_tcp_totals() {
        use shared::wire::{Outcome, Tcp};
        let path = temp("v2");
        {
            // Version 2: the tables without the TCP columns, and a window stored in it.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
            old_window(&conn, 0, 1);
            conn.execute(
                "INSERT INTO flows (summary_id, n, proto, src, src_port, dst, dst_port, vlan,
                   vlan_inner, ifindex, fwd_packets, fwd_bytes, rev_packets, rev_bytes,
                   tcp_flags, first_seen_ms, last_seen_ms)
                 VALUES (1, 0, 6, 'a', 1, 'b', 2, 0, 0, 0, 1, 1, 0, 0, 2, 0, 0)",
                [],
            )
            .unwrap();
            old_totals(&conn, 1);
        }
        let mut store = Store::open(&path).unwrap();
        let (version, old_outcome, old_window): (i64, Option<String>, Option<i64>) = store
            .conn
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version), f.tcp_outcome,
                        s.tcp_established
                 FROM flows f JOIN summaries s ON s.id = f.summary_id",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            (version, old_outcome, old_window),
            (SCHEMA_VERSION, None, None),
            "the old rows stay, without TCP figures"
        );
        // New windows with TCP health beside it, then retention takes the first ones.
        let mut b = store.batch().unwrap();
        for seq in 1..4u64 {
            let mut s = summary(seq, seq * 10_000);
            s.tcp_health = true;
            s.sample_every = 2;
            s.flows[0].proto = 6;
            s.flows[0].tcp = Some(Tcp {
                outcome: Outcome::Refused,
                decided: true,
                ..Tcp::default()
            });
            s.flows[1].proto = 6;
            let mut retrans = Tcp::default();
            retrans.fwd.retrans.packets = seq;
            retrans.fwd.retrans.bytes = 100 * seq;
            s.flows[1].tcp = Some(retrans);
            assert!(b.insert_summary(&s, seq as i64 * 10).unwrap());
        }
        b.commit().unwrap();
        let (running, scanned) = tcp_totals(&store.conn);
        assert_eq!(running, scanned);
        assert_eq!(
            running,
            [3.0, 0.0, 3.0, 0.0, 0.0, 0.0, 3.0, 12.0, 1_200.0],
            "3 windows, 3 refused, 3 first seen without a handshake, (1 + 2 + 3) x 2 segments"
        );
        assert_eq!(store.prune(15).unwrap(), (2, 4));
        let (running, scanned) = tcp_totals(&store.conn);
        assert_eq!(running, scanned);
        assert_eq!(running, [2.0, 0.0, 2.0, 0.0, 0.0, 0.0, 2.0, 10.0, 1_000.0]);
        drop(store);
        assert!(
            Store::open(&path).is_ok(),
            "the migrated database opens as it is"
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// The DNS running sums as stored, and as a scan of the summaries finds them.
    fn dns_totals(conn: &Connection) -> (Vec<f64>, Vec<f64>) {
        block_totals(conn, &dns::TOTAL_COLUMNS, &dns::sum_totals_sql(), 'd')
    }

    #[test]
    fn migrates_a_version_3_database_in_place_and_keeps_dns_totals() {
        use shared::wire::{Dns, DnsName, Latency};
        let path = temp("v3");
        {
            // Version 3: the tables with the TCP columns, without the DNS ones, and a window.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.execute_batch(&tcp_columns()).unwrap();
            conn.pragma_update(None, "user_version", 3).unwrap();
            old_window(&conn, 0, 0);
            old_totals(&conn, 0);
        }
        let mut store = Store::open(&path).unwrap();
        let (version, old_window): (i64, Option<i64>) = store
            .conn
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version), dns_queries
                 FROM summaries",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            (version, old_window),
            (SCHEMA_VERSION, None),
            "the old row stays, without DNS figures"
        );
        assert_eq!(
            count(&store.conn, "lan_devices"),
            0,
            "the owners' table made"
        );
        let mut b = store.batch().unwrap();
        for seq in 1..4u64 {
            let mut s = summary(seq, seq * 10_000);
            s.dns = true;
            s.sample_every = 2;
            s.dns_hist = [0, 0, 0, 1].into_iter().collect();
            s.health.dns_malformed = 1;
            s.flows[0].proto = 17;
            s.flows[0].dst_port = 53;
            s.flows[0].dns = Some(Dns {
                queries: 3,
                responses: 2,
                nxdomain: 1,
                servfail: 1,
                unanswered: 1,
                qtype: 28,
                latency: Some(Latency {
                    min_us: 9,
                    avg_us: 10,
                    max_us: 12,
                    samples: 2,
                }),
                name: DnsName::new("Example.COM").unwrap(),
                ..Dns::default()
            });
            assert!(b.insert_summary(&s, seq as i64 * 10).unwrap());
        }
        b.commit().unwrap();
        let (running, scanned) = dns_totals(&store.conn);
        assert_eq!(running, scanned);
        assert_eq!(
            running,
            [3.0, 18.0, 12.0, 0.0, 6.0, 6.0, 0.0, 0.0, 6.0, 6.0],
            "3 windows; messages x 2 (sampled 1 in 2); latency samples as they are"
        );
        let row: (String, i64, i64, i64, Option<String>, i64) = store
            .conn
            .query_row(
                "SELECT f.dns_name, f.dns_qtype, f.dns_lat_avg_us, s.dns_lat_sum_us, s.dns_hist,
                        s.dns_malformed
                 FROM flows f JOIN summaries s ON s.id = f.summary_id WHERE f.dns_name IS NOT NULL
                 LIMIT 1",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            row,
            ("example.com".into(), 28, 10, 20, Some("0,0,0,1".into()), 1),
            "names in lower case"
        );
        assert_eq!(store.prune(15).unwrap(), (2, 3));
        let (running, scanned) = dns_totals(&store.conn);
        assert_eq!(running, scanned);
        assert_eq!(running, [2.0, 12.0, 8.0, 0.0, 4.0, 4.0, 0.0, 0.0, 4.0, 4.0]);
        drop(store);
        assert!(Store::open(&path).is_ok(), "this version opens as it is");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn migrates_a_version_4_database_in_place_and_keeps_the_agents_bad_days() {
        let path = temp("v4");
        {
            // Version 4: TCP, DNS and owner columns, without the bad-day ones, and a window.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.execute_batch(&tcp_columns()).unwrap();
            conn.execute_batch(&dns_columns()).unwrap();
            conn.execute_batch(&owner_columns()).unwrap();
            conn.pragma_update(None, "user_version", 4).unwrap();
            old_window(&conn, 0, 0);
        }
        let mut store = Store::open(&path).unwrap();
        let (version, old): (i64, Option<i64>) = store
            .conn
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version), reclaimed FROM summaries",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((version, old), (SCHEMA_VERSION, None), "the old row stays");
        let mut b = store.batch().unwrap();
        let mut s = summary(1, 10_000);
        s.health.spool_fallback = true;
        s.health.spool_write_errors = 3;
        s.health.clock_step_ms = -5_000;
        s.health.clock_steps = 2;
        s.health.reattached = 4;
        s.health.header_excess = 5;
        s.health.reclaimed = 6;
        assert!(b.insert_summary(&s, 10).unwrap());
        b.commit().unwrap();
        let row: [i64; 7] = store
            .conn
            .query_row(
                &format!(
                    "SELECT {} FROM summaries WHERE reclaimed IS NOT NULL",
                    agent::SUMMARY_COLUMNS.join(", ")
                ),
                [],
                |r| {
                    let mut v = [0; 7];
                    for (i, x) in v.iter_mut().enumerate() {
                        *x = r.get(i)?;
                    }
                    Ok(v)
                },
            )
            .unwrap();
        assert_eq!(row, [1, 3, -5_000, 2, 4, 5, 6]);
        drop(store);
        assert!(Store::open(&path).is_ok(), "this version opens as it is");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn refuses_a_database_of_another_schema_version() {
        let path = temp("version");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(Store::open(&path), Err(StoreError::Version(99))));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
