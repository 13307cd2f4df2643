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

use std::collections::HashMap;

use sqlx::{PgConnection, Row};

use super::columns::{self, Column, Columns};
use super::plan::Row as PlanRow;
use crate::delivery::Times;
use crate::event::Warnings;

/// A table of records: its name, its key and its columns.
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

/// The names of a table's columns, split as its statements use them.
pub(super) struct TableNames {
    /// The key's columns.
    pub key: Vec<&'static str>,
    /// The other columns from the payload, `parse_warnings` last.
    pub values: Vec<&'static str>,
    /// Key and values: every column the writer sets but the delivery times.
    pub all: Vec<&'static str>,
}

impl TableNames {
    pub fn of<R: RecordTable + 'static>() -> (TableNames, Vec<Column<'static>>) {
        let cols = record_columns::<R>(&[]);
        let set = &cols[..cols.len() - 2]; // first_at, last_at come last
        let all: Vec<&'static str> = set.iter().map(|c| c.name).collect();
        let names = TableNames {
            key: all[..R::KEY].to_vec(),
            values: all[R::KEY..].to_vec(),
            all,
        };
        (names, cols)
    }
}

/// `prefix` + each column name, comma-separated.
pub(super) fn names(cols: &[Column<'_>], prefix: &str) -> String {
    list(&cols.iter().map(|c| c.name).collect::<Vec<_>>(), prefix)
}

pub(super) fn list(names: &[&str], prefix: &str) -> String {
    names
        .iter()
        .map(|n| format!("{prefix}{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Builds the upsert of a table of records. Only the column names above go into the text:
/// values are always bound. `one_delivery`: every row's `first_at` equals its `last_at`
/// (live batches; not replay), so the delivery time is the `excluded` row's own `updated_at`
/// and need not be looked up in the input, which then is read once and not materialized.
pub(super) fn upsert_parts<R: RecordTable + 'static>(
    input_name: &str,
    param: usize,
    one_delivery: bool,
) -> UpsertSql {
    let (n, cols) = TableNames::of::<R>();
    let key_match = n
        .key
        .iter()
        .map(|k| format!("i.{k} = excluded.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    // A new row's times are its first delivery's; a changed row's `updated_at` is the
    // delivery that changed it (looked up in the input: `excluded` has table columns only),
    // and `received_at` can only move earlier (a replay meeting an older delivery late).
    let input = format!(
        "{input_name} AS ({rows})",
        rows = columns::unnest_select(&cols, param)
    );
    let last_at = if one_delivery {
        "excluded.updated_at".to_owned()
    } else {
        format!("(SELECT i.last_at FROM {input_name} i WHERE {key_match} LIMIT 1)")
    };
    let insert = format!(
        "INSERT INTO {table} AS t ({all_names}, received_at, updated_at)
         SELECT {all_names}, first_at, first_at FROM {input_name}
         ON CONFLICT ({key_names}) DO UPDATE
            SET ({value_names}, updated_at, received_at) =
                ({excluded_values}, {last_at}, least(t.received_at, excluded.received_at))
          WHERE ({old_values}) IS DISTINCT FROM ({excluded_values})
            -- A delivery older than the one that last changed the row (one written late,
            -- from the spool) leaves it alone: the row holds the newest delivery.
            AND t.updated_at <= {last_at}
         RETURNING {returned_keys}, (t.xmax = 0) AS inserted",
        table = R::TABLE,
        all_names = list(&n.all, ""),
        key_names = list(&n.key, ""),
        value_names = list(&n.values, ""),
        excluded_values = list(&n.values, "excluded."),
        old_values = list(&n.values, "t."),
        returned_keys = list(&n.key, "t."),
    );
    UpsertSql {
        input,
        insert,
        params: cols.len(),
    }
}

/// One table's upsert: the CTE that unpacks its rows, the `INSERT` itself, and how many
/// parameters the rows take.
pub(super) struct UpsertSql {
    pub input: String,
    pub insert: String,
    pub params: usize,
}

impl UpsertSql {
    pub fn standalone(&self) -> String {
        format!("WITH {} {}", self.input, self.insert)
    }
}

/// Runs a set-based upsert and returns, for each row it inserted or changed, its key and
/// whether it was inserted.
pub(super) async fn upsert<R: RecordTable, K: std::hash::Hash + Eq>(
    conn: &mut PgConnection,
    sql: &str,
    rows: &[(&R, Times)],
    key: impl Fn(&sqlx::postgres::PgRow) -> Result<K, sqlx::Error>,
) -> Result<HashMap<K, bool>, sqlx::Error> {
    let rows = columns::bind(sqlx::query(sql), record_columns(rows))
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
