//! `POST /webhooks/callhippo` and the rows each kind of payload makes.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn vendor_call_sample_is_stored_field_by_field() {
    let app = spawn_app().await;
    let (code, body) = app.post(CALL).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "stored", "kind": "call", "key": "CA5fcabcd366fac3fe8c00c111f135e123"})
    );

    let row = app
        .row("SELECT call_sid, call_type, from_number, to_number, dial_code, country_name, status,
                     status_reason, duration_seconds, ring_seconds, billed_minutes,
                     call_charge::text AS call_charge, logged_at = '2020-05-12T00:53:57.688Z' AS logged_ok,
                     started_at = '2020-05-12T00:53:57.688Z' AS started_ok,
                     ended_at = '2020-05-12T01:01:05.688Z' AS ended_ok, agent_email, agent_name,
                     admin_email, note, recording_url, answered_device, hangup_by, call_queue, reason,
                     dispositions, parse_warnings, received_at = updated_at AS fresh
                FROM calls")
        .await;
    assert_eq!(
        row,
        json!({
            "call_sid": "CA5fcabcd366fac3fe8c00c111f135e123", "call_type": "outgoing",
            "from_number": "+9323243432", "to_number": "+41232132131", "dial_code": "41",
            "country_name": "United Stated", "status": "completed", "status_reason": null,
            "duration_seconds": 490, "ring_seconds": 2, "billed_minutes": 9, "call_charge": "0.040",
            "logged_ok": true, "started_ok": true, "ended_ok": true,
            "agent_email": "test@example.com", "agent_name": "Demo User",
            "admin_email": "admin@example.com", "note": "Call notes goes here",
            "recording_url": "https://recording.XXX.mp3", "answered_device": "web",
            "hangup_by": "agent", "call_queue": false, "reason": "User not available",
            "dispositions": null, "parse_warnings": null, "fresh": true
        })
    );
    let tags = app
        .rows("SELECT t.name FROM call_tags ct JOIN tags t ON t.id = ct.tag_id ORDER BY 1")
        .await;
    assert_eq!(tags, vec![json!({"name": "Tag1"}), json!({"name": "Tag2"})]);
    let raw = app
        .row("SELECT kind, deliveries, error, body, payload->>'callSid' AS sid FROM raw_events")
        .await;
    assert_eq!(
        raw,
        json!({"kind": "call", "deliveries": 1, "error": null, "body": null, "sid": "CA5fcabcd366fac3fe8c00c111f135e123"})
    );
}

#[tokio::test]
async fn newer_payload_shape_is_stored() {
    let app = spawn_app().await;
    let (code, body) = app.post(NEWER_CALL).await;
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("stored")),
        "{body}"
    );
    let row = app
        .row(
            "SELECT from_number, to_number, dial_code, status, status_reason, duration_seconds,
                     ring_seconds, billed_minutes, call_charge::text AS charge, agent_email,
                     admin_email, answered_device, hangup_by, call_queue, reason, note,
                     recording_url, dispositions, tags
                FROM call_history",
        )
        .await;
    assert_eq!(
        row,
        json!({
            "from_number": "+14155550100", "to_number": "+442071838750", "dial_code": "44",
            "status": "no_answer", "status_reason": "Agent did not pick up", "duration_seconds": 0,
            "ring_seconds": 31, "billed_minutes": 0, "charge": "0.0",
            "agent_email": "agent.one@example.com", "admin_email": "owner@example.com",
            "answered_device": "android", "hangup_by": "client", "call_queue": true,
            "reason": null, "note": null, "recording_url": null,
            "dispositions": ["Callback requested"], "tags": ["Follow-up", "VIP"]
        })
    );
    // A field the table has no column for stays in the raw payload.
    let raw = app
        .row("SELECT payload->'someNewField' AS f FROM raw_events")
        .await;
    assert_eq!(raw, json!({"f": {"x": 1}}));
}

/// Values travel to PostgreSQL as typed arrays, numbers and lists as text it parses: whatever
/// characters a value holds and however a number is written, it is stored as sent, and the
/// same event delivered again in other bytes compares equal (a duplicate).
#[tokio::test]
async fn awkward_values_are_stored_exactly_and_compare_equal_again() {
    let app = spawn_app().await;
    let dispositions = json!([
        "a,b",
        "say \"hi\"",
        "back\\slash",
        "{x}",
        "NULL",
        "é 😀",
        "tab\there",
        "x",
        "x"
    ]);
    let mut call: serde_json::Value = serde_json::from_str(NEWER_CALL).unwrap();
    call["dispositions"] = dispositions.clone();
    call["callCharge"] = json!("-1.50");
    call["note"] = json!("line\nbreak, \"quoted\" \\ {braces} 'single' NULL");
    call["tags"] = json!(["a,b", "NULL", "\"q\""]);
    let (code, body) = app.post(call.to_string()).await;
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("stored")),
        "{body}"
    );
    let sms = with(SMS, "content", json!("{\"not\": \"json\"} , NULL \\ é"));
    assert_eq!(app.post(sms.clone()).await.1["status"], "stored");

    let row = app
        .row("SELECT dispositions, call_charge::text AS charge, note, tags FROM call_history")
        .await;
    assert_eq!(
        row,
        json!({
            "dispositions": dispositions, "charge": "-1.50",
            "note": "line\nbreak, \"quoted\" \\ {braces} 'single' NULL",
            "tags": ["\"q\"", "NULL", "a,b"]
        })
    );
    let content = app.row("SELECT content FROM sms").await;
    assert_eq!(
        content,
        json!({"content": "{\"not\": \"json\"} , NULL \\ é"})
    );

    // The same content in other bytes: every column compares equal to what is stored.
    let (code, body) = app.post(format!("{call:#}")).await;
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("duplicate")),
        "{body}"
    );
    let sms_again: serde_json::Value = serde_json::from_str(&sms).unwrap();
    let (_, body) = app.post(format!("{sms_again:#}")).await;
    assert_eq!(body["status"], "duplicate", "{body}");
}

/// The service prints payloads with each object's keys in the order jsonb keeps them (it
/// saves PostgreSQL a sort): PostgreSQL's own order must agree, multi-byte keys included,
/// and the stored payload is the body's value.
#[tokio::test]
async fn payload_keys_are_printed_in_the_order_postgresql_keeps_them() {
    let app = spawn_app().await;
    let body = r#"{"activityType":"call","callSid":"CA-order","zz":1,"é":2,"b":{"ccc":1,"é":2,"a":3},"aaa":4,"ab":5,"a":6,"Z":7}"#;
    assert_eq!(app.post(body).await.1["status"], "stored");
    let printed = callhippo_ingest::payload::decode(body.as_bytes(), None)
        .payload
        .unwrap();
    // `json` (unlike `jsonb`) keeps the keys of a text in their order: that of the printed
    // text, against that of the stored payload.
    let row = app
        .row(
            "SELECT (SELECT array_agg(k) FROM jsonb_object_keys(payload) k) AS top,
                    (SELECT array_agg(k) FROM jsonb_object_keys(payload->'b') k) AS nested,
                    (SELECT array_agg(k) FROM json_object_keys($$PRINTED$$::json) k) AS printed_top,
                    (SELECT array_agg(k) FROM json_object_keys($$PRINTED$$::json->'b') k)
                        AS printed_nested,
                    payload = $$BODY$$::jsonb AS same_value
               FROM raw_events"
                .replace("PRINTED", &printed)
                .replace("BODY", body)
                .as_str(),
        )
        .await;
    assert_eq!(row["top"], row["printed_top"], "{printed}");
    assert_eq!(row["nested"], row["printed_nested"], "{printed}");
    assert_eq!(
        row["top"],
        json!([
            "Z",
            "a",
            "b",
            "ab",
            "zz",
            "é",
            "aaa",
            "callSid",
            "activityType"
        ])
    );
    assert_eq!(row["same_value"], true);
}

#[tokio::test]
async fn vendor_sms_and_status_samples_are_stored() {
    let app = spawn_app().await;
    assert_eq!(app.post(SMS).await.1["status"], "stored");
    assert_eq!(app.post(STATUS).await.1["status"], "stored");
    let sms = app
        .row(
            "SELECT sms_type, from_number, to_number, status, content, sms_charge::text AS charge,
                     agent_email, agent_name, admin_email, length(sms_key) AS key_len,
                     logged_at = '2020-05-12T00:53:57.688Z' AS logged_ok
                FROM sms",
        )
        .await;
    assert_eq!(
        sms,
        json!({"sms_type": "outgoing", "from_number": "+9323243432", "to_number": "+41232132131",
               "status": "completed", "content": "SMS text goes here", "charge": "0.040",
               "agent_email": "test@example.com", "agent_name": "Demo User",
               "admin_email": "admin@example.com", "key_len": 64, "logged_ok": true})
    );
    let status = app
        .row(
            "SELECT call_sid, status, occurred_at = '2024-03-28T10:05:50Z' AS at_ok, call_type,
                     from_number, to_number, agent_email, agent_id, dial_code, parse_warnings
                FROM call_status",
        )
        .await;
    assert_eq!(
        status,
        json!({"call_sid": "8956bxxxxxxxxx-xxxxxx-xxxxxx02428", "status": "completed", "at_ok": true,
               "call_type": "outgoing", "from_number": "+17xxxxxxxx6", "to_number": "+13xxxxxxxx0",
               "agent_email": "test@example.com", "agent_id": "610xxxxxxxxxxxxxxxxxx8f3",
               "dial_code": "1", "parse_warnings": null})
    );
}

#[tokio::test]
async fn unreadable_fields_are_warnings_and_the_row_is_kept() {
    let app = spawn_app().await;
    let body = with(
        &with(CALL, "callCharge", json!("N/A")),
        "startTime",
        json!("soon"),
    );
    let (code, answer) = app.post(body).await;
    assert_eq!(code, 200);
    assert_eq!(answer["status"], "stored");
    assert_eq!(
        answer["warnings"],
        json!({"callCharge": "not a decimal number: \"N/A\"", "startTime": "not a time: \"soon\""})
    );
    let row = app
        .row("SELECT call_charge, started_at, parse_warnings, duration_seconds FROM calls")
        .await;
    assert_eq!(
        row,
        json!({"call_charge": null, "started_at": null, "duration_seconds": 490,
               "parse_warnings": {"callCharge": "not a decimal number: \"N/A\"", "startTime": "not a time: \"soon\""}})
    );
}

#[tokio::test]
async fn missing_keys_are_422_naming_the_field_and_kept_raw() {
    let app = spawn_app().await;
    for (body, field) in [
        (without(CALL, "callSid"), "callSid"),
        (with(CALL, "callSid", json!("   ")), "callSid"),
        (without(SMS, "from"), "from"),
        (without(SMS, "to"), "to"),
        (with(SMS, "time", json!("not a time")), "time"),
        (without(STATUS, "status"), "status"),
        (without(STATUS, "dateTime"), "dateTime"),
        (with(STATUS, "callSid", json!("")), "callSid"),
    ] {
        let (code, answer) = app.post(body.clone()).await;
        assert_eq!(code, 422, "{body}: {answer}");
        assert_eq!(answer["status"], "rejected");
        assert_eq!(answer["field"], field);
        assert!(
            answer["error"].as_str().unwrap().contains(field),
            "{answer}"
        );
    }
    assert_eq!(
        app.count("raw_events WHERE error IS NOT NULL AND payload IS NOT NULL")
            .await,
        8
    );
    assert_eq!(
        app.count("calls").await + app.count("sms").await + app.count("call_status").await,
        0
    );
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_are_400_and_kept() {
    let app = spawn_app().await;
    for body in ["not json at all", "[1,2,3]", "{\"unterminated\": ", ""] {
        let (code, answer) = app.post(body).await;
        assert_eq!(code, 400, "{body:?}: {answer}");
        assert_eq!(answer["status"], "rejected");
    }
    let raw = app.rows("SELECT kind, body, payload, error IS NOT NULL AS has_error FROM raw_events ORDER BY id").await;
    assert_eq!(raw.len(), 4);
    assert_eq!(
        raw[0],
        json!({"kind": "invalid", "body": "not json at all", "payload": null, "has_error": true})
    );
    assert_eq!(raw[1]["payload"], json!([1, 2, 3]));
}

#[tokio::test]
async fn nul_characters_and_invalid_utf8_are_kept_not_crashed_on() {
    let app = spawn_app().await;
    let body = with(CALL, "note", json!("before\u{0}after"));
    let (code, answer) = app.post(body.clone()).await;
    assert_eq!(
        (code, answer["status"].as_str()),
        (200, Some("stored")),
        "{answer}"
    );
    assert_eq!(
        app.row("SELECT note FROM calls").await,
        json!({"note": "beforeafter"})
    );
    let raw = app
        .row("SELECT body, payload->>'note' AS note FROM raw_events")
        .await;
    assert_eq!(raw, json!({"body": body, "note": "beforeafter"}));

    let bytes: &'static [u8] = b"{\"activityType\":\"call\",\"callSid\":\"\xff\xfe\"}\x00";
    let (code, answer) = app.post(bytes).await;
    assert_eq!(code, 400, "{answer}");
    let kept: Vec<u8> =
        sqlx::query_scalar("SELECT body_bytes FROM raw_events WHERE kind = 'invalid'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(kept, bytes);
}

#[tokio::test]
async fn connection_test_and_unknown_kinds_are_kept_raw_only() {
    let app = spawn_app().await;
    let (code, answer) = app.post(with(CALL, "to", json!("+11111111111"))).await;
    assert_eq!(
        (code, answer["status"].as_str()),
        (200, Some("test")),
        "{answer}"
    );
    let (code, answer) = app.post(r#"{"toNumber":"+11111111111"}"#).await;
    assert_eq!((code, answer["status"].as_str()), (200, Some("test")));
    let (code, answer) = app
        .post(r#"{"event":"call_notify","agentEmail":"a@b.c"}"#)
        .await;
    assert_eq!((code, answer["status"].as_str()), (202, Some("archived")));
    let (code, _) = app
        .post(with(CALL, "activityType", json!("voicemail")))
        .await;
    assert_eq!(code, 202);
    assert_eq!(app.count("calls").await, 0);
    let kinds = app.rows("SELECT kind FROM raw_events ORDER BY id").await;
    assert_eq!(
        kinds,
        vec![
            json!({"kind": "test"}),
            json!({"kind": "test"}),
            json!({"kind": "unknown"}),
            json!({"kind": "unknown"})
        ]
    );
}

#[tokio::test]
async fn form_bodies_bom_and_any_content_type() {
    let app = spawn_app().await;
    let form = "activityType=sms&from=%2B15550001&to=%2B15550002&time=2025-06-23T13%3A13%3A50Z&content=hi+there";
    let (code, answer) = app
        .post_with(form, "application/x-www-form-urlencoded")
        .await;
    assert_eq!(
        (code, answer["status"].as_str()),
        (200, Some("stored")),
        "{answer}"
    );
    assert_eq!(
        app.row("SELECT content, from_number FROM sms").await,
        json!({"content": "hi there", "from_number": "+15550001"})
    );
    assert_eq!(
        app.row("SELECT body FROM raw_events").await,
        json!({"body": form})
    );

    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(CALL.as_bytes());
    let (code, answer) = app.post_with(bom, "text/plain").await;
    assert_eq!(
        (code, answer["status"].as_str()),
        (200, Some("stored")),
        "{answer}"
    );
}

#[tokio::test]
async fn token_is_required_when_set() {
    let app = spawn_app_with(|s| s.webhook_token = Some("s3cret".into())).await;
    let url = app.webhook_url();
    let c = &app.client;
    let (code, a) = send(c.post(&url).body(CALL)).await;
    assert_eq!((code, a["status"].as_str()), (401, Some("rejected")));
    let (code, _) = send(c.post(format!("{url}?token=wrong")).body(CALL)).await;
    assert_eq!(code, 401);
    let (code, _) = send(c.post(&url).bearer_auth("s3cre").body(CALL)).await;
    assert_eq!(code, 401);
    assert_eq!(
        app.count("raw_events").await,
        0,
        "nothing stored without the token"
    );

    let (code, _) = send(c.post(format!("{url}?token=s3cret")).body(CALL)).await;
    assert_eq!(code, 200);
    let (code, a) = send(c.post(&url).bearer_auth("s3cret").body(SMS)).await;
    assert_eq!(code, 200, "{a}");
    // The vendor's URL check needs no token.
    let (code, _) = answer(c.get(&url).send().await.unwrap()).await;
    assert_eq!(code, 200);
    let resp = c.head(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test]
async fn body_limit_method_and_unknown_paths() {
    let app = spawn_app_with(|s| s.max_body_bytes = 1024).await;
    let big = format!(
        r#"{{"activityType":"call","callSid":"x","note":"{}"}}"#,
        "a".repeat(5000)
    );
    let (code, answer) = app.post(big.clone()).await;
    assert_eq!(
        (code, answer["status"].as_str()),
        (413, Some("rejected")),
        "{answer}"
    );
    // Without Content-Length (chunked): refused once the limit is passed.
    let stream = futures_util::stream::iter(
        big.into_bytes()
            .chunks(100)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let resp = app
        .client
        .post(app.webhook_url())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    assert_eq!(app.count("raw_events").await, 0);

    let resp = app
        .client
        .put(app.webhook_url())
        .body(CALL)
        .send()
        .await
        .unwrap();
    let (code, answer) = crate::helpers::answer(resp).await;
    assert_eq!((code, answer["status"].as_str()), (405, Some("rejected")));
    let resp = app
        .client
        .get(format!("{}/nope", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(app.count("raw_events").await, 0);
}

#[tokio::test]
async fn status_events_before_and_after_the_call_log() {
    let app = spawn_app().await;
    let sid = "CA-order-1";
    let status = |s: &str, at: &str| {
        json!({"callSid": sid, "status": s, "dateTime": at, "agentId": "a1", "fromNumber": "+1", "toNumber": "+2"}).to_string()
    };
    // Ringing and answered arrive before the log, completed after it, and out of order.
    assert_eq!(
        app.post(status("answered", "2025-06-23T13:13:25Z")).await.0,
        200
    );
    assert_eq!(
        app.post(status("ringing", "2025-06-23T13:13:19Z")).await.0,
        200
    );
    assert_eq!(
        app.row(&format!(
            "SELECT count(*) AS n FROM call_history WHERE call_sid = '{sid}'"
        ))
        .await,
        json!({"n": 0})
    );
    assert_eq!(app.post(with(CALL, "callSid", json!(sid))).await.0, 200);
    assert_eq!(
        app.row("SELECT last_status FROM call_history").await,
        json!({"last_status": "answered"})
    );
    assert_eq!(
        app.post(status("completed", "2025-06-23T13:13:50Z"))
            .await
            .0,
        200
    );
    // A late, older event does not become the last status.
    assert_eq!(
        app.post(status("initiated", "2025-06-23T13:13:00Z"))
            .await
            .0,
        200
    );
    assert_eq!(
        app.row("SELECT last_status FROM call_history").await,
        json!({"last_status": "completed"})
    );
    assert_eq!(app.count("call_status").await, 4);
}

#[tokio::test]
async fn probes_answer() {
    let app = spawn_app().await;
    let resp = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (code, body) = readyz(&app.client, &app.address).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn readyz_is_503_when_the_schema_is_not_current() {
    let app = spawn_app().await;
    let latest = callhippo_ingest::store::migrate::latest_version();
    sqlx::query("DELETE FROM refinery_schema_history WHERE version = $1")
        .bind(latest)
        .execute(&app.pool)
        .await
        .unwrap();
    let (code, body) = readyz(&app.client, &app.address).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["expected_schema_version"], latest);
}

/// Every field of every kind set to every nasty value: no 5xx, every body kept.
#[tokio::test]
async fn hostile_values_in_every_field_never_get_a_5xx() {
    let app = spawn_app().await;
    let nasty = [
        json!(null),
        json!(""),
        json!("   "),
        json!("\u{0}"),
        json!("x\u{0}y"),
        json!(true),
        json!(-1),
        json!(1e300),
        json!(u64::MAX),
        json!("99999999999999999999999999999999999"),
        json!("１２:３４"),
        json!("2025-02-30T25:61:61Z"),
        json!([]),
        json!([null, {"a": []}, 1.5]),
        json!({"nested": {"deeper": [1, 2, {"x": "\u{0}"}]}}),
        json!("'; DROP TABLE calls; --"),
        json!("a".repeat(10_000)),
    ];
    let mut sent = std::collections::HashSet::new();
    for base in [CALL, SMS, STATUS, NEWER_CALL] {
        let fields: Vec<String> = serde_json::from_str::<serde_json::Value>(base)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        for field in &fields {
            let mut tasks = Vec::new();
            for value in &nasty {
                let body = with(base, field, value.clone());
                sent.insert(body.clone());
                let (client, url) = (app.client.clone(), app.webhook_url());
                tasks.push(tokio::spawn(async move {
                    answer(client.post(url).body(body).send().await.unwrap()).await
                }));
            }
            for t in tasks {
                let (code, a) = t.await.unwrap();
                assert!(code < 500, "{field}: {code} {a}");
                assert!(a["status"].is_string(), "{a}");
            }
        }
    }
    assert_eq!(
        app.count("raw_events").await,
        sent.len() as i64,
        "every distinct body kept once"
    );
    let (code, _) = answer(
        app.client
            .get(format!("{}/readyz", app.address))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 200, "still serving");
}

/// Values the reader accepts must be storable: a year-0 time, or text too long for an index,
/// is a warning (or, in a key, a 422), never a database error.
#[tokio::test]
async fn values_beyond_postgresql_limits_are_warnings_not_errors() {
    let app = spawn_app().await;
    let long = "x".repeat(3000);
    for (body, code, field) in [
        (
            with(CALL, "time", json!("0000-01-01T00:00:00Z")),
            200,
            "time",
        ),
        (
            with(
                &with(CALL, "callSid", json!("CA-long-email")),
                "email",
                json!(format!("{long}@x.io")),
            ),
            200,
            "email",
        ),
        (
            with(
                &with(CALL, "callSid", json!("CA-long-tag")),
                "tags",
                json!(["fine", long]),
            ),
            200,
            "tags",
        ),
        (
            with(
                &with(CALL, "callSid", json!("CA-long-from")),
                "from",
                json!(long),
            ),
            200,
            "from",
        ),
        (with(CALL, "callSid", json!(long)), 422, "callSid"),
        (with(STATUS, "status", json!(long)), 422, "status"),
        (
            with(STATUS, "dateTime", json!("0000-01-01T00:00:00Z")),
            422,
            "dateTime",
        ),
    ] {
        let (got, a) = app.post(body).await;
        assert_eq!(got, code, "{field}: {a}");
        if code == 200 {
            assert_eq!(a["status"], "stored", "{a}");
            assert!(a["warnings"][field].is_string(), "{a}");
        } else {
            assert_eq!(a["field"], field, "{a}");
            assert!(
                a.to_string().len() < 500,
                "the key is not echoed back whole"
            );
        }
    }
    assert_eq!(app.count("calls").await, 4);
    assert_eq!(
        app.rows("SELECT name FROM tags ORDER BY name COLLATE \"C\"")
            .await,
        vec![
            json!({"name": "Tag1"}),
            json!({"name": "Tag2"}),
            json!({"name": "fine"})
        ]
    );
}

/// A repeated key counts once, with its last value (as PostgreSQL's jsonb keeps it): an
/// earlier value PostgreSQL could not store (a NUL, a number beyond `numeric`) must not cost
/// the event, nor its neighbours.
#[tokio::test]
async fn repeated_keys_with_unstorable_earlier_values_are_stored() {
    let app = spawn_app().await;
    let bodies = [
        r#"{"activityType":"call","callSid":"CA-REP-1","note":"a\u0000b","note":"kept"}"#,
        r#"{"activityType":"call","callSid":"CA-REP-2","callCharge":1e999999,"callCharge":"0.5"}"#,
        r#"{"activityType":"nothing we know","x":"\u0000","x":1}"#,
    ];
    for body in bodies {
        let (code, answer) = app.post(body).await;
        assert!(code == 200 || code == 202, "{body}: {code} {answer}");
    }
    let calls = app
        .rows("SELECT call_sid, note, call_charge::text AS charge FROM calls ORDER BY 1")
        .await;
    assert_eq!(
        calls,
        vec![
            json!({"call_sid": "CA-REP-1", "note": "kept", "charge": null}),
            json!({"call_sid": "CA-REP-2", "note": null, "charge": "0.5"}),
        ]
    );
    let raw = app
        .rows("SELECT kind, error, payload->>'note' AS note FROM raw_events ORDER BY id")
        .await;
    assert_eq!(raw.len(), 3, "{raw:?}");
    assert!(raw.iter().all(|r| r["error"].is_null()), "{raw:?}");
}

/// An event the database refuses (here: a constraint added for the test) is answered 422 and
/// kept in `raw_events` with the error, its body as text; its neighbours are stored.
#[tokio::test]
async fn an_event_the_database_refuses_is_kept_raw_with_the_error() {
    let app = spawn_app().await;
    let pool = app.db.pool().await;
    sqlx::query(
        "ALTER TABLE calls ADD CONSTRAINT test_refuses CHECK (note IS DISTINCT FROM 'boom')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let refused = with(CALL, "note", json!("boom"));
    let (code, answer) = app.post(refused.clone()).await;
    assert_eq!(
        (code, answer["status"].as_str()),
        (422, Some("rejected")),
        "{answer}"
    );
    assert_eq!(app.post(SMS).await.1["status"], "stored");
    let raw = app
        .row(
            "SELECT kind, payload IS NULL AS no_payload, body, error LIKE '%test_refuses%' AS named
               FROM raw_events WHERE kind = 'call'",
        )
        .await;
    assert_eq!(
        raw,
        json!({"kind": "call", "no_payload": true, "body": refused, "named": true})
    );
    assert_eq!(app.count("calls").await, 0);
}

/// `extraParams` of newer call payloads land in their columns and in `call_history`; rows
/// say where they came from; `replay` rebuilds them from `raw_events`.
#[tokio::test]
async fn extra_params_are_stored_and_rebuilt_by_replay() {
    let app = spawn_app().await;
    let extra = json!({"agentId": "61a0f3c2e4b0", "campaignId": "c-9", "crmUniqueId": "lead-77",
                       "virtualNumber": "+18885550199"});
    let (code, answer) = app.post(with(NEWER_CALL, "extraParams", extra)).await;
    assert_eq!((code, answer["status"].as_str()), (200, Some("stored")));
    let row = json!({"agent_id": "61a0f3c2e4b0", "campaign_id": "c-9", "crm_unique_id": "lead-77",
                     "virtual_number": "+18885550199", "source": "webhook", "api_id": null,
                     "answered_at": null});
    let select = "SELECT agent_id, campaign_id, crm_unique_id, virtual_number, source, api_id, \
                  answered_at FROM call_history";
    assert_eq!(app.row(select).await, row);
    assert_eq!(
        app.row("SELECT source FROM raw_events").await["source"],
        "webhook"
    );

    sqlx::query("UPDATE calls SET agent_id = NULL, virtual_number = NULL")
        .execute(&app.pool)
        .await
        .unwrap();
    replay(&app.db, &[]);
    assert_eq!(app.row(select).await, row);
}

/// One guess a request: several `token` parameters, several `Authorization` headers, or one
/// of each, are refused, the right token among them or not.
#[tokio::test]
async fn a_request_carries_one_token_at_most() {
    let app = spawn_app_with(|s| s.webhook_token = Some("0123456789abcdef-right".into())).await;
    let url = app.webhook_url();
    let post = |q: &str| app.client.post(format!("{url}{q}")).body(CALL);
    let (code, _) = send(post("?token=0123456789abcdef-right")).await;
    assert_eq!(code, 200);
    for q in [
        "?token=wrong&token=0123456789abcdef-right",
        "?token=0123456789abcdef-right&token=0123456789abcdef-right",
    ] {
        let (code, answer) = send(post(q)).await;
        assert_eq!(
            (code, answer["status"].as_str()),
            (401, Some("rejected")),
            "{q}"
        );
    }
    let (code, _) = send(
        post("")
            .header("Authorization", "Bearer wrong")
            .header("Authorization", "Bearer 0123456789abcdef-right"),
    )
    .await;
    assert_eq!(code, 401);
    let (code, _) = send(post("").header("Authorization", "Bearer 0123456789abcdef-right")).await;
    assert_eq!(code, 200);
    // One in the query and one in the header are two guesses too.
    let (code, _) =
        send(post("?token=wrong").header("Authorization", "Bearer 0123456789abcdef-right")).await;
    assert_eq!(code, 401);
}

/// A tag name that is stored already takes no value of the ids' sequence, however often it
/// comes again (here through replay, which looks every name up).
#[tokio::test]
async fn repeated_tag_names_use_no_ids() {
    let app = spawn_app().await;
    assert_eq!(app.post(CALL).await.0, 200);
    let last_id = "SELECT last_value AS n FROM tags_id_seq";
    assert_eq!(app.row(last_id).await["n"], 2, "Tag1 and Tag2");
    for _ in 0..3 {
        replay(&app.db, &[]);
    }
    let other = with(
        &with(CALL, "callSid", json!("CA-tags-2")),
        "tags",
        json!(["Tag2", "Tag1", "New"]),
    );
    assert_eq!(app.post(other).await.0, 200);
    assert_eq!(app.row(last_id).await["n"], 3, "one more name, one more id");
}

/// Tag ids go past 2^31 (bigint): years of new names never run them out.
#[tokio::test]
async fn tag_ids_go_past_the_integer_range() {
    let app = spawn_app().await;
    sqlx::query("ALTER SEQUENCE tags_id_seq RESTART WITH 2147483646")
        .execute(&app.pool)
        .await
        .unwrap();
    let call = with(CALL, "tags", json!(["One", "Two", "Three", "Four"]));
    let (code, answer) = app.post(call).await;
    assert_eq!(code, 200, "{answer}");
    let row = app
        .row("SELECT max(t.id) AS top, count(*) AS n FROM call_tags ct JOIN tags t ON t.id = ct.tag_id")
        .await;
    assert_eq!(row["n"], 4);
    assert!(row["top"].as_i64().unwrap() > i64::from(i32::MAX), "{row}");
    let tags = app.row("SELECT tags FROM call_history").await;
    assert_eq!(tags["tags"], json!(["Four", "One", "Three", "Two"]));
    // Written again (the update path), the same ids.
    let changed = with(
        &with(CALL, "tags", json!(["Two", "Five"])),
        "status",
        json!("Missed"),
    );
    assert_eq!(app.post(changed).await.1["status"], "updated");
    let tags = app.row("SELECT tags FROM call_history").await;
    assert_eq!(tags["tags"], json!(["Five", "Two"]));
}

/// An event the database itself refuses is answered 422 without the database's words, which
/// raw_events.error keeps.
#[tokio::test]
async fn the_databases_own_refusal_is_kept_but_not_told_to_the_client() {
    let app = spawn_app().await;
    sqlx::query(
        "ALTER TABLE calls ADD CONSTRAINT refuse_this_one CHECK (call_sid <> 'CA-refused')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let (code, answer) = app.post(with(CALL, "callSid", json!("CA-refused"))).await;
    assert_eq!(
        (code, answer["status"].as_str()),
        (422, Some("rejected")),
        "{answer}"
    );
    let said = answer.to_string();
    assert!(
        !said.contains("refuse_this_one") && !said.contains("violates"),
        "{said}"
    );
    let kept: String = sqlx::query_scalar("SELECT error FROM raw_events WHERE error IS NOT NULL")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(kept.contains("refuse_this_one"), "{kept}");
    assert_eq!(app.count("calls").await, 0);
}
