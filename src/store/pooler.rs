//! Behind a pooler in transaction mode (PgBouncer's `pool_mode = transaction`, Supavisor,
//! the poolers of managed databases), a server connection is ours for one transaction only:
//! between two transactions, or between two messages of a statement outside one, another
//! client may have it. `DB_POOLER=transaction` says the database is reached so, and then:
//!
//! - no statement is prepared under a name ([`query`], [`query_as`], [`query_scalar`] make
//!   them unnamed): a named one would stay on a server connection that other clients use,
//!   and ours would not find it on the next;
//! - every statement with arguments runs inside a transaction ([`Work`], [`begin`]): sqlx
//!   parses a statement, waits for the answer, then binds it, and outside a transaction the
//!   pooler may hand the bind to another server connection;
//! - no startup parameter (PgBouncer refuses `options`): each transaction sets its own
//!   statement timeout, plan settings and isolation level instead;
//! - no session state: locks are taken for a transaction, never for a session.
//!
//! The mode is process-wide, set once from the settings ([`apply`]): sqlx has no per-pool
//! default for whether a statement is prepared under a name.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::{Query, QueryAs, QueryScalar};
use sqlx::{Connection, FromRow, PgConnection, PgPool, Postgres, Transaction};

/// How the database is reached (`DB_POOLER`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Pooler {
    /// Directly: a connection is a session.
    #[default]
    None,
    /// Through a pooler in transaction mode.
    Transaction,
}

impl std::str::FromStr for Pooler {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" | "none" => Ok(Pooler::None),
            "transaction" => Ok(Pooler::Transaction),
            other => Err(format!(
                "DB_POOLER must be none or transaction (a pooler such as PgBouncer in \
                 pool_mode = transaction), not {other:?}"
            )),
        }
    }
}

static BEHIND_POOLER: AtomicBool = AtomicBool::new(false);
static TIMEOUT_MS: AtomicU64 = AtomicU64::new(0);

/// Sets the mode of the process from its database settings.
pub fn apply(pooler: Pooler, timeout: Duration) {
    let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    TIMEOUT_MS.store(ms, Ordering::Relaxed);
    BEHIND_POOLER.store(pooler == Pooler::Transaction, Ordering::Relaxed);
}

/// Whether the database is reached through a pooler in transaction mode.
pub fn active() -> bool {
    BEHIND_POOLER.load(Ordering::Relaxed)
}

/// What a transaction sets for itself behind a pooler: what the startup parameters set on a
/// direct connection (see `host_options`).
fn begin_statement() -> String {
    format!(
        "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL statement_timeout = {}; \
         SET LOCAL enable_seqscan = off",
        TIMEOUT_MS.load(Ordering::Relaxed)
    )
}

/// `sqlx::query`, prepared under a name (and so once per connection) unless behind a pooler.
pub fn query(sql: &str) -> Query<'_, Postgres, PgArguments> {
    sqlx::query(sql).persistent(!active())
}

/// `sqlx::query_as`, as [`query`].
pub fn query_as<'q, O>(sql: &'q str) -> QueryAs<'q, Postgres, O, PgArguments>
where
    O: for<'r> FromRow<'r, PgRow>,
{
    sqlx::query_as(sql).persistent(!active())
}

/// `sqlx::query_scalar`, as [`query`].
pub fn query_scalar<'q, O>(sql: &'q str) -> QueryScalar<'q, Postgres, O, PgArguments>
where
    (O,): for<'r> FromRow<'r, PgRow>,
{
    sqlx::query_scalar(sql).persistent(!active())
}

/// A transaction of `pool`, with the settings of the service's connections.
pub async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    match active() {
        true => pool.begin_with(begin_statement()).await,
        false => pool.begin().await,
    }
}

/// A transaction on `conn` (which is in none), as [`begin`].
pub async fn begin_on(conn: &mut PgConnection) -> Result<Transaction<'_, Postgres>, sqlx::Error> {
    match active() {
        true => conn.begin_with(begin_statement()).await,
        false => conn.begin().await,
    }
}

/// A connection for one piece of work: as it is on a direct connection (each statement
/// commits by itself), one transaction behind a pooler. [`Work::done`] commits it; dropped
/// without, the transaction is rolled back.
pub enum Work {
    Session(PoolConnection<Postgres>),
    Transaction(Transaction<'static, Postgres>),
}

impl Work {
    pub async fn of(pool: &PgPool) -> Result<Work, sqlx::Error> {
        match active() {
            true => Ok(Work::Transaction(begin(pool).await?)),
            false => Ok(Work::Session(pool.acquire().await?)),
        }
    }

    /// Commits what was done behind a pooler.
    pub async fn done(self) -> Result<(), sqlx::Error> {
        match self {
            Work::Session(_) => Ok(()),
            Work::Transaction(tx) => tx.commit().await,
        }
    }
}

impl std::ops::Deref for Work {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        match self {
            Work::Session(c) => c,
            Work::Transaction(t) => t,
        }
    }
}

impl std::ops::DerefMut for Work {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Work::Session(c) => c,
            Work::Transaction(t) => t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_pooler_takes_its_two_modes_and_names_itself_otherwise() {
        assert_eq!("transaction".parse(), Ok(Pooler::Transaction));
        assert_eq!("none".parse(), Ok(Pooler::None));
        assert_eq!("".parse(), Ok(Pooler::None));
        let e = "statement".parse::<Pooler>().unwrap_err();
        assert!(e.starts_with("DB_POOLER must be"), "{e}");
    }
}
