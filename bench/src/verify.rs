//! After the run: is every acknowledged event in the tables (and, with `--exact`, exactly once)?

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};
use sqlx::{Connection, PgConnection, Row};

/// What `verify` found.
pub struct Verdict {
    /// Acknowledged events not in the tables.
    pub missing: u64,
    /// Rows that break "exactly once": a key stored twice, an acknowledged call whose
    /// `call_tags` rows differ from its tags, `raw_events` rows beyond the distinct bodies sent.
    pub not_exact: u64,
}

/// Prints what is missing (and what is not exactly once) and returns the counts.
///
/// `exact` is for a database that only this run wrote to (`bench/drill`): `raw_events` may
/// then hold no more rows than the distinct bodies the run sent (`# sent N` in the keys file).
pub async fn verify(keys_path: &str, url: &str, exact: bool) -> Result<Verdict> {
    let text =
        std::fs::read_to_string(keys_path).with_context(|| format!("reading {keys_path}"))?;
    let run = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# run "))
        .context("the keys file has no '# run' header")?
        .to_string();
    let mut sent: Option<u64> = None;
    let mut calls: Vec<(&str, u64)> = Vec::new();
    let mut sms: Vec<&str> = Vec::new();
    let mut status: Vec<(&str, &str, i64)> = Vec::new();
    for line in text.lines().skip(1) {
        if let Some(comment) = line.strip_prefix('#') {
            if let Some(n) = comment.trim().strip_prefix("sent ") {
                sent = Some(n.parse().context("bad '# sent' line")?);
            }
            continue;
        }
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

    let call_rows: Vec<String> =
        sqlx::query_scalar("SELECT call_sid FROM calls WHERE call_sid LIKE $1")
            .bind(&sid_like)
            .fetch_all(&mut db)
            .await?;
    let sms_rows: Vec<String> = sqlx::query_scalar::<_, Option<String>>(
        "SELECT substring(content FROM 'Ref (CHB[0-9a-f]{8}-[0-9]+-[0-9]+)$') FROM sms \
         WHERE content LIKE $1",
    )
    .bind(format!("%Ref CHB{run}-%"))
    .fetch_all(&mut db)
    .await?
    .into_iter()
    .flatten()
    .collect();
    let status_rows: Vec<(String, String, i64)> = sqlx::query(
        "SELECT call_sid, status, (extract(epoch FROM occurred_at) * 1000)::int8 AS ms \
         FROM call_status WHERE call_sid LIKE $1",
    )
    .bind(&sid_like)
    .fetch_all(&mut db)
    .await?
    .into_iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect();
    let tags_per_call: HashMap<String, i64> = sqlx::query(
        "SELECT call_sid, count(*) FROM call_tags WHERE call_sid LIKE $1 GROUP BY call_sid",
    )
    .bind(&sid_like)
    .fetch_all(&mut db)
    .await?
    .into_iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    let stored_tags: i64 = tags_per_call.values().sum();
    let raw: i64 = sqlx::query_scalar("SELECT count(*) FROM raw_events")
        .fetch_one(&mut db)
        .await?;
    db.close().await.ok();

    let stored_calls: HashSet<&str> = call_rows.iter().map(String::as_str).collect();
    let stored_sms: HashSet<&str> = sms_rows.iter().map(String::as_str).collect();
    let stored_status: HashSet<(&str, &str, i64)> = status_rows
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), *c))
        .collect();
    let duplicates = (call_rows.len() - stored_calls.len())
        + (sms_rows.len() - stored_sms.len())
        + (status_rows.len() - stored_status.len());

    let mut missing = Vec::new();
    let mut expected_tags = 0u64;
    let mut acked_tags = 0u64;
    let mut tags_wrong = 0u64;
    for (sid, tags) in &calls {
        expected_tags += tags;
        acked_tags += tags_per_call.get(*sid).copied().unwrap_or(0) as u64;
        if !stored_calls.contains(*sid) {
            missing.push(format!("call {sid}"));
        } else if tags_per_call.get(*sid).copied().unwrap_or(0) as u64 != *tags {
            tags_wrong += 1;
            if tags_wrong <= 5 {
                println!(
                    "verify: call {sid} carries {tags} tags, call_tags has {}",
                    tags_per_call.get(*sid).copied().unwrap_or(0)
                );
            }
        }
    }
    for r in &sms {
        if !stored_sms.contains(*r) {
            missing.push(format!("sms {r}"));
        }
    }
    for (sid, st, ms) in &status {
        if !stored_status.contains(&(*sid, *st, *ms)) {
            missing.push(format!("call_status {sid} {st} {ms}"));
        }
    }
    let acked = calls.len() + sms.len() + status.len();
    let stored_acked = acked - missing.len();
    // Rows of this run whose request got no 2xx (cut off by a kill, or its answer lost).
    let unacked_stored =
        (stored_calls.len() + stored_sms.len() + stored_status.len()).saturating_sub(stored_acked);
    let raw_excess = sent.map_or(0, |s| (raw as u64).saturating_sub(s));
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
    if acked_tags != expected_tags {
        println!(
            "verify: warning: call_tags rows of the acknowledged calls ({acked_tags}) differ from \
             the tags they carry ({expected_tags})"
        );
    }
    let mut not_exact = duplicates as u64 + tags_wrong;
    if exact {
        if sent.is_none() {
            println!("verify: warning: the keys file has no '# sent' line: raw_events not checked");
        }
        not_exact += raw_excess;
        println!(
            "verify: exactly once: duplicate rows={duplicates} acknowledged calls with other \
             call_tags={tags_wrong} raw_events={raw} for {} distinct bodies sent (excess \
             {raw_excess}) | stored but not acknowledged={unacked_stored}",
            sent.map_or("?".to_string(), |s| s.to_string())
        );
    }
    println!(
        "RESULT rows_calls={} rows_sms={} rows_call_status={} rows_call_tags={} expected_call_tags={} \
         raw_events={} missing={} acked={} stored_acked={} unacked_stored={} duplicates={} \
         tags_wrong={} raw_excess={} sent={}",
        stored_calls.len(),
        stored_sms.len(),
        stored_status.len(),
        stored_tags,
        expected_tags,
        raw,
        missing.len(),
        acked,
        stored_acked,
        unacked_stored,
        duplicates,
        tags_wrong,
        raw_excess,
        sent.map_or(-1, |s| s as i64)
    );
    Ok(Verdict {
        missing: missing.len() as u64,
        not_exact,
    })
}
