//! The binary's command line: settings errors are one line naming the setting, the database
//! named in `DATABASE_URL` is created when missing, logs are plain text for files.

use std::process::Command;

use serde_json::Value;
use sqlx::Connection;

use crate::helpers::*;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_callhippo-ingest"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("WEBHOOK_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn assert_schema_is_current(db: &TestDb) {
    let pool = db.pool().await;
    let v: Option<i32> = sqlx::query_scalar("SELECT max(version) FROM refinery_schema_history")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(v, Some(callhippo_ingest::store::migrate::latest_version()));
    pool.close().await;
}

#[test]
fn missing_or_bad_settings_stop_with_one_line_naming_them() {
    for (args, env, setting) in [
        (vec!["migrate"], vec![], "DATABASE_URL"),
        (vec!["serve"], vec![], "DATABASE_URL"),
        (
            vec!["serve"],
            vec![("DATABASE_URL", "mysql://nope")],
            "DATABASE_URL",
        ),
        (
            vec!["serve"],
            vec![
                ("DATABASE_URL", "postgres://u@h/d"),
                ("MAX_BODY_BYTES", "big"),
            ],
            "MAX_BODY_BYTES",
        ),
        (
            vec!["serve"],
            vec![("DATABASE_URL", "postgres://u@h/d"), ("LISTEN_ADDR", "x")],
            "LISTEN_ADDR",
        ),
        (
            vec!["serve"],
            vec![("DATABASE_URL", "postgres://u@h/d"), ("LOG_FORMAT", "xml")],
            "LOG_FORMAT",
        ),
        (
            vec!["serve"],
            vec![("DATABASE_URL", "postgres://u@h/d"), ("RUST_LOG", "[[[")],
            "RUST_LOG",
        ),
    ] {
        let (code, stderr) = run(&args, &env);
        assert_eq!(code, 2, "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with(&format!("error: {setting}")), "{stderr}");
    }
}

#[tokio::test]
async fn migrate_command_applies_and_is_idempotent() {
    let db = TestDb::new().await;
    for _ in 0..2 {
        let (code, stderr) = run(
            &["migrate"],
            &[("DATABASE_URL", &db.url), ("RUST_LOG", "warn")],
        );
        assert_eq!(code, 0, "{stderr}");
    }
    assert_schema_is_current(&db).await;
}

#[tokio::test]
async fn migrate_creates_the_database_when_it_is_missing() {
    let db = TestDb::not_created();
    let (code, stderr) = run(
        &["migrate"],
        &[("DATABASE_URL", &db.url), ("RUST_LOG", "info")],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("created the database named in DATABASE_URL"),
        "{stderr}"
    );
    assert_schema_is_current(&db).await;
}

/// What waiting will not cure is a setting: exit 2, one line naming the server, the
/// database and the user, the server's words once.
#[tokio::test]
async fn a_database_the_role_may_not_create_or_reach_is_one_line_naming_it() {
    let db = TestDb::not_created();
    let role = format!("chi_weak_{}", &db.name[9..21]);
    let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::query(&format!("CREATE ROLE {role} LOGIN NOCREATEDB"))
        .execute(&mut admin)
        .await
        .unwrap();
    let as_role = db.url.replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(
        as_role, db.url,
        "the test's DATABASE_URL names the user postgres"
    );
    let (code, stderr) = run(&["migrate"], &[("DATABASE_URL", &as_role)]);
    sqlx::query(&format!("DROP ROLE {role}"))
        .execute(&mut admin)
        .await
        .unwrap();
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    for part in [
        "DATABASE_URL".to_owned(),
        format!("database \"{}\"", db.name),
        format!("as user \"{role}\""),
        "does not exist".to_owned(),
        "CREATEDB".to_owned(),
    ] {
        assert!(stderr.contains(&part), "{part:?} in {stderr}");
    }

    // A user the server does not know.
    let nobody = db.url.replacen("postgres@", "chi_nobody@", 1);
    let (code, stderr) = run(&["migrate"], &[("DATABASE_URL", &nobody)]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("as user \"chi_nobody\""), "{stderr}");
    assert_eq!(
        stderr.matches("does not exist").count(),
        1,
        "the server's words once: {stderr}"
    );

    // Nothing listens: not a setting (it may come back), exit 1, still one line.
    let port = free_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/callhippo");
    let (code, stderr) = run(&["migrate"], &[("DATABASE_URL", &url)]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(&format!("database \"callhippo\" at 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_unusable_spool_dir_or_listen_addr_is_a_setting() {
    let db = TestDb::new().await;
    let file = std::env::temp_dir().join(format!("chi-spool-file-{}", db.name));
    std::fs::write(&file, b"not a folder").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let spool = std::env::temp_dir().join(format!("chi-spool-{}", db.name));
    for (spool_dir, listen, expected) in [
        (
            file.to_str().unwrap(),
            "127.0.0.1:0",
            format!("SPOOL_DIR {} is a file, not a folder", file.display()),
        ),
        (
            spool.to_str().unwrap(),
            taken_addr.as_str(),
            format!("LISTEN_ADDR {taken_addr} is in use by another program"),
        ),
    ] {
        let (code, stderr) = run(
            &["serve"],
            &[
                ("DATABASE_URL", &db.url),
                ("SPOOL_DIR", spool_dir),
                ("LISTEN_ADDR", listen),
                ("RUST_LOG", "error"),
            ],
        );
        assert_eq!(code, 2, "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with(&format!("error: {expected}")),
            "{stderr}"
        );
    }
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_dir_all(spool);
}

/// JSON lines carry no paths into the build machine's dependency sources, and the migration
/// library's chatter waits for a debug filter.
#[tokio::test]
async fn json_logs_are_one_object_per_line_without_dependency_paths() {
    let db = TestDb::new().await;
    for (filter, chatty) in [("info", false), ("debug", true)] {
        let (code, stderr) = run(
            &["migrate"],
            &[
                ("DATABASE_URL", &db.url),
                ("LOG_FORMAT", "json"),
                ("RUST_LOG", filter),
            ],
        );
        assert_eq!(code, 0, "{stderr}");
        let lines: Vec<Value> = stderr
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert!(lines
            .iter()
            .any(|l| l["message"] == "schema is current" || l["message"] == "migrations applied"));
        for text in stderr.lines() {
            let level_follows = text
                .split_once("\",")
                .is_some_and(|(_, r)| r.starts_with("\"level\":"));
            assert!(
                text.starts_with("{\"timestamp\":\"") && level_follows,
                "{text}"
            );
        }
        for line in &lines {
            let keys: Vec<&String> = line.as_object().unwrap().keys().collect();
            assert!(
                !keys.iter().any(|k| k.starts_with("log.")),
                "no log.* fields: {line}"
            );
            assert!(!line.to_string().contains(".cargo/registry"), "{line}");
        }
        let from_refinery = lines
            .iter()
            .filter(|l| {
                l["target"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("refinery"))
            })
            .count();
        assert_eq!(from_refinery > 0, chatty, "{filter}: {stderr}");
    }
}
