//! The HTTP surface (docs/reference.md §2). Handlers only decide answers: reading is `payload`'s job
//! and writing is `ingest`'s.

mod answer;
mod auth;
mod closing;
mod console;
mod health;
mod refusals;
mod server;
mod webhook;

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use sqlx::PgPool;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ingest::Ingestor;
use crate::metrics::Metrics;
use crate::spool::Spool;

pub use answer::Answer;
pub(crate) use auth::bearer;
pub use auth::Token;

/// What every handler can reach.
pub struct AppState {
    pub ingestor: Ingestor,
    pub metrics: Arc<Metrics>,
    pub spool: Spool,
    pub pool: PgPool,
    /// The runtime the writers run on. Every database access goes through it: a pooled
    /// connection stays tied to the runtime that opened it, and one opened on an HTTP
    /// worker's runtime would be woken late when a writer uses it.
    pub db_runtime: tokio::runtime::Handle,
    pub token: Option<Token>,
    pub max_body_bytes: usize,
    /// Body bytes all requests together may hold while being read: a reader waits for room.
    pub body_budget: Arc<tokio::sync::Semaphore>,
    /// Bounds the log lines of refused requests.
    pub refusals: refusals::RefusalLog,
    /// What the writers know of erasures: an event about one is answered at once, neither
    /// queued nor spooled (the writers check again, under the database's guard).
    pub erasures: Arc<crate::erasure::Erasures>,
    /// The operator console; `None` without ADMIN_TOKEN (its paths answer 404).
    pub console: Option<crate::console::Console>,
}

pub use refusals::RefusalLog;
pub use server::{webhook_server, ServerSettings};

pub const WEBHOOK_PATH: &str = "/webhooks/callhippo";

/// Registers every route on an actix `App`.
/// The routes of the webhook's port; `/metrics` too unless METRICS_ADDR serves it apart.
pub fn routes(cfg: &mut web::ServiceConfig, metrics_here: bool) {
    if metrics_here {
        cfg.service(web::resource("/metrics").route(web::get().to(health::metrics)));
    }
    cfg.service(
        web::resource(WEBHOOK_PATH)
            .route(web::post().to(webhook::receive))
            .route(web::get().to(webhook::probe))
            .route(web::head().to(webhook::probe))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/healthz")
            .route(web::get().to(health::healthz))
            .route(web::head().to(health::healthz)),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(health::readyz))
            .route(web::head().to(health::readyz)),
    )
    .configure(console::routes)
    .default_service(web::to(not_found));
}

/// METRICS_ADDR's routes: `/metrics` alone.
pub fn metrics_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/metrics").route(web::get().to(health::metrics)))
        .default_service(web::to(|| async {
            HttpResponse::NotFound().json(serde_json::json!({"status": "rejected", "error": "not found: this address serves /metrics only"}))
        }));
}

async fn method_not_allowed(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let answer = Answer::rejected(
        405,
        "method not allowed: use POST (GET and HEAD answer 200)",
    );
    refused(&req, &state, answer, Instant::now())
}

async fn not_found(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let answer = Answer::rejected(404, "no such path: webhooks go to POST /webhooks/callhippo");
    refused(&req, &state, answer, Instant::now())
}

/// Counts, logs (bounded) and answers a request refused before its body was read.
fn refused(req: &HttpRequest, state: &AppState, answer: Answer, started: Instant) -> HttpResponse {
    count_refusal(state, req.method(), req.path(), &answer, started);
    answer.into_response()
}

/// Counts and logs (bounded) a refusal.
fn count_refusal(state: &AppState, method: &Method, path: &str, answer: &Answer, started: Instant) {
    let elapsed = started.elapsed();
    state.metrics.refused(answer.code, elapsed);
    log_unauthenticated(
        state,
        method,
        path,
        "refused",
        answer.status,
        answer.code,
        elapsed,
    );
}

/// The log line of a request anyone may send without a token (a refusal, CallHippo's `GET`
/// of the URL), unless too many came this second: see [`RefusalLog`].
fn log_unauthenticated(
    state: &AppState,
    method: &Method,
    path: &str,
    message: &'static str,
    outcome: &'static str,
    code: u16,
    elapsed: Duration,
) {
    let Some(suppressed) = state.refusals.admit() else {
        return;
    };
    if suppressed > 0 {
        tracing::info!(
            count = suppressed,
            "requests without a token not logged: at most a few a second are"
        );
    }
    tracing::info!(
        method = %method,
        path = refusals::loggable_path(path),
        outcome,
        code,
        latency_ms = milliseconds(elapsed),
        "{message}"
    );
}

/// A duration in milliseconds, to the hundredth, for log lines.
fn milliseconds(d: Duration) -> f64 {
    (d.as_micros() as f64 / 10.0).round() / 100.0
}
