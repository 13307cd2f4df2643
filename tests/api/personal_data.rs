//! Personal data (docs/reference.md §9): `forget` erases a person or a call everywhere, and
//! what arrives about them later, by any path, is stored nowhere; retention removes old
//! calls with their raw events.

use std::time::Duration;

use callhippo_ingest::store::retention;
use serde_json::{json, Value};

use crate::fake_api::{FakeApi, Quirks, TOKEN};
use crate::helpers::*;

/// The person to erase, in the forms the payloads use.
const FORMS: [&str; 3] = ["+1 (555) 010-2030", "+15550102030", "15550102030"];
/// Their digits, as a row's text holds them once punctuation is removed.
const DIGITS: &str = "15550102030";

fn call(sid: &str, from: &str, to: &str, tags: &[&str]) -> String {
    let c = with(CALL, "callSid", json!(sid));
    let c = with(&c, "from", json!(from));
    let c = with(&c, "to", json!(to));
    with(&c, "tags", json!(tags))
}

fn status(sid: &str, from: &str, status: &str) -> String {
    let s = with(STATUS, "callSid", json!(sid));
    let s = with(&s, "fromNumber", json!(from));
    with(&s, "status", json!(status))
}

fn sms(from: &str, text: &str) -> String {
    let s = with(SMS, "from", json!(from));
    with(&s, "content", json!(text))
}

/// Runs `forget` with `args` on the app's database; exit code, stdout, stderr.
fn forget(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    let spool = std::env::temp_dir().join(format!("chi-forget-spool-{}", app.db.name));
    let out = bin()
        .arg("forget")
        .args(args)
        .env("DATABASE_URL", &app.db.url)
        .env("SPOOL_DIR", &spool)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The counts `forget` printed, by table.
fn counts(stdout: &str) -> Value {
    let mut counts = serde_json::Map::new();
    for line in stdout.lines().filter(|l| l.ends_with(" rows")) {
        let mut words = line.split_whitespace();
        let (table, n) = (words.next().unwrap(), words.next().unwrap());
        counts.insert(table.to_owned(), json!(n.parse::<u64>().unwrap()));
    }
    Value::Object(counts)
}

/// Rows of each table whose text holds `digits` once punctuation is removed.
async fn rows_holding(app: &TestApp, digits: &str) -> Value {
    let mut found = serde_json::Map::new();
    for table in ["calls", "call_status", "sms", "raw_events", "erasures"] {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} t
              WHERE regexp_replace(t::text, '[ ()+./-]|%2[089bdefBDEF]', '', 'g') LIKE '%' || $1 || '%'"
        ))
        .bind(digits)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        found.insert(table.to_owned(), json!(n));
    }
    Value::Object(found)
}

async fn table_counts(app: &TestApp) -> Vec<i64> {
    let mut n = Vec::new();
    for t in [
        "calls",
        "call_tags",
        "call_status",
        "sms",
        "raw_events",
        "tags",
    ] {
        n.push(app.count(t).await);
    }
    n
}

/// The person's calls as caller and callee, a status event, SMS (JSON and a form body), an
/// SMS refused for a missing time, and another caller's call beside them.
async fn post_the_person_and_another(app: &TestApp) {
    let posts = [
        call("CA-person-1", FORMS[0], "+442071838750", &["Sales"]),
        call("CA-person-2", "+442071838750", FORMS[1], &["Support"]),
        status("CA-person-1", FORMS[2], "completed"),
        status("CA-person-1", "+442071838750", "ringing"),
        sms(FORMS[1], "Call me back on +1 555 010 2030 please"),
        call(
            "CA-other",
            "+4930901820",
            "+442071838750",
            &["Sales", "VIP"],
        ),
    ];
    for body in &posts {
        let (code, answer) = app.post(body.clone()).await;
        assert_eq!(code, 200, "{answer}");
    }
    let form = "activityType=sms&from=%2B1+%28555%29+010-2030&to=%2B442071838750\
                &time=2026-03-01T10%3A00%3A00Z&content=hello&smsType=Incoming";
    let (code, answer) = app
        .post_with(form, "application/x-www-form-urlencoded")
        .await;
    assert_eq!(code, 200, "{answer}");
    let (code, _) = app.post(without(&sms(FORMS[0], "no time"), "time")).await;
    assert_eq!(code, 422);
}

#[tokio::test]
async fn forget_by_phone_counts_on_a_dry_run_then_erases_every_form_and_nothing_else() {
    let app = spawn_app().await;
    post_the_person_and_another(&app).await;
    let before = table_counts(&app).await;

    let (code, dry, err) = forget(&app, &["--phone", "+1-555-010-2030", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(dry.contains("dry run"), "{dry}");
    let expected = json!({"call_tags": 2, "call_status": 2, "sms": 2, "raw_events": 7, "calls": 2});
    assert_eq!(counts(&dry), expected, "{dry}");
    assert_eq!(
        table_counts(&app).await,
        before,
        "a dry run changes nothing"
    );
    assert_eq!(app.count("erasures").await, 0);
    assert!(!dry.contains("555") && !err.contains("555"), "{dry}{err}");

    app.rollup().await;
    let calls_counted = "SELECT sum(calls)::int AS calls FROM call_daily_stats";
    assert_eq!(app.row(calls_counted).await, json!({"calls": 3}));
    let (code, out, err) = forget(&app, &["--phone", "1.555.010.2030"]);
    assert_eq!(code, 0, "{err}");
    // The summaries no longer count them once forget has returned.
    assert_eq!(app.row(calls_counted).await, json!({"calls": 1}));
    assert_eq!(
        counts(&out),
        expected,
        "the same counts as the dry run: {out}"
    );
    assert!(!out.contains("555") && !err.contains("555"), "{out}{err}");
    assert_eq!(
        rows_holding(&app, DIGITS).await,
        json!({"calls": 0, "call_status": 0, "sms": 0, "raw_events": 0, "erasures": 0})
    );
    // The other caller's call is intact, with its tags and its raw event.
    assert_eq!(
        app.rows("SELECT call_sid, tags FROM call_history").await,
        [json!({"call_sid": "CA-other", "tags": ["Sales", "VIP"]})]
    );
    assert_eq!(app.count("raw_events").await, 1);
    // erasures holds the digest of the digits, never the number.
    assert_eq!(
        app.row("SELECT kind, identifier_sha256 = sha256('15550102030'::bytea) AS digest, rows FROM erasures")
            .await,
        json!({"kind": "phone", "digest": true,
               "rows": {"call_tags": 2, "call_status": 2, "sms": 2, "raw_events": 7, "calls": 2,
                        // The person's own SMS gave the number in its text too.
                        "sms.content": 1}})
    );

    // Every later event about them is answered suppressed and stored nowhere.
    let after = table_counts(&app).await;
    for body in [
        call("CA-person-1", FORMS[0], "+442071838750", &["Sales"]),
        call("CA-person-3", "+442071838750", "+1 555 010 2030", &[]),
        status("CA-person-9", FORMS[1], "ringing"),
        sms("15550102030", "again"),
        without(&sms(FORMS[0], "no time either"), "time"),
    ] {
        let (code, answer) = app.post(body.clone()).await;
        assert_eq!(
            (code, answer.clone()),
            (200, json!({"status": "suppressed", "kind": answer["kind"]})),
            "{body}"
        );
    }
    assert_eq!(table_counts(&app).await, after);
    let metrics = text(app.client.get(format!("{}/metrics", app.address))).await;
    assert!(
        metrics.contains(r#"callhippo_events_total{kind="call",outcome="suppressed"} 2"#),
        "{metrics}"
    );
    assert!(!metrics.contains(DIGITS));
}

#[tokio::test]
async fn another_persons_call_that_gives_the_number_stays_without_it() {
    let app = spawn_app().await;
    let noted = with(
        &call("CA-noted", "+4930901820", "+442071838750", &["VIP"]),
        "note",
        json!("asked us to ring her sister on +1 555-010-2030"),
    );
    assert_eq!(app.post(noted).await.0, 200);
    let sms_about = sms("+4930901820", "her number is 15550102030");
    assert_eq!(app.post(sms_about).await.0, 200);
    let (code, out, err) = forget(&app, &["--phone", FORMS[1]]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("calls.note") && out.contains("sms.content"),
        "{out}"
    );
    assert_eq!(counts(&out)["calls"], 0, "{out}");
    assert_eq!(
        rows_holding(&app, DIGITS).await,
        json!({"calls": 0, "call_status": 0, "sms": 0, "raw_events": 0, "erasures": 0})
    );
    assert_eq!(
        app.row("SELECT call_sid, note, tags FROM call_history")
            .await,
        json!({"call_sid": "CA-noted", "note": null, "tags": ["VIP"]})
    );
    assert_eq!(
        app.row("SELECT content FROM sms").await,
        json!({"content": null})
    );
}

#[tokio::test]
async fn forget_by_call_sid_removes_one_call_and_what_belongs_to_it() {
    let app = spawn_app().await;
    post_the_person_and_another(&app).await;
    let (code, out, err) = forget(&app, &["--call-sid", "CA-person-1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        counts(&out),
        json!({"call_tags": 1, "call_status": 2, "sms": 0, "raw_events": 3, "calls": 1}),
        "{out}"
    );
    assert_eq!(
        app.rows("SELECT call_sid FROM calls ORDER BY 1").await,
        [
            json!({"call_sid": "CA-other"}),
            json!({"call_sid": "CA-person-2"})
        ]
    );
    let (code, answer) = app.post(status("CA-person-1", "+1", "hangup")).await;
    assert_eq!((code, answer["status"].clone()), (200, json!("suppressed")));
}

#[tokio::test]
async fn forget_by_email_erases_the_agents_rows_in_any_case() {
    let app = spawn_app().await;
    let agent = with(
        &call("CA-agent", "+4930901820", "+442071838750", &[]),
        "email",
        json!("Ann.Lee@Example.com"),
    );
    assert_eq!(app.post(agent).await.0, 200);
    assert_eq!(
        app.post(call("CA-keep", "+4930901821", "+442071838750", &[]))
            .await
            .0,
        200
    );
    let (code, out, err) = forget(&app, &["--email", "ann.lee@EXAMPLE.com"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(counts(&out)["calls"], 1, "{out}");
    assert_eq!(counts(&out)["raw_events"], 1, "{out}");
    assert_eq!(
        app.rows("SELECT call_sid FROM calls").await,
        [json!({"call_sid": "CA-keep"})]
    );
}

#[tokio::test]
async fn bad_identifiers_are_named_and_nothing_runs() {
    let app = spawn_app().await;
    for (args, says) in [
        (vec!["--phone", "+1 555 CALL"], "--phone"),
        (vec!["--phone", "123"], "7 to 15 digits"),
        (vec!["--email", "ann"], "--email"),
        (vec!["--dry-run"], "at least one"),
    ] {
        let (code, _, err) = forget(&app, &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains(says) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
}

/// The SQL that finds an identifier and the service's own check agree, form by form.
#[tokio::test]
async fn the_sql_helpers_and_the_services_check_agree() {
    use callhippo_ingest::erasure::{digests_in, Identifier};
    let app = spawn_app().await;
    let texts = [
        r#"{"from": "+1 (555) 010-2030"}"#,
        "from=%2B1+%28555%29+010-2030",
        "+115550102030",
        "155501020301",
        "call 1 555 010 2030.",
        "ANN.LEE@example.com",
        "joann.lee@example.com",
        "ann.lee@example.com.br",
        "ann.lee@example.com.",
        r#"{"callSid":"CA-person-1"}"#,
        r#"{"callSid":"CA-person-12"}"#,
    ];
    let ids = [
        ("phone", Identifier::phone("15550102030").unwrap()),
        ("email", Identifier::email("ann.lee@example.com").unwrap()),
        ("token", Identifier::call_sid("CA-person-1").unwrap()),
    ];
    for text in texts {
        let mut digests = Vec::new();
        digests_in(text, &mut digests);
        for (function, id) in &ids {
            let sql: bool =
                sqlx::query_scalar(&format!("SELECT callhippo_holds_{function}($1, $2)"))
                    .bind(text)
                    .bind(id.normalised())
                    .fetch_one(&app.pool)
                    .await
                    .unwrap();
            assert_eq!(sql, digests.contains(&id.key()), "{function} in {text:?}");
        }
    }
}

/// Events about the person that wait in the spool when `forget` runs are dropped when they
/// are written; `forget` itself refuses to run beside a spool that holds events.
#[tokio::test]
async fn the_spool_replay_and_backfill_store_nothing_about_an_erased_person() {
    let app = spawn_app().await;
    let spool = std::env::temp_dir().join(format!("chi-spool-erased-{}", app.db.name));
    let _ = std::fs::remove_dir_all(&spool);

    // A serve whose database is away spools two events: one about the person.
    let port = free_port();
    let away = "postgres://postgres@127.0.0.1:1/nowhere";
    let server = serve_process(away, port, &spool);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut spooled = 0;
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for body in [
        call("CA-spooled-person", FORMS[1], "+442071838750", &[]),
        call("CA-spooled-other", "+4930901820", "+442071838750", &[]),
    ] {
        let (code, answer) =
            send(client.post(format!("{base}/webhooks/callhippo")).body(body)).await;
        assert_eq!((code, answer["status"].clone()), (202, json!("queued")));
        spooled += 1;
    }
    drop(server);
    assert_eq!(spooled, 2);

    // forget refuses while that spool holds them, and erases once pointed elsewhere.
    let out = bin()
        .args(["forget", "--phone", FORMS[0]])
        .env("DATABASE_URL", &app.db.url)
        .env("SPOOL_DIR", &spool)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("holds 2 events"), "{err}");
    assert_eq!(app.count("erasures").await, 0);
    let (code, _, err) = forget(&app, &["--phone", FORMS[0]]);
    assert_eq!(code, 0, "{err}");

    // The spool drains into the database: the person's event is dropped.
    let port = free_port();
    let _server = serve_process(&app.db.url, port, &spool);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&client, &base).await;
    for _ in 0..100 {
        if app.count("calls").await > 0 && readyz(&client, &base).await.1["spool"]["events"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.rows("SELECT call_sid FROM calls").await,
        [json!({"call_sid": "CA-spooled-other"})]
    );
    assert_eq!(rows_holding(&app, DIGITS).await["raw_events"], 0);

    // A raw event about them put back by hand is not replayed into any table.
    sqlx::query(
        "INSERT INTO raw_events (kind, body_sha256, payload, received_at, last_received_at)
         VALUES ('call', sha256('by hand'::bytea), $1::jsonb, now(), now())",
    )
    .bind(call("CA-by-hand", FORMS[2], "+442071838750", &[]))
    .execute(&app.pool)
    .await
    .unwrap();
    let summary = replay(&app.db, &[]);
    assert!(summary.contains("suppressed 1"), "{summary}");
    assert_eq!(app.count("calls").await, 1);

    // Nor does CallHippo's API bring them back.
    let record = json!({
        "_id": "64f1a00000000000000000ff", "callSid": "CA-from-api", "callType": "Incoming",
        "from": "+1 555 010 2030", "to": "+442071838750", "date": "Mar 8, 2026",
        "time": "10:00:00 AM", "callStatus": "Completed"
    });
    let day = chrono::NaiveDate::from_ymd_opt(2026, 3, 8).unwrap();
    let api = FakeApi::start(vec![(day, record)], Quirks::default());
    let out = bin()
        .args(["backfill", "--from", "2026-03-08", "--to", "2026-03-08"])
        .env("DATABASE_URL", &app.db.url)
        .env("CALLHIPPO_API_URL", &api.url)
        .env("CALLHIPPO_API_TOKEN", TOKEN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("suppressed 1"), "{stdout}");
    assert_eq!(app.count("calls").await, 1);
    assert_eq!(
        app.count("raw_events WHERE source = 'api'").await,
        0,
        "nothing archived either"
    );
}

/// `forget` while events about the person keep arriving: once it has returned, no row
/// holds them, every later event is suppressed, and the others' events are all stored.
#[tokio::test]
async fn forget_is_safe_while_events_about_the_person_arrive() {
    let app = spawn_app().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for worker in 0..4 {
        let (client, url, stop) = (app.client.clone(), app.webhook_url(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for i in 0..400 {
                if stop.load(std::sync::atomic::Ordering::SeqCst) && i % 50 == 0 {
                    break;
                }
                let about_them = i % 2 == 0;
                let sid = format!("CA-race-{worker}-{i}");
                let from = if about_them {
                    FORMS[i % 3]
                } else {
                    "+4930901820"
                };
                let (code, answer) = send(client.post(&url).body(call(
                    &sid,
                    from,
                    "+442071838750",
                    &[],
                )))
                .await;
                answers.push((
                    about_them,
                    sid,
                    code,
                    answer["status"].as_str().unwrap_or("").to_owned(),
                ));
            }
            answers
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, _, err) = tokio::task::spawn_blocking({
        let (db_url, name) = (app.db.url.clone(), app.db.name.clone());
        move || {
            let out = bin()
                .args(["forget", "--phone", "+1 555-010-2030"])
                .env("DATABASE_URL", &db_url)
                .env(
                    "SPOOL_DIR",
                    std::env::temp_dir().join(format!("chi-none-{name}")),
                )
                .output()
                .unwrap();
            (
                out.status.code().unwrap_or(-1),
                (),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        rows_holding(&app, DIGITS).await,
        json!({"calls": 0, "call_status": 0, "sms": 0, "raw_events": 0, "erasures": 0}),
        "right after forget returned"
    );
    // Events about them that arrive now are suppressed.
    let (code, answer) = app
        .post(call("CA-race-after", FORMS[0], "+442071838750", &[]))
        .await;
    assert_eq!((code, answer["status"].clone()), (200, json!("suppressed")));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut others = Vec::new();
    let mut suppressed = 0;
    for s in senders {
        for (about_them, sid, code, status) in s.await.unwrap() {
            assert_eq!(code, 200, "{sid}: {status}");
            if about_them {
                assert!(
                    status == "stored" || status == "suppressed",
                    "{sid}: {status}"
                );
                suppressed += (status == "suppressed") as usize;
            } else {
                assert_eq!(status, "stored", "{sid}");
                others.push(sid);
            }
        }
    }
    assert!(suppressed > 0, "some arrived after the erasure");
    assert_eq!(
        rows_holding(&app, DIGITS).await["calls"],
        0,
        "nor once every sender is done"
    );
    let stored: i64 = app.count("calls WHERE call_sid LIKE 'CA-race-%'").await;
    assert_eq!(
        stored as usize,
        others.len(),
        "every other caller's call is stored"
    );
}

#[tokio::test]
async fn call_retention_removes_old_calls_sms_and_status_events_with_their_raw_events() {
    let app = spawn_app().await;
    let old = "2020-05-12T00:53:57.688+0000";
    let recent = chrono::Utc::now().to_rfc3339();
    for (sid, at) in [
        ("CA-old-1", old),
        ("CA-old-2", old),
        ("CA-new", recent.as_str()),
    ] {
        let c = with(
            &call(sid, "+4930901820", "+442071838750", &["Sales"]),
            "startTime",
            json!(at),
        );
        assert_eq!(app.post(c).await.0, 200);
        let s = with(
            &status(sid, "+4930901820", "completed"),
            "dateTime",
            json!(at),
        );
        assert_eq!(app.post(s).await.0, 200);
    }
    for at in [old, recent.as_str()] {
        assert_eq!(app.post(with(SMS, "time", json!(at))).await.0, 200);
    }
    let removed = retention::purge_calls(&app.pool, 30, 1, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        removed,
        [
            ("calls", 2),
            ("call_status", 2),
            ("sms", 1),
            ("raw_events", 5)
        ],
        "in batches of one"
    );
    assert_eq!(
        app.rows("SELECT call_sid FROM calls").await,
        [json!({"call_sid": "CA-new"})]
    );
    assert_eq!(app.count("call_tags").await, 1);
    assert_eq!(app.count("call_status").await, 1);
    assert_eq!(app.count("sms").await, 1);
    assert_eq!(app.count("raw_events").await, 3);
    assert_eq!(
        retention::purge_calls(&app.pool, 30, 1, Duration::ZERO)
            .await
            .unwrap(),
        [
            ("calls", 0),
            ("call_status", 0),
            ("sms", 0),
            ("raw_events", 0)
        ]
    );
}

#[tokio::test]
async fn serve_applies_call_retention_at_start() {
    let app = spawn_app().await;
    let old = with(
        &call("CA-ancient", "+4930901820", "+442071838750", &[]),
        "startTime",
        json!("2021-01-01T00:00:00Z"),
    );
    assert_eq!(app.post(old).await.0, 200);
    let recent = with(
        &call("CA-recent", "+4930901820", "+442071838750", &[]),
        "startTime",
        json!(chrono::Utc::now().to_rfc3339()),
    );
    assert_eq!(app.post(recent).await.0, 200);
    let _second = spawn_app_on(&app.db, |s| s.call_retention_days = Some(365)).await;
    // Calls go first, their raw events in a later transaction: wait for both.
    for _ in 0..200 {
        if app.count("calls").await == 1 && app.count("raw_events").await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.rows("SELECT call_sid FROM calls").await,
        [json!({"call_sid": "CA-recent"})]
    );
    assert_eq!(app.count("raw_events").await, 1);
}

/// A writer that passed its guard before the erasure and commits after it: forget waits for
/// it, then removes what it wrote.
#[tokio::test]
async fn forget_waits_for_a_writer_that_began_before_the_erasure() {
    use sqlx::Connection;
    let app = spawn_app().await;
    let mut writer = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    let mut tx = writer.begin().await.unwrap();
    let passed: bool = sqlx::query_scalar("SELECT callhippo_erasures_unchanged(0)")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert!(passed);
    sqlx::query(
        "INSERT INTO calls (call_sid, from_number, received_at, updated_at)
         VALUES ('CA-in-flight', '+15550102030', now(), now())",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    let mut forget = bin()
        .args(["forget", "--phone", FORMS[0]])
        .env("DATABASE_URL", &app.db.url)
        .env(
            "SPOOL_DIR",
            std::env::temp_dir().join(format!("chi-none-{}", app.db.name)),
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        forget.try_wait().unwrap().is_none(),
        "forget must wait for the writer"
    );
    assert_eq!(
        app.count("erasures").await,
        1,
        "the erasure is recorded first"
    );
    tx.commit().await.unwrap();
    let status = tokio::task::spawn_blocking(move || forget.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    assert_eq!(
        app.count("calls").await,
        0,
        "what the writer wrote went too"
    );
    // A writer that checks now sees the erasure and writes nothing.
    let mut tx = writer.begin().await.unwrap();
    let err = sqlx::query("SELECT callhippo_erasures_unchanged(0)")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("erasures changed"), "{err}");
}
