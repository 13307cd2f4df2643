//! Logs through `tracing`: human-readable text, or one JSON object per line for shippers.

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};

use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, SettingError};

/// Keeps the log writer's thread; dropping it writes out what is still buffered.
#[must_use = "logs buffered when the guard is dropped are written then; keep it until exit"]
pub struct LogGuard(#[allow(dead_code)] Option<WorkerGuard>);

/// Installs the global subscriber. Logs go to stderr; stdout stays for command output.
///
/// Lines are formatted on the thread that logs and written by a thread of their own, in
/// batches: `serve` logs a line per request, and a write to stderr for each one cost its
/// HTTP threads a noticeable share of their CPU (bench/HISTORY.md). Nothing is dropped: a
/// logger that gets 16k lines ahead of the writer waits for it.
pub fn init(format: LogFormat, filter: &str) -> Result<LogGuard, SettingError> {
    init_with_colour(format, filter, colour_wanted())
}

/// Colour only for a person at a terminal: never in a file, a pipe or a container's log, and
/// never when `NO_COLOR` is set to anything but the empty string (no-color.org).
fn colour_wanted() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

fn init_with_colour(
    format: LogFormat,
    filter: &str,
    colour: bool,
) -> Result<LogGuard, SettingError> {
    let filter = log_filter(filter)?;
    let (writer, guard) = NonBlockingBuilder::default()
        // The channel's slots are allocated at once: 128k (the default) took 4 MiB.
        .buffered_lines_limit(16 * 1024)
        .lossy(false)
        .thread_name("callhippo-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(colour)
        .with_target(false);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.event_format(JsonLines).try_init(),
    };
    // A second call (tests) keeps the first subscriber, and its writer.
    Ok(LogGuard(installed.is_ok().then_some(guard)))
}

/// Libraries whose `info` lines say again what the service says itself (refinery's "applying
/// migration", PostgreSQL's notices such as "relation … already exists, skipping"): shown
/// only when the filter asks for debug lines.
const CHATTY_LIBRARIES: &[&str] = &["refinery_core", "sqlx::postgres::notice"];

fn log_filter(filter: &str) -> Result<EnvFilter, SettingError> {
    let parsed = || {
        EnvFilter::try_new(filter)
            .map_err(|e| SettingError(format!("RUST_LOG is not a valid log filter: {e}")))
    };
    let mut env_filter = parsed()?;
    let wants_debug = env_filter
        .max_level_hint()
        .is_some_and(|l| l >= tracing::level_filters::LevelFilter::DEBUG);
    if !wants_debug {
        for library in CHATTY_LIBRARIES {
            if !filter.contains(library) {
                let directive = format!("{library}=warn")
                    .parse()
                    .expect("a valid directive");
                env_filter = env_filter.add_directive(directive);
            }
        }
    }
    Ok(env_filter)
}

/// One JSON object per line: `timestamp`, `level`, `message`, the event's fields, and
/// `target` for lines of other crates. tracing-subscriber's own JSON format also prints the
/// `log.file` and `log.module_path` of every line that comes through the `log` crate: paths
/// into the build machine's dependency sources, of no use to whoever reads the logs.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut line: Vec<(String, serde_json::Value)> = vec![
            ("timestamp".into(), timestamp.into()),
            ("level".into(), meta.level().as_str().into()),
        ];
        if let Some(message) = fields.message.take() {
            line.push(("message".into(), message));
        }
        let target = fields.log_target.take().unwrap_or(meta.target().to_owned());
        if !target.starts_with(env!("CARGO_CRATE_NAME")) {
            line.push(("target".into(), target.into()));
        }
        line.extend(fields.values);
        // In this order: a map would sort the keys.
        writer.write_char('{')?;
        for (i, (key, value)) in line.iter().enumerate() {
            let key = serde_json::to_string(key).map_err(|_| std::fmt::Error)?;
            let sep = if i == 0 { "" } else { "," };
            write!(writer, "{sep}{key}:{value}")?;
        }
        writer.write_str("}\n")
    }
}

#[derive(Default)]
struct JsonFields {
    message: Option<serde_json::Value>,
    log_target: Option<String>,
    values: Vec<(String, serde_json::Value)>,
}

impl JsonFields {
    fn put(&mut self, field: &tracing::field::Field, value: serde_json::Value) {
        match field.name() {
            "message" => self.message = Some(value),
            "log.target" => self.log_target = value.as_str().map(str::to_owned),
            // Where a `log` line came from in its crate's sources.
            name if name.starts_with("log.") => {}
            name => self
                .values
                .push((name.trim_start_matches("r#").to_owned(), value)),
        }
    }
}

impl tracing::field::Visit for JsonFields {
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

/// An error and its causes on one line, each cause once: sqlx and io errors repeat their
/// source's text in their own (`error returned from database: X` caused by `X`).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string().replace(['\n', '\r'], " ");
        let text = text.trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("error returned from database: {0}")]
    struct Wrapper(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Inner(&'static str);

    #[test]
    fn one_line_says_each_cause_once() {
        let e = anyhow::Error::new(Wrapper(Inner(
            "password authentication failed for user \"postgres\"",
        )))
        .context("database \"callhippo\" at 127.0.0.1:5432");
        assert_eq!(
            one_line(&e),
            "database \"callhippo\" at 127.0.0.1:5432: error returned from database: \
             password authentication failed for user \"postgres\""
        );
        let e = anyhow::anyhow!("first\nsecond").context("outer");
        assert_eq!(one_line(&e), "outer: first second");
    }
}
