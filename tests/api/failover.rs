//! Several hosts in DATABASE_URL: a primary and its synchronous standby (tests/clusters.sh),
//! the primary lost mid-stream and the standby promoted. serve moves to the host that takes
//! writes, and every acknowledged event is there once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

struct Clusters {
    dir: PathBuf,
    primary: u16,
    standby: u16,
}

fn clusters(cmd: &str, dir: &Path) -> String {
    test_script("clusters.sh", &[cmd.as_ref(), dir.as_os_str()])
        .unwrap_or_else(|e| panic!("tests/clusters.sh {cmd}: {e}"))
}

impl Clusters {
    fn start() -> Clusters {
        let dir = std::env::temp_dir().join(format!("chi-failover-{}", uuid::Uuid::new_v4()));
        let out = clusters("start", &dir);
        let port = |name: &str| -> u16 {
            out.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} in {out}"))
        };
        Clusters {
            primary: port("PRIMARY_PORT"),
            standby: port("STANDBY_PORT"),
            dir,
        }
    }
}

impl Drop for Clusters {
    fn drop(&mut self) {
        let _ = test_script("clusters.sh", &["stop".as_ref(), self.dir.as_os_str()]);
    }
}

#[tokio::test]
async fn a_standby_promoted_mid_stream_takes_the_writes_and_nothing_acknowledged_is_lost() {
    init_logs();
    let c = Clusters::start();
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/failover?target_session_attrs=read-write",
        c.primary, c.standby
    );
    let spool = std::env::temp_dir().join(format!("chi-failover-spool-{}", uuid::Uuid::new_v4()));
    let mut settings = local_settings(&url, &spool);
    settings.db.timeout = Duration::from_millis(1000);
    let address = format!("{}/webhooks/callhippo", start(settings).await.0);

    // Four clients post 150 calls each; after 120 acknowledged, the primary is lost and the
    // standby promoted.
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let codes = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for t in 0..4 {
        let (client, address, acknowledged, codes) = (
            client.clone(),
            address.clone(),
            acknowledged.clone(),
            codes.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0..150 {
                let sid = format!("CA-failover-{t}-{i}");
                let body = with(CALL, "callSid", json!(sid));
                let (code, answer) = send(client.post(&address).body(body)).await;
                codes.lock().unwrap().insert(sid.clone(), code);
                match code {
                    200 | 202 => {
                        acknowledged.lock().unwrap().insert(sid);
                    }
                    503 => {} // not acknowledged: CallHippo would send it again
                    other => panic!("{other} {answer}"),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    let until = Instant::now() + Duration::from_secs(60);
    while acknowledged.lock().unwrap().len() < 120 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    clusters("stop-primary", &c.dir);
    tokio::time::sleep(Duration::from_millis(500)).await;
    clusters("promote", &c.dir);
    for task in tasks {
        task.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 500,
        "{} acknowledged",
        acknowledged.len()
    );

    // Everything acknowledged reaches the new primary, once.
    let standby = sqlx::PgPool::connect(&format!(
        "postgres://postgres@127.0.0.1:{}/failover",
        c.standby
    ))
    .await
    .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    let stored: BTreeSet<String> = loop {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT call_sid FROM calls WHERE call_sid LIKE 'CA-failover-%'")
                .fetch_all(&standby)
                .await
                .unwrap();
        let set: BTreeSet<String> = rows.iter().cloned().collect();
        assert_eq!(set.len(), rows.len(), "a call stored twice");
        if acknowledged.is_subset(&set) || Instant::now() > until {
            break set;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    let mut why = String::new();
    if !lost.is_empty() {
        let raw: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT payload->>'callSid', error FROM raw_events WHERE payload->>'callSid' = ANY($1)",
        )
        .bind(lost.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .fetch_all(&standby)
        .await
        .unwrap();
        let (_, ready) = readyz(&client, address.trim_end_matches("/webhooks/callhippo")).await;
        let files: Vec<String> = std::fs::read_dir(&spool)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| {
                        format!(
                            "{:?} {}",
                            e.file_name(),
                            e.metadata().map(|m| m.len()).unwrap_or(0)
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        why = format!(
            "raw events of them: {raw:?}; readyz: {ready}; spool: {files:?}; codes: {:?}",
            codes
                .lock()
                .unwrap()
                .iter()
                .filter(|(k, _)| lost.contains(k))
                .collect::<Vec<_>>()
        );
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged calls lost: {lost:?}; {why}",
        lost.len()
    );
    let _ = std::fs::remove_dir_all(spool);
}
