//! `call_status`: one row per status notification, unique on (`call_sid`, `status`,
//! `occurred_at`).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row as _};

use super::super::columns::Columns;
use super::super::plan::{outcome_of_change, Row, StatusKey};
use super::{upsert, with_times, RecordTable};
use crate::delivery::{Outcome, Times};
use crate::event::{CallStatusRecord, Warnings};

impl RecordTable for CallStatusRecord {
    const TABLE: &'static str = "call_status";
    const KEY: usize = 3;
    fn columns<'a>(c: Columns<'a, (&'a Self, Times)>) -> Columns<'a, (&'a Self, Times)> {
        c.text("call_sid", |(r, _)| Some(r.call_sid.as_str()))
            .text("status", |(r, _)| Some(r.status.as_str()))
            .time("occurred_at", |(r, _)| Some(r.occurred_at))
            .text("call_type", |(r, _)| r.call_type.as_deref())
            .text("from_number", |(r, _)| r.from_number.as_deref())
            .text("to_number", |(r, _)| r.to_number.as_deref())
            .text("agent_email", |(r, _)| r.agent_email.as_deref())
            .text("agent_id", |(r, _)| r.agent_id.as_deref())
            .text("dial_code", |(r, _)| r.dial_code.as_deref())
    }
    fn warnings(&self) -> &Warnings {
        &self.warnings
    }
}

/// The upsert of one round of rows (each key once): see sql/call_status_upsert.sql.
const UPSERT_STATUS: &str = include_str!("../sql/call_status_upsert.sql");

/// Upserts one round of status events (each key once) and records each one's outcome.
pub(in crate::store) async fn upsert_statuses(
    conn: &mut PgConnection,
    round: &[Row<'_, CallStatusRecord>],
    outcomes: &mut [Outcome],
) -> Result<(), sqlx::Error> {
    let rows = with_times(round);
    let changed = upsert(conn, UPSERT_STATUS, &rows, |row| {
        Ok(StatusKey {
            call_sid: row.try_get(0)?,
            status: row.try_get(1)?,
            occurred_at: row.try_get::<DateTime<Utc>, _>(2)?,
        })
    })
    .await?;
    for r in round {
        outcomes[r.index] = outcome_of_change(changed.get(&StatusKey::of(r.record)).copied());
    }
    Ok(())
}
