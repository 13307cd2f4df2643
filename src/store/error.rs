//! What can go wrong when writing, classified once, where the database's error arrives: the
//! rest of the service decides by the class (spool and wait, retry now, or keep the event
//! as rejected), never by SQLSTATE codes.

use std::time::Duration;

use super::database::reason;
use crate::retry::Backoff;

/// Conflicts with a concurrent writer are retried at once, on this schedule.
pub const CONFLICT_RETRIES: Backoff =
    Backoff::times(Duration::from_millis(4), Duration::from_millis(64), 5);

/// Runs `attempt` again, on [`CONFLICT_RETRIES`], while it fails for a conflict with a
/// concurrent writer (a webhook about the same call, another replica, `replay`).
pub async fn retry_conflicts<T, F>(attempt: impl FnMut() -> F) -> Result<T, StoreError>
where
    F: std::future::Future<Output = Result<T, StoreError>>,
{
    crate::retry::retry(
        CONFLICT_RETRIES,
        attempt,
        StoreError::is_conflict,
        |e, _| tracing::debug!(error = %e, "conflict with a concurrent writer; retrying"),
    )
    .await
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached, or cannot take writes now (a standby, a full disk, a
    /// shutdown): worth spooling the events and trying again later.
    #[error("the database is unavailable: {}", reason(.0))]
    Unavailable(sqlx::Error),
    /// No answer in time. The database may have committed all the same: a retry is then
    /// answered as a duplicate.
    #[error("the database did not answer within {} ms", .0.as_millis())]
    TimedOut(Duration),
    /// A concurrent writer took the same key first, or a deadlock: trying again resolves it.
    #[error("conflict with a concurrent writer: {}", reason(.0))]
    Conflict(sqlx::Error),
    /// The database refused what it was given (a value, a constraint): trying again with the
    /// same events would fail again.
    #[error("the database refused the write: {}", reason(.0))]
    Rejected(sqlx::Error),
}

impl StoreError {
    /// Events the store could not take for this reason should wait in the spool.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::TimedOut(_))
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict(_))
    }

    /// `unique_violation`: a row with this key is stored already.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Conflict(e) if sqlstate(e).as_deref() == Some("23505"))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            StoreError::Unavailable(e)
        } else if is_conflict(&e) {
            StoreError::Conflict(e)
        } else {
            StoreError::Rejected(e)
        }
    }
}

/// The SQLSTATE of a database error.
pub(super) fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// The database cannot be reached or cannot take writes now.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    use sqlx::Error as E;
    match e {
        E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Tls(_) => true,
        E::Protocol(_) => true,
        E::Database(_) => sqlstate(e).is_some_and(|c| {
            let c = c.as_str();
            // 08: connection exception; 53: insufficient resources (too many connections,
            // disk full); 57: operator intervention (statement timeout, shutdown, starting
            // up); 58: system error; 25006: read-only (a standby after a failover).
            ["08", "53", "57", "58"].iter().any(|p| c.starts_with(p)) || c == "25006"
        }),
        _ => false,
    }
}

/// A conflict with a concurrent transaction that a retry resolves: `unique_violation`,
/// `deadlock_detected`, `serialization_failure`.
fn is_conflict(e: &sqlx::Error) -> bool {
    sqlstate(e).is_some_and(|c| matches!(c.as_str(), "23505" | "40P01" | "40001"))
}
