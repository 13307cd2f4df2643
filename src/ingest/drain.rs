//! The spool's drainer: writes spooled events to the sink, oldest first, as soon as the
//! database answers, and backs off while it does not.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::worker::Writer;
use super::Ack;
use crate::delivery::{Delivery, Source};
use crate::retry::{retry, WAIT_FOR_DATABASE};
use crate::spool::Spool;

/// How often an empty spool (or one waiting for the schema) is looked at.
const IDLE: Duration = Duration::from_millis(100);
/// After a spool folder error (listing, reading): the wait before looking again.
const AFTER_SPOOL_ERROR: Duration = Duration::from_secs(5);

pub(super) async fn run(w: Writer, spool: Spool, batch_max: usize, schema_ready: Arc<AtomicBool>) {
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
                tokio::time::sleep(AFTER_SPOOL_ERROR).await;
                continue;
            }
        };
        for segment in segments {
            if !drain_segment(&w, &spool, &segment, batch_max).await {
                tokio::time::sleep(AFTER_SPOOL_ERROR).await;
                break;
            }
        }
    }
}

/// Writes one closed segment's events, then removes it; `false` when it could not be read.
async fn drain_segment(
    w: &Writer,
    spool: &Spool,
    segment: &std::path::Path,
    batch_max: usize,
) -> bool {
    let events = match spool.read_segment(segment) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, segment = %segment.display(), "spool: cannot read a segment");
            return false;
        }
    };
    for chunk in events.chunks(batch_max) {
        let deliveries: Vec<Delivery> = (chunk.iter())
            .map(|(_, e)| {
                let (body, ct) = (e.body.clone(), e.content_type.clone());
                crate::payload::read_delivery(body, ct, e.received_at, Source::Spool)
            })
            .collect();
        let written = retry(
            WAIT_FOR_DATABASE,
            || async {
                let acks = w.write_timed(&deliveries).await;
                match acks.iter().find_map(unavailable) {
                    Some(why) => Err(why),
                    None => Ok(acks),
                }
            },
            |_| true,
            |why, wait| {
                tracing::warn!(error = %why, waiting = spool.depth().events, retry_in_ms = wait.as_millis() as u64,
                    "spool: database still unavailable")
            },
        )
        .await;
        let acks = written.expect("retried for ever");
        w.count_written(&deliveries, &acks);
        let (end, _) = chunk.last().expect("chunks are not empty");
        spool.mark_written(segment, *end, chunk.len() as u64);
        tracing::info!(
            written = chunk.len(),
            waiting = spool.depth().events,
            "spool: events written to the database"
        );
    }
    if let Err(e) = spool.remove_segment(segment) {
        tracing::error!(error = %e, segment = %segment.display(), "spool: cannot remove a written segment");
    }
    true
}

fn unavailable(ack: &Ack) -> Option<super::Unavailable> {
    match ack {
        Ack::Unavailable(why) => Some(why.clone()),
        _ => None,
    }
}
