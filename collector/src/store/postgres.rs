//! PostgreSQL storage: the same tables and columns as SQLite's (see [`super::sqlite`]), for a
//! fleet whose collectors share one database.
//!
//! - `summaries` and `flows` are partitioned by day of `window_start_ms` (declarative range
//!   partitions `summaries_pYYYYMMDD`, `flows_pYYYYMMDD`); retention drops a day's two tables
//!   instead of deleting rows. Partitions are made on demand for yesterday, today and tomorrow
//!   (UTC); a window stamped outside that (a box without a real-time clock, one far in the
//!   future, a backlog days old) goes to the `_default` partitions, which retention thins by
//!   receive time like SQLite does.
//! - A UNIQUE constraint on a partitioned table must hold the partition key, so the dedup key
//!   is (site, device, boot_id, seq, part, window_start_ms): every copy of a message carries the
//!   same window start, so copies meet in one partition and the key still dedups across
//!   collectors. `flows` carries its summary's `window_start_ms` too (its partition key).
//! - A batch is one transaction: summaries by one multi-row `INSERT … ON CONFLICT DO NOTHING
//!   RETURNING`, their records by binary `COPY`, then the runs' gap bookkeeping (`boots`) and
//!   the running totals (`device_totals`) for the rows actually inserted. Keys are sorted, so
//!   collectors storing overlapping batches take row locks in one order; a deadlock or
//!   serialization failure is retried. The `boots` upsert locks the run's row before the
//!   stored parts of a multi-part window are counted, so of two collectors storing its last
//!   two parts at once the second (which then sees the first's commit) completes it.
//! - Integers are BIGINT, the running totals DOUBLE PRECISION, everything else TEXT: the read
//!   side reads every integer as i64 in both databases.
//!
//! The `postgres` client runs its own small runtime: call this only from a plain thread (the
//! ingest writer), never on a tokio worker.

use super::{addr, addr_text, agent, dns, n, owner, tcp, Storage, StoreError, Write};
use postgres::{
    binary_copy::BinaryCopyInWriter, error::SqlState, types::ToSql, types::Type, Client, NoTls,
    Statement, Transaction,
};
use shared::wire::Summary;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// The schema version this collector writes (table `edgeflow_schema`); version 1 gets the
/// TCP columns added in place (see [`tcp_columns`]), versions 1 and 2 the DNS ones
/// ([`dns_columns`]), versions 1 to 3 the agent's bad-day ones ([`agent`]).
pub const SCHEMA_VERSION: i64 = 4;

/// Version 2's TCP columns ([`tcp`]), added to the tables [`SCHEMA`] makes, in a new database
/// as in an old one. On a partitioned table the columns go to every partition; nullable
/// columns and constant defaults are catalog changes, no row is rewritten.
fn tcp_columns() -> String {
    add_columns(
        &tcp::SUMMARY_COLUMNS,
        &[],
        &tcp::FLOW_COLUMNS,
        &tcp::TOTAL_COLUMNS,
    )
}

/// Version 3's DNS columns ([`dns`]), added as [`tcp_columns`] adds the TCP ones.
fn dns_columns() -> String {
    add_columns(
        &dns::SUMMARY_COLUMNS,
        &["dns_hist"],
        &dns::FLOW_COLUMNS,
        &dns::TOTAL_COLUMNS,
    )
}

/// One `ALTER TABLE` per table for a block of columns: integer (then text) columns of
/// `summaries`, flow columns (the first one text, the rest integers), running sums.
fn add_columns(summary: &[&str], summary_text: &[&str], flow: &[&str], totals: &[&str]) -> String {
    let add =
        |table: &str, cols: Vec<String>| format!("ALTER TABLE {table} {};\n", cols.join(", "));
    let summaries = summary
        .iter()
        .map(|c| format!("ADD COLUMN {c} BIGINT"))
        .chain(summary_text.iter().map(|c| format!("ADD COLUMN {c} TEXT")))
        .collect();
    let flows = flow
        .iter()
        .enumerate()
        .map(|(i, c)| format!("ADD COLUMN {c} {}", if i == 0 { "TEXT" } else { "BIGINT" }))
        .collect();
    let totals = totals
        .iter()
        .map(|c| format!("ADD COLUMN {c} DOUBLE PRECISION NOT NULL DEFAULT 0"))
        .collect();
    add("summaries", summaries) + &add("flows", flows) + &add("device_totals", totals)
}

/// Version 3 also adds the owner columns ([`owner`]) and the `lan_devices` table.
fn owner_columns() -> String {
    let cols: Vec<String> = owner::FLOW_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("ADD COLUMN {c} {}", if i == 0 { "BIGINT" } else { "TEXT" }))
        .collect();
    let full: Vec<String> = owner::SUMMARY_COLUMNS
        .iter()
        .map(|c| format!("ADD COLUMN {c} BIGINT"))
        .collect();
    owner::table_sql("BIGINT")
        + &format!("ALTER TABLE flows {};\n", cols.join(", "))
        + &format!("ALTER TABLE summaries {};\n", full.join(", "))
}

const DAY_MS: i64 = 86_400_000;

/// Key of the advisory lock that serializes schema and partition changes between collectors.
const DDL_LOCK: i64 = 0x6564_6765_666c_6f77; // "edgeflow"

/// Integer columns of `summaries` after device and site, in insert order.
const SUMMARY_INTS: [&str; 27] = [
    "boot_id",
    "seq",
    "part",
    "parts",
    "window_start_ms",
    "window_len_ms",
    "sample_every",
    "received_ms",
    "packets",
    "bytes",
    "overflow_packets",
    "overflow_bytes",
    "other_packets",
    "other_bytes",
    "other_flows",
    "packets_seen",
    "active_flows",
    "table_capacity",
    "table_full",
    "parse_errors",
    "fragments",
    "non_ip",
    "cpu_ms",
    "rss_kib",
    "spool_depth",
    "spool_dropped",
    "flow_count",
];

const SCHEMA: &str = "
CREATE TABLE edgeflow_schema (version BIGINT NOT NULL);
CREATE SEQUENCE summaries_id_seq AS BIGINT;
CREATE TABLE summaries (
    id BIGINT NOT NULL DEFAULT nextval('summaries_id_seq'),
    device TEXT NOT NULL,
    site TEXT NOT NULL,
    boot_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    part BIGINT NOT NULL,
    parts BIGINT NOT NULL,
    window_start_ms BIGINT NOT NULL,
    window_len_ms BIGINT NOT NULL,
    sample_every BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    packets BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    overflow_packets BIGINT NOT NULL,
    overflow_bytes BIGINT NOT NULL,
    other_packets BIGINT NOT NULL,
    other_bytes BIGINT NOT NULL,
    other_flows BIGINT NOT NULL,
    packets_seen BIGINT NOT NULL,
    active_flows BIGINT NOT NULL,
    table_capacity BIGINT NOT NULL,
    table_full BIGINT NOT NULL,
    parse_errors BIGINT NOT NULL,
    fragments BIGINT NOT NULL,
    non_ip BIGINT NOT NULL,
    cpu_ms BIGINT NOT NULL,
    rss_kib BIGINT NOT NULL,
    spool_depth BIGINT NOT NULL,
    spool_dropped BIGINT NOT NULL,
    flow_count BIGINT NOT NULL,
    rtt_hist TEXT,
    UNIQUE (site, device, boot_id, seq, part, window_start_ms)
) PARTITION BY RANGE (window_start_ms);
ALTER SEQUENCE summaries_id_seq OWNED BY summaries.id;
CREATE INDEX summaries_id ON summaries (id);
CREATE INDEX summaries_time ON summaries (window_start_ms);
CREATE INDEX summaries_received ON summaries (received_ms);
CREATE TABLE summaries_default PARTITION OF summaries DEFAULT;
-- No key of their own: a summary's records are written once, by the transaction that
-- inserted the summary. The index on summary_id keeps one entry per summary (B-tree
-- deduplication), so it costs little per record.
CREATE TABLE flows (
    summary_id BIGINT NOT NULL,
    n BIGINT NOT NULL,
    proto BIGINT NOT NULL,
    src TEXT NOT NULL,
    src_port BIGINT NOT NULL,
    dst TEXT NOT NULL,
    dst_port BIGINT NOT NULL,
    vlan BIGINT NOT NULL,
    vlan_inner BIGINT NOT NULL,
    ifindex BIGINT NOT NULL,
    fwd_packets BIGINT NOT NULL,
    fwd_bytes BIGINT NOT NULL,
    rev_packets BIGINT NOT NULL,
    rev_bytes BIGINT NOT NULL,
    tcp_flags BIGINT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    rtt_min_us BIGINT,
    rtt_avg_us BIGINT,
    rtt_max_us BIGINT,
    rtt_samples BIGINT,
    window_start_ms BIGINT NOT NULL
) PARTITION BY RANGE (window_start_ms);
CREATE INDEX flows_summary ON flows (summary_id);
CREATE TABLE flows_default PARTITION OF flows DEFAULT;
CREATE TABLE boots (
    site TEXT NOT NULL,
    device TEXT NOT NULL,
    boot_id BIGINT NOT NULL,
    base_seq BIGINT NOT NULL,
    max_seq BIGINT NOT NULL,
    complete BIGINT NOT NULL,
    first_received_ms BIGINT NOT NULL,
    last_received_ms BIGINT NOT NULL,
    PRIMARY KEY (site, device, boot_id)
);
CREATE TABLE device_totals (
    site TEXT NOT NULL,
    device TEXT NOT NULL,
    packets DOUBLE PRECISION NOT NULL,
    bytes DOUBLE PRECISION NOT NULL,
    overflow_packets DOUBLE PRECISION NOT NULL,
    overflow_bytes DOUBLE PRECISION NOT NULL,
    windows BIGINT NOT NULL,
    summaries BIGINT NOT NULL,
    flow_records BIGINT NOT NULL,
    latest_id BIGINT,
    PRIMARY KEY (site, device)
);
CREATE TABLE presence (
    site TEXT NOT NULL,
    device TEXT NOT NULL,
    state TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (site, device)
);
";

/// The running totals of the summaries in table `{t}` selected by `{w}`, by device.
const SUM_TOTALS: &str = "SELECT site, device,
    COALESCE(SUM(packets::float8 * sample_every), 0) AS p,
    COALESCE(SUM(bytes::float8 * sample_every), 0) AS b,
    COALESCE(SUM(overflow_packets::float8 * sample_every), 0) AS op,
    COALESCE(SUM(overflow_bytes::float8 * sample_every), 0) AS ob,
    COUNT(*) FILTER (WHERE part = 0) AS w, COUNT(*) AS n, SUM(flow_count)::bigint AS f
    FROM {t} WHERE {w} GROUP BY site, device";

/// Takes what `SUM_TOTALS` selects off the running totals.
const SUBTRACT_TOTALS: &str = "UPDATE device_totals SET packets = device_totals.packets - d.p,
    bytes = device_totals.bytes - d.b,
    overflow_packets = device_totals.overflow_packets - d.op,
    overflow_bytes = device_totals.overflow_bytes - d.ob,
    windows = device_totals.windows - d.w,
    summaries = device_totals.summaries - d.n,
    flow_records = device_totals.flow_records - d.f
    FROM ({}) AS d
    WHERE device_totals.site = d.site AND device_totals.device = d.device";

/// Takes the TCP running sums of the summaries in table `t` selected by `w` off
/// `device_totals`.
fn subtract_tcp(t: &str, w: &str) -> String {
    super::subtract_totals(&tcp::subtract_sql(), &tcp::sum_totals_sql(), t, w)
}

/// Takes the DNS running sums of the summaries in table `t` selected by `w` off
/// `device_totals`.
fn subtract_dns(t: &str, w: &str) -> String {
    super::subtract_totals(&dns::subtract_sql(), &dns::sum_totals_sql(), t, w)
}

/// Prepared statements of one connection.
struct Statements {
    summaries: Statement,
    boots: Statement,
    parts: Statement,
    complete: Statement,
    totals: Statement,
    presence: Statement,
}

impl Statements {
    fn prepare(c: &mut Client) -> Result<Statements, postgres::Error> {
        let cols = SUMMARY_INTS.join(", ");
        let ints: Vec<String> = (3..3 + SUMMARY_INTS.len())
            .map(|i| format!("${i}::int8[]"))
            .collect();
        let first_tcp = 4 + SUMMARY_INTS.len();
        let tcp_params: Vec<String> = (first_tcp..first_tcp + tcp::SUMMARY_COLUMNS.len())
            .map(|i| format!("${i}::int8[]"))
            .collect();
        let first_dns = first_tcp + tcp::SUMMARY_COLUMNS.len();
        let dns_params: Vec<String> = (first_dns..first_dns + dns::SUMMARY_COLUMNS.len())
            .map(|i| format!("${i}::int8[]"))
            .collect();
        let dns_hist = first_dns + dns::SUMMARY_COLUMNS.len();
        let owner_params: Vec<String> = (dns_hist + 1..dns_hist + 1 + owner::SUMMARY_COLUMNS.len())
            .map(|i| format!("${i}::int8[]"))
            .collect();
        let first_agent = dns_hist + 1 + owner::SUMMARY_COLUMNS.len();
        let agent_params: Vec<String> = (first_agent..first_agent + agent::SUMMARY_COLUMNS.len())
            .map(|i| format!("${i}::int8[]"))
            .collect();
        let summaries = format!(
            "INSERT INTO summaries (device, site, {cols}, rtt_hist, {}, {}, dns_hist, {}, {})
             SELECT * FROM unnest($1::text[], $2::text[], {}, ${}::text[], {}, {},
                                  ${dns_hist}::text[], {}, {})
             ON CONFLICT DO NOTHING
             RETURNING id, site, device, boot_id, seq, part",
            tcp::SUMMARY_COLUMNS.join(", "),
            dns::SUMMARY_COLUMNS.join(", "),
            owner::SUMMARY_COLUMNS.join(", "),
            agent::SUMMARY_COLUMNS.join(", "),
            ints.join(", "),
            3 + SUMMARY_INTS.len(),
            tcp_params.join(", "),
            dns_params.join(", "),
            owner_params.join(", "),
            agent_params.join(", ")
        );
        // The running sums of the TCP and DNS figures, after the others.
        let extra: Vec<&str> = tcp::TOTAL_COLUMNS
            .iter()
            .chain(dns::TOTAL_COLUMNS.iter())
            .copied()
            .collect();
        Ok(Statements {
            summaries: c.prepare(&summaries)?,
            boots: c.prepare(
                "INSERT INTO boots (site, device, boot_id, base_seq, max_seq, complete,
                                    first_received_ms, last_received_ms)
                 SELECT s, d, b, 0, q, c, $6, $6
                 FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[])
                   AS u(s, d, b, q, c)
                 ON CONFLICT (site, device, boot_id) DO UPDATE SET
                    max_seq = GREATEST(boots.max_seq, EXCLUDED.max_seq),
                    complete = boots.complete + EXCLUDED.complete,
                    last_received_ms = GREATEST(boots.last_received_ms, EXCLUDED.last_received_ms)",
            )?,
            parts: c.prepare(
                "SELECT (SELECT COUNT(*) FROM summaries x WHERE x.site = u.s AND x.device = u.d
                           AND x.boot_id = u.b AND x.seq = u.q AND x.window_start_ms = u.w)
                 FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[])
                   WITH ORDINALITY AS u(s, d, b, q, w, i) ORDER BY i",
            )?,
            complete: c.prepare(
                "UPDATE boots SET complete = complete + 1
                 WHERE site = $1 AND device = $2 AND boot_id = $3",
            )?,
            totals: c.prepare(&format!(
                "INSERT INTO device_totals (site, device, packets, bytes, overflow_packets,
                    overflow_bytes, windows, summaries, flow_records, latest_id, {})
                 SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::float8[],
                    $5::float8[], $6::float8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[],
                    {})
                 ON CONFLICT (site, device) DO UPDATE SET {},
                    packets = device_totals.packets + EXCLUDED.packets,
                    bytes = device_totals.bytes + EXCLUDED.bytes,
                    overflow_packets = device_totals.overflow_packets + EXCLUDED.overflow_packets,
                    overflow_bytes = device_totals.overflow_bytes + EXCLUDED.overflow_bytes,
                    windows = device_totals.windows + EXCLUDED.windows,
                    summaries = device_totals.summaries + EXCLUDED.summaries,
                    flow_records = device_totals.flow_records + EXCLUDED.flow_records,
                    latest_id = GREATEST(device_totals.latest_id, EXCLUDED.latest_id)",
                extra.join(", "),
                (11..11 + extra.len())
                    .map(|i| format!("${i}::float8[]"))
                    .collect::<Vec<_>>()
                    .join(", "),
                extra
                    .iter()
                    .map(|c| format!("{c} = device_totals.{c} + EXCLUDED.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))?,
            presence: c.prepare(
                "INSERT INTO presence (site, device, state, received_ms)
                 SELECT s, d, st, $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS u(s, d, st)
                 ON CONFLICT (site, device) DO UPDATE SET state = EXCLUDED.state,
                    received_ms = EXCLUDED.received_ms",
            )?,
        })
    }
}

/// The write side on a PostgreSQL database; one connection.
pub struct PgStore {
    url: String,
    conn: Option<(Client, Statements)>,
    /// Days (since the epoch, UTC) known to have their own partitions.
    days: HashSet<i64>,
    /// Days whose windows go to the default partition (it held some of them already).
    default_days: HashSet<i64>,
}

/// Connects and creates the schema if the database has none (serialized between
/// collectors starting at once by an advisory lock).
fn connect(url: &str) -> Result<(Client, Statements), StoreError> {
    let mut client = Client::connect(url, NoTls)?;
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])?;
    let exists: bool = tx
        .query_one("SELECT to_regclass('edgeflow_schema') IS NOT NULL", &[])?
        .get(0);
    if exists {
        let version: i64 = tx
            .query_one("SELECT version FROM edgeflow_schema", &[])?
            .get(0);
        if (1..SCHEMA_VERSION).contains(&version) {
            log::info!("database: migrating schema {version} to {SCHEMA_VERSION} in place");
            if version == 1 {
                tx.batch_execute(&tcp_columns())?;
            }
            if version <= 2 {
                tx.batch_execute(&dns_columns())?;
                tx.batch_execute(&owner_columns())?;
            }
            tx.batch_execute(&agent::add_columns_sql("BIGINT"))?;
            tx.execute(
                "UPDATE edgeflow_schema SET version = $1",
                &[&SCHEMA_VERSION],
            )?;
        } else if version != SCHEMA_VERSION {
            return Err(StoreError::PgVersion(version));
        }
    } else {
        log::info!("database: creating the edgeflow schema (version {SCHEMA_VERSION})");
        tx.batch_execute(SCHEMA)?;
        tx.batch_execute(&tcp_columns())?;
        tx.batch_execute(&dns_columns())?;
        tx.batch_execute(&owner_columns())?;
        tx.batch_execute(&agent::add_columns_sql("BIGINT"))?;
        tx.execute(
            "INSERT INTO edgeflow_schema (version) VALUES ($1)",
            &[&SCHEMA_VERSION],
        )?;
    }
    tx.commit()?;
    let stmts = Statements::prepare(&mut client)?;
    Ok((client, stmts))
}

/// A day's partition name suffix, `YYYYMMDD` (UTC).
fn day_name(day: i64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}")
}

/// Whether a failed transaction is worth running again as is.
fn retryable(e: &StoreError) -> bool {
    matches!(e, StoreError::Postgres(e)
        if matches!(e.code(), Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
                                      || *c == SqlState::T_R_DEADLOCK_DETECTED))
}

/// Per-run columns for an `unnest`: site, device, boot id and two integers.
type RunCols<'a> = (Vec<&'a str>, Vec<&'a str>, Vec<i64>, Vec<i64>, Vec<i64>);

/// A summary's identity key.
type Key<'a> = (&'a str, &'a str, i64, i64, i64);

fn key(s: &Summary) -> Key<'_> {
    (
        s.site.as_str(),
        s.device.as_str(),
        s.boot_id as i64,
        n(s.seq),
        i64::from(s.part),
    )
}

impl PgStore {
    /// Connects to `url` (a `postgres://` URL) and creates the schema if needed.
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        let conn = connect(url)?;
        let mut store = PgStore {
            url: url.to_string(),
            conn: Some(conn),
            days: HashSet::new(),
            default_days: HashSet::new(),
        };
        let today = crate::ingest::now_ms().div_euclid(DAY_MS);
        store.ensure_days(&[today, today + 1].into_iter().collect())?;
        Ok(store)
    }

    /// The connection, reconnecting once it was lost (the server restarted).
    fn conn(&mut self) -> Result<&mut (Client, Statements), StoreError> {
        if self.conn.as_ref().is_some_and(|(c, _)| c.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(connect(&self.url)?);
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    /// Makes sure each of `days` has its partitions or is known to go to the default ones.
    fn ensure_days(&mut self, days: &BTreeSet<i64>) -> Result<(), StoreError> {
        let today = crate::ingest::now_ms().div_euclid(DAY_MS);
        let wanted: Vec<i64> = days
            .iter()
            .copied()
            .filter(|d| (today - 1..=today + 1).contains(d))
            .filter(|d| !self.days.contains(d) && !self.default_days.contains(d))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let (client, _) = self.conn()?;
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])?;
        let mut made = Vec::new();
        let mut defaulted = Vec::new();
        for day in wanted {
            let name = day_name(day);
            let (lo, hi) = (day * DAY_MS, (day + 1) * DAY_MS);
            let exists: bool = tx
                .query_one(
                    "SELECT to_regclass($1) IS NOT NULL",
                    &[&format!("summaries_p{name}")],
                )?
                .get(0);
            if !exists {
                // A new partition may not take rows the default one holds already: such a
                // day stays in the default partition.
                let held: bool = tx
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM summaries_default
                                        WHERE window_start_ms >= $1 AND window_start_ms < $2)",
                        &[&lo, &hi],
                    )?
                    .get(0);
                if held {
                    defaulted.push(day);
                    continue;
                }
                tx.batch_execute(&format!(
                    "CREATE TABLE summaries_p{name} PARTITION OF summaries
                        FOR VALUES FROM ({lo}) TO ({hi});
                     CREATE TABLE flows_p{name} PARTITION OF flows
                        FOR VALUES FROM ({lo}) TO ({hi});"
                ))?;
                log::info!("database: partitions for {name} created");
            }
            made.push(day);
        }
        tx.commit()?;
        self.days.extend(made);
        self.default_days.extend(defaulted);
        Ok(())
    }

    /// One attempt at [`Storage::write`].
    fn try_write(&mut self, items: &[Write<'_>], now: i64) -> Result<Vec<bool>, StoreError> {
        // Summaries in key order (a duplicate within the batch is stored once).
        let mut order: Vec<(Key<'_>, usize)> = items
            .iter()
            .enumerate()
            .filter_map(|(i, w)| match w {
                Write::Summary(s) => Some((key(s), i)),
                Write::Presence { .. } => None,
            })
            .collect();
        order.sort();
        order.dedup_by(|a, b| a.0 == b.0);
        let summary = |i: usize| match items[i] {
            Write::Summary(s) => s,
            Write::Presence { .. } => unreachable!("only summaries are ordered"),
        };
        let mut stored = vec![false; items.len()];
        for (i, w) in items.iter().enumerate() {
            stored[i] = matches!(w, Write::Presence { .. });
        }

        let (client, st) = self.conn()?;
        let mut tx = client.transaction()?;
        let ids = insert_summaries(&mut tx, st, &order, &summary, now)?;
        if !ids.is_empty() {
            let inserted: Vec<(usize, i64)> = order
                .iter()
                .filter_map(|(k, i)| ids.get(k).map(|&id| (*i, id)))
                .collect();
            copy_flows(&mut tx, &inserted, &summary)?;
            track_runs(&mut tx, st, &inserted, &summary, now)?;
            add_totals(&mut tx, st, &inserted, &summary)?;
            upsert_lan_devices(&mut tx, &inserted, &summary, now)?;
            for (i, _) in &inserted {
                stored[*i] = true;
            }
        }
        set_presence(&mut tx, st, items, now)?;
        tx.commit()?;
        Ok(stored)
    }

    /// Drops the day partitions older than `before_ms`, thins the default ones by receive
    /// time; the running totals and runs follow in the same transaction.
    fn try_prune(&mut self, before_ms: i64) -> Result<(usize, usize), StoreError> {
        let (client, _) = self.conn()?;
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])?;
        let parts: Vec<String> = tx
            .query(
                "SELECT c.relname FROM pg_inherits i
                 JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'summaries'::regclass AND c.relname ~ '^summaries_p[0-9]{8}$'
                 ORDER BY c.relname",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let (mut summaries, mut flows) = (0usize, 0usize);
        let mut dropped = Vec::new();
        for table in parts {
            let day = &table["summaries_p".len()..];
            // The partition's upper bound, from the catalog (not from its name).
            let hi: i64 = tx
                .query_one(
                    "SELECT (regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                         'TO \\(''?(-?[0-9]+)''?\\)'))[1]::bigint
                     FROM pg_class c WHERE c.relname = $1",
                    &[&table],
                )?
                .get(0);
            if hi > before_ms {
                continue;
            }
            let sum = SUM_TOTALS.replace("{t}", &table).replace("{w}", "true");
            tx.execute(&SUBTRACT_TOTALS.replace("{}", &sum), &[])?;
            tx.execute(&subtract_tcp(&table, "true"), &[])?;
            tx.execute(&subtract_dns(&table, "true"), &[])?;
            let row = tx.query_one(
                &format!("SELECT COUNT(*), COALESCE(SUM(flow_count), 0)::bigint FROM {table}"),
                &[],
            )?;
            summaries += row.get::<_, i64>(0) as usize;
            flows += row.get::<_, i64>(1) as usize;
            tx.batch_execute(&format!("DROP TABLE {table}; DROP TABLE flows_p{day};"))?;
            dropped.push(day.to_string());
        }
        let sum = SUM_TOTALS
            .replace("{t}", "summaries_default")
            .replace("{w}", "received_ms < $1");
        tx.execute(&SUBTRACT_TOTALS.replace("{}", &sum), &[&before_ms])?;
        tx.execute(
            &subtract_tcp("summaries_default", "received_ms < $1"),
            &[&before_ms],
        )?;
        tx.execute(
            &subtract_dns("summaries_default", "received_ms < $1"),
            &[&before_ms],
        )?;
        flows += tx.execute(
            "DELETE FROM flows_default WHERE summary_id IN
               (SELECT id FROM summaries_default WHERE received_ms < $1)",
            &[&before_ms],
        )? as usize;
        let thinned = tx.execute(
            "DELETE FROM summaries_default WHERE received_ms < $1",
            &[&before_ms],
        )? as usize;
        summaries += thinned;
        if summaries > 0 {
            tx.batch_execute(
                "DELETE FROM device_totals WHERE NOT EXISTS (SELECT 1 FROM summaries s
                    WHERE s.device = device_totals.device AND s.site = device_totals.site);
                 UPDATE device_totals SET latest_id = (SELECT MAX(id) FROM summaries s
                    WHERE s.part = 0 AND s.device = device_totals.device
                      AND s.site = device_totals.site)
                 WHERE NOT EXISTS (SELECT 1 FROM summaries WHERE id = device_totals.latest_id);",
            )?;
        }
        tx.execute(
            "DELETE FROM boots WHERE last_received_ms < $1",
            &[&before_ms],
        )?;
        tx.execute(
            "DELETE FROM lan_devices WHERE last_received_ms < $1",
            &[&before_ms],
        )?;
        tx.commit()?;
        for day in dropped {
            log::info!("retention: dropped the partitions of {day}");
        }
        // Days whose partitions went are made again if a window of theirs still comes.
        self.days.clear();
        Ok((summaries, flows))
    }
}

/// Inserts the summaries (in key order); the ids of those actually inserted, by key.
fn insert_summaries<'a>(
    tx: &mut Transaction<'_>,
    st: &Statements,
    order: &[(Key<'a>, usize)],
    summary: &dyn Fn(usize) -> &'a Summary,
    now: i64,
) -> Result<BTreeMap<Key<'a>, i64>, StoreError> {
    if order.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut devices = Vec::with_capacity(order.len());
    let mut sites = Vec::with_capacity(order.len());
    let mut ints: Vec<Vec<i64>> = vec![Vec::with_capacity(order.len()); SUMMARY_INTS.len()];
    let mut hists: Vec<Option<String>> = Vec::with_capacity(order.len());
    let mut tcps: Vec<Vec<Option<i64>>> =
        vec![Vec::with_capacity(order.len()); tcp::SUMMARY_COLUMNS.len()];
    let mut dnss: Vec<Vec<Option<i64>>> =
        vec![Vec::with_capacity(order.len()); dns::SUMMARY_COLUMNS.len()];
    let mut dns_hists: Vec<Option<String>> = Vec::with_capacity(order.len());
    let mut owner_full: Vec<Vec<Option<i64>>> =
        vec![Vec::with_capacity(order.len()); owner::SUMMARY_COLUMNS.len()];
    let mut bad_days: Vec<Vec<Option<i64>>> =
        vec![Vec::with_capacity(order.len()); agent::SUMMARY_COLUMNS.len()];
    for &(_, i) in order {
        let s = summary(i);
        let h = &s.health;
        devices.push(s.device.as_str());
        sites.push(s.site.as_str());
        let row: [i64; 27] = [
            s.boot_id as i64,
            n(s.seq),
            i64::from(s.part),
            i64::from(s.parts),
            n(s.window_start_ms),
            i64::from(s.window_len_ms),
            i64::from(s.sample_every),
            now,
            n(s.totals.packets),
            n(s.totals.bytes),
            n(s.overflow.packets),
            n(s.overflow.bytes),
            n(s.other.packets),
            n(s.other.bytes),
            i64::from(s.other_flows),
            n(h.packets_seen),
            i64::from(h.active_flows),
            i64::from(h.table_capacity),
            n(h.table_full),
            n(h.parse_errors),
            n(h.fragments),
            n(h.non_ip),
            i64::from(h.cpu_ms),
            i64::from(h.rss_kib),
            i64::from(h.spool_depth),
            n(h.spool_dropped),
            s.flows.len() as i64,
        ];
        for (col, v) in ints.iter_mut().zip(row) {
            col.push(v);
        }
        let w = tcp::WindowTcp::of(s).map(|w| w.columns());
        for (i, col) in tcps.iter_mut().enumerate() {
            col.push(w.map(|c| c[i]));
        }
        let d = dns::WindowDns::of(s);
        for (col, v) in dnss.iter_mut().zip(dns::WindowDns::columns(d.as_ref())) {
            col.push(v);
        }
        dns_hists.push(d.and_then(|d| d.hist));
        for (col, v) in owner_full.iter_mut().zip(owner::summary_values(s)) {
            col.push(v);
        }
        for (col, v) in bad_days.iter_mut().zip(agent::summary_values(s)) {
            col.push(v);
        }
        hists.push((!s.rtt_hist.is_empty()).then(|| {
            let v: Vec<String> = s.rtt_hist.iter().map(|b| b.to_string()).collect();
            v.join(",")
        }));
    }
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&devices, &sites];
    for col in &ints {
        params.push(col);
    }
    params.push(&hists);
    for col in &tcps {
        params.push(col);
    }
    for col in &dnss {
        params.push(col);
    }
    params.push(&dns_hists);
    for col in &owner_full {
        params.push(col);
    }
    for col in &bad_days {
        params.push(col);
    }
    let rows = tx.query(&st.summaries, &params)?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let (site, device): (&str, &str) = (r.get(1), r.get(2));
            let k = (site, device, r.get(3), r.get(4), r.get(5));
            // Back to the batch's own strings (the row's die with it).
            let at = order.binary_search_by(|(o, _)| o.cmp(&k)).ok()?;
            let (key, _) = order[at];
            Some((key, r.get::<_, i64>(0)))
        })
        .collect())
}

/// The inserted summaries' flow records, by binary COPY.
fn copy_flows<'a>(
    tx: &mut Transaction<'_>,
    inserted: &[(usize, i64)],
    summary: &dyn Fn(usize) -> &'a Summary,
) -> Result<(), StoreError> {
    if inserted.iter().all(|&(i, _)| summary(i).flows.is_empty()) {
        return Ok(());
    }
    let writer = tx.copy_in(&format!(
        "COPY flows (summary_id, n, proto, src, src_port, dst, dst_port, vlan, vlan_inner,
            ifindex, fwd_packets, fwd_bytes, rev_packets, rev_bytes, tcp_flags, first_seen_ms,
            last_seen_ms, rtt_min_us, rtt_avg_us, rtt_max_us, rtt_samples, window_start_ms,
            tcp_outcome, tcp_decided, tcp_syn_retries, tcp_fwd_retrans_packets,
            tcp_fwd_retrans_bytes, tcp_rev_retrans_packets, tcp_rev_retrans_bytes, tcp_fwd_rst,
            tcp_rev_rst, tcp_fwd_fin, tcp_rev_fin, {}, {})
         FROM STDIN BINARY",
        dns::FLOW_COLUMNS.join(", "),
        owner::FLOW_COLUMNS.join(", ")
    ))?;
    let first_owner = 33 + dns::FLOW_COLUMNS.len();
    let mut types = vec![Type::INT8; first_owner + owner::FLOW_COLUMNS.len()];
    types[22] = Type::TEXT;
    types[3] = Type::TEXT;
    types[5] = Type::TEXT;
    types[33] = Type::TEXT;
    for t in &mut types[first_owner + 1..] {
        *t = Type::TEXT;
    }
    let mut w = BinaryCopyInWriter::new(writer, &types);
    for &(i, id) in inserted {
        let s = summary(i);
        let start = n(s.window_start_ms);
        let addrs: Vec<String> = s.addrs.iter().map(addr_text).collect();
        for (k, f) in s.flows.iter().enumerate() {
            let rtt = f.rtt;
            let t = tcp::flow_ints(&f.tcp);
            let d = f.dns.as_ref().map(dns::FlowDns::of);
            let di = dns::FlowDns::ints(d.as_ref());
            let name = d.as_ref().and_then(|d| d.name.as_deref());
            let v: [i64; 15] = [
                k as i64,
                i64::from(f.proto),
                i64::from(f.src_port),
                i64::from(f.dst_port),
                i64::from(f.vlan),
                i64::from(f.vlan_inner),
                i64::from(f.ifindex),
                n(f.fwd.packets),
                n(f.fwd.bytes),
                n(f.rev.packets),
                n(f.rev.bytes),
                i64::from(f.tcp_flags),
                start.saturating_add(f.first_seen_ms),
                start.saturating_add(f.last_seen_ms),
                start,
            ];
            let r: [Option<i64>; 4] = [
                rtt.map(|r| i64::from(r.min_us)),
                rtt.map(|r| i64::from(r.avg_us)),
                rtt.map(|r| i64::from(r.max_us)),
                rtt.map(|r| i64::from(r.samples)),
            ];
            let base: [&(dyn ToSql + Sync); 34] = [
                &id,
                &v[0],
                &v[1],
                &addr(&addrs, f.src),
                &v[2],
                &addr(&addrs, f.dst),
                &v[3],
                &v[4],
                &v[5],
                &v[6],
                &v[7],
                &v[8],
                &v[9],
                &v[10],
                &v[11],
                &v[12],
                &v[13],
                &r[0],
                &r[1],
                &r[2],
                &r[3],
                &v[14],
                &tcp::outcome(&f.tcp),
                &t[0],
                &t[1],
                &t[2],
                &t[3],
                &t[4],
                &t[5],
                &t[6],
                &t[7],
                &t[8],
                &t[9],
                &name,
            ];
            let o = owner::FlowOwner::of(&f.owner, s).unwrap_or_default();
            let all: Vec<&(dyn ToSql + Sync)> = base
                .iter()
                .copied()
                .chain(di.iter().map(|v| v as &(dyn ToSql + Sync)))
                .chain(std::iter::once(&o.pid as &(dyn ToSql + Sync)))
                .chain(o.text.iter().map(|v| v as &(dyn ToSql + Sync)))
                .collect();
            w.write(&all)?;
        }
    }
    w.finish()?;
    Ok(())
}

/// Moves the runs of the inserted summaries (`boots`): highest seq, complete windows.
fn track_runs<'a>(
    tx: &mut Transaction<'_>,
    st: &Statements,
    inserted: &[(usize, i64)],
    summary: &dyn Fn(usize) -> &'a Summary,
    now: i64,
) -> Result<(), StoreError> {
    // Per run: highest seq, and the single-part windows (complete as they are).
    let mut runs: BTreeMap<(&str, &str, i64), (i64, i64)> = BTreeMap::new();
    let mut multi = Vec::new();
    for &(i, _) in inserted {
        let s = summary(i);
        let (site, device, boot, seq, _) = key(s);
        let r = runs.entry((site, device, boot)).or_insert((seq, 0));
        r.0 = r.0.max(seq);
        if s.parts <= 1 {
            r.1 += 1;
        } else {
            multi.push(s);
        }
    }
    let mut cols: RunCols = Default::default();
    for (&(site, device, boot), &(max_seq, complete)) in &runs {
        cols.0.push(site);
        cols.1.push(device);
        cols.2.push(boot);
        cols.3.push(max_seq);
        cols.4.push(complete);
    }
    // This upsert holds the runs' rows until the commit: the parts counted below include
    // every other collector's committed parts of the same windows.
    tx.execute(
        &st.boots,
        &[&cols.0, &cols.1, &cols.2, &cols.3, &cols.4, &now],
    )?;
    if multi.is_empty() {
        return Ok(());
    }
    // One completion per window, even if this batch holds several of its parts.
    multi.sort_by_key(|s| (key(s), s.part));
    multi.dedup_by_key(|s| {
        let (a, b, c, d, _) = key(s);
        (a, b, c, d)
    });
    let mut cols: RunCols = Default::default();
    for s in &multi {
        cols.0.push(s.site.as_str());
        cols.1.push(s.device.as_str());
        cols.2.push(s.boot_id as i64);
        cols.3.push(n(s.seq));
        cols.4.push(n(s.window_start_ms));
    }
    let counts = tx.query(&st.parts, &[&cols.0, &cols.1, &cols.2, &cols.3, &cols.4])?;
    for (s, row) in multi.iter().zip(&counts) {
        let stored: i64 = row.get(0);
        if stored == i64::from(s.parts) {
            tx.execute(
                &st.complete,
                &[&s.site.as_str(), &s.device.as_str(), &(s.boot_id as i64)],
            )?;
        }
    }
    Ok(())
}

/// Adds the inserted summaries to their devices' running totals.
fn add_totals<'a>(
    tx: &mut Transaction<'_>,
    st: &Statements,
    inserted: &[(usize, i64)],
    summary: &dyn Fn(usize) -> &'a Summary,
) -> Result<(), StoreError> {
    #[derive(Default)]
    struct T {
        p: f64,
        b: f64,
        op: f64,
        ob: f64,
        windows: i64,
        summaries: i64,
        records: i64,
        latest: Option<i64>,
        tcp: [f64; 9],
        dns: [f64; 10],
    }
    let mut by_device: BTreeMap<(&str, &str), T> = BTreeMap::new();
    for &(i, id) in inserted {
        let s = summary(i);
        let scaled = |v: u64| n(v) as f64 * f64::from(s.sample_every);
        let t = by_device
            .entry((s.site.as_str(), s.device.as_str()))
            .or_default();
        t.p += scaled(s.totals.packets);
        t.b += scaled(s.totals.bytes);
        t.op += scaled(s.overflow.packets);
        t.ob += scaled(s.overflow.bytes);
        t.windows += i64::from(s.part == 0);
        t.summaries += 1;
        t.records += s.flows.len() as i64;
        let add = tcp::WindowTcp::totals(tcp::WindowTcp::of(s), s.sample_every);
        for (sum, v) in t.tcp.iter_mut().zip(add) {
            *sum += v;
        }
        let add = dns::WindowDns::totals(dns::WindowDns::of(s).as_ref(), s.sample_every);
        for (sum, v) in t.dns.iter_mut().zip(add) {
            *sum += v;
        }
        if s.part == 0 {
            t.latest = t.latest.max(Some(id));
        }
    }
    #[allow(clippy::type_complexity)]
    let mut c: (
        Vec<&str>,
        Vec<&str>,
        [Vec<f64>; 4],
        [Vec<i64>; 3],
        Vec<Option<i64>>,
        [Vec<f64>; 9],
        [Vec<f64>; 10],
    ) = Default::default();
    for (&(site, device), t) in &by_device {
        c.0.push(site);
        c.1.push(device);
        for (col, v) in c.2.iter_mut().zip([t.p, t.b, t.op, t.ob]) {
            col.push(v);
        }
        for (col, v) in c.3.iter_mut().zip([t.windows, t.summaries, t.records]) {
            col.push(v);
        }
        c.4.push(t.latest);
        for (col, v) in c.5.iter_mut().zip(t.tcp) {
            col.push(v);
        }
        for (col, v) in c.6.iter_mut().zip(t.dns) {
            col.push(v);
        }
    }
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        &c.0, &c.1, &c.2[0], &c.2[1], &c.2[2], &c.2[3], &c.3[0], &c.3[1], &c.3[2], &c.4,
    ];
    for col in c.5.iter().chain(c.6.iter()) {
        params.push(col);
    }
    tx.execute(&st.totals, &params)?;
    Ok(())
}

/// The LAN devices the inserted summaries describe, in key order (collectors storing the same
/// devices at once take their row locks in one order).
fn upsert_lan_devices<'a>(
    tx: &mut Transaction<'_>,
    inserted: &[(usize, i64)],
    summary: &dyn Fn(usize) -> &'a Summary,
    now: i64,
) -> Result<(), StoreError> {
    let mut all: BTreeMap<(&str, &str, String), owner::LanDevice> = BTreeMap::new();
    for &(i, _) in inserted {
        let s = summary(i);
        for d in owner::lan_devices(s) {
            let key = (s.site.as_str(), s.device.as_str(), d.0.clone());
            let e = all.entry(key).or_insert_with(|| d.clone());
            e.1 = d.1.or(e.1.take());
            e.2 = d.2.or(e.2.take());
            e.3 = d.3.or(e.3.take());
        }
    }
    if all.is_empty() {
        return Ok(());
    }
    let st = tx.prepare(owner::UPSERT_SQL)?;
    for ((site, device, mac), (_, vendor, host, client)) in &all {
        tx.execute(&st, &[site, device, mac, vendor, host, client, &now])?;
    }
    Ok(())
}

/// The batch's presence reports, the last per device winning.
fn set_presence(
    tx: &mut Transaction<'_>,
    st: &Statements,
    items: &[Write<'_>],
    now: i64,
) -> Result<(), StoreError> {
    let mut last: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for w in items {
        if let Write::Presence {
            site,
            device,
            state,
        } = *w
        {
            last.insert((site, device), state.as_str());
        }
    }
    if last.is_empty() {
        return Ok(());
    }
    let mut c: (Vec<&str>, Vec<&str>, Vec<&str>) = Default::default();
    for (&(site, device), &state) in &last {
        c.0.push(site);
        c.1.push(device);
        c.2.push(state);
    }
    tx.execute(&st.presence, &[&c.0, &c.1, &c.2, &now])?;
    Ok(())
}

impl Storage for PgStore {
    fn write(&mut self, items: &[Write<'_>], received_ms: i64) -> Result<Vec<bool>, StoreError> {
        let days: BTreeSet<i64> = items
            .iter()
            .filter_map(|w| match w {
                Write::Summary(s) => Some(n(s.window_start_ms).div_euclid(DAY_MS)),
                Write::Presence { .. } => None,
            })
            .collect();
        self.ensure_days(&days)?;
        let mut attempt = 0u32;
        loop {
            match self.try_write(items, received_ms) {
                Err(e) if retryable(&e) && attempt < 8 => {
                    attempt += 1;
                    log::debug!("database: {e}; running the batch again");
                    std::thread::sleep(std::time::Duration::from_millis(5 << attempt.min(6)));
                }
                r => return r,
            }
        }
    }

    fn prune(&mut self, before_ms: i64) -> Result<(usize, usize), StoreError> {
        let mut attempt = 0u32;
        loop {
            match self.try_prune(before_ms) {
                Err(e) if retryable(&e) && attempt < 8 => attempt += 1,
                r => return r,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::wire::{Addr, Count, FlowRecord, Health};
    use testkit::postgres::Postgres;

    #[test]
    fn partition_names_are_utc_dates() {
        assert_eq!(day_name(0), "19700101");
        assert_eq!(day_name(20_429), "20251207");
        assert_eq!(day_name(-1), "19691231");
        assert_eq!(day_name(11_016), "20000229");
    }

    fn summary(device: &str, seq: u64, start: u64) -> Summary {
        Summary {
            device: device.try_into().unwrap(),
            site: "s".try_into().unwrap(),
            boot_id: u64::MAX,
            seq,
            part: 0,
            parts: 1,
            window_start_ms: start,
            window_len_ms: 10_000,
            sample_every: 1,
            totals: Count {
                packets: 10 + seq,
                bytes: 1_000 * seq,
            },
            overflow: Count::default(),
            other: Count::default(),
            other_flows: 0,
            health: Health::default(),
            addrs: vec![Addr::V4([10, 0, 0, 1]), Addr::V6([0xfd; 16])],
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

    fn write(store: &mut PgStore, summaries: &[Summary], received_ms: i64) -> Vec<bool> {
        let items: Vec<Write> = summaries.iter().map(Write::Summary).collect();
        store.write(&items, received_ms).unwrap()
    }

    fn scalar(url: &str, sql: &str) -> i64 {
        let mut c = Client::connect(url, NoTls).unwrap();
        c.query_one(sql, &[]).unwrap().get(0)
    }

    /// Running totals equal what a scan of the stored summaries finds, device by device.
    fn assert_totals_consistent(url: &str) {
        let mut c = Client::connect(url, NoTls).unwrap();
        let running = c
            .query(
                "SELECT site, device, packets, bytes, windows, summaries, flow_records, latest_id
                 FROM device_totals ORDER BY site, device",
                &[],
            )
            .unwrap();
        let scanned = c
            .query(
                &format!(
                    "SELECT site, device, p, b, w, n, f,
                       (SELECT MAX(id) FROM summaries x WHERE x.part = 0 AND x.site = t.site
                          AND x.device = t.device)
                     FROM ({}) t ORDER BY site, device",
                    SUM_TOTALS
                        .replace("{t}", "summaries")
                        .replace("{w}", "true")
                ),
                &[],
            )
            .unwrap();
        let rows = |rows: &[postgres::Row]| -> Vec<String> {
            rows.iter()
                .map(|r| {
                    format!(
                        "{}/{} {} {} {} {} {} {:?}",
                        r.get::<_, &str>(0),
                        r.get::<_, &str>(1),
                        r.get::<_, f64>(2),
                        r.get::<_, f64>(3),
                        r.get::<_, i64>(4),
                        r.get::<_, i64>(5),
                        r.get::<_, i64>(6),
                        r.get::<_, Option<i64>>(7)
                    )
                })
                .collect()
        };
        assert_eq!(rows(&running), rows(&scanned));
    }

    #[test]
    fn a_server_refusal_is_said_once() {
        let pg = Postgres::start();
        let url = pg.create_database("refusal");
        // A database that does not exist: the server's FATAL message, once in the chain.
        let missing = url.replace("/refusal", "/no_such_database");
        let err = PgStore::open(&missing).err().expect("no such database");
        let text = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(text.matches("no_such_database").count(), 1, "{text}");
        assert_eq!(text.matches("db error").count(), 1, "{text}");
        assert!(text.starts_with("database: "), "{text}");
    }

    #[test]
    fn creates_the_schema_dedups_and_tracks_gaps() {
        let pg = Postgres::start();
        let url = pg.create_database("dedup");
        let now = crate::ingest::now_ms() as u64;
        let mut store = PgStore::open(&url).unwrap();
        // A second collector on the same database finds the schema made.
        let mut other = PgStore::open(&url).unwrap();
        let mut other_site = summary("d", 0, now);
        other_site.site = "t".try_into().unwrap();
        let mut part = summary("d", 4, now);
        part.parts = 2;
        let stored = write(
            &mut store,
            &[
                summary("d", 3, now),
                summary("d", 0, now),
                other_site,
                summary("d", 1, now),
                part.clone(),
                summary("d", 0, now),
            ],
            1,
        );
        assert_eq!(stored, [true, true, true, true, true, false]);
        assert_eq!(
            write(&mut other, &[summary("d", 3, now)], 2),
            [false],
            "another collector's copy"
        );
        let gaps = |site: &str| {
            scalar(
                &url,
                &format!(
                    "SELECT max_seq + 1 - base_seq - complete FROM boots WHERE site = '{site}'"
                ),
            )
        };
        assert_eq!(gaps("s"), 2, "seq 2 and half of seq 4 missing");
        assert_eq!(gaps("t"), 0);
        part.part = 1;
        assert_eq!(
            write(&mut other, &[part, summary("d", 2, now)], 3),
            [true, true]
        );
        assert_eq!(gaps("s"), 0, "late arrivals close the gaps");
        assert_eq!(scalar(&url, "SELECT COUNT(*) FROM summaries"), 7);
        assert_eq!(scalar(&url, "SELECT COUNT(*) FROM flows"), 21);
        assert_eq!(
            scalar(&url, "SELECT COUNT(*) FROM summaries_default"),
            0,
            "today's windows have their own partition"
        );
        let presence = [Write::Presence {
            site: "s",
            device: "d",
            state: shared::identity::Presence::Online,
        }];
        assert_eq!(store.write(&presence, 4).unwrap(), [true]);
        assert_eq!(scalar(&url, "SELECT COUNT(*) FROM presence"), 1);
        assert_totals_consistent(&url);
    }

    #[test]
    fn collectors_storing_the_same_messages_at_once_count_them_once() {
        let pg = Postgres::start();
        let url = pg.create_database("race");
        let now = crate::ingest::now_ms() as u64;
        // 4 devices x 60 windows, every third in two parts.
        let mut all = Vec::new();
        for d in 0..4 {
            for seq in 0..60 {
                let mut s = summary(&format!("d{d}"), seq, now + seq * 10_000);
                if seq % 3 == 0 {
                    s.parts = 2;
                    let mut p1 = s.clone();
                    p1.part = 1;
                    all.push(p1);
                }
                all.push(s);
            }
        }
        let stored: usize = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..3u64)
                .map(|k| {
                    let (url, all) = (&url, &all);
                    scope.spawn(move || {
                        let mut store = PgStore::open(url).unwrap();
                        // Each collector in its own order, in batches of 37.
                        let mut mine: Vec<&Summary> = all.iter().collect();
                        mine.sort_by_key(|s| {
                            (s.seq * 7919 + k * 104_729 + u64::from(s.part)) % 211
                        });
                        let mut n = 0;
                        for chunk in mine.chunks(37) {
                            let items: Vec<Write> =
                                chunk.iter().map(|s| Write::Summary(s)).collect();
                            n += store
                                .write(&items, 5)
                                .unwrap()
                                .iter()
                                .filter(|&&b| b)
                                .count();
                        }
                        n
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(
            stored,
            all.len(),
            "each message stored by exactly one collector"
        );
        assert_eq!(
            scalar(&url, "SELECT COUNT(*) FROM summaries"),
            all.len() as i64
        );
        assert_eq!(
            scalar(&url, "SELECT SUM(summaries)::bigint FROM device_totals"),
            all.len() as i64
        );
        assert_eq!(
            scalar(&url, "SELECT SUM(windows)::bigint FROM device_totals"),
            240
        );
        assert_eq!(
            scalar(
                &url,
                "SELECT SUM(max_seq + 1 - base_seq - complete)::bigint FROM boots"
            ),
            0,
            "every window complete once"
        );
        assert_eq!(
            scalar(&url, "SELECT COUNT(*) FROM flows"),
            3 * all.len() as i64
        );
        assert_totals_consistent(&url);
    }

    #[test]
    fn retention_drops_day_partitions_and_thins_the_default_one() {
        let pg = Postgres::start();
        let url = pg.create_database("prune");
        let now = crate::ingest::now_ms();
        let today = now.div_euclid(DAY_MS) * DAY_MS;
        let mut store = PgStore::open(&url).unwrap();
        // Yesterday's window (its own partition); one stamped in 1970 (a box without a
        // real-time clock) received now; one stamped far ahead received long ago: both in
        // the default partition, which goes by receive time.
        let yesterday = summary("a", 0, (today - DAY_MS / 2) as u64);
        write(&mut store, &[yesterday], now - DAY_MS / 2);
        write(&mut store, &[summary("b", 0, 5_000)], now);
        write(
            &mut store,
            &[summary("c", 0, (now + 30 * DAY_MS) as u64)],
            1_000,
        );
        write(&mut store, &[summary("a", 1, now as u64)], now);
        assert_eq!(scalar(&url, "SELECT COUNT(*) FROM summaries_default"), 2);
        let yname = day_name(today / DAY_MS - 1);
        assert_eq!(
            scalar(&url, &format!("SELECT COUNT(*) FROM summaries_p{yname}")),
            1
        );
        assert_eq!(store.prune(today).unwrap(), (2, 6));
        assert_eq!(
            scalar(
                &url,
                &format!("SELECT (to_regclass('summaries_p{yname}') IS NULL)::int::int8")
            ),
            1,
            "yesterday's partition dropped"
        );
        assert_eq!(
            scalar(
                &url,
                &format!("SELECT (to_regclass('flows_p{yname}') IS NULL)::int::int8")
            ),
            1
        );
        assert_eq!(scalar(&url, "SELECT COUNT(*) FROM summaries"), 2);
        assert_eq!(scalar(&url, "SELECT COUNT(*) FROM flows"), 6);
        assert_eq!(
            scalar(&url, "SELECT COUNT(*) FROM summaries WHERE device = 'b'"),
            1,
            "the 1970 window received now stays"
        );
        assert_eq!(scalar(&url, "SELECT COUNT(*) FROM device_totals"), 2);
        assert_totals_consistent(&url);
        // A late window of the dropped day gets its partition again.
        write(&mut store, &[summary("a", 2, (today - 1_000) as u64)], now);
        assert_eq!(
            scalar(&url, &format!("SELECT COUNT(*) FROM summaries_p{yname}")),
            1
        );
    }

    #[test]
    fn a_version_1_database_gets_the_tcp_columns_and_their_sums_follow_retention() {
        use shared::wire::{Outcome, Tcp};
        let pg = Postgres::start();
        let url = pg.create_database("tcp");
        let now = crate::ingest::now_ms();
        let today = now.div_euclid(DAY_MS) * DAY_MS;
        {
            // Version 1: the tables without the TCP columns, a day partition made, a window
            // in it.
            let mut c = Client::connect(&url, NoTls).unwrap();
            c.batch_execute(SCHEMA).unwrap();
            c.batch_execute("INSERT INTO edgeflow_schema (version) VALUES (1)")
                .unwrap();
        }
        let mut store = PgStore::open(&url).unwrap();
        assert_eq!(
            scalar(&url, "SELECT version FROM edgeflow_schema"),
            SCHEMA_VERSION
        );
        let mut old = summary("old", 0, now as u64);
        old.flows[0].proto = 6;
        let mut new = summary("new", 0, (today - DAY_MS / 2) as u64);
        new.tcp_health = true;
        new.sample_every = 2;
        new.flows[0].proto = 6;
        new.flows[0].tcp = Some(Tcp {
            outcome: Outcome::Unanswered,
            decided: true,
            syn_retries: 3,
            ..Tcp::default()
        });
        let mut today_new = new.clone();
        today_new.seq = 1;
        today_new.window_start_ms = now as u64;
        write(&mut store, &[old, new, today_new], now);
        let sums = |url: &str| -> (i64, i64, i64, i64) {
            (
                scalar(url, "SELECT SUM(tcp_unanswered)::bigint FROM device_totals"),
                scalar(url, "SELECT SUM(tcp_windows)::bigint FROM device_totals"),
                scalar(
                    url,
                    "SELECT COALESCE(SUM(tcp_unanswered), 0)::bigint FROM summaries",
                ),
                scalar(url, "SELECT COUNT(tcp_established) FROM summaries"),
            )
        };
        assert_eq!(sums(&url), (2, 2, 2, 2));
        assert_eq!(
            scalar(
                &url,
                "SELECT COUNT(*) FROM flows WHERE tcp_outcome = 'unanswered'"
            ),
            2
        );
        assert_eq!(
            scalar(&url, "SELECT COUNT(*) FROM flows WHERE tcp_outcome IS NULL"),
            7,
            "the old agent's flows and the new one's without a block"
        );
        // Yesterday's partition goes: its window's TCP figures come off the sums.
        store.prune(today).unwrap();
        assert_eq!(sums(&url), (1, 1, 1, 1));
        assert_totals_consistent(&url);
    }

    #[test]
    fn a_version_2_database_gets_the_dns_columns_and_their_sums_follow_retention() {
        use shared::wire::{Dns, DnsName, Latency};
        let pg = Postgres::start();
        let url = pg.create_database("dns");
        let now = crate::ingest::now_ms();
        let today = now.div_euclid(DAY_MS) * DAY_MS;
        {
            // Version 2: the tables with the TCP columns, without the DNS ones.
            let mut c = Client::connect(&url, NoTls).unwrap();
            c.batch_execute(SCHEMA).unwrap();
            c.batch_execute(&tcp_columns()).unwrap();
            c.batch_execute("INSERT INTO edgeflow_schema (version) VALUES (2)")
                .unwrap();
        }
        let mut store = PgStore::open(&url).unwrap();
        assert_eq!(
            scalar(&url, "SELECT version FROM edgeflow_schema"),
            SCHEMA_VERSION
        );
        let old = summary("old", 0, now as u64);
        let mut new = summary("new", 0, (today - DAY_MS / 2) as u64);
        new.dns = true;
        new.sample_every = 2;
        new.dns_hist = [0, 0, 3].into_iter().collect();
        new.flows[0].proto = 17;
        new.flows[0].dst_port = 53;
        new.flows[0].dns = Some(Dns {
            queries: 4,
            responses: 3,
            noerror: 2,
            refused: 1,
            unanswered: 1,
            qtype: 1,
            latency: Some(Latency {
                min_us: 4,
                avg_us: 5,
                max_us: 7,
                samples: 3,
            }),
            name: DnsName::new("WWW.example.org").unwrap(),
            name_truncated: true,
            ..Dns::default()
        });
        let mut today_new = new.clone();
        today_new.seq = 1;
        today_new.window_start_ms = now as u64;
        write(&mut store, &[old, new, today_new], now);
        let sums = |url: &str| -> (i64, i64, i64, i64) {
            (
                scalar(url, "SELECT SUM(dns_queries)::bigint FROM device_totals"),
                scalar(url, "SELECT SUM(dns_windows)::bigint FROM device_totals"),
                scalar(
                    url,
                    "SELECT SUM(dns_lat_samples)::bigint FROM device_totals",
                ),
                scalar(url, "SELECT COUNT(dns_queries) FROM summaries"),
            )
        };
        assert_eq!(sums(&url), (16, 2, 6, 2), "queries x 2 (sampled 1 in 2)");
        assert_eq!(scalar(&url, "SELECT COUNT(*) FROM lan_devices"), 0);
        assert_eq!(
            scalar(&url, "SELECT COUNT(*) FROM flows WHERE owner_comm IS NULL"),
            9,
            "the owner columns made, empty"
        );
        assert_eq!(
            scalar(
                &url,
                "SELECT COUNT(*) FROM flows WHERE dns_name = 'www.example.org…'
                   AND dns_refused = 1 AND dns_lat_samples = 3"
            ),
            2,
            "names in lower case, a cut one marked"
        );
        assert_eq!(
            scalar(
                &url,
                "SELECT COUNT(*) FROM summaries WHERE dns_hist = '0,0,3' AND dns_lat_sum_us = 15"
            ),
            2
        );
        assert_eq!(
            scalar(&url, "SELECT COUNT(*) FROM flows WHERE dns_queries IS NULL"),
            7,
            "the old agent's flows and the new one's without a block"
        );
        // Yesterday's partition goes: its window's DNS figures come off the sums.
        store.prune(today).unwrap();
        assert_eq!(sums(&url), (8, 1, 3, 1));
        assert_totals_consistent(&url);
    }

    #[test]
    fn a_version_3_database_gets_the_agents_bad_day_columns() {
        let pg = Postgres::start();
        let url = pg.create_database("badday");
        let now = crate::ingest::now_ms();
        {
            // Version 3: TCP, DNS and owner columns, without the bad-day ones.
            let mut c = Client::connect(&url, NoTls).unwrap();
            c.batch_execute(SCHEMA).unwrap();
            c.batch_execute(&tcp_columns()).unwrap();
            c.batch_execute(&dns_columns()).unwrap();
            c.batch_execute(&owner_columns()).unwrap();
            c.batch_execute("INSERT INTO edgeflow_schema (version) VALUES (3)")
                .unwrap();
        }
        let mut store = PgStore::open(&url).unwrap();
        assert_eq!(
            scalar(&url, "SELECT version FROM edgeflow_schema"),
            SCHEMA_VERSION
        );
        let mut s = summary("d", 0, now as u64);
        s.health.spool_fallback = true;
        s.health.spool_write_errors = 3;
        s.health.clock_step_ms = -5_000;
        s.health.clock_steps = 2;
        s.health.reattached = 4;
        s.health.header_excess = 5;
        s.health.reclaimed = 6;
        assert_eq!(write(&mut store, &[s], now), [true]);
        for (c, v) in agent::SUMMARY_COLUMNS
            .iter()
            .zip([1, 3, -5_000, 2, 4, 5, 6])
        {
            assert_eq!(
                scalar(&url, &format!("SELECT {c} FROM summaries")),
                v,
                "{c}"
            );
        }
        drop(store);
        assert!(PgStore::open(&url).is_ok(), "this version opens as it is");
    }

    #[test]
    fn a_lost_connection_is_made_again() {
        let pg = Postgres::start();
        let url = pg.create_database("reconnect");
        let now = crate::ingest::now_ms() as u64;
        let mut store = PgStore::open(&url).unwrap();
        assert_eq!(write(&mut store, &[summary("d", 0, now)], 1), [true]);
        // The server ends the collector's session (a restart, a failover, an admin).
        pg.psql(
            "reconnect",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = 'reconnect' AND pid <> pg_backend_pid()",
        );
        let items = [
            Write::Summary(&summary("d", 0, now)),
            Write::Summary(&summary("d", 1, now)),
        ];
        // The batch in flight fails (the caller keeps it and tries again); the next attempt
        // reconnects.
        let stored = match store.write(&items, 2) {
            Ok(stored) => stored,
            Err(_) => store.write(&items, 2).unwrap(),
        };
        assert_eq!(stored, [false, true]);
        assert_eq!(scalar(&url, "SELECT COUNT(*) FROM summaries"), 2);
        assert_totals_consistent(&url);
    }
}
