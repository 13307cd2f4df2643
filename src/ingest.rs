//! Groups the events of concurrent requests into batches, one transaction each, and answers
//! every request once its batch has committed; while the database is unreachable, events go
//! to the spool instead and a drainer writes them once it answers again.
//!
//! A few workers share one queue. A worker takes the first waiting event, then whatever else
//! is already waiting (up to `batch_max`), and writes them together: at low load an event is
//! written alone and at once; under load, batches grow by themselves while the previous
//! commit is in flight. There is no timer to wait for.
//!
//! Order: while the spool holds anything, new events go to the spool too, behind the older
//! ones, so that a redelivery is never overwritten by the older version it replaced.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinSet;

use crate::metrics::Metrics;
use crate::spool::{Spool, SpoolError, SpooledEvent};
use crate::store::writer::TagCache;
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
    /// Transactions in flight at once.
    pub workers: usize,
}

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
    pub tags: Arc<TagCache>,
}

impl Writer {
    pub fn new(pool: PgPool, timeout: Duration) -> Writer {
        Writer {
            pool,
            timeout,
            tags: Arc::default(),
        }
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
}

impl Workers {
    /// Waits until the writers have written everything queued, then stops the drainer
    /// (what it has not written stays safe in the spool for the next start).
    pub async fn join(mut self) {
        while self.writers.join_next().await.is_some() {}
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
        let rx = Arc::new(Mutex::new(rx));
        let mut writers = JoinSet::new();
        for _ in 0..workers {
            writers.spawn(worker(
                writer.clone(),
                rx.clone(),
                batch_max,
                metrics.clone(),
            ));
        }
        let drainer = spool
            .clone()
            .map(|s| tokio::spawn(drain(writer, s, batch_max, schema_ready.clone(), metrics)));
        let ingestor = Ingestor {
            queue: tx,
            spool,
            schema_ready,
        };
        (ingestor, Workers { writers, drainer })
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

async fn worker(
    w: Writer,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    batch_max: usize,
    metrics: Arc<Metrics>,
) {
    let mut jobs = Vec::with_capacity(batch_max);
    loop {
        {
            let mut rx = queue.lock().await;
            if rx.recv_many(&mut jobs, batch_max).await == 0 {
                return; // every sender is gone and the queue is empty
            }
        }

        let (deliveries, replies): (Vec<Delivery>, Vec<oneshot::Sender<Ack>>) =
            jobs.drain(..).map(|j| (j.delivery, j.reply)).unzip();
        let acks = write_timed(&w, &deliveries, &metrics).await;
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
        elapsed_ms = started.elapsed().as_millis() as u64,
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
            let mut conn = w.pool.acquire().await?;
            store::write_batch(&mut conn, batch, &w.tags).await
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
