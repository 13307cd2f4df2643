//! Writing a batch: the plan decides the path. A batch whose keys each come once (the usual
//! case) is one statement ([`super::batch`]); one with a key twice is applied in rounds, in
//! one transaction, as if its deliveries had come one after the other.

use sqlx::PgConnection;

use super::batch::{self, NewCallsBet};
use super::erasures::guard;
use super::plan::{rounds, BatchPlan, StatusKey};
use super::tables::call_status::upsert_statuses;
use super::tables::calls::{fill_calls, upsert_calls};
use super::tables::raw_events::upsert_raw;
use super::tables::sms::upsert_sms;
use super::tables::tags::{ensure_tags, TagCache};
use super::StoreError;
use crate::delivery::{Delivery, MergeRule, Outcome};

/// What the writer keeps from one batch to the next.
#[derive(Default)]
pub struct BatchMemory {
    pub tags: TagCache,
    pub bet: NewCallsBet,
    /// The erasures batches are checked against (read again when the guard says they
    /// changed).
    pub erasures: std::sync::Arc<crate::erasure::Erasures>,
}

/// Archives and writes a batch of deliveries as they arrived, and says, for each in order,
/// what it did. `seen` is the highest `erasures.id` the batch was checked against: when
/// erasures changed since, nothing is written (`StoreError::is_erasures_changed`).
pub async fn write_batch(
    conn: &mut PgConnection,
    batch: &[Delivery],
    memory: &BatchMemory,
    seen: i64,
) -> Result<Vec<Outcome>, StoreError> {
    let (mut plan, copies) = BatchPlan::of_deliveries(batch);
    let mut outcomes = if plan.has_repeats() {
        let mut tx = sqlx::Connection::begin(conn).await?;
        guard(&mut tx, seen).await?;
        upsert_raw(&mut tx, batch).await?;
        let outcomes = write_in_rounds(&mut tx, plan, MergeRule::NewestDelivery).await?;
        tx.commit().await?;
        outcomes
    } else {
        plan.sort_by_key();
        batch::write_usual(conn, batch, memory, plan, seen).await?
    };
    copies.settle(&mut outcomes);
    Ok(outcomes)
}

/// Behind a pooler, where a batch is written inside one transaction: caches the ids of the
/// batch's tag names in a transaction of its own first, committed, so that the batch's
/// transaction (which may be rolled back) caches none.
pub(super) async fn cache_tags(
    conn: &mut PgConnection,
    batch: &[Delivery],
    memory: &BatchMemory,
) -> Result<(), StoreError> {
    let (plan, _) = BatchPlan::of_deliveries(batch);
    let missing = (memory.tags).missing(plan.calls.iter().flat_map(|r| &r.record.tags));
    if missing.is_empty() {
        return Ok(());
    }
    let mut tx = super::pooler::begin_on(conn).await?;
    memory.tags.ids(&mut tx, missing.into_iter()).await?;
    Ok(tx.commit().await?)
}

/// Archives and writes records read from CallHippo's API, which only fill what the tables
/// lack (`MergeRule::FillEmpty`), in one transaction; `seen` as for [`write_batch`].
pub async fn write_filling(
    conn: &mut PgConnection,
    batch: &[Delivery],
    seen: i64,
) -> Result<Vec<Outcome>, StoreError> {
    let (plan, copies) = BatchPlan::of_deliveries(batch);
    let mut tx = sqlx::Connection::begin(conn).await?;
    guard(&mut tx, seen).await?;
    upsert_raw(&mut tx, batch).await?;
    let mut outcomes = write_in_rounds(&mut tx, plan, MergeRule::FillEmpty).await?;
    tx.commit().await?;
    copies.settle(&mut outcomes);
    Ok(outcomes)
}

/// Writes the normalized rows of a plan (not `raw_events`) in rounds, each key once per
/// round and in batch order, inside the caller's transaction, calls meeting their rows by
/// `rule`: the path of batches with a key twice, of records from the API, and of `replay`.
pub(super) async fn write_in_rounds(
    conn: &mut PgConnection,
    plan: BatchPlan<'_>,
    rule: MergeRule,
) -> Result<Vec<Outcome>, StoreError> {
    let BatchPlan {
        mut outcomes,
        calls,
        sms,
        statuses,
    } = plan;
    if !calls.is_empty() {
        let tag_ids = ensure_tags(conn, calls.iter().flat_map(|r| &r.record.tags)).await?;
        for round in rounds(&calls, |r| r.record.call_sid.as_str()) {
            match rule {
                MergeRule::NewestDelivery => {
                    upsert_calls(conn, &round, &tag_ids, &mut outcomes).await?
                }
                MergeRule::FillEmpty => fill_calls(conn, &round, &tag_ids, &mut outcomes).await?,
            }
        }
    }
    for round in rounds(&sms, |r| r.record.sms_key.as_str()) {
        upsert_sms(conn, &round, &mut outcomes).await?;
    }
    for round in rounds(&statuses, |r| StatusKey::of(r.record)) {
        upsert_statuses(conn, &round, &mut outcomes).await?;
    }
    Ok(outcomes)
}
