//! The store's side of erasures: reading them for a writer, and the guard every write
//! transaction runs (`callhippo_erasures_unchanged`, migration V5), which fails when
//! erasures changed since the writer read them.

use crate::store;
use sqlx::PgConnection;

use super::error::sqlstate;
use super::StoreError;
use crate::erasure::{Digest, Erasures, IdKind};

/// The guard's SQLSTATE.
const ERASURES_CHANGED: &str = "CHE01";

impl StoreError {
    /// The guard failed: erasures changed since the writer read them.
    pub fn is_erasures_changed(&self) -> bool {
        matches!(self, StoreError::Rejected(e) if sqlstate(e).as_deref() == Some(ERASURES_CHANGED))
    }
}

/// Reads every erasure into `erasures`.
pub(super) async fn load(conn: &mut PgConnection, erasures: &Erasures) -> Result<(), StoreError> {
    let rows: Vec<(i64, String, Vec<u8>)> =
        store::query_as("SELECT id, kind, identifier_sha256 FROM erasures")
            .fetch_all(&mut *conn)
            .await?;
    let seen = rows.iter().map(|(id, _, _)| *id).max().unwrap_or(0);
    let digests = rows.into_iter().filter_map(|(_, kind, d)| {
        Some((IdKind::parse(&kind)?, Digest::try_from(d.as_slice()).ok()?))
    });
    erasures.replace(seen, digests);
    Ok(())
}

/// Runs the guard in the caller's transaction: first, so that a batch checked against
/// erasures older than the database's writes nothing.
pub(super) async fn guard(conn: &mut PgConnection, seen: i64) -> Result<(), StoreError> {
    store::query("SELECT callhippo_erasures_unchanged($1)")
        .bind(seen)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
