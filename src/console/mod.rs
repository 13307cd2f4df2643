//! The operator console (docs/reference.md §10): one page, `GET /console`, that says whether
//! call data is flowing and what failed, with Replay for a refused delivery. Off unless
//! `ADMIN_TOKEN` is set. Rendered on the server (the figures are in the HTML as served);
//! a small script of ours refreshes it from `/console/api/summary`. Every asset is in the
//! binary.
//!
//! Personal data is masked before it reaches a template: numbers to their last four digits,
//! addresses to their domain; SMS text and notes are never read.

pub mod auth;
pub mod mask;
pub mod page;
pub mod summary;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::store::PgSink;

pub use auth::AdminAuth;

/// What the console's handlers need beside the service's own state.
pub struct Console {
    pub auth: AdminAuth,
    /// Replay writes through it, as `callhippo-ingest replay` does.
    pub sink: Arc<PgSink>,
    /// REPORT_TIMEZONE: the zone of "today" and of the times shown.
    pub report_zone: chrono_tz::Tz,
    /// CALLHIPPO_TIMEZONE: records of CallHippo's API are read again in it.
    pub api_zone: chrono_tz::Tz,
    pub started_at: DateTime<Utc>,
    pub cache: Arc<summary::Cache>,
    /// One gathering at a time, whatever the number of open pages: the console takes at
    /// most one of the writers' connections, and requests that waited for a gathering get
    /// its summary (kept with the time it was finished).
    pub latest: tokio::sync::Mutex<Option<(std::time::Instant, summary::Summary)>>,
}

impl Console {
    pub fn new(
        secret: &str,
        sink: Arc<PgSink>,
        report_zone: chrono_tz::Tz,
        api_zone: chrono_tz::Tz,
    ) -> Self {
        Console {
            auth: AdminAuth::new(secret),
            sink,
            report_zone,
            api_zone,
            started_at: Utc::now(),
            cache: Arc::default(),
            latest: tokio::sync::Mutex::new(None),
        }
    }
}
