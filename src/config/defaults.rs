//! Every default of every setting, declared once: the command line shows them in `--help`
//! and uses them, and [`super::ServeSettings::new`] starts from them.

use std::time::Duration;

pub const LISTEN_ADDR: &str = "0.0.0.0:8080";
pub const MAX_BODY_BYTES: u64 = 262_144;
pub const MAX_CONNECTIONS: u64 = 10_000;
/// Body bytes all requests together may hold while being read (at least two of the largest).
pub const BODY_BYTES_IN_FLIGHT: u64 = 64 << 20;
pub const SPOOL_DIR: &str = "spool";
pub const SPOOL_MAX_BYTES: u64 = 1 << 30;
pub const DB_POOL_SIZE: u64 = 8;
pub const DB_TIMEOUT_MS: u64 = 3_000;
pub const DB_TIMEOUT: Duration = Duration::from_millis(DB_TIMEOUT_MS);
pub const BATCH_MAX: usize = 256;
pub const WRITERS: usize = 3;
pub const LOG_FORMAT: &str = "text";
pub const LOG_FILTER: &str = "info";
pub const CALLHIPPO_API_URL: &str = "https://web.callhippo.com/v1";
pub const CALLHIPPO_TIMEZONE: &str = "UTC";
pub const RECONCILE_INTERVAL: &str = "1h";
pub const RECONCILE_DAYS: u64 = 2;
pub const REPORT_TIMEZONE: &str = "UTC";
pub const SERVICE_LEVEL_SECONDS: u64 = 20;
pub const CALLBACK_WINDOW: &str = "24h";
pub const CALLBACK_WINDOW_DURATION: Duration = Duration::from_secs(24 * 3600);
/// How often `serve` reads erasures again for the webhook's check of each event.
pub const ERASURES_REFRESH: Duration = Duration::from_secs(10);
/// How often `serve` brings the summary tables up to date.
pub const ROLLUP_EVERY: Duration = Duration::from_secs(5);
/// How often retention (RAW_RETENTION_DAYS, CALL_RETENTION_DAYS) runs.
pub const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// `replay`: raw events per transaction.
pub const REPLAY_BATCH: u64 = 500;
/// `healthcheck`: how long to wait for `/readyz`.
pub const HEALTHCHECK_TIMEOUT_MS: u64 = 3_000;
/// `migrate` and `replay`: their pool, and their wait for the database.
pub const COMMAND_POOL_SIZE: u32 = 4;
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest values taken.
pub mod max {
    pub const MAX_BODY_BYTES: u64 = 64 << 20;
    pub const MAX_CONNECTIONS: u64 = 1_000_000;
    pub const RETENTION_DAYS: u64 = 100_000;
    pub const SERVICE_LEVEL_SECONDS: u64 = 3_600;
    pub const DB_POOL_SIZE: u64 = 1_000;
    pub const DB_TIMEOUT_MS: u64 = 3_600_000;
    pub const BATCH_MAX: u64 = 10_000;
    pub const WRITERS: u64 = 64;
    pub const REPLAY_BATCH: u64 = 100_000;
    pub const RECONCILE_DAYS: u64 = 366;
}
