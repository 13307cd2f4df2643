//! Records read from CallHippo's API meet the webhook's rows (docs/reference.md §4): a call
//! the webhooks missed is inserted as the API's; a stored one only gains what it lacks.

use callhippo_ingest::delivery::Outcome;
use callhippo_ingest::payload::api::call_delivery;
use callhippo_ingest::sink::Sink;
use callhippo_ingest::store::PgSink;
use chrono_tz::America::New_York;
use serde_json::{json, Value};

use crate::helpers::*;

/// The API's record of the call of the CALL fixture (same callSid), as the activity feed
/// lists it.
fn api_record(id: &str) -> Value {
    json!({
        "_id": id,
        "callSid": "CA5fcabcd366fac3fe8c00c111f135e123",
        "callType": "Outgoing",
        "from": "+9323243432",
        "to": "+41232132131",
        "date": "May 11, 2020",
        "time": "8:53:57 PM",
        "callDuration": "00:08:10",
        "ringingDuration": "00:02",
        "callStatus": "Completed",
        "caller": "Demo User (API)",
        "callerEmail": "test@example.com",
        "callCost": 0.04,
        "callNotes": "from the API",
        "callTags": ["FromApi"],
        "callAnswerTime": "Tue May 12 2020 00:54:00 GMT+0000 (Coordinated Universal Time)",
        "callHangupTime": "Tue May 12 2020 01:01:05 GMT+0000 (Coordinated Universal Time)"
    })
}

async fn write_api(sink: &PgSink, records: &[Value]) -> Vec<Outcome> {
    let now = chrono::Utc::now();
    let batch: Vec<_> = records
        .iter()
        .map(|r| call_delivery(r, New_York, now))
        .collect();
    sink.write(&batch).await.unwrap()
}

const SELECT: &str =
    "SELECT source, api_id, answered_at, note, agent_name, tags, duration_seconds, \
                      started_at FROM call_history";

#[tokio::test]
async fn a_call_the_webhooks_missed_is_inserted_as_the_apis() {
    let app = spawn_app().await;
    let sink = PgSink::new(app.pool.clone());
    let outcomes = write_api(&sink, &[api_record("64f1a0000000000000000001")]).await;
    assert_eq!(outcomes, [Outcome::Stored]);
    assert_eq!(
        app.row(SELECT).await,
        json!({"source": "api", "api_id": "64f1a0000000000000000001",
               "answered_at": "2020-05-12T00:54:00+00:00", "note": "from the API",
               "agent_name": "Demo User (API)", "tags": ["FromApi"], "duration_seconds": 490,
               // 8:53:57 PM in New York in May is 00:53:57 UTC the next day.
               "started_at": "2020-05-12T00:53:57+00:00"})
    );
    let raw = app
        .row("SELECT source, kind, payload->>'_id' AS id FROM raw_events")
        .await;
    assert_eq!(
        raw,
        json!({"source": "api", "kind": "call", "id": "64f1a0000000000000000001"})
    );

    // The same record again changes nothing; so does the same call under another _id.
    let before = app.row("SELECT to_jsonb(c) AS r FROM calls c").await;
    assert_eq!(
        write_api(&sink, &[api_record("64f1a0000000000000000001")]).await,
        [Outcome::Duplicate]
    );
    assert_eq!(
        write_api(&sink, &[api_record("64f1a0000000000000000002")]).await,
        [Outcome::Duplicate]
    );
    assert_eq!(
        app.row("SELECT to_jsonb(c) AS r FROM calls c").await,
        before
    );
    assert_eq!(app.count("calls").await, 1);
    assert_eq!(
        app.row("SELECT sum(deliveries) AS n FROM raw_events").await["n"],
        3
    );

    // Its webhook, arriving afterwards, completes the row as an update does; what only the
    // API gives stays, and the row still says where its first values came from.
    let (code, answer) = app.post(CALL).await;
    assert_eq!((code, answer["status"].as_str()), (200, Some("updated")));
    assert_eq!(
        app.row(SELECT).await,
        json!({"source": "api", "api_id": "64f1a0000000000000000001",
               "answered_at": "2020-05-12T00:54:00+00:00", "note": "Call notes goes here",
               "agent_name": "Demo User", "tags": ["Tag1", "Tag2"], "duration_seconds": 490,
               "started_at": "2020-05-12T00:53:57.688+00:00"})
    );
}

#[tokio::test]
async fn a_webhook_row_keeps_every_value_and_only_gains_what_it_lacks() {
    let app = spawn_app().await;
    let sink = PgSink::new(app.pool.clone());
    let (code, _) = app.post(without(CALL, "note")).await;
    assert_eq!(code, 200);
    let before = app.row("SELECT updated_at, received_at FROM calls").await;
    let outcomes = write_api(&sink, &[api_record("64f1a0000000000000000001")]).await;
    assert_eq!(
        outcomes,
        [Outcome::Updated],
        "answered_at, api_id and the note were empty"
    );
    assert_eq!(
        app.row(SELECT).await,
        json!({"source": "webhook", "api_id": "64f1a0000000000000000001",
               "answered_at": "2020-05-12T00:54:00+00:00", "note": "from the API",
               "agent_name": "Demo User", "tags": ["Tag1", "Tag2"], "duration_seconds": 490,
               "started_at": "2020-05-12T00:53:57.688+00:00"})
    );
    assert_eq!(
        app.row("SELECT updated_at, received_at FROM calls").await,
        before,
        "filling is not a delivery of the call: its times stay the webhook's"
    );
    // Read again: nothing left to fill.
    assert_eq!(
        write_api(&sink, &[api_record("64f1a0000000000000000001")]).await,
        [Outcome::Duplicate]
    );
    // Two records of one call in one page: one row.
    let page = [
        api_record("64f1a0000000000000000003"),
        api_record("64f1a0000000000000000004"),
    ];
    assert_eq!(
        write_api(&sink, &page).await,
        [Outcome::Duplicate, Outcome::Duplicate]
    );
    assert_eq!(app.count("calls").await, 1);
}
