//! The SQLite reader: a read-only connection (WAL: it never blocks the writer) whose running
//! statement is interrupted by SQLite's progress handler once it passes its deadline.

use super::{Dialect, Error, Param, Reader, Result, Row};
use rusqlite::{types::ValueRef, Connection, OpenFlags};
use std::{
    borrow::Cow,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, OnceLock,
    },
    time::{Duration, Instant},
};

pub struct Sqlite {
    conn: Connection,
    /// Milliseconds since [`clock`]'s start after which the running statement is interrupted.
    deadline: Arc<AtomicU64>,
    timeout: Duration,
}

/// Milliseconds on a monotonic clock (deadlines are compared in the progress handler).
fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Sqlite {
    pub fn open(path: &Path, timeout: Duration) -> Result<Sqlite> {
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let deadline = Arc::new(AtomicU64::new(u64::MAX));
        let d = deadline.clone();
        // Every ~10,000 virtual machine instructions (well under a millisecond).
        conn.progress_handler(10_000, Some(move || clock() > d.load(Relaxed)))?;
        Ok(Sqlite {
            conn,
            deadline,
            timeout,
        })
    }

    /// The connection itself (tests look at query plans).
    pub fn conn(&self) -> &Connection {
        &self.conn
    }
}

/// `$1` → `?1`: SQLite reads `$1` as a named parameter numbered by first appearance, which
/// would bind `$2` first in `… $2 … $1`.
pub fn placeholders(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(match *self {
            Param::Int(Some(v)) => ToSqlOutput::Owned(Value::Integer(v)),
            Param::Text(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Param::Int(None) | Param::Text(None) => ToSqlOutput::Owned(Value::Null),
        })
    }
}

impl Reader for Sqlite {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn each(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        each: &mut dyn FnMut(&dyn Row) -> Result<()>,
    ) -> Result<()> {
        let mut run = || -> Result<()> {
            let mut st = self.conn.prepare_cached(&placeholders(sql))?;
            let mut rows = st.query(rusqlite::params_from_iter(params))?;
            while let Some(r) = rows.next()? {
                each(&SqliteRow(r))?;
            }
            Ok(())
        };
        run().map_err(|e| match e {
            Error::Sqlite(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) =>
            {
                Error::Timeout
            }
            e => e,
        })
    }

    fn busy(&mut self) {
        let limit = self.timeout.as_millis() as u64;
        self.deadline.store(clock().saturating_add(limit), Relaxed);
    }

    fn idle(&mut self) {
        self.deadline.store(u64::MAX, Relaxed);
    }
}

struct SqliteRow<'a, 'b>(&'a rusqlite::Row<'b>);

impl SqliteRow<'_, '_> {
    fn value(&self, column: &str) -> Result<ValueRef<'_>> {
        Ok(self.0.get_ref(column)?)
    }
}

fn wrong(column: &str, v: ValueRef<'_>, want: &str) -> Error {
    Error::Column {
        column: column.into(),
        why: format!("{:?} where {want} was expected", v.data_type()),
    }
}

impl Row for SqliteRow<'_, '_> {
    fn opt_i64(&self, column: &str) -> Result<Option<i64>> {
        match self.value(column)? {
            ValueRef::Null => Ok(None),
            ValueRef::Integer(i) => Ok(Some(i)),
            v => Err(wrong(column, v, "an integer")),
        }
    }

    fn opt_f64(&self, column: &str) -> Result<Option<f64>> {
        match self.value(column)? {
            ValueRef::Null => Ok(None),
            ValueRef::Integer(i) => Ok(Some(i as f64)),
            ValueRef::Real(f) => Ok(Some(f)),
            v => Err(wrong(column, v, "a number")),
        }
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>> {
        match self.value(column)? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(t) => Ok(Some(String::from_utf8_lossy(t).into_owned())),
            v => Err(wrong(column, v, "text")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_keep_their_numbers() {
        assert_eq!(
            placeholders("SELECT $2, $1 WHERE a = $10 AND b = '$'"),
            "SELECT ?2, ?1 WHERE a = ?10 AND b = '$'"
        );
    }
}
