//! Nothing acknowledged is lost when the database goes away, when the process is killed, or
//! when it is stopped under load; and stopping says what is left in the spool.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::*;

/// A TCP proxy in front of PostgreSQL that the test can cut (every connection dropped, new
/// ones refused) and restore.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (cut2, conns2) = (cut.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if cut2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns2.lock().unwrap().push(task);
            }
        });
        Proxy {
            port,
            cut,
            conns,
            accept,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// host:port of the PostgreSQL server behind `admin_url()`.
fn pg_addr() -> SocketAddr {
    let url = admin_url();
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(&url);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    let hostport = rest.split(['/', '?']).next().unwrap();
    let hostport = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:5432")
    };
    let hostport = hostport.replace("localhost", "127.0.0.1");
    hostport.parse().unwrap_or_else(|_| {
        panic!("DATABASE_URL host must be an IP address for the proxy tests: {hostport}")
    })
}

/// The test database's URL, through the proxy.
fn via(proxy: &Proxy, db: &TestDb) -> String {
    let url = admin_url();
    let (scheme, rest) = url.split_once("://").unwrap();
    let user = rest
        .rsplit_once('@')
        .map(|(u, _)| format!("{u}@"))
        .unwrap_or_default();
    format!("{scheme}://{user}127.0.0.1:{}/{}", proxy.port, db.name)
}

fn call(sid: &str) -> String {
    with(CALL, "callSid", json!(sid))
}

/// Waits until `/readyz` is 200 with an empty spool.
async fn wait_drained(client: &reqwest::Client, base: &str) {
    for _ in 0..600 {
        let (code, body) = readyz(client, base).await;
        if code == 200 && body["spool"]["events"] == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{base} did not drain its spool: {:?}",
        readyz(client, base).await
    );
}

/// Starts `serve` again on the same spool and waits until it has drained it; the server
/// (stopped when dropped) and a pool on the test's database.
async fn restart_and_drain(
    client: &reqwest::Client,
    url: &str,
    spool: &std::path::Path,
    db: &TestDb,
) -> (Served, sqlx::PgPool) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = serve_process(url, port, spool);
    wait_ready(client, &base).await;
    wait_drained(client, &base).await;
    (server, db.pool().await)
}

/// Every acknowledged call is in `calls` exactly once (the primary key makes "once" a given;
/// what is checked is that none is missing).
async fn assert_all_stored(pool: &sqlx::PgPool, acked: &[String]) {
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT call_sid FROM calls WHERE call_sid = ANY($1)")
            .bind(acked)
            .fetch_all(pool)
            .await
            .unwrap();
    let missing: Vec<&String> = acked.iter().filter(|s| !stored.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events are missing: {missing:?}",
        missing.len(),
        acked.len()
    );
}

#[tokio::test]
async fn a_database_outage_spools_events_and_loses_none() {
    let db = TestDb::new().await;
    let proxy = Proxy::start(pg_addr()).await;
    let url = via(&proxy, &db);
    let app = spawn_app_on(&db, |s| {
        s.db.url = url.clone();
        s.db.timeout = Duration::from_millis(800);
    })
    .await;

    let mut acked = Vec::new();
    for i in 0..20 {
        let sid = format!("CA-before-{i}");
        let (code, a) = app.post(call(&sid)).await;
        assert_eq!((code, a["status"].as_str()), (200, Some("stored")), "{a}");
        acked.push(sid);
    }

    proxy.cut();
    let mut queued = 0;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (client, url) = (app.client.clone(), app.webhook_url());
        let sid = format!("CA-during-{i}");
        tasks.push(tokio::spawn(async move {
            let r = answer(client.post(url).body(call(&sid)).send().await.unwrap()).await;
            (sid, r)
        }));
    }
    for t in tasks {
        let (sid, (code, a)) = t.await.unwrap();
        assert!(code == 200 || code == 202, "{code} {a}");
        if a["status"] == "queued" {
            queued += 1;
        }
        acked.push(sid);
    }
    assert!(queued > 0, "the outage was not noticed");
    // A redelivery of a stored event during the outage waits in the spool too.
    assert_eq!(app.post(call("CA-before-0")).await.1["status"], "queued");
    let (code, body) = readyz(&app.client, &app.address).await;
    assert_eq!(code, 503, "{body}");
    assert!(body["spool"]["events"].as_u64().unwrap() > 0, "{body}");
    // Anyone may ask /readyz: it says what is wrong, not the database's own words.
    assert!(
        ["unreachable", "no answer within 2 s"].contains(&body["database"].as_str().unwrap()),
        "{body}"
    );

    proxy.restore();
    wait_drained(&app.client, &app.address).await;
    assert_all_stored(&app.pool, &acked).await;
    assert_eq!(app.count("calls").await, 60);
    let deliveries: i64 = sqlx::query_scalar("SELECT sum(deliveries)::bigint FROM raw_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(deliveries, 61);
    // After the outage, events are written directly again.
    assert_eq!(app.post(call("CA-after")).await.1["status"], "stored");
}

/// Streams unique call events from `clients` clients to `base` until told to stop or the
/// server goes away; returns the ones that were acknowledged (2xx).
fn stream_events(
    base: String,
    prefix: &'static str,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<JoinHandle<Vec<String>>> {
    (0..clients)
        .map(|c| {
            let (base, stop) = (base.clone(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut acked = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let sid = format!("CA-{prefix}-{c}-{i}");
                    i += 1;
                    match client
                        .post(format!("{base}/webhooks/callhippo"))
                        .body(call(&sid))
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => acked.push(sid),
                        Ok(r) => panic!("unexpected answer {}", r.status()),
                        Err(_) => break, // the server is gone: nothing was acknowledged
                    }
                }
                acked
            })
        })
        .collect()
}

async fn collect(tasks: Vec<JoinHandle<Vec<String>>>) -> Vec<String> {
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked
}

#[tokio::test]
async fn sigkill_during_an_outage_loses_nothing_acknowledged() {
    let db = TestDb::new().await;
    let proxy = Proxy::start(pg_addr()).await;
    let url = via(&proxy, &db);
    let spool = std::env::temp_dir().join(format!("chi-kill-{}", db.name));
    let client = reqwest::Client::new();

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = serve_process(&url, port, &spool);
    wait_ready(&client, &base).await;

    let stop = Arc::new(AtomicBool::new(false));
    let tasks = stream_events(base.clone(), "kill", 8, stop.clone());
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.cut(); // events now go to the spool
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.0.kill().unwrap(); // SIGKILL, mid-stream
    server.0.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    let acked = collect(tasks).await;
    assert!(
        acked.len() > 20,
        "too few events to prove anything: {}",
        acked.len()
    );

    proxy.restore();
    let (_server, pool) = restart_and_drain(&client, &url, &spool, &db).await;
    assert_all_stored(&pool, &acked).await;
    pool.close().await;
    let _ = std::fs::remove_dir_all(spool);
}

#[tokio::test]
async fn sigterm_under_load_finishes_and_loses_nothing() {
    let db = TestDb::new().await;
    let spool = std::env::temp_dir().join(format!("chi-term-{}", db.name));
    let client = reqwest::Client::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = spool.with_extension("log");
    let server = serve_process_logging(&db.url, port, &spool, &log);
    wait_ready(&client, &base).await;

    let stop = Arc::new(AtomicBool::new(false));
    let tasks = stream_events(base.clone(), "term", 8, stop.clone());
    tokio::time::sleep(Duration::from_millis(700)).await;
    let status = sigterm(server).await;
    stop.store(true, Ordering::SeqCst);
    assert!(status.success(), "serve exits 0 after SIGTERM: {status:?}");
    let acked = collect(tasks).await;
    assert!(
        acked.len() > 20,
        "too few events to prove anything: {}",
        acked.len()
    );
    let pool = db.pool().await;
    assert_all_stored(&pool, &acked).await;
    pool.close().await;
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("stopped: every acknowledged event is written"),
        "{log}"
    );
    assert!(!log.contains("still in the spool"), "{log}");
    let _ = std::fs::remove_dir_all(&spool);
}

/// SIGTERM while the database is away: the event stays in the spool, and the last line says
/// so (never "every acknowledged event is written"); the next start writes it.
#[tokio::test]
async fn sigterm_with_an_event_in_the_spool_says_so() {
    let db = TestDb::new().await;
    let proxy = Proxy::start(pg_addr()).await;
    let url = via(&proxy, &db);
    let spool = std::env::temp_dir().join(format!("chi-left-{}", db.name));
    let log = spool.with_extension("log");
    let client = reqwest::Client::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = serve_process_logging(&url, port, &spool, &log);
    wait_ready(&client, &base).await;

    proxy.cut();
    let (code, answer) = send(
        client
            .post(format!("{base}/webhooks/callhippo"))
            .body(call("CA-left")),
    )
    .await;
    assert_eq!((code, answer["status"].as_str()), (202, Some("queued")));
    assert!(sigterm(server).await.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!(
            "stopped: 1 event still in the spool at {}, written when the database answers",
            spool.display()
        )),
        "{text}"
    );
    assert!(
        !text.contains("every acknowledged event is written"),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no escape codes in a log file: {text:?}"
    );

    proxy.restore();
    let (_server, pool) = restart_and_drain(&client, &url, &spool, &db).await;
    assert_all_stored(&pool, &["CA-left".to_owned()]).await;
    pool.close().await;
    let _ = std::fs::remove_dir_all(&spool);
    let _ = std::fs::remove_file(spool.with_extension("log"));
}

/// A database that turns read-only (a demoted primary, `default_transaction_read_only`) is
/// unavailable, not a reason to refuse: events are spooled, and all are written once it takes
/// writes again.
#[tokio::test]
async fn a_read_only_database_spools_events_and_loses_none() {
    let app = spawn_app().await;
    assert_eq!(app.post(call("CA-ro-before")).await.0, 200);
    let set = |on: bool| {
        format!(
            "ALTER DATABASE \"{}\" SET default_transaction_read_only = {}",
            app.db.name,
            if on { "on" } else { "off" }
        )
    };
    let admin = sqlx::PgPool::connect(&admin_url()).await.unwrap();
    sqlx::query(&set(true)).execute(&admin).await.unwrap();
    // Connections made before keep their setting: end them, as a failover does.
    let end_them = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = '{}' AND pid <> pg_backend_pid()",
        app.db.name
    );
    sqlx::query(&end_them).execute(&admin).await.unwrap();
    let mut acked = Vec::new();
    for i in 0..50 {
        let sid = format!("CA-ro-{i}");
        let (code, answer) = app.post(call(&sid)).await;
        assert!(code == 200 || code == 202, "{code} {answer}");
        acked.push(sid);
    }
    let (code, body) = readyz(&app.client, &app.address).await;
    assert!(
        body["spool"]["events"].as_u64().unwrap() > 0,
        "{code} {body}"
    );
    sqlx::query(&set(false)).execute(&admin).await.unwrap();
    sqlx::query(&end_them).execute(&admin).await.unwrap();
    wait_drained(&app.client, &app.address).await;
    let pool = app.db.pool().await;
    assert_all_stored(&pool, &acked).await;
}
