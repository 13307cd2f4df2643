//! Writes deliveries to PostgreSQL: a whole batch at once, set-based (the rows of each table
//! passed as one typed array per column and unpacked by `unnest`, see [`super::columns`]), so
//! that a batch costs a round trip or two and one commit however many events it holds.
//!
//! Idempotency (docs/reference.md §5) is decided by the database itself: `ON CONFLICT … DO UPDATE …
//! WHERE (old row) IS DISTINCT FROM (new row)` writes only what changes, and `RETURNING`
//! says which rows were inserted or changed; the others are duplicates. The calls of new
//! bodies are inserted without `ON CONFLICT` when the writer bets they are new calls (see
//! [`NewCallsBet`]); a lost bet writes nothing, and the batch is written again with upserts.
//!
//! Deadlocks between concurrent batches (and concurrent processes) are avoided by taking row
//! locks in one global order: tables always in the same order, rows sorted by key.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Row};

use super::columns::{self, Column, Columns, Data};

use crate::event::{CallRecord, CallStatusRecord, Reading, Record, SmsRecord, Warnings};
use crate::payload::Decoded;

/// One delivery to write: the body as received, what it was read as, and when it arrived.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub body: bytes::Bytes,
    pub decoded: Decoded,
    pub content_type: Option<String>,
    pub received_at: DateTime<Utc>,
}

impl Delivery {
    /// Reads a body as received (live, or from the spool) into a delivery to write.
    pub fn read(
        body: bytes::Bytes,
        content_type: Option<String>,
        received_at: DateTime<Utc>,
    ) -> Delivery {
        Delivery {
            decoded: crate::payload::decode(&body, content_type.as_deref()),
            body,
            content_type,
            received_at,
        }
    }
}

/// What writing a delivery did (the `status` word of the answer, for the written ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Stored,
    Duplicate,
    Updated,
    Test,
    Archived,
    Rejected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Stored => "stored",
            Outcome::Duplicate => "duplicate",
            Outcome::Updated => "updated",
            Outcome::Test => "test",
            Outcome::Archived => "archived",
            Outcome::Rejected => "rejected",
        }
    }
}

/// When an event was first and last delivered. Live, both are the moment it arrived; a
/// replay passes the `raw_events` row's first and last delivery, so that rebuilt rows get
/// the times live ingestion gave them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
}

impl Times {
    pub fn at(t: DateTime<Utc>) -> Times {
        let t = micros(t);
        Times { first: t, last: t }
    }
}

/// PostgreSQL keeps microseconds, and rounds finer text input to the nearest one while a
/// bound value is truncated: every time the writer sends is cut to microseconds first, so
/// that comparisons with stored times are exact.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    chrono::SubsecRound::trunc_subsecs(t, 6)
}

/// Writes a batch and says, for each delivery in order, what it did. Deliveries of the same
/// key in one batch are applied in their order, as if they had come one after the other.
///
/// The usual batch (no key twice, no call seen before) is one statement in one round trip
/// (two when a bet on new calls is lost, see [`NewCallsBet`]):
/// raw events, new calls with their tags, SMS and status upserts, as data-modifying CTEs of
/// a single `INSERT`, atomic by itself. Round trips, not CPU, bound a busy writer on a small
/// machine. Calls that existed already are then updated in a transaction of their own,
/// which compares their tags under the calls' row locks.
pub async fn write_batch(
    conn: &mut PgConnection,
    batch: &[Delivery],
    memory: &BatchMemory,
) -> Result<Vec<Outcome>, sqlx::Error> {
    // The same bytes (and Content-Type, which decides how they read) twice in one batch: the
    // later copy reads the same and changes nothing, so it is written once and answered as
    // what it is, a duplicate.
    let mut first_of: HashMap<([u8; 32], Option<&str>), usize> =
        HashMap::with_capacity(batch.len());
    let copies: Vec<(usize, usize)> = batch
        .iter()
        .enumerate()
        .filter_map(
            |(i, d)| match first_of.entry((d.decoded.sha256, d.content_type.as_deref())) {
                std::collections::hash_map::Entry::Occupied(first) => Some((i, *first.get())),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(i);
                    None
                }
            },
        )
        .collect();
    let readings = batch.iter().enumerate().map(|(i, d)| {
        (first_of[&(d.decoded.sha256, d.content_type.as_deref())] == i)
            .then(|| (&d.decoded.reading, Times::at(d.received_at)))
    });
    let mut outcomes = write_batch_once(conn, batch, memory, Sorted::new(readings)).await?;
    for (copy, first) in copies {
        outcomes[copy] = match outcomes[first] {
            Outcome::Stored | Outcome::Updated | Outcome::Duplicate => Outcome::Duplicate,
            same => same,
        };
    }
    Ok(outcomes)
}

async fn write_batch_once(
    conn: &mut PgConnection,
    batch: &[Delivery],
    memory: &BatchMemory,
    sorted: Sorted<'_>,
) -> Result<Vec<Outcome>, sqlx::Error> {
    if sorted.has_repeats() {
        // A key twice: apply them in rounds, in one transaction.
        let mut tx = sqlx::Connection::begin(conn).await?;
        upsert_raw(&mut tx, batch).await?;
        let outcomes = write_sorted(&mut tx, sorted).await?;
        tx.commit().await?;
        return Ok(outcomes);
    }

    // FAST_BATCH takes each row's delivery time from its `excluded` row (see upsert_parts).
    debug_assert!(
        (sorted.calls.iter().map(|r| r.2))
            .chain(sorted.sms.iter().map(|r| r.2))
            .chain(sorted.statuses.iter().map(|r| r.2))
            .all(|t| t.first == t.last),
        "a live batch holds one delivery per row"
    );
    let tag_ids = (memory.tags)
        .ids(conn, sorted.calls.iter().flat_map(|(_, c, _)| &c.tags))
        .await?;
    let Sorted {
        mut outcomes,
        mut calls,
        mut sms,
        mut statuses,
    } = sorted;
    calls.sort_by(|a, b| a.1.call_sid.cmp(&b.1.call_sid));
    sms.sort_by(|a, b| a.1.sms_key.cmp(&b.1.sms_key));
    statuses.sort_by_key(|a| status_key(a.1));
    let (mut link_sids, mut link_tags) = (Vec::new(), Vec::new());
    for (_, c, _) in &calls {
        for name in &c.tags {
            link_sids.push(c.call_sid.as_str());
            link_tags.push(tag_ids[name]);
        }
    }
    let (raw, call_rows, sms_rows, status_rows) = (
        raw_rows(batch),
        with_times(&calls),
        with_times(&sms),
        with_times(&statuses),
    );
    let query = |new_calls: bool| {
        let sql: &'static str = if new_calls {
            &FAST_BATCH_NEW_CALLS
        } else {
            &FAST_BATCH
        };
        let mut query = columns::bind(sqlx::query(sql), raw_columns(&raw));
        let digests = new_calls.then(|| {
            (calls.iter())
                .map(|(i, ..)| Some(&batch[*i].decoded.sha256[..]))
                .collect()
        });
        query = columns::bind(query, fast_call_columns(&call_rows, digests));
        query = query.bind(&link_sids).bind(&link_tags);
        query = columns::bind(query, record_columns(&sms_rows));
        columns::bind(query, record_columns(&status_rows))
    };
    // Only batches with calls bet, or count as batches written without betting.
    let bet = !calls.is_empty() && memory.bet.take();
    let (rows, bet_held) = match query(bet).fetch_all(&mut *conn).await {
        Ok(rows) => (rows, bet),
        Err(e) if bet && super::is_unique_violation(&e) => {
            let skip = memory.bet.lost();
            tracing::debug!(error = %e, upserting_next = skip, "a call of the batch was stored already: writing the batch with upserts");
            (query(false).fetch_all(&mut *conn).await?, false)
        }
        Err(e) => return Err(e),
    };
    let mut new_calls = HashSet::new();
    let mut same_calls = HashSet::new();
    let mut written: HashMap<String, bool> = HashMap::new();
    for row in &rows {
        let table: i32 = row.try_get(0)?;
        let inserted: bool = row.try_get(4)?;
        match table {
            1 => {
                new_calls.insert(row.try_get::<String, _>(1)?);
            }
            5 => {
                same_calls.insert(row.try_get::<String, _>(1)?);
            }
            2 => {
                written.insert(row.try_get::<String, _>(1)?, inserted);
            }
            3 => {
                let key = status_key_parts(
                    &row.try_get::<String, _>(1)?,
                    &row.try_get::<String, _>(2)?,
                    row.try_get::<DateTime<Utc>, _>(3)?,
                );
                written.insert(key, inserted);
            }
            _ => {} // raw events and links: counted only to set the order
        }
    }
    if bet_held && !new_calls.is_empty() {
        memory.bet.won(); // a call was inserted without ON CONFLICT: the bet was tested
    }
    for (i, s, _) in &sms {
        outcomes[*i] = decide(written.get(&s.sms_key).copied());
    }
    for (i, s, _) in &statuses {
        outcomes[*i] = decide(written.get(&status_key(s)).copied());
    }
    calls.retain(|(i, c, _)| {
        if new_calls.contains(&c.call_sid) {
            outcomes[*i] = Outcome::Stored;
            false
        } else if same_calls.contains(&c.call_sid) {
            outcomes[*i] = Outcome::Duplicate;
            false
        } else {
            true
        }
    });
    // The statement above is committed: a conflict with a concurrent writer here is retried
    // on its own, rather than failing (and so rewriting) the whole batch.
    let mut attempt = 0;
    while !calls.is_empty() {
        let result = async {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            upsert_calls(&mut tx, &calls, &tag_ids, &mut outcomes).await?;
            tx.commit().await
        }
        .await;
        match result {
            Ok(()) => break,
            Err(e) if super::is_conflict(&e) && attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(2 << attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(outcomes)
}

/// The readings of a batch, by table, with the index of each in the batch.
struct Sorted<'a> {
    /// Decided here for the kinds without a table; placeholders for the others.
    outcomes: Vec<Outcome>,
    calls: Vec<(usize, &'a CallRecord, Times)>,
    sms: Vec<(usize, &'a SmsRecord, Times)>,
    statuses: Vec<(usize, &'a CallStatusRecord, Times)>,
}

impl<'a> Sorted<'a> {
    /// `None` stands for a delivery decided elsewhere (a copy of another in the batch); its
    /// outcome here is a placeholder.
    fn new(readings: impl Iterator<Item = Option<(&'a Reading, Times)>>) -> Self {
        let mut sorted = Sorted {
            outcomes: Vec::new(),
            calls: Vec::new(),
            sms: Vec::new(),
            statuses: Vec::new(),
        };
        for (i, reading) in readings.enumerate() {
            let Some((reading, at)) = reading else {
                sorted.outcomes.push(Outcome::Duplicate);
                continue;
            };
            sorted.outcomes.push(match reading {
                Reading::Record(Record::Call(c)) => {
                    sorted.calls.push((i, c, at));
                    Outcome::Stored // decided when written
                }
                Reading::Record(Record::Sms(s)) => {
                    sorted.sms.push((i, s, at));
                    Outcome::Stored
                }
                Reading::Record(Record::CallStatus(s)) => {
                    sorted.statuses.push((i, s, at));
                    Outcome::Stored
                }
                Reading::Test => Outcome::Test,
                Reading::Unknown => Outcome::Archived,
                Reading::Rejected(_) => Outcome::Rejected,
            });
        }
        sorted
    }

    /// Whether some key comes more than once.
    fn has_repeats(&self) -> bool {
        fn repeats<T, K: Eq + std::hash::Hash>(items: &[T], key: impl Fn(&T) -> K) -> bool {
            let mut seen = HashSet::with_capacity(items.len());
            !items.iter().all(|i| seen.insert(key(i)))
        }
        repeats(&self.calls, |(_, c, _)| c.call_sid.clone())
            || repeats(&self.sms, |(_, s, _)| s.sms_key.clone())
            || repeats(&self.statuses, |(_, s, _)| status_key(s))
    }
}

/// What the writer keeps from one batch to the next.
#[derive(Default)]
pub struct BatchMemory {
    pub tags: TagCache,
    pub bet: NewCallsBet,
}

/// Whether the next usual batch is written with [`FAST_BATCH_NEW_CALLS`], which inserts the
/// calls of new bodies with a plain `INSERT`, betting that they are new calls, rather than
/// with `INSERT … ON CONFLICT DO NOTHING` ([`FAST_BATCH`]).
///
/// An `ON CONFLICT` insert looks its key up before inserting (a second B-tree descent), locks
/// the speculative insertion, and confirms each row with a second WAL record, for the call
/// and for each of its tag links: saving that gave about 9 % more events/s in bench/run.
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

/// Tag names and their ids, which never change once committed (tags are never deleted):
/// after the first few batches, a batch needs no statement for its tags.
#[derive(Default)]
pub struct TagCache(std::sync::RwLock<HashMap<String, i32>>);

impl TagCache {
    /// Bounds the memory a flood of distinct names could take; past it, misses are asked
    /// of the database each time.
    const MAX: usize = 10_000;

    async fn ids<'a>(
        &self,
        conn: &mut PgConnection,
        names: impl Iterator<Item = &'a String>,
    ) -> Result<HashMap<String, i32>, sqlx::Error> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.0.read().expect("the tag cache lock is never poisoned");
            for name in names {
                match cache.get(name) {
                    Some(id) => {
                        found.insert(name.clone(), *id);
                    }
                    None => missing.push(name),
                }
            }
        }
        if !missing.is_empty() {
            // Its own statement, committed at once: only committed ids may be cached.
            let fetched = ensure_tags(conn, missing.into_iter()).await?;
            let mut cache = self
                .0
                .write()
                .expect("the tag cache lock is never poisoned");
            for (name, id) in &fetched {
                if cache.len() < Self::MAX {
                    cache.insert(name.clone(), *id);
                }
            }
            found.extend(fetched);
        }
        Ok(found)
    }
}

/// Writes the normalized rows of readings (not `raw_events`): the part `replay` re-derives.
/// Runs inside the caller's transaction.
pub async fn write_records<'a>(
    conn: &mut PgConnection,
    readings: impl Iterator<Item = (&'a Reading, Times)>,
) -> Result<Vec<Outcome>, sqlx::Error> {
    write_sorted(conn, Sorted::new(readings.map(Some))).await
}

async fn write_sorted(
    conn: &mut PgConnection,
    sorted: Sorted<'_>,
) -> Result<Vec<Outcome>, sqlx::Error> {
    let Sorted {
        mut outcomes,
        calls,
        sms,
        statuses,
    } = sorted;
    if !calls.is_empty() {
        let tag_ids = ensure_tags(conn, calls.iter().flat_map(|(_, c, _)| &c.tags)).await?;
        for round in rounds(&calls, |(_, c, _)| c.call_sid.as_str()) {
            upsert_calls(conn, &round, &tag_ids, &mut outcomes).await?;
        }
    }
    for round in rounds(&sms, |(_, s, _)| s.sms_key.as_str()) {
        let rows = with_times(&round);
        let changed = upsert(conn, &UPSERT_SMS, &rows, |row| row.try_get::<String, _>(0)).await?;
        for (i, s, _) in round {
            outcomes[i] = decide(changed.get(&s.sms_key).copied());
        }
    }
    for round in rounds(&statuses, |(_, s, _)| status_key(s)) {
        let rows = with_times(&round);
        let changed = upsert(conn, &UPSERT_STATUS, &rows, |row| {
            Ok(status_key_parts(
                &row.try_get::<String, _>(0)?,
                &row.try_get::<String, _>(1)?,
                row.try_get::<DateTime<Utc>, _>(2)?,
            ))
        })
        .await?;
        for (i, s, _) in round {
            outcomes[i] = decide(changed.get(&status_key(s)).copied());
        }
    }
    Ok(outcomes)
}

/// `Some(true)`: inserted; `Some(false)`: changed; `None`: the row was already so.
fn decide(changed: Option<bool>) -> Outcome {
    match changed {
        Some(true) => Outcome::Stored,
        Some(false) => Outcome::Updated,
        None => Outcome::Duplicate,
    }
}

fn status_key(s: &CallStatusRecord) -> String {
    status_key_parts(&s.call_sid, &s.status, s.occurred_at)
}

fn status_key_parts(call_sid: &str, status: &str, at: DateTime<Utc>) -> String {
    format!("{call_sid}\u{1f}{status}\u{1f}{}", at.timestamp_micros())
}

/// Splits items into rounds in which each key appears once, keeping their order: a batch
/// statement may not touch one row twice, and later deliveries must be applied after
/// earlier ones. Each round is sorted by key (the lock order).
fn rounds<'a, T: Clone, K: Ord + 'a>(items: &'a [T], key: impl Fn(&'a T) -> K) -> Vec<Vec<T>> {
    let mut rounds: Vec<BTreeMap<K, T>> = Vec::new();
    for item in items {
        let k = key(item);
        match rounds.iter_mut().find(|r| !r.contains_key(&k)) {
            Some(round) => {
                round.insert(k, item.clone());
            }
            None => rounds.push(BTreeMap::from([(k, item.clone())])),
        }
    }
    rounds
        .into_iter()
        .map(|r| r.into_values().collect())
        .collect()
}

/// Runs a set-based upsert and returns, for each row it inserted or changed, its key and
/// whether it was inserted.
async fn upsert<R: RecordTable, K: std::hash::Hash + Eq>(
    conn: &mut PgConnection,
    sql: &str,
    rows: &[(&R, Times)],
    key: impl Fn(&sqlx::postgres::PgRow) -> Result<K, sqlx::Error>,
) -> Result<HashMap<K, bool>, sqlx::Error> {
    let rows = columns::bind(sqlx::query(sql), record_columns(rows))
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| Ok((key(row)?, row.try_get::<bool, _>("inserted")?)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// raw_events

/// One distinct body of a batch.
struct RawRow<'a> {
    kind: &'static str,
    sha256: &'a [u8; 32],
    payload: Option<&'a str>,
    body: Option<&'a str>,
    body_bytes: Option<&'a [u8]>,
    content_type: Option<&'a str>,
    error: Option<String>,
    times: Times,
    deliveries: i32,
}

/// The columns of `raw_events` the writer sets, named as in the table.
fn raw_columns<'a>(rows: &'a [RawRow<'a>]) -> Vec<Column<'a>> {
    Columns::new(rows)
        .text("kind", |r| Some(r.kind))
        .bytes("body_sha256", |r| Some(&r.sha256[..]))
        .jsonb("payload", |r| r.payload.map(Into::into))
        .text("body", |r| r.body)
        .bytes("body_bytes", |r| r.body_bytes)
        .text("content_type", |r| r.content_type)
        .text("error", |r| r.error.as_deref())
        .time("received_at", |r| Some(r.times.first))
        .time("last_received_at", |r| Some(r.times.last))
        .int("deliveries", |r| Some(r.deliveries))
        .done()
}

/// Keeps every delivery in `raw_events`: identical bytes are one row whose count grows.
fn raw_upsert_sql(param: usize) -> String {
    let cols = raw_columns(&[]);
    format!(
        "INSERT INTO raw_events AS r ({names})
         {rows}
         ON CONFLICT (body_sha256) DO UPDATE
            SET last_received_at = greatest(r.last_received_at, excluded.last_received_at),
                received_at      = least(r.received_at, excluded.received_at),
                deliveries       = r.deliveries + excluded.deliveries,
                kind             = excluded.kind,
                error            = excluded.error",
        names = names(&cols, ""),
        rows = columns::unnest_select(&cols, param),
    )
}

static UPSERT_RAW: LazyLock<String> = LazyLock::new(|| raw_upsert_sql(1));

/// One row per distinct body, sorted by digest (the lock order).
fn raw_rows(batch: &[Delivery]) -> Vec<RawRow<'_>> {
    let mut by_sha: BTreeMap<[u8; 32], RawRow> = BTreeMap::new();
    for d in batch {
        let dec = &d.decoded;
        let at = micros(d.received_at);
        by_sha
            .entry(dec.sha256)
            .and_modify(|r| {
                r.deliveries += 1;
                r.times.first = r.times.first.min(at);
                r.times.last = r.times.last.max(at);
            })
            .or_insert_with(|| RawRow {
                kind: dec.kind().as_str(),
                sha256: &dec.sha256,
                payload: dec.payload.as_deref(),
                body: dec.body.as_deref(),
                body_bytes: dec.body_bytes.as_deref(),
                content_type: d.content_type.as_deref(),
                error: dec.error(),
                times: Times::at(at),
                deliveries: 1,
            });
    }
    by_sha.into_values().collect()
}

async fn upsert_raw(conn: &mut PgConnection, batch: &[Delivery]) -> Result<(), sqlx::Error> {
    let rows = raw_rows(batch);
    columns::bind(sqlx::query(&UPSERT_RAW), raw_columns(&rows))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// calls, tags, call_tags; sms; call_status

/// A table of records: its name, its key and its columns.
trait RecordTable: Sized {
    const TABLE: &'static str;
    /// How many of the leading columns make the table's unique key.
    const KEY: usize;
    /// The key's columns, then the others that come from the payload, named as in the table.
    fn columns<'a>(c: Columns<'a, (&'a Self, Times)>) -> Columns<'a, (&'a Self, Times)>;
    fn warnings(&self) -> &Warnings;
}

/// A record's columns, its warnings (`NULL` when none), then its delivery times `first_at`
/// and `last_at` (not table columns).
fn record_columns<'a, R: RecordTable>(rows: &'a [(&'a R, Times)]) -> Vec<Column<'a>> {
    R::columns(Columns::new(rows))
        .jsonb("parse_warnings", |(r, _)| {
            let w = r.warnings();
            (!w.is_empty()).then(|| {
                serde_json::to_string(w)
                    .expect("a string map serializes")
                    .into()
            })
        })
        .time("first_at", |(_, t)| Some(t.first))
        .time("last_at", |(_, t)| Some(t.last))
        .done()
}

impl RecordTable for CallRecord {
    const TABLE: &'static str = "calls";
    const KEY: usize = 1;
    fn columns<'a>(c: Columns<'a, (&'a Self, Times)>) -> Columns<'a, (&'a Self, Times)> {
        c.text("call_sid", |(r, _)| Some(r.call_sid.as_str()))
            .text("call_type", |(r, _)| r.call_type.as_deref())
            .text("from_number", |(r, _)| r.from_number.as_deref())
            .text("to_number", |(r, _)| r.to_number.as_deref())
            .text("dial_code", |(r, _)| r.dial_code.as_deref())
            .text("country_name", |(r, _)| r.country_name.as_deref())
            .text("status", |(r, _)| r.status.as_deref())
            .text("status_reason", |(r, _)| r.status_reason.as_deref())
            .int("duration_seconds", |(r, _)| r.duration_seconds)
            .int("ring_seconds", |(r, _)| r.ring_seconds)
            .int("billed_minutes", |(r, _)| r.billed_minutes)
            .numeric("call_charge", |(r, _)| r.call_charge)
            .time("logged_at", |(r, _)| r.logged_at)
            .time("started_at", |(r, _)| r.started_at)
            .time("ended_at", |(r, _)| r.ended_at)
            .text("agent_email", |(r, _)| r.agent_email.as_deref())
            .text("agent_name", |(r, _)| r.agent_name.as_deref())
            .text("admin_email", |(r, _)| r.admin_email.as_deref())
            .text("note", |(r, _)| r.note.as_deref())
            .text("recording_url", |(r, _)| r.recording_url.as_deref())
            .text("answered_device", |(r, _)| r.answered_device.as_deref())
            .text("hangup_by", |(r, _)| r.hangup_by.as_deref())
            .boolean("call_queue", |(r, _)| r.call_queue)
            .text("reason", |(r, _)| r.reason.as_deref())
            .text_array("dispositions", |(r, _)| r.dispositions.as_deref())
    }
    fn warnings(&self) -> &Warnings {
        &self.warnings
    }
}

impl RecordTable for SmsRecord {
    const TABLE: &'static str = "sms";
    const KEY: usize = 1;
    fn columns<'a>(c: Columns<'a, (&'a Self, Times)>) -> Columns<'a, (&'a Self, Times)> {
        c.text("sms_key", |(r, _)| Some(r.sms_key.as_str()))
            .text("sms_type", |(r, _)| r.sms_type.as_deref())
            .text("from_number", |(r, _)| Some(r.from_number.as_str()))
            .text("to_number", |(r, _)| Some(r.to_number.as_str()))
            .text("status", |(r, _)| r.status.as_deref())
            .text("content", |(r, _)| r.content.as_deref())
            .time("logged_at", |(r, _)| Some(r.logged_at))
            .numeric("sms_charge", |(r, _)| r.sms_charge)
            .text("agent_email", |(r, _)| r.agent_email.as_deref())
            .text("agent_name", |(r, _)| r.agent_name.as_deref())
            .text("admin_email", |(r, _)| r.admin_email.as_deref())
    }
    fn warnings(&self) -> &Warnings {
        &self.warnings
    }
}

impl RecordTable for CallStatusRecord {
    const TABLE: &'static str = "call_status";
    const KEY: usize = 3;
    fn columns<'a>(c: Columns<'a, (&'a Self, Times)>) -> Columns<'a, (&'a Self, Times)> {
        c.text("call_sid", |(r, _)| Some(r.call_sid.as_str()))
            .text("status", |(r, _)| Some(r.status.as_str()))
            .time("occurred_at", |(r, _)| Some(r.occurred_at))
            .text("call_type", |(r, _)| r.call_type.as_deref())
            .text("from_number", |(r, _)| r.from_number.as_deref())
            .text("to_number", |(r, _)| r.to_number.as_deref())
            .text("agent_email", |(r, _)| r.agent_email.as_deref())
            .text("agent_id", |(r, _)| r.agent_id.as_deref())
            .text("dial_code", |(r, _)| r.dial_code.as_deref())
    }
    fn warnings(&self) -> &Warnings {
        &self.warnings
    }
}

/// The names of a table's columns, split as its statements use them.
struct TableNames {
    /// The key's columns.
    key: Vec<&'static str>,
    /// The other columns from the payload, `parse_warnings` last.
    values: Vec<&'static str>,
    /// Key and values: every column the writer sets but the delivery times.
    all: Vec<&'static str>,
}

impl TableNames {
    fn of<R: RecordTable + 'static>() -> (TableNames, Vec<Column<'static>>) {
        let cols = record_columns::<R>(&[]);
        let set = &cols[..cols.len() - 2]; // first_at, last_at come last
        let all: Vec<&'static str> = set.iter().map(|c| c.name).collect();
        let names = TableNames {
            key: all[..R::KEY].to_vec(),
            values: all[R::KEY..].to_vec(),
            all,
        };
        (names, cols)
    }
}

/// `prefix` + each column name, comma-separated.
fn names(cols: &[Column<'_>], prefix: &str) -> String {
    list(&cols.iter().map(|c| c.name).collect::<Vec<_>>(), prefix)
}

fn list(names: &[&str], prefix: &str) -> String {
    names
        .iter()
        .map(|n| format!("{prefix}{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Builds the upsert of a table of records. Only the column names above go into the text:
/// values are always bound. `one_delivery`: every row's `first_at` equals its `last_at`
/// (live batches; not replay), so the delivery time is the `excluded` row's own `updated_at`
/// and need not be looked up in the input, which then is read once and not materialized.
fn upsert_parts<R: RecordTable + 'static>(
    input_name: &str,
    param: usize,
    one_delivery: bool,
) -> UpsertSql {
    let (n, cols) = TableNames::of::<R>();
    let key_match = n
        .key
        .iter()
        .map(|k| format!("i.{k} = excluded.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    // A new row's times are its first delivery's; a changed row's `updated_at` is the
    // delivery that changed it (looked up in the input: `excluded` has table columns only),
    // and `received_at` can only move earlier (a replay meeting an older delivery late).
    let input = format!(
        "{input_name} AS ({rows})",
        rows = columns::unnest_select(&cols, param)
    );
    let last_at = if one_delivery {
        "excluded.updated_at".to_owned()
    } else {
        format!("(SELECT i.last_at FROM {input_name} i WHERE {key_match} LIMIT 1)")
    };
    let insert = format!(
        "INSERT INTO {table} AS t ({all_names}, received_at, updated_at)
         SELECT {all_names}, first_at, first_at FROM {input_name}
         ON CONFLICT ({key_names}) DO UPDATE
            SET ({value_names}, updated_at, received_at) =
                ({excluded_values}, {last_at}, least(t.received_at, excluded.received_at))
          WHERE ({old_values}) IS DISTINCT FROM ({excluded_values})
            -- A delivery older than the one that last changed the row (one written late,
            -- from the spool) leaves it alone: the row holds the newest delivery.
            AND t.updated_at <= {last_at}
         RETURNING {returned_keys}, (t.xmax = 0) AS inserted",
        table = R::TABLE,
        all_names = list(&n.all, ""),
        key_names = list(&n.key, ""),
        value_names = list(&n.values, ""),
        excluded_values = list(&n.values, "excluded."),
        old_values = list(&n.values, "t."),
        returned_keys = list(&n.key, "t."),
    );
    UpsertSql {
        input,
        insert,
        params: cols.len(),
    }
}

/// One table's upsert: the CTE that unpacks its rows, the `INSERT` itself, and how many
/// parameters the rows take.
struct UpsertSql {
    input: String,
    insert: String,
    params: usize,
}

impl UpsertSql {
    fn standalone(&self) -> String {
        format!("WITH {} {}", self.input, self.insert)
    }
}

/// The one-statement batch (see [`write_batch`]). Its parameters, in order: the raw rows'
/// columns, the call rows' columns, the calls' tag links (call_sid and tag id arrays), the
/// SMS rows' columns, the status rows' columns. New calls are inserted (`DO NOTHING`): the
/// returned ones are new, and get their tags; the others existed and are left to the
/// transaction that follows.
static FAST_BATCH: LazyLock<String> = LazyLock::new(|| fast_batch_sql(false));

/// [`FAST_BATCH`] that inserts the calls of new bodies (bodies its raw rows inserted) with a
/// plain `INSERT`, and their links likewise: one more parameter after the call rows' columns,
/// each call's body digest. It fails, writing nothing, when such a call or link is stored
/// already. See [`NewCallsBet`].
static FAST_BATCH_NEW_CALLS: LazyLock<String> = LazyLock::new(|| fast_batch_sql(true));

/// The call columns of the batch statement: [`record_columns`], then, when betting
/// ([`FAST_BATCH_NEW_CALLS`]), each call's body digest, which tells the calls of new bodies.
fn fast_call_columns<'a>(
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

fn fast_batch_sql(new_calls: bool) -> String {
    let raw_params = raw_columns(&[]).len();
    let call_cols = fast_call_columns(&[], new_calls.then(Vec::new));
    let calls_in = format!(
        "calls_in AS ({})",
        columns::unnest_select(&call_cols, raw_params + 1)
    );
    let links = raw_params + call_cols.len() + 1;
    let sms = upsert_parts::<SmsRecord>("sms_in", links + 2, true);
    let status = upsert_parts::<CallStatusRecord>("status_in", links + 2 + sms.params, true);
    let (call_names, _) = TableNames::of::<CallRecord>();
    let links_in = format!("unnest(${links}::text[], ${}::integer[])", links + 1);
    // Without ON CONFLICT, a call or link stored already fails the statement.
    let (raw_returning, new_only, on_conflict, on_conflict_links) = if new_calls {
        (
            "body_sha256, (r.xmax = 0) AS inserted",
            // A filter, not a join: the calls keep their order (by call_sid, the lock order).
            "WHERE sha256 = ANY (ARRAY(SELECT body_sha256 FROM raw WHERE inserted))",
            "",
            "",
        )
    } else {
        (
            "1",
            "",
            "ON CONFLICT (call_sid) DO NOTHING",
            "ON CONFLICT DO NOTHING",
        )
    };
    format!(
        "WITH raw AS ({raw} RETURNING {raw_returning}),
         {calls_in},
         calls_new AS (
             INSERT INTO calls ({all_names}, received_at, updated_at)
             SELECT {all_names}, first_at, first_at FROM calls_in
             {new_only}
             {on_conflict}
             RETURNING call_sid),
         -- ON CONFLICT although these calls were inserted by this very statement: links
         -- left behind by a call deleted by hand (call_tags has no foreign key) must not
         -- fail it. When betting, they do fail it, and it is written again with upserts.
         links AS (
             INSERT INTO call_tags (call_sid, tag_id)
             SELECT l.call_sid, l.tag_id
               FROM {links_in} AS l(call_sid, tag_id)
               JOIN calls_new USING (call_sid)
              ORDER BY 1, 2
             {on_conflict_links}
             RETURNING 1),
         -- Calls not inserted above (stored already, or of a body stored already when
         -- betting) and stored exactly so, tags included (as of this statement's
         -- snapshot): duplicates, settled here without a transaction of their own.
         -- Materialized, so that the tags are compared only for calls that matched (as
         -- one query, the planner compared them first, for every call of the batch).
         calls_match AS MATERIALIZED (
             SELECT i.call_sid
               FROM calls t JOIN calls_in i USING (call_sid)
              -- Index lookups, of the calls that were not just inserted (none, usually).
              WHERE t.call_sid = ANY (ARRAY(SELECT call_sid FROM calls_in
                                            EXCEPT SELECT call_sid FROM calls_new))
                AND ({old_values}) IS NOT DISTINCT FROM ({input_values})),
         calls_same AS (
             SELECT m.call_sid FROM calls_match m
              WHERE ARRAY(SELECT ct.tag_id FROM call_tags ct
                           WHERE ct.call_sid = m.call_sid ORDER BY 1)
                  = ARRAY(SELECT l.tag_id FROM {links_in} AS l(call_sid, tag_id)
                           WHERE l.call_sid = m.call_sid ORDER BY 1)),
         {sms_in},
         sms_up AS ({sms_insert}),
         {status_in},
         status_up AS ({status_insert})
         -- The branches run in this order, and so take their row locks table after table
         -- in the same order as every other write path: no deadlock between them.
         SELECT 0 AS tbl, NULL::text AS a, NULL::text AS b, NULL::timestamptz AS c,
                count(*) > 0 AS inserted FROM raw
         UNION ALL SELECT 1, call_sid, NULL, NULL, true FROM calls_new
         UNION ALL SELECT 4, NULL, NULL, NULL, count(*) > 0 FROM links
         UNION ALL SELECT 5, call_sid, NULL, NULL, false FROM calls_same
         UNION ALL SELECT 2, sms_key, NULL, NULL, inserted FROM sms_up
         UNION ALL SELECT 3, call_sid, status, occurred_at, inserted FROM status_up",
        raw = raw_upsert_sql(1),
        all_names = list(&call_names.all, ""),
        old_values = list(&call_names.values, "t."),
        input_values = list(&call_names.values, "i."),
        sms_in = sms.input,
        sms_insert = sms.insert,
        status_in = status.input,
        status_insert = status.insert,
    )
}

static UPSERT_CALLS: LazyLock<String> =
    LazyLock::new(|| upsert_parts::<CallRecord>("input", 1, false).standalone());
static UPSERT_SMS: LazyLock<String> =
    LazyLock::new(|| upsert_parts::<SmsRecord>("input", 1, false).standalone());
static UPSERT_STATUS: LazyLock<String> =
    LazyLock::new(|| upsert_parts::<CallStatusRecord>("input", 1, false).standalone());

/// Pairs each row of a round with its delivery times, as the column builders take them.
fn with_times<'a, R>(round: &[(usize, &'a R, Times)]) -> Vec<(&'a R, Times)> {
    round.iter().map(|(_, r, t)| (*r, *t)).collect()
}

/// Makes sure every tag name has a row and returns their ids. `DO NOTHING` rather than
/// `DO UPDATE`: updating would lock the same few popular tag rows in every batch.
async fn ensure_tags<'a>(
    conn: &mut PgConnection,
    names: impl Iterator<Item = &'a String>,
) -> Result<HashMap<String, i32>, sqlx::Error> {
    let mut names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    names.sort_unstable();
    names.dedup();
    let rows = sqlx::query(
        "WITH added AS (
             INSERT INTO tags (name) SELECT n FROM unnest($1::text[]) AS n ORDER BY n
             ON CONFLICT (name) DO NOTHING
             RETURNING id, name)
         SELECT id, name FROM added
         UNION ALL
         SELECT id, name FROM tags WHERE name = ANY($1::text[])",
    )
    .bind(&names)
    .fetch_all(&mut *conn)
    .await?;
    let mut ids: HashMap<String, i32> = rows
        .iter()
        .map(|r| Ok((r.try_get("name")?, r.try_get("id")?)))
        .collect::<Result<_, sqlx::Error>>()?;
    if ids.len() < names.len() {
        // A tag another transaction committed after this statement's snapshot was taken:
        // the insert saw it, the select did not. A new statement sees it.
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !ids.contains_key(*n))
            .collect();
        for r in sqlx::query("SELECT id, name FROM tags WHERE name = ANY($1::text[])")
            .bind(&missing)
            .fetch_all(&mut *conn)
            .await?
        {
            ids.insert(r.try_get("name")?, r.try_get("id")?);
        }
    }
    Ok(ids)
}

/// Makes `call_tags` of calls that existed before this batch exactly the wanted ones, and
/// says which calls' tags changed; those the upsert did not already write get `updated_at`
/// moved. Every access to `call_tags` and `calls` goes through an array of keys (`= ANY`),
/// so it is an index scan however large the tables grow.
const SYNC_CALL_TAGS: &str = "
    WITH batch AS (
        SELECT * FROM unnest($1::text[], $2::timestamptz[]) AS b(call_sid, at)),
    -- Only calls whose row this delivery may speak for: not one a newer delivery changed.
    eligible AS (
        SELECT c.call_sid FROM calls c JOIN batch b USING (call_sid)
         WHERE c.call_sid = ANY ($1::text[]) AND c.updated_at <= b.at),
    wanted AS (
        SELECT * FROM unnest($3::text[], $4::integer[]) AS w(call_sid, tag_id)
         WHERE w.call_sid IN (SELECT call_sid FROM eligible)),
    current AS (
        SELECT call_sid, tag_id FROM call_tags
         WHERE call_sid = ANY (ARRAY(SELECT call_sid FROM eligible))),
    changed AS (
        SELECT DISTINCT call_sid FROM (
            (SELECT * FROM wanted EXCEPT SELECT * FROM current)
            UNION ALL
            (SELECT * FROM current EXCEPT SELECT * FROM wanted)) AS diff),
    removed AS (
        DELETE FROM call_tags ct
         WHERE ct.call_sid = ANY (ARRAY(SELECT call_sid FROM changed))
           AND (ct.call_sid, ct.tag_id) NOT IN (SELECT call_sid, tag_id FROM wanted)),
    added AS (
        INSERT INTO call_tags (call_sid, tag_id)
        SELECT call_sid, tag_id FROM wanted
         WHERE call_sid = ANY (ARRAY(SELECT call_sid FROM changed))
         ORDER BY 1, 2
        ON CONFLICT DO NOTHING),
    touched AS (
        UPDATE calls c SET updated_at = b.at
          FROM batch b
         WHERE c.call_sid = ANY (ARRAY(SELECT call_sid FROM changed))
           AND c.call_sid = b.call_sid
           AND NOT (c.call_sid = ANY ($5::text[])))
    SELECT call_sid FROM changed";

/// The tags of calls this batch inserted: they cannot have any yet.
const INSERT_CALL_TAGS: &str = "
    INSERT INTO call_tags (call_sid, tag_id)
    SELECT * FROM unnest($1::text[], $2::integer[]) AS w(call_sid, tag_id)
     ORDER BY 1, 2
    ON CONFLICT DO NOTHING";

async fn upsert_calls(
    conn: &mut PgConnection,
    round: &[(usize, &CallRecord, Times)],
    tag_ids: &HashMap<String, i32>,
    outcomes: &mut [Outcome],
) -> Result<(), sqlx::Error> {
    let rows = with_times(round);
    let written = upsert(conn, &UPSERT_CALLS, &rows, |row| {
        row.try_get::<String, _>(0)
    })
    .await?;

    // New calls' tags are plain inserts; calls that were there before need a comparison.
    let is_new = |c: &CallRecord| written.get(&c.call_sid) == Some(&true);
    let (mut new_sids, mut new_tags) = (Vec::new(), Vec::new());
    let (mut old_sids, mut old_ats, mut old_tag_sids, mut old_tags) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (_, c, at) in round {
        if is_new(c) {
            for name in &c.tags {
                new_sids.push(c.call_sid.as_str());
                new_tags.push(tag_ids[name]);
            }
        } else {
            old_sids.push(c.call_sid.as_str());
            old_ats.push(at.last);
            for name in &c.tags {
                old_tag_sids.push(c.call_sid.as_str());
                old_tags.push(tag_ids[name]);
            }
        }
    }
    if !new_sids.is_empty() {
        sqlx::query(INSERT_CALL_TAGS)
            .bind(&new_sids)
            .bind(&new_tags)
            .execute(&mut *conn)
            .await?;
    }
    let mut tags_changed = HashSet::new();
    if !old_sids.is_empty() {
        let written_sids: Vec<&str> = written.keys().map(String::as_str).collect();
        tags_changed = sqlx::query_scalar::<_, String>(SYNC_CALL_TAGS)
            .bind(&old_sids)
            .bind(&old_ats)
            .bind(&old_tag_sids)
            .bind(&old_tags)
            .bind(&written_sids)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
    }

    for (i, c, _) in round {
        outcomes[*i] = match written.get(&c.call_sid) {
            Some(&inserted) => decide(Some(inserted)),
            None if tags_changed.contains(&c.call_sid) => Outcome::Updated,
            None => Outcome::Duplicate,
        };
    }
    Ok(())
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
