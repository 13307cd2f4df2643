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

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

const MAGIC: &[u8; 4] = b"CHS1";
const HEADER: usize = 12;
/// A segment is closed once it holds this much, so that draining reads bounded chunks.
const SEGMENT_BYTES: u64 = 4 << 20;

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

struct Inner {
    dir: PathBuf,
    max_bytes: u64,
    appends: mpsc::Sender<Request>,
    events: AtomicU64,
    bytes: AtomicU64,
    active_seq: AtomicU64,
}

enum Request {
    Append(Vec<u8>, oneshot::Sender<Result<(), SpoolError>>),
    Rotate(oneshot::Sender<io::Result<()>>),
}

impl Spool {
    /// Opens (creating it if needed) the spool in `dir`, checks every segment, and starts
    /// the appender. Must be called inside a tokio runtime.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
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
        tokio::spawn(appender(inner.clone(), rx, active));
        Ok(Spool { inner })
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
        if let Err(e) = fs::write(done_path(path), offset.to_string()) {
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

/// The single writer of the active segment: takes every append waiting, writes them, fsyncs
/// once, answers them all.
async fn appender(inner: Arc<Inner>, mut rx: mpsc::Receiver<Request>, active: File) {
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

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:012}.spool"))
}

fn done_path(segment: &Path) -> PathBuf {
    segment.with_extension("done")
}

fn open_segment(dir: &Path, seq: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, seq))?;
    // The new file's name must survive a crash too.
    File::open(dir)?.sync_all()?;
    Ok(file)
}

/// The segments in `dir`, by sequence number.
fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out: Vec<(u64, PathBuf)> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            let seq = path
                .extension()
                .filter(|x| *x == "spool")
                .and(path.file_stem())
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())?;
            Some((seq, path))
        })
        .collect();
    out.sort();
    Ok(out)
}

fn read_done(segment: &Path) -> u64 {
    fs::read_to_string(done_path(segment))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// What a segment holds.
struct Scanned {
    /// The whole records: offset and payload.
    records: Vec<(u64, Vec<u8>)>,
    /// The length the whole records cover.
    good_len: u64,
    /// The file's length: anything after `good_len` is a torn write.
    file_len: u64,
}

fn scan(path: &Path) -> io::Result<Scanned> {
    let mut file = File::open(path)?;
    let mut data = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut data)?;
    let mut records = Vec::new();
    let mut pos = 0usize;
    while data.len() - pos >= HEADER {
        let header = &data[pos..pos + HEADER];
        if &header[..4] != MAGIC {
            break;
        }
        let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        let Some(payload) = data.get(pos + HEADER..pos + HEADER + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        records.push((pos as u64, payload.to_vec()));
        pos += HEADER + len;
    }
    Ok(Scanned {
        records,
        good_len: pos as u64,
        file_len: data.len() as u64,
    })
}

fn encode(event: &SpooledEvent) -> Vec<u8> {
    let ct = event.content_type.as_deref().unwrap_or("").as_bytes();
    let ct = &ct[..ct.len().min(u16::MAX as usize)];
    let mut payload = Vec::with_capacity(10 + ct.len() + event.body.len());
    payload.extend_from_slice(&event.received_at.timestamp_micros().to_le_bytes());
    payload.extend_from_slice(&(ct.len() as u16).to_le_bytes());
    payload.extend_from_slice(ct);
    payload.extend_from_slice(&event.body);
    let mut record = Vec::with_capacity(HEADER + payload.len());
    record.extend_from_slice(MAGIC);
    record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    record.extend_from_slice(&payload);
    record
}

fn decode(payload: &[u8]) -> Option<SpooledEvent> {
    let micros = i64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let ct_len = u16::from_le_bytes(payload.get(8..10)?.try_into().ok()?) as usize;
    let ct = std::str::from_utf8(payload.get(10..10 + ct_len)?).ok()?;
    Some(SpooledEvent {
        received_at: DateTime::from_timestamp_micros(micros)?,
        content_type: (!ct.is_empty()).then(|| ct.to_owned()),
        body: bytes::Bytes::copy_from_slice(payload.get(10 + ct_len..)?),
    })
}

#[cfg(test)]
mod tests {
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
