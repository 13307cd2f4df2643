//! The running service: pool, migrations, writer, routes, listener.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use sqlx::PgPool;

use crate::config::ServeSettings;
use crate::http::{self, AppState, Token};
use crate::ingest::{Ingestor, Workers, Writer};
use crate::metrics::Metrics;
use crate::spool::Spool;
use crate::store::{self, migrate};

pub struct Application {
    port: u16,
    server: Server,
    workers: Workers,
}

impl Application {
    /// Migrates the database (waiting for it while it is unreachable), binds the listener
    /// and prepares the server. Nothing is served until [`Application::run_until_stopped`].
    pub async fn build(settings: ServeSettings) -> anyhow::Result<Self> {
        let pool = store::pool(&settings.db).map_err(anyhow::Error::msg)?;
        // Migrate now when the database answers, so that a broken migration stops the start.
        // When it does not answer, serve anyway (events wait in the spool) and migrate as soon
        // as it does.
        let schema_ready = Arc::new(AtomicBool::new(false));
        match migrate_once(&settings.db).await {
            Ok(()) => schema_ready.store(true, Ordering::Release),
            Err(e) if is_unavailable(&e) => {
                tracing::warn!(error = %e, "database unreachable at start: serving anyway, events are spooled until it answers");
                tokio::spawn(migrate_when_reachable(
                    settings.db.clone(),
                    schema_ready.clone(),
                ));
            }
            Err(e) => return Err(e.context("migrations failed")),
        }
        if settings.webhook_token.is_none() {
            tracing::warn!(
                "WEBHOOK_TOKEN is not set: anyone who can reach {} may post events",
                http::WEBHOOK_PATH
            );
        }

        let spool =
            Spool::open(&settings.spool_dir, settings.spool_max_bytes).with_context(|| {
                format!(
                    "SPOOL_DIR {}: cannot open the spool",
                    settings.spool_dir.display()
                )
            })?;
        let metrics = Arc::new(Metrics::new());
        let (ingestor, workers) = Ingestor::start(
            Writer::new(pool.clone(), settings.db.timeout),
            settings.batch.clone(),
            Some(spool.clone()),
            schema_ready,
            metrics.clone(),
        );
        if let Some(days) = settings.raw_retention_days {
            tracing::info!(
                days,
                "retention: raw events older than this are removed hourly"
            );
            tokio::spawn(store::retention::run(
                pool.clone(),
                days,
                Duration::from_secs(3600),
            ));
        }
        let listener = TcpListener::bind(settings.listen_addr)
            .with_context(|| format!("LISTEN_ADDR {}: cannot listen", settings.listen_addr))?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            ingestor,
            metrics,
            spool,
            pool,
            db_runtime: tokio::runtime::Handle::current(),
            token: settings.webhook_token.as_deref().map(Token::new),
            max_body_bytes: settings.max_body_bytes,
        });
        let server =
            HttpServer::new(move || App::new().app_data(state.clone()).configure(http::routes))
                .listen(listener)?
                .shutdown_timeout(30)
                .run();
        tracing::info!(address = %settings.listen_addr, port, "serving");
        Ok(Application {
            port,
            server,
            workers,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT or SIGTERM, lets requests in flight finish, then waits until the
    /// writer has committed everything it acknowledged.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        // The server has dropped its handlers, and with them every way to submit.
        self.workers.join().await;
        tracing::info!("stopped: every acknowledged event is written");
        served
    }
}

fn is_unavailable(e: &anyhow::Error) -> bool {
    e.downcast_ref::<sqlx::Error>()
        .is_some_and(store::is_unavailable)
}

/// Retries the migrations until they are applied, then lets the writers write.
async fn migrate_when_reachable(db: store::DbSettings, schema_ready: Arc<AtomicBool>) {
    let mut delay = Duration::from_millis(250);
    loop {
        tokio::time::sleep(delay).await;
        match migrate_once(&db).await {
            Ok(()) => {
                schema_ready.store(true, Ordering::Release);
                return;
            }
            Err(e) if is_unavailable(&e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "database still unreachable; waiting to migrate");
            }
            Err(e) => tracing::error!(error = format!("{e:#}"), "migrations failed; retrying"),
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Connects once and applies pending migrations.
pub async fn migrate_once(db: &store::DbSettings) -> anyhow::Result<()> {
    let opts = store::connect_options(&db.url, db.timeout).map_err(anyhow::Error::msg)?;
    let mut conn = tokio::time::timeout(db.timeout, sqlx::ConnectOptions::connect(&opts))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    let applied = migrate::run(&mut conn).await?;
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
