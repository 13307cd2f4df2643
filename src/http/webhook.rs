//! `POST /webhooks/callhippo`: authenticate, read the body within its limit, decode it,
//! hand it to the writer, and answer what became of it.

use std::time::{Duration, Instant};

use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::web::{self, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use chrono::Utc;
use futures_util::StreamExt;
use serde_json::json;

use super::{Answer, AppState};
use crate::delivery::{Outcome, Source};
use crate::event::Reading;
use crate::ingest::Ack;
use crate::payload;

/// How long a client may take to send its body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// The first buffer of a body; it grows with what arrives, never to a length only declared.
const FIRST_BUFFER: usize = 16 << 10;

/// The answer to a webhook without the token.
pub const TOKEN_REFUSED: &str =
    "missing or wrong token: add ?token=… to the URL or send Authorization: Bearer …";

/// `GET`/`HEAD`: the vendor checks that the URL answers, token or not.
pub async fn probe(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let started = Instant::now();
    let response = HttpResponse::Ok().json(json!({"status": "ok"}));
    super::log_unauthenticated(
        &state,
        req.method(),
        req.path(),
        "probe",
        "ok",
        200,
        started.elapsed(),
    );
    response
}

pub async fn receive(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = Instant::now();
    let answer = handle(&req, body, &state).await;
    let Some(kind) = answer.kind else {
        return super::refused(&req, &state, answer, started);
    };
    let elapsed = started.elapsed();
    state.metrics.event(kind, answer.status, elapsed);
    tracing::info!(
        kind = kind.as_str(),
        key = answer.key.as_deref().unwrap_or("-"),
        outcome = answer.status,
        code = answer.code,
        warnings = answer.warnings.as_ref().map_or(0, |w| w.len()),
        latency_ms = super::milliseconds(elapsed),
        "webhook"
    );
    answer.into_response()
}

async fn handle(req: &HttpRequest, body: web::Payload, state: &AppState) -> Answer {
    if let Some(token) = &state.token {
        // The body is left unread: the connection closes after the answer (closing.rs).
        if !token.admits(req) {
            return Answer::rejected(401, TOKEN_REFUSED);
        }
    }
    // The permit holds the body's share of the budget until the event is handed on.
    let (bytes, _budget) =
        match read_body(req, body, state.max_body_bytes, &state.body_budget).await {
            Ok(b) => b,
            Err(e) => return e.answer(state.max_body_bytes),
        };
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let delivery = decode(bytes.freeze(), content_type).await;
    if let Reading::Record(r) = &delivery.decoded.reading {
        r.warnings()
            .keys()
            .for_each(|f| state.metrics.parse_warning(f));
    }
    let answer = provisional_answer(&delivery.decoded.reading);
    if state.erasures.suppresses(&delivery.decoded) {
        return suppressed(answer);
    }
    let ack = state.ingestor.submit(delivery).await;
    final_answer(answer, ack)
}

/// Bodies larger than this are read on the blocking pool, not on the HTTP worker: a large
/// JSON body takes a millisecond or more, while the worker has other connections to answer.
const DECODE_INLINE_MAX: usize = 32 << 10;

async fn decode(bytes: bytes::Bytes, content_type: Option<String>) -> crate::delivery::Delivery {
    let received = Utc::now();
    if bytes.len() <= DECODE_INLINE_MAX {
        return payload::read_delivery(bytes, content_type, received, Source::Webhook);
    }
    let (copy, ct) = (bytes.clone(), content_type.clone());
    match tokio::task::spawn_blocking(move || {
        payload::read_delivery(copy, ct, received, Source::Webhook)
    })
    .await
    {
        Ok(delivery) => delivery,
        // The pool is gone (the server is stopping): read it here.
        Err(_) => payload::read_delivery(bytes, content_type, received, Source::Webhook),
    }
}

/// What the answer says of the event itself, before its fate is known.
fn provisional_answer(reading: &Reading) -> Answer {
    let mut a = Answer::new(200, "stored");
    a.kind = Some(reading.kind());
    match reading {
        Reading::Record(r) => {
            a.key = Some(r.key());
            a.warnings = (!r.warnings().is_empty()).then(|| r.warnings().clone());
        }
        Reading::Rejected(r) => {
            a.code = r.http_status();
            a.status = "rejected";
            a.field = r.field.clone();
            a.error = Some(r.message.clone());
        }
        Reading::Test => a.status = "test",
        Reading::Unknown => {
            a.code = 202;
            a.status = "archived";
        }
    }
    a
}

/// The answer once the writer has said what it did.
fn final_answer(mut a: Answer, ack: Ack) -> Answer {
    match ack {
        Ack::Written(outcome) => {
            match outcome {
                Outcome::Stored | Outcome::Duplicate | Outcome::Updated => {
                    a.code = 200;
                    a.status = outcome.as_str();
                }
                // Test, archived and rejected answers were settled by the reading.
                Outcome::Test | Outcome::Archived | Outcome::Rejected => {}
                Outcome::Suppressed => return suppressed(a),
            }
            a
        }
        // The database's own words stay in raw_events.error and the logs: an answer to a
        // client that may be anyone does not repeat them.
        Ack::Rejected(_) => {
            a.code = 422;
            a.status = "rejected";
            a.error = Some(
                "the database refused this event: it is kept in raw_events, with the reason".into(),
            );
            a
        }
        // Durable in the spool. Whether it will be stored, a duplicate or an update is not
        // known yet; test, archived and rejected answers are already settled.
        Ack::Queued => {
            if a.status == "stored" {
                a.code = 202;
                a.status = "queued";
                a.warnings = None;
            }
            a
        }
        Ack::Unavailable(why) => {
            tracing::warn!(error = %why, "database unavailable");
            Answer {
                code: 503,
                status: "unavailable",
                error: Some(
                    "the database is unreachable and the event could not be queued: retry later"
                        .into(),
                ),
                warnings: None,
                ..a
            }
        }
    }
}

/// The answer to an event about an erased identifier: it says nothing of the event, and
/// the log line made of it carries no key.
fn suppressed(a: Answer) -> Answer {
    Answer {
        kind: a.kind,
        ..Answer::new(200, "suppressed")
    }
}

/// Why a body was not read.
enum BodyError {
    TooLarge,
    Unreadable(String),
    TimedOut,
}

impl BodyError {
    fn answer(self, limit: usize) -> Answer {
        match self {
            BodyError::TooLarge => Answer::rejected(
                413,
                format!("the body is larger than MAX_BODY_BYTES ({limit} bytes)"),
            ),
            BodyError::Unreadable(e) => {
                Answer::rejected(400, format!("could not read the body: {e}"))
            }
            BodyError::TimedOut => Answer::rejected(
                400,
                format!(
                    "the body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            ),
        }
    }
}

/// Reads the body up to `limit` bytes. A larger one (by its `Content-Length`, or once more
/// than `limit` bytes have come) is refused without being kept.
async fn read_body(
    req: &HttpRequest,
    mut body: web::Payload,
    limit: usize,
    budget: &std::sync::Arc<tokio::sync::Semaphore>,
) -> Result<(BytesMut, Option<tokio::sync::OwnedSemaphorePermit>), BodyError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // Refused bodies are left unread: the connection closes after the answer (closing.rs).
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let read = async {
        let first = declared
            .map_or(FIRST_BUFFER, |n| n as usize)
            .min(FIRST_BUFFER);
        let mut buf = BytesMut::with_capacity(first);
        let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| BodyError::Unreadable(e.to_string()))?;
            if buf.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge);
            }
            let permit = (budget.clone())
                .acquire_many_owned(chunk.len() as u32)
                .await
                .map_err(|_| BodyError::Unreadable("the server is stopping".into()))?;
            match held.as_mut() {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
            buf.extend_from_slice(&chunk);
        }
        Ok((buf, held))
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .unwrap_or(Err(BodyError::TimedOut))
}
