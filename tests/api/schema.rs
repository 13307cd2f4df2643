//! Migrations, the data dictionary and the read-only role.

use callhippo_ingest::startup::migrate_once;
use callhippo_ingest::store::{migrate, DbSettings};
use sqlx::{Connection, PgConnection};

use crate::helpers::*;

fn settings(url: &str) -> DbSettings {
    DbSettings {
        url: url.to_owned(),
        pool_size: 2,
        timeout: std::time::Duration::from_secs(30),
        pooler: Default::default(),
    }
}

#[tokio::test]
async fn concurrent_migrations_apply_once_and_rerunning_changes_nothing() {
    let db = TestDb::new().await;
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let s = settings(&db.url);
            tokio::spawn(async move { migrate_once(&s).await })
        })
        .collect();
    for r in runs {
        r.await
            .unwrap()
            .expect("every concurrent migration succeeds");
    }
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    assert_eq!(
        migrate::current_version(&mut conn).await.unwrap(),
        Some(migrate::latest_version())
    );
    let history: i64 = sqlx::query_scalar("SELECT count(*) FROM refinery_schema_history")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(history, migrate::latest_version() as i64);
    assert!(
        migrate::run(&mut conn).await.unwrap().is_empty(),
        "nothing left to apply"
    );
}

#[tokio::test]
async fn every_table_view_and_column_has_a_comment() {
    let app = spawn_app().await;
    let missing = app
        .rows(
            "SELECT c.relname, a.attname
               FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()
               LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
              WHERE c.relkind IN ('r', 'v', 'p')
                AND c.relname <> 'refinery_schema_history'
                AND (obj_description(c.oid, 'pg_class') IS NULL
                     OR (a.attname IS NOT NULL AND col_description(c.oid, a.attnum) IS NULL))",
        )
        .await;
    assert!(missing.is_empty(), "without a comment: {missing:?}");
    let objects = app.count("pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind IN ('r','v')").await;
    assert!(objects >= 11, "tables and views: {objects}");
}

#[tokio::test]
async fn reader_role_reads_everything_and_writes_nothing() {
    let app = spawn_app().await;
    assert_eq!(app.post(CALL).await.0, 200);
    let mut conn = PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::query("SET ROLE callhippo_reader")
        .execute(&mut conn)
        .await
        .unwrap();
    for relation in [
        "raw_events",
        "calls",
        "tags",
        "call_tags",
        "sms",
        "call_status",
        "call_history",
        "call_daily_stats",
        "agent_daily_stats",
        "sms_daily_stats",
        "agents",
    ] {
        sqlx::query(&format!("SELECT * FROM {relation} LIMIT 1"))
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("the reader cannot read {relation}: {e}"));
    }
    for write in [
        "INSERT INTO tags (name) VALUES ('x')",
        "UPDATE calls SET note = 'x'",
        "DELETE FROM raw_events",
        "CREATE TABLE intruder (id int)",
    ] {
        let e = sqlx::query(write)
            .execute(&mut conn)
            .await
            .expect_err(write);
        assert!(e.to_string().contains("permission denied"), "{write}: {e}");
    }
}

/// A new database migrated to V2, and a connection to it.
async fn at_v2() -> (TestDb, PgConnection) {
    let db = TestDb::new().await;
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    migrate::run_until(&mut conn, Some(2)).await.unwrap();
    assert_eq!(migrate::current_version(&mut conn).await.unwrap(), Some(2));
    (db, conn)
}

/// A database at V2 holding a call with tags and a status event (and, with `own_view`, a
/// view of the user's own on `calls.call_sid`), then migrated to the latest version.
async fn upgraded_from_v2(own_view: bool) -> (TestDb, PgConnection) {
    let (db, mut conn) = at_v2().await;
    let mut setup = vec![
        "INSERT INTO calls (call_sid, from_number, agent_email, status, started_at, received_at, updated_at)
         VALUES ('CA-old', '+14155550100', 'asha@example.com', 'completed', now(), now(), now())",
        "INSERT INTO tags (name) VALUES ('VIP'), ('Sales')",
        "INSERT INTO call_tags SELECT 'CA-old', id FROM tags",
        "INSERT INTO call_status (call_sid, status, occurred_at, received_at, updated_at)
         VALUES ('CA-old', 'answered', now(), now(), now())",
        // A privilege of the operator's own on a view (the reader's comes from V2).
        "GRANT SELECT ON agents TO PUBLIC",
    ];
    if own_view {
        setup.push("CREATE VIEW my_calls AS SELECT call_sid, from_number FROM calls");
    }
    for sql in setup {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    let applied = migrate::run(&mut conn).await.unwrap();
    assert!(!applied.is_empty(), "something was left to apply");
    assert_eq!(
        migrate::current_version(&mut conn).await.unwrap(),
        Some(migrate::latest_version())
    );
    // The statistics views read summaries, made by the first rollup.
    rollup_in(&db.pool().await, chrono_tz::UTC).await;
    (db, conn)
}

async fn collation(conn: &mut PgConnection, table: &str, column: &str) -> String {
    sqlx::query_scalar(
        "SELECT c.collname::text FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation
          WHERE a.attrelid = $1::regclass AND a.attname = $2",
    )
    .bind(table)
    .bind(column)
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}

/// What the views show of the call stored before the upgrade, read as the reader role:
/// its tags, its last status and the agent's number of calls.
async fn old_call_as_reader(conn: &mut PgConnection) -> (Vec<String>, Option<String>, i64) {
    sqlx::query("SET ROLE callhippo_reader")
        .execute(&mut *conn)
        .await
        .unwrap();
    let (tags, last_status): (Vec<String>, Option<String>) =
        sqlx::query_as("SELECT tags, last_status FROM call_history WHERE call_sid = 'CA-old'")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    let calls: i64 =
        sqlx::query_scalar("SELECT calls FROM agents WHERE agent_email = 'asha@example.com'")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    sqlx::query("RESET ROLE").execute(&mut *conn).await.unwrap();
    (tags, last_status, calls)
}

#[tokio::test]
async fn upgrading_from_v2_makes_keys_bytewise_and_keeps_rows_views_and_grants() {
    let (_db, mut conn) = upgraded_from_v2(false).await;
    for (table, column) in [
        ("calls", "call_sid"),
        ("calls", "from_number"),
        ("calls", "to_number"),
        ("calls", "agent_email"),
        ("call_tags", "call_sid"),
        ("call_status", "call_sid"),
        ("call_status", "status"),
        ("sms", "sms_key"),
    ] {
        assert_eq!(
            collation(&mut conn, table, column).await,
            "C",
            "{table}.{column}"
        );
    }
    assert_eq!(collation(&mut conn, "calls", "note").await, "default");
    // The views made again have their privileges back, and the altered columns statistics.
    let (public_select, stats): (bool, i64) = sqlx::query_as(
        "SELECT has_table_privilege('public', 'agents', 'SELECT'),
                (SELECT count(*) FROM pg_stats
                  WHERE tablename = 'calls' AND attname IN ('call_sid', 'agent_email'))",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((public_select, stats), (true, 2));
    assert_eq!(
        old_call_as_reader(&mut conn).await,
        (
            vec!["Sales".into(), "VIP".into()],
            Some("answered".into()),
            1
        )
    );
    // The rebuilt primary key still refuses a second row for the call.
    let e = sqlx::query(
        "INSERT INTO calls (call_sid, received_at, updated_at) VALUES ('CA-old', now(), now())",
    )
    .execute(&mut conn)
    .await
    .expect_err("a second row for the call");
    assert!(e.to_string().contains("calls_pkey"), "{e}");
}

#[tokio::test]
async fn upgrading_from_v2_with_a_view_of_ones_own_on_the_keys_still_succeeds() {
    let (_db, mut conn) = upgraded_from_v2(true).await;
    // The keys keep their collation (the user's view depends on them); nothing is lost.
    assert_eq!(collation(&mut conn, "calls", "call_sid").await, "default");
    assert_eq!(
        old_call_as_reader(&mut conn).await,
        (
            vec!["Sales".into(), "VIP".into()],
            Some("answered".into()),
            1
        )
    );
    let mine: i64 = sqlx::query_scalar("SELECT count(*) FROM my_calls")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mine, 1);
}

/// A connection to `url` whose statements time out after `ms` milliseconds, as the service's.
async fn connect_with_timeout(url: &str, ms: u64) -> PgConnection {
    use sqlx::ConnectOptions;
    let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    opts.options([("statement_timeout", ms.to_string())])
        .connect()
        .await
        .unwrap()
}

/// A V2 database with `calls` calls (each with one tag link).
async fn v2_with_calls(calls: i64) -> TestDb {
    let (db, mut conn) = at_v2().await;
    sqlx::query(
        "INSERT INTO calls (call_sid, from_number, to_number, agent_email, started_at, received_at, updated_at)
         SELECT 'CA' || md5(i::text), '+1415' || i, '+44' || i, 'agent' || (i % 50) || '@example.com',
                now(), now(), now()
           FROM generate_series(1, $1) i",
    )
    .bind(calls)
    .execute(&mut conn)
    .await
    .unwrap();
    for sql in [
        "INSERT INTO tags (name) VALUES ('VIP')",
        "INSERT INTO call_tags SELECT call_sid, 1 FROM calls",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    db
}

/// The service connects with a statement timeout of a few seconds; rebuilding the indexes
/// of big tables takes longer. Migrations run without it.
#[tokio::test]
async fn a_migration_longer_than_the_statement_timeout_completes() {
    let db = v2_with_calls(100_000).await;
    let mut conn = connect_with_timeout(&db.url, 50).await;
    let applied = migrate::run(&mut conn)
        .await
        .expect("migrated despite the timeout");
    assert!(!applied.is_empty());
    assert_eq!(collation(&mut conn, "calls", "call_sid").await, "C");
    // The session's timeout is back for what follows.
    let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(timeout, "50ms");
}

/// A long query holding a table makes the migration give up within the statement timeout
/// (and be retried later) instead of queueing an exclusive lock that blocks everyone.
#[tokio::test]
async fn a_migration_waits_for_other_sessions_locks_no_longer_than_the_timeout() {
    let db = v2_with_calls(10).await;
    let mut reader = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut reader).await.unwrap();
    sqlx::query("SELECT count(*) FROM calls")
        .execute(&mut reader)
        .await
        .unwrap();
    let mut conn = connect_with_timeout(&db.url, 300).await;
    let started = std::time::Instant::now();
    let e = migrate::run(&mut conn)
        .await
        .expect_err("the lock on calls is held");
    assert!(format!("{e:#}").contains("lock timeout"), "{e:#}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(migrate::current_version(&mut conn).await.unwrap(), Some(2));
    sqlx::query("COMMIT").execute(&mut reader).await.unwrap();
    migrate::run(&mut conn)
        .await
        .expect("migrated once the lock is gone");
    assert_eq!(collation(&mut conn, "calls", "call_sid").await, "C");
}
