//! `sms`: one row per message, keyed by `sms_key` (the vendor gives an SMS no id).

use sqlx::{PgConnection, Row as _};

use super::super::columns::Columns;
use super::super::plan::{outcome_of_change, Row};
use super::{upsert, with_times, RecordTable};
use crate::delivery::{Outcome, Times};
use crate::event::{SmsRecord, Warnings};

impl RecordTable for SmsRecord {
    const TABLE: &'static str = "sms";
    const KEY: usize = 1;
    fn columns<'a>(c: Columns<'a, (&'a Self, Times)>) -> Columns<'a, (&'a Self, Times)> {
        c.text("sms_key", |(r, _)| Some(r.sms_key.as_str()))
            .text("sms_type", |(r, _)| r.sms_type.as_deref())
            .text("from_number", |(r, _)| Some(r.from_number.as_str()))
            .text("to_number", |(r, _)| Some(r.to_number.as_str()))
            .text("status", |(r, _)| r.status.as_deref())
            .text("content", |(r, _)| r.content.as_deref())
            .time("logged_at", |(r, _)| Some(r.logged_at))
            .numeric("sms_charge", |(r, _)| r.sms_charge)
            .text("agent_email", |(r, _)| r.agent_email.as_deref())
            .text("agent_name", |(r, _)| r.agent_name.as_deref())
            .text("admin_email", |(r, _)| r.admin_email.as_deref())
    }
    fn warnings(&self) -> &Warnings {
        &self.warnings
    }
}

/// The upsert of one round of rows (each key once): see sql/sms_upsert.sql.
const UPSERT_SMS: &str = include_str!("../sql/sms_upsert.sql");

/// Upserts one round of SMS (each key once) and records each one's outcome.
pub(in crate::store) async fn upsert_sms(
    conn: &mut PgConnection,
    round: &[Row<'_, SmsRecord>],
    outcomes: &mut [Outcome],
) -> Result<(), sqlx::Error> {
    let rows = with_times(round);
    let changed = upsert(conn, UPSERT_SMS, &rows, |row| row.try_get::<String, _>(0)).await?;
    for r in round {
        outcomes[r.index] = outcome_of_change(changed.get(&r.record.sms_key).copied());
    }
    Ok(())
}
