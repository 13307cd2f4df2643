//! `loadgen queries`: the server-side time of each dashboard query (docs/cookbook.sql), the
//! median of several runs, from `EXPLAIN (ANALYZE)`'s execution time.

use anyhow::{Context, Result};
use sqlx::{Connection, PgConnection, Row};

/// The numbered statements of a cookbook file: (number and title, SQL).
pub fn statements(text: &str) -> Vec<(String, String)> {
    text.split(";\n")
        .filter_map(|chunk| {
            let title = chunk
                .lines()
                .map(str::trim)
                .find(|l| {
                    l.starts_with("-- ")
                        && l[3..].chars().next().is_some_and(|c| c.is_ascii_digit())
                })?
                .trim_start_matches("-- ")
                .to_owned();
            let sql: Vec<&str> = chunk
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect();
            let sql = sql.join("\n");
            (!sql.trim().is_empty()).then_some((title, sql))
        })
        .collect()
}

/// Runs each of the first `count` statements `repeat` times; prints one line per query and
/// a RESULT line per query for scripts.
pub async fn run(database_url: &str, file: &str, count: usize, repeat: usize) -> Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    let mut conn = PgConnection::connect(database_url).await?;
    for (n, (title, sql)) in statements(&text).into_iter().take(count).enumerate() {
        let mut times = Vec::with_capacity(repeat);
        for _ in 0..repeat {
            let row = sqlx::query(&format!(
                "EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, FORMAT JSON) {sql}"
            ))
            .fetch_one(&mut conn)
            .await
            .with_context(|| format!("query {title}"))?;
            let plan: sqlx::types::JsonValue = row.try_get(0)?;
            let ms = plan[0]["Execution Time"].as_f64().unwrap_or(f64::NAN)
                + plan[0]["Planning Time"].as_f64().unwrap_or(0.0);
            times.push(ms);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let median = times[times.len() / 2];
        let short: String = title.chars().take(70).collect();
        eprintln!("loadgen: query {:>2} {median:>9.2} ms  {short}", n + 1);
        println!("RESULT query={} ms={median:.2}", n + 1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cookbook_has_numbered_statements() {
        let s = super::statements(include_str!("../../docs/cookbook.sql"));
        assert!(s.len() >= 10, "{}", s.len());
        assert!(s[0].0.starts_with("1. "), "{}", s[0].0);
        assert!(s[0].1.contains("call_daily_stats"));
    }
}
