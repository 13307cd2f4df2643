//! `calls`, and the links of each call to its tags (`call_tags`): a call's tags are exactly
//! those of its newest delivery.

use crate::store;
use std::collections::{HashMap, HashSet};

use sqlx::{PgConnection, Row as _};

use super::super::columns::{self, Column, Columns};
use super::super::plan::{outcome_of_change, Row};
use super::{record_columns, upsert, with_times, RecordTable};
use crate::delivery::{Outcome, Times};
use crate::event::{CallRecord, Warnings};

impl RecordTable for CallRecord {
    const TABLE: &'static str = "calls";
    const KEY: usize = 1;
    fn columns<'a>(c: Columns<'a, (&'a Self, Times)>) -> Columns<'a, (&'a Self, Times)> {
        c.text("call_sid", |(r, _)| Some(r.call_sid.as_str()))
            .text("call_type", |(r, _)| r.call_type.as_deref())
            .text("from_number", |(r, _)| r.from_number.as_deref())
            .text("to_number", |(r, _)| r.to_number.as_deref())
            .text("dial_code", |(r, _)| r.dial_code.as_deref())
            .text("country_name", |(r, _)| r.country_name.as_deref())
            .text("status", |(r, _)| r.status.as_deref())
            .text("status_reason", |(r, _)| r.status_reason.as_deref())
            .int("duration_seconds", |(r, _)| r.duration_seconds)
            .int("ring_seconds", |(r, _)| r.ring_seconds)
            .int("billed_minutes", |(r, _)| r.billed_minutes)
            .numeric("call_charge", |(r, _)| r.call_charge)
            .time("logged_at", |(r, _)| r.logged_at)
            .time("started_at", |(r, _)| r.started_at)
            .time("ended_at", |(r, _)| r.ended_at)
            .text("agent_email", |(r, _)| r.agent_email.as_deref())
            .text("agent_name", |(r, _)| r.agent_name.as_deref())
            .text("admin_email", |(r, _)| r.admin_email.as_deref())
            .text("note", |(r, _)| r.note.as_deref())
            .text("recording_url", |(r, _)| r.recording_url.as_deref())
            .text("answered_device", |(r, _)| r.answered_device.as_deref())
            .text("hangup_by", |(r, _)| r.hangup_by.as_deref())
            .boolean("call_queue", |(r, _)| r.call_queue)
            .text("reason", |(r, _)| r.reason.as_deref())
            .text_array("dispositions", |(r, _)| r.dispositions.as_deref())
            .text("agent_id", |(r, _)| r.agent_id.as_deref())
            .text("campaign_id", |(r, _)| r.campaign_id.as_deref())
            .text("crm_unique_id", |(r, _)| r.crm_unique_id.as_deref())
            .text("virtual_number", |(r, _)| r.virtual_number.as_deref())
    }
    fn warnings(&self) -> &Warnings {
        &self.warnings
    }
}

/// The upsert of one round of rows (each key once): see sql/calls_upsert.sql.
const UPSERT_CALLS: &str = include_str!("../sql/calls_upsert.sql");

/// Makes `call_tags` of calls that existed before this batch exactly the wanted ones, and
/// says which calls' tags changed; those the upsert did not already write get `updated_at`
/// moved. Every access to `call_tags` and `calls` goes through an array of keys (`= ANY`),
/// so it is an index scan however large the tables grow.
const SYNC_CALL_TAGS: &str = "
    WITH batch AS (
        SELECT * FROM unnest($1::text[], $2::timestamptz[]) AS b(call_sid, at)),
    -- Only calls whose row this delivery may speak for: not one a newer delivery changed.
    eligible AS (
        SELECT c.call_sid FROM calls c JOIN batch b USING (call_sid)
         WHERE c.call_sid = ANY ($1::text[]) AND c.updated_at <= b.at),
    wanted AS (
        SELECT * FROM unnest($3::text[], $4::bigint[]) AS w(call_sid, tag_id)
         WHERE w.call_sid IN (SELECT call_sid FROM eligible)),
    current AS (
        SELECT call_sid, tag_id FROM call_tags
         WHERE call_sid = ANY (ARRAY(SELECT call_sid FROM eligible))),
    changed AS (
        SELECT DISTINCT call_sid FROM (
            (SELECT * FROM wanted EXCEPT SELECT * FROM current)
            UNION ALL
            (SELECT * FROM current EXCEPT SELECT * FROM wanted)) AS diff),
    removed AS (
        DELETE FROM call_tags ct
         WHERE ct.call_sid = ANY (ARRAY(SELECT call_sid FROM changed))
           AND (ct.call_sid, ct.tag_id) NOT IN (SELECT call_sid, tag_id FROM wanted)),
    added AS (
        INSERT INTO call_tags (call_sid, tag_id)
        SELECT call_sid, tag_id FROM wanted
         WHERE call_sid = ANY (ARRAY(SELECT call_sid FROM changed))
         ORDER BY 1, 2
        ON CONFLICT DO NOTHING),
    touched AS (
        UPDATE calls c SET updated_at = b.at
          FROM batch b
         WHERE c.call_sid = ANY (ARRAY(SELECT call_sid FROM changed))
           AND c.call_sid = b.call_sid
           AND NOT (c.call_sid = ANY ($5::text[])))
    SELECT call_sid FROM changed";

/// The tags of calls this batch inserted: they cannot have any yet.
const INSERT_CALL_TAGS: &str = "
    INSERT INTO call_tags (call_sid, tag_id)
    SELECT * FROM unnest($1::text[], $2::bigint[]) AS w(call_sid, tag_id)
     ORDER BY 1, 2
    ON CONFLICT DO NOTHING";

pub(in crate::store) async fn upsert_calls(
    conn: &mut PgConnection,
    round: &[Row<'_, CallRecord>],
    tag_ids: &HashMap<String, super::tags::TagId>,
    outcomes: &mut [Outcome],
) -> Result<(), sqlx::Error> {
    let rows = with_times(round);
    let written = upsert(conn, UPSERT_CALLS, &rows, |row| row.try_get::<String, _>(0)).await?;

    // New calls' tags are plain inserts; calls that were there before need a comparison.
    let is_new = |c: &CallRecord| written.get(&c.call_sid) == Some(&true);
    let (mut new_sids, mut new_tags) = (Vec::new(), Vec::new());
    let (mut old_sids, mut old_ats, mut old_tag_sids, mut old_tags) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for Row {
        record: c,
        times: at,
        ..
    } in round
    {
        if is_new(c) {
            for name in &c.tags {
                new_sids.push(c.call_sid.as_str());
                new_tags.push(tag_ids[name]);
            }
        } else {
            old_sids.push(c.call_sid.as_str());
            old_ats.push(at.last);
            for name in &c.tags {
                old_tag_sids.push(c.call_sid.as_str());
                old_tags.push(tag_ids[name]);
            }
        }
    }
    if !new_sids.is_empty() {
        store::query(INSERT_CALL_TAGS)
            .bind(&new_sids)
            .bind(&new_tags)
            .execute(&mut *conn)
            .await?;
    }
    let mut tags_changed = HashSet::new();
    if !old_sids.is_empty() {
        let written_sids: Vec<&str> = written.keys().map(String::as_str).collect();
        tags_changed = store::query_scalar::<String>(SYNC_CALL_TAGS)
            .bind(&old_sids)
            .bind(&old_ats)
            .bind(&old_tag_sids)
            .bind(&old_tags)
            .bind(&written_sids)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
    }

    for Row {
        index, record: c, ..
    } in round
    {
        outcomes[*index] = match written.get(&c.call_sid) {
            Some(&inserted) => outcome_of_change(Some(inserted)),
            None if tags_changed.contains(&c.call_sid) => Outcome::Updated,
            None => Outcome::Duplicate,
        };
    }
    Ok(())
}

/// The columns of a call read from CallHippo's API: a webhook's ([`RecordTable::columns`],
/// then `parse_warnings` and the delivery times), then the two only the API gives.
pub(in crate::store) fn api_call_columns<'a>(
    rows: &'a [(&'a CallRecord, Times)],
) -> Vec<Column<'a>> {
    let mut cols = record_columns(rows);
    cols.extend(
        Columns::new(rows)
            .time("answered_at", |(r, _)| r.answered_at)
            .text("api_id", |(r, _)| r.api_id.as_deref())
            .done(),
    );
    cols
}

/// Calls read from CallHippo's API: inserted when the webhooks missed them (`source` api),
/// else only their empty columns filled (sql/calls_fill.sql).
const FILL_CALLS: &str = include_str!("../sql/calls_fill.sql");

/// Writes one round (each key once) of calls read from the API, with the merge rule
/// `FillEmpty`: `stored` for a call the webhooks missed (with its tags), `updated` for one
/// that gained what only the API gives, `duplicate` when it changed nothing.
pub(in crate::store) async fn fill_calls(
    conn: &mut PgConnection,
    round: &[Row<'_, CallRecord>],
    tag_ids: &HashMap<String, super::tags::TagId>,
    outcomes: &mut [Outcome],
) -> Result<(), sqlx::Error> {
    let rows = with_times(round);
    let written: HashMap<String, bool> =
        columns::bind(store::query(FILL_CALLS), api_call_columns(&rows))
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get::<bool, _>(1)?)))
            .collect::<Result<_, sqlx::Error>>()?;
    let (mut sids, mut tags) = (Vec::new(), Vec::new());
    for r in round
        .iter()
        .filter(|r| written.get(&r.record.call_sid) == Some(&true))
    {
        for name in &r.record.tags {
            sids.push(r.record.call_sid.as_str());
            tags.push(tag_ids[name]);
        }
    }
    if !sids.is_empty() {
        // Only the calls it inserted: a stored call keeps its own tags (those of its newest
        // delivery).
        (store::query(INSERT_CALL_TAGS).bind(&sids).bind(&tags))
            .execute(&mut *conn)
            .await?;
    }
    for r in round {
        let sid = &r.record.call_sid;
        outcomes[r.index] = outcome_of_change(written.get(sid).copied());
    }
    Ok(())
}
