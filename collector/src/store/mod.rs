//! The store's write side: one interface ([`Storage`]), two databases.
//!
//! - [`sqlite`]: the embedded default, one file, one writer (one collector).
//! - [`postgres`]: a server several collectors write to at once (a shared-subscription
//!   group), partitioned by day.
//!
//! Both keep the same tables and columns (summaries, flows, boots, device_totals, presence),
//! so the read side's SQL is shared, and both follow the same rules: a summary is stored
//! once per (site, device, boot_id, seq, part), its device's running totals and its run's
//! gap bookkeeping move in the same transaction and only for a summary actually inserted, and
//! nothing is visible (or acknowledged to the broker) before the commit.

pub mod agent;
pub mod dns;
pub mod owner;
pub mod postgres;
pub mod sqlite;
pub mod tcp;

pub use sqlite::{open_reader, Batch, Store, WRITE_BUSY_TIMEOUT};

use shared::identity::Presence;
use shared::wire::{Addr, Summary};
use std::{fmt, net::IpAddr, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Not a `#[source]`: the client's own message is only its kind ("db error"), so the
    /// server's words are spelled out here, once, whether printed with `{}` or `{:#}`.
    #[error("database: {}", chain(.0))]
    Postgres(::postgres::Error),
    #[error("database schema version {0} is not this collector's ({v}); move the file away", v = sqlite::SCHEMA_VERSION)]
    Version(i64),
    #[error("PostgreSQL schema version {0} is not this collector's ({v}); use another database", v = postgres::SCHEMA_VERSION)]
    PgVersion(i64),
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl From<::postgres::Error> for StoreError {
    fn from(e: ::postgres::Error) -> StoreError {
        StoreError::Postgres(e)
    }
}

/// Where `--db` points: a SQLite file (the default) or a PostgreSQL server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Db {
    Sqlite(PathBuf),
    /// A `postgres://` (or `postgresql://`) URL, e.g.
    /// `postgres://user:pass@10.0.0.5:5432/edgeflow` or `postgres://user@/edgeflow?host=/run/postgresql`.
    Postgres(String),
}

impl Db {
    /// A URL scheme of PostgreSQL's is a server; anything else is a SQLite file path. An
    /// unparsable URL is an error (it would otherwise become a file of that name).
    pub fn parse(s: &str) -> Result<Db, String> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            s.parse::<::postgres::Config>()
                .map_err(|e| format!("--db {}: {e}", redact(s)))?;
            Ok(Db::Postgres(s.to_string()))
        } else if s.is_empty() {
            Err("--db: empty".into())
        } else {
            Ok(Db::Sqlite(PathBuf::from(s)))
        }
    }
}

/// A URL with its password replaced (for logs and errors).
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.split_once('@') {
        Some(x) => x,
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

impl fmt::Display for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Db::Sqlite(p) => write!(f, "{}", p.display()),
            Db::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

/// One thing to store.
#[derive(Debug, Clone, Copy)]
pub enum Write<'a> {
    Summary(&'a Summary),
    /// A device's own online/offline report.
    Presence {
        site: &'a str,
        device: &'a str,
        state: Presence,
    },
}

/// The write side of a store.
pub trait Storage: Send {
    /// Stores `items` in one transaction, all or nothing. Per item: `false` for a summary that
    /// was already stored (a duplicate delivery, also one another collector stored), which
    /// then changed nothing. Nothing is durable before this returns `Ok`.
    fn write(&mut self, items: &[Write<'_>], received_ms: i64) -> Result<Vec<bool>, StoreError>;

    /// Deletes what the collector received before `before_ms` (summaries, their flow records,
    /// their share of the running totals, finished runs' gap bookkeeping): (summaries, flow
    /// records) deleted.
    fn prune(&mut self, before_ms: i64) -> Result<(usize, usize), StoreError>;
}

impl Storage for Box<dyn Storage> {
    fn write(&mut self, items: &[Write<'_>], received_ms: i64) -> Result<Vec<bool>, StoreError> {
        (**self).write(items, received_ms)
    }

    fn prune(&mut self, before_ms: i64) -> Result<(usize, usize), StoreError> {
        (**self).prune(before_ms)
    }
}

/// Opens (creating the schema if needed) the store `db` points at.
pub fn open(db: &Db) -> Result<Box<dyn Storage>, StoreError> {
    Ok(match db {
        Db::Sqlite(path) => Box::new(Store::open(path)?),
        Db::Postgres(url) => Box::new(postgres::PgStore::open(url)?),
    })
}

/// A counter as both databases store it (signed 64-bit).
fn n(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// An address as the API shows and searches it.
pub fn addr_text(a: &Addr) -> String {
    match *a {
        Addr::V4(b) => IpAddr::from(b).to_string(),
        Addr::V6(b) => IpAddr::from(b).to_string(),
    }
}

/// The `UPDATE` that takes a block's running sums (`subtract`: its `subtract_sql`, reading
/// alias `d`; `sums`: its `sum_totals_sql`) of the summaries in table `t` selected by `w` off
/// `device_totals`; the same text in both databases.
fn subtract_totals(subtract: &str, sums: &str, t: &str, w: &str) -> String {
    format!(
        "UPDATE device_totals SET {subtract}
         FROM (SELECT site, device, {sums} FROM {t} WHERE {w} GROUP BY site, device) AS d
         WHERE device_totals.site = d.site AND device_totals.device = d.device"
    )
}

/// A record's address by index; decoding already rejected out-of-range indices.
fn addr(addrs: &[String], i: u32) -> &str {
    addrs.get(i as usize).map_or("?", String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_is_a_file_or_a_postgres_url() {
        assert_eq!(
            Db::parse("edgeflow.db").unwrap(),
            Db::Sqlite("edgeflow.db".into())
        );
        let url = "postgres://u:secret@/edgeflow?host=/run/postgresql";
        let db = Db::parse(url).unwrap();
        assert_eq!(db, Db::Postgres(url.into()));
        assert_eq!(
            db.to_string(),
            "postgres://u:***@/edgeflow?host=/run/postgresql",
            "the password stays out of logs"
        );
        assert!(Db::parse("postgresql://h:notaport/db").is_err());
        assert!(Db::parse("").is_err());
    }
}
