//! Groups the events of concurrent requests into batches, one transaction each, and answers
//! every request once its batch has committed.
//!
//! A few workers share one queue. A worker takes the first waiting event, then whatever else
//! is already waiting (up to `batch_max`), and writes them together: at low load an event is
//! written alone and at once; under load, batches grow by themselves while the previous
//! commit is in flight. There is no timer to wait for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinSet;

use crate::store::{self, Delivery, Outcome};

/// What became of a submitted delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Ack {
    /// Committed to the database.
    Written(Outcome),
    /// The database refused this one event for a reason of its own (a bug of ours, most
    /// likely); `raw_events` keeps it with the error.
    Refused(String),
    /// The database cannot be reached now; nothing was written.
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

struct Job {
    delivery: Delivery,
    reply: oneshot::Sender<Ack>,
}

/// The handle requests submit through. Cloning is cheap; the workers stop once every clone
/// is dropped and the queue is empty.
#[derive(Clone)]
pub struct Ingestor {
    queue: mpsc::Sender<Job>,
}

/// The running workers; `join` waits until they have written everything queued.
pub struct Workers(JoinSet<()>);

impl Workers {
    pub async fn join(mut self) {
        while self.0.join_next().await.is_some() {}
    }
}

impl Ingestor {
    pub fn start(pool: PgPool, settings: BatchSettings) -> (Ingestor, Workers) {
        let (tx, rx) = mpsc::channel::<Job>(settings.batch_max * settings.workers.max(1) * 4);
        let rx = Arc::new(Mutex::new(rx));
        let mut set = JoinSet::new();
        for _ in 0..settings.workers.max(1) {
            set.spawn(worker(pool.clone(), rx.clone(), settings.batch_max.max(1)));
        }
        (Ingestor { queue: tx }, Workers(set))
    }

    pub async fn submit(&self, delivery: Delivery) -> Ack {
        let (reply, answer) = oneshot::channel();
        if self.queue.send(Job { delivery, reply }).await.is_err() {
            return Ack::Unavailable("the service is shutting down".into());
        }
        answer
            .await
            .unwrap_or_else(|_| Ack::Unavailable("the writer stopped".into()))
    }
}

async fn worker(pool: PgPool, queue: Arc<Mutex<mpsc::Receiver<Job>>>, batch_max: usize) {
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
        let acks = write(&pool, &deliveries).await;
        for (reply, ack) in replies.into_iter().zip(acks) {
            let _ = reply.send(ack); // the client may have gone: the event is written anyway
        }
    }
}

/// Writes a batch, retrying conflicts with concurrent writers; when the batch fails for a
/// reason of the data, writes its events one by one so that one bad event fails alone.
pub async fn write(pool: &PgPool, batch: &[Delivery]) -> Vec<Ack> {
    let started = Instant::now();
    let result = write_retrying(pool, batch).await;
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
                acks.extend(Box::pin(write(pool, std::slice::from_ref(d))).await);
            }
            acks
        }
        Err(e) => {
            tracing::error!(error = %e, "the database refused an event; keeping it in raw_events");
            vec![refuse(pool, &batch[0], &e).await]
        }
    }
}

async fn write_retrying(pool: &PgPool, batch: &[Delivery]) -> Result<Vec<Outcome>, sqlx::Error> {
    let mut attempt = 0;
    loop {
        let result = async {
            let mut conn = pool.acquire().await?;
            store::write_batch(&mut conn, batch).await
        }
        .await;
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
async fn refuse(pool: &PgPool, delivery: &Delivery, e: &sqlx::Error) -> Ack {
    let message = format!("the event could not be stored: {e}");
    let mut kept = delivery.clone();
    kept.decoded.reading = crate::event::Reading::Rejected(crate::event::Rejection {
        kind: delivery.decoded.kind(),
        field: None,
        message: message.clone(),
    });
    match write_retrying(pool, std::slice::from_ref(&kept)).await {
        Ok(_) => Ack::Refused(message),
        Err(e2) if store::is_unavailable(&e2) => Ack::Unavailable(e2.to_string()),
        Err(e2) => {
            tracing::error!(error = %e2, "could not keep the refused event in raw_events either");
            Ack::Refused(message)
        }
    }
}
