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
    let webhook = without(CALL, "note");
    let (code, _) = app.post(webhook.clone()).await;
    assert_eq!(code, 200);
    let before = app.row("SELECT updated_at, received_at FROM calls").await;
    let outcomes = write_api(&sink, &[api_record("64f1a0000000000000000001")]).await;
    assert_eq!(
        outcomes,
        [Outcome::Updated],
        "answered_at and api_id were empty"
    );
    let expected = json!({"source": "webhook", "api_id": "64f1a0000000000000000001",
           "answered_at": "2020-05-12T00:54:00+00:00", "note": null,
           "agent_name": "Demo User", "tags": ["Tag1", "Tag2"], "duration_seconds": 490,
           "started_at": "2020-05-12T00:53:57.688+00:00"});
    // The webhook's own columns stay its own, empty ones too: its next write (a redelivery,
    // the spool, replay) would hold them so again.
    assert_eq!(app.row(SELECT).await, expected);
    assert_eq!(
        app.row("SELECT updated_at, received_at FROM calls").await,
        before,
        "filling is not a delivery of the call: its times stay the webhook's"
    );
    let (code, answer) = app.post(webhook).await;
    assert_eq!(
        (code, answer["status"].as_str()),
        (200, Some("duplicate")),
        "the same bytes again"
    );
    assert_eq!(
        app.row(SELECT).await,
        expected,
        "and what the API gave stays"
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

/// `n` calls over 6–10 March 2026 in New York (the clocks change on the 8th), as the
/// activity feed lists them, with the day each is listed on.
fn listed_calls(n: usize) -> Vec<(chrono::NaiveDate, Value)> {
    (0..n)
        .map(|i| {
            let day = chrono::NaiveDate::from_ymd_opt(2026, 3, 6 + (i % 5) as u32).unwrap();
            let hour = 1 + i % 11;
            let record = json!({
                "_id": format!("64f1{:020x}", i),
                "callSid": format!("CA-bf-{i:04}"),
                "callType": if i % 2 == 0 { "Outgoing" } else { "Incoming" },
                "from": "+15551234567",
                "to": format!("+1555{:07}", i),
                "date": day.format("%b %-d, %Y").to_string(),
                "time": format!("{hour}:05:09 {}", if i % 3 == 0 { "AM" } else { "PM" }),
                "callDuration": format!("00:{:02}:{:02}", i % 60, i % 7),
                "ringingDuration": "00:04",
                "callStatus": if i % 4 == 0 { "Missed" } else { "Completed" },
                "caller": "Ada Agent",
                "callerEmail": "Ada@Example.com",
                "callCost": format!("0.{:02}", i % 100).parse::<f64>().unwrap(),
                "callNotes": "",
                "callTags": if i % 5 == 0 { json!(["VIP"]) } else { json!([]) },
                "callAnswerTime": "Tue Mar 10 2026 15:00:00 GMT+0000 (Coordinated Universal Time)",
                "callHangupTime": "Tue Mar 10 2026 15:01:00 GMT+0000 (Coordinated Universal Time)",
            });
            (day, record)
        })
        .collect()
}

fn backfill(app: &TestApp, api: &crate::fake_api::FakeApi, token: &str) -> (i32, String, String) {
    let out = bin()
        .args(["backfill", "--from", "2026-03-06", "--to", "2026-03-10"])
        .env("DATABASE_URL", &app.db.url)
        .env("CALLHIPPO_API_URL", &api.url)
        .env("CALLHIPPO_API_TOKEN", token)
        .env("CALLHIPPO_TIMEZONE", "America/New_York")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn backfill_fills_in_what_the_webhooks_missed_and_a_second_run_changes_nothing() {
    use crate::fake_api::{FakeApi, Quirks, TOKEN};
    let app = spawn_app().await;
    let mut listed = listed_calls(150);
    // One physical call listed twice, under two _ids.
    let mut twice = listed[7].1.clone();
    twice["_id"] = json!("64f1ffffffffffffffffffff");
    listed.push((listed[7].0, twice));
    // And a record without its key: archived with the error, counted as rejected.
    let mut keyless = listed[9].1.clone();
    keyless["callSid"] = json!("");
    listed.push((listed[9].0, keyless));
    // Thirty of them came by webhook first.
    for i in 0..30 {
        let body = with(
            &with(CALL, "callSid", json!(format!("CA-bf-{i:04}"))),
            "note",
            json!("by webhook"),
        );
        assert_eq!(app.post(body).await.0, 200);
    }
    let quirks = Quirks {
        html_once: true,
        throttle_once: true,
        ..Quirks::default()
    };
    let api = FakeApi::start(listed, quirks);

    let (code, stdout, stderr) = backfill(&app, &api, TOKEN);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("pages 2, records 152, inserted 120 (missed by webhooks), filled 30, unchanged 1, rejected 1"),
        "{stdout}"
    );
    assert_eq!(app.count("calls").await, 150, "every call once");
    let webhook_rows = app
        .row(
            "SELECT count(*) AS n FROM calls WHERE source = 'webhook' AND note = 'by webhook'
                AND api_id IS NOT NULL AND answered_at IS NOT NULL",
        )
        .await;
    assert_eq!(webhook_rows["n"], 30, "webhook rows unchanged but filled");
    // 10:05:09 PM on 7 March in New York is winter time (UTC-5): the 8th in UTC; 11:05:09 PM
    // on the 8th, after the clocks changed, and 1:05:09 AM on the 9th are summer time (UTC-4).
    let times = app
        .rows(
            "SELECT call_sid, started_at, duration_seconds, call_charge::text AS charge, status
               FROM calls WHERE call_sid IN ('CA-bf-0031', 'CA-bf-0032', 'CA-bf-0033')
              ORDER BY call_sid",
        )
        .await;
    assert_eq!(
        times,
        [
            json!({"call_sid": "CA-bf-0031", "started_at": "2026-03-08T03:05:09+00:00",
                   "duration_seconds": 1863, "charge": "0.31", "status": "completed"}),
            json!({"call_sid": "CA-bf-0032", "started_at": "2026-03-09T03:05:09+00:00",
                   "duration_seconds": 1924, "charge": "0.32", "status": "missed"}),
            json!({"call_sid": "CA-bf-0033", "started_at": "2026-03-09T05:05:09+00:00",
                   "duration_seconds": 1985, "charge": "0.33", "status": "completed"}),
        ]
    );
    let run = app
        .row(
            "SELECT trigger, status, range_from::text AS f, range_to::text AS t, pages, records,
                     inserted, filled, unchanged, rejected, error FROM sync_runs",
        )
        .await;
    assert_eq!(
        run,
        json!({"trigger": "backfill", "status": "succeeded", "f": "2026-03-06", "t": "2026-03-10",
               "pages": 2, "records": 152, "inserted": 120, "filled": 30, "unchanged": 1, "rejected": 1,
               "error": null})
    );
    // The requests as the API wants them: the token in its header, strings of digits, days
    // as YYYY/MM/DD; the HTML page and the 429 were tried again.
    let requests = api.requests();
    assert_eq!(requests.len(), 4, "{requests:?}");
    for (token, body) in &requests {
        assert_eq!(token.as_deref(), Some(TOKEN));
        assert_eq!(body["startDate"], "2026/03/06");
        assert_eq!(body["endDate"], "2026/03/10");
        assert_eq!(body["limit"], "100");
    }
    assert_eq!(requests[3].1["skip"], "100");

    let before = app
        .row("SELECT to_jsonb(array_agg(c ORDER BY call_sid)) AS r FROM calls c")
        .await;
    let (code, stdout, stderr) = backfill(&app, &api, TOKEN);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("inserted 0 (missed by webhooks), filled 0, unchanged 151"),
        "{stdout}"
    );
    let after = app
        .row("SELECT to_jsonb(array_agg(c ORDER BY call_sid)) AS r FROM calls c")
        .await;
    assert_eq!(before, after, "a second run changes nothing");
}

#[tokio::test]
async fn a_refused_token_or_the_plans_limit_fails_clearly_and_writes_no_row() {
    use crate::fake_api::{FakeApi, Quirks, TOKEN};
    let app = spawn_app().await;
    let api = FakeApi::start(listed_calls(5), Quirks::default());
    let (code, _, stderr) = backfill(&app, &api, "not-the-token");
    assert_eq!(code, 2, "a setting to fix: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("refused CALLHIPPO_API_TOKEN") && stderr.contains("Invalid API token"),
        "{stderr}"
    );

    let limited = Quirks {
        plan_starts: chrono::NaiveDate::from_ymd_opt(2026, 3, 7),
        ..Quirks::default()
    };
    let api = FakeApi::start(listed_calls(5), limited);
    let (code, _, stderr) = backfill(&app, &api, TOKEN);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("Kindly upgrade your plan"),
        "quotes the API: {stderr}"
    );
    assert_eq!(app.count("calls").await, 0);
    assert_eq!(app.count("raw_events").await, 0);
    let runs = app
        .rows("SELECT status, error IS NOT NULL AS said FROM sync_runs ORDER BY id")
        .await;
    assert_eq!(
        runs,
        [
            json!({"status": "failed", "said": true}),
            json!({"status": "failed", "said": true})
        ]
    );
}

#[tokio::test]
async fn a_page_of_one_record_given_as_an_object_is_read() {
    use crate::fake_api::{FakeApi, Quirks, TOKEN};
    let app = spawn_app().await;
    let api = FakeApi::start(
        listed_calls(1),
        Quirks {
            single_as_object: true,
            ..Quirks::default()
        },
    );
    let (code, stdout, stderr) = backfill(&app, &api, TOKEN);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("records 1, inserted 1"), "{stdout}");
    assert_eq!(app.count("calls").await, 1);
}

/// With a token, `serve` reconciles at once and then every RECONCILE_INTERVAL: today's calls
/// reach the tables without any webhook, and the metrics say so.
#[tokio::test]
async fn serve_reconciles_and_fills_a_hole_left_while_the_webhooks_were_down() {
    use crate::fake_api::{FakeApi, Quirks, TOKEN};
    use callhippo_ingest::reconcile::ReconcileSettings;
    let today = chrono::Utc::now().date_naive();
    let mut listed: Vec<_> = listed_calls(4)
        .into_iter()
        .map(|(_, mut record)| {
            record["date"] = json!(today.format("%b %-d, %Y").to_string());
            (today, record)
        })
        .collect();
    // One ended a minute ago: its webhook may still come, so it waits for the next run.
    let just_now = chrono::Utc::now() - chrono::TimeDelta::minutes(1);
    listed[3].1["callHangupTime"] = json!(just_now.to_rfc3339());
    let api = FakeApi::start(listed, Quirks::default());
    let url = api.url.clone();
    let app = spawn_app_with(move |s| {
        s.reconcile = Some(ReconcileSettings {
            api_url: url,
            token: TOKEN.to_owned(),
            zone: chrono_tz::UTC,
            every: std::time::Duration::from_secs(3600),
            days: 2,
        })
    })
    .await;
    for _ in 0..150 {
        if app.count("calls").await == 3
            && app
                .row("SELECT count(*) AS n FROM sync_runs WHERE status = 'succeeded'")
                .await["n"]
                == 1
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(app.count("calls").await, 3);
    let run = app
        .row("SELECT trigger, status, range_from = current_date - 1 AS two_days, inserted FROM sync_runs")
        .await;
    assert_eq!(
        run,
        json!({"trigger": "reconcile", "status": "succeeded", "two_days": true, "inserted": 3})
    );
    assert_eq!(app.row("SELECT records FROM sync_runs").await["records"], 4);
    assert_eq!(
        app.row("SELECT count(*) AS n FROM calls WHERE call_sid = 'CA-bf-0003'")
            .await["n"],
        0,
        "a call that ended a minute ago is left to its webhook"
    );
    assert_eq!(
        app.row("SELECT count(*) AS n FROM calls WHERE source = 'api'")
            .await["n"],
        3
    );
    let metrics = text(app.client.get(format!("{}/metrics", app.address))).await;
    assert!(
        metrics.contains(r#"callhippo_sync_records_total{kind="call",result="inserted"} 3"#),
        "{metrics}"
    );
    let last = metrics
        .lines()
        .find(|l| l.starts_with(r#"callhippo_sync_last_success_timestamp_seconds{kind="call"}"#))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap();
    assert!(last > chrono::Utc::now().timestamp() - 60, "{last}");
    let (code, _) = readyz(&app.client, &app.address).await;
    assert_eq!(code, 200);
}

/// Backfill and live webhooks about the same calls at the same moment, through two writers
/// as two replicas would: one row per call, nothing refused, and whichever came first, the
/// row ends with the webhook's values and the API's additions.
#[tokio::test]
async fn backfill_beside_live_webhooks_makes_one_row_per_call() {
    let app = spawn_app().await;
    let sink = PgSink::new(app.pool.clone());
    let n = 60;
    let records: Vec<Value> = (0..n)
        .map(|i| {
            let mut r = api_record(&format!("64f1{i:020x}"));
            r["callSid"] = json!(format!("CA-cc-{i:03}"));
            r
        })
        .collect();
    let api = async {
        let mut outcomes = Vec::new();
        for page in records.chunks(7) {
            outcomes.extend(write_api(&sink, page).await);
        }
        outcomes
    };
    let webhooks = async {
        let mut codes = Vec::new();
        for i in 0..n {
            let body = with(CALL, "callSid", json!(format!("CA-cc-{i:03}")));
            codes.push(app.post(body).await.0);
        }
        codes
    };
    let (outcomes, codes) = tokio::join!(api, webhooks);
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    assert_eq!(outcomes.len(), n);
    assert_eq!(app.count("calls").await, n as i64);
    let settled = app
        .row(
            "SELECT count(*) FILTER (WHERE note = 'Call notes goes here' AND api_id IS NOT NULL
                                      AND answered_at IS NOT NULL
                                      AND duration_seconds = 490) AS both
               FROM call_history",
        )
        .await;
    assert_eq!(settled["both"], n as i64);
    let tags = app
        .row("SELECT count(*) AS n FROM call_history WHERE tags = ARRAY['Tag1', 'Tag2']")
        .await;
    assert_eq!(
        tags["n"], n as i64,
        "the webhook's tags, whatever the order"
    );
}

/// `replay` reads the API's archived records with the API's reader (in the account's zone)
/// and its merge rule: emptied tables come back as they were, and their archived kind stays.
#[tokio::test]
async fn replay_rebuilds_what_the_api_filled_in() {
    let app = spawn_app().await;
    let sink = PgSink::new(app.pool.clone());
    let (code, _) = app.post(without(CALL, "note")).await;
    assert_eq!(code, 200);
    let mut missed = api_record("64f1a0000000000000000009");
    missed["callSid"] = json!("CA-missed-by-webhooks");
    let outcomes = write_api(&sink, &[api_record("64f1a0000000000000000001"), missed]).await;
    assert_eq!(outcomes, [Outcome::Updated, Outcome::Stored]);
    let snapshot = "SELECT to_jsonb(array_agg(h ORDER BY call_sid)) AS r FROM call_history h";
    let before = app.row(snapshot).await;

    sqlx::query("TRUNCATE calls, call_tags, tags, sms, call_status")
        .execute(&app.pool)
        .await
        .unwrap();
    replay(&app.db, &["--timezone", "America/New_York"]);
    assert_eq!(app.row(snapshot).await, before);
    let kinds = app
        .rows("SELECT source, kind FROM raw_events ORDER BY id")
        .await;
    assert_eq!(
        kinds,
        [
            json!({"source": "webhook", "kind": "call"}),
            json!({"source": "api", "kind": "call"}),
            json!({"source": "api", "kind": "call"}),
        ]
    );
}

/// An API that sends fewer records a page than asked, saying `hasNext`: every page is read.
#[tokio::test]
async fn pages_shorter_than_asked_are_followed_while_the_api_says_more_follow() {
    use crate::fake_api::{FakeApi, Quirks, TOKEN};
    let app = spawn_app().await;
    let quirks = Quirks {
        page_max: Some(50),
        ..Quirks::default()
    };
    let api = FakeApi::start(listed_calls(120), quirks);
    let (code, stdout, stderr) = backfill(&app, &api, TOKEN);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("pages 3, records 120, inserted 120"),
        "{stdout}"
    );
    let skips: Vec<Value> = api
        .requests()
        .iter()
        .map(|(_, b)| b["skip"].clone())
        .collect();
    assert_eq!(skips, [json!("0"), json!("50"), json!("100")]);
}
