//! `loadgen probe NAME`: the hostile clients of `bench/drill`'s `probes` scenario, each
//! written on a bare TCP stream, so that what is sent (and what is not) is exactly what the
//! probe says. Each prints its figures and one `RESULT probe=NAME key=value …` line; the
//! drill compares them with their targets.
//!
//! ```text
//! endless  endless chunked bodies: bytes written before the server closed the connection
//! hold     connections each holding a nearly complete body, and meanwhile legitimate
//!          requests; the server's RSS before, at the peak and after
//! guesses  many token guesses in one request (query parameters, Authorization headers)
//! tags     a call with thousands of distinct tags, then the same call under other callSids:
//!          tag rows made and the tag id sequence before and after
//! flood    many refused requests, one connection each
//! expect   `Expect: 100-continue` with a wrong token: the first line of the answer
//! send     valid calls, one after the other (to fill the spool while the database is down)
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};

use crate::hostile::{call_new, render, with};

const WEBHOOK: &str = "/webhooks/callhippo";

/// Where to send, and the token to send (`Authorization: Bearer …`; none without it).
#[derive(Args, Clone)]
pub struct Target {
    #[arg(long)]
    pub addr: String,
    #[arg(long)]
    pub token: Option<String>,
}

#[derive(Subcommand)]
pub enum Probe {
    /// An endless chunked body: how many bytes the server takes before it closes.
    Endless {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value = WEBHOOK)]
        path: String,
        /// Bodies sent one after the other; the figures are those of the worst.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
        runs: u64,
        /// Before each body, a pause drawn between 0 and this many ms: the runs then fall at
        /// all times of a server's timers rather than in one burst.
        #[arg(long, default_value_t = 0)]
        spread_ms: u64,
        /// Give up on a body after this many seconds.
        #[arg(long, default_value_t = 10.0)]
        max_secs: f64,
        /// Give up on a body after writing this many MiB.
        #[arg(long, default_value_t = 512)]
        max_mib: u64,
    },
    /// CONNS connections, each sending a head that declares CONTENT_LENGTH bytes and then
    /// SEND of them, then waiting; meanwhile LEGIT valid calls with RIGHT_TOKEN.
    Hold {
        #[command(flatten)]
        target: Target,
        /// The token of the legitimate requests.
        #[arg(long)]
        right_token: String,
        #[arg(long, default_value_t = 3000)]
        conns: usize,
        #[arg(long, default_value_t = 262_144)]
        content_length: usize,
        #[arg(long, default_value_t = 262_000)]
        send: usize,
        #[arg(long, default_value_t = 50)]
        legit: usize,
        /// Seconds the connections stay open after the legitimate requests were answered.
        #[arg(long, default_value_t = 2.0)]
        hold_secs: f64,
        /// The server's process, whose VmRSS is sampled.
        #[arg(long)]
        pid: u32,
    },
    /// GUESSES `token` parameters in one query and HEADERS `Authorization` headers in one
    /// request, the right token (--token) among them each time.
    Guesses {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1000)]
        guesses: usize,
        #[arg(long, default_value_t = 10)]
        headers: usize,
    },
    /// A call with COUNT distinct tags, then REPEAT calls with the same body under other
    /// callSids (over 8 connections); the `tags` rows and the tag id sequence, read from the
    /// database.
    Tags {
        #[command(flatten)]
        target: Target,
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
        #[arg(long, default_value_t = 5000)]
        count: usize,
        #[arg(long, default_value_t = 100)]
        repeat: usize,
    },
    /// COUNT requests over CONNS workers, each on a connection of its own.
    Flood {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        #[arg(long, default_value_t = 8)]
        conns: usize,
    },
    /// A head with `Expect: 100-continue` and no body: the first line of the answer (with
    /// --right-token, that of the same head with the right token too).
    Expect {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        right_token: Option<String>,
    },
    /// COUNT valid calls, one after the other.
    Send {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 20)]
        count: usize,
    },
}

/// Runs one probe. An error means it could not take its measure (no `RESULT` then); a
/// missed target is for the caller to judge.
pub async fn run(probe: Probe) -> Result<()> {
    let tag = run_tag()?;
    match probe {
        Probe::Endless {
            target,
            path,
            runs,
            spread_ms,
            max_secs,
            max_mib,
        } => {
            endless(
                &target,
                &path,
                runs as usize,
                spread_ms,
                Duration::from_secs_f64(max_secs),
                max_mib << 20,
            )
            .await
        }
        Probe::Hold {
            target,
            right_token,
            conns,
            content_length,
            send,
            legit,
            hold_secs,
            pid,
        } => {
            let cfg = HoldConfig {
                conns,
                content_length,
                send: send.min(content_length),
                legit,
                hold: Duration::from_secs_f64(hold_secs),
                pid,
            };
            hold(&target, &right_token, &cfg, &tag).await
        }
        Probe::Guesses {
            target,
            guesses,
            headers,
        } => guesses_probe(&target, guesses.max(2), headers.max(2), &tag).await,
        Probe::Tags {
            target,
            database_url,
            count,
            repeat,
        } => tags(&target, &database_url, count, repeat, &tag).await,
        Probe::Flood {
            target,
            count,
            conns,
        } => flood(&target, count, conns.max(1), &tag).await,
        Probe::Expect {
            target,
            right_token,
        } => expect(&target, right_token.as_deref()).await,
        Probe::Send { target, count } => send_calls(&target, count, &tag).await,
    }
}

/// Makes this run's callSids unique.
fn run_tag() -> Result<String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    Ok(format!(
        "{:08x}",
        (now.as_micros() as u32) ^ std::process::id()
    ))
}

// ------------------------------------------------------------------ a bare HTTP/1.1 client

fn bearer(token: Option<&str>) -> String {
    token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"))
}

/// A whole POST: request line, Host, the token, `extra` header lines (each ending in CRLF),
/// a JSON body and its length.
fn post(path: &str, addr: &str, token: Option<&str>, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{}{extra}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        bearer(token),
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// A valid call (the newer payload shape) whose callSid is `sid`.
fn call_fields(sid: &str) -> crate::hostile::Fields {
    with(call_new(""), "callSid", format!("\"{sid}\""))
}

fn valid_call(sid: &str) -> Vec<u8> {
    render(&call_fields(sid)).into_bytes()
}

struct Reply {
    code: u16,
    /// The status line, without its CRLF.
    line: String,
    body: String,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads one answer: its head, then `Content-Length` bytes of body (or up to the end of the
/// stream without one). At most 1 MiB.
async fn read_reply<R: AsyncRead + Unpin>(rd: &mut R) -> Result<Reply> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16 << 10];
    let head_end = loop {
        if let Some(p) = find(&buf, b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > 1 << 20 {
            bail!("an answer's head over 1 MiB");
        }
        let n = rd.read(&mut chunk).await?;
        if n == 0 {
            bail!(
                "connection closed after {} bytes of answer{}",
                buf.len(),
                if buf.is_empty() {
                    ""
                } else {
                    " (no whole head)"
                }
            );
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let line = head.lines().next().unwrap_or("").to_string();
    let code = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP status line: {line:?}"))?;
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    let mut body = buf[head_end..].to_vec();
    loop {
        if length.is_some_and(|n| body.len() >= n) || body.len() > 1 << 20 {
            break;
        }
        let n = rd.read(&mut chunk).await?;
        if n == 0 {
            if length.is_some() {
                bail!("connection closed in the answer's body");
            }
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    if let Some(n) = length {
        body.truncate(n);
    }
    Ok(Reply {
        code,
        line,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// One request on a connection of its own, and its answer, within `timeout`.
async fn exchange(addr: &str, request: &[u8], timeout: Duration) -> Result<Reply> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.write_all(request).await?;
        read_reply(&mut stream).await
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => bail!("no answer within {timeout:?}"),
    }
}

fn codes_list(codes: &BTreeMap<String, u64>) -> String {
    if codes.is_empty() {
        return "none".into();
    }
    let list: Vec<String> = codes.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    list.join(",")
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1048576.0)
}

/// For a `key=value` field: no spaces.
fn word(s: &str) -> String {
    let w: String = s
        .chars()
        .take(80)
        .map(|c| {
            if c.is_whitespace() || c == '=' {
                '_'
            } else {
                c
            }
        })
        .collect();
    if w.is_empty() {
        "-".into()
    } else {
        w
    }
}

// ------------------------------------------------------------------ endless

/// What the reading side of a connection saw.
#[derive(Default)]
struct Seen {
    /// The first line of the answer, if one came.
    first_line: Option<String>,
    /// `eof` (the server closed), `reset` (…with a reset), or the reading error.
    end: Option<String>,
    answer_bytes: usize,
    /// When the answer's first bytes came, and what `written` said then.
    answered: Option<(Instant, u64)>,
    /// When the server closed, and what `written` said then.
    ended: Option<(Instant, u64)>,
}

/// Reads until the server closes (or `stop` turns true); keeps the answer's first line, and
/// notes the bytes `written` so far when the answer comes and when the server closes.
async fn watch_reads<R: AsyncRead + Unpin>(
    mut rd: R,
    mut stop: watch::Receiver<bool>,
    written: Arc<AtomicU64>,
) -> Seen {
    let mut seen = Seen::default();
    let now = || (Instant::now(), written.load(Ordering::Relaxed));
    let mut head = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) => {
                    seen.end = Some("eof".into());
                    seen.ended = Some(now());
                    break;
                }
                Ok(n) => {
                    seen.answered.get_or_insert_with(now);
                    seen.answer_bytes += n;
                    if seen.first_line.is_none() && head.len() < 4096 {
                        head.extend_from_slice(&buf[..n]);
                        if let Some(p) = find(&head, b"\r\n") {
                            seen.first_line = Some(String::from_utf8_lossy(&head[..p]).into_owned());
                        }
                    }
                }
                Err(e) => {
                    seen.ended = Some(now());
                    seen.end = Some(if e.kind() == std::io::ErrorKind::ConnectionReset {
                        "reset".into()
                    } else {
                        format!("read error: {e}")
                    });
                    break;
                }
            },
            _ = stop.changed() => break,
        }
    }
    if seen.first_line.is_none() && !head.is_empty() {
        seen.first_line = Some(String::from_utf8_lossy(&head).into_owned());
    }
    seen
}

/// One endless body, on a connection of its own.
struct Endless {
    /// Bytes of body the socket took (an upper bound of what the server read: it includes
    /// what sat in the two sockets' buffers when it closed).
    body_bytes: u64,
    closed: bool,
    first_line: String,
    end: String,
    stopped: String,
    secs: f64,
    /// Since the first byte was written: when the answer came and when the server closed
    /// (-1: never), and the body bytes written at each.
    answer_ms: f64,
    at_answer: u64,
    close_ms: f64,
    at_close: u64,
}

impl Endless {
    /// The server went on reading after its answer, rather than closing at once.
    fn lingered(&self) -> bool {
        self.answer_ms >= 0.0 && self.close_ms - self.answer_ms > 5.0
    }
}

async fn endless_once(
    target: &Target,
    path: &str,
    max_time: Duration,
    max_bytes: u64,
) -> Result<Endless> {
    let addr = &target.addr;
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (rd, mut wr) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{}Content-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        bearer(target.token.as_deref())
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let progress = Arc::new(AtomicU64::new(0));
    let reader = tokio::spawn(watch_reads(rd, stop_rx, progress.clone()));
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + max_time;
    // One 64 KiB chunk, sent again and again: never a last (zero) chunk.
    let mut frame = format!("{:x}\r\n", 64 << 10).into_bytes();
    frame.extend(std::iter::repeat_n(b' ', 64 << 10));
    frame.extend_from_slice(b"\r\n");
    let mut body = head.into_bytes();
    let head_len = body.len() as u64;
    let (mut written, mut offset) = (0u64, 0usize);
    let stopped = loop {
        if reader.is_finished() {
            break "the server closed the connection".to_string();
        }
        if written >= max_bytes + head_len {
            break format!("{} MiB written", max_bytes >> 20);
        }
        let piece = if body.is_empty() {
            &frame[offset..]
        } else {
            &body[..]
        };
        match tokio::time::timeout_at(deadline, wr.write(piece)).await {
            Err(_) => break format!("{max_time:?} elapsed"),
            Ok(Err(e)) => break format!("a write failed: {e}"),
            Ok(Ok(0)) => break "a write took nothing".to_string(),
            Ok(Ok(n)) => {
                written += n as u64;
                progress.store(written.saturating_sub(head_len), Ordering::Relaxed);
                if body.is_empty() {
                    offset = (offset + n) % frame.len();
                } else {
                    body.drain(..n);
                }
            }
        }
    };
    let secs = started.elapsed().as_secs_f64();
    let write_failed = stopped.starts_with("a write failed");
    // The server may close a moment after the last write: wait for it 2 s at most.
    let mut reader = reader;
    let seen = match tokio::time::timeout(Duration::from_secs(2), &mut reader).await {
        Ok(seen) => seen?,
        Err(_) => {
            let _ = stop_tx.send(true);
            reader.await?
        }
    };
    let ms = |t: Instant| t.duration_since(started).as_secs_f64() * 1000.0;
    let (answer_ms, at_answer) = seen.answered.map_or((-1.0, 0), |(t, w)| (ms(t), w));
    let (close_ms, at_close) = seen.ended.map_or((-1.0, 0), |(t, w)| (ms(t), w));
    Ok(Endless {
        body_bytes: written.saturating_sub(head_len),
        closed: seen.end.is_some() || write_failed,
        first_line: seen.first_line.unwrap_or_else(|| "none".into()),
        end: match (seen.end, write_failed) {
            (Some(end), _) => end,
            (None, true) => "writes failed".into(),
            (None, false) => "open".into(),
        },
        stopped,
        secs,
        answer_ms,
        at_answer,
        close_ms,
        at_close,
    })
}

/// The most a TCP socket's buffer may hold here (the third field of a `tcp_rmem` or
/// `tcp_wmem` sysctl), 0 when unknown.
fn socket_buffer_max(sysctl: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/{sysctl}"))
        .ok()
        .and_then(|v| v.split_whitespace().nth(2).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// `runs` endless bodies one after the other; the figures of the one the server took most of.
async fn endless(
    target: &Target,
    path: &str,
    runs: usize,
    spread_ms: u64,
    max_time: Duration,
    max_bytes: u64,
) -> Result<()> {
    let mut rng = crate::gen::Rng::new(std::process::id() as u64 ^ 0xE4D1E55);
    let mut all = Vec::with_capacity(runs);
    for _ in 0..runs {
        if spread_ms > 0 {
            tokio::time::sleep(Duration::from_millis(rng.below(spread_ms + 1))).await;
        }
        all.push(endless_once(target, path, max_time, max_bytes).await?);
    }
    let mut sizes: Vec<u64> = all.iter().map(|e| e.body_bytes).collect();
    sizes.sort_unstable();
    let median = sizes[sizes.len() / 2];
    let lingered = all.iter().filter(|e| e.lingered()).count();
    let open = all.iter().filter(|e| !e.closed).count();
    let answers: BTreeMap<String, u64> = all.iter().fold(BTreeMap::new(), |mut m, e| {
        *m.entry(word(&e.first_line)).or_default() += 1;
        m
    });
    // The worst: one left open, else the most bytes taken.
    let worst = all
        .iter()
        .max_by_key(|e| (!e.closed, e.body_bytes))
        .expect("at least one run");
    // What the server surely read: the rest may have sat in the sender's and the receiver's
    // socket buffers when it closed.
    let buffers = socket_buffer_max("tcp_wmem") + socket_buffer_max("tcp_rmem");
    let read_at_least = worst.body_bytes.saturating_sub(buffers);
    println!(
        "probe endless {path} ({}), {runs} runs: body bytes written before the close: median {} \
         MiB, most {} MiB; {lingered} runs closed over 5 ms after the answer, {open} left open; \
         answers {}",
        if target.token.is_some() {
            "a token"
        } else {
            "no token"
        },
        mib(median),
        mib(worst.body_bytes),
        codes_list(&answers),
    );
    println!(
        "probe endless: the worst run: the answer came {:.1} ms after the first byte, with {} \
         MiB written; the close {:.1} ms after it, with {} MiB written ({}); the writing \
         stopped after {:.2}s: {}; the server read at least {} MiB of it (the socket buffers \
         may hold {} MiB)",
        worst.answer_ms,
        mib(worst.at_answer),
        worst.close_ms,
        mib(worst.at_close),
        worst.end,
        worst.secs,
        worst.stopped,
        mib(read_at_least),
        mib(buffers)
    );
    println!(
        "RESULT probe=endless path={path} runs={runs} body_bytes={} mib={} read_at_least_mib={} \
         median_mib={} closed={} open_runs={open} lingered={lingered} answer={} end={} \
         answer_ms={:.1} close_ms={:.1} stopped={}",
        worst.body_bytes,
        mib(worst.body_bytes),
        mib(read_at_least),
        mib(median),
        if open == 0 { "yes" } else { "no" },
        word(&worst.first_line),
        word(&worst.end),
        worst.answer_ms,
        worst.close_ms,
        word(&worst.stopped),
    );
    Ok(())
}

// ------------------------------------------------------------------ hold

struct HoldConfig {
    conns: usize,
    content_length: usize,
    send: usize,
    legit: usize,
    hold: Duration,
    pid: u32,
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Samples VmRSS every 10 ms on a thread of its own (the runtime is busy) until `stop`,
/// 10 minutes at most; keeps the largest.
fn sample_rss(
    pid: u32,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(600);
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            if let Some(kib) = vm_rss_kib(pid) {
                peak.fetch_max(kib, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

/// What became of one held connection.
#[derive(Default)]
struct Held {
    connected: bool,
    connect_error: Option<String>,
    /// The head and the SEND bytes were all taken by the socket.
    wrote_all: bool,
    write_error: Option<String>,
    seen: Seen,
    /// The server closed it before the probe let go.
    closed_by_server: bool,
}

#[derive(Default)]
struct HoldCounts {
    /// Connections whose writing is over (done, failed, or never connected).
    settled: AtomicUsize,
    /// Connected and not yet closed by the server.
    open: AtomicUsize,
}

async fn hold_one(
    addr: String,
    request: Arc<Vec<u8>>,
    connects: Arc<Semaphore>,
    counts: Arc<HoldCounts>,
    release: watch::Receiver<bool>,
) -> Held {
    let mut held = Held::default();
    let permit = connects.acquire_owned().await;
    let stream =
        match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                held.connect_error = Some(e.to_string());
                counts.settled.fetch_add(1, Ordering::SeqCst);
                return held;
            }
            Err(_) => {
                held.connect_error = Some("connect timed out".into());
                counts.settled.fetch_add(1, Ordering::SeqCst);
                return held;
            }
        };
    held.connected = true;
    counts.open.fetch_add(1, Ordering::SeqCst);
    let (rd, mut wr) = stream.into_split();
    let reads = tokio::spawn(watch_reads(
        rd,
        release.clone(),
        Arc::new(AtomicU64::new(0)),
    ));
    let mut release_w = release.clone();
    let write = async {
        tokio::select! {
            r = wr.write_all(&request) => r.map_err(|e| e.to_string()),
            _ = release_w.changed() => Err("let go while writing".into()),
        }
    };
    // A write the server never takes is bounded: the socket buffers hold 262,000 bytes.
    match tokio::time::timeout(Duration::from_secs(20), write).await {
        Ok(Ok(())) => held.wrote_all = true,
        Ok(Err(e)) => held.write_error = Some(e),
        Err(_) => held.write_error = Some("write blocked for 20 s".into()),
    }
    counts.settled.fetch_add(1, Ordering::SeqCst);
    drop(permit);
    held.seen = reads.await.unwrap_or_default();
    held.closed_by_server = held.seen.end.is_some();
    if held.closed_by_server {
        counts.open.fetch_sub(1, Ordering::SeqCst);
    }
    // The write half is dropped here, after the release or the server's close.
    drop(wr);
    held
}

async fn hold(target: &Target, right: &str, cfg: &HoldConfig, tag: &str) -> Result<()> {
    let addr = target.addr.clone();
    let rss_before =
        vm_rss_kib(cfg.pid).with_context(|| format!("no VmRSS for pid {}", cfg.pid))?;
    let peak = Arc::new(AtomicU64::new(rss_before));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(cfg.pid, peak.clone(), stop.clone());

    let mut request = format!(
        "POST {WEBHOOK} HTTP/1.1\r\nHost: {addr}\r\n{}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        bearer(target.token.as_deref()),
        cfg.content_length
    )
    .into_bytes();
    // The start of a JSON object, then spaces: never complete, never valid.
    request.push(b'{');
    request.extend(std::iter::repeat_n(b' ', cfg.send.saturating_sub(1)));
    let request = Arc::new(request);

    let started = Instant::now();
    let connects = Arc::new(Semaphore::new(256));
    let counts = Arc::new(HoldCounts::default());
    let (release_tx, release_rx) = watch::channel(false);
    let tasks: Vec<_> = (0..cfg.conns)
        .map(|_| {
            tokio::spawn(hold_one(
                addr.clone(),
                request.clone(),
                connects.clone(),
                counts.clone(),
                release_rx.clone(),
            ))
        })
        .collect();
    // Every connection has sent what it will send (60 s at most).
    let until = Instant::now() + Duration::from_secs(60);
    while counts.settled.load(Ordering::SeqCst) < cfg.conns && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settled_secs = started.elapsed().as_secs_f64();
    let open_at_legit = counts.open.load(Ordering::SeqCst);

    // The legitimate requests, all at once, each on its own connection.
    let legit_started = Instant::now();
    let legit: Vec<_> = (0..cfg.legit)
        .map(|i| {
            let req = post(
                WEBHOOK,
                &addr,
                Some(right),
                "",
                &valid_call(&format!("CAPROBEHOLD{tag}N{i}")),
            );
            let addr = addr.clone();
            tokio::spawn(async move {
                let t0 = Instant::now();
                let r = exchange(&addr, &req, Duration::from_secs(20)).await;
                (r, t0.elapsed())
            })
        })
        .collect();
    let mut legit_codes: BTreeMap<String, u64> = BTreeMap::new();
    let (mut legit_200, mut legit_max) = (0usize, Duration::ZERO);
    for t in legit {
        let (r, took) = t.await?;
        legit_max = legit_max.max(took);
        let key = match r {
            Ok(reply) => {
                if reply.code == 200 {
                    legit_200 += 1;
                }
                reply.code.to_string()
            }
            Err(e) => {
                println!("probe hold: a legitimate request failed: {e:#}");
                "error".into()
            }
        };
        *legit_codes.entry(key).or_default() += 1;
    }
    let legit_secs = legit_started.elapsed().as_secs_f64();
    tokio::time::sleep(cfg.hold).await;
    let open_at_release = counts.open.load(Ordering::SeqCst);
    let rss_held = vm_rss_kib(cfg.pid).unwrap_or(0);
    let _ = release_tx.send(true);
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(t.await?);
    }
    // After they close: 2 s for the server to let go of them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = vm_rss_kib(cfg.pid).unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let rss_peak = peak.load(Ordering::Relaxed).max(rss_after);

    let connected = results.iter().filter(|h| h.connected).count();
    let wrote_all = results.iter().filter(|h| h.wrote_all).count();
    let closed = results.iter().filter(|h| h.closed_by_server).count();
    let mut answers: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for h in &results {
        let a = h
            .seen
            .first_line
            .as_deref()
            .map_or("none".to_string(), |l| {
                l.split(' ').nth(1).unwrap_or("?").to_string()
            });
        *answers.entry(a).or_default() += 1;
        if let Some(e) = h.connect_error.as_ref().or(h.write_error.as_ref()) {
            *errors.entry(word(e)).or_default() += 1;
        }
    }
    let a401 = answers.get("401").copied().unwrap_or(0);
    let growth = rss_peak.saturating_sub(rss_before);
    println!(
        "probe hold: {} connections ({connected} connected), each Content-Length {} with {} \
         bytes sent: all sent after {settled_secs:.1}s, {wrote_all} wrote everything; {a401} \
         answered 401, {closed} closed by the server before the probe let go (open: \
         {open_at_legit} at the legitimate requests, {open_at_release} at the release); \
         answers {}; write or connect errors {}",
        cfg.conns,
        cfg.content_length,
        cfg.send,
        codes_list(&answers),
        codes_list(&errors)
    );
    println!(
        "probe hold: {} legitimate calls meanwhile: {} in {legit_secs:.2}s (slowest {:.0} ms)",
        cfg.legit,
        codes_list(&legit_codes),
        legit_max.as_secs_f64() * 1000.0
    );
    println!(
        "probe hold: serve VmRSS before {} MiB, peak {} MiB (+{} MiB), while held {} MiB, \
         2 s after they closed {} MiB",
        mib(rss_before << 10),
        mib(rss_peak << 10),
        mib(growth << 10),
        mib(rss_held << 10),
        mib(rss_after << 10)
    );
    println!(
        "RESULT probe=hold conns={} connected={connected} wrote_all={wrote_all} answered_401={a401} \
         closed_by_server={closed} open_at_legit={open_at_legit} open_at_release={open_at_release} \
         answers={} legit={} legit_200={legit_200} legit_max_ms={:.0} rss_before_kib={rss_before} \
         rss_peak_kib={rss_peak} rss_after_kib={rss_after} rss_growth_kib={growth}",
        cfg.conns,
        codes_list(&answers),
        cfg.legit,
        legit_max.as_secs_f64() * 1000.0,
    );
    Ok(())
}

// ------------------------------------------------------------------ guesses

async fn guesses_probe(target: &Target, guesses: usize, headers: usize, tag: &str) -> Result<()> {
    let right = target
        .token
        .as_deref()
        .context("guesses needs --token (the right one)")?;
    let addr = &target.addr;
    let timeout = Duration::from_secs(10);
    let call = |n: &str| valid_call(&format!("CAPROBEGUESS{tag}{n}"));
    let one = |label: &str, r: Result<Reply>| -> (u16, String) {
        match r {
            Ok(reply) => {
                println!(
                    "probe guesses: {label} -> {} {}",
                    reply.line,
                    &reply.body[..reply.body.len().min(160)]
                );
                (reply.code, reply.line)
            }
            Err(e) => {
                println!("probe guesses: {label} -> {e:#}");
                (0, "error".into())
            }
        }
    };

    // ?token=g0&token=g1…, the right one in the middle.
    let params: Vec<String> = (0..guesses)
        .map(|i| {
            if i == guesses / 2 {
                format!("token={right}")
            } else {
                format!("token=g{i}")
            }
        })
        .collect();
    let path = format!("{WEBHOOK}?{}", params.join("&"));
    let (query, _) = one(
        &format!("{guesses} token parameters ({} bytes of URL)", path.len()),
        exchange(addr, &post(&path, addr, None, "", &call("Q")), timeout).await,
    );

    let lines: String = (0..headers)
        .map(|i| {
            let t = if i == headers / 2 {
                right.to_string()
            } else {
                format!("g{i}")
            };
            format!("Authorization: Bearer {t}\r\n")
        })
        .collect();
    let (many_headers, _) = one(
        &format!("{headers} Authorization headers"),
        exchange(
            addr,
            &post(WEBHOOK, addr, None, &lines, &call("H")),
            timeout,
        )
        .await,
    );

    // A wrong token in the query and the right one in the header: two guesses in one request.
    let (query_and_header, _) = one(
        "a wrong ?token= and the right Authorization header",
        exchange(
            addr,
            &post(
                &format!("{WEBHOOK}?token=wrong"),
                addr,
                Some(right),
                "",
                &call("M"),
            ),
            timeout,
        )
        .await,
    );
    // Controls: the right token alone, in each place.
    let (control_header, _) = one(
        "control: the right token, once, as a header",
        exchange(
            addr,
            &post(WEBHOOK, addr, Some(right), "", &call("C1")),
            timeout,
        )
        .await,
    );
    let (control_query, _) = one(
        "control: the right token, once, in the query",
        exchange(
            addr,
            &post(
                &format!("{WEBHOOK}?token={right}"),
                addr,
                None,
                "",
                &call("C2"),
            ),
            timeout,
        )
        .await,
    );
    println!(
        "RESULT probe=guesses guesses={guesses} query={query} headers={headers} \
         many_headers={many_headers} query_and_header={query_and_header} \
         control_header={control_header} control_query={control_query}"
    );
    Ok(())
}

// ------------------------------------------------------------------ tags

async fn tags(
    target: &Target,
    database_url: &str,
    count: usize,
    repeat: usize,
    tag: &str,
) -> Result<()> {
    let addr = &target.addr;
    let token = target.token.as_deref();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await
        .context("connecting to the database")?;
    // The sequence behind tags.id: its last value (0 before its first use).
    let last_value = || async {
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT s.last_value FROM pg_sequences s
              WHERE format('%I.%I', s.schemaname, s.sequencename)::regclass
                    = pg_get_serial_sequence('tags', 'id')::regclass",
        )
        .fetch_one(&pool)
        .await?;
        anyhow::Ok(v.unwrap_or(0))
    };
    let rows = || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tags")
            .fetch_one(&pool)
            .await?;
        anyhow::Ok(n)
    };
    let names: Vec<String> = (0..count).map(|i| format!("\"p{tag}-{i:05}\"")).collect();
    let tags_json = format!("[{}]", names.join(","));
    let body = |sid: &str| render(&with(call_fields(sid), "tags", tags_json.clone())).into_bytes();
    let timeout = Duration::from_secs(30);

    let (rows0, seq0) = (rows().await?, last_value().await?);
    let first_sid = format!("CAPROBETAGS{tag}");
    let first_body = body(&first_sid);
    let reply = exchange(addr, &post(WEBHOOK, addr, token, "", &first_body), timeout)
        .await
        .context("the call with many tags")?;
    println!(
        "probe tags: a call with {count} distinct tags ({} bytes) -> {} {}",
        first_body.len(),
        reply.line,
        &reply.body[..reply.body.len().min(300)]
    );
    let (rows1, seq1) = (rows().await?, last_value().await?);
    let linked: i64 = sqlx::query_scalar("SELECT count(*) FROM call_tags WHERE call_sid = $1")
        .bind(&first_sid)
        .fetch_one(&pool)
        .await?;

    // The same body under other callSids, over 8 connections at once.
    let next = Arc::new(AtomicUsize::new(0));
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..repeat)
            .map(|i| {
                let b = body(&format!("CAPROBETAGS{tag}R{i}"));
                post(WEBHOOK, addr, token, "", &b)
            })
            .collect(),
    );
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (next, requests, addr) = (next.clone(), requests.clone(), addr.clone());
        workers.push(tokio::spawn(async move {
            let mut codes: BTreeMap<String, u64> = BTreeMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(req) = requests.get(i) else { break };
                let key = match exchange(&addr, req, timeout).await {
                    Ok(r) => r.code.to_string(),
                    Err(_) => "error".into(),
                };
                *codes.entry(key).or_default() += 1;
            }
            codes
        }));
    }
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    for w in workers {
        for (k, v) in w.await? {
            *codes.entry(k).or_default() += v;
        }
    }
    let (rows2, seq2) = (rows().await?, last_value().await?);
    println!(
        "probe tags: tags rows {rows0} -> {rows1} after it ({} made; the call has {linked} \
         tags); the tag id sequence's last value {seq0} -> {seq1}",
        rows1 - rows0
    );
    println!(
        "probe tags: the same body {repeat} times under other callSids -> {}; tags rows \
         {rows1} -> {rows2}, the sequence's last value {seq1} -> {seq2} ({} values used)",
        codes_list(&codes),
        seq2 - seq1
    );
    println!(
        "RESULT probe=tags count={count} answer={} status={} rows_made={} linked={linked} \
         seq_before={seq1} seq_after={seq2} seq_first_used={} repeat={repeat} repeat_codes={} \
         repeat_rows_made={}",
        reply.code,
        word(&status_word(&reply.body)),
        rows1 - rows0,
        seq1 - seq0,
        codes_list(&codes),
        rows2 - rows1
    );
    pool.close().await;
    Ok(())
}

/// The `status` word of an answer's JSON body.
fn status_word(body: &str) -> String {
    let Some(p) = body.find("\"status\":\"") else {
        return "-".into();
    };
    let rest = &body[p + 10..];
    rest[..rest.find('"').unwrap_or(rest.len())].to_string()
}

// ------------------------------------------------------------------ flood

async fn flood(target: &Target, count: usize, conns: usize, tag: &str) -> Result<()> {
    let addr = target.addr.clone();
    let req = Arc::new(post(
        WEBHOOK,
        &addr,
        target.token.as_deref(),
        "",
        &valid_call(&format!("CAPROBEFLOOD{tag}")),
    ));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..conns {
        let (next, req, addr) = (next.clone(), req.clone(), addr.clone());
        workers.push(tokio::spawn(async move {
            let mut codes: BTreeMap<String, u64> = BTreeMap::new();
            let mut first_error = None;
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let key = match exchange(&addr, &req, Duration::from_secs(10)).await {
                    Ok(r) => r.code.to_string(),
                    Err(e) => {
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                        "error".into()
                    }
                };
                *codes.entry(key).or_default() += 1;
            }
            (codes, first_error)
        }));
    }
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    for w in workers {
        let (c, e) = w.await?;
        if let Some(e) = e {
            println!("probe flood: a request failed: {e}");
        }
        for (k, v) in c {
            *codes.entry(k).or_default() += v;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "probe flood: {count} requests over {conns} workers, a connection each, in {secs:.1}s \
         ({:.0}/s): {}",
        count as f64 / secs,
        codes_list(&codes)
    );
    println!(
        "RESULT probe=flood count={count} secs={secs:.2} codes={} c401={}",
        codes_list(&codes),
        codes.get("401").copied().unwrap_or(0)
    );
    Ok(())
}

// ------------------------------------------------------------------ expect

/// The first line of the answer to a head with `Expect: 100-continue`, and whether any line
/// of what came within a second says `100 Continue`.
async fn first_line_after_expect(addr: &str, token: Option<&str>) -> Result<(String, bool)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let head = format!(
        "POST {WEBHOOK} HTTP/1.1\r\nHost: {addr}\r\n{}Content-Type: application/json\r\n\
         Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n",
        bearer(token)
    );
    stream.write_all(head.as_bytes()).await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    // Until the first line is in, then a second more for whatever follows it.
    let mut after_line: Option<tokio::time::Instant> = None;
    loop {
        let until = after_line.unwrap_or(deadline).min(deadline);
        match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
        if after_line.is_none() && find(&got, b"\r\n").is_some() {
            after_line = Some(tokio::time::Instant::now() + Duration::from_secs(1));
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let first = text.lines().next().unwrap_or("").to_string();
    let continued = text.contains("100 Continue");
    Ok((first, continued))
}

async fn expect(target: &Target, right: Option<&str>) -> Result<()> {
    let addr = &target.addr;
    let (first, continued) = first_line_after_expect(addr, target.token.as_deref()).await?;
    println!(
        "probe expect: Expect: 100-continue, {} -> first line {first:?}{}",
        if target.token.is_some() {
            "a token"
        } else {
            "no token"
        },
        if continued {
            ", and a 100 Continue"
        } else {
            ", no 100 Continue"
        }
    );
    let mut control = String::new();
    if let Some(right) = right {
        let (line, _) = first_line_after_expect(addr, Some(right)).await?;
        println!("probe expect: control, the right token -> first line {line:?}");
        control = format!(" control={}", word(&line));
    }
    println!(
        "RESULT probe=expect first_line={} continue={}{control}",
        word(&first),
        if continued { "yes" } else { "no" }
    );
    Ok(())
}

// ------------------------------------------------------------------ send

async fn send_calls(target: &Target, count: usize, tag: &str) -> Result<()> {
    let addr = &target.addr;
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..count {
        let req = post(
            WEBHOOK,
            addr,
            target.token.as_deref(),
            "",
            &valid_call(&format!("CAPROBESEND{tag}N{i}")),
        );
        let key = match exchange(addr, &req, Duration::from_secs(20)).await {
            Ok(r) => format!("{}_{}", r.code, status_word(&r.body)),
            Err(e) => {
                println!("probe send: call {i}: {e:#}");
                "error".into()
            }
        };
        *codes.entry(key).or_default() += 1;
    }
    println!("probe send: {count} valid calls: {}", codes_list(&codes));
    println!(
        "RESULT probe=send count={count} answers={}",
        codes_list(&codes)
    );
    Ok(())
}
