//! From accepted requests to committed rows: requests submit deliveries; writers group them
//! into batches ([`batcher`]) and hand them to the sink ([`worker`]), answering every request
//! once its batch has committed; while the database is unreachable, deliveries go to the
//! spool instead, and a drainer writes them once it answers again ([`drain`]).
//!
//! Order: while the spool holds anything, new events go to the spool too, behind the older
//! ones, so that a redelivery is never overwritten by the older version it replaced.

mod batcher;
mod drain;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::config::defaults;
use crate::delivery::{Delivery, Outcome};
use crate::metrics::Metrics;
use crate::sink::Sink;
use crate::spool::{Spool, SpoolError, SpooledEvent};
use crate::store::StoreError;

pub use batcher::PARALLEL_MIN;

/// What became of a submitted delivery.
#[derive(Debug, Clone)]
pub enum Ack {
    /// Committed to the database.
    Written(Outcome),
    /// The database would not take this one event (a bug of ours, most likely): the
    /// archive keeps it with the error, and it is answered as rejected.
    Rejected(Arc<StoreError>),
    /// The database is unreachable; the event is fsynced in the spool.
    Queued,
    /// The database is unreachable and the event could not be spooled.
    Unavailable(Unavailable),
}

/// What the answer and the archive say of an event the database would not take.
pub fn rejection_message(e: &StoreError) -> String {
    format!("the event could not be stored: {e}")
}

/// Why an event could be neither written nor spooled.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    #[error("{0}")]
    Database(Arc<StoreError>),
    #[error("the database did not answer the batch written before this one")]
    BatchBefore,
    #[error("the database schema is not migrated yet")]
    SchemaNotReady,
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Spool(Arc<SpoolError>),
}

#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// The most events in one transaction.
    pub batch_max: usize,
    /// The most transactions in flight at once.
    pub workers: usize,
    /// The longest a batch may take before the database counts as unreachable.
    pub timeout: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            batch_max: defaults::BATCH_MAX,
            workers: defaults::WRITERS,
            timeout: defaults::DB_TIMEOUT,
        }
    }
}

/// The handle requests submit through. Cloning is cheap; the workers stop once every clone
/// is dropped and the queue is empty.
#[derive(Clone)]
pub struct Ingestor {
    queue: mpsc::Sender<batcher::Job>,
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
        sink: Arc<dyn Sink>,
        settings: BatchSettings,
        spool: Option<Spool>,
        schema_ready: Arc<AtomicBool>,
        metrics: Arc<Metrics>,
    ) -> (Ingestor, Workers) {
        let workers = settings.workers.max(1);
        let batch_max = settings.batch_max.max(1);
        let (tx, rx) = mpsc::channel(batch_max * workers * 4);
        let queue = Arc::new(batcher::Queue::new(rx));
        let writer = worker::Writer {
            sink,
            timeout: settings.timeout,
            metrics,
        };
        let mut writers = JoinSet::new();
        for _ in 0..workers {
            writers.spawn(worker::run(writer.clone(), queue.clone(), batch_max));
        }
        let drainer = spool.clone().map(|s| {
            tokio::spawn(drain::run(
                writer.clone(),
                s,
                batch_max,
                schema_ready.clone(),
            ))
        });
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
            return Ack::Unavailable(Unavailable::SchemaNotReady);
        }
        // What the spool needs if the database turns out to be away: the body is
        // reference-counted, so this costs no copy of it.
        let fallback = self.spool.as_ref().map(|_| spooled(&delivery));
        let (reply, answer) = oneshot::channel();
        let job = batcher::Job { delivery, reply };
        let ack = match self.queue.send(job).await {
            Ok(()) => answer
                .await
                .unwrap_or(Ack::Unavailable(Unavailable::ShuttingDown)),
            Err(_) => Ack::Unavailable(Unavailable::ShuttingDown),
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
        received_at: d.received.last,
    }
}

async fn to_spool(spool: &Spool, event: SpooledEvent) -> Ack {
    match spool.append(&event).await {
        Ok(()) => Ack::Queued,
        Err(e) => {
            if !matches!(e, SpoolError::Full(_)) {
                tracing::error!(error = %e, dir = %spool.dir().display(), "cannot spool an event");
            }
            Ack::Unavailable(Unavailable::Spool(Arc::new(e)))
        }
    }
}

#[cfg(test)]
mod tests;
