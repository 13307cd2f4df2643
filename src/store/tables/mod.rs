//! The tables, one module each: their columns (one list drives both the statement's text
//! and what is bound), their statements, and how their rows are written. Only column names
//! ever go into a statement's text; every value is bound.
//!
//! Rows go to PostgreSQL as one typed array per column, unpacked by `unnest` (see
//! [`super::columns`]), so that a batch of any size is one statement per table.

pub(super) mod call_status;
pub(super) mod calls;
pub(super) mod raw_events;
pub(super) mod sms;
pub(super) mod tags;

use crate::store;
use std::collections::HashMap;

use sqlx::{PgConnection, Row};

use super::columns::{self, Column, Columns};
use super::plan::Row as PlanRow;
use crate::delivery::Times;
use crate::event::Warnings;

/// A table of records: its name, its key and its columns.
// The table's name and key make its statement's text (store/sql_gen.rs), not read at run time.
#[cfg_attr(not(test), allow(dead_code))]
pub(super) trait RecordTable: Sized {
    const TABLE: &'static str;
    /// How many of the leading columns make the table's unique key.
    const KEY: usize;
    /// The key's columns, then the others that come from the payload, named as in the table.
    fn columns<'a>(c: Columns<'a, (&'a Self, Times)>) -> Columns<'a, (&'a Self, Times)>;
    fn warnings(&self) -> &Warnings;
}

/// A record's columns, its warnings (`NULL` when none), then its delivery times `first_at`
/// and `last_at` (not table columns).
pub(super) fn record_columns<'a, R: RecordTable>(rows: &'a [(&'a R, Times)]) -> Vec<Column<'a>> {
    R::columns(Columns::new(rows))
        .jsonb("parse_warnings", |(r, _)| {
            let w = r.warnings();
            (!w.is_empty()).then(|| {
                serde_json::to_string(w)
                    .expect("a string map serializes")
                    .into()
            })
        })
        .time("first_at", |(_, t)| Some(t.first))
        .time("last_at", |(_, t)| Some(t.last))
        .done()
}

/// Runs a set-based upsert and returns, for each row it inserted or changed, its key and
/// whether it was inserted.
pub(super) async fn upsert<R: RecordTable, K: std::hash::Hash + Eq>(
    conn: &mut PgConnection,
    sql: &str,
    rows: &[(&R, Times)],
    key: impl Fn(&sqlx::postgres::PgRow) -> Result<K, sqlx::Error>,
) -> Result<HashMap<K, bool>, sqlx::Error> {
    let rows = columns::bind(store::query(sql), record_columns(rows))
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| Ok((key(row)?, row.try_get::<bool, _>("inserted")?)))
        .collect()
}

/// Pairs each row of a round with its delivery times, as the column builders take them.
pub(super) fn with_times<'a, R>(round: &[PlanRow<'a, R>]) -> Vec<(&'a R, Times)> {
    round.iter().map(|r| (r.record, r.times)).collect()
}
