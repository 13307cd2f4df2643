//! The webhook's HTTP server: actix-web's `App` on actix-http's `HttpService`, put together
//! here rather than by `HttpServer`, for the one thing `HttpServer` cannot be told: to check
//! the token of an `Expect: 100-continue` request before `100 Continue` invites its body.
//! Everything else is `HttpServer`'s defaults, plus a cap on open connections and a short
//! linger after refusals (see `closing.rs`).

use std::net::TcpListener;
use std::time::{Duration, Instant};

use actix_http::{body::BoxBody, HttpService, KeepAlive, Request, Response};
use actix_service::{fn_service, map_config, ServiceFactoryExt};
use actix_web::dev::{AppConfig, Server};
use actix_web::{web, App, HttpMessage};

use super::{Answer, AppState, WEBHOOK_PATH};

/// How long actix-http keeps reading (and throwing away) what a client still sends after a
/// refusal, before it closes. None: actix-http reads at full speed while it lingers, and
/// checks its deadline only between reads, so that 50 ms read up to 250 MiB on loopback.
/// The answer's body drains a bounded part of the rest instead (`closing.rs`).
pub const LINGER: Duration = Duration::ZERO;

/// How long a client may take to send a request's head, and to send the next one on a
/// kept-alive connection (`HttpServer`'s defaults).
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// What the server is given.
pub struct ServerSettings {
    /// Most connections open at once; past it, new ones wait in the listen queue.
    pub max_connections: usize,
    /// Whether `/metrics` is served here.
    pub metrics_here: bool,
}

/// Binds the routes to `listener`; runs until SIGINT or SIGTERM once awaited.
pub fn webhook_server(
    listener: TcpListener,
    state: web::Data<AppState>,
    settings: ServerSettings,
) -> std::io::Result<Server> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per_worker = settings.max_connections.div_ceil(workers).max(1);
    let metrics_here = settings.metrics_here;
    let server = Server::build()
        .workers(workers)
        .max_concurrent_connections(per_worker)
        .shutdown_timeout(30)
        .listen("webhook", listener, move || {
            let expect_state = state.clone();
            let app = App::new()
                .app_data(state.clone())
                .wrap_fn(super::closing::keep_unread)
                .configure(|cfg| super::routes(cfg, metrics_here));
            let app = map_config(app, |_| AppConfig::default())
                .map_err(|e: actix_web::Error| Response::<BoxBody>::from(e.error_response()));
            HttpService::build()
                .keep_alive(KeepAlive::Timeout(KEEP_ALIVE))
                .client_request_timeout(HEAD_TIMEOUT)
                .client_disconnect_timeout(LINGER)
                .expect(fn_service(move |req: Request| {
                    let state = expect_state.clone();
                    async move { before_continue(&state, req) }
                }))
                .finish(app)
                .tcp()
        })?
        .run();
    Ok(server)
}

/// An `Expect: 100-continue` request to the webhook without the token is answered 401 at
/// once: no `100 Continue`, no body read, the connection closed.
fn before_continue(state: &AppState, mut req: Request) -> Result<Request, Response<BoxBody>> {
    let Some(token) = &state.token else {
        return Ok(req);
    };
    if req.path() != WEBHOOK_PATH
        || token.admits_parts(req.headers(), req.uri().query().unwrap_or(""))
    {
        return Ok(req);
    }
    let started = Instant::now();
    let answer = Answer::rejected(401, super::webhook::TOKEN_REFUSED);
    super::count_refusal(state, req.method(), req.path(), &answer, started);
    Err(answer.closing(req.take_payload()))
}
