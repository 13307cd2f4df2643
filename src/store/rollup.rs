//! The summary tables behind the statistics views (migration V6): `callhippo_rollup()` brings
//! them up to date with the base tables, in one REPEATABLE READ transaction, by one process
//! at a time (a session advisory lock, taken before the transaction's snapshot).

use std::time::Duration;

use sqlx::{Connection, PgPool};

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
    let row: Option<(String, i32, f64)> = sqlx::query_as(
        "SELECT zone, service_level_seconds, extract(epoch FROM callback_window)::float8
           FROM rollup_state WHERE zone IS NOT NULL AND NOT rebuild",
    )
    .fetch_optional(pool)
    .await?;
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
    let mut conn = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(ROLLUP_LOCK_KEY)
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Ok(None);
    }
    let result = async {
        let mut tx = conn.begin().await?;
        // Before any query: the whole catch-up reads one snapshot, and removes exactly the
        // marks it read.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
        // A rebuild reads whole tables.
        sqlx::query("SELECT set_config('statement_timeout', '0', true), set_config('enable_seqscan', 'on', true)")
            .execute(&mut *tx)
            .await?;
        let figures: RollupFigures = sqlx::query_as(
            "SELECT rebuilt, marks, days
               FROM callhippo_rollup($1, $2, make_interval(secs => $3))",
        )
        .bind(settings.zone.name())
        .bind(settings.service_level_seconds as i32)
        .bind(settings.callback_window.as_secs_f64())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(figures)
    }
    .await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(ROLLUP_LOCK_KEY)
        .execute(&mut *conn)
        .await;
    if unlocked.is_err() {
        // The lock goes with the session: close it rather than give it back to the pool.
        let _ = conn.detach().close().await;
    }
    result.map(Some)
}
