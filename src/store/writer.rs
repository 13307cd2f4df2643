//! Writes deliveries to PostgreSQL: a whole batch in one transaction, one set-based statement
//! per table (rows passed as one JSON array and unpacked by `json_to_recordset`), so that a
//! batch costs a handful of round trips and one commit however many events it holds.
//!
//! Idempotency (CONTRACT §5) is decided by the database itself: `ON CONFLICT … DO UPDATE …
//! WHERE (old row) IS DISTINCT FROM (new row)` writes only what changes, and `RETURNING`
//! says which rows were inserted or changed; the others are duplicates.
//!
//! Deadlocks between concurrent batches (and concurrent processes) are avoided by taking row
//! locks in one global order: tables always in the same order, rows sorted by key.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, Row};

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
/// The usual batch (no key twice, no call seen before) is one statement in one round trip:
/// raw events, new calls with their tags, SMS and status upserts, as data-modifying CTEs of
/// a single `INSERT`, atomic by itself. Round trips, not CPU, bound a busy writer on a small
/// machine. Calls that existed already are then updated in a transaction of their own,
/// which compares their tags under the calls' row locks.
pub async fn write_batch(
    conn: &mut PgConnection,
    batch: &[Delivery],
    tags: &TagCache,
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
    let mut outcomes = write_batch_once(conn, batch, tags, Sorted::new(readings)).await?;
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
    tags: &TagCache,
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

    let tag_ids = tags
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
    let call_rows: Vec<_> = calls
        .iter()
        .map(|(_, c, at)| RecordRow::new(*c, &c.warnings, *at))
        .collect();
    let (mut link_sids, mut link_tags) = (Vec::new(), Vec::new());
    for (_, c, _) in &calls {
        for name in &c.tags {
            link_sids.push(c.call_sid.as_str());
            link_tags.push(tag_ids[name]);
        }
    }
    let sms_rows: Vec<_> = sms
        .iter()
        .map(|(_, s, at)| RecordRow::new(*s, &s.warnings, *at))
        .collect();
    let status_rows: Vec<_> = statuses
        .iter()
        .map(|(_, s, at)| RecordRow::new(*s, &s.warnings, *at))
        .collect();

    let rows = sqlx::query(&FAST_BATCH)
        .bind(sqlx::types::Json(raw_rows(batch)))
        .bind(sqlx::types::Json(&call_rows))
        .bind(&link_sids)
        .bind(&link_tags)
        .bind(sqlx::types::Json(&sms_rows))
        .bind(sqlx::types::Json(&status_rows))
        .fetch_all(&mut *conn)
        .await?;
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
        let rows: Vec<_> = round
            .iter()
            .map(|(_, s, at)| RecordRow::new(*s, &s.warnings, *at))
            .collect();
        let changed = upsert(conn, &UPSERT_SMS, &rows, |row| row.try_get::<String, _>(0)).await?;
        for (i, s, _) in round {
            outcomes[i] = decide(changed.get(&s.sms_key).copied());
        }
    }
    for round in rounds(&statuses, |(_, s, _)| status_key(s)) {
        let rows: Vec<_> = round
            .iter()
            .map(|(_, s, at)| RecordRow::new(*s, &s.warnings, *at))
            .collect();
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
async fn upsert<R: Serialize, K: std::hash::Hash + Eq>(
    conn: &mut PgConnection,
    sql: &str,
    rows: &[R],
    key: impl Fn(&sqlx::postgres::PgRow) -> Result<K, sqlx::Error>,
) -> Result<HashMap<K, bool>, sqlx::Error> {
    let rows = sqlx::query(sql)
        .bind(sqlx::types::Json(rows))
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| Ok((key(row)?, row.try_get::<bool, _>("inserted")?)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// raw_events

#[derive(Serialize)]
struct RawRow<'a> {
    kind: &'static str,
    sha256: String,
    payload: Option<&'a Value>,
    body: Option<&'a str>,
    body_hex: Option<String>,
    content_type: Option<&'a str>,
    error: Option<String>,
    first_at: DateTime<Utc>,
    last_at: DateTime<Utc>,
    deliveries: i32,
}

/// Keeps every delivery in `raw_events`: identical bytes are one row whose count grows.
fn raw_upsert_sql(param: usize) -> String {
    format!(
        "INSERT INTO raw_events AS r
               (kind, body_sha256, payload, body, body_bytes, content_type, error,
                received_at, last_received_at, deliveries)
        SELECT kind, decode(sha256, 'hex'), payload, body, decode(body_hex, 'hex'),
               content_type, error, first_at, last_at, deliveries
          FROM json_to_recordset(${param}::json) AS x(
               kind text, sha256 text, payload jsonb, body text, body_hex text,
               content_type text, error text, first_at timestamptz, last_at timestamptz,
               deliveries integer)
        ON CONFLICT (body_sha256) DO UPDATE
           SET last_received_at = greatest(r.last_received_at, excluded.last_received_at),
               received_at      = least(r.received_at, excluded.received_at),
               deliveries       = r.deliveries + excluded.deliveries,
               kind             = excluded.kind,
               error            = excluded.error"
    )
}

static UPSERT_RAW: LazyLock<String> = LazyLock::new(|| raw_upsert_sql(1));

/// One row per distinct body, sorted by digest (the lock order).
fn raw_rows(batch: &[Delivery]) -> Vec<RawRow<'_>> {
    let mut by_sha: BTreeMap<[u8; 32], RawRow> = BTreeMap::new();
    for d in batch {
        let dec = &d.decoded;
        by_sha
            .entry(dec.sha256)
            .and_modify(|r| {
                r.deliveries += 1;
                r.first_at = r.first_at.min(micros(d.received_at));
                r.last_at = r.last_at.max(micros(d.received_at));
            })
            .or_insert_with(|| RawRow {
                kind: dec.kind().as_str(),
                sha256: hex::encode(dec.sha256),
                payload: dec.payload.as_ref(),
                body: dec.body.as_deref(),
                body_hex: dec.body_bytes.as_ref().map(hex::encode),
                content_type: d.content_type.as_deref(),
                error: dec.error(),
                first_at: micros(d.received_at),
                last_at: micros(d.received_at),
                deliveries: 1,
            });
    }
    by_sha.into_values().collect()
}

async fn upsert_raw(conn: &mut PgConnection, batch: &[Delivery]) -> Result<(), sqlx::Error> {
    sqlx::query(&UPSERT_RAW)
        .bind(sqlx::types::Json(raw_rows(batch)))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// calls, tags, call_tags

/// The columns of `calls` that come from the payload, with their types, in table order.
const CALL_COLUMNS: &[(&str, &str)] = &[
    ("call_type", "text"),
    ("from_number", "text"),
    ("to_number", "text"),
    ("dial_code", "text"),
    ("country_name", "text"),
    ("status", "text"),
    ("status_reason", "text"),
    ("duration_seconds", "integer"),
    ("ring_seconds", "integer"),
    ("billed_minutes", "integer"),
    ("call_charge", "numeric"),
    ("logged_at", "timestamptz"),
    ("started_at", "timestamptz"),
    ("ended_at", "timestamptz"),
    ("agent_email", "text"),
    ("agent_name", "text"),
    ("admin_email", "text"),
    ("note", "text"),
    ("recording_url", "text"),
    ("answered_device", "text"),
    ("hangup_by", "text"),
    ("call_queue", "boolean"),
    ("reason", "text"),
    ("dispositions", "text[]"),
    ("parse_warnings", "jsonb"),
];

const SMS_COLUMNS: &[(&str, &str)] = &[
    ("sms_type", "text"),
    ("from_number", "text"),
    ("to_number", "text"),
    ("status", "text"),
    ("content", "text"),
    ("logged_at", "timestamptz"),
    ("sms_charge", "numeric"),
    ("agent_email", "text"),
    ("agent_name", "text"),
    ("admin_email", "text"),
    ("parse_warnings", "jsonb"),
];

const STATUS_COLUMNS: &[(&str, &str)] = &[
    ("call_type", "text"),
    ("from_number", "text"),
    ("to_number", "text"),
    ("agent_email", "text"),
    ("agent_id", "text"),
    ("dial_code", "text"),
    ("parse_warnings", "jsonb"),
];

/// Builds the upsert of one table from its key and value columns. Only names from the
/// constants above go into the text: values are always bound.
fn upsert_parts(
    table: &str,
    key: &[(&str, &str)],
    values: &[(&str, &str)],
    input_name: &str,
    param: usize,
) -> UpsertSql {
    let names = column_list;
    let all: Vec<(&str, &str)> = key.iter().chain(values).copied().collect();
    let record_type = all
        .iter()
        .map(|(n, t)| format!("{n} {t}"))
        .collect::<Vec<_>>()
        .join(", ");
    let key_match = key
        .iter()
        .map(|(n, _)| format!("i.{n} = excluded.{n}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    // A new row's times are its first delivery's; a changed row's `updated_at` is the
    // delivery that changed it (looked up in the input: `excluded` has table columns only),
    // and `received_at` can only move earlier (a replay meeting an older delivery late).
    let input = format!(
        "{input_name} AS (
             SELECT * FROM json_to_recordset(${param}::json)
                 AS x({record_type}, first_at timestamptz, last_at timestamptz))"
    );
    let insert = format!(
        "INSERT INTO {table} AS t ({all_names}, received_at, updated_at)
         SELECT {all_names}, first_at, first_at FROM {input_name}
         ON CONFLICT ({key_names}) DO UPDATE
            SET ({value_names}, updated_at, received_at) =
                ({excluded_values},
                 (SELECT i.last_at FROM {input_name} i WHERE {key_match} LIMIT 1),
                 least(t.received_at, excluded.received_at))
          WHERE ({old_values}) IS DISTINCT FROM ({excluded_values})
            -- A delivery older than the one that last changed the row (one written late,
            -- from the spool) leaves it alone: the row holds the newest delivery.
            AND t.updated_at <= (SELECT i.last_at FROM {input_name} i WHERE {key_match} LIMIT 1)
         RETURNING {returned_keys}, (t.xmax = 0) AS inserted",
        all_names = names(&all, ""),
        key_names = names(key, ""),
        value_names = names(values, ""),
        excluded_values = names(values, "excluded."),
        old_values = names(values, "t."),
        returned_keys = names(key, "t."),
    );
    UpsertSql { input, insert }
}

/// `prefix` + each column name, comma-separated.
fn column_list(cols: &[(&str, &str)], prefix: &str) -> String {
    cols.iter()
        .map(|(n, _)| format!("{prefix}{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One table's upsert: the CTE that unpacks its rows, and the `INSERT` itself.
struct UpsertSql {
    input: String,
    insert: String,
}

impl UpsertSql {
    fn standalone(&self) -> String {
        format!("WITH {} {}", self.input, self.insert)
    }
}

const CALL_KEY: &[(&str, &str)] = &[("call_sid", "text")];
const SMS_KEY: &[(&str, &str)] = &[("sms_key", "text")];
const STATUS_KEY: &[(&str, &str)] = &[
    ("call_sid", "text"),
    ("status", "text"),
    ("occurred_at", "timestamptz"),
];

/// The one-statement batch (see [`write_batch`]): $1 raw rows, $2 call rows, $3/$4 the
/// calls' tag links, $5 SMS rows, $6 status rows. New calls are inserted (`DO NOTHING`):
/// the returned ones are new, and get their tags; the others existed and are left to the
/// transaction that follows.
static FAST_BATCH: LazyLock<String> = LazyLock::new(|| {
    let calls = upsert_parts("calls", CALL_KEY, CALL_COLUMNS, "calls_in", 2);
    let sms = upsert_parts("sms", SMS_KEY, SMS_COLUMNS, "sms_in", 5);
    let status = upsert_parts("call_status", STATUS_KEY, STATUS_COLUMNS, "status_in", 6);
    let call_names = CALL_KEY
        .iter()
        .chain(CALL_COLUMNS)
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "WITH raw AS ({raw} RETURNING 1),
         {calls_in},
         calls_new AS (
             INSERT INTO calls ({call_names}, received_at, updated_at)
             SELECT {call_names}, first_at, first_at FROM calls_in
             ON CONFLICT (call_sid) DO NOTHING
             RETURNING call_sid),
         links AS (
             INSERT INTO call_tags (call_sid, tag_id)
             SELECT l.call_sid, l.tag_id
               FROM unnest($3::text[], $4::integer[]) AS l(call_sid, tag_id)
               JOIN calls_new USING (call_sid)
              ORDER BY 1, 2
             ON CONFLICT DO NOTHING
             RETURNING 1),
         -- Calls already stored exactly so, tags included (as of this statement's
         -- snapshot): duplicates, settled here without a transaction of their own.
         calls_same AS (
             SELECT i.call_sid
               FROM calls t JOIN calls_in i USING (call_sid)
              WHERE t.call_sid = ANY (ARRAY(SELECT call_sid FROM calls_in)) -- index lookups
                AND ({old_values}) IS NOT DISTINCT FROM ({input_values})
                AND ARRAY(SELECT ct.tag_id FROM call_tags ct
                           WHERE ct.call_sid = i.call_sid ORDER BY 1)
                  = ARRAY(SELECT l.tag_id
                            FROM unnest($3::text[], $4::integer[]) AS l(call_sid, tag_id)
                           WHERE l.call_sid = i.call_sid ORDER BY 1)),
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
        calls_in = calls.input,
        old_values = column_list(CALL_COLUMNS, "t."),
        input_values = column_list(CALL_COLUMNS, "i."),
        sms_in = sms.input,
        sms_insert = sms.insert,
        status_in = status.input,
        status_insert = status.insert,
    )
});

static UPSERT_CALLS: LazyLock<String> =
    LazyLock::new(|| upsert_parts("calls", CALL_KEY, CALL_COLUMNS, "input", 1).standalone());
static UPSERT_SMS: LazyLock<String> =
    LazyLock::new(|| upsert_parts("sms", SMS_KEY, SMS_COLUMNS, "input", 1).standalone());
static UPSERT_STATUS: LazyLock<String> = LazyLock::new(|| {
    upsert_parts("call_status", STATUS_KEY, STATUS_COLUMNS, "input", 1).standalone()
});

/// One row for `json_to_recordset`: the record's own fields, its warnings (`NULL` when
/// none) and its delivery times.
#[derive(Serialize)]
struct RecordRow<'a, R> {
    #[serde(flatten)]
    record: &'a R,
    parse_warnings: Option<&'a Warnings>,
    first_at: DateTime<Utc>,
    last_at: DateTime<Utc>,
}

impl<'a, R> RecordRow<'a, R> {
    fn new(record: &'a R, warnings: &'a Warnings, times: Times) -> Self {
        RecordRow {
            record,
            parse_warnings: (!warnings.is_empty()).then_some(warnings),
            first_at: times.first,
            last_at: times.last,
        }
    }
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
    let rows: Vec<_> = round
        .iter()
        .map(|(_, c, at)| RecordRow::new(*c, &c.warnings, *at))
        .collect();
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
