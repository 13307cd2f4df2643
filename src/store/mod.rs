//! PostgreSQL: connecting, migrating, and writing through [`PgSink`]. No vendor field names
//! here: the store writes domain records (`crate::event`), and its SQL lives beside the
//! table it writes (`tables/`).
//!
//! Idempotency (docs/reference.md §5) is decided by the database itself: `ON CONFLICT … DO
//! UPDATE … WHERE (old row) IS DISTINCT FROM (new row)` writes only what changes, and
//! `RETURNING` says which rows were inserted or changed; the others are duplicates.
//! Deadlocks between concurrent batches (and concurrent processes) are avoided by taking row
//! locks in one global order: tables always in the same order, rows sorted by key.

mod batch;
mod columns;
mod connections;
pub mod database;
pub mod erase;
mod erasures;
mod error;
pub mod failover;
pub mod migrate;
mod pg_sink;
mod plan;
pub mod pooler;
pub mod retention;
pub mod rollup;
#[cfg(test)]
mod sql_gen;
mod tables;
mod write;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

pub use batch::NewCallsBet;
pub use error::{is_unavailable, retry_conflicts, StoreError, CONFLICT_RETRIES};
pub use failover::Failover;
pub use pg_sink::PgSink;
pub use pooler::{query, query_as, query_scalar, Pooler, Work};
pub use write::{write_batch, BatchMemory};

/// How to reach the database and how long to wait for it.
#[derive(Debug, Clone)]
pub struct DbSettings {
    pub url: String,
    /// Connections in the pool.
    pub pool_size: u32,
    /// The longest wait for a connection, and for any one statement.
    pub timeout: Duration,
    /// Whether a pooler in transaction mode stands between (see [`pooler`]).
    pub pooler: Pooler,
}

/// Parses a `postgres://` URL (of its first host, when it lists several); the error names
/// the setting, never the password.
pub fn connect_options(url: &str, timeout: Duration) -> Result<PgConnectOptions, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("DATABASE_URL must start with postgres:// or postgresql://".into());
    }
    let first = failover::split_hosts(url)?.remove(0);
    host_options(&first, timeout, Pooler::None)
}

/// The hosts of the URL, and which takes writes now (see [`failover`]). Every connection of
/// the process is made through here: it also sets the process's [`pooler`] mode.
pub fn failover(settings: &DbSettings) -> Result<std::sync::Arc<Failover>, String> {
    connect_options(&settings.url, settings.timeout)?;
    pooler::apply(settings.pooler, settings.timeout);
    let (timeout, mode) = (settings.timeout, settings.pooler);
    Failover::for_url(&settings.url, timeout, |u| host_options(u, timeout, mode))
}

/// A pool of `options` that hands out no connection opened before the failover's last move;
/// `adapt` changes each host's options for this pool.
fn failover_pool(
    failover: &std::sync::Arc<Failover>,
    options: PgPoolOptions,
    adapt: failover::Adapt,
) -> PgPool {
    let f = failover.clone();
    let pool = options
        .before_acquire(move |_, meta| {
            let keep = f.keeps(meta.age);
            Box::pin(async move { Ok(keep) })
        })
        .connect_lazy_with(adapt(failover.options()));
    failover.register(&pool, adapt);
    pool
}

/// The options of one host's URL. Behind a pooler in transaction mode, no startup
/// parameter: each transaction sets the same for itself (`pooler::begin`).
fn host_options(url: &str, timeout: Duration, mode: Pooler) -> Result<PgConnectOptions, String> {
    let opts = PgConnectOptions::from_str(url)
        .map_err(|e| format!("DATABASE_URL is not a valid postgres:// URL: {e}"))?
        .application_name("callhippo-ingest")
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
    if mode == Pooler::Transaction {
        // PgBouncer refuses startup parameters it does not know, unless told to ignore them.
        return Ok(opts.extra_float_digits(None));
    }
    Ok(opts.options([
        ("statement_timeout", timeout.as_millis().to_string()),
        // Every statement of the service reads by key. sqlx prepares each statement once
        // per connection, and a plan made while a table was still small (a fresh
        // database) would keep scanning it whole as it grows. This only prices
        // sequential scans out; none is forbidden.
        ("enable_seqscan", "off".to_owned()),
        // The erasure guard (migration V5) relies on each statement's own snapshot,
        // whatever the database's default.
        (
            "default_transaction_isolation",
            r"read\ committed".to_owned(),
        ),
    ]))
}

/// One lazy connection for work that is slow by nature (rollup, forget): its long statements
/// are not warned about as a writer's would be.
pub fn slow_work_pool(settings: &DbSettings) -> Result<PgPool, String> {
    let failover = failover(settings)?;
    Ok(failover_pool(
        &failover,
        PgPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .acquire_timeout(settings.timeout)
            .idle_timeout(Some(Duration::from_secs(300))),
        |opts| opts.log_slow_statements(tracing::log::LevelFilter::Debug, Duration::from_secs(1)),
    ))
}

/// A pool that connects lazily: the service starts (and spools) even while the database is
/// down, and every wait is bounded.
pub fn pool(settings: &DbSettings) -> Result<PgPool, String> {
    let failover = failover(settings)?;
    Ok(failover_pool(
        &failover,
        PgPoolOptions::new()
            .max_connections(settings.pool_size)
            .min_connections(0)
            .acquire_timeout(settings.timeout)
            .idle_timeout(Some(Duration::from_secs(300)))
            .test_before_acquire(false),
        |opts| opts,
    ))
}
