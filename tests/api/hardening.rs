//! Hostile clients at the socket: a refused request is answered and its connection closed
//! without reading the rest of its body (chunked or not, token or not, any path), and
//! `Expect: 100-continue` gets no `100 Continue` before the token is checked.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

const TOKEN: &str = "hardening-token-0123456789";

/// The most a refused request may make the server read.
const MAX_READ: usize = 64 << 20;

struct Probe {
    /// Body bytes the server took before it closed.
    sent: usize,
    /// Whether the server closed the connection (FIN or reset) within the time allowed.
    closed: bool,
    /// The start of the server's answer.
    answer: String,
}

/// Sends `head`, then an endless chunked body, until the server closes, at most 10 s or
/// 256 MiB.
async fn endless_body(addr: &str, head: &str) -> Probe {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = {
        let mut c = format!("{:x}\r\n", 64 << 10).into_bytes();
        c.extend(std::iter::repeat_n(b'x', 64 << 10));
        c.extend_from_slice(b"\r\n");
        c
    };
    let (mut rd, mut wr) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (answer, true),
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                Err(_) => return (answer, false),
            }
        }
    });
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(10) && sent < (256 << 20) {
        match tokio::time::timeout(Duration::from_secs(2), wr.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            Ok(Err(_)) => break, // reset or broken pipe: closed
            Err(_) => {
                if reader.is_finished() {
                    break;
                }
            }
        }
        if reader.is_finished() {
            break;
        }
    }
    drop(wr);
    let (answer, closed) = reader.await.unwrap();
    Probe {
        sent,
        closed,
        answer: String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned(),
    }
}

fn chunked_head(path: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn an_endless_body_is_answered_and_its_connection_closed_whoever_sends_it() {
    let app = spawn_app_with(|s| s.webhook_token = Some(TOKEN.into())).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let cases = [
        ("/webhooks/callhippo?token=wrong".to_owned(), "401"),
        ("/webhooks/callhippo".to_owned(), "401"),
        (format!("/webhooks/callhippo?token={TOKEN}"), "413"),
        ("/somewhere/else".to_owned(), "404"),
        ("/healthz".to_owned(), "405"),
    ];
    for (path, code) in cases {
        let probe = endless_body(&addr, &chunked_head(&path, "")).await;
        assert!(
            probe.answer.starts_with(&format!("HTTP/1.1 {code}")),
            "{path}: {}",
            probe.answer
        );
        assert!(probe.closed, "{path}: the connection stays open");
        assert!(
            probe.sent < MAX_READ,
            "{path}: {} MiB taken",
            probe.sent >> 20
        );
    }
    // Nothing of it was stored, and the server still answers.
    assert_eq!(app.count("raw_events").await, 0);
    let (code, _) = send(
        app.client
            .post(format!("{}?token={TOKEN}", app.webhook_url()))
            .body(CALL),
    )
    .await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn a_body_declared_too_large_is_refused_unread() {
    let app = spawn_app_with(|s| {
        s.webhook_token = Some(TOKEN.into());
        s.max_body_bytes = 4096;
    })
    .await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /webhooks/callhippo?token={TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
        .await
        .expect("closed at once")
        .ok();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
}

/// Sends a head with `Expect: 100-continue` and returns the first thing the server says.
async fn first_answer(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        CALL.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    if first.starts_with("HTTP/1.1 100") {
        // Invited: the body, then the answer.
        stream.write_all(CALL.as_bytes()).await.unwrap();
        let mut rest = String::new();
        tokio::time::timeout(Duration::from_secs(5), async {
            let mut buf = vec![0u8; 4096];
            while !rest.contains("\r\n\r\n{") {
                let n = stream.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                rest.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
        .await
        .ok();
        return format!("{first}{rest}");
    }
    first
}

#[tokio::test]
async fn no_100_continue_before_the_token() {
    let app = spawn_app_with(|s| s.webhook_token = Some(TOKEN.into())).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    for path in [
        "/webhooks/callhippo?token=wrong".to_owned(),
        "/webhooks/callhippo".to_owned(),
        format!("/webhooks/callhippo?token=x&token={TOKEN}"),
    ] {
        let first = first_answer(&addr, &path).await;
        assert!(first.starts_with("HTTP/1.1 401"), "{path}: {first}");
        assert!(!first.contains("100 Continue"), "{path}: {first}");
    }
    let first = first_answer(&addr, &format!("/webhooks/callhippo?token={TOKEN}")).await;
    assert!(first.starts_with("HTTP/1.1 100 Continue"), "{first}");
    assert!(
        first.contains("HTTP/1.1 200") && first.contains("stored"),
        "{first}"
    );
    assert_eq!(app.count("calls").await, 1);
}

/// A small tmpfs of its own (the tests run as root, as CI does), unmounted when dropped.
struct Mounted(std::path::PathBuf);

impl Mounted {
    fn tmpfs(options: &str) -> Mounted {
        let dir = std::env::temp_dir().join(format!("chi-mount-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(&dir)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "could not mount a tmpfs at {} (these tests need root, as CI has)",
            dir.display()
        );
        Mounted(dir)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A service whose database never answers, spooling into `spool`.
async fn spooling_app(spool: &std::path::Path) -> String {
    let url = format!("postgres://postgres@127.0.0.1:{}/nowhere", free_port());
    let mut settings = local_settings(&url, spool);
    settings.db.timeout = Duration::from_millis(300);
    start(settings).await.0
}

fn segment_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "spool"))
        })
        .count()
}

#[tokio::test]
async fn a_full_disk_makes_no_flood_of_segments_and_the_spool_recovers_when_space_returns() {
    let disk = Mounted::tmpfs("size=512k,mode=0700");
    // Most of the disk taken by something else; what is left fills after a few events.
    let filler = disk.0.join("filler");
    std::fs::write(&filler, vec![0u8; 400 << 10]).unwrap();
    let spool = disk.0.join("spool");
    let address = spooling_app(&spool).await;
    let client = reqwest::Client::new();
    let url = format!("{address}/webhooks/callhippo");
    let body = |i: usize| {
        with(CALL, "callSid", serde_json::json!(format!("CA-full-{i}"))) + &" ".repeat(2000)
    };
    let mut codes = std::collections::BTreeMap::new();
    let started = Instant::now();
    for i in 0..3_000 {
        let (code, _) = send(client.post(&url).body(body(i))).await;
        *codes.entry(code).or_insert(0) += 1;
        if started.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    assert!(codes.get(&202).copied().unwrap_or(0) > 0, "{codes:?}");
    assert!(
        codes.get(&503).copied().unwrap_or(0) > 100,
        "the disk filled: {codes:?}"
    );
    assert!(
        codes.keys().all(|c| *c == 202 || *c == 503),
        "only queued or unavailable: {codes:?}"
    );
    let segments = segment_files(&spool);
    assert!(segments <= 3, "{segments} segments after a full disk");

    // Space returns: the spool takes events again (after its pause, at most 5 s).
    std::fs::remove_file(&filler).unwrap();
    let until = Instant::now() + Duration::from_secs(15);
    let mut queued = false;
    while Instant::now() < until {
        let (code, _) = send(client.post(&url).body(body(100_000))).await;
        if code == 202 {
            queued = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(queued, "the spool takes events again once there is room");
    assert!(segment_files(&spool) <= 3);
}

#[tokio::test]
async fn a_read_only_spool_dir_is_a_setting_to_fix() {
    let disk = Mounted::tmpfs("size=64k,ro");
    let out = bin()
        .args(["serve"])
        .env("DATABASE_URL", url_for("postgres"))
        .env("LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("SPOOL_DIR", disk.0.join("spool"))
        .env_remove("WEBHOOK_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SPOOL_DIR") && err.contains("not writable"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}
