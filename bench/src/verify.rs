//! After the run: is every acknowledged event in the tables?

use std::collections::HashSet;

use anyhow::{Context, Result};
use sqlx::{Connection, PgConnection, Row};

/// Prints what is missing and returns how many acknowledged events are not in the tables.
pub async fn verify(keys_path: &str, url: &str) -> Result<u64> {
    let text =
        std::fs::read_to_string(keys_path).with_context(|| format!("reading {keys_path}"))?;
    let run = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# run "))
        .context("the keys file has no '# run' header")?
        .to_string();
    let mut calls: Vec<(&str, u64)> = Vec::new();
    let mut sms: Vec<&str> = Vec::new();
    let mut status: Vec<(&str, &str, i64)> = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["c", sid, tags] => calls.push((sid, tags.parse()?)),
            ["s", reference] => sms.push(reference),
            ["t", sid, st, ms] => status.push((sid, st, ms.parse()?)),
            _ => anyhow::bail!("bad line in {keys_path}: {line:?}"),
        }
    }

    let mut db = PgConnection::connect(url)
        .await
        .context("connecting to the database to verify")?;
    let sid_like = format!("CA{run}%");

    let stored_calls: HashSet<String> =
        sqlx::query_scalar("SELECT call_sid FROM calls WHERE call_sid LIKE $1")
            .bind(&sid_like)
            .fetch_all(&mut db)
            .await?
            .into_iter()
            .collect();
    let stored_sms: HashSet<String> = sqlx::query_scalar::<_, Option<String>>(
        "SELECT substring(content FROM 'Ref (CHB[0-9a-f]{8}-[0-9]+-[0-9]+)$') FROM sms \
         WHERE content LIKE $1",
    )
    .bind(format!("%Ref CHB{run}-%"))
    .fetch_all(&mut db)
    .await?
    .into_iter()
    .flatten()
    .collect();
    let stored_status: HashSet<(String, String, i64)> = sqlx::query(
        "SELECT call_sid, status, (extract(epoch FROM occurred_at) * 1000)::int8 AS ms \
         FROM call_status WHERE call_sid LIKE $1",
    )
    .bind(&sid_like)
    .fetch_all(&mut db)
    .await?
    .into_iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect();
    let stored_tags: i64 =
        sqlx::query_scalar("SELECT count(*) FROM call_tags WHERE call_sid LIKE $1")
            .bind(&sid_like)
            .fetch_one(&mut db)
            .await?;
    let raw: i64 = sqlx::query_scalar("SELECT count(*) FROM raw_events")
        .fetch_one(&mut db)
        .await?;
    db.close().await.ok();

    let mut missing = Vec::new();
    let mut expected_tags = 0u64;
    for (sid, tags) in &calls {
        expected_tags += tags;
        if !stored_calls.contains(*sid) {
            missing.push(format!("call {sid}"));
        }
    }
    for r in &sms {
        if !stored_sms.contains(*r) {
            missing.push(format!("sms {r}"));
        }
    }
    for (sid, st, ms) in &status {
        if !stored_status.contains(&(sid.to_string(), st.to_string(), *ms)) {
            missing.push(format!("call_status {sid} {st} {ms}"));
        }
    }
    println!(
        "verify: acknowledged calls={} sms={} call_status={} | rows of this run: calls={} sms={} \
         call_status={} call_tags={} (expected {}) | raw_events={} | missing={}",
        calls.len(),
        sms.len(),
        status.len(),
        stored_calls.len(),
        stored_sms.len(),
        stored_status.len(),
        stored_tags,
        expected_tags,
        raw,
        missing.len()
    );
    for m in missing.iter().take(10) {
        println!("verify: missing {m}");
    }
    if stored_tags as u64 != expected_tags {
        println!(
            "verify: warning: call_tags rows differ from the tags the acknowledged calls carry"
        );
    }
    println!(
        "RESULT rows_calls={} rows_sms={} rows_call_status={} rows_call_tags={} expected_call_tags={} \
         raw_events={} missing={}",
        stored_calls.len(),
        stored_sms.len(),
        stored_status.len(),
        stored_tags,
        expected_tags,
        raw,
        missing.len()
    );
    Ok(missing.len() as u64)
}
