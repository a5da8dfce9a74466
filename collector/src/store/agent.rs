//! The agent's bad days (issue 24) as both stores keep them, per window in `summaries`
//! ([`SUMMARY_COLUMNS`], from `Health`): the spool file it could not write (the summaries
//! wait in memory) and its failed writes, wall-clock steps, re-attachments to interfaces made
//! again, packets whose IP header claimed more than the frame held, and packets of flows
//! reclaimed under a flood (part of `table_full`, in the overflow record).
//!
//! A window from an agent before these fields stores 0 (its decoder filled the defaults);
//! windows stored before the migration read NULL, which the read side counts as 0.

use shared::wire::Summary;

/// The columns of `summaries`, after the owner ones. `spool_fallback` is 0 or 1;
/// `clock_step_ms` may be negative (set back); the counters since the agent started
/// (`spool_write_errors`, `clock_steps`, `reattached`) as the agent reports them.
pub const SUMMARY_COLUMNS: [&str; 7] = [
    "spool_fallback",
    "spool_write_errors",
    "clock_step_ms",
    "clock_steps",
    "reattached",
    "header_excess",
    "reclaimed",
];

/// A summary's [`SUMMARY_COLUMNS`].
pub fn summary_values(s: &Summary) -> [Option<i64>; 7] {
    let h = &s.health;
    [
        Some(i64::from(h.spool_fallback)),
        Some(i64::from(h.spool_write_errors)),
        Some(h.clock_step_ms),
        Some(i64::from(h.clock_steps)),
        Some(i64::from(h.reattached)),
        Some(super::n(h.header_excess)),
        Some(super::n(h.reclaimed)),
    ]
}

/// `ALTER TABLE summaries ADD COLUMN …` for each column, the integer type spelled by `int`
/// (INTEGER in SQLite, BIGINT in PostgreSQL), one statement per column (SQLite's form).
pub fn add_columns_sql(int: &str) -> String {
    SUMMARY_COLUMNS
        .iter()
        .map(|c| format!("ALTER TABLE summaries ADD COLUMN {c} {int};\n"))
        .collect()
}
