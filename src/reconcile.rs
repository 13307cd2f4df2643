//! Reconciliation inside `serve`: with `CALLHIPPO_API_TOKEN` set, the last
//! `RECONCILE_DAYS` days of call logs are read from CallHippo's API every
//! `RECONCILE_INTERVAL`, and the calls the webhooks missed (the receiver was down,
//! unreachable or misconfigured; CallHippo documents no retry) are filled in. One replica
//! at a time does it (an advisory lock); it writes through a sink of its own, beside the
//! webhook path, never in it.

use crate::store;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use chrono_tz::Tz;
use sqlx::PgPool;

use crate::backfill::{sync_calls, Range, RunFigures, Trigger};
use crate::callhippo_api::ApiClient;
use crate::event::Kind;
use crate::metrics::Metrics;
use crate::store::PgSink;

/// Any constant the replicas agree on: held while one of them reconciles.
const RECONCILE_LOCK_KEY: i64 = 0x6368_6970_7265_636f; // "chipreco"

/// How to reconcile; its `Debug` leaves the token out.
#[derive(Clone)]
pub struct ReconcileSettings {
    pub api_url: String,
    pub token: String,
    /// The account's time zone.
    pub zone: Tz,
    pub every: Duration,
    /// Days read each time, today included.
    pub days: u32,
}

impl std::fmt::Debug for ReconcileSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconcileSettings")
            .field("api_url", &self.api_url)
            .field("token", &"…")
            .field("zone", &self.zone)
            .field("every", &self.every)
            .field("days", &self.days)
            .finish()
    }
}

/// Reconciles as soon as the schema is ready, then every `settings.every`, for as long as
/// the service runs.
pub async fn run(
    settings: ReconcileSettings,
    client: ApiClient,
    pool: PgPool,
    metrics: Arc<Metrics>,
    schema_ready: Arc<AtomicBool>,
) {
    let sink = PgSink::new(pool.clone());
    loop {
        while !schema_ready.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if let Err(e) = once(&settings, &client, &sink, &pool, &metrics).await {
            tracing::warn!(error = %e, "reconcile: the database did not answer; will try again");
        }
        tokio::time::sleep(settings.every).await;
    }
}

/// One reconciliation, unless another replica holds the lock.
async fn once(
    settings: &ReconcileSettings,
    client: &ApiClient,
    sink: &PgSink,
    pool: &PgPool,
    metrics: &Metrics,
) -> Result<(), sqlx::Error> {
    let Some(lock) = Lock::take(pool).await? else {
        tracing::debug!("reconcile: another replica is reconciling");
        return Ok(());
    };
    // Under the lock, a reconciliation still `running` is one whose process stopped.
    let interrupted = async {
        let mut work = store::Work::of(pool).await?;
        store::query(
            "UPDATE sync_runs SET status = 'failed', finished_at = now(),
                    error = 'interrupted: the process stopped during the run'
              WHERE trigger = 'reconcile' AND status = 'running'",
        )
        .execute(&mut *work)
        .await?;
        work.done().await
    };
    if let Err(e) = interrupted.await {
        tracing::warn!(error = %e, "reconcile: could not mark interrupted runs");
    }
    reconcile_calls(settings, client, sink, metrics).await;
    lock.release().await;
    Ok(())
}

/// The reconciliation lock, on a [`store::Work`]: a session's lock on a direct connection,
/// or behind a pooler (where a session lock would stay on a server connection others use), a
/// transaction's, held open (on one server connection, doing nothing) while the
/// reconciliation runs.
struct Lock(store::Work);

impl Lock {
    /// The lock, unless another replica holds it.
    async fn take(pool: &PgPool) -> Result<Option<Lock>, sqlx::Error> {
        let mut work = store::Work::of(pool).await?;
        let sql = match work {
            store::Work::Transaction(_) => "SELECT pg_try_advisory_xact_lock($1)",
            store::Work::Session(_) => "SELECT pg_try_advisory_lock($1)",
        };
        let locked: bool = store::query_scalar(sql)
            .bind(RECONCILE_LOCK_KEY)
            .fetch_one(&mut *work)
            .await?;
        Ok(locked.then_some(Lock(work)))
    }

    async fn release(self) {
        match self.0 {
            store::Work::Session(mut conn) => {
                let unlocked = store::query("SELECT pg_advisory_unlock($1)")
                    .bind(RECONCILE_LOCK_KEY)
                    .execute(&mut *conn)
                    .await;
                if unlocked.is_err() {
                    // Closing the session releases its lock for the other replicas.
                    drop(conn.detach());
                }
            }
            // Rolled back when it cannot commit: either way, the lock goes with it.
            work @ store::Work::Transaction(_) => drop(work.done().await),
        }
    }
}

/// Reads the last days' call logs and counts what they did in the metrics.
async fn reconcile_calls(
    settings: &ReconcileSettings,
    client: &ApiClient,
    sink: &PgSink,
    metrics: &Metrics,
) {
    let to = Utc::now().with_timezone(&settings.zone).date_naive();
    let from = to - chrono::Days::new(u64::from(settings.days.max(1) - 1));
    let range = Range {
        from,
        to,
        zone: settings.zone,
    };
    let mut counted = RunFigures::default();
    let result = sync_calls(client, sink, range, Trigger::Reconcile, |f| {
        metrics.synced(
            Kind::Call,
            &[
                ("inserted", f.inserted - counted.inserted),
                ("filled", f.filled - counted.filled),
                ("unchanged", f.unchanged - counted.unchanged),
                ("rejected", f.rejected - counted.rejected),
                ("suppressed", f.suppressed - counted.suppressed),
            ],
        );
        metrics.suppressed(Kind::Call, u64::from(f.suppressed - counted.suppressed));
        counted = *f;
    })
    .await;
    match result {
        Ok(figures) => {
            metrics.sync_succeeded("call");
            let level_info = figures.inserted > 0 || figures.filled > 0;
            if level_info {
                tracing::info!(%from, %to, "reconcile: call logs: {figures}");
            } else {
                tracing::debug!(%from, %to, "reconcile: call logs: {figures}");
            }
        }
        Err(e) => tracing::warn!(error = %e, %from, %to, "reconcile: call logs: the run failed"),
    }
}
