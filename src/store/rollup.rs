//! The summary tables behind the statistics views (migration V6): `callhippo_rollup()` brings
//! them up to date with the base tables, in one REPEATABLE READ transaction, by one process
//! at a time (a session advisory lock, taken before the transaction's snapshot; behind a
//! pooler, which has no sessions, a transaction's lock, see [`catch_up_until`]).

use crate::store;
use std::time::Duration;

use sqlx::{Connection, Executor, PgPool};
use tokio::sync::watch;

const ROLLUP_LOCK_KEY: i64 = 0x6368_6970_726f_6c6c; // "chiproll"

/// What the summaries are computed with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReportSettings {
    /// REPORT_TIMEZONE: the zone of the summaries' days.
    pub zone: chrono_tz::Tz,
    /// SERVICE_LEVEL_SECONDS.
    pub service_level_seconds: u32,
    /// CALLBACK_WINDOW.
    pub callback_window: Duration,
}

impl Default for ReportSettings {
    fn default() -> Self {
        ReportSettings {
            zone: chrono_tz::UTC,
            service_level_seconds: crate::config::defaults::SERVICE_LEVEL_SECONDS as u32,
            callback_window: crate::config::defaults::CALLBACK_WINDOW_DURATION,
        }
    }
}

/// What a catch-up did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct RollupFigures {
    /// Everything was rebuilt (first run, a new zone or setting, a truncated table).
    pub rebuilt: bool,
    /// Marks of changed hours read.
    pub marks: i64,
    /// Days recomputed.
    pub days: i32,
}

/// The settings the summaries were last built with; `None` before the first build.
pub async fn settings_as_built(pool: &PgPool) -> Result<Option<ReportSettings>, sqlx::Error> {
    let mut work = store::Work::of(pool).await?;
    let row: Option<(String, i32, f64)> = store::query_as(
        "SELECT zone, service_level_seconds, extract(epoch FROM callback_window)::float8
           FROM rollup_state WHERE zone IS NOT NULL AND NOT rebuild",
    )
    .fetch_optional(&mut *work)
    .await?;
    work.done().await?;
    Ok(row.and_then(|(zone, sl, window)| {
        Some(ReportSettings {
            zone: zone.parse().ok()?,
            service_level_seconds: u32::try_from(sl).ok()?,
            callback_window: Duration::from_secs_f64(window.max(0.0)),
        })
    }))
}

/// Brings the summaries up to date. `None` when another process is doing it now.
pub async fn catch_up(
    pool: &PgPool,
    settings: &ReportSettings,
) -> Result<Option<RollupFigures>, sqlx::Error> {
    let (_keep, mut never) = watch::channel(false);
    Ok(match catch_up_until(pool, settings, &mut never).await? {
        CatchUp::Done(figures) => Some(figures),
        CatchUp::Busy | CatchUp::Stopped => None,
    })
}

/// How [`catch_up_until`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// The summaries are up to date.
    Done(RollupFigures),
    /// Another process is bringing them up to date now.
    Busy,
    /// Told to stop: the catch-up under way was cancelled (nothing of it is kept).
    Stopped,
}

/// [`catch_up`], given up as soon as `stop` says true (or its sender is dropped): the
/// statement under way is cancelled in PostgreSQL, rather than left to run there, holding the
/// lock, after the process that started it has gone.
pub async fn catch_up_until(
    pool: &PgPool,
    settings: &ReportSettings,
    stop: &mut watch::Receiver<bool>,
) -> Result<CatchUp, sqlx::Error> {
    if stopped(stop) {
        return Ok(CatchUp::Stopped);
    }
    let mut conn = pool.acquire().await?;
    let session_lock = !super::pooler::active();
    if session_lock {
        let locked: bool = store::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(ROLLUP_LOCK_KEY)
            .fetch_one(&mut *conn)
            .await?;
        if !locked {
            return Ok(CatchUp::Busy);
        }
    }
    // Whether the connection may still be used: not when a cancelled statement did not end.
    let mut usable = true;
    let result = async {
        let mut tx = super::pooler::begin_on(&mut conn).await?;
        // Before any query: the whole catch-up reads one snapshot, and removes exactly the
        // marks it read.
        store::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
        // A rebuild reads whole tables.
        store::query("SELECT set_config('statement_timeout', '0', true), set_config('enable_seqscan', 'on', true)")
            .execute(&mut *tx)
            .await?;
        // Behind a pooler the lock is the transaction's, taken after its snapshot: a
        // catch-up that committed in between wrote rows this one's snapshot does not see
        // (rollup_state, which every catch-up updates, at least), so this one fails when it
        // writes them (40001, or 23505 for a summary row both insert) and is taken as busy.
        // The backend's pid, to cancel its statement from another connection.
        let (locked, pid): (bool, i32) = store::query_as(
            "SELECT CASE WHEN $2 THEN pg_try_advisory_xact_lock($1) ELSE true END, pg_backend_pid()",
        )
        .bind(ROLLUP_LOCK_KEY)
        .bind(!session_lock)
        .fetch_one(&mut *tx)
        .await?;
        if !locked {
            return Ok(CatchUp::Busy);
        }
        if stopped(stop) {
            return Ok(CatchUp::Stopped);
        }
        let figures = {
            let call = store::query_as::<RollupFigures>(
                "SELECT rebuilt, marks, days
                   FROM callhippo_rollup($1, $2, make_interval(secs => $3))",
            )
            .bind(settings.zone.name())
            .bind(settings.service_level_seconds as i32)
            .bind(settings.callback_window.as_secs_f64())
            .fetch_one(&mut *tx);
            tokio::pin!(call);
            tokio::select! {
                biased;
                done = &mut call => done?,
                () = until_stopped(stop) => {
                    usable = cancel(pool, pid, call.as_mut()).await;
                    return Ok(CatchUp::Stopped);
                }
            }
        };
        tx.commit().await?;
        Ok::<_, sqlx::Error>(CatchUp::Done(figures))
    }
    .await;
    if !usable {
        // Its statement may still be running: nothing more can be said on it. Closing it
        // ends the session (and the lock) once that statement ends.
        drop(conn.detach());
        return result;
    }
    if session_lock {
        let unlocked = store::query("SELECT pg_advisory_unlock($1)")
            .bind(ROLLUP_LOCK_KEY)
            .execute(&mut *conn)
            .await;
        if unlocked.is_err() {
            // The lock goes with the session: close it rather than give it back to the pool.
            let _ = conn.detach().close().await;
        }
        return result;
    }
    match result {
        Err(e)
            if matches!(
                super::error::sqlstate(&e).as_deref(),
                Some("40001" | "23505")
            ) =>
        {
            tracing::debug!(error = %e, "rollup: another catch-up committed meanwhile");
            Ok(CatchUp::Busy)
        }
        other => other,
    }
}

fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    // Err: the sender is gone, and with it whoever could still want the catch-up.
    let _ = stop.wait_for(|s| *s).await;
}

/// How long a cancelled statement gets to end.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// Cancels the statement of backend `pid` from another connection of `pool`, again every
/// half second (a cancel that lands before the backend has read the statement does
/// nothing), until `call` ends or [`CANCEL_WAIT`] has passed. Whether it ended.
async fn cancel<F: std::future::Future>(
    pool: &PgPool,
    pid: i32,
    mut call: std::pin::Pin<&mut F>,
) -> bool {
    let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
    loop {
        let sent = match tokio::time::timeout_at(deadline, pool.acquire()).await {
            // A plain statement: behind a pooler, one with an argument would need a
            // transaction of its own.
            Ok(Ok(mut other)) => (other.execute(&*format!("SELECT pg_cancel_backend({pid})")))
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no connection in time".to_owned()),
        };
        if let Err(error) = sent {
            tracing::warn!(%error, pid, "rollup: could not cancel the catch-up under way");
        }
        let next = (tokio::time::Instant::now() + Duration::from_millis(500)).min(deadline);
        if tokio::time::timeout_at(next, call.as_mut()).await.is_ok() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                pid,
                "rollup: the catch-up under way did not end when cancelled; its connection is dropped"
            );
            return false;
        }
    }
}
