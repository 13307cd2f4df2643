//! The single writer of the active segment: appends from concurrent requests are grouped,
//! one write and one fsync per group, before any of them is answered.

use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::segments::open_segment;
use super::{Inner, Request, SpoolError, SEGMENT_BYTES};

/// The single writer of the active segment: takes every append waiting, writes them, fsyncs
/// once, answers them all.
pub(super) async fn appender(inner: Arc<Inner>, mut rx: mpsc::Receiver<Request>, active: File) {
    let mut active = Some(active);
    let mut batch = Vec::new();
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
        let file = active.take().expect("the active segment");
        let inner2 = inner.clone();
        let rotate = !rotations.is_empty();
        let (file, result) =
            tokio::task::spawn_blocking(move || append_and_sync(&inner2, file, &records, rotate))
                .await
                .expect("the spool writer does not panic");
        active = Some(file);
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
    // bytes off, and go on in a new segment, so that no acknowledged record ever follows
    // garbage (reading stops at the first bad record).
    let failed = result.is_err();
    if failed {
        if let Ok(len) = before {
            let _ = file.set_len(len).and_then(|_| file.sync_data());
        }
    }
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if failed || (size > 0 && (rotate || size >= SEGMENT_BYTES)) {
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
