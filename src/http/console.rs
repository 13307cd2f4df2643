//! The operator console's routes (docs/reference.md §10). Without `ADMIN_TOKEN` every one
//! answers 404, as an unknown path does.

use std::time::Instant;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use askama::Template;
use serde_json::json;

use super::{refused, AppState};
use crate::console::auth::{same_origin, Access, QueryToken};
use crate::console::{page, summary, Console};
use crate::http::Answer;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/console").route(web::get().to(console_page)))
        .service(web::resource("/console/api/summary").route(web::get().to(api_summary)))
        .service(web::resource("/console/replay/{id}").route(web::post().to(replay)))
        .service(web::resource("/console/assets/{name}").route(web::get().to(asset)));
}

/// What every console answer carries: nothing cached, nothing framed, no referrer, and no
/// script, style or connection but the service's own.
fn secured(mut builder: HttpResponseBuilder) -> HttpResponseBuilder {
    builder
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ));
    builder
}

fn html(builder: HttpResponseBuilder, body: String) -> HttpResponse {
    secured(builder)
        .content_type("text/html; charset=utf-8")
        .body(body)
}

fn not_found(req: &HttpRequest, state: &AppState, started: Instant) -> HttpResponse {
    let answer = Answer::rejected(404, "no such path: webhooks go to POST /webhooks/callhippo");
    refused(req, state, answer, started)
}

/// 401: counted and logged as any refusal; a page for browsers, JSON for scripts.
fn denied(req: &HttpRequest, state: &AppState, started: Instant, page: bool) -> HttpResponse {
    if !page {
        let answer = Answer::rejected(
            401,
            "the console needs ADMIN_TOKEN: a session cookie or Authorization: Bearer …",
        );
        return refused(req, state, answer, started);
    }
    super::count_refusal(
        state,
        req.method(),
        req.path(),
        &Answer::rejected(401, "no console token"),
        started,
    );
    let body = (page::Denied {
        version: page::asset_version(),
    })
    .render()
    .unwrap_or_default();
    html(HttpResponse::Unauthorized(), body)
}

/// The console, or why not; `None` answers 404.
fn console(state: &AppState) -> Option<&Console> {
    state.console.as_ref()
}

async fn console_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let started = Instant::now();
    let Some(console) = console(&state) else {
        return not_found(&req, &state, started);
    };
    match console.auth.query_token(&req) {
        QueryToken::Right => {
            // The token leaves the address bar (and the history) at once.
            let secure = req.connection_info().scheme() == "https";
            tracing::info!(path = "/console", "console: signed in with the token");
            return secured(HttpResponse::SeeOther())
                .insert_header((header::LOCATION, "/console"))
                .insert_header((header::SET_COOKIE, console.auth.session_cookie(secure)))
                .finish();
        }
        QueryToken::Wrong => return denied(&req, &state, started, true),
        QueryToken::Absent => {}
    }
    if console.auth.access(&req) == Access::Denied {
        return denied(&req, &state, started, true);
    }
    let summary = gather(&state, console).await;
    html(HttpResponse::Ok(), page::render(&summary))
}

async fn api_summary(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let started = Instant::now();
    let Some(console) = console(&state) else {
        return not_found(&req, &state, started);
    };
    if console.auth.access(&req) == Access::Denied {
        return denied(&req, &state, started, false);
    }
    let summary = gather(&state, console).await;
    let figures = page::figures(&summary);
    let refresh = page::Refresh {
        figures: &figures,
        html: page::fragments(&summary),
    };
    let mut body = serde_json::to_value(&summary).unwrap_or_default();
    if let (Some(obj), Ok(extra)) = (body.as_object_mut(), serde_json::to_value(&refresh)) {
        obj.extend(extra.as_object().cloned().unwrap_or_default());
    }
    secured(HttpResponse::Ok()).json(body)
}

/// What this process gives the figures.
fn local(state: &AppState, console: &Console) -> summary::Local {
    summary::Local {
        metrics: state.metrics.clone(),
        spool: state.spool.depth(),
        zone: console.report_zone,
        started_at: console.started_at,
        expected_schema: crate::store::migrate::latest_version(),
        cache: console.cache.clone(),
        api_zone: console.api_zone,
    }
}

async fn gather(state: &AppState, console: &Console) -> summary::Summary {
    let asked = std::time::Instant::now();
    let mut latest = console.latest.lock().await;
    // Finished while this request waited: gathered for another page at the same moment.
    if let Some((at, summary)) = latest.as_ref() {
        if *at >= asked {
            return summary.clone();
        }
    }
    let summary = gather_now(state, console).await;
    *latest = Some((std::time::Instant::now(), summary.clone()));
    summary
}

async fn gather_now(state: &AppState, console: &Console) -> summary::Summary {
    let (pool, local_figures) = (state.pool.clone(), local(state, console));
    let task = state
        .db_runtime
        .spawn(async move { summary::gather(&pool, local_figures).await });
    match task.await {
        Ok(summary) => summary,
        Err(e) => {
            // Only a panic gets here; the page still answers, without the database.
            tracing::error!(error = %e, "console: gathering the figures failed");
            summary::without_database(local(state, console))
        }
    }
}

/// `POST /console/replay/{raw_event_id}`: reads that raw event again and writes it. From the
/// console's own page (its cookie, and an `Origin` of this host) or with the Bearer token.
async fn replay(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = Instant::now();
    let Some(console) = console(&state) else {
        return not_found(&req, &state, started);
    };
    match console.auth.access(&req) {
        Access::Denied => return denied(&req, &state, started, false),
        Access::Cookie if !same_origin(&req) => {
            let answer = Answer::rejected(
                403,
                "replay is taken from the console's own page only (Origin of this host)",
            );
            return refused(&req, &state, answer, started);
        }
        Access::Cookie | Access::Bearer => {}
    }
    let Ok(id) = path.parse::<i64>() else {
        return secured(HttpResponse::BadRequest())
            .json(json!({"status": "rejected", "error": "a raw event id is a whole number"}));
    };
    let sink = console.sink.clone();
    let zone = console.api_zone;
    let task = state
        .db_runtime
        .spawn(async move { crate::replay::replay_one(&sink, zone, id).await });
    match task.await {
        Ok(Ok(Some((outcome, error)))) => {
            tracing::info!(
                raw_event_id = id,
                outcome = outcome.as_str(),
                "console: raw event replayed"
            );
            secured(HttpResponse::Ok()).json(json!({
                "id": id,
                "outcome": outcome.as_str(),
                "error": error.map(|e| crate::console::mask::text(&e)),
            }))
        }
        Ok(Ok(None)) => secured(HttpResponse::NotFound())
            .json(json!({"status": "rejected", "error": format!("no raw event {id}")})),
        Ok(Err(e)) => {
            tracing::warn!(raw_event_id = id, error = %crate::telemetry::one_line(&e), "console: replay failed");
            secured(HttpResponse::ServiceUnavailable())
                .insert_header(("Retry-After", super::answer::RETRY_AFTER_SECONDS.to_string()))
                .json(json!({"status": "unavailable", "error": "the database could not replay it now; try again (the log says why)"}))
        }
        Err(e) => {
            tracing::error!(raw_event_id = id, error = %e, "console: replay failed");
            secured(HttpResponse::ServiceUnavailable())
                .json(json!({"status": "unavailable", "error": "replay failed (the log says why)"}))
        }
    }
}

/// The stylesheet and the script. Public (they hold no data), but only with a console.
async fn asset(
    req: HttpRequest,
    name: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = Instant::now();
    if console(&state).is_none() {
        return not_found(&req, &state, started);
    }
    let (body, content_type) = match name.as_str() {
        "console.css" => (page::CSS, "text/css; charset=utf-8"),
        "console.js" => (page::JS, "text/javascript; charset=utf-8"),
        _ => return not_found(&req, &state, started),
    };
    secured(HttpResponse::Ok())
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .content_type(content_type)
        .body(body)
}
