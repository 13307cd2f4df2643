//! The ingest path against a scripted sink: no database.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::delivery::Source;
use crate::sink::{MemorySink, Script};

fn call(n: usize) -> Delivery {
    let body = bytes::Bytes::from(format!(r#"{{"callSid":"CA{n}","activityType":"call"}}"#));
    crate::payload::read_delivery(body, None, chrono::Utc::now(), Source::Webhook)
}

fn start(sink: &MemorySink, spool: Option<Spool>, timeout: Duration) -> (Ingestor, Workers) {
    let settings = BatchSettings {
        timeout,
        ..BatchSettings::default()
    };
    Ingestor::start(
        Arc::new(sink.clone()),
        settings,
        spool,
        Arc::new(AtomicBool::new(true)),
        Arc::new(Metrics::new()),
    )
}

fn temp_spool_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("chi-ingest-{}", uuid::Uuid::new_v4().simple()))
}

/// A database that never answers: each batch waits `timeout`. The batch gathered while the
/// first one waited is answered at once, not after another `timeout` (without a spool:
/// `Unavailable`, i.e. 503). On tokio's paused clock, which moves to the next timer whenever
/// every task waits: the times below are exact.
#[tokio::test(start_paused = true)]
async fn the_batch_behind_one_the_database_did_not_answer_does_not_wait_again() {
    let timeout = Duration::from_millis(1500);
    let sink = MemorySink::scripted([Script::Hang, Script::Hang]);
    let (ingestor, _workers) = start(&sink, None, timeout);
    let started = tokio::time::Instant::now();
    let submit = |n: usize| {
        let ingestor = ingestor.clone();
        tokio::spawn(async move { (ingestor.submit(call(n)).await, started.elapsed()) })
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
        assert!(
            matches!(ack, Ack::Unavailable(Unavailable::BatchBefore)),
            "{ack:?}"
        );
        assert_eq!(done, first_done, "answered with the first batch");
    }
    assert_eq!(
        sink.batches(),
        [1],
        "the second batch never reached the sink"
    );
}

/// A batch the database refuses is written again event by event: the good ones are
/// written, the bad one is kept as rejected, and each request hears its own fate.
#[tokio::test]
async fn a_refused_batch_is_split_and_only_the_bad_event_is_rejected() {
    // The whole batch, then the three alone: the second refused again.
    let sink = MemorySink::scripted([Script::Reject, Script::Write, Script::Reject]);
    let batch: Vec<Delivery> = (1..=3).map(call).collect();
    let writer = worker::Writer {
        sink: Arc::new(sink.clone()),
        timeout: Duration::from_secs(5),
        metrics: Arc::new(Metrics::new()),
    };
    let acks = writer.write_timed(&batch).await;
    assert!(matches!(acks[0], Ack::Written(Outcome::Stored)), "{acks:?}");
    assert!(matches!(acks[1], Ack::Rejected(_)), "{acks:?}");
    assert!(matches!(acks[2], Ack::Written(Outcome::Stored)), "{acks:?}");
    assert_eq!(sink.batches(), [3, 1, 1, 1]);
    let rejected = sink.rejected();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].0.body, batch[1].body);
    assert!(
        rejected[0].1.starts_with("the event could not be stored: "),
        "{rejected:?}"
    );
}

/// The database unavailable for three batches, then fine: the events are spooled (202),
/// and the drainer writes every one of them once it answers, in order, as from the spool.
#[tokio::test]
async fn events_spooled_while_the_sink_is_unavailable_are_drained_once_it_answers() {
    let dir = temp_spool_dir();
    let spool = Spool::open(&dir, 1 << 20).unwrap();
    let sink = MemorySink::scripted([Script::Unavailable; 3]);
    let (ingestor, workers) = start(&sink, Some(spool.clone()), Duration::from_secs(5));
    let mut acks = Vec::new();
    for n in 0..5 {
        acks.push(ingestor.submit(call(n)).await);
    }
    assert!(acks.iter().all(|a| matches!(a, Ack::Queued)), "{acks:?}");
    for _ in 0..200 {
        if spool.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(spool.is_empty(), "{:?}", spool.depth());
    let written = sink.written();
    let sids: Vec<String> = written
        .iter()
        .map(|d| String::from_utf8_lossy(&d.body).into_owned())
        .collect();
    let expected: Vec<String> = (0..5)
        .map(|n| String::from_utf8_lossy(&call(n).body).into_owned())
        .collect();
    assert_eq!(sids, expected);
    assert!(written.iter().all(|d| d.source == Source::Spool));
    assert!(sink.batches().len() >= 4, "{:?}", sink.batches());
    drop(ingestor);
    workers.join().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A conflict with a concurrent writer is tried again at once, each try within the time
/// allowed; the request hears only the final outcome.
#[tokio::test(start_paused = true)]
async fn conflicts_are_tried_again_each_within_the_time_allowed() {
    let sink = MemorySink::scripted([Script::Conflict, Script::Conflict]);
    let writer = worker::Writer {
        sink: Arc::new(sink.clone()),
        timeout: Duration::from_secs(1),
        metrics: Arc::new(Metrics::new()),
    };
    let acks = writer.write_timed(&[call(1)]).await;
    assert!(
        matches!(acks[..], [Ack::Written(Outcome::Stored)]),
        "{acks:?}"
    );
    assert_eq!(sink.batches(), [1, 1, 1]);

    // A try that never answers is a database away, not a conflict: no more tries.
    let sink = MemorySink::scripted([Script::Hang]);
    let writer = worker::Writer {
        sink: Arc::new(sink.clone()),
        ..writer
    };
    let started = tokio::time::Instant::now();
    let acks = writer.write_timed(&[call(1)]).await;
    assert!(matches!(acks[..], [Ack::Unavailable(_)]), "{acks:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(sink.batches(), [1]);
}
