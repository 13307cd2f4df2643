//! PgBouncer in transaction mode with two server connections (tests/pgbouncer.sh) between
//! `serve` and PostgreSQL, `DB_POOLER=transaction`: every event of sixteen clients is
//! answered 200 and stored, the commands work through it too, and without the setting the
//! service says which setting to give.

use std::path::PathBuf;
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;

use crate::helpers::*;

struct Bouncer {
    dir: PathBuf,
    port: u16,
}

impl Bouncer {
    /// PgBouncer in front of the tests' PostgreSQL.
    fn start() -> Bouncer {
        let upstream = PgConnectOptions::from_str(&admin_url()).unwrap().get_port();
        let dir = std::env::temp_dir().join(format!("chi-pgbouncer-{}", uuid::Uuid::new_v4()));
        let upstream = upstream.to_string();
        let out = test_script(
            "pgbouncer.sh",
            &["start".as_ref(), dir.as_os_str(), upstream.as_ref()],
        )
        .unwrap_or_else(|e| panic!("tests/pgbouncer.sh start: {e}"));
        let port = (out.trim().strip_prefix("PGBOUNCER_PORT="))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("PGBOUNCER_PORT in {out}"));
        Bouncer { dir, port }
    }

    /// The URL of database `name` through PgBouncer.
    fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = test_script("pgbouncer.sh", &["stop".as_ref(), self.dir.as_os_str()]);
    }
}

/// Runs `command` `n` times at once through the pooler at `url`; each must succeed.
fn at_once(url: &str, command: &str, n: usize) {
    let children: Vec<_> = (0..n)
        .map(|_| {
            (bin().arg(command))
                .env("DATABASE_URL", url)
                .env("DB_POOLER", "transaction")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{command}: {stderr}");
    }
}

const CLIENTS: usize = 16;
const PER_CLIENT: usize = 150;

/// Request `i` of client `c`: an SMS, a status event or a call log in turn. Clients `c` and
/// `c + 8` send two versions of the same calls (their notes differ), so that batches meet
/// keys twice and calls stored already.
fn event(c: usize, i: usize) -> Value {
    let at = |s: usize| {
        format!(
            "2026-11-{:02}T{:02}:{:02}:{:02}.000Z",
            1 + c,
            i / 60 % 24,
            i % 60,
            s
        )
    };
    let mut v: Value;
    match i % 3 {
        0 => {
            v = serde_json::from_str(SMS).unwrap();
            v["time"] = json!(at(0));
            v["content"] = json!(format!("message {c}/{i}"));
        }
        1 => {
            v = serde_json::from_str(STATUS).unwrap();
            v["callSid"] = json!(format!("CApool{c:02}s{i:04}"));
            v["dateTime"] = json!(at(1));
        }
        _ => {
            v = serde_json::from_str(CALL).unwrap();
            v["callSid"] = json!(format!("CApool{:02}c{i:04}", c % 8));
            v["note"] = json!(format!("version of client {c}"));
            v["startTime"] = json!(at(2));
            v["tags"] = json!([format!("Tag{}", i % 7), "Everyone"]);
        }
    }
    v
}

#[tokio::test]
async fn through_pgbouncer_in_transaction_mode_every_event_of_16_clients_is_stored() {
    init_logs();
    let db = TestDb::new().await;
    let bouncer = Bouncer::start();
    let url = bouncer.url(&db.name);
    let dir = std::env::temp_dir().join(format!("chi-pooler-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();

    // Without the setting: refused at once (exit 2), naming it.
    let out = bin()
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("set DB_POOLER=transaction"), "{stderr}");

    // Replicas migrating at once: one applies the migrations, the others wait for its
    // transaction's lock and find nothing to do.
    at_once(&url, "migrate", 3);

    // Two replicas, so that the two server connections are always wanted by several of
    // their connections at once.
    let client = reqwest::Client::new();
    let mut replicas = Vec::new();
    for r in 0..2 {
        let port = free_port();
        let log = dir.join(format!("serve-{r}.log"));
        let serve = Served(
            serve_command(&url, port, &dir.join(format!("spool-{r}")))
                .env("DB_POOLER", "transaction")
                .env("RUST_LOG", "info")
                .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
                .spawn()
                .expect("the binary starts"),
        );
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(&client, &base).await;
        replicas.push((serve, base, log));
    }

    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let client = client.clone();
        let url_of = format!("{}/webhooks/callhippo", replicas[c % 2].1);
        clients.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            // Then its first ten again: duplicates.
            for i in (0..PER_CLIENT).chain(0..10) {
                let (code, body) = send(client.post(&url_of).json(&event(c, i))).await;
                codes.push((code, body));
            }
            codes
        }));
    }
    let mut answers = Vec::new();
    for c in clients {
        answers.extend(c.await.unwrap());
    }
    assert_eq!(answers.len(), CLIENTS * (PER_CLIENT + 10));
    let refused: Vec<_> = answers.iter().filter(|(code, _)| *code != 200).collect();
    assert!(
        refused.is_empty(),
        "{} not 200: {:?}",
        refused.len(),
        &refused[..refused.len().min(3)]
    );
    let queued = answers
        .iter()
        .filter(|(_, b)| b["status"] == "queued")
        .count();
    assert_eq!(queued, 0, "written at once, not spooled");

    let pool = db.pool().await;
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let per_kind = (CLIENTS * PER_CLIENT / 3) as i64;
    assert_eq!(count("SELECT count(*) FROM raw_events").await, 3 * per_kind);
    assert_eq!(count("SELECT count(*) FROM sms").await, per_kind);
    assert_eq!(count("SELECT count(*) FROM call_status").await, per_kind);
    assert_eq!(count("SELECT count(*) FROM calls").await, per_kind / 2);
    assert_eq!(
        count("SELECT count(*) FROM calls WHERE note NOT LIKE 'version of client %'").await,
        0
    );
    // Each call has its two tags, and the tags table holds each name once.
    assert_eq!(count("SELECT count(*) FROM call_tags").await, per_kind);
    assert_eq!(count("SELECT count(*) FROM tags").await, 8);
    // The summaries follow through the pooler too (serve's catch-up every few seconds).
    let mut summed = 0;
    for _ in 0..100 {
        summed = count("SELECT coalesce(sum(calls), 0)::bigint FROM call_daily_stats").await;
        if summed == per_kind / 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(summed, per_kind / 2);

    // Catch-ups racing each other take their transaction's lock: each command waits for the
    // others (or finds its work done) and succeeds.
    at_once(&url, "rollup", 3);

    // The commands, through the pooler as well.
    for args in [
        &["replay"][..],
        &["rollup"],
        &["forget", "--dry-run", "--phone", "+9323243432"],
    ] {
        let out = bin()
            .args(args)
            .env("DATABASE_URL", &url)
            .env("DB_POOLER", "transaction")
            .env("SPOOL_DIR", dir.join("spool"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(count("SELECT count(*) FROM calls").await, per_kind / 2);

    for (_, _, log) in &replicas {
        let served = std::fs::read_to_string(log).unwrap();
        for bad in [
            "prepared statement",
            "ERROR",
            "does not exist",
            "bind message",
        ] {
            assert!(!served.contains(bad), "serve's log has {bad:?}:\n{served}");
        }
    }
    let pooled = bouncer.log();
    assert!(
        !pooled.contains("prepared statement"),
        "PgBouncer's log: {pooled}"
    );
}
