//! Running it like a product: replay, retention, healthcheck, the container's start-up path.

use std::process::{Command, Stdio};
use std::time::Duration;

use callhippo_ingest::store::retention;
use serde_json::{json, Value};

use crate::helpers::*;

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

/// Every answered request has a log line, 404 and 405 included; refused ones are bounded (a
/// flood adds a few lines a second and a count); a well-known token is warned about; a log
/// file holds plain text.
#[tokio::test]
async fn request_log_lines_are_bounded_for_refusals_and_plain_in_a_file() {
    let db = TestDb::new().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let spool = std::env::temp_dir().join(format!("chi-logs-{}", db.name));
    let log = spool.with_extension("log");
    let file = std::fs::File::create(&log).unwrap();
    let server = Served(
        serve_command(&db.url, port, &spool)
            .env("RUST_LOG", "info")
            .env("WEBHOOK_TOKEN", "change-me")
            .stderr(file)
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;

    let webhook = format!("{base}/webhooks/callhippo");
    let (code, _) = send(client.get(format!("{base}/no/such/path?token=change-me"))).await;
    assert_eq!(code, 404);
    let (code, _) = send(client.put(&webhook)).await;
    assert_eq!(code, 405);
    let (code, _) = send(client.get(&webhook)).await;
    assert_eq!(code, 200);
    let (code, _) = send(client.post(format!("{webhook}?token=change-me")).body(CALL)).await;
    assert_eq!(code, 200);
    let flood = 2_000;
    for _ in 0..flood {
        let (code, _) = send(client.post(format!("{webhook}?token=wrong")).body("{}")).await;
        assert_eq!(code, 401);
    }
    // What the last window left out is counted by the next line that goes through.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (code, _) = send(client.post(format!("{webhook}?token=wrong")).body("{}")).await;
    assert_eq!(code, 401);
    assert!(sigterm(server).await.success());

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains('\u{1b}'),
        "no escape codes in a file: {text:?}"
    );
    assert!(
        text.contains("WEBHOOK_TOKEN is a token printed in this project's documentation"),
        "{text}"
    );
    let refused: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" refused method="))
        .collect();
    assert!(
        refused
            .iter()
            .any(|l| l.contains("code=404") && l.contains("path=\"/no/such/path\"")),
        "{text}"
    );
    assert!(
        !text.contains("token=change-me"),
        "no query strings in logs"
    );
    assert!(refused.iter().any(|l| l.contains("code=405")), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains(" webhook ") && l.contains("outcome=\"stored\"")),
        "{text}"
    );
    assert!(
        refused.len() < 100,
        "{} lines for {flood} refused requests",
        refused.len()
    );
    let suppressed: u64 = text
        .lines()
        .filter(|l| l.contains("requests without a token not logged"))
        .map(|l| {
            let count = l.split("count=").nth(1).unwrap();
            count
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    let logged_401 = refused.iter().filter(|l| l.contains("code=401")).count() as u64;
    assert_eq!(
        logged_401 + suppressed,
        flood + 1,
        "{logged_401} logged + {suppressed} counted"
    );
    let lat = text
        .lines()
        .find_map(|l| l.split("latency_ms=").nth(1))
        .unwrap();
    let lat = lat.split_whitespace().next().unwrap();
    assert!(
        lat.split('.').nth(1).is_none_or(|d| d.len() <= 2),
        "latency rounded: {lat}"
    );
    let _ = std::fs::remove_dir_all(&spool);
    let _ = std::fs::remove_file(&log);
}

/// Every token the documentation prints is one `serve` warns about.
#[test]
fn tokens_printed_in_the_docs_are_warned_about() {
    use callhippo_ingest::startup::token_warning;
    let mut files = vec!["README.md".to_owned(), "docker-compose.yml".to_owned()];
    for dir in ["docs", "bench"] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|x| x == "md") {
                files.push(path.to_string_lossy().into_owned());
            }
        }
    }
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (i, _) in text.match_indices("token=") {
            let literal: String = text[i + 6..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "-_.~".contains(*c))
                .collect();
            if literal.is_empty() {
                continue; // ?token=$WEBHOOK_TOKEN, ?token=<…>, ?token=…
            }
            assert!(
                token_warning(Some(&literal)).is_some(),
                "{file} prints the token {literal:?}, which serve takes without a warning"
            );
        }
    }
    assert!(token_warning(Some("0123456789abcdef0123")).is_none());
    assert!(token_warning(Some("short-but-mine")).is_some());
    assert!(token_warning(None).is_some());
}

/// The writer keeps the connection that wrote last for the next batch, but never the pool's
/// last one: with a pool of one, `/readyz` (and retention) still get a connection.
#[tokio::test]
async fn a_pool_of_one_still_answers_readyz_between_writes() {
    let app = spawn_app_with(|s| s.db.pool_size = 1).await;
    for n in 0..3 {
        let (code, answer) = app
            .post(with(CALL, "callSid", json!(format!("CA-one-{n}"))))
            .await;
        assert_eq!((code, answer["status"].as_str()), (200, Some("stored")));
        let (code, body) = readyz(&app.client, &app.address).await;
        assert_eq!(code, 200, "{body}");
    }
}
