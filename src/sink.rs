//! The seam between what to write and how it is written: the batcher, the spool's drainer
//! and `replay` hand batches of deliveries to a [`Sink`]; PostgreSQL's is
//! [`crate::store::PgSink`], and [`MemorySink`] stands in for it in tests.
//!
//! The guarantee a sink gives: when [`Sink::write`] returns `Ok`, every delivery of the batch
//! is committed (archived, and written to its table), and the outcomes say, in batch order,
//! what each did. On `Err`, nothing of the batch may be assumed written, though some may
//! have been (a commit whose answer was lost): writing it again must be harmless, and is,
//! since every write is idempotent.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;

use crate::delivery::{Delivery, Outcome};
use crate::store::StoreError;

pub trait Sink: Send + Sync + 'static {
    /// Archives and writes a batch of deliveries as they arrived (live, from the spool).
    fn write<'a>(
        &'a self,
        batch: &'a [Delivery],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, StoreError>>;

    /// Writes the rows of deliveries already archived (`replay`), and brings their archived
    /// kind and error up to date.
    fn rederive<'a>(
        &'a self,
        batch: &'a [Delivery],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, StoreError>>;

    /// Archives one delivery the sink would not take, as rejected with `error`, without
    /// writing it to any table.
    fn keep_rejected<'a>(
        &'a self,
        delivery: &'a Delivery,
        error: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// What a [`MemorySink`] does with the next batch it is given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Script {
    /// Writes it: every delivery's outcome is what its reading says (`stored` for records).
    Write,
    /// Fails as an unreachable database does.
    Unavailable,
    /// Fails as a database refusing the batch does.
    Reject,
    /// Fails as a conflict with a concurrent writer does (a deadlock).
    Conflict,
    /// Never answers (the caller's timeout decides).
    Hang,
}

/// A sink in memory, for tests: it follows a script, batch after batch ("unavailable for 3
/// batches, then fine"), and remembers what it wrote.
#[derive(Default, Clone)]
pub struct MemorySink {
    inner: Arc<Mutex<MemoryState>>,
}

#[derive(Default)]
struct MemoryState {
    script: VecDeque<Script>,
    written: Vec<Delivery>,
    rejected: Vec<(Delivery, String)>,
    batches: Vec<usize>,
}

impl MemorySink {
    /// A sink that follows `script`, then writes every batch.
    pub fn scripted(script: impl IntoIterator<Item = Script>) -> MemorySink {
        let sink = MemorySink::default();
        sink.inner.lock().expect("never poisoned").script = script.into_iter().collect();
        sink
    }

    /// Every delivery written, in order.
    pub fn written(&self) -> Vec<Delivery> {
        self.inner.lock().expect("never poisoned").written.clone()
    }

    /// Every delivery kept as rejected, with its error.
    pub fn rejected(&self) -> Vec<(Delivery, String)> {
        self.inner.lock().expect("never poisoned").rejected.clone()
    }

    /// The size of every batch it was given, written or not.
    pub fn batches(&self) -> Vec<usize> {
        self.inner.lock().expect("never poisoned").batches.clone()
    }

    async fn take(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, StoreError> {
        let step = {
            let mut state = self.inner.lock().expect("never poisoned");
            state.batches.push(batch.len());
            state.script.pop_front().unwrap_or(Script::Write)
        };
        match step {
            Script::Write => {
                let mut state = self.inner.lock().expect("never poisoned");
                state.written.extend_from_slice(batch);
                Ok((batch.iter())
                    .map(|d| Outcome::of_new(&d.decoded.reading))
                    .collect())
            }
            Script::Unavailable => Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut)),
            Script::Reject => Err(StoreError::Rejected(sqlx::Error::Protocol(
                "refused by the script".into(),
            ))),
            Script::Conflict => Err(StoreError::Conflict(sqlx::Error::Protocol(
                "a conflict of the script".into(),
            ))),
            Script::Hang => std::future::pending().await,
        }
    }
}

impl Sink for MemorySink {
    fn write<'a>(
        &'a self,
        batch: &'a [Delivery],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, StoreError>> {
        Box::pin(self.take(batch))
    }

    fn rederive<'a>(
        &'a self,
        batch: &'a [Delivery],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, StoreError>> {
        Box::pin(self.take(batch))
    }

    fn keep_rejected<'a>(
        &'a self,
        delivery: &'a Delivery,
        error: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut state = self.inner.lock().expect("never poisoned");
            state.rejected.push((delivery.clone(), error.to_owned()));
            Ok(())
        })
    }
}
