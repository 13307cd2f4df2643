//! The console's HTML: the page, and the fragments the script swaps in when it refreshes
//! (the same templates render both, so the refreshed page is the served page).

use std::collections::BTreeMap;
use std::fmt::Write;

use askama::Template;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::summary::{human_duration, plural_name, DeliveryRow, KindSummary, Summary, SyncRun};

/// The stylesheet and script, compiled in.
pub const CSS: &str = include_str!("assets/console.css");
pub const JS: &str = include_str!("assets/console.js");

/// Changes whenever an asset does, so that a browser never keeps an old one.
pub fn asset_version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new().chain_update(CSS).chain_update(JS).finalize();
        hex::encode(&digest[..6])
    })
}

/// What the script receives: every figure as shown (`data-figure` → text), and the
/// fragments to swap in.
#[derive(Serialize)]
pub struct Refresh<'a> {
    pub figures: &'a BTreeMap<String, String>,
    pub html: BTreeMap<String, String>,
}

/// Every figure's text, by its `data-figure` name (`call.today`, `spool.events`…).
pub fn figures(s: &Summary) -> BTreeMap<String, String> {
    let mut f = BTreeMap::new();
    let count = |v: Option<i64>| v.map_or_else(|| "—".to_owned(), |n| n.to_string());
    for k in &s.kinds {
        let kind = k.kind.as_str();
        f.insert(format!("{kind}.today"), count(k.today));
        f.insert(format!("{kind}.last_hour"), count(k.last_hour));
        f.insert(format!("{kind}.rejected_today"), count(k.rejected_today));
        f.insert(
            format!("{kind}.since_last"),
            match k.seconds_since_last {
                Some(s) => format!("{} ago", human_duration(s)),
                None => "none in 7 days".to_owned(),
            },
        );
        f.insert(
            format!("{kind}.last_at"),
            k.last_at.map_or_else(|| "—".to_owned(), |at| clock(at, s)),
        );
        for (outcome, n) in &k.outcomes {
            f.insert(format!("{kind}.{outcome}"), n.to_string());
        }
        f.insert(
            format!("{kind}.silence"),
            k.silence
                .as_ref()
                .map_or_else(String::new, |x| x.message.clone()),
        );
    }
    f.insert("spool.events".into(), s.spool.events.to_string());
    f.insert("spool.bytes".into(), s.spool.bytes.to_string());
    f.insert("database.state".into(), s.database.state.to_owned());
    f.insert(
        "database.schema_version".into(),
        s.database
            .schema_version
            .map_or_else(|| "—".to_owned(), |v| v.to_string()),
    );
    f.insert("generated_at".into(), clock(s.generated_at, s));
    f
}

/// A time in REPORT_TIMEZONE: the clock alone when it is today, else with its date.
pub fn clock(at: DateTime<Utc>, s: &Summary) -> String {
    let zone: chrono_tz::Tz = s.zone.parse().unwrap_or(chrono_tz::UTC);
    let local = at.with_timezone(&zone);
    if local.date_naive() == s.today {
        local.format("%H:%M:%S").to_string()
    } else {
        local.format("%Y-%m-%d %H:%M").to_string()
    }
}

/// Events per minute over the last hour as bars, drawn here so that the page needs no
/// chart code; the bars carry no colour that matters, and a title per bar gives its figure.
pub fn chart(k: &KindSummary) -> String {
    let label = format!("{} per minute over the last hour", plural_name(k.kind));
    let Some(per_minute) = &k.per_minute else {
        return format!(
            r#"<p class="chart-missing">{label}: not available while the database does not answer.</p>"#
        );
    };
    let max = per_minute.iter().copied().max().unwrap_or(0).max(1);
    let total: i64 = per_minute.iter().sum();
    let (w, h) = (600.0, 80.0);
    let bar_w = w / 60.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {w} {h}" preserveAspectRatio="none" role="img" aria-label="{label}: {total} in all, at most {max} in a minute"><title>{label}</title>"#
    );
    let _ = write!(
        svg,
        r#"<line class="axis" x1="0" y1="{h}" x2="{w}" y2="{h}"/>"#
    );
    for (i, &n) in per_minute.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let bh = (n as f64 / max as f64 * (h - 4.0)).max(2.0);
        let ago = 59 - i;
        let _ = write!(
            svg,
            r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{bw:.1}" height="{bh:.1}"><title>{n} {ago} min ago</title></rect>"#,
            x = i as f64 * bar_w + 1.0,
            y = h - bh,
            bw = bar_w - 2.0,
        );
    }
    let _ = write!(
        svg,
        r#"</svg><p class="ticks"><span>−60 min</span><span>now · at most {max} a minute</span></p>"#
    );
    svg
}

#[derive(Template)]
#[template(path = "console/deliveries.html")]
pub struct Deliveries<'a> {
    /// `None`: not available (the database did not answer in time).
    pub rows: Option<&'a [DeliveryRow]>,
    pub rejected: bool,
    pub s: &'a Summary,
}

#[derive(Template)]
#[template(path = "console/sync_runs.html")]
pub struct SyncRuns<'a> {
    pub runs: Option<&'a [SyncRun]>,
    pub s: &'a Summary,
}

impl Deliveries<'_> {
    fn when(&self, at: &DateTime<Utc>) -> String {
        clock(*at, self.s)
    }

    fn list(&self) -> &[DeliveryRow] {
        self.rows.unwrap_or_default()
    }

    fn columns(&self) -> usize {
        if self.rejected {
            5
        } else {
            6
        }
    }
}

impl SyncRuns<'_> {
    fn when(&self, at: &DateTime<Utc>) -> String {
        clock(*at, self.s)
    }

    fn list(&self) -> &[SyncRun] {
        self.runs.unwrap_or_default()
    }
}

#[derive(Template)]
#[template(path = "console/alerts.html")]
pub struct Alerts<'a> {
    pub s: &'a Summary,
}

impl Alerts<'_> {
    fn silences(&self) -> Vec<&str> {
        (self.s.kinds.iter())
            .filter_map(|k| k.silence.as_ref().map(|x| x.message.as_str()))
            .collect()
    }
}

/// The fragments the script swaps in, by the `data-fragment` of their container.
pub fn fragments(s: &Summary) -> BTreeMap<String, String> {
    let mut html = BTreeMap::new();
    let render = |t: &dyn askama::DynTemplate| t.dyn_render().unwrap_or_default();
    html.insert(
        "deliveries".into(),
        render(&Deliveries {
            rows: s.deliveries.as_deref(),
            rejected: false,
            s,
        }),
    );
    html.insert(
        "rejected".into(),
        render(&Deliveries {
            rows: s.rejected.as_deref(),
            rejected: true,
            s,
        }),
    );
    html.insert(
        "sync_runs".into(),
        render(&SyncRuns {
            runs: s.sync_runs.as_deref(),
            s,
        }),
    );
    html.insert("alerts".into(), render(&Alerts { s }));
    for k in &s.kinds {
        html.insert(format!("chart.{}", k.kind.as_str()), chart(k));
    }
    html
}

#[derive(Template)]
#[template(path = "console/page.html")]
pub struct Page<'a> {
    pub s: &'a Summary,
    pub figures: &'a BTreeMap<String, String>,
    pub html: &'a BTreeMap<String, String>,
    pub version: &'static str,
}

impl Page<'_> {
    fn fig(&self, name: &str) -> &str {
        self.figures.get(name).map_or("—", String::as_str)
    }

    fn frag(&self, name: &str) -> &str {
        self.html.get(name).map_or("", String::as_str)
    }

    fn title(&self, kind: &str) -> &'static str {
        match kind {
            "call" => "Call logs",
            "sms" => "SMS",
            _ => "Call status",
        }
    }
}

/// The page as served.
pub fn render(s: &Summary) -> String {
    let figures = figures(s);
    let html = fragments(s);
    (Page {
        s,
        figures: &figures,
        html: &html,
        version: asset_version(),
    })
    .render()
    .unwrap_or_else(|e| format!("<p>the console could not be drawn: {e}</p>"))
}

/// The page a request without the token gets.
#[derive(Template)]
#[template(path = "console/denied.html")]
pub struct Denied {
    pub version: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Kind;

    fn kind(per_minute: Option<Vec<i64>>) -> KindSummary {
        KindSummary {
            kind: Kind::Call,
            today: Some(3),
            rejected_today: Some(1),
            last_hour: Some(3),
            last_at: None,
            seconds_since_last: None,
            silence: None,
            outcomes: BTreeMap::new(),
            per_minute,
        }
    }

    #[test]
    fn the_chart_has_a_bar_per_busy_minute_with_its_figure() {
        let mut per_minute = vec![0; 60];
        per_minute[59] = 4;
        per_minute[0] = 1;
        let svg = chart(&kind(Some(per_minute)));
        assert_eq!(svg.matches("<rect").count(), 2, "{svg}");
        assert!(svg.contains("<title>4 0 min ago</title>"), "{svg}");
        assert!(svg.contains("<title>1 59 min ago</title>"), "{svg}");
        assert!(svg.contains("5 in all, at most 4 in a minute"), "{svg}");
        assert!(chart(&kind(None)).contains("not available"));
    }
}
