//! The read interface both stores implement: run one SQL text with positional parameters
//! (`$1`, `$2`… as PostgreSQL writes them; the SQLite reader renames them `?1`, `?2`…) and
//! hand each row to the caller, who reads its columns by name.
//!
//! One SQL text serves both databases when it keeps to what they agree on:
//! - sums as `SUM(CAST(x AS DOUBLE PRECISION) * …)`: SQLite's `SUM` of integers fails on
//!   overflow and PostgreSQL's `SUM(bigint)` is `numeric`; a float is exact below 2^53 in both
//!   (and `NULL` over no rows: [`Row::total`] reads it as 0);
//! - conditional counts as `COUNT(CASE WHEN … THEN 1 END)`, not `SUM(a = b)` (no booleans to
//!   add in PostgreSQL); no scalar `MAX(a, b)` (SQLite) or `GREATEST` (PostgreSQL);
//! - an optional parameter as `(CAST($n AS TEXT) IS NULL OR col = $n)`: the cast gives
//!   PostgreSQL its type; `LIMIT $n` and comparisons with BIGINT columns type themselves;
//! - `LIKE … ESCAPE '\'` with the pattern escaped by the caller (SQLite's `instr` does not
//!   exist in PostgreSQL), and lower-case data (PostgreSQL's LIKE minds case);
//! - an alias on every subquery in `FROM`, and `AS` names on computed columns (they are read
//!   by name).

use super::{Count, Error, Result};

/// A query parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Param<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(Some(v))
    }
}

impl From<Option<i64>> for Param<'_> {
    fn from(v: Option<i64>) -> Self {
        Param::Int(v)
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(Some(v))
    }
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Param::Text(v)
    }
}

/// One result row; columns by name (as the query's `AS` names them).
pub trait Row {
    /// An integer column (a float one is refused: it would lose its fraction).
    fn opt_i64(&self, column: &str) -> Result<Option<i64>>;
    /// A number column, integer or float.
    fn opt_f64(&self, column: &str) -> Result<Option<f64>>;
    fn opt_text(&self, column: &str) -> Result<Option<String>>;

    fn i64(&self, column: &str) -> Result<i64> {
        self.opt_i64(column)?.ok_or_else(|| null(column))
    }

    fn f64(&self, column: &str) -> Result<f64> {
        self.opt_f64(column)?.ok_or_else(|| null(column))
    }

    fn text(&self, column: &str) -> Result<String> {
        self.opt_text(column)?.ok_or_else(|| null(column))
    }

    /// A non-negative integer (counters are stored signed).
    fn u64(&self, column: &str) -> Result<u64> {
        Ok(self.i64(column)?.max(0) as u64)
    }

    /// A sum as a count: NULL (nothing summed) is 0.
    fn total(&self, column: &str) -> Result<u64> {
        Ok(super::total(self.opt_f64(column)?.unwrap_or(0.0)))
    }

    /// Two sums as packets and bytes.
    fn count(&self, packets: &str, bytes: &str) -> Result<Count> {
        Ok(Count {
            packets: self.total(packets)?,
            bytes: self.total(bytes)?,
        })
    }
}

fn null(column: &str) -> Error {
    Error::Column {
        column: column.into(),
        why: "NULL where a value was expected".into(),
    }
}

/// Which database a reader reads, for the few places where the schemas differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    /// Its `flows` also carries the summary's `window_start_ms` (the partition key).
    Postgres,
}

/// A read-only connection to the store.
pub trait Reader: Send {
    fn dialect(&self) -> Dialect;

    /// Runs `sql` with `params` and calls `each` on every row, in order.
    fn each(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        each: &mut dyn FnMut(&dyn Row) -> Result<()>,
    ) -> Result<()>;

    /// Starts the time limit of the next queries (until [`Reader::idle`]).
    fn busy(&mut self) {}

    /// Ends the time limit: the reader waits in the pool.
    fn idle(&mut self) {}

    /// The connection is lost: open another rather than keep this one.
    fn broken(&self) -> bool {
        false
    }
}

impl dyn Reader + '_ {
    /// Every row, mapped.
    pub fn rows<T>(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        mut map: impl FnMut(&dyn Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.each(sql, params, &mut |r| {
            out.push(map(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The one row the query returns.
    pub fn one<T>(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        map: impl FnOnce(&dyn Row) -> Result<T>,
    ) -> Result<T> {
        let mut map = Some(map);
        let mut out = None;
        self.each(sql, params, &mut |r| {
            if let Some(m) = map.take() {
                out = Some(m(r)?);
            }
            Ok(())
        })?;
        out.ok_or_else(|| Error::Column {
            column: "*".into(),
            why: "the query returned no row".into(),
        })
    }
}
