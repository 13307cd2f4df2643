//! `forget`'s work in the database: record the erasures, wait until no writer can still
//! store what they name, then count or remove, table by table, every row that holds them.
//!
//! Why the wait makes it safe beside `serve` (any number of replicas): every write
//! transaction first runs `callhippo_erasures_unchanged` (migration V5), which takes a
//! transaction id and then checks, with a fresh snapshot, that erasures are the ones the
//! writer checked its batch against. Once the erasures are committed, a writer that takes its
//! id later sees them and writes nothing; one that had an id already is waited for here, and
//! what it wrote is then removed with the rest.

use crate::store;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::{PgPool, Row};

use crate::erasure::{IdKind, Identifier};

/// The longest `forget` waits for write transactions older than its erasures.
pub const WAIT_FOR_WRITERS: Duration = Duration::from_secs(60);

/// Rows per table, in the order they are removed.
pub type Counts = BTreeMap<&'static str, u64>;

/// Which identifiers to look for, by kind, normalised.
struct Wanted {
    phones: Vec<String>,
    emails: Vec<String>,
    sids: Vec<String>,
}

impl Wanted {
    fn of(ids: &[Identifier]) -> Wanted {
        let of = |kind| {
            (ids.iter())
                .filter(|i| i.kind == kind)
                .map(|i| i.normalised().to_owned())
                .collect()
        };
        Wanted {
            phones: of(IdKind::Phone),
            emails: of(IdKind::Email),
            sids: of(IdKind::CallSid),
        }
    }
}

/// The calls that go: `$1` phone digits, `$2` e-mail addresses, `$3` callSids.
const CALLS: &str = "(EXISTS (SELECT FROM unnest($1::text[]) AS p(d)
                              WHERE callhippo_holds_phone(c.from_number, p.d)
                                 OR callhippo_holds_phone(c.to_number, p.d))
                     OR lower(c.agent_email) = ANY ($2) OR lower(c.admin_email) = ANY ($2)
                     OR c.call_sid = ANY ($3))";

/// Each table's rows that go, with the parameters of [`CALLS`]; in the order they are
/// removed (calls last: the others find theirs through them).
fn tables() -> [(&'static str, String); 5] {
    let calls = |alias: &str| format!("(SELECT c.call_sid FROM calls c WHERE {CALLS}) AS {alias}");
    let phone_in = |cols: &[&str]| {
        let tests: Vec<String> = (cols.iter())
            .map(|c| format!("callhippo_holds_phone({c}, p.d)"))
            .collect();
        format!(
            "EXISTS (SELECT FROM unnest($1::text[]) AS p(d) WHERE {})",
            tests.join(" OR ")
        )
    };
    let raw_texts = [
        "r.payload::text",
        "r.body",
        "encode(r.body_bytes, 'escape')",
        "r.error",
    ];
    let holds_in = |function: &str, param: &str| {
        let tests: Vec<String> = (raw_texts.iter())
            .map(|t| format!("{function}({t}, w.v)"))
            .collect();
        format!(
            "EXISTS (SELECT FROM unnest({param}::text[]) AS w(v) WHERE {})",
            tests.join(" OR ")
        )
    };
    [
        (
            "call_tags",
            format!(
                "FROM call_tags t WHERE t.call_sid IN (SELECT call_sid FROM {})",
                calls("gone")
            ),
        ),
        (
            "call_status",
            format!(
                "FROM call_status s
                  WHERE {} OR lower(s.agent_email) = ANY ($2) OR s.call_sid = ANY ($3)
                     OR s.call_sid IN (SELECT call_sid FROM {})",
                phone_in(&["s.from_number", "s.to_number"]),
                calls("gone")
            ),
        ),
        (
            "sms",
            format!(
                "FROM sms m
                  WHERE {} OR lower(m.agent_email) = ANY ($2) OR lower(m.admin_email) = ANY ($2)",
                phone_in(&["m.from_number", "m.to_number"])
            ),
        ),
        (
            "raw_events",
            format!(
                "FROM raw_events r
                  WHERE {} OR {} OR {}
                     OR (r.payload ->> 'callSid') IN (SELECT call_sid FROM {})",
                holds_in("callhippo_holds_phone", "$1"),
                holds_in("callhippo_holds_email", "$2"),
                holds_in("callhippo_holds_token", "$3"),
                calls("gone")
            ),
        ),
        ("calls", format!("FROM calls c WHERE {CALLS}")),
    ]
}

/// Text columns of rows that stay (another person's call whose note gives the number):
/// emptied where they hold an identifier. `(label, table, column, the column as text)`.
const REDACTED: [(&str, &str, &str, &str); 8] = [
    ("calls.note", "calls", "note", "note"),
    ("calls.reason", "calls", "reason", "reason"),
    (
        "calls.status_reason",
        "calls",
        "status_reason",
        "status_reason",
    ),
    (
        "calls.recording_url",
        "calls",
        "recording_url",
        "recording_url",
    ),
    (
        "calls.dispositions",
        "calls",
        "dispositions",
        "array_to_string(dispositions, ' ')",
    ),
    (
        "calls.parse_warnings",
        "calls",
        "parse_warnings",
        "parse_warnings::text",
    ),
    ("sms.content", "sms", "content", "content"),
    (
        "sms.parse_warnings",
        "sms",
        "parse_warnings",
        "parse_warnings::text",
    ),
];

/// Whether the text `t` holds any of the identifiers (parameters as for [`CALLS`]).
fn holds_any(t: &str) -> String {
    format!(
        "(EXISTS (SELECT FROM unnest($1::text[]) AS p(d) WHERE callhippo_holds_phone({t}, p.d))
          OR EXISTS (SELECT FROM unnest($2::text[]) AS w(v) WHERE callhippo_holds_email({t}, w.v))
          OR EXISTS (SELECT FROM unnest($3::text[]) AS w(v) WHERE callhippo_holds_token({t}, w.v)))"
    )
}

/// Whether a label of [`Counts`] names values emptied (`calls.note`) rather than a table.
pub fn is_emptied_column(label: &str) -> bool {
    label.contains('.')
}

/// The statements of a run, in order, each with its label: the values emptied first, then
/// the rows removed table by table. Counting, each is the `count(*)` of what it would change.
fn statements(counting: bool) -> Vec<(&'static str, String)> {
    let emptied = REDACTED.iter().map(|(label, table, column, text)| {
        let sql = match counting {
            true => format!("SELECT count(*) FROM {table} WHERE {}", holds_any(text)),
            false => format!(
                "UPDATE {table} SET {column} = NULL WHERE {}",
                holds_any(text)
            ),
        };
        (*label, sql)
    });
    let removed = tables().into_iter().map(|(table, rows)| {
        let verb = if counting {
            "SELECT count(*)"
        } else {
            "DELETE"
        };
        (table, format!("{verb} {rows}"))
    });
    emptied.chain(removed).collect()
}

/// Runs the statements of a run (see [`statements`]), one transaction each; what each
/// changed, or would change.
async fn run(pool: &PgPool, ids: &[Identifier], counting: bool) -> Result<Counts, sqlx::Error> {
    let wanted = Wanted::of(ids);
    let mut counts = Counts::new();
    for (label, sql) in statements(counting) {
        let mut tx = unhurried(pool).await?;
        let query = store::query(&sql)
            .bind(&wanted.phones)
            .bind(&wanted.emails)
            .bind(&wanted.sids);
        let n = match counting {
            true => query.fetch_one(&mut *tx).await?.try_get::<i64, _>(0)? as u64,
            false => query.execute(&mut *tx).await?.rows_affected(),
        };
        tx.commit().await?;
        counts.insert(label, n);
    }
    Ok(counts)
}

/// Counts, per table, the rows that hold any of `ids` (and, per column, the values of rows
/// that stay that would be emptied); changes nothing.
pub async fn count(pool: &PgPool, ids: &[Identifier]) -> Result<Counts, sqlx::Error> {
    run(pool, ids, true).await
}

/// Records `ids` in `erasures` (from now on no writer stores an event about them), waits for
/// the writers that might not know yet, then removes every row that holds them, one
/// transaction per table, and records the counts with the erasures.
pub async fn erase(
    pool: &PgPool,
    ids: &[Identifier],
    wait_at_most: Duration,
) -> anyhow::Result<Counts> {
    let erasure_ids = record(pool, ids).await?;
    wait_for_older_writers(pool, wait_at_most).await?;
    let counts = run(pool, ids, false).await?;
    let recorded: Counts = (counts.iter())
        .filter(|(t, n)| !is_emptied_column(t) || **n > 0)
        .map(|(t, n)| (*t, *n))
        .collect();
    let mut work = store::Work::of(pool).await?;
    store::query("UPDATE erasures SET rows = $2 WHERE id = ANY ($1)")
        .bind(&erasure_ids)
        .bind(sqlx::types::Json(&recorded))
        .execute(&mut *work)
        .await?;
    work.done().await?;
    Ok(counts)
}

/// A transaction without the commands' statement timeout: finding an identifier in every
/// raw event reads the whole archive.
async fn unhurried(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = store::pooler::begin(pool).await?;
    store::query("SELECT set_config('statement_timeout', '0', true), set_config('enable_seqscan', 'on', true)")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Inserts the erasures (an identifier erased before is found again, and its time moves):
/// under a lock, so that their ids commit in order, which is what writers compare.
async fn record(pool: &PgPool, ids: &[Identifier]) -> Result<Vec<i64>, sqlx::Error> {
    let kinds: Vec<&str> = ids.iter().map(|i| i.kind.as_str()).collect();
    let digests: Vec<Vec<u8>> = ids.iter().map(|i| i.digest().to_vec()).collect();
    let mut tx = store::pooler::begin(pool).await?;
    store::query("LOCK TABLE erasures IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let erasure_ids = store::query_scalar(
        "INSERT INTO erasures AS e (kind, identifier_sha256)
         SELECT * FROM unnest($1::text[], $2::bytea[])
         ON CONFLICT (kind, identifier_sha256) DO UPDATE SET requested_at = now()
         RETURNING e.id",
    )
    .bind(&kinds)
    .bind(&digests)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(erasure_ids)
}

/// Waits until every transaction that had an id when the erasures committed has ended.
async fn wait_for_older_writers(pool: &PgPool, at_most: Duration) -> anyhow::Result<()> {
    let mut work = store::Work::of(pool).await?;
    let snapshot: String = store::query_scalar("SELECT pg_current_snapshot()::text")
        .fetch_one(&mut *work)
        .await?;
    work.done().await?;
    let started = Instant::now();
    loop {
        // Transactions of other databases on the server cannot write here: not waited for.
        let mut work = store::Work::of(pool).await?;
        let running: Vec<i32> = store::query_scalar(
            "SELECT coalesce(a.pid, 0)
               FROM pg_snapshot_xip($1::pg_snapshot) AS x(id)
               LEFT JOIN pg_stat_activity a
                    ON a.backend_xid::text::bigint = x.id::text::bigint % 4294967296
              WHERE pg_xact_status(x.id) = 'in progress'
                AND (a.pid IS NULL OR a.datname = current_database())",
        )
        .bind(&snapshot)
        .fetch_all(&mut *work)
        .await?;
        work.done().await?;
        if running.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= at_most {
            anyhow::bail!(
                "{} transaction(s) that began before the erasure still run after {} s (backend pids {:?}, see pg_stat_activity): \
                 the erasure is recorded, so run forget again once they end to remove what they wrote",
                running.len(),
                at_most.as_secs(),
                running
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
