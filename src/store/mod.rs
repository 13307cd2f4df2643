//! PostgreSQL: connecting, migrating, writing, replaying. No vendor field names here.

mod columns;
pub mod database;
pub mod migrate;
pub mod retention;
pub mod writer;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

pub use writer::{write_batch, Delivery, Outcome};

/// How to reach the database and how long to wait for it.
#[derive(Debug, Clone)]
pub struct DbSettings {
    pub url: String,
    /// Connections in the pool.
    pub pool_size: u32,
    /// The longest wait for a connection, and for any one statement.
    pub timeout: Duration,
}

/// Parses a `postgres://` URL; the error names the setting, never the password.
pub fn connect_options(url: &str, timeout: Duration) -> Result<PgConnectOptions, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("DATABASE_URL must start with postgres:// or postgresql://".into());
    }
    let opts = PgConnectOptions::from_str(url)
        .map_err(|e| format!("DATABASE_URL is not a valid postgres:// URL: {e}"))?;
    Ok(opts
        .application_name("callhippo-ingest")
        .options([
            ("statement_timeout", timeout.as_millis().to_string()),
            // Every statement of the service reads by key. sqlx prepares each statement once
            // per connection, and a plan made while a table was still small (a fresh
            // database) would keep scanning it whole as it grows: bench saw batches slow
            // down threefold. This only prices sequential scans out; none is forbidden.
            ("enable_seqscan", "off".to_owned()),
        ])
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1)))
}

/// A pool that connects lazily: the service starts (and spools) even while the database is
/// down, and every wait is bounded.
pub fn pool(settings: &DbSettings) -> Result<PgPool, String> {
    let opts = connect_options(&settings.url, settings.timeout)?;
    Ok(PgPoolOptions::new()
        .max_connections(settings.pool_size)
        .min_connections(0)
        .acquire_timeout(settings.timeout)
        .idle_timeout(Some(Duration::from_secs(300)))
        .test_before_acquire(false)
        .connect_lazy_with(opts))
}

/// The database cannot be reached or cannot take writes now: worth spooling and retrying.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    use sqlx::Error as E;
    match e {
        E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Tls(_) => true,
        E::Protocol(_) => true,
        E::Database(db) => db.code().is_some_and(|c| {
            // 08: connection exception; 53: insufficient resources (too many connections,
            // disk full); 57: operator intervention (statement timeout, shutdown, starting
            // up); 58: system error; 25006: read-only (a standby after a failover).
            ["08", "53", "57", "58"].iter().any(|p| c.starts_with(p)) || c == "25006"
        }),
        _ => false,
    }
}

/// A row with this key is stored already (`unique_violation`).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "23505"))
}

/// A conflict with a concurrent transaction that a retry resolves.
pub fn is_conflict(e: &sqlx::Error) -> bool {
    is_unique_violation(e)
        || matches!(e, sqlx::Error::Database(db)
            if db.code().is_some_and(|c| c == "40P01" || c == "40001"))
}
