//! The running service: pool, migrations, writer, routes, listener.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use sqlx::PgPool;

use crate::callhippo_api::ApiClient;
use crate::config::{ServeSettings, SettingError};
use crate::http::{self, AppState, Token};
use crate::ingest::{Ingestor, Workers};
use crate::metrics::Metrics;
use crate::retry::{retry, WAIT_FOR_DATABASE};
use crate::spool::Spool;
use crate::store::{self, migrate, PgSink};
use crate::telemetry;

pub struct Application {
    port: u16,
    metrics_port: Option<u16>,
    server: Server,
    workers: Workers,
    spool: Spool,
    rollup: crate::rollup::Maintainer,
}

impl Application {
    /// Migrates the database (waiting for it while it is unreachable), binds the listener
    /// and prepares the server. Nothing is served until [`Application::run_until_stopped`].
    pub async fn build(settings: ServeSettings) -> anyhow::Result<Self> {
        // What a setting alone decides comes first, so that a mistake there is said at once,
        // not after a wait for the database.
        let spool = open_spool(&settings)?;
        let listener = bind("LISTEN_ADDR", settings.listen_addr)?;
        let metrics_listener = match settings.metrics_addr {
            Some(addr) => Some(bind("METRICS_ADDR", addr)?),
            None => None,
        };
        if let Some(warning) = token_warning(settings.webhook_token.as_deref()) {
            tracing::warn!("{warning}");
        }
        if (settings.admin_token.as_deref()).is_some_and(|t| t.chars().count() < TOKEN_MIN_LEN) {
            tracing::warn!(
                "ADMIN_TOKEN is shorter than {TOKEN_MIN_LEN} characters and could be guessed: \
                 choose a longer one (openssl rand -hex 16)"
            );
        }

        let pool = store::pool(&settings.db).map_err(SettingError)?;
        // Migrate now when the database answers, so that a broken migration stops the start.
        // When it does not answer, serve anyway (events wait in the spool) and migrate as soon
        // as it does.
        let schema_ready = Arc::new(AtomicBool::new(false));
        match migrate_once(&settings.db).await {
            Ok(()) => schema_ready.store(true, Ordering::Release),
            Err(e) if is_unavailable(&e) => {
                tracing::warn!(error = telemetry::one_line(&e), "database unreachable at start: serving anyway, events are spooled until it answers");
                tokio::spawn(migrate_when_reachable(
                    settings.db.clone(),
                    schema_ready.clone(),
                ));
            }
            Err(e) => return Err(e),
        }
        let metrics = Arc::new(Metrics::new());
        let sink = Arc::new(
            PgSink::new(pool.clone())
                .with_failover(store::failover(&settings.db).map_err(SettingError)?),
        );
        let erasures = sink.erasures();
        let console = (settings.admin_token.as_deref()).map(|secret| {
            crate::console::Console::new(
                secret,
                sink.clone(),
                settings.report.zone,
                settings.api_zone,
            )
        });
        tokio::spawn(refresh_erasures(sink.clone(), schema_ready.clone()));
        let (ingestor, workers) = Ingestor::start(
            sink,
            settings.batch.clone(),
            Some(spool.clone()),
            schema_ready.clone(),
            metrics.clone(),
        );
        let rollup = start_background_tasks(&settings, &pool, &metrics, &schema_ready)?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            ingestor,
            metrics,
            spool: spool.clone(),
            pool,
            db_runtime: tokio::runtime::Handle::current(),
            token: settings.webhook_token.as_deref().map(Token::new),
            max_body_bytes: settings.max_body_bytes,
            body_budget: Arc::new(tokio::sync::Semaphore::new(
                (crate::config::defaults::BODY_BYTES_IN_FLIGHT as usize)
                    .max(2 * settings.max_body_bytes),
            )),
            refusals: http::RefusalLog::default(),
            erasures,
            console,
        });
        let server = http::webhook_server(
            listener,
            state.clone(),
            http::ServerSettings {
                max_connections: settings.max_connections,
                metrics_here: metrics_listener.is_none(),
            },
        )?;
        tracing::info!(address = %settings.listen_addr, port, "serving");
        let mut metrics_port = None;
        if let Some(listener) = metrics_listener {
            metrics_port = Some(listener.local_addr()?.port());
            // Its own server, with one worker: /metrics only. It stops on the same signals.
            let metrics = HttpServer::new(move || {
                App::new()
                    .app_data(state.clone())
                    .configure(http::metrics_routes)
            })
            .workers(1)
            .listen(listener)?
            .run();
            tokio::spawn(metrics);
            tracing::info!(address = ?settings.metrics_addr, "serving /metrics apart from the webhook");
        }
        Ok(Application {
            port,
            metrics_port,
            server,
            workers,
            spool,
            rollup,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of METRICS_ADDR's listener, when /metrics is served apart.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    /// Serves until SIGINT or SIGTERM, lets requests in flight finish, then waits until the
    /// writer has committed everything it acknowledged.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        // A catch-up under way would run on in PostgreSQL after this process has gone.
        self.rollup.stop().await;
        // The server has dropped its handlers, and with them every way to submit.
        self.workers.join().await;
        let left = self.spool.depth().events;
        if left == 0 {
            tracing::info!("stopped: every acknowledged event is written");
        } else {
            tracing::warn!(
                "stopped: {left} event{} still in the spool at {}, written when the database answers \
                 (keep that folder: the next start with the same SPOOL_DIR writes them)",
                if left == 1 { "" } else { "s" },
                self.spool.dir().display()
            );
        }
        served
    }
}

/// Reconciliation with CallHippo's API and retention, when they are set: tasks beside the
/// webhook path, for as long as the service runs. The summaries' maintainer is returned, to
/// be stopped with the service.
fn start_background_tasks(
    settings: &ServeSettings,
    pool: &PgPool,
    metrics: &Arc<Metrics>,
    schema_ready: &Arc<AtomicBool>,
) -> Result<crate::rollup::Maintainer, SettingError> {
    if let Some(reconcile) = settings.reconcile.clone() {
        let client = ApiClient::new(&reconcile.api_url, &reconcile.token).map_err(SettingError)?;
        tracing::info!(
            every_s = reconcile.every.as_secs(),
            days = reconcile.days,
            zone = %reconcile.zone,
            "reconcile: CallHippo's API is read for calls the webhooks missed"
        );
        tokio::spawn(crate::reconcile::run(
            reconcile,
            client,
            pool.clone(),
            metrics.clone(),
            schema_ready.clone(),
        ));
    }
    let rollup = crate::rollup::Maintainer::start(
        store::slow_work_pool(&settings.db).map_err(SettingError)?,
        settings.report,
        crate::config::defaults::ROLLUP_EVERY,
        schema_ready.clone(),
    );
    let retention = store::retention::Retention {
        raw_days: settings.raw_retention_days,
        call_days: settings.call_retention_days,
    };
    if let Some(days) = retention.raw_days {
        tracing::info!(
            days,
            "retention: raw events last received longer ago than this are removed hourly"
        );
    }
    if let Some(days) = retention.call_days {
        tracing::info!(days, "retention: calls, SMS and status events older than this are removed hourly, with their raw events");
    }
    if retention != store::retention::Retention::default() {
        tokio::spawn(store::retention::run(
            pool.clone(),
            retention,
            crate::config::defaults::RETENTION_EVERY,
        ));
    }
    Ok(rollup)
}

/// Keeps what the webhook knows of erasures current (every write checks again anyway).
async fn refresh_erasures(sink: Arc<PgSink>, schema_ready: Arc<AtomicBool>) {
    loop {
        if schema_ready.load(Ordering::Acquire) {
            if let Err(e) = sink.refresh_erasures().await {
                tracing::debug!(error = %e, "could not read erasures; will try again");
            }
        }
        tokio::time::sleep(crate::config::defaults::ERASURES_REFRESH).await;
    }
}

/// Opens the spool; a folder that cannot be one is a setting to fix.
fn open_spool(settings: &ServeSettings) -> Result<Spool, SettingError> {
    let dir = &settings.spool_dir;
    if dir.exists() && !dir.is_dir() {
        return Err(SettingError(format!(
            "SPOOL_DIR {} is a file, not a folder: point SPOOL_DIR at a folder (it is created if missing)",
            dir.display()
        )));
    }
    Spool::open(dir, settings.spool_max_bytes).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                "is not writable by this user"
            }
            std::io::ErrorKind::NotADirectory => "is inside something that is not a folder",
            _ => "cannot hold the spool",
        };
        SettingError(format!("SPOOL_DIR {} {why}: {e}", dir.display()))
    })
}

/// Binds the listener; an address that cannot be had is a setting to fix.
fn bind(setting: &str, addr: std::net::SocketAddr) -> Result<TcpListener, SettingError> {
    TcpListener::bind(addr).map_err(|e| {
        SettingError(match e.kind() {
            std::io::ErrorKind::AddrInUse => format!(
                "{setting} {addr} is in use by another program: stop it or choose another port"
            ),
            std::io::ErrorKind::AddrNotAvailable => {
                format!("{setting} {addr} is not an address of this machine")
            }
            _ => format!("{setting} {addr}: cannot listen: {e}"),
        })
    })
}

/// Tokens printed in this project's documentation and examples: whoever reads them knows them.
pub const WELL_KNOWN_TOKENS: &[&str] = &["change-me", "changeme", "secret", "token", "test"];

/// The shortest `WEBHOOK_TOKEN` taken without a warning.
pub const TOKEN_MIN_LEN: usize = 16;

/// What is wrong with the webhook token, if anything: said at start, since CallHippo can
/// only send a token in the URL, and it is all that guards the endpoint.
pub fn token_warning(token: Option<&str>) -> Option<String> {
    match token {
        None => Some(format!(
            "WEBHOOK_TOKEN is not set: anyone who can reach {} may post events",
            http::WEBHOOK_PATH
        )),
        Some(t) if WELL_KNOWN_TOKENS.contains(&t.trim().to_ascii_lowercase().as_str()) => Some(
            "WEBHOOK_TOKEN is a token printed in this project's documentation: anyone may post \
             events; choose your own (openssl rand -hex 16)"
                .to_owned(),
        ),
        Some(t) if t.chars().count() < TOKEN_MIN_LEN => Some(format!(
            "WEBHOOK_TOKEN is shorter than {TOKEN_MIN_LEN} characters and could be guessed: \
             choose a longer one (openssl rand -hex 16)"
        )),
        Some(_) => None,
    }
}

fn is_unavailable(e: &anyhow::Error) -> bool {
    e.downcast_ref::<store::database::ConnectError>()
        .map(|c| c.unavailable)
        .or_else(|| e.downcast_ref::<sqlx::Error>().map(store::is_unavailable))
        .unwrap_or(false)
}

/// Retries the migrations until they are applied, then lets the writers write.
async fn migrate_when_reachable(db: store::DbSettings, schema_ready: Arc<AtomicBool>) {
    // The first try comes at once: the one that failed was build's.
    let migrated = retry(
        WAIT_FOR_DATABASE,
        || migrate_once(&db),
        |_| true,
        |e, wait| {
            let retry_in_ms = wait.as_millis() as u64;
            if is_unavailable(e) {
                tracing::warn!(
                    error = telemetry::one_line(e),
                    retry_in_ms,
                    "database still unreachable; waiting to migrate"
                );
            } else {
                tracing::error!(
                    error = telemetry::one_line(e),
                    retry_in_ms,
                    "migrations failed; retrying"
                );
            }
        },
    )
    .await;
    if migrated.is_ok() {
        schema_ready.store(true, Ordering::Release);
    }
}

/// Connects once and applies pending migrations.
pub async fn migrate_once(db: &store::DbSettings) -> anyhow::Result<()> {
    // With several hosts, the one that takes writes (and every pool moves to it).
    let failover = store::failover(db).map_err(SettingError)?;
    if failover.is_multi_host() {
        failover.find_writable().await;
    }
    let opts = failover.options();
    let mut conn = store::database::connect_or_create(&opts, db.timeout).await?;
    let applied = migrate::run(&mut conn)
        .await
        .with_context(|| format!("{}: migrations failed", store::database::describe(&opts)))?;
    if applied.is_empty() {
        tracing::info!(version = migrate::latest_version(), "schema is current");
    } else {
        tracing::info!(applied = ?applied, "migrations applied");
    }
    Ok(())
}

/// A pool for one-off commands.
pub fn command_pool(db: &store::DbSettings) -> anyhow::Result<PgPool> {
    store::pool(db).map_err(anyhow::Error::msg)
}
