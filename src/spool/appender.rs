//! The single writer of the active segment: appends from concurrent requests are grouped,
//! one write and one fsync per group, before any of them is answered.

use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::segments::open_segment;
use super::{Inner, Request, SpoolError, SEGMENT_BYTES};

/// After a failed write (a full disk, an I/O error), appends are refused at once for this
/// long, doubling up to [`LONGEST_PAUSE`] while writes keep failing: a flood of requests then
/// costs neither a write nor a new segment each.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

/// When writes failed: until when appends are refused, and the pause after the next failure.
struct Pause {
    until: Instant,
    next: Duration,
    error: io::ErrorKind,
}

/// The single writer of the active segment: takes every append waiting, writes them, fsyncs
/// once, answers them all.
pub(super) async fn appender(inner: Arc<Inner>, mut rx: mpsc::Receiver<Request>, active: File) {
    let mut active = Some(active);
    let mut batch = Vec::new();
    let mut paused: Option<Pause> = None;
    while rx.recv_many(&mut batch, 1024).await > 0 {
        let mut records = Vec::new();
        let mut replies = Vec::new();
        let mut rotations = Vec::new();
        for req in batch.drain(..) {
            match req {
                Request::Append(record, reply) => {
                    records.push(record);
                    replies.push(reply);
                }
                Request::Rotate(reply) => rotations.push(reply),
            }
        }
        if let Some(p) = paused.as_ref().filter(|p| Instant::now() < p.until) {
            let why = || {
                io::Error::new(
                    p.error,
                    "the spool's last write failed (a full disk?); trying again shortly",
                )
            };
            for reply in replies {
                let _ = reply.send(Err(SpoolError::Io(why())));
            }
            for reply in rotations {
                let _ = reply.send(Err(why()));
            }
            continue;
        }
        let file = active.take().expect("the active segment");
        let inner2 = inner.clone();
        let rotate = !rotations.is_empty();
        let (file, result) =
            tokio::task::spawn_blocking(move || append_and_sync(&inner2, file, &records, rotate))
                .await
                .expect("the spool writer does not panic");
        active = Some(file);
        paused = match (&result, paused.take()) {
            (Ok(()), Some(_)) => {
                tracing::info!("spool: writing again");
                None
            }
            (Ok(()), None) => None,
            (Err(e), before) => {
                let pause = before.map_or(FIRST_PAUSE, |p| p.next);
                tracing::warn!(error = %e, pause_ms = pause.as_millis() as u64,
                    "spool: cannot write (events are refused with 503 until it can)");
                Some(Pause {
                    until: Instant::now() + pause,
                    next: (pause * 2).min(LONGEST_PAUSE),
                    error: e.kind(),
                })
            }
        };
        for reply in replies {
            let _ = reply.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(SpoolError::Io(io::Error::new(e.kind(), e.to_string()))),
            });
        }
        for reply in rotations {
            let _ = reply.send(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| io::Error::new(e.kind(), e.to_string())),
            );
        }
    }
}

fn append_and_sync(
    inner: &Inner,
    mut file: File,
    records: &[Vec<u8>],
    rotate: bool,
) -> (File, io::Result<()>) {
    let before = file.metadata().map(|m| m.len());
    let result = (|| {
        if !records.is_empty() {
            let mut buf = Vec::with_capacity(records.iter().map(Vec::len).sum());
            records.iter().for_each(|r| buf.extend_from_slice(r));
            file.write_all(&buf)?;
            file.sync_data()?;
        }
        Ok(())
    })();
    // A group that failed part-way (disk full, an I/O error) was answered as failed: cut its
    // bytes off and go on in the same segment; when they cannot be cut off, in a new one, so
    // that no acknowledged record ever follows garbage (reading stops at the first bad
    // record).
    let failed = result.is_err();
    let mut cut_off = false;
    if failed {
        if let Ok(len) = before {
            cut_off = file.set_len(len).and_then(|_| file.sync_data()).is_ok()
                && file.metadata().is_ok_and(|m| m.len() == len);
        }
    }
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if (failed && !cut_off) || (!failed && size > 0 && (rotate || size >= SEGMENT_BYTES)) {
        let next = inner.active_seq.load(Ordering::SeqCst) + 1;
        match open_segment(&inner.dir, next) {
            Ok(new) => {
                inner.active_seq.store(next, Ordering::SeqCst);
                return (new, result);
            }
            Err(e) => return (file, result.and(Err(e))),
        }
    }
    (file, result)
}
