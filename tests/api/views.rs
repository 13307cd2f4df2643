//! The views (docs/reference.md §6), on a small known data set.

use serde_json::json;

use crate::helpers::*;

fn call(
    sid: &str,
    agent: &str,
    status: &str,
    start: &str,
    secs: &str,
    billed: i64,
    charge: &str,
) -> String {
    json!({
        "activityType": "call", "callSid": sid, "callType": "Outgoing", "status": status,
        "email": agent, "callerName": format!("Name of {agent}"), "startTime": start,
        "time": start, "duration": secs, "billedMinutes": billed, "callCharge": charge,
        "from": "+1", "to": "+2"
    })
    .to_string()
}

#[tokio::test]
async fn daily_and_agent_views_add_up() {
    let app = spawn_app().await;
    for body in [
        call(
            "c1",
            "a@x.io",
            "Completed",
            "2025-06-23T10:00:00Z",
            "01:00",
            1,
            "0.10",
        ),
        call(
            "c2",
            "a@x.io",
            "No Answer",
            "2025-06-23T23:30:00-02:00",
            "00:00",
            0,
            "0",
        ),
        call(
            "c3",
            "a@x.io",
            "Missed",
            "2025-06-23T11:00:00Z",
            "00:00",
            0,
            "0.015",
        ),
        call(
            "c4",
            "B@x.io",
            "Completed",
            "2025-06-24T01:00:00+05:30",
            "02:30",
            3,
            "0.30",
        ),
    ] {
        assert_eq!(app.post(body).await.0, 200);
    }
    let sms = json!({"activityType": "sms", "from": "+1", "to": "+2", "smsType": "Outgoing", "status": "Completed",
                     "time": "2025-06-25T08:00:00Z", "smsCharge": "0.04", "email": "a@x.io", "smsSendBy": "Newest A", "content": "x"});
    assert_eq!(app.post(sms.to_string()).await.0, 200);
    app.rollup().await;

    let daily = app
        .rows(
            "SELECT day::text, status, calls, talk_seconds, billed_minutes, total_charge::text
                 FROM call_daily_stats ORDER BY day, status",
        )
        .await;
    assert_eq!(
        daily,
        vec![
            json!({"day": "2025-06-23", "status": "completed", "calls": 1, "talk_seconds": 60, "billed_minutes": 1, "total_charge": "0.10"}),
            json!({"day": "2025-06-23", "status": "completed", "calls": 1, "talk_seconds": 150, "billed_minutes": 3, "total_charge": "0.30"}),
            json!({"day": "2025-06-23", "status": "missed", "calls": 1, "talk_seconds": 0, "billed_minutes": 0, "total_charge": "0.015"}),
            json!({"day": "2025-06-24", "status": "no_answer", "calls": 1, "talk_seconds": 0, "billed_minutes": 0, "total_charge": "0"}),
        ]
        .into_iter()
        .collect::<Vec<_>>()
        .into_iter()
        .fold(Vec::new(), |mut acc, v| {
            // c4 started 2025-06-23T19:30Z: same UTC day and status as c1, so one row.
            if v["day"] == "2025-06-23" && v["status"] == "completed" && !acc.is_empty() {
                let prev: &mut serde_json::Value = acc.last_mut().unwrap();
                *prev = json!({"day": "2025-06-23", "status": "completed", "calls": 2, "talk_seconds": 210, "billed_minutes": 4, "total_charge": "0.40"});
            } else {
                acc.push(v);
            }
            acc
        })
    );

    let agents = app
        .rows(
            "SELECT day::text, agent_email, calls, completed, missed, talk_seconds, billed_minutes
                 FROM agent_daily_stats ORDER BY day, agent_email",
        )
        .await;
    assert_eq!(
        agents,
        vec![
            json!({"day": "2025-06-23", "agent_email": "a@x.io", "calls": 2, "completed": 1, "missed": 1, "talk_seconds": 60, "billed_minutes": 1}),
            json!({"day": "2025-06-23", "agent_email": "b@x.io", "calls": 1, "completed": 1, "missed": 0, "talk_seconds": 150, "billed_minutes": 3}),
            json!({"day": "2025-06-24", "agent_email": "a@x.io", "calls": 1, "completed": 0, "missed": 1, "talk_seconds": 0, "billed_minutes": 0}),
        ]
    );

    let sms_daily = app
        .rows(
            "SELECT day::text, sms_type, status, messages, total_charge::text FROM sms_daily_stats",
        )
        .await;
    assert_eq!(
        sms_daily,
        vec![
            json!({"day": "2025-06-25", "sms_type": "outgoing", "status": "completed", "messages": 1, "total_charge": "0.04"})
        ]
    );

    let who = app
        .rows(
            "SELECT agent_email, agent_name, first_activity = '2025-06-23T10:00:00Z' AS first_ok,
                      last_activity = '2025-06-25T08:00:00Z' AS last_ok, calls, sms
                 FROM agents ORDER BY agent_email",
        )
        .await;
    assert_eq!(
        who,
        vec![
            json!({"agent_email": "a@x.io", "agent_name": "Newest A", "first_ok": true, "last_ok": true, "calls": 3, "sms": 1}),
            json!({"agent_email": "b@x.io", "agent_name": "Name of B@x.io", "first_ok": false, "last_ok": false, "calls": 1, "sms": 0}),
        ]
    );
}

/// The statements of docs/cookbook.sql, without their comments; with whether the comment
/// before each says it returns no rows for the README's examples.
fn cookbook() -> Vec<(String, bool)> {
    include_str!("../../docs/cookbook.sql")
        .split(";\n")
        .map(|s| {
            let (comments, sql): (Vec<&str>, Vec<&str>) =
                s.lines().partition(|l| l.trim_start().starts_with("--"));
            let may_be_empty = comments
                .iter()
                .any(|c| c.contains("No rows for the README"));
            (sql.join("\n"), may_be_empty)
        })
        .filter(|(s, _)| !s.trim().is_empty())
        .collect()
}

/// The bodies of the README's `curl … -d '…'` examples, with `'"$now"'` (the shell's way of
/// putting the time into a quoted body) replaced by `now`.
fn readme_examples(now: &str) -> Vec<String> {
    let readme = include_str!("../../README.md");
    let mut bodies = Vec::new();
    for (start, _) in readme.match_indices("-d '") {
        let mut rest = &readme[start + 4..];
        let mut body = String::new();
        loop {
            let end = rest.find('\'').expect("a closing quote");
            body.push_str(&rest[..end]);
            rest = &rest[end..];
            match rest.strip_prefix("'\"$now\"'") {
                Some(after) => {
                    body.push_str(now);
                    rest = after;
                }
                None => break,
            }
        }
        bodies.push(body);
    }
    bodies
}

async fn reader_connection(app: &TestApp) -> sqlx::PgConnection {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&app.db.url)
        .await
        .unwrap();
    sqlx::query("SET ROLE callhippo_reader")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// Every statement of docs/cookbook.sql runs, as the read-only role, and the timeline one
/// gives the events in the order they happened.
#[tokio::test]
async fn cookbook_statements_run_as_the_reader() {
    let app = spawn_app().await;
    assert_eq!(
        app.post(with(CALL, "callSid", json!("CA1001"))).await.0,
        200
    );
    for (status, at) in [
        ("completed", "2020-05-12T01:01:05Z"),
        ("ringing", "2020-05-12T00:53:50Z"),
        ("answered", "2020-05-12T00:53:57Z"),
    ] {
        let body = json!({"callSid": "CA1001", "status": status, "dateTime": at, "agentId": "a"});
        assert_eq!(app.post(body.to_string()).await.0, 200);
    }
    let statements = cookbook();
    assert_eq!(statements.len(), 14);
    let mut conn = reader_connection(&app).await;
    for (s, _) in &statements {
        sqlx::query(s)
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{s}\n{e}"));
    }
    let timeline: Vec<String> =
        sqlx::query_scalar(&format!("SELECT status FROM ({}) t", statements[12].0))
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(timeline, vec!["ringing", "answered", "completed"]);
}

/// The README's examples, posted as its "Try it" says, are stored, and every cookbook query
/// returns rows for them (or says in its comment why it does not).
#[tokio::test]
async fn readme_examples_are_stored_and_fill_the_cookbook() {
    let app = spawn_app().await;
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let examples = readme_examples(&now);
    let mut kinds = Vec::new();
    for body in &examples {
        let (code, answer) = app.post(body.clone()).await;
        assert_eq!(
            (code, answer["status"].as_str()),
            (200, Some("stored")),
            "{body}: {answer}"
        );
        kinds.push(answer["kind"].as_str().unwrap().to_owned());
    }
    assert_eq!(kinds, ["call", "sms", "call_status"]);
    app.rollup().await;
    let mut conn = reader_connection(&app).await;
    for (s, may_be_empty) in cookbook() {
        let rows = sqlx::query(&s).fetch_all(&mut conn).await.unwrap();
        assert_eq!(
            rows.is_empty(),
            may_be_empty,
            "{s}\nreturns {} rows for the README's examples",
            rows.len()
        );
    }
}
