//! Groups the events of concurrent requests into batches, one transaction each, and answers
//! every request once its batch has committed; while the database is unreachable, events go
//! to the spool instead and a drainer writes them once it answers again.
//!
//! A few workers share one queue. A free worker takes the first waiting event and whatever
//! else is already waiting (up to `batch_max`). If no other batch is being written, it writes
//! them at once: at low load an event is written alone and without delay. If one is, it
//! gathers what arrives until that batch is written, then writes all it gathered; it starts
//! alongside only once [`PARALLEL_MIN`] events wait. So batches grow by themselves with the
//! load, and transactions run side by side only when the queue is deep. There is no timer to
//! wait for.
//!
//! Why: a batch's fixed cost (a round trip, starting the statement, the commit's WAL flush)
//! is paid once however many events it holds, and concurrent batches contend for the same
//! index pages, WAL flushes and, on a small machine, CPU. On bench/run's 2-core machine, one
//! batch at a time gave 35 % more events/s at 16 connections and 10 % more at 64 than three
//! at once; at 256, three at once were 15 % faster. This rule takes the better of both.
//! (Starting the next batch as soon as the previous one's statement had run, while its
//! commit waited for the WAL flush, was slower still: smaller batches, more contention.)
//!
//! Order: while the spool holds anything, new events go to the spool too, behind the older
//! ones, so that a redelivery is never overwritten by the older version it replaced.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio::sync::{mpsc, oneshot, Mutex, Notify};
use tokio::task::JoinSet;

use crate::metrics::Metrics;
use crate::spool::{Spool, SpoolError, SpooledEvent};
use crate::store::writer::BatchMemory;
use crate::store::{self, Delivery, Outcome};

/// What became of a submitted delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Ack {
    /// Committed to the database.
    Written(Outcome),
    /// The database refused this one event for a reason of its own (a bug of ours, most
    /// likely); `raw_events` keeps it with the error.
    Refused(String),
    /// The database is unreachable; the event is fsynced in the spool.
    Queued,
    /// The database is unreachable and the spool could not take the event.
    Unavailable(String),
}

#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// The most events in one transaction.
    pub batch_max: usize,
    /// The most transactions in flight at once.
    pub workers: usize,
}

/// How many events must wait before a batch is written beside one already being written
/// (capped at `batch_max`). Below it, they wait for that batch and go together after it.
pub const PARALLEL_MIN: usize = 64;

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            batch_max: 256,
            workers: 3,
        }
    }
}

/// What writing a batch needs.
#[derive(Clone)]
pub struct Writer {
    pub pool: PgPool,
    /// The longest a batch may take before the database counts as unreachable.
    pub timeout: Duration,
    /// What batches remember from one to the next.
    pub memory: Arc<BatchMemory>,
    /// Connections that have just written a batch, the latest last.
    ///
    /// sqlx pings a connection each time it goes back to its pool (a round trip that wakes
    /// the backend once more per batch), and hands out idle connections oldest first, so
    /// consecutive batches went to different backends, each with colder caches. Batches
    /// take the connection that wrote last instead; one is kept here only after it wrote
    /// without an error (see [`Writer::keep`] for the limits).
    idle: Arc<std::sync::Mutex<Vec<KeptConnection>>>,
}

/// A connection in [`Writer::idle`].
struct KeptConnection {
    conn: PoolConnection<Postgres>,
    /// When it was kept.
    at: Instant,
    /// When it was taken from the pool.
    since: Instant,
}

/// How long a connection may wait in [`Writer::idle`] before it goes back to the pool (whose
/// own idle timeout then applies).
const KEPT_IDLE_MAX: Duration = Duration::from_secs(60);

/// How long a connection is reused before it goes back to the pool, which then closes it if
/// it is past the pool's own `max_lifetime` (sqlx checks that only on return).
const KEPT_LIFETIME_MAX: Duration = Duration::from_secs(30 * 60);

impl Writer {
    pub fn new(pool: PgPool, timeout: Duration) -> Writer {
        Writer {
            pool,
            timeout,
            memory: Arc::default(),
            idle: Arc::default(),
        }
    }

    /// The connection that wrote last, else one from the pool; with when it was taken from
    /// the pool.
    async fn connection(&self) -> Result<(PoolConnection<Postgres>, Instant), sqlx::Error> {
        self.sweep();
        let kept = self.idle.lock().expect("never poisoned").pop();
        match kept {
            Some(k) => Ok((k.conn, k.since)),
            None => Ok((self.pool.acquire().await?, Instant::now())),
        }
    }

    /// Keeps a connection that has just written, for the next batch, unless it has served
    /// long enough, or the pool would have none left for the others (`/readyz`, retention):
    /// a pool of one keeps none.
    fn keep(&self, conn: PoolConnection<Postgres>, since: Instant) {
        let others_served = self.pool.num_idle() > 0
            || self.pool.size() < self.pool.options().get_max_connections();
        if others_served && since.elapsed() < KEPT_LIFETIME_MAX {
            let kept = KeptConnection {
                conn,
                at: Instant::now(),
                since,
            };
            self.idle.lock().expect("never poisoned").push(kept);
        } // else dropped: back to the pool
    }

    /// Gives the connections kept for more than [`KEPT_IDLE_MAX`] back to the pool.
    fn sweep(&self) {
        let stale: Vec<KeptConnection> = {
            let mut idle = self.idle.lock().expect("never poisoned");
            let old = (idle.iter())
                .take_while(|k| k.at.elapsed() > KEPT_IDLE_MAX)
                .count();
            idle.drain(..old).collect()
        };
        drop(stale); // outside the lock: each goes back to the pool
    }
}

struct Job {
    delivery: Delivery,
    reply: oneshot::Sender<Ack>,
}

/// The handle requests submit through. Cloning is cheap; the workers stop once every clone
/// is dropped and the queue is empty.
#[derive(Clone)]
pub struct Ingestor {
    queue: mpsc::Sender<Job>,
    spool: Option<Spool>,
    schema_ready: Arc<AtomicBool>,
}

/// The running workers and drainer.
pub struct Workers {
    writers: JoinSet<()>,
    drainer: Option<tokio::task::JoinHandle<()>>,
    /// Gives connections the writers kept but no longer use back to the pool.
    sweeper: tokio::task::JoinHandle<()>,
}

impl Workers {
    /// Waits until the writers have written everything queued, then stops the drainer
    /// (what it has not written stays safe in the spool for the next start).
    pub async fn join(mut self) {
        while self.writers.join_next().await.is_some() {}
        self.sweeper.abort();
        if let Some(d) = self.drainer.take() {
            d.abort();
            let _ = d.await;
        }
    }
}

impl Ingestor {
    /// Starts the writers (and the drainer, with a spool). Until `schema_ready` is set,
    /// nothing is written: events go to the spool (or are answered unavailable without one).
    pub fn start(
        writer: Writer,
        settings: BatchSettings,
        spool: Option<Spool>,
        schema_ready: Arc<AtomicBool>,
        metrics: Arc<Metrics>,
    ) -> (Ingestor, Workers) {
        let workers = settings.workers.max(1);
        let batch_max = settings.batch_max.max(1);
        let (tx, rx) = mpsc::channel::<Job>(batch_max * workers * 4);
        let queue = Arc::new(Queue::new(rx));
        let mut writers = JoinSet::new();
        for _ in 0..workers {
            writers.spawn(worker(
                writer.clone(),
                queue.clone(),
                batch_max,
                metrics.clone(),
            ));
        }
        let sweeper = tokio::spawn({
            let writer = writer.clone();
            async move {
                loop {
                    tokio::time::sleep(KEPT_IDLE_MAX / 2).await;
                    writer.sweep();
                }
            }
        });
        let drainer = spool
            .clone()
            .map(|s| tokio::spawn(drain(writer, s, batch_max, schema_ready.clone(), metrics)));
        let ingestor = Ingestor {
            queue: tx,
            spool,
            schema_ready,
        };
        let workers = Workers {
            writers,
            drainer,
            sweeper,
        };
        (ingestor, workers)
    }

    pub async fn submit(&self, delivery: Delivery) -> Ack {
        let ready = self.schema_ready.load(Ordering::Acquire);
        if let Some(spool) = self.spool.as_ref().filter(|s| !ready || !s.is_empty()) {
            return to_spool(spool, spooled(&delivery)).await;
        }
        if !ready {
            return Ack::Unavailable("the database schema is not migrated yet".into());
        }
        // What the spool needs if the database turns out to be away: the body is
        // reference-counted, so this costs no copy of it.
        let fallback = self.spool.as_ref().map(|_| spooled(&delivery));
        let (reply, answer) = oneshot::channel();
        let ack = match self.queue.send(Job { delivery, reply }).await {
            Ok(()) => answer
                .await
                .unwrap_or_else(|_| Ack::Unavailable("the writer stopped".into())),
            Err(_) => Ack::Unavailable("the service is shutting down".into()),
        };
        match (ack, &self.spool, fallback) {
            (Ack::Unavailable(why), Some(spool), Some(event)) => {
                tracing::warn!(error = %why, "database unavailable: spooling");
                to_spool(spool, event).await
            }
            (ack, _, _) => ack,
        }
    }
}

/// A delivery as the spool keeps it. The body is reference-counted: no copy.
fn spooled(d: &Delivery) -> SpooledEvent {
    SpooledEvent {
        body: d.body.clone(),
        content_type: d.content_type.clone(),
        received_at: d.received_at,
    }
}

async fn to_spool(spool: &Spool, event: SpooledEvent) -> Ack {
    match spool.append(&event).await {
        Ok(()) => Ack::Queued,
        Err(e @ SpoolError::Full(_)) => Ack::Unavailable(e.to_string()),
        Err(e) => {
            tracing::error!(error = %e, dir = %spool.dir().display(), "cannot spool an event");
            Ack::Unavailable(e.to_string())
        }
    }
}

/// The queue the workers share, and how many batches are being written.
struct Queue {
    rx: Mutex<mpsc::Receiver<Job>>,
    writing: AtomicUsize,
    /// Signalled each time a batch has been written.
    written: Notify,
    /// When a batch last found the database unavailable. The next batch, if it was being
    /// gathered by then (it waited behind that one), is answered so at once, and spooled,
    /// rather than waiting for the database in turn.
    unavailable_at: std::sync::Mutex<Option<Instant>>,
}

/// A batch being written; counted until dropped, even if writing it panics.
struct Writing<'a> {
    queue: &'a Queue,
    /// When its first event was taken from the queue.
    since: Instant,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.queue.writing.fetch_sub(1, Ordering::AcqRel);
        self.queue.written.notify_waiters();
    }
}

impl Queue {
    fn new(rx: mpsc::Receiver<Job>) -> Queue {
        Queue {
            rx: Mutex::new(rx),
            writing: AtomicUsize::new(0),
            written: Notify::new(),
            unavailable_at: std::sync::Mutex::new(None),
        }
    }

    /// Takes the next batch into `jobs` (see the module's comment), counted as being
    /// written until the value returned is dropped; `None` once every sender is gone and
    /// the queue is empty.
    async fn next_batch(&self, jobs: &mut Vec<Job>, batch_max: usize) -> Option<Writing<'_>> {
        let mut rx = self.rx.lock().await;
        if rx.recv_many(jobs, batch_max).await == 0 {
            return None;
        }
        let since = Instant::now();
        let enough = PARALLEL_MIN.min(batch_max);
        while jobs.len() < enough {
            let written = self.written.notified();
            tokio::pin!(written);
            written.as_mut().enable(); // from here on, no signal is missed
            if self.writing.load(Ordering::Acquire) == 0 {
                break;
            }
            tokio::select! {
                _ = &mut written => {}
                // Cancel-safe: when the other branch wins, nothing was received.
                n = rx.recv_many(jobs, batch_max - jobs.len()) => {
                    if n == 0 {
                        break; // closing: write what was gathered
                    }
                }
            }
        }
        self.writing.fetch_add(1, Ordering::AcqRel);
        Some(Writing { queue: self, since })
    }
}

async fn worker(w: Writer, queue: Arc<Queue>, batch_max: usize, metrics: Arc<Metrics>) {
    let mut jobs = Vec::with_capacity(batch_max);
    while let Some(writing) = queue.next_batch(&mut jobs, batch_max).await {
        let (deliveries, replies): (Vec<Delivery>, Vec<oneshot::Sender<Ack>>) =
            jobs.drain(..).map(|j| (j.delivery, j.reply)).unzip();
        let just_failed = queue
            .unavailable_at
            .lock()
            .expect("never poisoned")
            .take()
            .is_some_and(|at| at > writing.since);
        let acks = if just_failed {
            tracing::warn!(
                size = deliveries.len(),
                "database unavailable for the batch before: spooling this one without trying"
            );
            let why = "the database did not answer the batch written before this one";
            vec![Ack::Unavailable(why.into()); deliveries.len()]
        } else {
            let acks = write_timed(&w, &deliveries, &metrics).await;
            if acks.iter().any(|a| matches!(a, Ack::Unavailable(_))) {
                *queue.unavailable_at.lock().expect("never poisoned") = Some(Instant::now());
            }
            acks
        };
        drop(writing);
        count_written(&metrics, &deliveries, &acks, false);
        for (reply, ack) in replies.into_iter().zip(acks) {
            let _ = reply.send(ack); // the client may have gone: the event is written anyway
        }
    }
}

/// [`write`], with the batch's size and time recorded.
async fn write_timed(w: &Writer, batch: &[Delivery], metrics: &Metrics) -> Vec<Ack> {
    let started = Instant::now();
    let acks = write(w, batch).await;
    metrics.batch_written(batch.len(), started.elapsed());
    acks
}

fn count_written(metrics: &Metrics, batch: &[Delivery], acks: &[Ack], drained: bool) {
    for (d, ack) in batch.iter().zip(acks) {
        if let Ack::Written(Outcome::Stored | Outcome::Updated | Outcome::Duplicate) = ack {
            metrics.written(d.decoded.kind(), drained);
        }
    }
}

/// Writes a batch, retrying conflicts with concurrent writers; when the batch fails for a
/// reason of the data, writes its events one by one so that one bad event fails alone.
pub async fn write(w: &Writer, batch: &[Delivery]) -> Vec<Ack> {
    let started = Instant::now();
    let result = write_retrying(w, batch).await;
    tracing::debug!(
        size = batch.len(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "batch written"
    );
    match result {
        Ok(outcomes) => outcomes.into_iter().map(Ack::Written).collect(),
        Err(e) if store::is_unavailable(&e) => {
            let why = e.to_string();
            batch
                .iter()
                .map(|_| Ack::Unavailable(why.clone()))
                .collect()
        }
        Err(e) if batch.len() > 1 => {
            tracing::warn!(error = %e, size = batch.len(), "batch failed; writing its events one by one");
            let mut acks = Vec::with_capacity(batch.len());
            for d in batch {
                acks.extend(Box::pin(write(w, std::slice::from_ref(d))).await);
            }
            acks
        }
        Err(e) => {
            tracing::error!(error = %e, "the database refused an event; keeping it in raw_events");
            vec![refuse(w, &batch[0], &e).await]
        }
    }
}

async fn write_retrying(w: &Writer, batch: &[Delivery]) -> Result<Vec<Outcome>, sqlx::Error> {
    let mut attempt = 0;
    loop {
        let attempt_write = async {
            let (mut conn, since) = w.connection().await?;
            let written = store::write_batch(&mut conn, batch, &w.memory).await;
            if written.is_ok() {
                w.keep(conn, since);
            }
            written
        };
        // statement_timeout does not help against a database that does not answer at all
        // (a hung host, a cut network): the client gives up too. If the commit did happen,
        // the spooled copy will be a duplicate.
        let result = tokio::time::timeout(w.timeout, attempt_write)
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut));
        match result {
            Err(e) if store::is_conflict(&e) && attempt < 5 => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "conflict with a concurrent writer; retrying");
                tokio::time::sleep(Duration::from_millis(2 << attempt)).await;
            }
            other => return other,
        }
    }
}

/// Keeps an event the database would not take in `raw_events`, with the error.
async fn refuse(w: &Writer, delivery: &Delivery, e: &sqlx::Error) -> Ack {
    let message = format!("the event could not be stored: {e}");
    let mut kept = delivery.clone();
    kept.decoded.reading = crate::event::Reading::Rejected(crate::event::Rejection {
        kind: delivery.decoded.kind(),
        field: None,
        message: message.clone(),
    });
    // Kept as text, not as jsonb: whatever the database refused may be in the payload.
    if kept.decoded.payload.take().is_some() && kept.decoded.body.is_none() {
        kept.decoded.body = Some(crate::payload::body_text(&delivery.body));
    }
    match write_retrying(w, std::slice::from_ref(&kept)).await {
        Ok(_) => Ack::Refused(message),
        Err(e2) if store::is_unavailable(&e2) => Ack::Unavailable(e2.to_string()),
        Err(e2) => {
            tracing::error!(error = %e2, "could not keep the refused event in raw_events either");
            Ack::Refused(message)
        }
    }
}

/// Writes spooled events to the database, oldest first, as soon as it answers; backs off
/// while it does not.
async fn drain(
    w: Writer,
    spool: Spool,
    batch_max: usize,
    schema_ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) {
    const IDLE: Duration = Duration::from_millis(100);
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
    let mut backoff = Duration::from_millis(250);
    loop {
        if spool.is_empty() || !schema_ready.load(Ordering::Acquire) {
            tokio::time::sleep(IDLE).await;
            continue;
        }
        let segments = match spool.closed_segments().await {
            Ok(s) if s.is_empty() => {
                tokio::time::sleep(IDLE).await;
                continue;
            }
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "spool: cannot list segments");
                tokio::time::sleep(MAX_BACKOFF).await;
                continue;
            }
        };
        for segment in segments {
            let events = match spool.read_segment(&segment) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, segment = %segment.display(), "spool: cannot read a segment");
                    tokio::time::sleep(MAX_BACKOFF).await;
                    break;
                }
            };
            for chunk in events.chunks(batch_max) {
                let deliveries: Vec<Delivery> = chunk
                    .iter()
                    .map(|(_, e)| {
                        Delivery::read(e.body.clone(), e.content_type.clone(), e.received_at)
                    })
                    .collect();
                loop {
                    let acks = write_timed(&w, &deliveries, &metrics).await;
                    match acks.iter().find_map(|a| match a {
                        Ack::Unavailable(why) => Some(why.clone()),
                        _ => None,
                    }) {
                        None => {
                            count_written(&metrics, &deliveries, &acks, true);
                            break;
                        }
                        Some(why) => {
                            tracing::warn!(error = %why, waiting = spool.depth().events, retry_in_ms = backoff.as_millis() as u64,
                                "spool: database still unavailable");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                    }
                }
                backoff = Duration::from_millis(250);
                let (end, _) = chunk.last().expect("chunks are not empty");
                spool.mark_written(&segment, *end, chunk.len() as u64);
                tracing::info!(
                    written = chunk.len(),
                    waiting = spool.depth().events,
                    "spool: events written to the database"
                );
            }
            if let Err(e) = spool.remove_segment(&segment) {
                tracing::error!(error = %e, segment = %segment.display(), "spool: cannot remove a written segment");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> (mpsc::Sender<Job>, Arc<Queue>) {
        let (tx, rx) = mpsc::channel(1024);
        (tx, Arc::new(Queue::new(rx)))
    }

    async fn send(tx: &mpsc::Sender<Job>, n: usize) {
        for _ in 0..n {
            let delivery = Delivery::read(
                bytes::Bytes::from_static(b"{}"),
                Some("application/json".into()),
                chrono::Utc::now(),
            );
            let (reply, _) = oneshot::channel();
            tx.send(Job { delivery, reply }).await.unwrap();
        }
    }

    /// Runs `next_batch` in a task; the batch's size once it returns.
    fn take(queue: &Arc<Queue>) -> tokio::task::JoinHandle<usize> {
        let queue = queue.clone();
        tokio::spawn(async move {
            let mut jobs = Vec::new();
            let writing = queue.next_batch(&mut jobs, 256).await.expect("a batch");
            std::mem::forget(writing); // still being written, as far as the queue knows
            jobs.len()
        })
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_lone_event_goes_at_once_when_nothing_is_being_written() {
        let (tx, queue) = queue();
        send(&tx, 1).await;
        assert_eq!(take(&queue).await.unwrap(), 1);
        assert_eq!(queue.writing.load(Ordering::Acquire), 1);
    }

    #[tokio::test]
    async fn events_wait_for_the_batch_being_written_and_go_together() {
        let (tx, queue) = queue();
        queue.writing.store(1, Ordering::Release); // a batch is being written
        send(&tx, 3).await;
        let next = take(&queue);
        settle().await;
        send(&tx, 2).await; // arriving meanwhile: gathered too
        settle().await;
        assert!(
            !next.is_finished(),
            "waits while the other batch is written"
        );
        drop(Writing {
            queue: &queue,
            since: Instant::now(),
        }); // the other batch is written
        assert_eq!(next.await.unwrap(), 5);
    }

    /// A database that takes connections and never answers: each batch waits `timeout`.
    /// The batch gathered while the first one waited is answered at once, not after another
    /// `timeout` (without a spool: `Unavailable`, i.e. 503). On tokio's paused clock, which
    /// moves to the next timer whenever every task waits: the times below are exact.
    #[tokio::test(start_paused = true)]
    async fn the_batch_behind_one_the_database_did_not_answer_does_not_wait_again() {
        let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let timeout = Duration::from_millis(1500);
        let pool = store::pool(&store::DbSettings {
            url: format!("postgres://postgres@{}/x", black_hole.local_addr().unwrap()),
            pool_size: 4,
            timeout,
        })
        .unwrap();
        let (ingestor, _workers) = Ingestor::start(
            Writer::new(pool, timeout),
            BatchSettings::default(),
            None,
            Arc::new(AtomicBool::new(true)),
            Arc::new(Metrics::new()),
        );
        let start = tokio::time::Instant::now();
        let submit = |n: u8| {
            let ingestor = ingestor.clone();
            tokio::spawn(async move {
                let body =
                    bytes::Bytes::from(format!(r#"{{"callSid":"CA{n}","activityType":"call"}}"#));
                let ack = ingestor
                    .submit(Delivery::read(body, None, chrono::Utc::now()))
                    .await;
                (ack, start.elapsed())
            })
        };
        let first = submit(1);
        // Late in the first batch's wait, so that a batch started beside it on its own would
        // still be waiting when the first one gives up.
        tokio::time::sleep(timeout * 2 / 3).await;
        let behind = [submit(2), submit(3)];
        let (ack, first_done) = first.await.unwrap();
        assert!(matches!(ack, Ack::Unavailable(_)), "{ack:?}");
        assert!(first_done >= timeout, "{first_done:?}");
        for b in behind {
            let (ack, done) = b.await.unwrap();
            assert!(matches!(ack, Ack::Unavailable(_)), "{ack:?}");
            assert_eq!(done, first_done, "answered with the first batch");
        }
        drop(black_hole);
    }

    /// The PostgreSQL server of the tests (as `scripts/test` and tests/api set it).
    fn database_url() -> String {
        std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
    }

    /// The backend a connection of the writer talks to.
    async fn backend(conn: &mut PoolConnection<Postgres>) -> i32 {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut **conn)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_next_batch_takes_the_connection_that_wrote_last() {
        let url = database_url();
        let pool = PgPool::connect(&url).await.unwrap();
        let w = Writer::new(pool, Duration::from_secs(30));
        let ((mut a, since_a), (mut b, since_b)) =
            (w.connection().await.unwrap(), w.connection().await.unwrap());
        let (pid_a, pid_b) = (backend(&mut a).await, backend(&mut b).await);
        assert_ne!(pid_a, pid_b);
        // Kept a, then b: the next takes b, then a, without a pool round trip in between.
        w.keep(a, since_a);
        w.keep(b, since_b);
        let (mut next, since) = w.connection().await.unwrap();
        assert_eq!((backend(&mut next).await, since), (pid_b, since_b));
        let (mut after, _) = w.connection().await.unwrap();
        assert_eq!(backend(&mut after).await, pid_a);
        // Nothing kept: one from the pool.
        let (mut fresh, _) = w.connection().await.unwrap();
        assert!(![pid_a, pid_b].contains(&backend(&mut fresh).await));
    }

    #[tokio::test]
    async fn connections_kept_but_unused_go_back_to_the_pool() {
        let url = database_url();
        let pool = PgPool::connect(&url).await.unwrap();
        let w = Writer::new(pool.clone(), Duration::from_secs(30));
        let ((old, since), (recent, since_recent)) =
            (w.connection().await.unwrap(), w.connection().await.unwrap());
        w.keep(old, since);
        w.keep(recent, since_recent);
        let idle_before = pool.num_idle();
        // The first one kept has waited too long (compilation took longer than that).
        w.idle.lock().unwrap()[0].at = Instant::now()
            .checked_sub(KEPT_IDLE_MAX + Duration::from_secs(1))
            .unwrap();
        w.sweep();
        assert_eq!(w.idle.lock().unwrap().len(), 1);
        // Given back by a task of sqlx's.
        for _ in 0..100 {
            if pool.num_idle() > idle_before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(pool.num_idle(), idle_before + 1);
    }

    #[tokio::test]
    async fn the_writer_leaves_one_connection_of_the_pool_to_the_others() {
        let url = database_url();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(2))
            .connect(&url)
            .await
            .unwrap();
        let w = Writer::new(pool.clone(), Duration::from_secs(30));
        let (conn, since) = w.connection().await.unwrap();
        w.keep(conn, since);
        let mut other = pool
            .acquire()
            .await
            .expect("the pool's only connection is free");
        sqlx::query("SELECT 1").execute(&mut *other).await.unwrap();
    }

    #[tokio::test]
    async fn a_write_that_panics_still_ends_its_batch() {
        let (tx, queue) = queue();
        send(&tx, 1).await;
        let q = queue.clone();
        let task = tokio::spawn(async move {
            let mut jobs = Vec::new();
            let _writing = q.next_batch(&mut jobs, 256).await;
            panic!("a bug while writing");
        });
        assert!(task.await.is_err());
        assert_eq!(queue.writing.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_deep_queue_starts_a_batch_alongside() {
        let (tx, queue) = queue();
        queue.writing.store(1, Ordering::Release);
        send(&tx, PARALLEL_MIN - 1).await;
        let next = take(&queue);
        settle().await;
        assert!(!next.is_finished());
        send(&tx, 1).await;
        let size = tokio::time::timeout(Duration::from_secs(10), next)
            .await
            .expect("starts without the other batch ending")
            .unwrap();
        assert_eq!(size, PARALLEL_MIN);
        assert_eq!(queue.writing.load(Ordering::Acquire), 2);
    }

    #[tokio::test]
    async fn closing_writes_what_was_gathered() {
        let (tx, queue) = queue();
        queue.writing.store(1, Ordering::Release);
        send(&tx, 2).await;
        let next = take(&queue);
        settle().await;
        drop(tx);
        assert_eq!(next.await.unwrap(), 2);
    }
}
