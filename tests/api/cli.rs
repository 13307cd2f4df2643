//! The binary's command line: settings errors are one line naming the setting.

use std::process::Command;

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
    let pool = db.pool().await;
    let v: Option<i32> = sqlx::query_scalar("SELECT max(version) FROM refinery_schema_history")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(v, Some(callhippo_ingest::store::migrate::latest_version()));
    pool.close().await;
}
