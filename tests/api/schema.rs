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
