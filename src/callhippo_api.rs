//! CallHippo's REST API, as far as the service needs it: the pages of call logs
//! (`POST /activityfeed`). One request at a time, time limits on connecting and reading,
//! back-off with jitter on what may pass (429, 5xx, a time-out, an HTML or other non-JSON
//! answer), `Retry-After` honoured; a clear stop, quoting the API, on what will not pass (a
//! refused token, the plan's history limit).

use std::time::Duration;

use chrono::NaiveDate;
use serde_json::{json, Value};

use crate::payload::fields::quote;
use crate::retry::Backoff;

/// How often a page is tried before the run fails, and the waits between.
pub const PAGE_RETRIES: Backoff =
    Backoff::times(Duration::from_secs(1), Duration::from_secs(60), 6);

/// One page of the activity feed.
#[derive(Debug)]
pub struct Page {
    pub records: Vec<Value>,
    /// Whether the API says another page follows; `None` when it does not say.
    pub has_next: Option<bool>,
}

impl Page {
    /// Whether to ask for the page after this one: as the API says when it says so (it may
    /// send fewer records a page than asked), else while pages come back full.
    pub fn more_after(&self, asked: usize) -> bool {
        !self.records.is_empty() && self.has_next.unwrap_or(self.records.len() >= asked)
    }
}

/// The longest wait a `Retry-After` is followed for; a longer one fails the page.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API refused the token: nothing will pass until it is changed.
    #[error("CallHippo's API refused CALLHIPPO_API_TOKEN ({0}): copy the token again from CallHippo (Integrations > API)")]
    TokenRefused(String),
    /// The plan does not reach that far back.
    #[error(
        "CallHippo's API will not list calls that old for this plan ({0}): use a later --from"
    )]
    PlanLimit(String),
    /// An answer that may pass if tried again later (429, 5xx, not JSON, no answer).
    #[error("CallHippo's API did not answer usably: {0}")]
    Passing(String),
    /// An answer that will not pass by waiting.
    #[error("CallHippo's API refused the request: {0}")]
    Refused(String),
}

impl ApiError {
    fn may_pass(&self) -> bool {
        matches!(self, ApiError::Passing(_))
    }
}

pub struct ApiClient {
    http: reqwest::Client,
    base_url: String,
    token: String,
    retries: Backoff,
}

impl ApiClient {
    pub fn new(base_url: &str, token: &str) -> Result<ApiClient, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("callhippo-ingest/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("CALLHIPPO_API_URL: cannot make an HTTP client: {e}"))?;
        Ok(ApiClient {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            retries: PAGE_RETRIES,
        })
    }

    /// The same client with another schedule of retries (tests wait less).
    pub fn with_retries(mut self, retries: Backoff) -> ApiClient {
        self.retries = retries;
        self
    }

    /// One page of call logs for the days `from`..=`to` of the account's time zone, tried
    /// again on what may pass.
    pub async fn call_logs(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        skip: usize,
        limit: usize,
    ) -> Result<Page, ApiError> {
        let body = json!({
            "skip": skip.to_string(),
            "limit": limit.to_string(),
            "startDate": from.format("%Y/%m/%d").to_string(),
            "endDate": to.format("%Y/%m/%d").to_string(),
        });
        let mut delays = self.retries.delays();
        loop {
            match self.post("activityfeed", &body).await {
                Err((e, retry_after)) if e.may_pass() => match delays.next() {
                    Some(_) if retry_after.is_some_and(|w| w > RETRY_AFTER_MAX) => {
                        return Err(ApiError::Passing(format!(
                            "{e}; it asks to wait {} s, longer than this run waits",
                            retry_after.unwrap_or_default().as_secs()
                        )))
                    }
                    Some(backoff) => {
                        let wait = retry_after.unwrap_or(jittered(backoff));
                        tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, skip, "CallHippo's API: trying the page again");
                        tokio::time::sleep(wait).await;
                    }
                    None => return Err(e),
                },
                Err((e, _)) => return Err(e),
                Ok(answer) => return read_page(&answer),
            }
        }
    }

    /// One request; on failure, the error and the wait the API asked for.
    async fn post(&self, path: &str, body: &Value) -> Result<Value, (ApiError, Option<Duration>)> {
        let url = format!("{}/{path}", self.base_url);
        let sent = self
            .http
            .post(&url)
            .header("apiToken", &self.token)
            .json(body)
            .send()
            .await;
        let response = sent.map_err(|e| (ApiError::Passing(transport(&e)), None))?;
        let status = response.status();
        let retry_after = (response.headers().get(reqwest::header::RETRY_AFTER))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = (response.text().await).map_err(|e| (ApiError::Passing(transport(&e)), None))?;
        let json: Option<Value> = serde_json::from_str(&text).ok();
        let said = json
            .as_ref()
            .and_then(error_text)
            .unwrap_or_else(|| quote(&text));
        if status.as_u16() == 429 || status.is_server_error() {
            return Err((
                ApiError::Passing(format!("HTTP {status}: {said}")),
                retry_after,
            ));
        }
        if status.as_u16() == 401 || status.as_u16() == 403 {
            return Err((
                ApiError::TokenRefused(format!("HTTP {status}: {said}")),
                None,
            ));
        }
        let Some(json) = json else {
            let what = if text.trim_start().starts_with('<') {
                "an HTML page"
            } else {
                "not JSON"
            };
            let said = format!("HTTP {status}, {what}: {}", quote(&text));
            // A 200 page of HTML is maintenance; a 404 page is a wrong CALLHIPPO_API_URL.
            if status.is_client_error() {
                let hint = format!("{said} (is CALLHIPPO_API_URL right?)");
                return Err((ApiError::Refused(hint), None));
            }
            return Err((ApiError::Passing(said), retry_after));
        };
        if json.get("success") == Some(&Value::Bool(false)) || !status.is_success() {
            return Err((refusal(status, &said), None));
        }
        Ok(json)
    }
}

/// What a refusal of the API means, by its words.
fn refusal(status: reqwest::StatusCode, said: &str) -> ApiError {
    let lower = said.to_lowercase();
    let quoted = format!("HTTP {status}: {said}");
    if lower.contains("upgrade your plan") {
        ApiError::PlanLimit(quoted)
    } else if lower.contains("token") {
        ApiError::TokenRefused(quoted)
    } else {
        ApiError::Refused(quoted)
    }
}

/// The error text of an answer, in any of the shapes the API uses:
/// `{"error":"…"}`, `{"error":{"error":"…"}}`, `{"error":{"message":"…"}}`, `{"message":"…"}`.
fn error_text(answer: &Value) -> Option<String> {
    let e = answer.get("error").or_else(|| answer.get("message"))?;
    let text = match e {
        Value::String(s) => s.clone(),
        Value::Object(o) => (o.get("error").or_else(|| o.get("message")))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| e.to_string()),
        other => other.to_string(),
    };
    Some(quote(&text))
}

/// `data.callLogs` (a list, or one object) and `data.hasNext`.
fn read_page(answer: &Value) -> Result<Page, ApiError> {
    let data = answer.get("data");
    let records = match data.and_then(|d| d.get("callLogs")) {
        Some(Value::Array(list)) => list.clone(),
        Some(one @ Value::Object(_)) => vec![one.clone()],
        Some(Value::Null) => Vec::new(),
        // Not the answer the notes describe: said, not guessed at.
        Some(other) => {
            return Err(ApiError::Refused(format!(
                "data.callLogs is {}, not a list of call logs",
                crate::payload::describe(other)
            )))
        }
        None => {
            return Err(ApiError::Refused(format!(
                "an answer without data.callLogs: {}",
                quote(&answer.to_string())
            )))
        }
    };
    let has_next = data.and_then(|d| d.get("hasNext")).and_then(Value::as_bool);
    Ok(Page { records, has_next })
}

fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".to_owned()
    } else if e.is_connect() {
        format!(
            "cannot connect: {}",
            std::error::Error::source(e).map_or(e.to_string(), |s| s.to_string())
        )
    } else {
        e.to_string()
    }
}

/// `d` times a factor between 0.5 and 1.5, so that clients that failed together do not try
/// again together.
fn jittered(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d.mul_f64(0.5 + f64::from(nanos % 1000) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_in_every_shape_the_api_uses() {
        for answer in [
            json!({"success": false, "error": "Invalid API token"}),
            json!({"success": false, "error": {"error": "Invalid API token"}}),
            json!({"success": false, "error": {"message": "Invalid API token"}}),
        ] {
            assert_eq!(
                error_text(&answer).as_deref(),
                Some("\"Invalid API token\""),
                "{answer}"
            );
        }
        let status = reqwest::StatusCode::OK;
        assert!(matches!(
            refusal(status, "API token not found."),
            ApiError::TokenRefused(_)
        ));
        let limit = "Kindly upgrade your plan to access call logs for more than 1 month(s)";
        assert!(matches!(refusal(status, limit), ApiError::PlanLimit(_)));
        assert!(matches!(
            refusal(status, "Something else"),
            ApiError::Refused(_)
        ));
    }

    #[test]
    fn pages_hold_a_list_or_one_object() {
        let page = |v: Value| read_page(&v);
        let one =
            json!({"success": true, "data": {"callLogs": {"callSid": "CA1"}, "hasNext": false}});
        let one = page(one).unwrap();
        assert_eq!((one.records.len(), one.more_after(100)), (1, false));
        let list = json!({"success": true, "data": {"callLogs": [{}, {}], "hasNext": true}});
        let list = page(list).unwrap();
        assert_eq!(list.records.len(), 2);
        assert!(
            list.more_after(100),
            "hasNext wins over a short page (pages of 50)"
        );
        let unsaid = page(json!({"success": true, "data": {"callLogs": [{}, {}]}})).unwrap();
        assert!(
            !unsaid.more_after(100) && unsaid.more_after(2),
            "else full pages go on"
        );
        let empty = json!({"success": true, "data": {"callLogs": [], "hasNext": true}});
        assert!(!page(empty).unwrap().more_after(100), "an empty page ends");
        assert!(page(json!({"data": {"callLogs": "none"}})).is_err());
        assert!(
            page(json!({"success": true, "data": {}})).is_err(),
            "no callLogs: said"
        );
        assert!(page(json!({"success": true})).is_err());
    }

    #[test]
    fn jitter_stays_within_half_and_one_and_a_half() {
        let d = Duration::from_secs(2);
        let j = jittered(d);
        assert!(j >= d / 2 && j <= d * 3 / 2, "{j:?}");
    }
}
