//! Retention, in small batches in the background: `RAW_RETENTION_DAYS` removes raw events by
//! their last delivery; `CALL_RETENTION_DAYS` removes calls (with their tag links), SMS and
//! status events by their time, and raw events by the time of their event. One replica at a
//! time does it (an advisory lock), and each batch is a short transaction, so that
//! ingestion never waits behind a long delete.

use crate::store;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

const RETENTION_LOCK_KEY: i64 = 0x6368_6970_7265_7465; // "chiprete"

/// Rows per transaction.
const BATCH: i64 = 5_000;
/// The pause between two batches.
const PAUSE: Duration = Duration::from_millis(100);

/// Raw events last received before `$1`.
const RAW_BY_DELIVERY: &str = "WITH gone AS (DELETE FROM raw_events
                 WHERE id IN (SELECT id FROM raw_events WHERE last_received_at < $1
                               ORDER BY last_received_at LIMIT $2)
                 RETURNING 1)
  SELECT count(*) FROM gone";

/// Call-retention statements, by what they remove; each takes the cutoff and a batch size.
const BY_EVENT_TIME: [(&str, &str); 5] = [
    (
        "calls",
        "WITH gone AS (
             DELETE FROM calls
              WHERE call_sid IN (SELECT call_sid FROM calls
                                  WHERE started_at < $1 OR (started_at IS NULL AND logged_at < $1)
                                  LIMIT $2)
              RETURNING call_sid),
         links AS (DELETE FROM call_tags WHERE call_sid IN (SELECT call_sid FROM gone))
         SELECT count(*) FROM gone",
    ),
    (
        "call_status",
        "WITH gone AS (DELETE FROM call_status
                        WHERE id IN (SELECT id FROM call_status WHERE occurred_at < $1 LIMIT $2)
                        RETURNING 1)
         SELECT count(*) FROM gone",
    ),
    (
        "sms",
        "WITH gone AS (DELETE FROM sms
                        WHERE id IN (SELECT id FROM sms WHERE logged_at < $1 LIMIT $2)
                        RETURNING 1)
         SELECT count(*) FROM gone",
    ),
    (
        "raw_events",
        "WITH gone AS (DELETE FROM raw_events
                        WHERE id IN (SELECT id FROM raw_events WHERE event_at < $1 LIMIT $2)
                        RETURNING 1)
         SELECT count(*) FROM gone",
    ),
    // Raw events archived before they had an event time (written before migration V5):
    // by their last delivery.
    (
        "raw_events",
        "WITH gone AS (DELETE FROM raw_events
                        WHERE id IN (SELECT id FROM raw_events
                                      WHERE last_received_at < $1 AND event_at IS NULL
                                        AND kind IN ('call', 'sms', 'call_status')
                                      LIMIT $2)
                        RETURNING 1)
         SELECT count(*) FROM gone",
    ),
];

/// What retention removes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub raw_days: Option<u32>,
    pub call_days: Option<u32>,
}

fn cutoff(days: u32) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::days(i64::from(days))
}

/// Runs `statement` (which returns how many rows it removed) in batches of `batch`, each
/// under the retention lock. `None` when another process holds it.
async fn in_batches(
    pool: &PgPool,
    statement: &str,
    cutoff: DateTime<Utc>,
    batch: i64,
    pause: Duration,
) -> Result<Option<u64>, sqlx::Error> {
    let mut removed = 0;
    loop {
        let mut tx = store::pooler::begin(pool).await?;
        let locked: bool = store::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(RETENTION_LOCK_KEY)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok((removed > 0).then_some(removed));
        }
        let n = store::query_scalar::<i64>(statement)
            .bind(cutoff)
            .bind(batch)
            .fetch_one(&mut *tx)
            .await? as u64;
        tx.commit().await?;
        removed += n;
        if (n as i64) < batch {
            return Ok(Some(removed));
        }
        tokio::time::sleep(pause).await;
    }
}

/// Deletes raw events last received more than `days` ago, `batch` rows per transaction.
/// Returns how many it deleted; 0 when another process holds the retention lock.
pub async fn purge(
    pool: &PgPool,
    days: u32,
    batch: i64,
    pause: Duration,
) -> Result<u64, sqlx::Error> {
    let removed = in_batches(pool, RAW_BY_DELIVERY, cutoff(days), batch, pause).await?;
    Ok(removed.unwrap_or(0))
}

/// Deletes calls, SMS and status events whose time is more than `days` ago, with their tag
/// links and raw events; returns how many rows went, by table.
pub async fn purge_calls(
    pool: &PgPool,
    days: u32,
    batch: i64,
    pause: Duration,
) -> Result<Vec<(&'static str, u64)>, sqlx::Error> {
    let at = cutoff(days);
    let mut removed: Vec<(&'static str, u64)> = Vec::new();
    for (table, statement) in BY_EVENT_TIME {
        let n = in_batches(pool, statement, at, batch, pause)
            .await?
            .unwrap_or(0);
        match removed.iter_mut().find(|(t, _)| *t == table) {
            Some((_, total)) => *total += n,
            None => removed.push((table, n)),
        }
    }
    Ok(removed)
}

/// Runs what `retention` asks for every `every`, for as long as the service runs.
pub async fn run(pool: PgPool, retention: Retention, every: Duration) {
    loop {
        if let Some(days) = retention.raw_days {
            match purge(&pool, days, BATCH, PAUSE).await {
                Ok(0) => tracing::debug!(days, "retention: no raw event to remove"),
                Ok(n) => tracing::info!(removed = n, days, "retention: old raw events removed"),
                Err(e) => {
                    tracing::warn!(error = %e, "retention: could not remove old raw events; will try again")
                }
            }
        }
        if let Some(days) = retention.call_days {
            match purge_calls(&pool, days, BATCH, PAUSE).await {
                Ok(removed) if removed.iter().all(|(_, n)| *n == 0) => {
                    tracing::debug!(days, "retention: no call, SMS or status event to remove")
                }
                Ok(removed) => tracing::info!(
                    days,
                    removed = ?removed,
                    "retention: calls, SMS and status events older than CALL_RETENTION_DAYS removed"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "retention: could not remove old calls; will try again")
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}
