//! `raw_events`: every accepted delivery, before anything else; identical bytes are one row
//! whose count of deliveries grows.

use crate::store;
use std::collections::BTreeMap;

use sqlx::PgConnection;

use super::super::columns::{self, Column, Columns};

/// Keeps every delivery in `raw_events`: identical bytes are one row whose count grows.
const UPSERT_RAW: &str = include_str!("../sql/raw_events_upsert.sql");
use chrono::{DateTime, Utc};

use crate::delivery::{Delivery, Times};
use crate::event::Reading;

/// One distinct body of a batch.
pub(in crate::store) struct RawRow<'a> {
    kind: &'static str,
    sha256: &'a [u8; 32],
    payload: Option<&'a str>,
    body: Option<&'a str>,
    body_bytes: Option<&'a [u8]>,
    content_type: Option<&'a str>,
    error: Option<String>,
    times: Times,
    deliveries: i32,
    source: &'static str,
    event_at: Option<DateTime<Utc>>,
}

/// The columns of `raw_events` the writer sets, named as in the table.
pub(in crate::store) fn raw_columns<'a>(rows: &'a [RawRow<'a>]) -> Vec<Column<'a>> {
    Columns::new(rows)
        .text("kind", |r| Some(r.kind))
        .bytes("body_sha256", |r| Some(&r.sha256[..]))
        .jsonb("payload", |r| r.payload.map(Into::into))
        .text("body", |r| r.body)
        .bytes("body_bytes", |r| r.body_bytes)
        .text("content_type", |r| r.content_type)
        .text("error", |r| r.error.as_deref())
        .time("received_at", |r| Some(r.times.first))
        .time("last_received_at", |r| Some(r.times.last))
        .int("deliveries", |r| Some(r.deliveries))
        .text("source", |r| Some(r.source))
        .time("event_at", |r| r.event_at)
        .done()
}

/// One row per distinct body, sorted by digest (the lock order).
pub(in crate::store) fn raw_rows(batch: &[Delivery]) -> Vec<RawRow<'_>> {
    let mut by_sha: BTreeMap<[u8; 32], RawRow> = BTreeMap::new();
    for d in batch {
        let dec = &d.decoded;
        let at = d.received;
        by_sha
            .entry(dec.sha256)
            .and_modify(|r| {
                r.deliveries += 1;
                r.times.first = r.times.first.min(at.first);
                r.times.last = r.times.last.max(at.last);
            })
            .or_insert_with(|| RawRow {
                kind: dec.kind().as_str(),
                sha256: &dec.sha256,
                payload: dec.payload.as_deref(),
                body: dec.body.as_deref(),
                body_bytes: dec.body_bytes.as_deref(),
                content_type: d.content_type.as_deref(),
                error: dec.error(),
                times: at,
                deliveries: 1,
                source: d.source.archived_as(),
                event_at: match &dec.reading {
                    Reading::Record(r) => r.event_at(),
                    _ => None,
                },
            });
    }
    by_sha.into_values().collect()
}

pub(in crate::store) async fn upsert_raw(
    conn: &mut PgConnection,
    batch: &[Delivery],
) -> Result<(), sqlx::Error> {
    let rows = raw_rows(batch);
    columns::bind(store::query(UPSERT_RAW), raw_columns(&rows))
        .execute(&mut *conn)
        .await?;
    Ok(())
}
