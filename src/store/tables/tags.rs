//! `tags`: one row per name, never deleted, so that a name's id never changes once committed.

use crate::store;
use std::collections::HashMap;

use sqlx::{PgConnection, Row};

/// A tag's id (`bigint` since V9: names that come and go for years never run it out).
pub type TagId = i64;

/// Tag names and their ids, which never change once committed (tags are never deleted):
/// after the first few batches, a batch needs no statement for its tags.
#[derive(Default)]
pub struct TagCache(std::sync::RwLock<HashMap<String, TagId>>);

impl TagCache {
    /// Bounds the memory a flood of distinct names could take; past it, misses are asked
    /// of the database each time.
    const MAX: usize = 10_000;

    /// The names not cached yet.
    pub(in crate::store) fn missing<'a>(
        &self,
        names: impl Iterator<Item = &'a String>,
    ) -> Vec<&'a String> {
        let cache = self.0.read().expect("the tag cache lock is never poisoned");
        names.filter(|n| !cache.contains_key(*n)).collect()
    }

    pub(in crate::store) async fn ids<'a>(
        &self,
        conn: &mut PgConnection,
        names: impl Iterator<Item = &'a String>,
    ) -> Result<HashMap<String, TagId>, sqlx::Error> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.0.read().expect("the tag cache lock is never poisoned");
            for name in names {
                match cache.get(name) {
                    Some(id) => {
                        found.insert(name.clone(), *id);
                    }
                    None => missing.push(name),
                }
            }
        }
        if !missing.is_empty() {
            // Its own statement, committed at once: only committed ids may be cached (behind a
            // pooler, `write::cache_tags` commits them before the batch's transaction).
            let fetched = ensure_tags(conn, missing.into_iter()).await?;
            let mut cache = self
                .0
                .write()
                .expect("the tag cache lock is never poisoned");
            for (name, id) in &fetched {
                if cache.len() < Self::MAX {
                    cache.insert(name.clone(), *id);
                }
            }
            found.extend(fetched);
        }
        Ok(found)
    }
}

/// Makes sure every tag name has a row and returns their ids. `DO NOTHING` rather than
/// `DO UPDATE`: updating would lock the same few popular tag rows in every batch.
pub(in crate::store) async fn ensure_tags<'a>(
    conn: &mut PgConnection,
    names: impl Iterator<Item = &'a String>,
) -> Result<HashMap<String, TagId>, sqlx::Error> {
    let mut names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    names.sort_unstable();
    names.dedup();
    let rows = store::query(
        "WITH added AS (
             -- Only names not stored yet: ON CONFLICT takes a value of the sequence for each
             -- name it tries, so that repeated names would use ids up at the rate they come.
             INSERT INTO tags (name)
             SELECT n FROM unnest($1::text[]) AS n
              WHERE NOT EXISTS (SELECT FROM tags t WHERE t.name = n)
              ORDER BY n
             ON CONFLICT (name) DO NOTHING
             RETURNING id::bigint AS id, name)
         SELECT id, name FROM added
         UNION ALL
         SELECT id::bigint, name FROM tags WHERE name = ANY($1::text[])",
    )
    .bind(&names)
    .fetch_all(&mut *conn)
    .await?;
    let mut ids: HashMap<String, TagId> = rows
        .iter()
        .map(|r| Ok((r.try_get("name")?, r.try_get("id")?)))
        .collect::<Result<_, sqlx::Error>>()?;
    if ids.len() < names.len() {
        // A tag another transaction committed after this statement's snapshot was taken:
        // the insert saw it, the select did not. A new statement sees it.
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !ids.contains_key(*n))
            .collect();
        for r in
            store::query("SELECT id::bigint AS id, name FROM tags WHERE name = ANY($1::text[])")
                .bind(&missing)
                .fetch_all(&mut *conn)
                .await?
        {
            ids.insert(r.try_get("name")?, r.try_get("id")?);
        }
    }
    Ok(ids)
}
