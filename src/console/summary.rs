//! What the console shows, gathered in one place for the page and for
//! `GET /console/api/summary`: figures read from the database (so that every replica shows
//! the same, and a restart forgets nothing), and this process's own (spool, answers since
//! it started).

use crate::store;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Row};

use super::mask;
use crate::event::{Kind, Reading, Record};
use crate::metrics::Metrics;
use crate::spool::Depth;

/// The kinds the console has a panel for.
pub const KINDS: [Kind; 3] = [Kind::Call, Kind::Sms, Kind::CallStatus];

/// The outcomes counted per kind.
pub const OUTCOMES: [&str; 5] = ["stored", "duplicate", "updated", "rejected", "suppressed"];

/// Rows in each list of deliveries.
pub const LIST_ROWS: i64 = 50;

/// Reconciliation runs shown.
const SYNC_RUNS: i64 = 10;

/// Longest a console query may take: the page answers, with what it has, whatever the size
/// of the history.
const QUERY_TIMEOUT: &str = "3s";

/// Raw payloads larger than this are not read again for the lists' keys and warnings.
const REREAD_MAX_BYTES: i32 = 65_536;

/// How far back "the last event" is looked for.
const LOOK_BACK_DAYS: i32 = 7;

/// A kind is silent when the same stretch of time on the previous days held at least this
/// many of its events on average (none arriving by chance then has a chance of 5 %).
const USUAL_EVENTS_FOR_ALARM: f64 = 3.0;

/// Silences shorter than this are never an alarm.
const SHORTEST_ALARM: Duration = Duration::from_secs(5 * 60);

/// Figures that took longer than this to read are kept ten times as long as they took (at
/// most [`LONGEST_KEPT`]) instead of being read again at every refresh: on a day of
/// millions of events the page stays cheap for the database, and a few minutes stale.
const CHEAP: Duration = Duration::from_millis(200);
const LONGEST_KEPT: Duration = Duration::from_secs(300);

/// How long the usual rhythm and "had events before" are kept, however cheap.
const RHYTHM_KEPT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub generated_at: DateTime<Utc>,
    /// REPORT_TIMEZONE: the zone of "today".
    pub zone: String,
    pub today: NaiveDate,
    /// When this process started: the outcomes count from then.
    pub process_started_at: DateTime<Utc>,
    pub database: Database,
    pub spool: Depth,
    pub kinds: Vec<KindSummary>,
    /// `None` when they could not be read.
    pub sync_runs: Option<Vec<SyncRun>>,
    pub deliveries: Option<Vec<DeliveryRow>>,
    pub rejected: Option<Vec<DeliveryRow>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Database {
    /// `writable`, `read-only`, `unreachable`.
    pub state: &'static str,
    pub schema_version: Option<i32>,
    pub expected_schema_version: i32,
    /// Why the figures from the database are missing, in words for the page (never the
    /// database's own text, which goes to the log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<&'static str>,
    /// The parts that could not be read in time (the others are shown).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KindSummary {
    pub kind: Kind,
    /// Accepted webhook deliveries since midnight in REPORT_TIMEZONE (distinct bodies).
    pub today: Option<i64>,
    /// Refused deliveries since midnight.
    pub rejected_today: Option<i64>,
    pub last_hour: Option<i64>,
    /// The latest accepted delivery, from the database or this process.
    pub last_at: Option<DateTime<Utc>>,
    pub seconds_since_last: Option<i64>,
    /// Set when the kind has been silent for longer than it usually is.
    pub silence: Option<Silence>,
    /// Answers of this process since it started, by outcome.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Accepted deliveries per minute over the last hour, oldest first (60 values).
    pub per_minute: Option<Vec<i64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Silence {
    /// Events the same stretch of the day held on average over the previous days.
    pub usual_events: f64,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SyncRun {
    pub id: i64,
    pub kind: String,
    pub trigger: String,
    pub range_from: NaiveDate,
    pub range_to: NaiveDate,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: String,
    pub records: i32,
    pub inserted: i32,
    pub filled: i32,
    pub unchanged: i32,
    pub rejected: i32,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub kind: String,
    /// The idempotency key (a call's callSid; an SMS's key is a digest, so it shows its
    /// parties instead).
    pub key: Option<String>,
    /// From and to, masked (`…2030 → …4455`).
    pub parties: Option<String>,
    pub outcome: String,
    pub deliveries: i32,
    /// The payload fields the current reader warns about (names only).
    pub warnings: Vec<String>,
    /// Why it was refused, with numbers and addresses masked.
    pub error: Option<String>,
}

/// A figure kept from an earlier refresh.
struct Kept<T> {
    value: T,
    /// What it was read for (a day's start, a stretch of time): read again when that changes.
    key: i64,
    until: Instant,
}

impl<T: Clone> Kept<T> {
    /// The value, when it was read for `key` and is not too old.
    fn fresh(&self, key: i64) -> Option<T> {
        (self.key == key && Instant::now() < self.until).then(|| self.value.clone())
    }
}

/// How long a figure that took `took` is kept.
fn kept_for(took: Duration, at_least: Duration) -> Duration {
    if took < CHEAP {
        at_least
    } else {
        (took * 10).clamp(at_least, LONGEST_KEPT)
    }
}

/// Per kind: accepted today, refused today, the latest accepted.
type Today = BTreeMap<String, (i64, i64, Option<DateTime<Utc>>)>;

/// The console's costlier figures, kept between refreshes (see [`CHEAP`]).
#[derive(Default)]
pub struct Cache(Mutex<Kepts>);

#[derive(Default)]
struct Kepts {
    today: Option<Kept<Today>>,
    usual: BTreeMap<&'static str, Kept<Option<f64>>>,
    had_events: BTreeMap<&'static str, Kept<bool>>,
}

/// What the process contributes.
pub struct Local {
    pub metrics: Arc<Metrics>,
    pub spool: Depth,
    pub zone: chrono_tz::Tz,
    pub started_at: DateTime<Utc>,
    pub expected_schema: i32,
    pub cache: Arc<Cache>,
    /// CALLHIPPO_TIMEZONE: records of CallHippo's API are read again in it.
    pub api_zone: chrono_tz::Tz,
}

/// Midnight today in `zone`, as UTC, and today's date there.
pub fn today_start(zone: chrono_tz::Tz, now: DateTime<Utc>) -> (NaiveDate, DateTime<Utc>) {
    let today = now.with_timezone(&zone).date_naive();
    let midnight = today.and_hms_opt(0, 0, 0).expect("midnight exists");
    // On a day that starts in a gap of the zone's clock, its first instant.
    let start = (zone.from_local_datetime(&midnight).earliest())
        .or_else(|| {
            zone.from_local_datetime(&(midnight + chrono::Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now);
    (today, start)
}

/// Longest the database may take for all the console's figures.
const DATABASE_BUDGET: Duration = Duration::from_secs(4);

/// The figures of this process alone, as when the database does not answer.
pub fn without_database(local: Local) -> Summary {
    let mut summary = base(&local, Utc::now());
    finish(&mut summary);
    summary
}

fn base(local: &Local, now: DateTime<Utc>) -> Summary {
    let (today, _) = today_start(local.zone, now);
    Summary {
        generated_at: now,
        zone: local.zone.name().to_owned(),
        today,
        process_started_at: local.started_at,
        database: Database {
            state: "unreachable",
            schema_version: None,
            expected_schema_version: local.expected_schema,
            problem: Some("the database does not answer: figures from it are missing"),
            missing: Vec::new(),
        },
        spool: local.spool,
        kinds: KINDS
            .iter()
            .map(|&kind| KindSummary {
                kind,
                today: None,
                rejected_today: None,
                last_hour: None,
                last_at: local.metrics.last_written(kind),
                seconds_since_last: None,
                silence: None,
                outcomes: (OUTCOMES.iter())
                    .map(|&o| (o, local.metrics.answered(kind, o)))
                    .collect(),
                per_minute: None,
            })
            .collect(),
        sync_runs: None,
        deliveries: None,
        rejected: None,
    }
}

fn finish(summary: &mut Summary) {
    let now = summary.generated_at;
    for k in &mut summary.kinds {
        k.seconds_since_last = k.last_at.map(|at| (now - at).num_seconds().max(0));
    }
}

/// Gathers everything; a database that does not answer leaves its figures `None`.
pub async fn gather(pool: &sqlx::PgPool, local: Local) -> Summary {
    let conn = match tokio::time::timeout(Duration::from_secs(2), pool.acquire()).await {
        Ok(conn) => conn,
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    };
    let now = Utc::now();
    let (_, start) = today_start(local.zone, now);
    let mut summary = base(&local, now);
    match conn {
        Ok(mut conn) => {
            let read = tokio::time::timeout(
                DATABASE_BUDGET,
                from_database(&mut conn, &mut summary, start, &local),
            )
            .await
            .unwrap_or_else(|_| {
                // Abandoned midway: the connection may be in a transaction; do not reuse it.
                let _ = conn.detach();
                Err(sqlx::Error::PoolTimedOut)
            });
            if let Err(e) = read {
                tracing::warn!(error = %crate::store::database::reason(&e), "console: could not read the figures");
                summary.database.problem = Some(if is_timeout(&e) {
                    "the database took too long: some figures are missing"
                } else {
                    "the figures could not be read from the database (the log says why)"
                });
                if !crate::store::is_unavailable(&e) && summary.database.state == "unreachable" {
                    summary.database.state = "answering";
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %crate::store::database::reason(&e), "console: database unreachable");
        }
    }
    finish(&mut summary);
    summary
}

fn is_timeout(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::PoolTimedOut)
        || matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("57014"))
}

async fn from_database(
    conn: &mut PgConnection,
    summary: &mut Summary,
    today_start: DateTime<Utc>,
    local: &Local,
) -> Result<(), sqlx::Error> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    store::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    store::query(&format!("SET LOCAL statement_timeout = '{QUERY_TIMEOUT}'"))
        .execute(&mut *tx)
        .await?;
    let (read_only, recovery): (String, bool) = store::query_as(
        "SELECT current_setting('default_transaction_read_only'), pg_is_in_recovery()",
    )
    .fetch_one(&mut *tx)
    .await?;
    summary.database.state = if read_only == "on" || recovery {
        "read-only"
    } else {
        "writable"
    };
    summary.database.problem = None;
    summary.database.schema_version = crate::store::migrate::current_version(&mut tx).await?;
    if summary.database.schema_version.is_none() {
        summary.database.problem = Some("the schema is not there yet");
        return tx.commit().await;
    }
    let zone = local.api_zone;
    let mut missing = Vec::new();

    // The cheap parts first (index scans of a few rows), then those that grow with the day.
    summary.deliveries = part(&mut tx, "deliveries", &mut missing, async |c| {
        deliveries(c, false, zone).await
    })
    .await?;
    summary.rejected = part(&mut tx, "refused deliveries", &mut missing, async |c| {
        deliveries(c, true, zone).await
    })
    .await?;
    summary.sync_runs = part(&mut tx, "reconciliation runs", &mut missing, sync_runs).await?;

    let hour = part(&mut tx, "the last hour", &mut missing, last_hour).await?;
    let today = part(&mut tx, "today's counts", &mut missing, async |c| {
        today(c, today_start, &local.cache).await
    })
    .await?;
    for k in &mut summary.kinds {
        let kind = k.kind.as_str();
        if let Some(hour) = &hour {
            let per_minute = hour.get(kind).cloned().unwrap_or_else(|| vec![0; 60]);
            k.last_hour = Some(per_minute.iter().sum());
            k.per_minute = Some(per_minute);
        }
        if let Some(today) = &today {
            let (accepted, refused, last) = today.get(kind).cloned().unwrap_or_default();
            k.today = Some(accepted);
            k.rejected_today = Some(refused);
            k.last_at = k.last_at.max(last);
        }
    }
    // The last event of a kind not seen since midnight, within the days looked back on.
    for k in &mut summary.kinds {
        if k.today != Some(0) || k.last_at.is_some() {
            continue;
        }
        let kind = k.kind.as_str();
        let at = part(&mut tx, "the last event", &mut missing, async |c| {
            store::query_scalar::<Option<DateTime<Utc>>>(
                "SELECT max(last_received_at) FROM raw_events
                  WHERE kind = $1 AND error IS NULL AND source = 'webhook'
                    AND last_received_at >= now() - make_interval(days => $2)",
            )
            .bind(kind)
            .bind(LOOK_BACK_DAYS)
            .fetch_one(c)
            .await
        })
        .await?;
        k.last_at = k.last_at.max(at.flatten());
    }
    for k in &mut summary.kinds {
        let silence = part(&mut tx, "the usual rhythm", &mut missing, async |c| {
            silence(c, k, &local.cache).await
        })
        .await?;
        k.silence = silence.flatten();
    }
    missing.dedup();
    if !missing.is_empty() {
        summary.database.problem =
            Some("the database took too long for some figures: they are missing");
    }
    summary.database.missing = missing;
    tx.commit().await
}

/// Runs one part of the figures in a savepoint: when it fails (its statement's timeout), its
/// figures are missing and the others are still read. A database that went away ends all.
async fn part<T>(
    conn: &mut PgConnection,
    name: &'static str,
    missing: &mut Vec<&'static str>,
    run: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
) -> Result<Option<T>, sqlx::Error> {
    store::query("SAVEPOINT console_part")
        .execute(&mut *conn)
        .await?;
    match run(&mut *conn).await {
        Ok(value) => {
            store::query("RELEASE SAVEPOINT console_part")
                .execute(&mut *conn)
                .await?;
            Ok(Some(value))
        }
        Err(e) if !crate::store::is_unavailable(&e) => {
            tracing::warn!(part = name, error = %crate::store::database::reason(&e), "console: a figure could not be read");
            store::query("ROLLBACK TO SAVEPOINT console_part")
                .execute(&mut *conn)
                .await?;
            missing.push(name);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Accepted deliveries per minute over the last hour, per kind (oldest first).
async fn last_hour(conn: &mut PgConnection) -> Result<BTreeMap<String, Vec<i64>>, sqlx::Error> {
    let rows = store::query(
        "SELECT kind, floor(extract(epoch FROM now() - last_received_at) / 60)::int AS ago,
                count(*) AS n
           FROM raw_events
          WHERE last_received_at >= now() - interval '1 hour' AND last_received_at <= now()
            AND error IS NULL AND source = 'webhook' AND kind IN ('call', 'sms', 'call_status')
          GROUP BY 1, 2",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for row in rows {
        let kind: String = row.try_get("kind")?;
        let ago: i32 = row.try_get("ago")?;
        let n: i64 = row.try_get("n")?;
        if let Some(ago) = usize::try_from(ago).ok().filter(|a| *a < 60) {
            out.entry(kind).or_insert_with(|| vec![0; 60])[59 - ago] += n;
        }
    }
    Ok(out)
}

/// Today's counts per kind: an index range over today's deliveries, kept a while when the
/// day is a big one.
async fn today(
    conn: &mut PgConnection,
    today_start: DateTime<Utc>,
    cache: &Cache,
) -> Result<Today, sqlx::Error> {
    let key = today_start.timestamp();
    let kept = (cache.0.lock().expect("never poisoned").today.as_ref()).and_then(|t| t.fresh(key));
    if let Some(t) = kept {
        return Ok(t);
    }
    let started = Instant::now();
    let rows = store::query(
        "SELECT kind,
                count(*) FILTER (WHERE error IS NULL) AS today,
                count(*) FILTER (WHERE error IS NOT NULL) AS rejected_today,
                max(last_received_at) FILTER (WHERE error IS NULL) AS last_at
           FROM raw_events
          WHERE last_received_at >= $1
            AND source = 'webhook' AND kind IN ('call', 'sms', 'call_status')
          GROUP BY kind",
    )
    .bind(today_start)
    .fetch_all(&mut *conn)
    .await?;
    let mut today = Today::new();
    for row in rows {
        today.insert(
            row.try_get("kind")?,
            (
                row.try_get("today")?,
                row.try_get("rejected_today")?,
                row.try_get("last_at")?,
            ),
        );
    }
    cache.0.lock().expect("never poisoned").today = Some(Kept {
        value: today.clone(),
        key,
        until: Instant::now() + kept_for(started.elapsed(), Duration::ZERO),
    });
    Ok(today)
}

/// Whether `k` has been silent for longer than it usually is. For a silence of up to a day:
/// the same stretch of the day (since its last event) held, on average over the previous
/// 7 days, enough of its events that none arriving by chance is unlikely. For a longer one:
/// the 7 days before it began held that many per stretch as long. With no event in 7 days
/// at all, a kind that had some before is silent. The same clock as
/// `callhippo_seconds_since_last_event_written`, compared with the kind's own past.
async fn silence(
    conn: &mut PgConnection,
    k: &KindSummary,
    cache: &Cache,
) -> Result<Option<Silence>, sqlx::Error> {
    let kind = k.kind.as_str();
    let Some(last_at) = k.last_at else {
        // None in the days looked back on: silent if it ever had events.
        if !had_events(conn, k.kind, cache).await? {
            return Ok(None);
        }
        return Ok(Some(Silence {
            usual_events: f64::NAN,
            message: format!(
                "no {} for more than {LOOK_BACK_DAYS} days, though there were some before",
                plural_name(k.kind)
            ),
        }));
    };
    let silent_for = (Utc::now() - last_at).to_std().unwrap_or_default();
    if silent_for < SHORTEST_ALARM {
        return Ok(None);
    }
    let window_s = silent_for.as_secs() as i64;
    // Read again when the stretch has grown by a tenth.
    let key = (window_s as f64).log(1.1).floor() as i64;
    let cached = {
        let kept = cache.0.lock().expect("never poisoned");
        kept.usual.get(kind).and_then(|u| u.fresh(key))
    };
    let usual = match cached {
        Some(u) => u,
        None => {
            let started = Instant::now();
            let usual: Option<f64> = if window_s <= 86_400 {
                store::query_scalar(
                    "SELECT avg(n)::float8 FROM (
                         SELECT (SELECT count(*) FROM raw_events r
                                  WHERE r.kind = $1 AND r.error IS NULL AND r.source = 'webhook'
                                    AND r.last_received_at >= now() - make_interval(days => d, secs => $2)
                                    AND r.last_received_at < now() - make_interval(days => d)) AS n
                           FROM generate_series(1, $3) AS d) AS per_day",
                )
                .bind(kind)
                .bind(window_s as f64)
                .bind(LOOK_BACK_DAYS)
                .fetch_one(&mut *conn)
                .await?
            } else {
                let week: i64 = store::query_scalar(
                    "SELECT count(*) FROM raw_events
                      WHERE kind = $1 AND error IS NULL AND source = 'webhook'
                        AND last_received_at >= $2::timestamptz - make_interval(days => $3)
                        AND last_received_at < $2",
                )
                .bind(kind)
                .bind(last_at)
                .bind(LOOK_BACK_DAYS)
                .fetch_one(&mut *conn)
                .await?;
                let span = f64::from(LOOK_BACK_DAYS) * 86_400.0;
                Some(week as f64 * (window_s as f64).min(span) / span)
            };
            let mut kept = cache.0.lock().expect("never poisoned");
            kept.usual.insert(
                kind,
                Kept {
                    value: usual,
                    key,
                    until: Instant::now() + kept_for(started.elapsed(), RHYTHM_KEPT),
                },
            );
            usual
        }
    };
    Ok(usual
        .filter(|&u| u >= USUAL_EVENTS_FOR_ALARM)
        .map(|usual_events| Silence {
            usual_events,
            message: format!(
                "no {} for {}: on the previous {LOOK_BACK_DAYS} days such a stretch held {usual_events:.0} on average",
                plural_name(k.kind),
                human_duration(silent_for.as_secs() as i64)
            ),
        }))
}

/// Whether the kind's own table has any row: whether it ever had events.
async fn had_events(
    conn: &mut PgConnection,
    kind: Kind,
    cache: &Cache,
) -> Result<bool, sqlx::Error> {
    let name = kind.as_str();
    let kept =
        (cache.0.lock().expect("never poisoned").had_events.get(name)).and_then(|k| k.fresh(0));
    if let Some(had) = kept {
        return Ok(had);
    }
    let table = match kind {
        Kind::Call => "calls",
        Kind::Sms => "sms",
        _ => "call_status",
    };
    let had: bool = store::query_scalar(&format!("SELECT EXISTS (SELECT FROM {table})"))
        .fetch_one(&mut *conn)
        .await?;
    cache.0.lock().expect("never poisoned").had_events.insert(
        name,
        Kept {
            value: had,
            key: 0,
            until: Instant::now() + RHYTHM_KEPT,
        },
    );
    Ok(had)
}

pub fn plural_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Call => "call logs",
        Kind::Sms => "SMS",
        Kind::CallStatus => "call status events",
        _ => "events",
    }
}

/// `42 s`, `5 min`, `2 h 10 min`, `3 d 4 h`.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=59 => format!("{s} s"),
        60..=3_599 => format!("{} min", s / 60),
        3_600..=86_399 => format!("{} h {} min", s / 3_600, s % 3_600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3_600),
    }
}

async fn sync_runs(conn: &mut PgConnection) -> Result<Vec<SyncRun>, sqlx::Error> {
    let mut runs: Vec<SyncRun> = store::query_as(
        "SELECT id, kind, trigger, range_from, range_to, started_at, finished_at, status,
                records, inserted, filled, unchanged, rejected, error
           FROM sync_runs ORDER BY id DESC LIMIT $1",
    )
    .bind(SYNC_RUNS)
    .fetch_all(&mut *conn)
    .await?;
    for run in &mut runs {
        run.error = run.error.as_deref().map(mask::text);
    }
    Ok(runs)
}

/// The latest deliveries, or the latest refused ones, each read again with the current
/// reader for its key, parties and warnings (payloads too large for that show less).
async fn deliveries(
    conn: &mut PgConnection,
    rejected: bool,
    zone: chrono_tz::Tz,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    let rows = store::query(&format!(
        "SELECT r.id, r.kind, r.error, r.received_at, r.last_received_at, r.deliveries,
                r.content_type, r.source,
                CASE WHEN octet_length(r.payload::text) <= {REREAD_MAX_BYTES} THEN r.payload END AS payload,
                CASE WHEN octet_length(r.body) <= {REREAD_MAX_BYTES} THEN r.body END AS body,
                CASE WHEN octet_length(r.body_bytes) <= {REREAD_MAX_BYTES} THEN r.body_bytes END AS body_bytes,
                r.payload IS NULL AND r.body IS NULL AND r.body_bytes IS NULL AS empty,
                (SELECT CASE WHEN c.updated_at >= r.received_at THEN 'updated' ELSE 'duplicate' END
                   FROM calls c
                  WHERE r.kind = 'call' AND c.call_sid = btrim(r.payload ->> 'callSid')
                    AND c.received_at < r.received_at) AS over_an_earlier
           FROM raw_events r
          WHERE {}
          ORDER BY r.last_received_at DESC, r.id DESC
          LIMIT $1",
        // The deliveries: the webhook's (reconciliation's records have their runs above);
        // the refused ones: whatever brought them.
        if rejected { "r.error IS NOT NULL" } else { "r.source = 'webhook'" }
    ))
    .bind(LIST_ROWS)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = row.try_get("id")?;
        let kind: String = row.try_get("kind")?;
        let error: Option<String> = row.try_get("error")?;
        let deliveries: i32 = row.try_get("deliveries")?;
        let readable = row
            .try_get::<Option<serde_json::Value>, _>("payload")?
            .is_some()
            || row.try_get::<Option<String>, _>("body")?.is_some()
            || row.try_get::<Option<Vec<u8>>, _>("body_bytes")?.is_some()
            || row.try_get::<bool, _>("empty")?;
        let (key, parties, warnings) = if readable {
            let delivery = crate::replay::reread(row, zone)?;
            describe(&delivery.decoded.reading)
        } else {
            (None, None, Vec::new())
        };
        let outcome = if error.is_some() {
            "rejected".to_owned()
        } else {
            // A call log of a call stored before by another body updated it, or read the
            // same (the row's last change came before this body).
            let earlier: Option<String> = row.try_get("over_an_earlier")?;
            let first = match kind.as_str() {
                "test" => "test",
                "unknown" | "invalid" => "archived",
                _ => match earlier.as_deref() {
                    Some("updated") => "updated",
                    Some(_) => "duplicate",
                    None => "stored",
                },
            };
            if deliveries > 1 {
                format!("{first}, then {} duplicate", deliveries - 1)
            } else {
                first.to_owned()
            }
        };
        out.push(DeliveryRow {
            id,
            at: row.try_get("last_received_at")?,
            kind,
            key,
            parties,
            outcome,
            deliveries,
            warnings,
            error: error.map(|e| mask::text(&e)),
        });
    }
    Ok(out)
}

/// Key, masked parties and warned fields of a reading. Keys are masked like any text; an
/// SMS has no key but a digest, so its type stands for it, and words the vendor does not
/// send (a type or status in free text) show as `other`.
fn describe(reading: &Reading) -> (Option<String>, Option<String>, Vec<String>) {
    let Reading::Record(record) = reading else {
        return (None, None, Vec::new());
    };
    let parties = |from: Option<&str>, to: Option<&str>| {
        let side = |n: Option<&str>| n.map_or_else(|| "?".to_owned(), mask::number);
        Some(format!("{} → {}", side(from), side(to)))
    };
    let (key, parties) = match record {
        Record::Call(c) => (
            Some(mask::text(&c.call_sid)),
            parties(c.from_number.as_deref(), c.to_number.as_deref()),
        ),
        Record::Sms(s) => (
            Some(format!("{} SMS", word(s.sms_type.as_deref().unwrap_or("")))),
            parties(Some(&s.from_number), Some(&s.to_number)),
        ),
        Record::CallStatus(s) => (
            Some(format!("{} · {}", mask::text(&s.call_sid), word(&s.status))),
            parties(s.from_number.as_deref(), s.to_number.as_deref()),
        ),
    };
    let mut warnings: Vec<String> = (record.warnings().keys())
        .map(|f| {
            if crate::payload::KNOWN_FIELDS.contains(&f.as_str()) {
                f.clone()
            } else {
                "another field".to_owned()
            }
        })
        .collect();
    warnings.dedup();
    (key, parties, warnings)
}

/// An enumerated value as the vendor sends them (`incoming`, `no_answer`), else `other`.
fn word(value: &str) -> &str {
    let plain = !value.is_empty()
        && value.len() <= 24
        && value.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    if plain {
        value
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_starts_at_local_midnight() {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 3, 30, 0).unwrap();
        let (day, start) = today_start(chrono_tz::America::New_York, now);
        assert_eq!(day, NaiveDate::from_ymd_opt(2026, 11, 30).unwrap());
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 11, 30, 5, 0, 0).unwrap());
        // A day that starts in a gap of the clock (Santiago moves from 00:00 to 01:00).
        let now = Utc.with_ymd_and_hms(2026, 9, 6, 12, 0, 0).unwrap();
        let (day, start) = today_start(chrono_tz::America::Santiago, now);
        assert_eq!(day, NaiveDate::from_ymd_opt(2026, 9, 6).unwrap());
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 9, 6, 4, 0, 0).unwrap());
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human_duration(42), "42 s");
        assert_eq!(human_duration(300), "5 min");
        assert_eq!(human_duration(7_800), "2 h 10 min");
        assert_eq!(human_duration(273_600), "3 d 4 h");
        assert_eq!(human_duration(-5), "0 s");
    }
}
