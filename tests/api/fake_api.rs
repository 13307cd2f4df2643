//! A fake of CallHippo's API, from what is known of it (docs/reference.md §8): `POST
//! /activityfeed` with the `apiToken` header, `skip`/`limit` as strings, `startDate`/`endDate`
//! as `YYYY/MM/DD` days of the account, pages with `hasNext`, and the quirks its clients saw.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use chrono::NaiveDate;
use serde_json::{json, Value};

pub const TOKEN: &str = "fake-api-token-0123456789";

/// What the fake does besides answering.
#[derive(Default, Clone)]
pub struct Quirks {
    /// Answers the first request with an HTML page (status 200), as during maintenance.
    pub html_once: bool,
    /// Answers the first request with 429 and `Retry-After: 1`.
    pub throttle_once: bool,
    /// Days before this one need a better plan.
    pub plan_starts: Option<NaiveDate>,
    /// A page of one record gives it as an object, not a list.
    pub single_as_object: bool,
    /// Pages hold at most this many records, whatever `limit` asks.
    pub page_max: Option<usize>,
}

#[derive(Default)]
struct State {
    records: Vec<(NaiveDate, Value)>,
    quirks: Quirks,
    /// Every request: its `apiToken` header and its body.
    requests: Vec<(Option<String>, Value)>,
}

pub struct FakeApi {
    pub url: String,
    state: Arc<Mutex<State>>,
    server: actix_web::dev::ServerHandle,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        // Stops its thread's server; nothing waits for it.
        drop(self.server.stop(false));
    }
}

impl FakeApi {
    /// Serves `records`, each on its day of the account.
    pub fn start(records: Vec<(NaiveDate, Value)>, quirks: Quirks) -> FakeApi {
        let state = Arc::new(Mutex::new(State {
            records,
            quirks,
            requests: Vec::new(),
        }));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let data = web::Data::new(state.clone());
        // A thread and runtime of its own: the tests wait for the command they run, and the
        // fake must answer meanwhile.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .route("/v1/activityfeed", web::post().to(activity_feed))
                })
                .workers(1)
                .listen(listener)
                .unwrap()
                .run();
                tx.send(server.handle()).unwrap();
                let _ = server.await;
            })
        });
        let handle = rx.recv().unwrap();
        FakeApi {
            url: format!("http://127.0.0.1:{port}/v1"),
            state,
            server: handle,
        }
    }

    /// Every request so far: `apiToken` header and body.
    pub fn requests(&self) -> Vec<(Option<String>, Value)> {
        self.state.lock().unwrap().requests.clone()
    }
}

async fn activity_feed(
    req: HttpRequest,
    body: web::Json<Value>,
    state: web::Data<Arc<Mutex<State>>>,
) -> HttpResponse {
    let mut s = state.lock().unwrap();
    let token = (req.headers().get("apiToken"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    s.requests.push((token.clone(), body.0.clone()));
    if std::mem::take(&mut s.quirks.html_once) {
        return HttpResponse::Ok()
            .content_type("text/html")
            .body("<html><body>We are down for maintenance</body></html>");
    }
    if std::mem::take(&mut s.quirks.throttle_once) {
        return HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", "1"))
            .json(json!({"success": false, "error": "Too many requests"}));
    }
    if token.as_deref() != Some(TOKEN) {
        return HttpResponse::Ok().json(json!({"success": false, "error": "Invalid API token"}));
    }
    let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let day = |k: &str| NaiveDate::parse_from_str(&text(k), "%Y/%m/%d");
    let (Ok(from), Ok(to)) = (day("startDate"), day("endDate")) else {
        return HttpResponse::Ok()
            .json(json!({"success": false, "error": {"message": "bad dates"}}));
    };
    if s.quirks.plan_starts.is_some_and(|first| from < first) {
        return HttpResponse::Ok().json(json!({"success": false, "error":
            "Kindly upgrade your plan to access call logs for more than 1 month(s)"}));
    }
    // skip and limit are strings of digits; a number is refused, as the spec's pattern would.
    let (Ok(skip), Ok(limit)) = (
        text("skip").parse::<usize>(),
        text("limit").parse::<usize>(),
    ) else {
        return HttpResponse::Ok()
            .json(json!({"success": false, "error": "skip and limit are strings"}));
    };
    let in_range: Vec<&Value> = (s.records.iter())
        .filter(|(d, _)| (from..=to).contains(d))
        .map(|(_, r)| r)
        .collect();
    let limit = s.quirks.page_max.map_or(limit, |max| limit.min(max));
    let page: Vec<Value> = in_range
        .iter()
        .skip(skip)
        .take(limit)
        .map(|r| (*r).clone())
        .collect();
    let has_next = skip + page.len() < in_range.len();
    let logs = match (page.len(), s.quirks.single_as_object) {
        (1, true) => page[0].clone(),
        _ => Value::Array(page),
    };
    HttpResponse::Ok()
        .json(json!({"success": true, "data": {"callLogs": logs, "hasNext": has_next}}))
}
