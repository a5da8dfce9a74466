//! The read side behind the JSON API, the dashboard and `/metrics`: one module per API
//! resource, each reading rows by column name through [`Reader`], so the same SQL text serves
//! SQLite and PostgreSQL where the dialects agree.
//!
//! Counts are estimates of what crossed the wire: stored counts times the summary's
//! `sample_every` (1 unless the agent samples). Sums are taken over `DOUBLE PRECISION`
//! (exact below 2^53, never overflowing) so one absurd record cannot break a query.

pub mod conversations;
pub mod devices;
pub mod dns;
pub mod fleet;
pub mod flows;
pub mod health;
pub mod owners;
pub mod postgres;
pub mod rtt;
pub mod series;
mod sql;
pub mod sqlite;
pub mod stored;
pub mod talkers;
pub mod tcp;

use serde::Serialize;
pub use sql::{Dialect, Param, Reader, Row};
use std::time::Duration;

/// Packets and bytes: the wire format's own pair.
pub use shared::wire::Count;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// (From `postgres::Error` in [`postgres`]: a cancelled statement is a [`Error::Timeout`].)
    #[error("database: {0}")]
    Postgres(::postgres::Error),
    #[error("database: column {column}: {why}")]
    Column { column: String, why: String },
    /// The query ran longer than the reader's time limit and was stopped.
    #[error("the query ran longer than its time limit")]
    Timeout,
    /// A request the store cannot answer as asked (the caller's to fix).
    #[error("{0}")]
    Bad(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A new reader of the store `db` names; every query on it is stopped after `timeout`. The
/// PostgreSQL client blocks: call this, and use the reader, on a blocking thread.
pub fn open(db: &crate::store::Db, timeout: Duration) -> Result<Box<dyn Reader>> {
    use crate::store::Db;
    Ok(match db {
        Db::Sqlite(path) => Box::new(sqlite::Sqlite::open(path, timeout)?),
        Db::Postgres(url) => Box::new(postgres::Postgres::open(url, timeout)?),
    })
}

/// A time range of window starts, `[from, to)` in ms since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Range {
    pub from: i64,
    pub to: i64,
}

impl Range {
    pub const ALL: Range = Range {
        from: 0,
        to: i64::MAX,
    };

    /// Everything stored, as opposed to a part of it.
    pub fn is_all(&self) -> bool {
        self.from <= 0 && self.to == i64::MAX
    }
}

/// A float sum as a count: 0 for nothing, negative or not a number.
pub(crate) fn total(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v as u64
    } else {
        0
    }
}

/// The one of `choices` (its name in a query, the value) that `s` names; a bad request
/// listing the names otherwise (`what` says which parameter).
pub(crate) fn choose<T: Copy>(what: &str, s: &str, choices: &[(&str, T)]) -> Result<T> {
    choices
        .iter()
        .find(|(name, _)| *name == s)
        .map(|&(_, v)| v)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            Error::Bad(format!("{what} {s:?} is not one of {}", names.join(", ")))
        })
}

/// SQL that narrows to the device `$n` names, as every endpoint's `device` parameter does:
/// `site/device`, or a bare device name for that name in every site; NULL for all.
pub(crate) fn device_filter(prefix: &str, n: u8) -> String {
    format!(
        "(CAST(${n} AS TEXT) IS NULL OR {prefix}device = ${n} OR {prefix}site || '/' || {prefix}device = ${n})"
    )
}

#[cfg(test)]
pub(crate) mod testdb;
