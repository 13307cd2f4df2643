//! `callhippo-ingest forget`: erase a person or a call (docs/reference.md §9). What it
//! prints and logs are counts per table, never the identifiers it was given.

use std::fmt;

use sqlx::PgPool;

use crate::erasure::{IdKind, Identifier};
use crate::spool::Spool;
use crate::store::erase::{self, is_emptied_column, Counts, WAIT_FOR_WRITERS};

/// What a run did, or would do with `--dry-run`.
pub struct Report {
    pub dry_run: bool,
    pub identifiers: Vec<IdKind>,
    pub counts: Counts,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let named = [IdKind::Phone, IdKind::Email, IdKind::CallSid]
            .iter()
            .filter_map(|k| {
                let n = self.identifiers.iter().filter(|i| *i == k).count();
                (n > 0).then(|| format!("{n} {}", k.as_str()))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let verb = if self.dry_run {
            "would remove (dry run: nothing changed)"
        } else {
            "removed"
        };
        writeln!(f, "forget: {named}: {verb}")?;
        // Rows of each table; then the values emptied in rows that stay (another person's
        // call whose note gives the number), only where there are some.
        for (table, n) in self.counts.iter().filter(|(t, _)| !is_emptied_column(t)) {
            writeln!(f, "  {table:<22} {n:>9} rows")?;
        }
        for (column, n) in self
            .counts
            .iter()
            .filter(|(t, n)| t.contains('.') && **n > 0)
        {
            writeln!(f, "  {column:<22} {n:>9} values emptied")?;
        }
        if self.dry_run {
            write!(f, "run it again without --dry-run to erase")
        } else {
            write!(
                f,
                "recorded in erasures (digests only): later events about them are answered 200 suppressed and stored nowhere"
            )
        }
    }
}

/// Counts (`dry_run`) or erases everything about `ids`. Refuses to erase while the spool at
/// `spool_dir` holds events: they may be about the person, and the spool's files cannot be
/// edited under a running serve (which will drop them as suppressed when it writes them).
pub async fn forget(
    pool: &PgPool,
    ids: &[Identifier],
    dry_run: bool,
    spool_dir: &std::path::Path,
) -> anyhow::Result<Report> {
    let counts = if dry_run {
        erase::count(pool, ids).await?
    } else {
        let waiting = Spool::pending_in(spool_dir)
            .map_err(|e| anyhow::anyhow!("reading the spool at {}: {e}", spool_dir.display()))?;
        if waiting > 0 {
            anyhow::bail!(
                "the spool at {} holds {waiting} events not yet written to the database: \
                 run forget once serve has written them (SPOOL_DIR names another folder if \
                 this is not serve's spool)",
                spool_dir.display()
            );
        }
        let counts = erase::erase(pool, ids, WAIT_FOR_WRITERS).await?;
        // The summaries behind the statistics views stop counting what went now, with the
        // settings serve built them with (not this command's: it has none).
        if let Some(settings) = crate::store::rollup::settings_as_built(pool).await? {
            crate::rollup::rollup_now(pool, &settings).await?;
        }
        tracing::info!(
            identifiers = ids.len(),
            rows = counts.values().sum::<u64>(),
            "forget: erased"
        );
        counts
    };
    Ok(Report {
        dry_run,
        identifiers: ids.iter().map(|i| i.kind).collect(),
        counts,
    })
}
