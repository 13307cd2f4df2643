//! The HTTP surface (CONTRACT §2). Handlers only decide answers: reading is `payload`'s job
//! and writing is `ingest`'s.

mod answer;
mod auth;
mod health;
mod webhook;

use actix_web::{web, HttpResponse};
use sqlx::PgPool;

use std::sync::Arc;

use crate::ingest::Ingestor;
use crate::metrics::Metrics;
use crate::spool::Spool;

pub use answer::Answer;
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
}

pub const WEBHOOK_PATH: &str = "/webhooks/callhippo";

/// Registers every route on an actix `App`.
pub fn routes(cfg: &mut web::ServiceConfig) {
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
    .service(web::resource("/metrics").route(web::get().to(health::metrics)))
    .service(
        web::resource("/readyz")
            .route(web::get().to(health::readyz))
            .route(web::head().to(health::readyz)),
    )
    .default_service(web::to(not_found));
}

async fn method_not_allowed() -> HttpResponse {
    Answer::rejected(
        405,
        "method not allowed: use POST (GET and HEAD answer 200)",
    )
    .into_response()
}

async fn not_found() -> HttpResponse {
    Answer::rejected(404, "no such path: webhooks go to POST /webhooks/callhippo").into_response()
}
