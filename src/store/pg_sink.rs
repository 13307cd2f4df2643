//! PostgreSQL as a [`Sink`]: batches written on the connection that wrote last, `replay`'s
//! re-derivation, rejected events archived. A conflict with a concurrent writer is an error
//! the caller tries again (`StoreError::is_conflict`).

use crate::store;
use std::sync::{Arc, Weak};
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

use super::connections::{Kept, KEPT_IDLE_MAX};
use super::erasures;
use super::plan::BatchPlan;
use super::write::{cache_tags, write_batch, write_filling, write_in_rounds, BatchMemory};
use super::StoreError;
use crate::delivery::{Delivery, MergeRule, Outcome, Source};
use crate::erasure::Erasures;
use crate::event::{Reading, Rejection};
use crate::sink::Sink;

pub struct PgSink {
    pool: PgPool,
    /// Told when a write finds the database unreachable or read-only.
    failover: Option<Arc<super::Failover>>,
    /// What batches remember from one to the next (tag ids, the bet on new calls).
    memory: BatchMemory,
    kept: Arc<Kept<PoolConnection<Postgres>>>,
}

impl PgSink {
    /// A sink writing through `pool`. A task gives kept connections that are no longer used
    /// back to the pool, for as long as the sink lives.
    pub fn new(pool: PgPool) -> PgSink {
        let kept: Arc<Kept<PoolConnection<Postgres>>> = Arc::default();
        let weak: Weak<Kept<_>> = Arc::downgrade(&kept);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(KEPT_IDLE_MAX / 2).await;
                match weak.upgrade() {
                    Some(kept) => kept.sweep(),
                    None => return,
                }
            }
        });
        PgSink {
            pool,
            failover: None,
            memory: BatchMemory::default(),
            kept,
        }
    }

    /// Tells `failover` of every write that finds the database unreachable or read-only.
    pub fn with_failover(mut self, failover: Arc<super::Failover>) -> PgSink {
        self.failover = Some(failover);
        self
    }

    /// Reads erasures again (writes do when the guard says they changed; this keeps the
    /// webhook's own check current between writes, and before the first).
    pub async fn refresh_erasures(&self) -> Result<(), StoreError> {
        let mut work = super::Work::of(&self.pool).await?;
        erasures::load(&mut work, &self.memory.erasures).await?;
        Ok(work.done().await?)
    }

    /// The erasures this sink checks batches against, as far as it has read them: the
    /// webhook checks each event against them before it is queued or spooled.
    pub fn erasures(&self) -> Arc<Erasures> {
        self.memory.erasures.clone()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The connection that wrote last, else one from the pool; with when it was taken from
    /// the pool.
    async fn connection(&self) -> Result<(PoolConnection<Postgres>, Instant), StoreError> {
        match self.kept.take() {
            Some(kept) => Ok(kept),
            None => Ok((self.pool.acquire().await?, Instant::now())),
        }
    }

    /// Whether the pool could still serve someone else if one more connection were kept.
    fn others_served(&self) -> bool {
        self.pool.num_idle() > 0 || self.pool.size() < self.pool.options().get_max_connections()
    }

    /// Writes a batch on the connection that wrote last, keeping it for the next when it
    /// succeeded. Each delivery meets its row by its source's merge rule.
    async fn write_once(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, StoreError> {
        let parts = parts_by_rule(batch);
        if parts.len() > 1 {
            // Sources are not mixed in one batch by any caller; were they, each part alone.
            let mut outcomes = vec![Outcome::Duplicate; batch.len()];
            for (_, part) in parts {
                let deliveries: Vec<Delivery> = part.iter().map(|&i| batch[i].clone()).collect();
                let written = Box::pin(self.write_once(&deliveries)).await?;
                part.iter().zip(written).for_each(|(&i, o)| outcomes[i] = o);
            }
            return Ok(outcomes);
        }
        let op = match parts.first() {
            Some((MergeRule::FillEmpty, _)) => Op::Fill,
            _ => Op::Write,
        };
        let (mut conn, since) = match self.connection().await {
            Ok(c) => c,
            Err(e) => {
                if let (StoreError::Unavailable(_), Some(f)) = (&e, &self.failover) {
                    f.suspect();
                }
                return Err(e);
            }
        };
        let result = self.guarded_unit(&mut conn, batch, op).await;
        match &result {
            Ok(_) => self.kept.keep(conn, since, self.others_served()),
            // A node that turned read-only (or a broken link): this connection is not used
            // again, and the hosts are asked which one takes writes.
            Err(StoreError::Unavailable(_)) => {
                drop(conn.detach());
                if let Some(f) = &self.failover {
                    f.suspect();
                }
            }
            Err(_) => {}
        }
        result
    }

    /// [`PgSink::guarded`], in one transaction behind a pooler (the write's own transactions
    /// become savepoints of it); as it is on a direct connection.
    async fn guarded_unit(
        &self,
        conn: &mut PgConnection,
        batch: &[Delivery],
        op: Op,
    ) -> Result<Vec<Outcome>, StoreError> {
        if !super::pooler::active() {
            return self.guarded(conn, batch, op).await;
        }
        if let Op::Write = op {
            cache_tags(conn, batch, &self.memory).await?;
        }
        let mut tx = super::pooler::begin_on(conn).await?;
        let outcomes = self.guarded(&mut tx, batch, op).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Runs `op` on what of `batch` is about no erased identifier (the rest is
    /// `suppressed`), under the guard of the erasures it was checked against; when they
    /// changed meanwhile, reads them again and starts over.
    async fn guarded(
        &self,
        conn: &mut PgConnection,
        batch: &[Delivery],
        op: Op,
    ) -> Result<Vec<Outcome>, StoreError> {
        let mut reloads = 0;
        loop {
            let seen = match self.memory.erasures.seen() {
                Some(seen) => seen,
                None => {
                    erasures::load(conn, &self.memory.erasures).await?;
                    continue;
                }
            };
            let kept: Vec<usize> = (0..batch.len())
                .filter(|&i| !self.memory.erasures.suppresses(&batch[i].decoded))
                .collect();
            let result = if kept.len() == batch.len() {
                self.run(conn, batch, op, seen).await
            } else {
                let part: Vec<Delivery> = kept.iter().map(|&i| batch[i].clone()).collect();
                let mut outcomes = vec![Outcome::Suppressed; batch.len()];
                let written = match part.is_empty() {
                    true => Ok(Vec::new()),
                    false => self.run(conn, &part, op, seen).await,
                };
                written.map(|w| {
                    kept.iter().zip(w).for_each(|(&i, o)| outcomes[i] = o);
                    outcomes
                })
            };
            match result {
                Err(e) if e.is_erasures_changed() && reloads < ERASURE_RELOADS => {
                    reloads += 1;
                    tracing::debug!("erasures changed while writing: reading them again");
                    erasures::load(conn, &self.memory.erasures).await?;
                }
                other => return other,
            }
        }
    }

    async fn run(
        &self,
        conn: &mut PgConnection,
        batch: &[Delivery],
        op: Op,
        seen: i64,
    ) -> Result<Vec<Outcome>, StoreError> {
        match op {
            Op::Write => write_batch(conn, batch, &self.memory, seen).await,
            Op::Fill => write_filling(conn, batch, seen).await,
            Op::Rederive => rederive(conn, batch, seen).await,
        }
    }

    /// `replay`: the rows of archived deliveries, and their archived kind and error.
    async fn rederive_once(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        self.guarded_unit(&mut conn, batch, Op::Rederive).await
    }
}

/// How many times a batch is written again because erasures changed meanwhile (each
/// `forget` changes them once).
const ERASURE_RELOADS: u32 = 8;

/// What to do with a batch.
#[derive(Clone, Copy)]
enum Op {
    /// Archive and write as delivered (`MergeRule::NewestDelivery`).
    Write,
    /// Archive and fill what the tables lack (`MergeRule::FillEmpty`).
    Fill,
    /// Write the rows of archived deliveries again (`replay`).
    Rederive,
}

/// `replay`: the rows of archived deliveries, and their archived kind, error and time, in
/// one transaction.
async fn rederive(
    conn: &mut PgConnection,
    batch: &[Delivery],
    seen: i64,
) -> Result<Vec<Outcome>, StoreError> {
    let ids: Vec<i64> = (batch.iter())
        .filter_map(|d| match d.source {
            Source::Replay { raw_id, .. } => Some(raw_id),
            _ => None,
        })
        .collect();
    assert_eq!(
        ids.len(),
        batch.len(),
        "only replayed deliveries are re-derived"
    );
    let mut tx = sqlx::Connection::begin(conn).await?;
    erasures::guard(&mut tx, seen).await?;
    // Raw rows first, in digest order: the lock order of live ingestion, so that a
    // replay running beside serve cannot deadlock with it.
    store::query("SELECT 1 FROM raw_events WHERE id = ANY($1) ORDER BY body_sha256 FOR UPDATE")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    // Each by its merge rule: what was read from the API only fills, as it did.
    let mut outcomes = vec![Outcome::Duplicate; batch.len()];
    for (rule, part) in parts_by_rule(batch) {
        let readings = part
            .iter()
            .map(|&i| Some((&batch[i].decoded.reading, batch[i].received)));
        let written = write_in_rounds(&mut tx, BatchPlan::new(readings), rule).await?;
        part.iter().zip(written).for_each(|(&i, o)| outcomes[i] = o);
    }
    let kinds: Vec<&str> = batch.iter().map(|d| d.decoded.kind().as_str()).collect();
    let errors: Vec<Option<String>> = batch.iter().map(|d| d.decoded.error()).collect();
    let times: Vec<Option<DateTime<Utc>>> = (batch.iter())
        .map(|d| match &d.decoded.reading {
            Reading::Record(r) => r.event_at(),
            _ => None,
        })
        .collect();
    store::query(
        "UPDATE raw_events r SET kind = u.kind, error = u.error, event_at = u.event_at
           FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[])
                AS u(id, kind, error, event_at)
          WHERE r.id = u.id
            AND (r.kind, r.error, r.event_at) IS DISTINCT FROM (u.kind, u.error, u.event_at)",
    )
    .bind(&ids)
    .bind(&kinds)
    .bind(&errors)
    .bind(&times)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(outcomes)
}

/// The places of a batch's deliveries by their merge rule, the rules that have some only:
/// newest-delivery ones first (the order replay applies them in).
fn parts_by_rule(batch: &[Delivery]) -> Vec<(MergeRule, Vec<usize>)> {
    [MergeRule::NewestDelivery, MergeRule::FillEmpty]
        .into_iter()
        .map(|rule| {
            let part = (0..batch.len()).filter(|&i| batch[i].source.merge_rule() == rule);
            (rule, part.collect::<Vec<usize>>())
        })
        .filter(|(_, part)| !part.is_empty())
        .collect()
}

impl Sink for PgSink {
    fn write<'a>(
        &'a self,
        batch: &'a [Delivery],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, StoreError>> {
        Box::pin(self.write_once(batch))
    }

    fn rederive<'a>(
        &'a self,
        batch: &'a [Delivery],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, StoreError>> {
        Box::pin(self.rederive_once(batch))
    }

    fn keep_rejected<'a>(
        &'a self,
        delivery: &'a Delivery,
        error: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut kept = delivery.clone();
        kept.decoded.reading = Reading::Rejected(Rejection {
            kind: delivery.decoded.kind(),
            field: None,
            message: error.to_owned(),
        });
        // Kept as text, not as jsonb: whatever the database refused may be in the payload.
        if kept.decoded.payload.take().is_some() && kept.decoded.body.is_none() {
            kept.decoded.body = Some(crate::payload::body_text(&delivery.body));
        }
        Box::pin(async move { self.write_once(std::slice::from_ref(&kept)).await.map(drop) })
    }
}
