//! The usual batch (no key twice) as one statement in one round trip (two when a bet on new
//! calls is lost, see [`NewCallsBet`]): raw events, new calls with their tags, SMS and
//! status upserts, as data-modifying CTEs of a single `INSERT`, atomic by itself. Round
//! trips, not CPU, bound a busy writer on a small machine. Calls that existed already are
//! then updated in a transaction of their own, which compares their tags under the calls'
//! row locks.

use crate::store;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection};

use super::columns::{self, Column, Data};
use super::plan::{outcome_of_change, BatchPlan, StatusKey};
use super::tables::calls::upsert_calls;
use super::tables::raw_events::{raw_columns, raw_rows};
use super::tables::{record_columns, with_times};
use super::write::BatchMemory;
use super::{StoreError, CONFLICT_RETRIES};
use crate::delivery::{Delivery, Outcome, Times};
use crate::event::CallRecord;
use crate::retry::retry_with;

/// A row of the batch statement's result.
#[derive(sqlx::FromRow)]
struct ResultRow {
    part: String,
    key: Option<String>,
    status: Option<String>,
    occurred_at: Option<DateTime<Utc>>,
    inserted: bool,
}

/// What the batch statement did to the batch's calls, SMS and status events.
#[derive(Default)]
struct Written {
    /// Calls it inserted.
    calls_inserted: HashSet<String>,
    /// Calls stored exactly so already, tags included: duplicates.
    calls_unchanged: HashSet<String>,
    /// SMS it inserted (`true`) or changed (`false`), by key.
    sms: HashMap<String, bool>,
    /// Status events it inserted or changed, by key.
    statuses: HashMap<StatusKey, bool>,
}

impl Written {
    fn from_rows(rows: &[PgRow]) -> Result<Written, sqlx::Error> {
        let mut w = Written::default();
        for row in rows {
            let row = ResultRow::from_row(row)?;
            match (row.part.as_str(), row.key) {
                ("call_inserted", Some(sid)) => {
                    w.calls_inserted.insert(sid);
                }
                ("call_unchanged", Some(sid)) => {
                    w.calls_unchanged.insert(sid);
                }
                ("sms", Some(key)) => {
                    w.sms.insert(key, row.inserted);
                }
                ("status", Some(call_sid)) => {
                    if let (Some(status), Some(occurred_at)) = (row.status, row.occurred_at) {
                        let key = StatusKey {
                            call_sid,
                            status,
                            occurred_at,
                        };
                        w.statuses.insert(key, row.inserted);
                    }
                }
                _ => {} // raw events and links: there only to run in their order
            }
        }
        Ok(w)
    }
}

/// Writes a batch whose keys each come once. `plan` is the batch's, sorted by key.
pub(super) async fn write_usual(
    conn: &mut PgConnection,
    batch: &[Delivery],
    memory: &BatchMemory,
    mut plan: BatchPlan<'_>,
    seen: i64,
) -> Result<Vec<Outcome>, StoreError> {
    let tag_ids = (memory.tags)
        .ids(conn, plan.calls.iter().flat_map(|r| &r.record.tags))
        .await?;
    let written = run_statement(conn, batch, memory, &plan, &tag_ids, seen).await?;
    for r in &plan.sms {
        plan.outcomes[r.index] = outcome_of_change(written.sms.get(&r.record.sms_key).copied());
    }
    for r in &plan.statuses {
        let key = StatusKey::of(r.record);
        plan.outcomes[r.index] = outcome_of_change(written.statuses.get(&key).copied());
    }
    let outcomes = &mut plan.outcomes;
    plan.calls.retain(|r| {
        let sid = &r.record.call_sid;
        let settled = if written.calls_inserted.contains(sid) {
            Some(Outcome::Stored)
        } else if written.calls_unchanged.contains(sid) {
            Some(Outcome::Duplicate)
        } else {
            None
        };
        if let Some(outcome) = settled {
            outcomes[r.index] = outcome;
        }
        settled.is_none()
    });
    if plan.calls.is_empty() {
        return Ok(plan.outcomes);
    }
    // The statement is committed: a conflict with a concurrent writer here is retried on
    // its own, rather than failing (and so rewriting) the whole batch; so are erasures that
    // changed since the batch was checked: the calls now suppressed are dropped, the others
    // updated under the new guard. Behind a pooler, the statement is not committed yet (the
    // batch is one transaction) and keeps its row locks: a conflict fails the batch, whose
    // transaction is rolled back, locks and all, and retried whole by the caller.
    let retried_here = |e: &StoreError| e.is_conflict() && !super::pooler::active();
    let (mut calls, mut outcomes, mut seen) = (plan.calls, plan.outcomes, seen);
    loop {
        let (calls_ref, tag_ids) = (&calls, &tag_ids);
        let ((conn_back, outcomes_back), result) = retry_with(
            CONFLICT_RETRIES,
            (&mut *conn, outcomes),
            |(conn, mut outcomes)| async move {
                let result = update_calls(conn, calls_ref, tag_ids, &mut outcomes, seen).await;
                ((conn, outcomes), result)
            },
            retried_here,
            |e, _| tracing::debug!(error = %e, "conflict with a concurrent writer; retrying"),
        )
        .await;
        outcomes = outcomes_back;
        match result {
            Err(e) if e.is_erasures_changed() => {
                let erasures = &memory.erasures;
                super::erasures::load(conn_back, erasures).await?;
                seen = erasures.seen().unwrap_or(0);
                calls.retain(|r| {
                    let gone = erasures.suppresses(&batch[r.index].decoded);
                    if gone {
                        outcomes[r.index] = Outcome::Suppressed;
                    }
                    !gone
                });
                if calls.is_empty() {
                    return Ok(outcomes);
                }
            }
            other => return other.map(|()| outcomes),
        }
    }
}

/// Updates calls that existed before the batch, and their tags, in a transaction.
async fn update_calls(
    conn: &mut PgConnection,
    calls: &[super::plan::Row<'_, CallRecord>],
    tag_ids: &HashMap<String, super::tables::tags::TagId>,
    outcomes: &mut [Outcome],
    seen: i64,
) -> Result<(), StoreError> {
    let mut tx = sqlx::Connection::begin(conn).await?;
    super::erasures::guard(&mut tx, seen).await?;
    upsert_calls(&mut tx, calls, tag_ids, outcomes).await?;
    Ok(tx.commit().await?)
}

/// Runs the batch statement, betting on new calls when [`NewCallsBet`] says so.
async fn run_statement(
    conn: &mut PgConnection,
    batch: &[Delivery],
    memory: &BatchMemory,
    plan: &BatchPlan<'_>,
    tag_ids: &HashMap<String, super::tables::tags::TagId>,
    seen: i64,
) -> Result<Written, StoreError> {
    let (mut link_sids, mut link_tags) = (Vec::new(), Vec::new());
    for r in &plan.calls {
        for name in &r.record.tags {
            link_sids.push(r.record.call_sid.as_str());
            link_tags.push(tag_ids[name]);
        }
    }
    let (raw, call_rows, sms_rows, status_rows) = (
        raw_rows(batch),
        with_times(&plan.calls),
        with_times(&plan.sms),
        with_times(&plan.statuses),
    );
    let query = |bet: bool| {
        let sql = if bet { BATCH_BETTING } else { BATCH };
        let mut query = columns::bind(store::query(sql), raw_columns(&raw));
        let digests = bet.then(|| {
            (plan.calls.iter())
                .map(|r| Some(&batch[r.index].decoded.sha256[..]))
                .collect()
        });
        query = columns::bind(query, batch_call_columns(&call_rows, digests));
        query = query.bind(&link_sids).bind(&link_tags);
        query = columns::bind(query, record_columns(&sms_rows));
        columns::bind(query, record_columns(&status_rows)).bind(seen)
    };
    // Only batches with calls bet, or count as batches written without betting.
    let bet = !plan.calls.is_empty() && memory.bet.take();
    let rows = match fetch_all(conn, query(bet)).await {
        Ok(rows) => rows,
        Err(e) if bet && e.is_unique_violation() => {
            let skip = memory.bet.lost();
            tracing::debug!(error = %e, upserting_next = skip, "a call of the batch was stored already: writing the batch with upserts");
            let rows = fetch_all(conn, query(false)).await?;
            return Ok(Written::from_rows(&rows)?);
        }
        Err(e) => return Err(e),
    };
    let written = Written::from_rows(&rows)?;
    if bet && !written.calls_inserted.is_empty() {
        memory.bet.won(); // a call was inserted without ON CONFLICT: the bet was tested
    }
    Ok(written)
}

/// Runs the batch statement. Behind a pooler, the batch is inside a transaction
/// (`PgSink::guarded_unit`): the statement gets a savepoint of its own, so that a lost bet or
/// a failed guard leaves that transaction usable, as a failed statement leaves a session.
async fn fetch_all(
    conn: &mut PgConnection,
    query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<Vec<PgRow>, StoreError> {
    if !super::pooler::active() {
        return Ok(query.fetch_all(&mut *conn).await?);
    }
    let mut savepoint = sqlx::Connection::begin(&mut *conn).await?;
    let rows = query.fetch_all(&mut *savepoint).await?;
    savepoint.commit().await?;
    Ok(rows)
}

/// Whether the next usual batch is written with [`BATCH_BETTING`], which inserts the
/// calls of new bodies with a plain `INSERT`, betting that they are new calls, rather than
/// with `INSERT … ON CONFLICT DO NOTHING` ([`BATCH`]).
///
/// An `ON CONFLICT` insert looks its key up before inserting (a second B-tree descent), locks
/// the speculative insertion, and confirms each row with a second WAL record, for the call
/// and for each of its tag links: saving that pays (figures in bench/HISTORY.md).
///
/// A new body almost always brings a new call: a call's log is sent once, and a redelivery
/// repeats its bytes. When it does not (an updated call log, links left behind by a call
/// deleted by hand), the plain `INSERT` fails as a whole and writes nothing; the batch is
/// then written again with the upserts, and so are the next 1, then 2, 4… up to
/// [`NewCallsBet::MAX_SKIP`] batches with calls after consecutive lost bets, so that a stream
/// of such updates pays a failed statement once in a thousand batches at most. A bet won (a
/// call inserted without `ON CONFLICT`) ends the penalty; batches without calls neither bet
/// nor count.
#[derive(Default)]
pub struct NewCallsBet {
    /// Usual batches still to write with the upserts before betting again.
    skip: AtomicU32,
    /// What `skip` becomes at the next lost bet (0 counts as 1).
    penalty: AtomicU32,
}

impl NewCallsBet {
    pub const MAX_SKIP: u32 = 1024;

    /// Whether to bet on this batch.
    pub fn take(&self) -> bool {
        (self.skip)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| s.checked_sub(1))
            .is_err()
    }

    pub fn won(&self) {
        self.penalty.store(0, Ordering::Relaxed);
    }

    /// How many usual batches are still to go without betting.
    pub fn skipping(&self) -> u32 {
        self.skip.load(Ordering::Relaxed)
    }

    /// Records a lost bet; how many batches go without betting now.
    pub fn lost(&self) -> u32 {
        let skip = self
            .penalty
            .load(Ordering::Relaxed)
            .clamp(1, Self::MAX_SKIP);
        (self.penalty).store((skip * 2).min(Self::MAX_SKIP), Ordering::Relaxed);
        self.skip.store(skip, Ordering::Relaxed);
        skip
    }
}

/// The one-statement batch (see the module's comment): sql/batch.sql. Its parameters, in
/// order: the raw rows' columns, the call rows' columns, the calls' tag links (call_sid and
/// tag id arrays), the SMS rows' columns, the status rows' columns, and the highest
/// `erasures.id` the batch was checked against (its guard, migration V5). New calls are inserted
/// (`DO NOTHING`): the returned ones are new, and get their tags; the others existed and are
/// left to the transaction that follows.
const BATCH: &str = include_str!("sql/batch.sql");

/// [`BATCH`] that inserts the calls of new bodies (bodies its raw rows inserted) with a
/// plain `INSERT`, and their links likewise (sql/batch_betting.sql): one more parameter
/// after the call rows' columns, each call's body digest. It fails, writing nothing, when
/// such a call or link is stored already. See [`NewCallsBet`].
const BATCH_BETTING: &str = include_str!("sql/batch_betting.sql");

/// The call columns of the batch statement: [`record_columns`], then, when betting
/// ([`BATCH_BETTING`]), each call's body digest, which tells the calls of new bodies.
pub(super) fn batch_call_columns<'a>(
    rows: &'a [(&'a CallRecord, Times)],
    digests: Option<Vec<Option<&'a [u8]>>>,
) -> Vec<Column<'a>> {
    let mut cols = record_columns(rows);
    if let Some(digests) = digests {
        cols.push(Column {
            name: "sha256",
            data: Data::Bytes(digests),
        });
    }
    cols
}

#[cfg(test)]
mod tests {
    use super::NewCallsBet;

    #[test]
    fn lost_bets_double_the_batches_without_one_up_to_a_cap_and_a_won_bet_ends_it() {
        let bet = NewCallsBet::default();
        assert!(bet.take(), "bets from the start");
        let mut skipped = Vec::new();
        for _ in 0..13 {
            let skip = bet.lost();
            for _ in 0..skip {
                assert!(!bet.take());
            }
            assert!(bet.take(), "bets again after {skip}");
            skipped.push(skip);
        }
        assert_eq!(
            skipped,
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1024, 1024]
        );
        bet.won();
        assert_eq!(bet.lost(), 1, "a bet won ends the penalty");
        assert_eq!(bet.skipping(), 1);
    }
}
