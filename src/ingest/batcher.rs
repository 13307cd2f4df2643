//! The queue the writers share, and the rule that makes batches: a free writer takes the
//! first waiting event and whatever else is already waiting (up to `batch_max`). If no other
//! batch is being written, it writes them at once: at low load an event is written alone and
//! without delay. If one is, it gathers what arrives until that batch is written, then
//! writes all it gathered; it starts alongside only once [`PARALLEL_MIN`] events wait. So
//! batches grow by themselves with the load, and transactions run side by side only when the
//! queue is deep. There is no timer to wait for.
//!
//! Why: a batch's fixed cost (a round trip, starting the statement, the commit's WAL flush)
//! is paid once however many events it holds, while concurrent batches contend for the same
//! index pages, WAL flushes and, on a small machine, CPU (figures in bench/HISTORY.md).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, Mutex, Notify};

use super::Ack;
use crate::delivery::Delivery;

/// How many events must wait before a batch is written beside one already being written
/// (capped at `batch_max`). Below it, they wait for that batch and go together after it.
pub const PARALLEL_MIN: usize = 64;

/// A delivery waiting to be written, and where its answer goes.
pub(super) struct Job {
    pub delivery: Delivery,
    pub reply: oneshot::Sender<Ack>,
}

/// The queue the workers share, and how many batches are being written.
pub(super) struct Queue {
    rx: Mutex<mpsc::Receiver<Job>>,
    writing: AtomicUsize,
    /// Signalled each time a batch has been written.
    written: Notify,
    /// When a batch last found the database unavailable. The next batch, if it was being
    /// gathered by then (it waited behind that one), is answered so at once, and spooled,
    /// rather than waiting for the database in turn.
    pub unavailable_at: std::sync::Mutex<Option<Instant>>,
}

/// A batch being written; counted until dropped, even if writing it panics.
pub(super) struct Writing<'a> {
    queue: &'a Queue,
    /// When its first event was taken from the queue.
    pub since: Instant,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.queue.writing.fetch_sub(1, Ordering::AcqRel);
        self.queue.written.notify_waiters();
    }
}

impl Queue {
    pub(super) fn new(rx: mpsc::Receiver<Job>) -> Queue {
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
    pub(super) async fn next_batch(
        &self,
        jobs: &mut Vec<Job>,
        batch_max: usize,
    ) -> Option<Writing<'_>> {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn queue() -> (mpsc::Sender<Job>, Arc<Queue>) {
        let (tx, rx) = mpsc::channel(1024);
        (tx, Arc::new(Queue::new(rx)))
    }

    async fn send(tx: &mpsc::Sender<Job>, n: usize) {
        for _ in 0..n {
            let delivery = crate::payload::read_delivery(
                bytes::Bytes::from_static(b"{}"),
                Some("application/json".into()),
                chrono::Utc::now(),
                crate::delivery::Source::Webhook,
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
