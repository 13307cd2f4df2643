//! The timed run: N keep-alive HTTP/1.1 connections, each sending one request after the other.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::gen::{Event, Gen, Key, Rng};

pub struct Config {
    pub addr: String,
    pub conns: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub dup: bool,
    /// Events built before the run, over all connections; 0: enough for ~15,000 events/s.
    pub prebuild: usize,
    pub keys: Option<String>,
    pub run_id: u32,
    /// The run ends as soon as this file exists (checked every 50 ms), or at the deadline.
    pub stop_file: Option<String>,
    /// A connection that cannot connect at the start keeps trying (the server may be down or
    /// restarting) instead of failing the run.
    pub keep_going: bool,
    /// A request without an answer after this long counts as a transport error (`timeouts`).
    pub request_timeout: Option<Duration>,
    /// At most this many requests a second over all connections (a steady stream rather than
    /// as fast as the server answers); 0: no limit.
    pub rate: f64,
}

const PATH: &str = "/webhooks/callhippo";

/// The `status` words of docs/reference.md §2, in the order they are printed.
const WORDS: [&str; 8] = [
    "stored",
    "duplicate",
    "updated",
    "test",
    "archived",
    "queued",
    "rejected",
    "unavailable",
];

struct ConnStats {
    hist: Histogram<u64>,
    /// Answers within the measured window.
    ok: u64,
    non2xx: u64,
    errors: u64,
    dup_sent: u64,
    late_built: u64,
    /// Requests of the whole run, warm-up and tail included.
    total_requests: u64,
    codes: BTreeMap<u16, u64>,
    words: [u64; WORDS.len() + 1],
    /// Answers of the whole run, warm-up and tail included.
    codes_all: BTreeMap<u16, u64>,
    words_all: [u64; WORDS.len() + 1],
    timeouts: u64,
    events: Vec<Event>,
    acked: Vec<bool>,
    sent_unique: usize,
    first_error: Option<String>,
}

async fn connect(addr: &str) -> Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// `GET path` until it answers 200 (and, with `drained`, until the body says the spool holds
/// no event: `"spool":{"events":0,…}`); gives up early when process `pid` has exited.
pub async fn wait_until(
    addr: &str,
    path: &str,
    drained: bool,
    timeout: Duration,
    pid: Option<u32>,
) -> Result<()> {
    let started = Instant::now();
    let until = started + timeout;
    let mut last;
    loop {
        let attempt = async {
            let stream = TcpStream::connect(addr).await?;
            let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let req = Request::get(path)
                .header(HOST, addr)
                .body(Empty::<Bytes>::new())?;
            let resp = sender.send_request(req).await?;
            let code = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((code, String::from_utf8_lossy(&body).into_owned()))
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok((200, _))) if !drained => return Ok(()),
            Ok(Ok((200, body))) if spool_events(&body) == Some(0) => {
                println!(
                    "loadgen: {addr}{path} 200 with an empty spool after {:.1}s: {body}",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            Ok(Ok((code, body))) => last = format!("{code} {body}"),
            Ok(Err(e)) => last = format!("{e:#}"),
            Err(_) => last = "timed out".into(),
        }
        if Instant::now() >= until {
            bail!(
                "{addr}{path} not 200{} after {timeout:?}: {last}",
                if drained { " with an empty spool" } else { "" }
            );
        }
        if let Some(pid) = pid {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
            if matches!(state, None | Some('Z') | Some('X')) {
                bail!("process {pid} exited before {addr}{path} answered 200 ({last})");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The spool's depth in events from a `/readyz` body (`"spool":{"events":N,…}`).
fn spool_events(body: &str) -> Option<u64> {
    let spool = &body[body.find("\"spool\"")?..];
    let rest = &spool[spool.find("\"events\":")? + "\"events\":".len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// The answer's `status` word, read without a JSON parser.
fn word_index(body: &[u8]) -> usize {
    const NEEDLE: &[u8] = b"\"status\":\"";
    if let Some(p) = body.windows(NEEDLE.len()).position(|w| w == NEEDLE) {
        let rest = &body[p + NEEDLE.len()..];
        if let Some(end) = rest.iter().position(|&b| b == b'"') {
            let w = &rest[..end];
            if let Some(i) = WORDS.iter().position(|x| x.as_bytes() == w) {
                return i;
            }
        }
    }
    WORDS.len()
}

/// What every connection of a run shares.
struct Shared {
    addr: Arc<str>,
    dup: bool,
    warmup: Duration,
    duration: Duration,
    keep_going: bool,
    request_timeout: Option<Duration>,
    /// Time between two requests of one connection, with `--rate`.
    interval: Option<Duration>,
    conns: usize,
    stop: Arc<AtomicBool>,
}

async fn connection(
    conn_id: usize,
    sh: Arc<Shared>,
    events: Vec<Event>,
    mut gen: Gen,
    ready: mpsc::Sender<Result<()>>,
    mut start: watch::Receiver<Option<Instant>>,
) -> ConnStats {
    let (addr, dup, warmup, duration) = (sh.addr.clone(), sh.dup, sh.warmup, sh.duration);
    let mut st = ConnStats {
        hist: Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds"),
        ok: 0,
        non2xx: 0,
        errors: 0,
        dup_sent: 0,
        late_built: 0,
        total_requests: 0,
        codes: BTreeMap::new(),
        words: [0; WORDS.len() + 1],
        codes_all: BTreeMap::new(),
        words_all: [0; WORDS.len() + 1],
        timeouts: 0,
        acked: vec![false; events.len()],
        events,
        sent_unique: 0,
        first_error: None,
    };
    let mut sender = match connect(&addr).await {
        Ok(s) => {
            let _ = ready.send(Ok(())).await;
            Some(s)
        }
        Err(e) if sh.keep_going => {
            st.errors += 1;
            st.first_error = Some(format!("{e:#}"));
            let _ = ready.send(Ok(())).await;
            None
        }
        Err(e) => {
            let _ = ready.send(Err(e)).await;
            return st;
        }
    };
    drop(ready);
    let t0 = match start.wait_for(|v| v.is_some()).await {
        Ok(v) => v.expect("start time"),
        Err(_) => return st,
    };
    let from = t0 + warmup;
    let deadline = from + duration;
    let mut rng = Rng::new(0xD00D ^ conn_id as u64);
    let host = addr.to_string();
    // With --rate: connections take turns, spread over one interval.
    let mut next_at = sh
        .interval
        .map(|iv| t0 + iv.mul_f64(conn_id as f64 / sh.conns as f64));
    loop {
        if let (Some(at), Some(iv)) = (next_at.as_mut(), sh.interval) {
            let now = Instant::now();
            if *at > now {
                tokio::time::sleep_until((*at).into()).await;
            } else if now - *at > Duration::from_secs(1) {
                // Far behind (the server was away): no burst to catch up.
                *at = now;
            }
            *at += iv;
        }
        let now = Instant::now();
        if now >= deadline || sh.stop.load(Ordering::Relaxed) {
            break;
        }
        let tx = match sender.as_mut() {
            Some(s) => s,
            None => match connect(&addr).await {
                Ok(s) => sender.insert(s),
                Err(_) => {
                    // Refused or reset: the server is down or restarting. Try again shortly.
                    st.errors += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let idx = if dup && st.sent_unique > 0 && rng.below(2) == 0 {
            st.dup_sent += 1;
            rng.below(st.sent_unique as u64) as usize
        } else {
            if st.sent_unique == st.events.len() {
                st.events.push(gen.next_event());
                st.acked.push(false);
                st.late_built += 1;
            }
            st.sent_unique += 1;
            st.sent_unique - 1
        };
        let req = Request::post(PATH)
            .header(HOST, host.as_str())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(st.events[idx].body.clone()))
            .expect("request");
        st.total_requests += 1;
        let sent_at = Instant::now();
        let answer = async {
            tx.ready().await?;
            let resp = tx.send_request(req).await?;
            let code = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((code, body))
        };
        let answer = match sh.request_timeout {
            None => answer.await,
            Some(t) => match tokio::time::timeout(t, answer).await {
                Ok(a) => a,
                Err(_) => {
                    st.timeouts += 1;
                    Err(anyhow::anyhow!("no answer within {t:?}"))
                }
            },
        };
        let done = Instant::now();
        let in_window = sent_at >= from && done <= deadline;
        match answer {
            Ok((code, body)) => {
                let good = code == 200 || code == 202;
                if good {
                    st.acked[idx] = true;
                }
                *st.codes_all.entry(code).or_default() += 1;
                st.words_all[word_index(&body)] += 1;
                if in_window {
                    let us = done.duration_since(sent_at).as_micros() as u64;
                    let _ = st.hist.record(us.max(1));
                    *st.codes.entry(code).or_default() += 1;
                    st.words[word_index(&body)] += 1;
                    if (200..300).contains(&code) {
                        st.ok += 1;
                    } else {
                        st.non2xx += 1;
                    }
                }
                if !good && st.first_error.is_none() {
                    st.first_error = Some(format!(
                        "HTTP {code}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(300)])
                    ));
                }
            }
            Err(e) => {
                st.errors += 1;
                if st.first_error.is_none() {
                    st.first_error = Some(format!("{e:#}"));
                }
                // The connection is gone: the next turn of the loop opens another one.
                sender = None;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    st
}

/// CPU seconds (user + system) this process has used so far.
pub fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which ends with the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here; clock ticks of 1/100 s.
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

pub async fn run(cfg: Config) -> Result<()> {
    let secs = (cfg.warmup + cfg.duration).as_secs_f64();
    let total = if cfg.prebuild > 0 {
        cfg.prebuild
    } else {
        (secs * 15_000.0) as usize
    };
    // One connection cannot go much faster than a few thousand requests a second.
    let per_conn = (total / cfg.conns).min((secs * 4_000.0) as usize) + 16;
    let base_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64
        - 86_400_000;

    // Build every body before the clock starts, on the blocking pool.
    let built = Instant::now();
    let mut builders = Vec::with_capacity(cfg.conns);
    for c in 0..cfg.conns {
        let run = cfg.run_id;
        builders.push(tokio::task::spawn_blocking(move || {
            let mut g = Gen::new(run, c as u32, base_ms);
            let events: Vec<Event> = (0..per_conn).map(|_| g.next_event()).collect();
            (events, g)
        }));
    }
    let mut prepared = Vec::with_capacity(cfg.conns);
    for b in builders {
        prepared.push(b.await?);
    }
    let bytes: usize = prepared
        .iter()
        .flat_map(|(e, _)| e.iter())
        .map(|e| e.body.len())
        .sum();
    println!(
        "loadgen: run {:08x}: {} bodies pre-built ({:.1} MiB, {:.0} B average) in {:.2}s",
        cfg.run_id,
        per_conn * cfg.conns,
        bytes as f64 / 1048576.0,
        bytes as f64 / (per_conn * cfg.conns) as f64,
        built.elapsed().as_secs_f64()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = cfg.stop_file.clone().map(|path| {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !std::path::Path::new(&path).exists() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            stop.store(true, Ordering::Relaxed);
        })
    });
    let shared = Arc::new(Shared {
        addr: Arc::from(cfg.addr.as_str()),
        dup: cfg.dup,
        warmup: cfg.warmup,
        duration: cfg.duration,
        keep_going: cfg.keep_going,
        request_timeout: cfg.request_timeout,
        interval: (cfg.rate > 0.0).then(|| Duration::from_secs_f64(cfg.conns as f64 / cfg.rate)),
        conns: cfg.conns,
        stop: stop.clone(),
    });
    let (ready_tx, mut ready_rx) = mpsc::channel(cfg.conns);
    let (start_tx, start_rx) = watch::channel(None);
    let mut tasks = Vec::with_capacity(cfg.conns);
    for (c, (events, g)) in prepared.into_iter().enumerate() {
        tasks.push(tokio::spawn(connection(
            c,
            shared.clone(),
            events,
            g,
            ready_tx.clone(),
            start_rx.clone(),
        )));
    }
    drop(ready_tx);
    for _ in 0..cfg.conns {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(e),
            None => bail!("a connection task ended before connecting"),
        }
    }
    let me = std::process::id().to_string();
    let cpu0 = cpu_seconds(&me);
    let t0 = Instant::now();
    start_tx.send(Some(t0))?;
    let mut all = Vec::with_capacity(cfg.conns);
    for t in tasks {
        all.push(t.await?);
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(&me) - cpu0;
    if let Some(w) = watcher {
        w.abort();
    }
    let stopped_early = stop.load(Ordering::Relaxed);

    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let (mut ok, mut non2xx, mut errors, mut dup_sent, mut late, mut requests) = (0, 0, 0, 0, 0, 0);
    let mut codes: BTreeMap<u16, u64> = BTreeMap::new();
    let mut words = [0u64; WORDS.len() + 1];
    let mut codes_all: BTreeMap<u16, u64> = BTreeMap::new();
    let mut words_all = [0u64; WORDS.len() + 1];
    let (mut timeouts, mut sent) = (0u64, 0u64);
    let mut first_error = None;
    for s in &all {
        hist.add(&s.hist)?;
        ok += s.ok;
        non2xx += s.non2xx;
        errors += s.errors;
        dup_sent += s.dup_sent;
        late += s.late_built;
        requests += s.total_requests;
        for (k, v) in &s.codes {
            *codes.entry(*k).or_default() += v;
        }
        for (i, w) in s.words.iter().enumerate() {
            words[i] += w;
        }
        for (k, v) in &s.codes_all {
            *codes_all.entry(*k).or_default() += v;
        }
        for (i, w) in s.words_all.iter().enumerate() {
            words_all[i] += w;
        }
        timeouts += s.timeouts;
        sent += s.sent_unique as u64;
        if first_error.is_none() {
            first_error = s.first_error.clone();
        }
    }

    // Keys of every acknowledged event, for `loadgen verify`.
    let (mut a_calls, mut a_sms, mut a_status, mut a_tags, mut unacked) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut out: Box<dyn std::io::Write> = match &cfg.keys {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {p}"))?,
        )),
        None => Box::new(std::io::sink()),
    };
    writeln!(out, "# run {:08x}", cfg.run_id)?;
    // Distinct bodies sent (acknowledged or not): `raw_events` can hold no more of this run.
    writeln!(out, "# sent {sent}")?;
    for s in &all {
        for (i, e) in s.events[..s.sent_unique].iter().enumerate() {
            if !s.acked[i] {
                unacked += 1;
                continue;
            }
            match &e.key {
                Key::Call { sid, tags } => {
                    a_calls += 1;
                    a_tags += *tags as u64;
                    writeln!(out, "c\t{sid}\t{tags}")?;
                }
                Key::Sms { reference } => {
                    a_sms += 1;
                    writeln!(out, "s\t{reference}")?;
                }
                Key::Status { sid, status, ms } => {
                    a_status += 1;
                    writeln!(out, "t\t{sid}\t{status}\t{ms}")?;
                }
            }
        }
    }
    out.flush()?;

    // The measured window: shorter than --duration when the stop file ended the run early.
    let d = if stopped_early {
        (wall - cfg.warmup.as_secs_f64()).max(1e-3)
    } else {
        cfg.duration.as_secs_f64()
    };
    let rate = ok as f64 / d;
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    println!(
        "loadgen: conns={} duration={:.0}s (+{:.0}s warm-up, not counted) dup={} requests={} \
         (whole run) late_built={}",
        cfg.conns,
        d,
        cfg.warmup.as_secs_f64(),
        if cfg.dup { "on" } else { "off" },
        requests,
        late
    );
    println!(
        "loadgen: in window: 2xx={ok} non2xx={non2xx} transport_errors={errors} -> {rate:.0} events/s"
    );
    println!(
        "loadgen: latency ms: p50={:.2} p90={:.2} p99={:.2} p99.9={:.2} max={:.2} mean={:.2}",
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        hist.max() as f64 / 1000.0,
        hist.mean() / 1000.0
    );
    let code_list: Vec<String> = codes.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut word_list: Vec<String> = WORDS
        .iter()
        .zip(words.iter())
        .filter(|(_, n)| **n > 0)
        .map(|(w, n)| format!("{w}={n}"))
        .collect();
    if words[WORDS.len()] > 0 {
        word_list.push(format!("other={}", words[WORDS.len()]));
    }
    println!(
        "loadgen: answers: {} | status: {}{}",
        code_list.join(" "),
        word_list.join(" "),
        if cfg.dup {
            format!(" | repeats sent (whole run): {dup_sent}")
        } else {
            String::new()
        }
    );
    println!(
        "loadgen: acknowledged events (whole run): calls={a_calls} sms={a_sms} call_status={a_status} \
         (tags on calls: {a_tags}); sent but not acknowledged: {unacked}"
    );
    println!(
        "loadgen: own CPU {:.1}s over {:.1}s ({:.0}% of one core)",
        cpu,
        wall,
        100.0 * cpu / wall
    );
    let all_list: Vec<String> = codes_all.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let all_of = |lo: u16, hi: u16| -> u64 {
        codes_all
            .iter()
            .filter(|(k, _)| (lo..=hi).contains(*k))
            .map(|(_, v)| v)
            .sum()
    };
    let (all_200, all_202) = (all_of(200, 200), all_of(202, 202));
    let (c4xx, c503) = (all_of(400, 499), all_of(503, 503));
    let c5xx_other = all_of(500, 599) - c503;
    let other_2xx = all_of(200, 299) - all_200 - all_202;
    let queued = words_all[5];
    println!(
        "loadgen: whole run ({wall:.1}s{}): answers: {} | queued={queued} | transport errors={errors} \
         (of which timeouts={timeouts}) | distinct bodies sent={sent}",
        if stopped_early { ", ended by the stop file" } else { "" },
        if all_list.is_empty() { "none".to_string() } else { all_list.join(" ") },
    );
    if let Some(e) = &first_error {
        println!("loadgen: first failure: {e}");
    }
    println!(
        "RESULT conns={} duration={} dup={} requests={} rps={:.0} ok={} non2xx={} errors={} p50_ms={:.2} \
         p90_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2} acked_calls={} acked_sms={} \
         acked_status={} unacked={} dup_sent={} loadgen_cpu_pct={:.0} sent={} all_200={} all_202={} \
         all_2xx_other={} queued={} c4xx={} c503={} c5xx_other={} timeouts={} wall_s={:.1}",
        cfg.conns,
        d,
        cfg.dup as u8,
        requests,
        rate,
        ok,
        non2xx,
        errors,
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        hist.max() as f64 / 1000.0,
        a_calls,
        a_sms,
        a_status,
        unacked,
        dup_sent,
        100.0 * cpu / wall,
        sent,
        all_200,
        all_202,
        other_2xx,
        queued,
        c4xx,
        c503,
        c5xx_other,
        timeouts,
        wall
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_word() {
        assert_eq!(word_index(br#"{"status":"stored","kind":"call"}"#), 0);
        assert_eq!(word_index(br#"{"status":"duplicate"}"#), 1);
        assert_eq!(word_index(br#"{"status":"queued"}"#), 5);
        assert_eq!(word_index(br#"{"status":"weird"}"#), WORDS.len());
        assert_eq!(word_index(b"not json"), WORDS.len());
    }

    #[test]
    fn reads_the_spool_depth() {
        let ready = r#"{"status":"ready","spool":{"events":0,"bytes":0},"database":"ok"}"#;
        assert_eq!(spool_events(ready), Some(0));
        assert_eq!(
            spool_events(r#"{"spool":{"bytes":10,"events":42}}"#),
            Some(42)
        );
        assert_eq!(spool_events(r#"{"status":"ready"}"#), None);
    }
}
