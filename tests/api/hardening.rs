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
