//! Test harness: each test gets a database of its own and a real server on a free port.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::Duration;

use callhippo_ingest::config::ServeSettings;
use callhippo_ingest::startup::Application;
use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection, PgPool};

pub const CALL: &str = include_str!("../fixtures/vendor_call.json");
pub const SMS: &str = include_str!("../fixtures/vendor_sms.json");
pub const STATUS: &str = include_str!("../fixtures/vendor_status.json");
pub const NEWER_CALL: &str = include_str!("../fixtures/newer_call.json");

/// The server PostgreSQL the tests use (they create and drop databases in it).
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `admin_url` with another database name.
pub fn url_for(db: &str) -> String {
    let base = admin_url();
    let (head, tail) = match base.find('?') {
        Some(i) => base.split_at(i),
        None => (base.as_str(), ""),
    };
    let head = match head.rfind('/') {
        Some(i) if i > "postgres://".len() => &head[..i],
        _ => head,
    };
    format!("{head}/{db}{tail}")
}

/// A database that is dropped when the value is.
pub struct TestDb {
    pub name: String,
    pub url: String,
    /// Whether dropping this value drops the database.
    owned: bool,
}

impl TestDb {
    pub async fn new() -> Self {
        let name = format!("chi_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url())
            .await
            .expect("PostgreSQL for the tests (DATABASE_URL)");
        admin
            .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await
            .unwrap();
        TestDb {
            url: url_for(&name),
            name,
            owned: true,
        }
    }

    /// A name no database has yet (the code under test is to create it); dropped like one
    /// made by [`TestDb::new`].
    pub fn not_created() -> Self {
        let name = format!("chi_test_{}", uuid::Uuid::new_v4().simple());
        TestDb {
            url: url_for(&name),
            name,
            owned: true,
        }
    }

    /// A handle on a database owned elsewhere.
    pub fn borrowed(name: &str) -> Self {
        TestDb {
            url: url_for(name),
            name: name.to_owned(),
            owned: false,
        }
    }

    pub async fn pool(&self) -> PgPool {
        PgPool::connect(&self.url).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let name = self.name.clone();
        // Drop runs outside async: a thread of its own with a small runtime.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
                        let _ = admin
                            .execute(
                                format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#)
                                    .as_str(),
                            )
                            .await;
                    }
                })
        })
        .join();
    }
}

pub struct TestApp {
    pub address: String,
    /// Where /metrics is served when METRICS_ADDR is set.
    pub metrics_address: Option<String>,
    pub pool: PgPool,
    pub client: reqwest::Client,
    pub db: TestDb,
}

pub fn init_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            // Kept for the whole run: the log writer's thread lives as long as it.
            if let Ok(guard) = callhippo_ingest::telemetry::init(
                callhippo_ingest::config::LogFormat::Text,
                "debug",
            ) {
                std::mem::forget(guard);
            }
        }
    });
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the real server on a free port against a fresh database; `adjust` changes the
/// settings first.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut ServeSettings)) -> TestApp {
    let db = TestDb::new().await;
    let mut app = spawn_app_on(&db, adjust).await;
    app.db = db;
    app
}

/// Like [`spawn_app_with`], on a database the test made itself.
pub async fn spawn_app_on(db: &TestDb, adjust: impl FnOnce(&mut ServeSettings)) -> TestApp {
    init_logs();
    let spool = std::env::temp_dir().join(format!("chi-spool-{}", db.name));
    let mut settings = local_settings(&db.url, &spool);
    adjust(&mut settings);
    let (address, metrics_address) = start(settings).await;
    TestApp {
        address,
        metrics_address,
        pool: db.pool().await,
        client: reqwest::Client::new(),
        db: TestDb::borrowed(&db.name),
    }
}

/// The default settings of a server on a free port of 127.0.0.1, against `url`, spooling
/// into `spool`.
pub fn local_settings(url: &str, spool: &Path) -> ServeSettings {
    let mut settings = ServeSettings::new(url);
    settings.listen_addr = "127.0.0.1:0".parse().unwrap();
    settings.spool_dir = spool.to_owned();
    settings
}

/// Starts the real server in this process; its address, and that of `/metrics` when it has
/// one of its own.
pub async fn start(settings: ServeSettings) -> (String, Option<String>) {
    let app = Application::build(settings)
        .await
        .expect("the application starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let metrics_address = app.metrics_port().map(|p| format!("http://127.0.0.1:{p}"));
    tokio::spawn(app.run_until_stopped());
    (address, metrics_address)
}

impl TestApp {
    pub fn webhook_url(&self) -> String {
        format!("{}/webhooks/callhippo", self.address)
    }

    /// Posts a JSON body and returns the status code and the JSON answer.
    pub async fn post(&self, body: impl Into<reqwest::Body>) -> (u16, Value) {
        self.post_with(body, "application/json").await
    }

    pub async fn post_with(
        &self,
        body: impl Into<reqwest::Body>,
        content_type: &str,
    ) -> (u16, Value) {
        let resp = self
            .client
            .post(self.webhook_url())
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .expect("an answer");
        answer(resp).await
    }

    /// Brings the summary tables up to date (days in UTC), as `rollup` does.
    pub async fn rollup(&self) {
        rollup_in(&self.pool, chrono_tz::UTC).await;
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// One row of a query, as JSON (so that tests compare whole rows with `json!`).
    pub async fn row(&self, sql: &str) -> Value {
        let wrapped = format!("SELECT to_jsonb(q) FROM ({sql}) q");
        sqlx::query_scalar(&wrapped)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn rows(&self, sql: &str) -> Vec<Value> {
        let wrapped = format!("SELECT to_jsonb(q) FROM ({sql}) q");
        sqlx::query_scalar(&wrapped)
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }
}

/// Brings the summary tables of `pool`'s database up to date, days in `zone`.
pub async fn rollup_in(pool: &PgPool, zone: chrono_tz::Tz) {
    let settings = callhippo_ingest::store::rollup::ReportSettings {
        zone,
        ..Default::default()
    };
    // A running serve rolls up every few seconds: wait for it when it is at it.
    for _ in 0..200 {
        let done = callhippo_ingest::store::rollup::catch_up(pool, &settings)
            .await
            .unwrap();
        if done.is_some() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("another process kept rolling up for 5 s");
}

/// Sends a request and returns the status code and the JSON answer.
pub async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    answer(req.send().await.expect("an answer")).await
}

/// The text of the answer to `req`, whatever its status.
pub async fn text(req: reqwest::RequestBuilder) -> String {
    req.send()
        .await
        .expect("an answer")
        .text()
        .await
        .expect("a text body")
}

pub async fn answer(resp: reqwest::Response) -> (u16, Value) {
    let code = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not a JSON answer: {text:?}"));
    (code, body)
}

/// A JSON text with one field set (or removed, with `Value::Null` and `remove`).
pub fn with(base: &str, field: &str, value: Value) -> String {
    let mut v: Value = serde_json::from_str(base).unwrap();
    v[field] = value;
    v.to_string()
}

pub fn without(base: &str, field: &str) -> String {
    let mut v: Value = serde_json::from_str(base).unwrap();
    v.as_object_mut().unwrap().remove(field);
    v.to_string()
}

/// Runs `bash tests/<script> <args…>`; its stdout when it succeeds, else its stderr.
pub fn test_script(script: &str, args: &[&std::ffi::OsStr]) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests")
                .join(script),
        )
        .args(args)
        .output()
        .expect("bash runs");
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// A free local port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real binary, with no token and quiet logs unless a test says otherwise.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_callhippo-ingest"));
    c.env_remove("WEBHOOK_TOKEN").env("RUST_LOG", "warn");
    c
}

/// A `serve` process, killed when dropped.
pub struct Served(pub Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `replay` on `db` (with `args`), as an operator would; its stdout, the summary.
pub fn replay(db: &TestDb, args: &[&str]) -> String {
    let out = bin()
        .arg("replay")
        .args(args)
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("replay: "), "a progress line: {stderr}");
    stdout.trim().to_owned()
}

/// `serve` as an operator would start it, on 127.0.0.1:`port`.
pub fn serve_command(db_url: &str, port: u16, spool: &Path) -> Command {
    let mut c = bin();
    c.arg("serve")
        .env("DATABASE_URL", db_url)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("SPOOL_DIR", spool)
        .env("DB_TIMEOUT_MS", "800")
        .stdout(Stdio::null());
    c
}

/// Starts `serve` as an operator would, on 127.0.0.1:`port`.
pub fn serve_process(db_url: &str, port: u16, spool: &Path) -> Served {
    Served(
        serve_command(db_url, port, spool)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the binary starts"),
    )
}

/// Starts `serve` with its log (at `info`) written to the file `log`, as by
/// `serve 2>serve.log`.
pub fn serve_process_logging(db_url: &str, port: u16, spool: &Path, log: &Path) -> Served {
    let file = std::fs::File::create(log).unwrap();
    Served(
        serve_command(db_url, port, spool)
            .env("RUST_LOG", "info")
            .stderr(file)
            .spawn()
            .expect("the binary starts"),
    )
}

/// Sends SIGTERM to `serve` and waits for it to exit; its exit status.
pub async fn sigterm(server: Served) -> std::process::ExitStatus {
    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.0.wait().unwrap()
    })
    .await
    .unwrap()
}

/// `/readyz`'s code and body; code 0 when nothing answers.
pub async fn readyz(client: &reqwest::Client, base: &str) -> (u16, Value) {
    match client.get(format!("{base}/readyz")).send().await {
        Ok(r) => answer(r).await,
        Err(_) => (0, Value::Null),
    }
}

/// Waits until `base` answers `/readyz` with 200.
pub async fn wait_ready(client: &reqwest::Client, base: &str) {
    for _ in 0..300 {
        if readyz(client, base).await.0 == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{base} did not become ready");
}
