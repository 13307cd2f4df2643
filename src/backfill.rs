//! `callhippo-ingest backfill`: reads CallHippo's call logs for a range of days, page after
//! page, and writes them through the sink with the API's merge rule (calls the webhooks
//! missed are inserted, the others only gain what they lack). Each run is a `sync_runs` row,
//! its figures kept up to date page by page; a failed run keeps every row it wrote, and the
//! next run picks up again (writing is idempotent).

use crate::store;
use chrono::{NaiveDate, Utc};
use chrono_tz::Tz;
use sqlx::PgPool;

use crate::callhippo_api::{ApiClient, ApiError};
use crate::delivery::Outcome;
use crate::payload::api::call_delivery;
use crate::sink::Sink;
use crate::store::{retry_conflicts, PgSink, StoreError};

/// Records per page: CallHippo's own page size.
pub const PAGE_SIZE: usize = 100;

/// The most pages a run reads: a million calls.
const MAX_PAGES: u32 = 10_000;

/// What to read.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// The account's time zone: the API's days and clock times are in it.
    pub zone: Tz,
}

/// What started the run, as `sync_runs.trigger` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Backfill,
    Reconcile,
}

/// How long after a call ends its webhook is still expected: reconciliation leaves such a
/// call to its webhook, or to its next run, rather than take it for one the webhooks missed.
pub const WEBHOOK_GRACE: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

impl Trigger {
    /// Whether this run leaves a record to a later one: reconciliation, for a call that ended
    /// (or, without an end, started) within [`WEBHOOK_GRACE`].
    fn leaves_for_later(self, d: &crate::delivery::Delivery, now: chrono::DateTime<Utc>) -> bool {
        use crate::event::{Reading, Record};
        let Reading::Record(Record::Call(call)) = &d.decoded.reading else {
            return false;
        };
        let last_moment = call.ended_at.or(call.started_at);
        self == Trigger::Reconcile && last_moment.is_some_and(|t| t > now - WEBHOOK_GRACE)
    }

    fn as_str(self) -> &'static str {
        match self {
            Trigger::Backfill => "backfill",
            Trigger::Reconcile => "reconcile",
        }
    }
}

/// What a run did, as its `sync_runs` row says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunFigures {
    pub pages: u32,
    pub records: u32,
    /// Calls the webhooks had missed.
    pub inserted: u32,
    /// Calls whose empty columns were filled.
    pub filled: u32,
    pub unchanged: u32,
    /// Records without a readable key (kept in raw_events with the error).
    pub rejected: u32,
    /// Calls too recent for reconciliation: their webhook may still come (not written).
    pub deferred: u32,
    /// Records about an erased identifier (`forget`): not written.
    pub suppressed: u32,
}

impl std::fmt::Display for RunFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pages {}, records {}, inserted {} (missed by webhooks), filled {}, unchanged {}, rejected {}",
            self.pages, self.records, self.inserted, self.filled, self.unchanged, self.rejected
        )?;
        if self.suppressed > 0 {
            write!(
                f,
                ", suppressed {} (about erased identifiers)",
                self.suppressed
            )?;
        }
        if self.deferred > 0 {
            write!(
                f,
                ", left for later {} (ended less than 15 min ago)",
                self.deferred
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("writing the records: {0}")]
    Store(#[from] StoreError),
    #[error("sync_runs: {0}")]
    Record(#[from] sqlx::Error),
}

/// Reads the call logs of `range`, writing each page as it comes; `progress` hears the
/// figures after each page.
pub async fn sync_calls(
    client: &ApiClient,
    sink: &PgSink,
    range: Range,
    trigger: Trigger,
    mut progress: impl FnMut(&RunFigures),
) -> Result<RunFigures, RunError> {
    let pool = sink.pool();
    let run_id = start_run(pool, "call", trigger, range).await?;
    let mut figures = RunFigures::default();
    let result = async {
        loop {
            let skip = figures.records as usize;
            let page = client
                .call_logs(range.from, range.to, skip, PAGE_SIZE)
                .await?;
            let now = Utc::now();
            let (batch, recent): (Vec<_>, Vec<_>) = (page.records.iter())
                .map(|r| call_delivery(r, range.zone, now))
                .partition(|d| !trigger.leaves_for_later(d, now));
            figures.deferred += recent.len() as u32;
            if !batch.is_empty() {
                count(&mut figures, &retry_conflicts(|| sink.write(&batch)).await?);
            }
            figures.pages += 1;
            figures.records += page.records.len() as u32;
            update_run(pool, run_id, &figures).await?;
            progress(&figures);
            if !page.more_after(PAGE_SIZE) {
                return Ok::<_, RunError>(());
            }
            // An API that ignored `skip` would list the same page for ever.
            if figures.pages >= MAX_PAGES {
                return Err(RunError::Api(ApiError::Refused(format!(
                    "more than {MAX_PAGES} pages for {}..{}: the API seems to ignore skip; \
                     read shorter ranges",
                    range.from, range.to
                ))));
            }
        }
    }
    .await;
    // The run's own error matters more than one of recording it.
    if let Err(e) = finish_run(pool, run_id, &figures, result.as_ref().err()).await {
        tracing::error!(error = %e, run_id, "sync_runs: could not record the end of the run");
        result?;
        return Err(e.into());
    }
    result.map(|()| figures)
}

fn count(figures: &mut RunFigures, outcomes: &[Outcome]) {
    for outcome in outcomes {
        match outcome {
            Outcome::Stored => figures.inserted += 1,
            Outcome::Updated => figures.filled += 1,
            Outcome::Duplicate | Outcome::Test | Outcome::Archived => figures.unchanged += 1,
            Outcome::Rejected => figures.rejected += 1,
            Outcome::Suppressed => figures.suppressed += 1,
        }
    }
}

async fn start_run(
    pool: &PgPool,
    kind: &str,
    trigger: Trigger,
    range: Range,
) -> Result<i64, sqlx::Error> {
    let mut work = store::Work::of(pool).await?;
    let id = store::query_scalar(
        "INSERT INTO sync_runs (kind, trigger, range_from, range_to) VALUES ($1, $2, $3, $4)
         RETURNING id",
    )
    .bind(kind)
    .bind(trigger.as_str())
    .bind(range.from)
    .bind(range.to)
    .fetch_one(&mut *work)
    .await?;
    work.done().await?;
    Ok(id)
}

async fn update_run(pool: &PgPool, id: i64, f: &RunFigures) -> Result<(), sqlx::Error> {
    let mut work = store::Work::of(pool).await?;
    store::query(
        "UPDATE sync_runs SET pages = $2, records = $3, inserted = $4, filled = $5,
                unchanged = $6, rejected = $7 WHERE id = $1",
    )
    .bind(id)
    .bind(f.pages as i32)
    .bind(f.records as i32)
    .bind(f.inserted as i32)
    .bind(f.filled as i32)
    .bind(f.unchanged as i32)
    .bind(f.rejected as i32)
    .execute(&mut *work)
    .await?;
    work.done().await
}

async fn finish_run(
    pool: &PgPool,
    id: i64,
    f: &RunFigures,
    error: Option<&RunError>,
) -> Result<(), sqlx::Error> {
    update_run(pool, id, f).await?;
    let mut work = store::Work::of(pool).await?;
    store::query("UPDATE sync_runs SET finished_at = now(), status = $2, error = $3 WHERE id = $1")
        .bind(id)
        .bind(if error.is_some() {
            "failed"
        } else {
            "succeeded"
        })
        .bind(error.map(|e| e.to_string()))
        .execute(&mut *work)
        .await?;
    work.done().await
}

/// Progress of a run: a bar that turns on a terminal, one line a page elsewhere.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    label: String,
}

impl Progress {
    pub fn new(label: &str) -> Progress {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_message(label.to_owned());
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Progress {
            bar,
            label: label.to_owned(),
        }
    }

    pub fn page(&self, figures: &RunFigures) {
        match &self.bar {
            Some(bar) => bar.set_message(format!("{}: {figures}", self.label)),
            None => eprintln!("{}: {figures}", self.label),
        }
    }

    pub fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
