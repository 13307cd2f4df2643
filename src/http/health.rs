//! Liveness and readiness.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::store::migrate;

/// 200 while the process runs.
pub async fn healthz() -> HttpResponse {
    tracing::debug!(path = "/healthz", code = 200, "health");
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// 200 when the database answers and its schema is the one this build expects, else 503.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let expected = migrate::latest_version();
    let pool = state.pool.clone();
    let check = state.db_runtime.spawn(async move {
        let mut conn = pool.acquire().await?;
        migrate::current_version(&mut conn).await
    });
    // The database's own words go to the log only: /readyz answers anyone who can reach it.
    let (ready, detail) = match tokio::time::timeout(Duration::from_secs(2), check).await {
        Err(_) => (false, json!({"database": "no answer within 2 s"})),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readyz: the check could not run");
            (false, json!({"database": "check failed"}))
        }
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %crate::store::database::reason(&e), "readyz: database unreachable");
            (false, json!({"database": "unreachable"}))
        }
        Ok(Ok(Ok(v))) if v == Some(expected) => {
            (true, json!({"database": "ok", "schema_version": v}))
        }
        Ok(Ok(Ok(v))) => (
            false,
            json!({"database": "ok", "schema_version": v, "expected_schema_version": expected}),
        ),
    };
    let mut body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "spool": state.spool.depth(),
    });
    body.as_object_mut()
        .expect("an object")
        .extend(detail.as_object().cloned().unwrap_or_default());
    tracing::debug!(
        path = "/readyz",
        code = if ready { 200 } else { 503 },
        "health"
    );
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header((
                "Retry-After",
                super::answer::RETRY_AFTER_SECONDS.to_string(),
            ))
            .json(body)
    }
}

/// Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    tracing::debug!(path = "/metrics", code = 200, "health");
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(state.spool.depth()))
}
