//! The PostgreSQL reader: one connection of the sync `postgres` client (it runs a small
//! runtime of its own: use it from blocking threads only, never on a tokio worker), in
//! read-only transactions, every statement stopped by the server's `statement_timeout`.
//! Statements are prepared once per connection and kept by their SQL text.

use super::{Dialect, Error, Param, Reader, Result, Row};
use postgres::{
    error::SqlState,
    fallible_iterator::FallibleIterator,
    types::{ToSql, Type},
    Client, NoTls, Statement,
};
use std::{collections::HashMap, time::Duration};

/// The readers' `application_name`, unless the URL sets one.
pub const APPLICATION_NAME: &str = "edgeflow-collector reader";

pub struct Postgres {
    /// Always `Some` until dropped.
    client: Option<Client>,
    statements: HashMap<String, Statement>,
}

impl Postgres {
    pub fn open(url: &str, timeout: Duration) -> Result<Postgres> {
        let mut config = url.parse::<postgres::Config>()?;
        // So an operator tells the readers from the writers in pg_stat_activity.
        if config.get_application_name().is_none() {
            config.application_name(APPLICATION_NAME);
        }
        let mut client = config.connect(NoTls)?;
        // work_mem: the flow table groups every record of the range; at the default 4 MB a
        // 450,000-record range (1,000 devices, 15 min) spills to disk: /api/flows took 2.0 s,
        // with 32 MB 0.96 s (talkers 0.78 -> 0.41 s). Per sort or hash, per reader
        // (--http-readers, 4 by default).
        client.batch_execute(&format!(
            "SET default_transaction_read_only = on; SET work_mem = '32MB';
             SET statement_timeout = {}",
            timeout.as_millis().max(1)
        ))?;
        Ok(Postgres {
            client: Some(client),
            statements: HashMap::new(),
        })
    }

    fn client(&mut self) -> &mut Client {
        self.client.as_mut().expect("a client until dropped")
    }

    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client().prepare(sql)?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Error {
        if e.code() == Some(&SqlState::QUERY_CANCELED) {
            Error::Timeout
        } else {
            Error::Postgres(e)
        }
    }
}

impl Reader for Postgres {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn each(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        each: &mut dyn FnMut(&dyn Row) -> Result<()>,
    ) -> Result<()> {
        let st = self.statement(sql)?;
        let values = params.iter().map(|p| match p {
            Param::Int(v) => v as &(dyn ToSql + Sync),
            Param::Text(v) => v as &(dyn ToSql + Sync),
        });
        let mut rows = self.client().query_raw(&st, values)?;
        while let Some(r) = rows.next()? {
            each(&PgRow(&r))?;
        }
        Ok(())
    }

    fn broken(&self) -> bool {
        self.client.as_ref().is_none_or(Client::is_closed)
    }
}

impl Drop for Postgres {
    /// The client closes its connection by blocking on its own runtime, which panics on an
    /// async thread (where the HTTP side's pool goes when the server stops): there, a
    /// thread of its own closes it.
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::Builder::new()
                    .name("pg-reader-close".into())
                    .spawn(move || drop(client));
            }
        }
    }
}

struct PgRow<'a>(&'a postgres::Row);

impl PgRow<'_> {
    fn kind(&self, column: &str) -> Result<Type> {
        self.0
            .columns()
            .iter()
            .find(|c| c.name() == column)
            .map(|c| c.type_().clone())
            .ok_or_else(|| Error::Column {
                column: column.into(),
                why: "not in the answer".into(),
            })
    }

    fn get<'a, T: postgres::types::FromSql<'a>>(&'a self, column: &str) -> Result<T> {
        self.0.try_get(column).map_err(|e| Error::Column {
            column: column.into(),
            why: e.to_string(),
        })
    }
}

impl Row for PgRow<'_> {
    fn opt_i64(&self, column: &str) -> Result<Option<i64>> {
        match self.kind(column)? {
            Type::INT8 => self.get::<Option<i64>>(column),
            Type::INT4 => Ok(self.get::<Option<i32>>(column)?.map(i64::from)),
            Type::INT2 => Ok(self.get::<Option<i16>>(column)?.map(i64::from)),
            t => Err(Error::Column {
                column: column.into(),
                why: format!("{t} where an integer was expected"),
            }),
        }
    }

    fn opt_f64(&self, column: &str) -> Result<Option<f64>> {
        match self.kind(column)? {
            Type::FLOAT8 => self.get::<Option<f64>>(column),
            Type::FLOAT4 => Ok(self.get::<Option<f32>>(column)?.map(f64::from)),
            _ => Ok(self.opt_i64(column)?.map(|v| v as f64)),
        }
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>> {
        self.get::<Option<String>>(column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_slow_queries_reads_only_by_name_and_notices_a_lost_session() {
        let pg = testkit::postgres::Postgres::start();
        let mut reader = Postgres::open(&pg.url(), Duration::from_millis(100)).unwrap();
        let r: &mut dyn Reader = &mut reader;
        let slow = r.one("SELECT 1 AS x FROM pg_sleep(5)", &[], |r| r.i64("x"));
        assert!(matches!(slow, Err(Error::Timeout)), "{slow:?}");
        let write = r.rows("CREATE TABLE t (a BIGINT)", &[], |_| Ok(()));
        match write {
            Err(Error::Postgres(e)) => {
                assert_eq!(e.code(), Some(&SqlState::READ_ONLY_SQL_TRANSACTION))
            }
            other => panic!("a write on a reader: {other:?}"),
        }
        // Still usable after both; the same statement twice (prepared once).
        for _ in 0..2 {
            r.one(
                "SELECT CAST($1 AS BIGINT) + 2 AS n, CAST(1.5 AS DOUBLE PRECISION) AS f,
                        CAST(7 AS INTEGER) AS small, CAST($2 AS TEXT) AS t,
                        CAST(NULL AS BIGINT) AS z",
                &[40.into(), "x".into()],
                |row| {
                    assert_eq!(row.i64("n")?, 42);
                    assert_eq!(row.f64("n")?, 42.0, "an integer reads as a number");
                    assert_eq!(row.f64("f")?, 1.5);
                    assert!(row.i64("f").is_err(), "a float is not an integer");
                    assert_eq!(row.u64("small")?, 7);
                    assert_eq!(row.text("t")?, "x");
                    assert_eq!((row.opt_i64("z")?, row.total("z")?), (None, 0));
                    assert!(row.i64("z").is_err() && row.i64("nope").is_err());
                    Ok(())
                },
            )
            .unwrap();
        }
        assert!(!r.broken());
        // The server ends the session (a restart, an administrator): the reader says so, and
        // the pool opens another.
        pg.psql(
            "postgres",
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE application_name = '{APPLICATION_NAME}'"
            ),
        );
        assert!(r.one("SELECT 1 AS x", &[], |r| r.i64("x")).is_err());
        assert!(r.broken());
    }

    #[test]
    fn a_range_of_flows_reads_only_its_days() {
        use crate::api::{flows::flows_in_range, testdb, Dialect};
        use crate::store::{self, Storage, Write};
        let pg = testkit::postgres::Postgres::start();
        let url = pg.create_database("prune");
        let now = crate::ingest::now_ms();
        let day = 86_400_000;
        let today = now - now % day;
        let mut writer = store::postgres::PgStore::open(&url).unwrap();
        let s = testdb::summary(
            "d",
            0,
            today as u64,
            10_000,
            100,
            vec![testdb::flow(0, 1, 5, 5)],
        );
        writer.write(&[Write::Summary(&s)], now).unwrap();
        let mut reader = Postgres::open(&url, Duration::from_secs(10)).unwrap();
        let r: &mut dyn Reader = &mut reader;
        let mut flow_tables = |dialect| -> Vec<String> {
            let sql = format!(
                "EXPLAIN SELECT COUNT(*) AS n FROM {}",
                flows_in_range(dialect)
            );
            let params = [today.into(), (today + day).into(), Param::Text(None)];
            let plan = r.rows(&sql, &params, |row| row.text("QUERY PLAN")).unwrap();
            let mut tables: Vec<String> = plan
                .iter()
                .flat_map(|l| l.split_whitespace())
                .filter(|w| w.starts_with("flows_p") || *w == "flows_default")
                .map(|w| w.trim_end_matches("_summary_id_idx"))
                .map(String::from)
                .collect();
            tables.sort();
            tables.dedup();
            tables
        };
        let all = flow_tables(Dialect::Sqlite);
        assert!(all.len() >= 3, "the join alone visits every day: {all:?}");
        let pruned = flow_tables(Dialect::Postgres);
        assert_eq!(pruned.len(), 1, "{pruned:?} of {all:?}");
        assert!(pruned[0].starts_with("flows_p"), "{pruned:?}");
        assert_eq!(r.dialect(), Dialect::Postgres);
    }
}
