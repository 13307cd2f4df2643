//! The durable local queue used while the database is unreachable (`SPOOL_DIR`).
//!
//! Events are appended to segment files (`<seq>.spool`), each record framed as
//! `"CHS1" | length u32 | crc32 u32 | payload` and fsynced before the request is answered
//! `202 queued`. Appends from concurrent requests are grouped: one write and one fsync per
//! group. A torn record at the end of a segment (a crash mid-write) fails its length or CRC
//! check and is dropped, with every record before it kept.
//!
//! The drainer (see `ingest`) takes closed segments oldest first, writes their events to the
//! database through the same path as live events, records how far it got in `<seq>.done`,
//! and removes a segment once all of it is written.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

mod appender;
mod frame;
mod segments;

use frame::{decode, encode, HEADER};
use segments::{done_path, open_segment, read_done, scan, segments, Scanned};
/// A segment is closed once it holds this much, so that draining reads bounded chunks.
pub(super) const SEGMENT_BYTES: u64 = 4 << 20;

/// One spooled delivery: the body exactly as received, so that draining reads it with the
/// same reader as a live one.
#[derive(Debug, Clone, PartialEq)]
pub struct SpooledEvent {
    pub received_at: DateTime<Utc>,
    pub content_type: Option<String>,
    pub body: bytes::Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full (SPOOL_MAX_BYTES = {0} bytes)")]
    Full(u64),
    #[error("the spool cannot be written: {0}")]
    Io(#[from] io::Error),
    #[error("the spool has stopped")]
    Stopped,
}

/// How much waits in the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Depth {
    pub events: u64,
    pub bytes: u64,
}

#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub dir: PathBuf,
    max_bytes: u64,
    appends: mpsc::Sender<Request>,
    events: AtomicU64,
    bytes: AtomicU64,
    pub active_seq: AtomicU64,
}

pub(super) enum Request {
    Append(Vec<u8>, oneshot::Sender<Result<(), SpoolError>>),
    Rotate(oneshot::Sender<io::Result<()>>),
}

impl Spool {
    /// Opens (creating it if needed) the spool in `dir`, checks every segment, and starts
    /// the appender. Must be called inside a tokio runtime.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        {
            use std::os::unix::fs::PermissionsExt;
            let private = fs::Permissions::from_mode(segments::PRIVATE_DIR);
            if let Err(e) = fs::set_permissions(dir, private) {
                tracing::warn!(error = %e, dir = %dir.display(), "spool: cannot make the folder its user's alone (0700)");
            }
        }
        // Progress files whose segment is gone (a crash while removing it) would skip the
        // records of a new segment of the same number.
        for entry in fs::read_dir(dir)?.filter_map(Result::ok) {
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "done")
                && !path.with_extension("spool").exists()
            {
                fs::remove_file(&path)?;
            }
        }
        let mut events = 0;
        let mut bytes = 0;
        let mut last_seq = 0;
        for (seq, path) in segments(dir)? {
            let Scanned {
                records,
                good_len,
                file_len,
            } = scan(&path)?;
            if good_len < file_len {
                tracing::warn!(segment = %path.display(), dropped_bytes = file_len - good_len,
                    "spool: a torn record at the end of a segment (a crash mid-write); cut off, the records before it are kept");
                OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(good_len)?;
            }
            if good_len == 0 {
                // An active segment that never got an event: nothing to keep.
                fs::remove_file(&path)?;
                let _ = fs::remove_file(done_path(&path));
                continue;
            }
            let done = read_done(&path);
            events += records.iter().filter(|(offset, _)| *offset >= done).count() as u64;
            bytes += good_len;
            last_seq = seq;
        }
        let active_seq = last_seq + 1;
        let active = open_segment(dir, active_seq)?;
        let (tx, rx) = mpsc::channel(4096);
        let inner = Arc::new(Inner {
            dir: dir.to_owned(),
            max_bytes,
            appends: tx,
            events: AtomicU64::new(events),
            bytes: AtomicU64::new(bytes),
            active_seq: AtomicU64::new(active_seq),
        });
        if events > 0 {
            tracing::info!(events, bytes, dir = %dir.display(), "spool: events found from an earlier run; they will be written");
        }
        tokio::spawn(appender::appender(inner.clone(), rx, active));
        Ok(Spool { inner })
    }

    /// How many events wait in the spool at `dir`, read without touching it (a running
    /// `serve` may own it): 0 when there is no such folder.
    pub fn pending_in(dir: &Path) -> io::Result<u64> {
        if !dir.is_dir() {
            return Ok(0);
        }
        let mut events = 0;
        for (_, path) in segments(dir)? {
            let done = read_done(&path);
            let Scanned { records, .. } = scan(&path)?;
            events += records.iter().filter(|(offset, _)| *offset >= done).count() as u64;
        }
        Ok(events)
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn depth(&self) -> Depth {
        Depth {
            events: self.inner.events.load(Ordering::SeqCst),
            bytes: self.inner.bytes.load(Ordering::SeqCst),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.inner.events.load(Ordering::SeqCst) == 0
    }

    /// Appends an event; returns once it is on disk (fsynced).
    pub async fn append(&self, event: &SpooledEvent) -> Result<(), SpoolError> {
        let record = encode(event);
        let size = record.len() as u64;
        // Reserve the room first, so that concurrent appends cannot pass the bound together.
        let before = self.inner.bytes.fetch_add(size, Ordering::SeqCst);
        if before + size > self.inner.max_bytes {
            self.inner.bytes.fetch_sub(size, Ordering::SeqCst);
            return Err(SpoolError::Full(self.inner.max_bytes));
        }
        // Counted before it is written: the drainer may read, write and uncount the record as
        // soon as it is in the segment, before this call resumes. Counted only afterwards, it
        // was sometimes uncounted first (the count saturates at zero), and the spool then
        // reported events it no longer held, forever: the drainer waited for them and
        // /readyz never showed it empty (seen in bench/drill's db-outage).
        self.inner.events.fetch_add(1, Ordering::SeqCst);
        let (reply, done) = oneshot::channel();
        let result = match self
            .inner
            .appends
            .send(Request::Append(record, reply))
            .await
        {
            Ok(()) => done.await.unwrap_or(Err(SpoolError::Stopped)),
            Err(_) => Err(SpoolError::Stopped),
        };
        if result.is_err() {
            // Not in any segment: the drainer never counts it.
            self.inner.events.fetch_sub(1, Ordering::SeqCst);
            self.inner.bytes.fetch_sub(size, Ordering::SeqCst);
        }
        result
    }

    /// The closed segments, oldest first. When every event waits in the active segment, it
    /// is closed first, so that the drainer can take it while new events go to a new one.
    pub async fn closed_segments(&self) -> io::Result<Vec<PathBuf>> {
        let closed = |active: u64| -> io::Result<Vec<PathBuf>> {
            Ok(segments(&self.inner.dir)?
                .into_iter()
                .filter(|(seq, _)| *seq < active)
                .map(|(_, p)| p)
                .collect())
        };
        let found = closed(self.inner.active_seq.load(Ordering::SeqCst))?;
        if !found.is_empty() || self.is_empty() {
            return Ok(found);
        }
        let (reply, done) = oneshot::channel();
        if self
            .inner
            .appends
            .send(Request::Rotate(reply))
            .await
            .is_ok()
        {
            done.await.unwrap_or(Ok(()))?;
        }
        closed(self.inner.active_seq.load(Ordering::SeqCst))
    }

    /// The events of a closed segment not yet written, with the offset after each.
    pub fn read_segment(&self, path: &Path) -> io::Result<Vec<(u64, SpooledEvent)>> {
        let done = read_done(path);
        let records = scan(path)?.records;
        let mut out = Vec::new();
        let mut bad = 0;
        for (offset, payload) in records {
            let end = offset + (HEADER + payload.len()) as u64;
            if offset < done {
                continue;
            }
            match decode(&payload) {
                Some(event) => out.push((end, event)),
                None => bad += 1,
            }
        }
        if bad > 0 {
            tracing::error!(segment = %path.display(), records = bad, "spool: records with a valid checksum but an unreadable layout were skipped");
        }
        Ok(out)
    }

    /// Records that a segment's events up to `offset` are written (`count` of them).
    pub fn mark_written(&self, path: &Path, offset: u64, count: u64) {
        let _ = self
            .inner
            .events
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(count))
            });
        // Not fsynced: after a crash, the drainer at worst writes a few events again,
        // which the idempotent upserts absorb.
        if let Err(e) = segments::write_private(&done_path(path), &offset.to_string()) {
            tracing::warn!(error = %e, "spool: cannot record drain progress");
        }
    }

    /// Removes a segment all of whose events are written.
    pub fn remove_segment(&self, path: &Path) -> io::Result<()> {
        let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        // The progress file first: one left behind by a crash between the two would
        // otherwise skip records of a later segment that reuses the number.
        let _ = fs::remove_file(done_path(path));
        fs::remove_file(path)?;
        let _ = self
            .inner
            .bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(len))
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn event(i: usize) -> SpooledEvent {
        SpooledEvent {
            received_at: DateTime::from_timestamp_micros(1_700_000_000_000_000 + i as i64).unwrap(),
            content_type: i.is_multiple_of(2).then(|| "application/json".to_owned()),
            body: format!("{{\"n\":{i}}}").into_bytes().into(),
        }
    }

    fn temp_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("chi-spool-unit-{}", uuid_like()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn uuid_like() -> String {
        format!("{}-{:?}", std::process::id(), std::time::SystemTime::now())
            .replace([' ', ':', '{', '}', ','], "")
    }

    async fn drain_all(spool: &Spool) -> Vec<SpooledEvent> {
        let mut out = Vec::new();
        for seg in spool.closed_segments().await.unwrap() {
            let events = spool.read_segment(&seg).unwrap();
            let n = events.len() as u64;
            if let Some((end, _)) = events.last() {
                spool.mark_written(&seg, *end, n);
            }
            out.extend(events.into_iter().map(|(_, e)| e));
            spool.remove_segment(&seg).unwrap();
        }
        out
    }

    #[tokio::test]
    async fn appended_events_come_back_in_order() {
        let dir = temp_dir();
        let spool = Spool::open(&dir, 1 << 30).unwrap();
        let appends: Vec<_> = (0..50)
            .map(|i| {
                let s = spool.clone();
                async move { s.append(&event(i)).await }
            })
            .collect();
        for a in appends {
            a.await.unwrap();
        }
        assert_eq!(spool.depth().events, 50);
        let back = drain_all(&spool).await;
        assert_eq!(back, (0..50).map(event).collect::<Vec<_>>());
        assert!(spool.is_empty());
        assert_eq!(spool.depth().bytes, 0);
        fs::remove_dir_all(dir).unwrap();
    }

    /// Draining while appends are in flight, as the service does when a stream continues
    /// after an outage: once everything is written, the spool counts nothing left.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn draining_during_appends_leaves_the_count_at_zero() {
        let dir = temp_dir();
        let spool = Spool::open(&dir, 1 << 30).unwrap();
        const N: usize = 3000;
        let appenders: Vec<_> = (0..8)
            .map(|t| {
                let s = spool.clone();
                tokio::spawn(async move {
                    for i in (t..N).step_by(8) {
                        s.append(&event(i)).await.unwrap();
                    }
                })
            })
            .collect();
        let mut drained = 0;
        while drained < N {
            for segment in spool.closed_segments().await.unwrap() {
                let events = spool.read_segment(&segment).unwrap();
                if let Some((end, _)) = events.last() {
                    spool.mark_written(&segment, *end, events.len() as u64);
                }
                drained += events.len();
                spool.remove_segment(&segment).unwrap();
            }
            tokio::task::yield_now().await;
        }
        for a in appenders {
            a.await.unwrap();
        }
        assert_eq!(drained, N);
        assert_eq!(spool.depth().events, 0);
        assert!(spool.is_empty());
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_torn_last_record_is_dropped_and_the_others_kept() {
        let dir = temp_dir();
        {
            let spool = Spool::open(&dir, 1 << 30).unwrap();
            for i in 0..3 {
                spool.append(&event(i)).await.unwrap();
            }
        }
        // A crash in the middle of the fourth record.
        let (_, seg) = segments(&dir).unwrap().into_iter().next().unwrap();
        let mut torn = encode(&event(3));
        torn.truncate(torn.len() - 3);
        OpenOptions::new()
            .append(true)
            .open(&seg)
            .unwrap()
            .write_all(&torn)
            .unwrap();
        let spool = Spool::open(&dir, 1 << 30).unwrap();
        assert_eq!(spool.depth().events, 3);
        assert_eq!(
            drain_all(&spool).await,
            (0..3).map(event).collect::<Vec<_>>()
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn progress_survives_a_restart() {
        let dir = temp_dir();
        {
            let spool = Spool::open(&dir, 1 << 30).unwrap();
            for i in 0..4 {
                spool.append(&event(i)).await.unwrap();
            }
            let seg = spool.closed_segments().await.unwrap().remove(0);
            let events = spool.read_segment(&seg).unwrap();
            spool.mark_written(&seg, events[1].0, 2);
        }
        let spool = Spool::open(&dir, 1 << 30).unwrap();
        assert_eq!(spool.depth().events, 2);
        assert_eq!(drain_all(&spool).await, vec![event(2), event(3)]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn an_orphan_progress_file_skips_nothing() {
        let dir = temp_dir();
        // Left by a crash after a segment's removal: it must not apply to a new segment 1.
        fs::write(dir.join("000000000001.done"), "1000000").unwrap();
        let spool = Spool::open(&dir, 1 << 30).unwrap();
        spool.append(&event(0)).await.unwrap();
        assert_eq!(drain_all(&spool).await, vec![event(0)]);
        fs::remove_dir_all(dir).unwrap();
    }

    /// The spool holds personal data: its folder and files are its user's alone, whatever
    /// the umask (the default 022 would give 0755 and 0644).
    #[tokio::test]
    async fn the_spool_is_readable_by_its_user_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir();
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        spool.append(&event(1)).await.unwrap();
        let segment = spool.closed_segments().await.unwrap().remove(0);
        let events = spool.read_segment(&segment).unwrap();
        spool.mark_written(&segment, events[0].0, 1);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let files: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            files
                .iter()
                .any(|f| f.extension().is_some_and(|x| x == "done")),
            "{files:?}"
        );
        for file in files {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        let _ = fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn the_size_bound_refuses_appends() {
        let dir = temp_dir();
        let one = encode(&event(0)).len() as u64;
        let spool = Spool::open(&dir, one * 2).unwrap();
        spool.append(&event(0)).await.unwrap();
        spool.append(&event(1)).await.unwrap();
        assert!(matches!(
            spool.append(&event(2)).await,
            Err(SpoolError::Full(_))
        ));
        assert_eq!(spool.depth().events, 2);
        fs::remove_dir_all(dir).unwrap();
    }
}
