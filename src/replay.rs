//! `callhippo-ingest replay`: re-derives `calls`, `sms`, `call_status`, `tags` and
//! `call_tags` from `raw_events` with the current reader, for example after a parser fix.
//!
//! Rows are applied in `last_received_at` order, page by page (one transaction each), so that
//! the tables end where live ingestion ended. Writing is the same idempotent upsert as live
//! ingestion: a row the new reader reads the same way is left alone, one it reads better is
//! updated (and loses the warnings it no longer deserves). `raw_events.kind` and `error` are
//! brought up to date too. Safe to run while `serve` runs.

use crate::store;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;

use crate::delivery::{Delivery, Outcome, Source, Times};
use crate::event::Kind;
use crate::payload;
use crate::sink::Sink;
use crate::store::PgSink;

/// Which raw events to replay.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only events last received at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only events stored as this kind (`unknown` re-reads archived events, `call` calls…).
    pub kind: Option<Kind>,
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Raw events read.
    pub read: u64,
    /// Rows inserted or changed in the normalized tables.
    pub written: u64,
    /// Events that left their row as it was (or that have no table: tests, unknown kinds).
    pub unchanged: u64,
    /// Events the current reader still refuses.
    pub still_rejected: u64,
    /// Events about an erased identifier, left unwritten.
    pub suppressed: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "read {}, written {}, unchanged {}, still rejected {}",
            self.read, self.written, self.unchanged, self.still_rejected
        )?;
        if self.suppressed > 0 {
            write!(
                f,
                ", suppressed {} (about erased identifiers)",
                self.suppressed
            )?;
        }
        Ok(())
    }
}

/// Replays the raw events that match `filter`, `page` at a time; `progress` is called after
/// each page with the running summary and the total to do.
pub async fn replay(
    sink: &PgSink,
    zone: chrono_tz::Tz,
    filter: &Filter,
    page: usize,
    mut progress: impl FnMut(&Summary, u64),
) -> anyhow::Result<Summary> {
    let pool = sink.pool();
    let since = filter.since.unwrap_or(DateTime::UNIX_EPOCH);
    let kind = filter.kind.map(Kind::as_str);
    let mut work = store::Work::of(pool).await?;
    let total: i64 = store::query_scalar(
        "SELECT count(*) FROM raw_events WHERE last_received_at >= $1 AND ($2::text IS NULL OR kind = $2)",
    )
    .bind(since)
    .bind(kind)
    .fetch_one(&mut *work)
    .await?;
    work.done().await?;

    let mut summary = Summary::default();
    // Keyset paging; ids start at 1, so (since, 0) comes before every row at `since`.
    let mut cursor: (DateTime<Utc>, i64) = (since, 0);
    loop {
        let mut work = store::Work::of(pool).await?;
        let rows = store::query(&format!(
            "SELECT {REREAD_COLUMNS}
                   FROM raw_events
                  WHERE (last_received_at, id) > ($1, $2) AND last_received_at >= $3
                    AND ($4::text IS NULL OR kind = $4)
                  ORDER BY last_received_at, id
                  LIMIT $5"
        ))
        .bind(cursor.0)
        .bind(cursor.1)
        .bind(since)
        .bind(kind)
        .bind(page as i64)
        .fetch_all(&mut *work)
        .await?;
        work.done().await?;
        let Some(last) = rows.last() else { break };
        cursor = (last.try_get("last_received_at")?, last.try_get("id")?);

        let deliveries = (rows.iter())
            .map(|row| reread(row, zone))
            .collect::<Result<Vec<_>, _>>()?;
        let outcomes = crate::store::retry_conflicts(|| sink.rederive(&deliveries)).await?;

        for outcome in outcomes {
            summary.read += 1;
            match outcome {
                Outcome::Stored | Outcome::Updated => summary.written += 1,
                Outcome::Duplicate | Outcome::Test | Outcome::Archived => summary.unchanged += 1,
                Outcome::Rejected => summary.still_rejected += 1,
                Outcome::Suppressed => summary.suppressed += 1,
            }
        }
        progress(&summary, total as u64);
    }
    Ok(summary)
}

/// Replays one raw event (the console's Replay). `None` when there is no such row; else
/// what writing it gave, and the error it is now kept with (`None`: accepted).
pub async fn replay_one(
    sink: &PgSink,
    zone: chrono_tz::Tz,
    raw_id: i64,
) -> anyhow::Result<Option<(Outcome, Option<String>)>> {
    let mut work = store::Work::of(sink.pool()).await?;
    let row = store::query(&format!(
        "SELECT {REREAD_COLUMNS} FROM raw_events WHERE id = $1"
    ))
    .bind(raw_id)
    .fetch_optional(&mut *work)
    .await?;
    work.done().await?;
    let Some(row) = row else { return Ok(None) };
    let delivery = reread(&row, zone)?;
    let error = delivery.decoded.error();
    let outcomes =
        crate::store::retry_conflicts(|| sink.rederive(std::slice::from_ref(&delivery))).await?;
    let outcome = outcomes.first().copied().unwrap_or(Outcome::Rejected);
    Ok(Some((outcome, error)))
}

/// The columns of `raw_events` [`reread`] reads.
const REREAD_COLUMNS: &str =
    "id, payload, body, body_bytes, received_at, last_received_at, content_type, source";

/// Reads an archived body again: its exact bytes when kept, else its text, else the payload.
/// Its delivery times are the archived row's, so that rebuilt rows get the times live
/// ingestion gave them.
pub(crate) fn reread(
    row: &sqlx::postgres::PgRow,
    zone: chrono_tz::Tz,
) -> Result<Delivery, sqlx::Error> {
    let received = Times {
        first: row.try_get("received_at")?,
        last: row.try_get("last_received_at")?,
    };
    let raw_id = row.try_get("id")?;
    if row.try_get::<String, _>("source")? == "api" {
        // A record of CallHippo's API: read by its own reader, in the account's zone.
        let record: Value = row
            .try_get::<Option<Value>, _>("payload")?
            .unwrap_or(Value::Null);
        let mut delivery = payload::api::call_delivery(&record, zone, received.last);
        delivery.received = received;
        delivery.source = Source::Replay {
            raw_id,
            from_api: true,
        };
        return Ok(delivery);
    }
    let content_type: Option<String> = row.try_get("content_type")?;
    let bytes: Vec<u8> = if let Some(b) = row.try_get::<Option<Vec<u8>>, _>("body_bytes")? {
        b
    } else if let Some(t) = row.try_get::<Option<String>, _>("body")? {
        t.into_bytes()
    } else {
        let payload: Option<Value> = row.try_get("payload")?;
        payload
            .map(|p| p.to_string().into_bytes())
            .unwrap_or_default()
    };
    let source = Source::Replay {
        raw_id,
        from_api: false,
    };
    let mut delivery = payload::read_delivery(bytes.into(), content_type, received.last, source);
    delivery.received = received;
    Ok(delivery)
}

/// Prints a progress line to stderr at most every `every`.
pub fn progress_printer(every: Duration) -> impl FnMut(&Summary, u64) {
    let started = Instant::now();
    let mut last = Instant::now() - every;
    move |s, total| {
        if last.elapsed() >= every || s.read >= total {
            last = Instant::now();
            let pct = if total == 0 {
                100.0
            } else {
                s.read as f64 * 100.0 / total as f64
            };
            let rate = s.read as f64 / started.elapsed().as_secs_f64().max(1e-3);
            eprintln!(
                "replay: {}/{} ({pct:.0}%), {rate:.0} events/s: {s}",
                s.read, total
            );
        }
    }
}
