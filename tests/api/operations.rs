//! Running it like a product: replay, retention, healthcheck, the container's start-up path.

use std::process::{Command, Stdio};
use std::time::Duration;

use callhippo_ingest::store::retention;
use serde_json::{json, Value};

use crate::helpers::*;

fn replay(db: &TestDb, args: &[&str]) -> String {
    let out = bin()
        .arg("replay")
        .args(args)
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("replay: "), "a progress line: {stderr}");
    stdout.trim().to_owned()
}

/// Everything the normalized tables say, without surrogate ids.
async fn snapshot(app: &TestApp) -> Vec<Value> {
    let mut all = app
        .rows("SELECT to_jsonb(h) AS r FROM call_history h ORDER BY call_sid")
        .await;
    all.extend(
        app.rows("SELECT to_jsonb(s) - 'id' AS r FROM sms s ORDER BY sms_key")
            .await,
    );
    all.extend(app.rows("SELECT to_jsonb(s) - 'id' AS r FROM call_status s ORDER BY call_sid, status, occurred_at").await);
    all.extend(app.rows("SELECT name FROM tags ORDER BY name").await);
    all
}

async fn empty_normalized_tables(app: &TestApp) {
    sqlx::query("TRUNCATE calls, call_tags, tags, sms, call_status")
        .execute(&app.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn replay_rebuilds_emptied_tables_to_the_same_rows() {
    let app = spawn_app().await;
    let bodies = [
        CALL.to_owned(),
        NEWER_CALL.to_owned(),
        with(CALL, "callSid", json!("CA-warn")).replace("\"0.040\"", "\"N/A\""),
        with(CALL, "note", json!("edited later")), // an update of the first call
        SMS.to_owned(),
        with(SMS, "content", json!("another")),
        STATUS.to_owned(),
        with(STATUS, "status", json!("ringing")),
        CALL.to_owned(), // back to the first version: the newest delivery wins
        without(CALL, "callSid"),
        "not json".to_owned(),
        with(CALL, "to", json!("+11111111111")),
        r#"{"unknown":"kind"}"#.to_owned(),
    ];
    for b in &bodies {
        let (code, _) = app.post(b.clone()).await;
        assert!(code < 500);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let before = snapshot(&app).await;
    assert_eq!(
        app.row("SELECT note FROM calls WHERE call_sid = 'CA5fcabcd366fac3fe8c00c111f135e123'")
            .await["note"],
        "Call notes goes here"
    );

    empty_normalized_tables(&app).await;
    assert_eq!(app.count("calls").await, 0);
    let summary = replay(&app.db, &[]);
    let raw = app.count("raw_events").await;
    assert_eq!(raw, 12, "identical bytes are one raw row");
    assert_eq!(
        summary,
        format!("replay: read {raw}, written 8, unchanged 2, still rejected 2")
    );
    assert_eq!(snapshot(&app).await, before, "the same rows again");

    // A second replay changes nothing: the edit, older than the row's last change, is left
    // alone, and everything else reads the same.
    assert_eq!(
        replay(&app.db, &[]),
        format!("replay: read {raw}, written 0, unchanged 10, still rejected 2")
    );
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test]
async fn replay_applies_a_better_reader_and_filters() {
    let app = spawn_app().await;
    assert_eq!(app.post(CALL).await.1["status"], "stored");
    // What an older reader left behind: a warning the current reader no longer has, and a
    // call it archived as unknown.
    sqlx::query(
        "UPDATE calls SET call_charge = NULL, parse_warnings = '{\"callCharge\": \"old reader\"}'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO raw_events (kind, body_sha256, payload, received_at, last_received_at)
         VALUES ('unknown', '\\x01', $1, now() - interval '10 days', now() - interval '10 days')",
    )
    .bind(serde_json::from_str::<Value>(&with(CALL, "callSid", json!("CA-was-unknown"))).unwrap())
    .execute(&app.pool)
    .await
    .unwrap();

    // --kind unknown: only the archived one is read, and becomes a call.
    assert_eq!(
        replay(&app.db, &["--kind", "unknown"]),
        "replay: read 1, written 1, unchanged 0, still rejected 0"
    );
    assert_eq!(
        app.row("SELECT kind FROM raw_events WHERE body_sha256 = '\\x01'")
            .await,
        json!({"kind": "call"})
    );
    assert_eq!(
        app.count("calls WHERE call_sid = 'CA-was-unknown'").await,
        1
    );

    // --since: the ten-day-old one is left out; the warning is resolved.
    let since = (chrono::Utc::now() - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    assert_eq!(
        replay(&app.db, &["--since", &since]),
        "replay: read 1, written 1, unchanged 0, still rejected 0"
    );
    assert_eq!(
        app.row("SELECT call_charge::text AS c, parse_warnings FROM calls WHERE call_sid = 'CA5fcabcd366fac3fe8c00c111f135e123'").await,
        json!({"c": "0.040", "parse_warnings": null})
    );

    let out = bin()
        .args(["replay", "--kind", "fax"])
        .env("DATABASE_URL", &app.db.url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: --kind"));
}

#[tokio::test]
async fn retention_removes_old_raw_events_only() {
    let app = spawn_app().await;
    for i in 0..7 {
        assert_eq!(
            app.post(with(CALL, "callSid", json!(format!("CA-ret-{i}"))))
                .await
                .0,
            200
        );
    }
    sqlx::query("UPDATE raw_events SET last_received_at = now() - interval '40 days', received_at = now() - interval '40 days' WHERE payload->>'callSid' IN ('CA-ret-0','CA-ret-1','CA-ret-2','CA-ret-3','CA-ret-4')")
        .execute(&app.pool)
        .await
        .unwrap();
    let removed = retention::purge(&app.pool, 30, 2, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(removed, 5, "in batches of 2");
    assert_eq!(app.count("raw_events").await, 2);
    assert_eq!(app.count("calls").await, 7, "normalized tables untouched");
    assert_eq!(
        retention::purge(&app.pool, 30, 2, Duration::ZERO)
            .await
            .unwrap(),
        0
    );
}

/// The container runs `migrate`, then `serve`, and checks itself with `healthcheck`: the same
/// commands, natively.
#[tokio::test]
async fn container_start_up_path_runs_natively() {
    let db = TestDb::new().await;
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let spool = std::env::temp_dir().join(format!("chi-container-{}", db.name));
    let env = |c: &mut Command| {
        c.env("DATABASE_URL", &db.url)
            .env("LISTEN_ADDR", &listen)
            .env("WEBHOOK_TOKEN", "change-me")
            .env("SPOOL_DIR", &spool)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info");
    };
    let mut migrate = bin();
    env(&mut migrate);
    assert!(migrate.arg("migrate").status().unwrap().success());

    // Not serving yet: the healthcheck fails.
    let mut hc = bin();
    env(&mut hc);
    let out = hc.arg("healthcheck").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut serve = bin();
    env(&mut serve);
    let mut child = serve.arg("serve").stderr(Stdio::piped()).spawn().unwrap();
    let mut healthy = false;
    for _ in 0..100 {
        let mut hc = bin();
        env(&mut hc);
        if hc.arg("healthcheck").output().unwrap().status.success() {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "healthcheck passes once serve is up");
    let client = reqwest::Client::new();
    let (code, _) = answer(
        client
            .post(format!(
                "http://127.0.0.1:{port}/webhooks/callhippo?token=change-me"
            ))
            .body(SMS)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 200);

    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let out = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        (status, err)
    })
    .await
    .unwrap();
    assert!(out.0.success());
    // JSON logs, one object per line, and no personal data at info.
    let lines: Vec<Value> = out
        .1
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "webhook" && l["kind"] == "sms" && l["outcome"] == "stored"),
        "{lines:?}"
    );
    assert!(
        !out.1.contains("+9323243432") && !out.1.contains("SMS text goes here"),
        "no payload contents in the logs"
    );
    let _ = std::fs::remove_dir_all(spool);
}
