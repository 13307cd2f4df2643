//! `RAW_RETENTION_DAYS`: old `raw_events` rows are removed in small batches, never the
//! normalized tables. One replica at a time does it (an advisory lock), and each batch is a
//! short transaction, so that ingestion never waits behind a long delete.

use std::time::Duration;

use sqlx::PgPool;

const RETENTION_LOCK_KEY: i64 = 0x6368_6970_7265_7465; // "chiprete"

/// Deletes raw events last received more than `days` ago, `batch` rows per transaction.
/// Returns how many it deleted; 0 when another process holds the retention lock.
pub async fn purge(
    pool: &PgPool,
    days: u32,
    batch: i64,
    pause: Duration,
) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    loop {
        let mut tx = pool.begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(RETENTION_LOCK_KEY)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok(deleted);
        }
        let n = sqlx::query(
            "DELETE FROM raw_events
              WHERE id IN (SELECT id FROM raw_events
                            WHERE last_received_at < now() - make_interval(days => $1)
                            ORDER BY last_received_at
                            LIMIT $2)",
        )
        .bind(days as i32)
        .bind(batch)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        deleted += n;
        if (n as i64) < batch {
            return Ok(deleted);
        }
        tokio::time::sleep(pause).await;
    }
}

/// Runs [`purge`] every `every`, for as long as the service runs.
pub async fn run(pool: PgPool, days: u32, every: Duration) {
    loop {
        match purge(&pool, days, 5_000, Duration::from_millis(100)).await {
            Ok(0) => tracing::debug!(days, "retention: nothing to remove"),
            Ok(n) => tracing::info!(removed = n, days, "retention: old raw events removed"),
            Err(e) => {
                tracing::warn!(error = %e, "retention: could not remove old raw events; will try again")
            }
        }
        tokio::time::sleep(every).await;
    }
}
