//! Schema migrations: refinery's runner and the `migrations/` folder, over a sqlx
//! connection.
//!
//! refinery has no sqlx driver, so this module gives it one (its `AsyncTransaction` and
//! `AsyncQuery` traits): the service then needs one database client, not two, and the
//! advisory lock that keeps replicas from migrating at once is held on the very session that
//! runs the migrations.

use crate::store;
use refinery::{AsyncMigrate, Migration};
use refinery_core::traits::r#async::{AsyncQuery, AsyncTransaction};
use sqlx::{Executor, PgConnection, Row};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The table in which refinery records applied migrations.
pub const HISTORY_TABLE: &str = "refinery_schema_history";

/// Any constant both replicas agree on: the lock taken while migrating.
const MIGRATION_LOCK_KEY: i64 = 0x6361_6c6c_6869_7070; // "callhipp"

/// The newest migration version this build knows.
pub fn latest_version() -> i32 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .unwrap_or(0)
}

/// Applies pending migrations. Several processes may call it at once: the first takes a
/// PostgreSQL advisory lock, the others wait for it and then find nothing to do.
/// Returns the names of the migrations this call applied.
pub async fn run(conn: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    run_until(conn, None).await
}

/// [`run`], stopping at migration `version` when one is given (upgrade tests start from an
/// older schema this way).
pub async fn run_until(
    conn: &mut PgConnection,
    version: Option<refinery::SchemaVersion>,
) -> anyhow::Result<Vec<String>> {
    let target = version.map_or(refinery::Target::Latest, refinery::Target::Version);
    if super::pooler::active() {
        return run_in_one_transaction(conn, target).await;
    }
    // A migration may rebuild the indexes of big tables (V3: seconds per million rows), far
    // longer than the service's statement timeout: it runs without one, and waits for the
    // other replicas' migration as long as that takes. Waiting for locks that other sessions
    // hold on tables (a long BI query) stays bounded by the session's statement timeout, so
    // the migration fails and is retried rather than queue an exclusive lock that would
    // block every reader and writer behind it.
    let bound: String = store::query_scalar("SELECT current_setting('statement_timeout')")
        .fetch_one(&mut *conn)
        .await?;
    store::query("SET statement_timeout = 0")
        .execute(&mut *conn)
        .await?;
    store::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut *conn)
        .await?;
    store::query("SELECT set_config('lock_timeout', $1, false)")
        .bind(&bound)
        .execute(&mut *conn)
        .await?;
    let result = embedded::migrations::runner()
        .set_abort_divergent(true)
        .set_target(target)
        .run_async(&mut SqlxMigrator {
            conn,
            nested: false,
        })
        .await;
    // Unlock even when a migration failed; the session ends soon anyway.
    let unlock = store::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut *conn)
        .await;
    let restore = store::query(
        "SELECT set_config('statement_timeout', $1, false), set_config('lock_timeout', '0', false)",
    )
    .bind(&bound)
    .execute(&mut *conn)
    .await;
    let report = result?;
    unlock?;
    restore?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect())
}

/// [`run_until`] behind a pooler in transaction mode, where a session lock would stay on a
/// server connection that others use: every pending migration is applied in one
/// transaction, under a lock of that transaction (each migration in a savepoint of it).
async fn run_in_one_transaction(
    conn: &mut PgConnection,
    target: refinery::Target,
) -> anyhow::Result<Vec<String>> {
    let mut tx = super::pooler::begin_on(conn).await?;
    // As in `run_until`: no statement timeout; another replica's migration waited for as
    // long as it takes; then table locks waited for no longer than the statement timeout of
    // the other connections.
    let bound: String = (tx
        .fetch_one("SELECT current_setting('statement_timeout')")
        .await?)
        .try_get(0)?;
    tx.execute("SET LOCAL statement_timeout = 0").await?;
    tx.execute(&*format!(
        "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
    ))
    .await?;
    tx.execute(&*format!(
        "SELECT set_config('lock_timeout', '{}', true)",
        bound.replace('\'', "")
    ))
    .await?;
    let report = embedded::migrations::runner()
        .set_abort_divergent(true)
        .set_target(target)
        .run_async(&mut SqlxMigrator {
            conn: &mut tx,
            nested: true,
        })
        .await?;
    tx.commit().await?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect())
}

/// The newest applied version, or `None` on a database never migrated.
/// Plain statements (no argument): they need no transaction behind a pooler.
pub async fn current_version(conn: &mut PgConnection) -> Result<Option<i32>, sqlx::Error> {
    let exists = (conn.fetch_one(&*format!(
        "SELECT to_regclass('{HISTORY_TABLE}') IS NOT NULL"
    )))
    .await?
    .try_get::<bool, _>(0)?;
    if !exists {
        return Ok(None);
    }
    (conn.fetch_one(&*format!("SELECT max(version) FROM {HISTORY_TABLE}")))
        .await?
        .try_get(0)
}

struct SqlxMigrator<'c> {
    conn: &'c mut PgConnection,
    /// Inside a transaction already: each migration gets a savepoint instead of its own.
    nested: bool,
}

impl AsyncTransaction for SqlxMigrator<'_> {
    type Error = sqlx::Error;

    /// Runs the statements (a migration and its history row) in one transaction.
    async fn execute<'a, T: Iterator<Item = &'a str> + Send + 'a>(
        &'a mut self,
        queries: T,
    ) -> Result<usize, Self::Error> {
        // `Executor`'s boxed futures (rather than `store::query(..).execute(..)`) keep the
        // future `Send` for every lifetime, as refinery's trait requires. A statement without
        // arguments goes through the simple-query protocol: a migration holds many.
        let (begin, rollback, commit) = match self.nested {
            false => ("BEGIN", "ROLLBACK", "COMMIT"),
            true => (
                "SAVEPOINT migration",
                "ROLLBACK TO SAVEPOINT migration",
                "RELEASE SAVEPOINT migration",
            ),
        };
        let conn = &mut *self.conn;
        conn.execute(begin).await?;
        let mut count = 0;
        for query in queries {
            if let Err(e) = conn.execute(query).await {
                let _ = conn.execute(rollback).await;
                return Err(e);
            }
            count += 1;
        }
        conn.execute(commit).await?;
        Ok(count)
    }
}

impl AsyncQuery<Vec<Migration>> for SqlxMigrator<'_> {
    async fn query<'a>(&'a mut self, query: &'a str) -> Result<Vec<Migration>, Self::Error> {
        let rows = self.conn.fetch_all(query).await?;
        rows.iter()
            .map(|row| {
                let version: i32 = row.try_get(0)?;
                let name: String = row.try_get(1)?;
                let applied_on: String = row.try_get(2)?;
                let checksum: String = row.try_get(3)?;
                let decode = |e: Box<dyn std::error::Error + Send + Sync>| {
                    sqlx::Error::Decode(format!("{HISTORY_TABLE} row {version}: {e}").into())
                };
                let applied_on =
                    OffsetDateTime::parse(&applied_on, &Rfc3339).map_err(|e| decode(e.into()))?;
                let checksum = checksum.parse::<u64>().map_err(|e| decode(e.into()))?;
                Ok(Migration::applied(version, name, applied_on, checksum))
            })
            .collect()
    }
}

impl AsyncMigrate for SqlxMigrator<'_> {}
