//! What the console shows, gathered in one place for the page and for
//! `GET /console/api/summary`: figures read from the database (so that every replica shows
//! the same, and a restart forgets nothing), and this process's own (spool, answers since
//! it started).

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

/// How far back "the last event" and the usual rhythm are looked for.
const LOOK_BACK_DAYS: i32 = 7;

/// A kind is silent when, on the previous days, the same stretch of the day held at least
/// this many of its events on average (none arriving by chance then has a chance of 5 %).
const USUAL_EVENTS_FOR_ALARM: f64 = 3.0;

/// Silences shorter than this are never an alarm.
const SHORTEST_ALARM: Duration = Duration::from_secs(5 * 60);

/// How long the usual rhythm, a costlier query, is reused.
const USUAL_TTL: Duration = Duration::from_secs(60);

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
    pub sync_runs: Vec<SyncRun>,
    pub deliveries: Vec<DeliveryRow>,
    pub rejected: Vec<DeliveryRow>,
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

#[derive(Debug, Clone, Serialize)]
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

/// When a kind's usual rhythm was read, what it was, and for how long a stretch (s).
type Usual = (Instant, Option<f64>, i64);

/// The usual rhythm of each kind, kept a minute.
#[derive(Default)]
pub struct UsualCache(Mutex<BTreeMap<&'static str, Usual>>);

/// What the process contributes.
pub struct Local {
    pub metrics: Arc<Metrics>,
    pub spool: Depth,
    pub zone: chrono_tz::Tz,
    pub started_at: DateTime<Utc>,
    pub expected_schema: i32,
    pub usual: Arc<UsualCache>,
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
        sync_runs: Vec::new(),
        deliveries: Vec::new(),
        rejected: Vec::new(),
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
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("SET LOCAL statement_timeout = '{QUERY_TIMEOUT}'"))
        .execute(&mut *tx)
        .await?;
    let (read_only, recovery): (String, bool) = sqlx::query_as(
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

    // Today and the last hour, per kind: an index range over today's deliveries.
    let rows = sqlx::query(
        "SELECT kind,
                count(*) FILTER (WHERE error IS NULL AND last_received_at >= $1) AS today,
                count(*) FILTER (WHERE error IS NOT NULL AND last_received_at >= $1) AS rejected_today,
                count(*) FILTER (WHERE error IS NULL AND last_received_at >= now() - interval '1 hour') AS last_hour,
                max(last_received_at) FILTER (WHERE error IS NULL) AS last_at
           FROM raw_events
          WHERE last_received_at >= least($1, now() - interval '1 hour')
            AND source = 'webhook' AND kind IN ('call', 'sms', 'call_status')
          GROUP BY kind",
    )
    .bind(today_start)
    .fetch_all(&mut *tx)
    .await?;
    for k in &mut summary.kinds {
        k.today = Some(0);
        k.rejected_today = Some(0);
        k.last_hour = Some(0);
        k.per_minute = Some(vec![0; 60]);
    }
    for row in rows {
        let kind: String = row.try_get("kind")?;
        if let Some(k) = summary.kinds.iter_mut().find(|k| k.kind.as_str() == kind) {
            k.today = Some(row.try_get("today")?);
            k.rejected_today = Some(row.try_get("rejected_today")?);
            k.last_hour = Some(row.try_get("last_hour")?);
            k.last_at = later(k.last_at, row.try_get("last_at")?);
        }
    }
    let rows = sqlx::query(
        "SELECT kind, floor(extract(epoch FROM now() - last_received_at) / 60)::int AS ago,
                count(*) AS n
           FROM raw_events
          WHERE last_received_at >= now() - interval '1 hour' AND last_received_at <= now()
            AND error IS NULL AND source = 'webhook' AND kind IN ('call', 'sms', 'call_status')
          GROUP BY 1, 2",
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in rows {
        let kind: String = row.try_get("kind")?;
        let ago: i32 = row.try_get("ago")?;
        let n: i64 = row.try_get("n")?;
        let slot = summary.kinds.iter_mut().find(|k| k.kind.as_str() == kind);
        if let (Some(k), Ok(ago)) = (slot, usize::try_from(ago)) {
            if let Some(per_minute) = k.per_minute.as_mut().filter(|_| ago < 60) {
                per_minute[59 - ago] += n;
            }
        }
    }
    // The last event of a kind not seen since midnight, within the days looked back on.
    for k in summary.kinds.iter_mut().filter(|k| k.today == Some(0)) {
        let at: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT max(last_received_at) FROM raw_events
              WHERE kind = $1 AND error IS NULL AND source = 'webhook'
                AND last_received_at >= now() - make_interval(days => $2)",
        )
        .bind(k.kind.as_str())
        .bind(LOOK_BACK_DAYS)
        .fetch_one(&mut *tx)
        .await?;
        k.last_at = later(k.last_at, at);
    }
    for k in &mut summary.kinds {
        k.silence = silence(&mut tx, k, &local.usual).await?;
    }

    summary.sync_runs = sync_runs(&mut tx).await?;
    summary.deliveries = deliveries(&mut tx, false, local.zone).await?;
    summary.rejected = deliveries(&mut tx, true, local.zone).await?;
    tx.commit().await
}

fn later(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    a.max(b)
}

/// Whether `k` has been silent for longer than it usually is: the same stretch of the day
/// (since its last event, at most a day) on each of the previous days held, on average,
/// enough of its events that none arriving now is unlikely. The same clock as
/// `callhippo_seconds_since_last_event_written`, compared with the kind's own past.
async fn silence(
    conn: &mut PgConnection,
    k: &KindSummary,
    cache: &UsualCache,
) -> Result<Option<Silence>, sqlx::Error> {
    let Some(last_at) = k.last_at else {
        return Ok(None);
    };
    let silent_for = (Utc::now() - last_at).to_std().unwrap_or_default();
    if silent_for < SHORTEST_ALARM {
        return Ok(None);
    }
    let window_s = silent_for.as_secs().min(86_400) as i64;
    let cached = {
        let cache = cache.0.lock().expect("never poisoned");
        cache.get(k.kind.as_str()).copied()
    };
    // Reused while fresh and for about the same stretch (within a tenth).
    let usual = match cached {
        Some((at, usual, w)) if at.elapsed() < USUAL_TTL && (w - window_s).abs() * 10 <= w => usual,
        _ => {
            let usual: Option<f64> = sqlx::query_scalar(
                "SELECT avg(n)::float8 FROM (
                     SELECT (SELECT count(*) FROM raw_events r
                              WHERE r.kind = $1 AND r.error IS NULL AND r.source = 'webhook'
                                AND r.last_received_at >= now() - make_interval(days => d, secs => $2)
                                AND r.last_received_at < now() - make_interval(days => d)) AS n
                       FROM generate_series(1, $3) AS d) AS per_day",
            )
            .bind(k.kind.as_str())
            .bind(window_s as f64)
            .bind(LOOK_BACK_DAYS)
            .fetch_one(&mut *conn)
            .await?;
            let mut cache = cache.0.lock().expect("never poisoned");
            cache.insert(k.kind.as_str(), (Instant::now(), usual, window_s));
            usual
        }
    };
    Ok(usual
        .filter(|&u| u >= USUAL_EVENTS_FOR_ALARM)
        .map(|usual_events| Silence {
            usual_events,
            message: format!(
                "no {} for {}: on the previous {LOOK_BACK_DAYS} days this stretch of the day held {usual_events:.0} on average",
                plural_name(k.kind),
                human_duration(silent_for.as_secs() as i64)
            ),
        }))
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
    let rows = sqlx::query(
        "SELECT id, kind, trigger, range_from, range_to, started_at, finished_at, status,
                records, inserted, filled, unchanged, rejected, error
           FROM sync_runs ORDER BY id DESC LIMIT $1",
    )
    .bind(SYNC_RUNS)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(SyncRun {
                id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                trigger: r.try_get("trigger")?,
                range_from: r.try_get("range_from")?,
                range_to: r.try_get("range_to")?,
                started_at: r.try_get("started_at")?,
                finished_at: r.try_get("finished_at")?,
                status: r.try_get("status")?,
                records: r.try_get("records")?,
                inserted: r.try_get("inserted")?,
                filled: r.try_get("filled")?,
                unchanged: r.try_get("unchanged")?,
                rejected: r.try_get("rejected")?,
                error: r
                    .try_get::<Option<String>, _>("error")?
                    .map(|e| mask::text(&e)),
            })
        })
        .collect()
}

/// The latest deliveries, or the latest refused ones, each read again with the current
/// reader for its key, parties and warnings (payloads too large for that show less).
async fn deliveries(
    conn: &mut PgConnection,
    rejected: bool,
    zone: chrono_tz::Tz,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT r.id, r.kind, r.error, r.received_at, r.last_received_at, r.deliveries,
                r.content_type, r.source,
                CASE WHEN pg_column_size(r.payload) <= {REREAD_MAX_BYTES} THEN r.payload END AS payload,
                CASE WHEN octet_length(r.body) <= {REREAD_MAX_BYTES} THEN r.body END AS body,
                CASE WHEN octet_length(r.body_bytes) <= {REREAD_MAX_BYTES} THEN r.body_bytes END AS body_bytes,
                r.payload IS NULL AND r.body IS NULL AND r.body_bytes IS NULL AS empty,
                r.kind = 'call' AND EXISTS (
                    SELECT FROM calls c
                     WHERE c.call_sid = btrim(r.payload ->> 'callSid') AND c.received_at < r.received_at
                ) AS updated
           FROM raw_events r
          WHERE {}
          ORDER BY r.last_received_at DESC, r.id DESC
          LIMIT $1",
        if rejected { "r.error IS NOT NULL" } else { "true" }
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
            let first = match kind.as_str() {
                "test" => "test",
                "unknown" | "invalid" => "archived",
                _ if row.try_get::<bool, _>("updated")? => "updated",
                _ => "stored",
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

/// Key, masked parties and warned fields of a reading.
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
            Some(c.call_sid.clone()),
            parties(c.from_number.as_deref(), c.to_number.as_deref()),
        ),
        Record::Sms(s) => (
            s.sms_type.clone(),
            parties(Some(&s.from_number), Some(&s.to_number)),
        ),
        Record::CallStatus(s) => (
            Some(format!("{} · {}", s.call_sid, s.status)),
            parties(s.from_number.as_deref(), s.to_number.as_deref()),
        ),
    };
    let warnings = record.warnings().keys().cloned().collect();
    (key, parties, warnings)
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
