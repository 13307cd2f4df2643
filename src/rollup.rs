//! Keeping the summary tables behind the statistics views up to date: every few seconds in
//! `serve` (one replica at a time), at once with `callhippo-ingest rollup`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::watch;

use crate::store::rollup::{catch_up, catch_up_until, CatchUp, ReportSettings, RollupFigures};

/// How long `rollup` waits for another process that is rolling up.
const WAIT_FOR_OTHER: Duration = Duration::from_secs(600);

/// `callhippo-ingest rollup`: catches up now, waiting for a replica that is at it. Returns
/// the line to print.
pub async fn rollup_now(pool: &PgPool, settings: &ReportSettings) -> anyhow::Result<String> {
    let started = Instant::now();
    let mut said = false;
    loop {
        if let Some(figures) = catch_up(pool, settings).await? {
            return Ok(describe(&figures, settings, started.elapsed()));
        }
        if started.elapsed() > WAIT_FOR_OTHER {
            anyhow::bail!(
                "another process has been bringing the summaries up to date for {} s; try again later",
                WAIT_FOR_OTHER.as_secs()
            );
        }
        if !said {
            eprintln!(
                "rollup: another process is bringing the summaries up to date; waiting for it"
            );
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn describe(f: &RollupFigures, settings: &ReportSettings, took: Duration) -> String {
    let what = if f.rebuilt {
        "rebuilt"
    } else if f.marks == 0 {
        "already up to date"
    } else {
        "brought up to date"
    };
    format!(
        "rollup: {what} (days in {}): {} days recomputed from {} changed hours in {:.1} s",
        settings.zone,
        f.days,
        f.marks,
        took.as_secs_f64()
    )
}

/// The longest `serve` waits between two catch-ups, however long the last one took: the
/// views stay within a minute of the base tables.
const LONGEST_WAIT: Duration = Duration::from_secs(45);

/// How long to wait after a catch-up that took `took`: at least `every`, and ten times what
/// it took, so that keeping the summaries costs the database at most a tenth of its time
/// (a catch-up recomputes whole days: on a day of many calls it takes longer).
pub fn wait_after(took: Duration, every: Duration) -> Duration {
    (took * 10).clamp(every, LONGEST_WAIT.max(every))
}

/// `serve`'s maintainer: a task that catches up every `every` (longer when catching up is
/// slow, see [`wait_after`]), once the schema is migrated, until [`Maintainer::stop`].
pub struct Maintainer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Maintainer {
    pub fn start(
        pool: PgPool,
        settings: ReportSettings,
        every: Duration,
        schema_ready: Arc<AtomicBool>,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(pool, settings, every, schema_ready, stopped));
        Maintainer { stop, task }
    }

    /// Stops the task. A catch-up under way is cancelled in PostgreSQL (it would otherwise
    /// run there to its end, and hold the lock that `rollup` and the other replicas wait
    /// for, after this process has gone); returns once it has ended.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn run(
    pool: PgPool,
    settings: ReportSettings,
    every: Duration,
    schema_ready: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let mut took = Duration::ZERO;
        if schema_ready.load(Ordering::Acquire) {
            let started = Instant::now();
            match catch_up_until(&pool, &settings, &mut stop).await {
                Ok(CatchUp::Done(f)) if f.rebuilt => tracing::info!(
                    zone = %settings.zone,
                    days = f.days,
                    took_ms = started.elapsed().as_millis() as u64,
                    "rollup: summary tables rebuilt"
                ),
                Ok(CatchUp::Done(f)) => tracing::debug!(
                    days = f.days,
                    marks = f.marks,
                    took_ms = started.elapsed().as_millis() as u64,
                    "rollup: summary tables up to date"
                ),
                Ok(CatchUp::Busy) => tracing::debug!("rollup: another replica is at it"),
                Ok(CatchUp::Stopped) => break,
                Err(e) => tracing::warn!(
                    error = %e,
                    "rollup: could not bring the summary tables up to date; will try again"
                ),
            }
            took = started.elapsed();
        }
        tokio::select! {
            () = tokio::time::sleep(wait_after(took, every)) => {}
            // Err: the sender is gone.
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    tracing::debug!("rollup: stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_catch_up_spaces_the_next_but_never_past_the_longest_wait() {
        let every = Duration::from_secs(5);
        assert_eq!(wait_after(Duration::from_millis(50), every), every);
        assert_eq!(
            wait_after(Duration::from_secs(2), every),
            Duration::from_secs(20)
        );
        assert_eq!(wait_after(Duration::from_secs(30), every), LONGEST_WAIT);
    }
}
