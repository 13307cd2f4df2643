//! `GET /metrics`: counters move by exactly what was posted.

use std::collections::HashMap;

use serde_json::json;

use crate::helpers::*;

async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let resp = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    resp.text()
        .await
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, name: &str) -> f64 {
    after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn counters_move_by_exactly_what_was_posted() {
    let app = spawn_app_with(|s| {
        s.webhook_token = Some("t".into());
        s.max_body_bytes = 4096;
    })
    .await;
    let url = format!("{}?token=t", app.webhook_url());
    let post = |body: String| {
        let (client, url) = (app.client.clone(), url.clone());
        async move {
            answer(client.post(url).body(body).send().await.unwrap())
                .await
                .1["status"]
                .clone()
        }
    };
    // Something before the first scrape, so that the series exist.
    assert_eq!(
        post(with(CALL, "callSid", json!("warm-up"))).await,
        "stored"
    );
    let before = scrape(&app).await;

    assert_eq!(post(CALL.into()).await, "stored");
    assert_eq!(post(with(CALL, "callSid", json!("second"))).await, "stored");
    assert_eq!(post(CALL.into()).await, "duplicate");
    assert_eq!(post(with(CALL, "note", json!("changed"))).await, "updated");
    assert_eq!(
        post(with(CALL, "callCharge", json!("N/A"))).await,
        "updated"
    );
    assert_eq!(post(SMS.into()).await, "stored");
    assert_eq!(post(STATUS.into()).await, "stored");
    assert_eq!(post(with(CALL, "to", json!("+11111111111"))).await, "test");
    assert_eq!(post(r#"{"something":"else"}"#.into()).await, "archived");
    assert_eq!(post(without(CALL, "callSid")).await, "rejected");
    assert_eq!(post("not json".into()).await, "rejected");
    // Refused before reading: no token, too large.
    let (code, _) = send(app.client.post(app.webhook_url()).body(CALL)).await;
    assert_eq!(code, 401);
    let (code, _) = send(app.client.post(&url).body("x".repeat(5000))).await;
    assert_eq!(code, 413);

    let after = scrape(&app).await;
    for (series, expected) in [
        (
            r#"callhippo_events_total{kind="call",outcome="stored"}"#,
            2.0,
        ),
        (
            r#"callhippo_events_total{kind="call",outcome="duplicate"}"#,
            1.0,
        ),
        (
            r#"callhippo_events_total{kind="call",outcome="updated"}"#,
            2.0,
        ),
        (
            r#"callhippo_events_total{kind="sms",outcome="stored"}"#,
            1.0,
        ),
        (
            r#"callhippo_events_total{kind="call_status",outcome="stored"}"#,
            1.0,
        ),
        (r#"callhippo_events_total{kind="test",outcome="test"}"#, 1.0),
        (
            r#"callhippo_events_total{kind="unknown",outcome="archived"}"#,
            1.0,
        ),
        (
            r#"callhippo_events_total{kind="call",outcome="rejected"}"#,
            1.0,
        ),
        (
            r#"callhippo_events_total{kind="invalid",outcome="rejected"}"#,
            1.0,
        ),
        (r#"callhippo_requests_refused_total{code="401"}"#, 1.0),
        (r#"callhippo_requests_refused_total{code="413"}"#, 1.0),
        (r#"callhippo_parse_warnings_total{field="callCharge"}"#, 1.0),
        ("callhippo_request_duration_seconds_count", 13.0),
    ] {
        assert_eq!(delta(&before, &after, series), expected, "{series}");
    }
    // Written events: 2 stored + 1 duplicate + 2 updated calls, 1 SMS, 1 status, and the
    // raw-only ones (test, archived, rejected) also go through a batch.
    assert_eq!(delta(&before, &after, "callhippo_db_batch_size_sum"), 11.0);
    assert!(delta(&before, &after, "callhippo_db_write_duration_seconds_count") >= 1.0);
    assert_eq!(after[r#"callhippo_spool_depth{unit="events"}"#], 0.0);
    let since = after[r#"callhippo_seconds_since_last_event_written{kind="call"}"#];
    assert!((0.0..60.0).contains(&since), "{since}");
    assert!(after[r#"callhippo_last_event_written_timestamp_seconds{kind="sms"}"#] > 1.7e9);
}

/// With METRICS_ADDR, /metrics is served there, and no longer on the webhook's port.
#[tokio::test]
async fn metrics_addr_serves_metrics_apart_from_the_webhook() {
    let app = spawn_app_with(|s| s.metrics_addr = Some("127.0.0.1:0".parse().unwrap())).await;
    assert_eq!(app.post(CALL).await.0, 200);
    let on_webhook_port = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(on_webhook_port.status(), 404);
    let apart = app.metrics_address.clone().expect("a metrics port");
    let text = text(app.client.get(format!("{apart}/metrics"))).await;
    assert!(
        text.contains(r#"callhippo_events_total{kind="call",outcome="stored"} 1"#),
        "{text}"
    );
    let other = app
        .client
        .get(format!("{apart}/webhooks/callhippo"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        404,
        "the metrics address serves nothing else"
    );
}
