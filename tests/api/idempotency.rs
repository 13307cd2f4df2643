//! Idempotency (docs/reference.md §5): stored / duplicate / updated, and exactly one row under concurrency.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn same_bytes_twice_is_a_duplicate_counted_in_raw_events() {
    let app = spawn_app().await;
    assert_eq!(app.post(CALL).await.1["status"], "stored");
    let before = app.row("SELECT updated_at FROM calls").await;
    assert_eq!(app.post(CALL).await.1["status"], "duplicate");
    assert_eq!(
        app.row("SELECT updated_at FROM calls").await,
        before,
        "a duplicate changes nothing"
    );
    assert_eq!(
        app.row("SELECT deliveries, received_at < last_received_at AS later FROM raw_events")
            .await,
        json!({"deliveries": 2, "later": true})
    );
    assert_eq!(app.count("calls").await, 1);
}

#[tokio::test]
async fn other_bytes_that_read_the_same_are_a_duplicate() {
    let app = spawn_app().await;
    assert_eq!(app.post(CALL).await.1["status"], "stored");
    // Reformatted, reordered, other time notation and case: the same call.
    let mut v: Value = serde_json::from_str(CALL).unwrap();
    v["time"] = json!("2020-05-12T00:53:57.688Z");
    v["callType"] = json!("outgoing");
    v["email"] = json!("TEST@example.com");
    let (code, answer) = app.post(serde_json::to_string_pretty(&v).unwrap()).await;
    assert_eq!(
        (code, answer["status"].as_str()),
        (200, Some("duplicate")),
        "{answer}"
    );
    assert_eq!(app.count("raw_events").await, 2);

    assert_eq!(app.post(SMS).await.1["status"], "stored");
    let sms = with(SMS, "time", json!("2020-05-12T06:23:57.688+05:30"));
    assert_eq!(app.post(sms).await.1["status"], "duplicate");
    assert_eq!(app.count("sms").await, 1);

    assert_eq!(app.post(STATUS).await.1["status"], "stored");
    let status = with(STATUS, "status", json!("Completed"));
    assert_eq!(app.post(status).await.1["status"], "duplicate");
}

#[tokio::test]
async fn changed_content_is_updated_and_tags_replaced() {
    let app = spawn_app().await;
    assert_eq!(app.post(CALL).await.1["status"], "stored");
    let first = app.row("SELECT received_at, updated_at FROM calls").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let changed = with(
        &with(CALL, "note", json!("edited")),
        "tags",
        json!(["Tag2", "Tag3"]),
    );
    let (code, answer) = app.post(changed).await;
    assert_eq!(
        (code, answer["status"].as_str()),
        (200, Some("updated")),
        "{answer}"
    );
    let now = app
        .row("SELECT received_at, updated_at, note, tags FROM call_history")
        .await;
    assert_eq!(now["received_at"], first["received_at"], "received_at kept");
    assert_ne!(now["updated_at"], first["updated_at"], "updated_at moved");
    assert_eq!(now["note"], "edited");
    assert_eq!(now["tags"], json!(["Tag2", "Tag3"]));

    // Only the tags change: still an update.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let only_tags = with(
        &with(CALL, "note", json!("edited")),
        "tags",
        json!(["Tag3"]),
    );
    assert_eq!(app.post(only_tags.clone()).await.1["status"], "updated");
    assert_eq!(
        app.row("SELECT tags FROM call_history").await,
        json!({"tags": ["Tag3"]})
    );
    assert_ne!(
        app.row("SELECT updated_at FROM calls").await["updated_at"],
        now["updated_at"]
    );
    assert_eq!(app.post(only_tags).await.1["status"], "duplicate");
    // No tags in the newest delivery: none left.
    assert_eq!(
        app.post(without(&with(CALL, "note", json!("edited")), "tags"))
            .await
            .1["status"],
        "updated"
    );
    assert_eq!(app.count("call_tags").await, 0);
    assert_eq!(app.count("tags").await, 3, "tag names stay");

    // An SMS and a status event changed beyond their key.
    assert_eq!(app.post(SMS).await.1["status"], "stored");
    assert_eq!(
        app.post(with(SMS, "status", json!("Failed"))).await.1["status"],
        "updated"
    );
    assert_eq!(app.post(STATUS).await.1["status"], "stored");
    assert_eq!(
        app.post(with(STATUS, "agentId", json!("other"))).await.1["status"],
        "updated"
    );
}

#[tokio::test]
async fn warnings_resolved_by_a_redelivery_are_cleared() {
    let app = spawn_app().await;
    assert_eq!(
        app.post(with(CALL, "callCharge", json!("N/A"))).await.1["status"],
        "stored"
    );
    assert_eq!(app.post(CALL).await.1["status"], "updated");
    assert_eq!(
        app.row("SELECT parse_warnings, call_charge::text AS c FROM calls")
            .await,
        json!({"parse_warnings": null, "c": "0.040"})
    );
}

/// Many clients deliver the same events at the same moment: one row each, no failure.
#[tokio::test]
async fn concurrent_identical_deliveries_make_one_row() {
    let app = spawn_app().await;
    let bodies: Vec<String> = (0..5)
        .map(|i| {
            with(
                &with(CALL, "callSid", json!(format!("CA-conc-{i}"))),
                "tags",
                json!(["hot", format!("t{i}")]),
            )
        })
        .collect();
    let mut tasks = Vec::new();
    for round in 0..20 {
        for body in &bodies {
            let client = app.client.clone();
            let url = app.webhook_url();
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                let _ = round;
                answer(client.post(url).body(body).send().await.unwrap()).await
            }));
        }
    }
    let mut statuses: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        let (code, answer) = t.await.unwrap();
        assert_eq!(code, 200, "{answer}");
        *statuses
            .entry(answer["status"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(statuses.get("stored"), Some(&5), "{statuses:?}");
    assert_eq!(statuses.get("duplicate"), Some(&95), "{statuses:?}");
    assert_eq!(app.count("calls").await, 5);
    assert_eq!(app.count("call_tags").await, 10);
    assert_eq!(app.count("tags").await, 6);
    assert_eq!(
        app.row("SELECT sum(deliveries) AS n, count(*) AS rows FROM raw_events")
            .await,
        json!({"n": 100, "rows": 5})
    );
}

/// Two `serve` processes on one database, started at once (so migrating at once), receive
/// the same events at the same moment.
#[tokio::test]
async fn two_serve_processes_receive_the_same_events() {
    let db = TestDb::new().await;
    let (p1, p2) = (free_port(), free_port());
    let spool = |p: u16| std::env::temp_dir().join(format!("chi-spool-two-{}-{p}", db.name));
    let _a = serve_process(&db.url, p1, &spool(p1));
    let _b = serve_process(&db.url, p2, &spool(p2));
    let client = reqwest::Client::new();
    wait_ready(&client, &format!("http://127.0.0.1:{p1}")).await;
    wait_ready(&client, &format!("http://127.0.0.1:{p2}")).await;

    let mut bodies = Vec::new();
    for i in 0..40 {
        bodies.push(with(
            &with(CALL, "callSid", json!(format!("CA-two-{i}"))),
            "tags",
            json!(["shared", format!("own-{i}")]),
        ));
        bodies.push(with(
            &with(SMS, "content", json!(format!("message {i}"))),
            "smsType",
            json!(if i % 2 == 0 { "Incoming" } else { "Outgoing" }),
        ));
        bodies.push(with(
            &with(STATUS, "callSid", json!(format!("CA-two-{i}"))),
            "status",
            json!("ringing"),
        ));
    }
    let mut tasks = Vec::new();
    for body in &bodies {
        for port in [p1, p2, p1, p2] {
            let client = client.clone();
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                answer(
                    client
                        .post(format!("http://127.0.0.1:{port}/webhooks/callhippo"))
                        .body(body)
                        .send()
                        .await
                        .unwrap(),
                )
                .await
            }));
        }
    }
    let mut stored = 0;
    for t in tasks {
        let (code, answer) = t.await.unwrap();
        assert_eq!(code, 200, "{answer}");
        match answer["status"].as_str().unwrap() {
            "stored" => stored += 1,
            "duplicate" => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(stored, 120, "each event stored exactly once");
    let pool = db.pool().await;
    for (table, n) in [
        ("calls", 40),
        ("sms", 40),
        ("call_status", 40),
        ("call_tags", 80),
        ("tags", 41),
        ("raw_events", 120),
    ] {
        let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(count, n, "{table}");
    }
    let deliveries: i64 = sqlx::query_scalar("SELECT sum(deliveries)::bigint FROM raw_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(deliveries, 480);
    pool.close().await;
}

/// A delivery written late (from the spool, after a timeout) must not overwrite a newer one
/// that was stored meanwhile: the row and its tags stay the newest delivery's.
#[tokio::test]
async fn an_older_delivery_written_late_leaves_the_newer_one() {
    use callhippo_ingest::delivery::{Outcome, Source};
    use callhippo_ingest::payload::read_delivery;
    use callhippo_ingest::store::{write_batch, BatchMemory};

    let app = spawn_app().await;
    let delivery = |body: String, seconds_ago: i64| {
        let at = chrono::Utc::now() - chrono::Duration::seconds(seconds_ago);
        read_delivery(body.into_bytes().into(), None, at, Source::Webhook)
    };
    let call = |note: &str, tag: &str| with(&with(CALL, "note", json!(note)), "tags", json!([tag]));
    let tags = BatchMemory::default();
    let mut conn = app.pool.acquire().await.unwrap();
    let newer = delivery(call("v2", "new"), 10);
    let older = delivery(call("v1", "old"), 20);
    let older_tags_only = delivery(call("v2", "old"), 20);
    assert_eq!(
        write_batch(&mut conn, &[newer], &tags, 0).await.unwrap(),
        vec![Outcome::Stored]
    );
    assert_eq!(
        write_batch(&mut conn, &[older], &tags, 0).await.unwrap(),
        vec![Outcome::Duplicate]
    );
    assert_eq!(
        write_batch(&mut conn, &[older_tags_only], &tags, 0)
            .await
            .unwrap(),
        vec![Outcome::Duplicate]
    );
    assert_eq!(
        app.row("SELECT note, tags FROM call_history").await,
        json!({"note": "v2", "tags": ["new"]})
    );
    // An SMS status and a call status event likewise.
    let sms_newer = delivery(with(SMS, "status", json!("Delivered")), 10);
    let sms_older = delivery(with(SMS, "status", json!("Sent")), 20);
    assert_eq!(
        write_batch(&mut conn, &[sms_newer], &tags, 0)
            .await
            .unwrap(),
        vec![Outcome::Stored]
    );
    assert_eq!(
        write_batch(&mut conn, &[sms_older], &tags, 0)
            .await
            .unwrap(),
        vec![Outcome::Duplicate]
    );
    assert_eq!(
        app.row("SELECT status FROM sms").await,
        json!({"status": "delivered"})
    );
    // A newer one still updates.
    let newest = delivery(call("v3", "newest"), 0);
    assert_eq!(
        write_batch(&mut conn, &[newest], &tags, 0).await.unwrap(),
        vec![Outcome::Updated]
    );
    assert_eq!(
        app.row("SELECT note, tags FROM call_history").await,
        json!({"note": "v3", "tags": ["newest"]})
    );
}

/// `call_tags` has no foreign key: links left behind by a call deleted by hand must not stop
/// the call from being stored again.
#[tokio::test]
async fn a_call_deleted_by_hand_is_stored_again_despite_its_old_links() {
    let app = spawn_app().await;
    assert_eq!(app.post(CALL).await.1["status"], "stored");
    let pool = app.db.pool().await;
    sqlx::query("DELETE FROM calls")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(app.count("call_tags").await, 2, "the links stay behind");
    let again = with(CALL, "note", json!("delivered again"));
    let (code, answer) = app.post(again).await;
    assert_eq!(
        (code, answer["status"].as_str()),
        (200, Some("stored")),
        "{answer}"
    );
    assert_eq!(
        app.row("SELECT note, tags FROM call_history").await,
        json!({"note": "delivered again", "tags": ["Tag1", "Tag2"]})
    );
}

/// A usual batch inserts the calls of new bodies without `ON CONFLICT`, betting that they are
/// new calls. A new body of a stored call (an updated log) makes that statement fail as a
/// whole: the batch is then written again with upserts, each row once, and the next batch
/// does not bet.
#[tokio::test]
async fn a_batch_that_loses_its_bet_on_new_calls_is_written_once_with_upserts() {
    use callhippo_ingest::delivery::{Outcome, Source};
    use callhippo_ingest::payload::read_delivery;
    use callhippo_ingest::store::{write_batch, BatchMemory};

    let app = spawn_app().await;
    let delivery = |body: String| {
        read_delivery(
            body.into_bytes().into(),
            None,
            chrono::Utc::now(),
            Source::Webhook,
        )
    };
    let memory = BatchMemory::default();
    let mut conn = app.pool.acquire().await.unwrap();
    assert_eq!(
        write_batch(&mut conn, &[delivery(CALL.into())], &memory, 0)
            .await
            .unwrap(),
        vec![Outcome::Stored]
    );
    assert_eq!(memory.bet.skipping(), 0, "a bet won");
    let other_call = with(
        &with(CALL, "callSid", json!("CA-other")),
        "tags",
        json!(["Other"]),
    );
    let updated = with(
        &with(CALL, "note", json!("updated")),
        "tags",
        json!(["Tag2", "Tag3"]),
    );
    let batch = [
        delivery(other_call),
        delivery(SMS.into()),
        delivery(STATUS.into()),
        delivery(updated),
    ];
    assert_eq!(
        write_batch(&mut conn, &batch, &memory, 0).await.unwrap(),
        vec![
            Outcome::Stored,
            Outcome::Stored,
            Outcome::Stored,
            Outcome::Updated
        ]
    );
    assert_eq!(
        memory.bet.skipping(),
        1,
        "the next batch writes with upserts"
    );
    // Nothing of the failed statement is left: every body once, delivered once.
    assert_eq!(
        app.row("SELECT count(*) AS bodies, sum(deliveries)::int AS deliveries FROM raw_events")
            .await,
        json!({"bodies": 5, "deliveries": 5})
    );
    assert_eq!(
        (
            app.count("calls").await,
            app.count("sms").await,
            app.count("call_status").await
        ),
        (2, 1, 1)
    );
    let tags = app
        .row("SELECT json_agg(tags ORDER BY call_sid) AS tags FROM call_history")
        .await;
    assert_eq!(tags, json!({"tags": [["Other"], ["Tag2", "Tag3"]]}));
    // The next batch with calls does not bet; a batch without calls does not count.
    let sms_only = [delivery(with(SMS, "status", json!("Delivered")))];
    assert_eq!(
        write_batch(&mut conn, &sms_only, &memory, 0).await.unwrap(),
        vec![Outcome::Updated]
    );
    assert_eq!(memory.bet.skipping(), 1);
    let third = with(CALL, "callSid", json!("CA-third"));
    assert_eq!(
        write_batch(&mut conn, &[delivery(third.clone())], &memory, 0)
            .await
            .unwrap(),
        vec![Outcome::Stored]
    );
    assert_eq!(memory.bet.skipping(), 0);
    // The one after it bets again: lost again, the penalty doubles.
    let third_updated = with(&third, "note", json!("updated"));
    assert_eq!(
        write_batch(&mut conn, &[delivery(third_updated)], &memory, 0)
            .await
            .unwrap(),
        vec![Outcome::Updated]
    );
    assert_eq!(memory.bet.skipping(), 2);
    assert_eq!(app.count("calls").await, 3);
}
