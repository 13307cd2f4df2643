//! A writer: takes batches from the queue, hands them to the sink within the time allowed,
//! and answers each request with what became of its event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::batcher::Queue;
use super::{Ack, Unavailable};
use crate::delivery::{Delivery, Outcome, Source};
use crate::metrics::Metrics;
use crate::sink::Sink;
use crate::store::{retry_conflicts, StoreError};

/// What writing a batch needs.
#[derive(Clone)]
pub(super) struct Writer {
    pub sink: Arc<dyn Sink>,
    /// The longest a batch may take before the database counts as unreachable.
    pub timeout: Duration,
    pub metrics: Arc<Metrics>,
}

pub(super) async fn run(w: Writer, queue: Arc<Queue>, batch_max: usize) {
    let mut jobs = Vec::with_capacity(batch_max);
    while let Some(writing) = queue.next_batch(&mut jobs, batch_max).await {
        let (deliveries, replies): (Vec<Delivery>, Vec<oneshot::Sender<Ack>>) =
            jobs.drain(..).map(|j| (j.delivery, j.reply)).unzip();
        // When a batch last found the database unavailable: the next batch, if it was being
        // gathered by then (it waited behind that one), is answered so at once, and spooled,
        // rather than waiting for the database in turn.
        let just_failed = (queue.unavailable_at.lock().expect("never poisoned").take())
            .is_some_and(|at| at > writing.since);
        let acks = if just_failed {
            tracing::warn!(
                size = deliveries.len(),
                "database unavailable for the batch before: spooling this one without trying"
            );
            vec![Ack::Unavailable(Unavailable::BatchBefore); deliveries.len()]
        } else {
            let acks = w.write_timed(&deliveries).await;
            if acks.iter().any(|a| matches!(a, Ack::Unavailable(_))) {
                *queue.unavailable_at.lock().expect("never poisoned") = Some(Instant::now());
            }
            acks
        };
        drop(writing);
        w.count_written(&deliveries, &acks);
        for (reply, ack) in replies.into_iter().zip(acks) {
            let _ = reply.send(ack); // the client may have gone: the event is written anyway
        }
    }
}

impl Writer {
    /// [`Writer::write`], with the batch's size and time recorded.
    pub async fn write_timed(&self, batch: &[Delivery]) -> Vec<Ack> {
        let started = Instant::now();
        let acks = self.write(batch).await;
        self.metrics.batch_written(batch.len(), started.elapsed());
        tracing::debug!(
            size = batch.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "batch written"
        );
        acks
    }

    /// Counts the events that reached their table.
    pub fn count_written(&self, batch: &[Delivery], acks: &[Ack]) {
        for (d, ack) in batch.iter().zip(acks) {
            match ack {
                Ack::Written(Outcome::Stored | Outcome::Updated | Outcome::Duplicate) => {
                    (self.metrics).written(d.decoded.kind(), d.source == Source::Spool)
                }
                // The webhook counts its own answers.
                Ack::Written(Outcome::Suppressed) if d.source == Source::Spool => {
                    self.metrics.suppressed(d.decoded.kind(), 1)
                }
                _ => {}
            }
        }
    }

    /// Writes a batch; when the database refuses it for a reason of the data, writes its
    /// events one by one, so that one bad event fails alone and is kept as rejected.
    async fn write(&self, batch: &[Delivery]) -> Vec<Ack> {
        match self.sink_write(batch).await {
            Ok(outcomes) => outcomes.into_iter().map(Ack::Written).collect(),
            Err(e) if e.is_unavailable() => {
                let why = Unavailable::Database(Arc::new(e));
                vec![Ack::Unavailable(why); batch.len()]
            }
            Err(e) if batch.len() > 1 => {
                tracing::warn!(error = %e, size = batch.len(), "batch failed; writing its events one by one");
                let mut acks = Vec::with_capacity(batch.len());
                for d in batch {
                    acks.extend(Box::pin(self.write(std::slice::from_ref(d))).await);
                }
                acks
            }
            Err(e) => {
                tracing::error!(error = %e, "the database refused an event; keeping it in raw_events");
                vec![self.keep_rejected(&batch[0], e).await]
            }
        }
    }

    /// The sink's write, each try bounded in time, conflicts with a concurrent writer tried
    /// again. `statement_timeout` does not help against a database that does not answer at
    /// all (a hung host, a cut network). If the commit did happen, the spooled copy will be
    /// a duplicate.
    async fn sink_write(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, StoreError> {
        self.retrying_conflicts(|| self.sink.write(batch)).await
    }

    async fn retrying_conflicts<T, F>(&self, attempt: impl Fn() -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        retry_conflicts(|| async {
            tokio::time::timeout(self.timeout, attempt())
                .await
                .unwrap_or(Err(StoreError::TimedOut(self.timeout)))
        })
        .await
    }

    /// Keeps an event the database would not take in the archive, with the error.
    async fn keep_rejected(&self, delivery: &Delivery, e: StoreError) -> Ack {
        let message = super::rejection_message(&e);
        let kept = (self.retrying_conflicts(|| self.sink.keep_rejected(delivery, &message))).await;
        match kept {
            Ok(()) => Ack::Rejected(Arc::new(e)),
            Err(e2) if e2.is_unavailable() => Ack::Unavailable(Unavailable::Database(Arc::new(e2))),
            Err(e2) => {
                tracing::error!(error = %e2, "could not keep the rejected event in raw_events either");
                Ack::Rejected(Arc::new(e))
            }
        }
    }
}
