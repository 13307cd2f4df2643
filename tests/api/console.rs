//! The operator console (`/console`): off without ADMIN_TOKEN, its authentication, its
//! figures and lists, masking, Replay from the page only, an outage, a silent kind, and the
//! whole page in Debian's Chromium.

use std::path::Path;

use serde_json::{json, Value};

use crate::helpers::*;

const ADMIN: &str = "console-secret-0123456789";
const NUMBER: &str = "+15550102030";
const SMS_TEXT: &str = "Your private code is 4711";
const NOTE: &str = "Customer asked about the refund";

/// The check's known events: three calls and two SMS from one number, and a call without
/// `callSid`. Times are now, so that they are today's.
fn known_events() -> Vec<String> {
    let now = chrono::Utc::now().to_rfc3339();
    let mut bodies = Vec::new();
    for i in 1..=3 {
        bodies.push(
            json!({
                "activityType": "call", "callSid": format!("CA-console-{i}"),
                "callType": "Incoming", "from": NUMBER, "to": "+15550109999",
                "status": "Completed", "time": now, "startTime": now, "note": NOTE,
                "email": "ann.agent@example.com", "callCharge": if i == 1 { "N/A" } else { "0.04" },
            })
            .to_string(),
        );
    }
    for i in 1..=2 {
        bodies.push(
            json!({
                "activityType": "sms", "smsType": "Incoming", "from": NUMBER,
                "to": "+15550109999", "status": "Delivered",
                "content": format!("{SMS_TEXT} ({i})"), "time": now,
            })
            .to_string(),
        );
    }
    bodies.push(
        json!({
            "activityType": "call", "callType": "Incoming", "from": NUMBER,
            "to": "+15550109999", "status": "Missed", "time": now, "note": NOTE,
        })
        .to_string(),
    );
    bodies
}

/// A service with a console, and the known events posted (returned as sent).
async fn console_app() -> (TestApp, Vec<String>) {
    let app = spawn_app_with(|s| s.admin_token = Some(ADMIN.into())).await;
    let bodies = known_events();
    for body in &bodies {
        let (code, _) = app.post(body.clone()).await;
        assert!(code == 200 || code == 422, "{code}");
    }
    (app, bodies)
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// What must never leave the service through the console.
fn assert_masked(text: &str) {
    for secret in [
        NUMBER,
        "15550102030",
        "5550102030",
        SMS_TEXT,
        NOTE,
        "ann.agent",
    ] {
        assert!(!text.contains(secret), "{secret:?} is shown");
    }
}

async fn summary(app: &TestApp) -> Value {
    let resp = app
        .client
        .get(format!("{}/console/api/summary", app.address))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.unwrap();
    assert_masked(&text);
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn without_admin_token_the_console_is_not_there() {
    let app = spawn_app().await;
    let client = &app.client;
    for path in [
        "/console",
        "/console/api/summary",
        "/console/assets/console.js",
    ] {
        let resp = client
            .get(format!("{}{path}?token=x", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{path}");
    }
    let resp = client
        .post(format!("{}/console/replay/1", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}

#[tokio::test]
async fn the_token_opens_a_session_cookie_and_leaves_the_address() {
    let (app, _) = console_app().await;
    let client = no_redirects();
    let console = format!("{}/console", app.address);
    for query in [
        "".to_owned(),
        "?token=wrong".to_owned(),
        format!("?token=wrong&token={ADMIN}"),
    ] {
        let resp = client
            .get(format!("{console}{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{query}");
        assert!(resp.headers().get("set-cookie").is_none());
        assert!(resp.text().await.unwrap().contains("needs its token"));
    }
    let resp = client
        .get(format!("{console}?token={ADMIN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    assert_eq!(resp.headers()["location"], "/console");
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(set.contains(part), "{set}");
    }
    assert!(
        !set.contains(ADMIN),
        "the cookie holds a digest, not the token"
    );
    let cookie = set.split(';').next().unwrap().to_owned();

    let resp = client
        .get(&console)
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let html = resp.text().await.unwrap();
    assert_masked(&html);
    assert!(html.contains(r#"data-figure="call.today">3<"#), "{html}");
    assert!(html.contains(r#"data-figure="sms.today">2<"#));
    assert!(html.contains(r#"data-figure="spool.events">0<"#));
    assert!(html.contains("…2030"), "the last four digits are shown");
    assert!(html.contains(r#"data-action="replay""#));
    // Every asset comes from the service itself.
    for asset in ["/console/assets/console.css", "/console/assets/console.js"] {
        assert!(html.contains(asset), "{asset}");
        let resp = client
            .get(format!("{}{asset}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{asset}");
    }
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no other host"
    );

    // A wrong Bearer, or two, is 401 for the API too.
    let resp = client
        .get(format!("{console}/api/summary"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
}

#[tokio::test]
async fn the_summary_has_the_figures_and_the_lists_masked() {
    let (app, bodies) = console_app().await;
    let s = summary(&app).await;
    let figures = &s["figures"];
    assert_eq!(figures["call.today"], "3");
    assert_eq!(figures["call.rejected_today"], "1");
    assert_eq!(figures["call.last_hour"], "3");
    assert_eq!(figures["sms.today"], "2");
    assert_eq!(figures["call_status.today"], "0");
    assert_eq!(figures["call.stored"], "3");
    assert_eq!(figures["call.rejected"], "1");
    assert_eq!(figures["spool.events"], "0");
    assert_eq!(figures["database.state"], "writable");
    let calls = &s["kinds"][0];
    assert_eq!(calls["kind"], "call");
    let per_minute: Vec<i64> = serde_json::from_value(calls["per_minute"].clone()).unwrap();
    assert_eq!(per_minute.len(), 60);
    assert_eq!(per_minute.iter().sum::<i64>(), 3);
    assert!(calls["silence"].is_null());

    let deliveries = s["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 6);
    let first_call = (deliveries.iter())
        .find(|d| d["key"] == "CA-console-1")
        .unwrap();
    assert_eq!(first_call["outcome"], "stored");
    assert_eq!(first_call["parties"], "…2030 → …9999");
    assert_eq!(first_call["warnings"], json!(["callCharge"]));
    let rejected = s["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["error"], "callSid is missing");
    assert!(s["html"]["rejected"]
        .as_str()
        .unwrap()
        .contains("callSid is missing"));

    // Reconciliation runs, with what they filled in; an error's numbers masked.
    sqlx::query(
        "INSERT INTO sync_runs (kind, trigger, range_from, range_to, finished_at, status,
                                records, inserted, filled, unchanged, rejected, error)
         VALUES ('call', 'reconcile', current_date - 1, current_date, now(), 'succeeded',
                 40, 3, 2, 35, 0, NULL),
                ('call', 'backfill', current_date - 30, current_date, now(), 'failed',
                 10, 0, 0, 10, 0, 'page 2: record for +1 (555) 010-2030 unreadable')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let s = summary(&app).await;
    let runs = s["sync_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["trigger"], "backfill");
    assert_eq!(runs[0]["error"], "page 2: record for …2030 unreadable");
    assert_eq!(runs[1]["inserted"], 3);
    assert_eq!(runs[1]["filled"], 2);
    let html = s["html"]["sync_runs"].as_str().unwrap();
    assert!(html.contains("3 new, 2 completed"), "{html}");

    // A redelivery and a changed call log show as such.
    assert_eq!(app.post(bodies[1].clone()).await.1["status"], "duplicate");
    let changed = with(&bodies[2], "status", json!("Missed"));
    assert_eq!(app.post(changed).await.1["status"], "updated");
    let s = summary(&app).await;
    let outcome = |key: &str| -> Vec<String> {
        (s["deliveries"].as_array().unwrap().iter())
            .filter(|d| d["kind"] == "call" && d["key"] == key)
            .map(|d| d["outcome"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(outcome("CA-console-2"), ["stored, then 1 duplicate"]);
    assert_eq!(outcome("CA-console-3"), ["updated", "stored"]);
    assert_eq!(s["figures"]["call.updated"], "1");
    assert_eq!(s["figures"]["call.duplicate"], "1");
}

#[tokio::test]
async fn replay_is_taken_from_the_page_itself_or_with_the_bearer_token() {
    let (app, _) = console_app().await;
    let id: i64 = sqlx::query_scalar("SELECT id FROM raw_events WHERE error IS NOT NULL")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let client = no_redirects();
    let set = client
        .get(format!("{}/console?token={ADMIN}", app.address))
        .send()
        .await
        .unwrap()
        .headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    let cookie = set.split(';').next().unwrap().to_owned();
    let host = app.address.trim_start_matches("http://").to_owned();
    let url = format!("{}/console/replay/{id}", app.address);

    // Another site's page: refused, with its Origin or without one.
    for origin in [Some("http://evil.example"), None] {
        let mut req = client.post(&url).header("Cookie", &cookie);
        if let Some(origin) = origin {
            req = req.header("Origin", origin);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 403, "{origin:?}");
    }
    let resp = client
        .post(&url)
        .header("Cookie", &cookie)
        .header("Origin", format!("http://{host}"))
        .header("Sec-Fetch-Site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    // No cookie, no token.
    let resp = client
        .post(&url)
        .header("Origin", format!("http://{host}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // The page itself.
    let resp = client
        .post(&url)
        .header("Cookie", &cookie)
        .header("Origin", format!("http://{host}"))
        .header("Sec-Fetch-Site", "same-origin")
        .send()
        .await
        .unwrap();
    let (code, body) = answer(resp).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["outcome"], "rejected");
    assert_eq!(body["error"], "callSid is missing");

    // A script, after the raw event was mended by hand: replay now stores it.
    sqlx::query(
        "UPDATE raw_events SET payload = jsonb_set(payload, '{callSid}', '\"CA-mended\"'), body = NULL
          WHERE id = $1",
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap();
    let (code, body) = send(client.post(&url).bearer_auth(ADMIN)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["outcome"], "stored");
    assert!(body["error"].is_null());
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM calls WHERE call_sid = 'CA-mended'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1);

    let (code, _) = send(
        client
            .post(format!("{}/console/replay/999999", app.address))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(code, 404);
    let (code, _) = send(
        client
            .post(format!("{}/console/replay/abc", app.address))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn while_the_database_is_down_the_console_still_answers() {
    let port = free_port();
    let spool = std::env::temp_dir().join(format!("chi-console-down-{port}"));
    let url = format!("postgres://postgres@127.0.0.1:{port}/nowhere");
    let mut settings = local_settings(&url, &spool);
    settings.admin_token = Some(ADMIN.into());
    settings.db.timeout = std::time::Duration::from_millis(500);
    let (address, _) = start(settings).await;
    let client = reqwest::Client::new();
    let (code, _) = send(
        client
            .post(format!("{address}/webhooks/callhippo"))
            .body(CALL),
    )
    .await;
    assert_eq!(code, 202, "spooled");
    let resp = client
        .get(format!("{address}/console/api/summary"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let s: Value = resp.json().await.unwrap();
    assert_eq!(s["figures"]["database.state"], "unreachable");
    assert_eq!(s["figures"]["spool.events"], "1");
    assert_eq!(s["figures"]["call.today"], "—");
    assert!(s["html"]["alerts"].as_str().unwrap().contains("spool"));
    let _ = std::fs::remove_dir_all(spool);
}

#[tokio::test]
async fn a_kind_quieter_than_usual_is_called_silent() {
    let app = spawn_app_with(|s| s.admin_token = Some(ADMIN.into())).await;
    // Calls arrived at this time of day on each of the last seven days, ten an hour; the
    // last one today came two hours ago.
    sqlx::query(
        "INSERT INTO raw_events (kind, body_sha256, payload, received_at, last_received_at)
         SELECT 'call', sha256(('past-' || d || '-' || m)::bytea),
                jsonb_build_object('callSid', 'CA-past-' || d || '-' || m),
                now() - make_interval(days => d, mins => m * 6),
                now() - make_interval(days => d, mins => m * 6)
           FROM generate_series(1, 7) AS d, generate_series(0, 19) AS m
         UNION ALL
         SELECT 'call', sha256('today'::bytea), '{\"callSid\": \"CA-today\"}',
                now() - interval '2 hours', now() - interval '2 hours'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let s = summary(&app).await;
    let calls = &s["kinds"][0];
    assert_eq!(calls["kind"], "call");
    let silence = calls["silence"].as_object().expect("a silence");
    assert!(
        silence["usual_events"].as_f64().unwrap() >= 19.0,
        "{silence:?}"
    );
    let message = s["figures"]["call.silence"].as_str().unwrap();
    assert!(message.starts_with("no call logs for 2 h"), "{message}");
    assert!(s["html"]["alerts"].as_str().unwrap().contains(message));
    // SMS never came: nothing to miss.
    assert!(s["kinds"][1]["silence"].is_null());
    assert_eq!(s["figures"]["sms.since_last"], "none in 7 days");
}

/// The whole page in Debian's Chromium (tests/console/console.test.mjs): what a person sees,
/// with a screenshot at desktop width and at 320 px.
#[tokio::test]
async fn the_console_in_a_real_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/console/console.test.mjs");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (apt-get install chromium); scripts/test does"
    );
    assert!(
        root.join("tests/console/node_modules/playwright-core")
            .exists(),
        "playwright-core is missing: npm ci --prefix tests/console (scripts/test does)"
    );
    let (app, _) = console_app().await;
    let shots = std::env::temp_dir().join(format!("chi-console-shots-{}", app.db.name));
    let output = tokio::process::Command::new("node")
        .arg(&script)
        .env("CONSOLE_BASE", &app.address)
        .env("ADMIN_TOKEN", ADMIN)
        .env("WEBHOOK_URL", app.webhook_url())
        .env(
            "SECRETS",
            json!([NUMBER, "15550102030", SMS_TEXT, NOTE, "ann.agent"]).to_string(),
        )
        .env("LAST_FOUR", "2030")
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(150), output)
        .await
        .expect("the browser test ends within 150 s")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("console: every check passed"));
    assert!(shots.join("desktop.png").exists() && shots.join("narrow.png").exists());
}

#[tokio::test]
async fn hostile_values_reach_the_page_masked_escaped_and_short() {
    let app = spawn_app_with(|s| s.admin_token = Some(ADMIN.into())).await;
    let now = chrono::Utc::now().to_rfc3339();
    let bodies = [
        json!({"activityType": "call", "callSid": "+15550103579", "from": NUMBER, "time": now}),
        json!({"activityType": "call", "callSid": "CA-+1_555_010_2468", "time": now}),
        json!({"activityType": "sms", "smsType": "<b>+15550103333</b> alice@example.com",
               "from": NUMBER, "to": "+15550109999", "time": now, "content": SMS_TEXT}),
        json!({"callSid": "CS +1 (555) 010-4444", "status": "call me +15550105555 bob.x@example.com",
               "dateTime": now}),
        json!({"activityType": "call", "callSid": "CA-warn", "time": now,
               "dave.secret@example.com": "a\u{0}b", "+15550104321": "x\u{0}y"}),
        json!({"activityType": "sms", "smsType": "A".repeat(250_000), "from": NUMBER,
               "to": "+15550109999", "time": now}),
        json!({"activityType": "call", "callSid": "<script>alert(1)</script>", "time": now}),
    ];
    for body in &bodies {
        let (code, answer) = app.post(body.to_string()).await;
        assert!(code < 500, "{code} {answer}");
    }
    let s = summary(&app).await;
    let shown = s.to_string();
    for secret in [
        "5550103579",
        "555_010_2468",
        "5550103333",
        "alice@",
        "010-4444",
        "5550105555",
        "bob.x@",
        "dave.secret",
        "5550104321",
    ] {
        assert!(!shown.contains(secret), "{secret} is shown");
    }
    assert!(!shown.contains("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), "a long value is cut");
    assert!(
        shown.len() < 200_000,
        "the summary stays small: {} bytes",
        shown.len()
    );
    let deliveries = s["deliveries"].as_array().unwrap();
    let warned = (deliveries.iter())
        .find(|d| d["key"] == "CA-warn")
        .expect("the call with odd fields");
    assert_eq!(warned["warnings"], json!(["another field"]));
    let html = text(
        app.client
            .get(format!("{}/console", app.address))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_masked(&html);
    assert!(!html.contains("<script>alert"), "escaped");
    assert!(
        html.contains("&lt;script&gt;") || html.contains("&#60;script&#62;"),
        "shown escaped: {}",
        &html[html.find("script").map_or(0, |i| i.saturating_sub(80))..][..200.min(html.len())]
    );
}

#[tokio::test]
async fn other_bytes_that_read_the_same_show_as_a_duplicate() {
    let (app, bodies) = console_app().await;
    let spaced = bodies[0].replace(",", ", ");
    assert_ne!(spaced, bodies[0]);
    assert_eq!(app.post(spaced).await.1["status"], "duplicate");
    let s = summary(&app).await;
    let outcomes: Vec<&str> = (s["deliveries"].as_array().unwrap().iter())
        .filter(|d| d["key"] == "CA-console-1")
        .map(|d| d["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["duplicate", "stored"]);
}
