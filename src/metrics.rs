//! Prometheus metrics (`GET /metrics`). One registry per running service, so that tests
//! running several services in one process each see their own counts.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::event::Kind;
use crate::spool::Depth;

/// The kinds written to tables of their own, whose silence is worth an alarm.
const WRITTEN_KINDS: [Kind; 3] = [Kind::Call, Kind::Sms, Kind::CallStatus];

pub struct Metrics {
    registry: Registry,
    events: IntCounterVec,
    refused: IntCounterVec,
    warnings: IntCounterVec,
    request_seconds: Histogram,
    db_write_seconds: Histogram,
    batch_size: Histogram,
    spool_drained: IntCounter,
    sync_records: IntCounterVec,
    sync_last_success: IntGaugeVec,
    spool: IntGaugeVec,
    last_written_at: IntGaugeVec,
    seconds_since_written: IntGaugeVec,
    last_written_micros: [AtomicI64; 3],
}

fn seconds_buckets() -> Vec<f64> {
    vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
}

/// Registers a metric built from constant, valid options.
fn registered<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<T>,
) -> T {
    let metric = metric.expect("valid metric");
    (registry.register(Box::new(metric.clone()))).expect("each metric registered once");
    metric
}

fn counters(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(r, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauges(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(r, IntGaugeVec::new(Opts::new(name, help), labels))
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    registered(
        r,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)),
    )
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let metrics = Metrics {
            events: counters(r, "callhippo_events_total", "Webhook deliveries by kind and answer status word; outcome=suppressed also counts events about an erased identifier dropped from the spool and reconciliation.", &["kind", "outcome"]),
            refused: counters(r, "callhippo_requests_refused_total", "Requests refused before reading (401 no or wrong token, 413 too large, 400 unreadable body, 404 unknown path, 405 wrong method), by status code.", &["code"]),
            warnings: counters(r, "callhippo_parse_warnings_total", "Payload fields that could not be read (the row was kept with the column NULL), by field.", &["field"]),
            request_seconds: histogram(r, "callhippo_request_duration_seconds", "Time to answer a request to the webhook path, or one refused before its body was read, from the request to the answer.", seconds_buckets()),
            db_write_seconds: histogram(r, "callhippo_db_write_duration_seconds", "Time to write one batch to PostgreSQL (one transaction), retries included.", seconds_buckets()),
            batch_size: histogram(r, "callhippo_db_batch_size", "Events written per transaction.", vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]),
            spool_drained: registered(r, IntCounter::new("callhippo_spool_drained_total", "Spooled events written to the database after an outage.")),
            sync_records: counters(r, "callhippo_sync_records_total", "Records read from CallHippo's API by reconciliation, by kind and result (inserted: missed by the webhooks, filled, unchanged, rejected, suppressed: about an erased identifier).", &["kind", "result"]),
            sync_last_success: gauges(r, "callhippo_sync_last_success_timestamp_seconds", "When a reconciliation with CallHippo's API last succeeded (Unix time); 0 before the first.", &["kind"]),
            spool: gauges(r, "callhippo_spool_depth", "What waits in the spool for the database: unit=events or unit=bytes.", &["unit"]),
            last_written_at: gauges(r, "callhippo_last_event_written_timestamp_seconds", "When an event of this kind was last written to its table (Unix time); 0 before the first.", &["kind"]),
            seconds_since_written: gauges(r, "callhippo_seconds_since_last_event_written", "Seconds since an event of this kind was last written by this process (-1 before the first): alert when a webhook goes silent.", &["kind"]),
            last_written_micros: Default::default(),
            registry,
        };
        metrics
            .sync_last_success
            .with_label_values(&["call"])
            .set(0);
        metrics
    }

    /// One answered webhook delivery.
    pub fn event(&self, kind: Kind, outcome: &str, elapsed: Duration) {
        self.events
            .with_label_values(&[kind.as_str(), outcome])
            .inc();
        self.request_seconds.observe(elapsed.as_secs_f64());
    }

    /// A request refused before its body was read.
    pub fn refused(&self, code: u16, elapsed: Duration) {
        self.refused.with_label_values(&[&code.to_string()]).inc();
        self.request_seconds.observe(elapsed.as_secs_f64());
    }

    /// A field the reader could not read. Only the vendor's field names become labels:
    /// anything else (a hostile payload's own keys) is counted as `other`.
    pub fn parse_warning(&self, field: &str) {
        let label = if crate::payload::KNOWN_FIELDS.contains(&field) {
            field
        } else {
            "other"
        };
        self.warnings.with_label_values(&[label]).inc();
    }

    pub fn batch_written(&self, size: usize, elapsed: Duration) {
        self.batch_size.observe(size as f64);
        self.db_write_seconds.observe(elapsed.as_secs_f64());
    }

    /// Records what a reconciliation page added, by result.
    pub fn synced(&self, kind: Kind, results: &[(&str, u32)]) {
        for &(result, n) in results {
            self.sync_records
                .with_label_values(&[kind.as_str(), result])
                .inc_by(u64::from(n));
        }
    }

    /// Events of `kind` dropped for being about an erased identifier, whatever brought
    /// them (the webhook counts its own answers with [`Metrics::event`]).
    pub fn suppressed(&self, kind: Kind, n: u64) {
        (self
            .events
            .with_label_values(&[kind.as_str(), "suppressed"]))
        .inc_by(n);
    }

    /// A reconciliation of `kind` succeeded now.
    pub fn sync_succeeded(&self, kind: &str) {
        (self.sync_last_success.with_label_values(&[kind])).set(chrono::Utc::now().timestamp());
    }

    pub fn written(&self, kind: Kind, drained: bool) {
        if let Some(i) = WRITTEN_KINDS.iter().position(|k| *k == kind) {
            self.last_written_micros[i]
                .store(chrono::Utc::now().timestamp_micros(), Ordering::Relaxed);
        }
        if drained {
            self.spool_drained.inc();
        }
    }

    /// When this process last wrote an event of `kind`; `None` before the first.
    pub fn last_written(&self, kind: Kind) -> Option<chrono::DateTime<chrono::Utc>> {
        let i = WRITTEN_KINDS.iter().position(|k| *k == kind)?;
        match self.last_written_micros[i].load(Ordering::Relaxed) {
            0 => None,
            at => chrono::DateTime::from_timestamp_micros(at),
        }
    }

    /// Deliveries of `kind` this process answered with `outcome` since it started.
    pub fn answered(&self, kind: Kind, outcome: &str) -> u64 {
        (self.events.with_label_values(&[kind.as_str(), outcome])).get()
    }

    /// The text exposition, with the gauges that are read at scrape time brought up to date.
    pub fn render(&self, spool: Depth) -> String {
        self.spool
            .with_label_values(&["events"])
            .set(spool.events as i64);
        self.spool
            .with_label_values(&["bytes"])
            .set(spool.bytes as i64);
        let now = chrono::Utc::now().timestamp_micros();
        for (i, kind) in WRITTEN_KINDS.iter().enumerate() {
            let at = self.last_written_micros[i].load(Ordering::Relaxed);
            self.last_written_at
                .with_label_values(&[kind.as_str()])
                .set(at / 1_000_000);
            let since = if at == 0 { -1 } else { (now - at) / 1_000_000 };
            self.seconds_since_written
                .with_label_values(&[kind.as_str()])
                .set(since);
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding does not fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
