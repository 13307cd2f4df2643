//! Logs through `tracing`: human-readable text, or one JSON object per line for shippers.

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, SettingError};

/// Keeps the log writer's thread; dropping it writes out what is still buffered.
#[must_use = "logs buffered when the guard is dropped are written then; keep it until exit"]
pub struct LogGuard(#[allow(dead_code)] Option<WorkerGuard>);

/// Installs the global subscriber. Logs go to stderr; stdout stays for command output.
///
/// Lines are formatted on the thread that logs and written by a thread of their own, in
/// batches: `serve` logs a line per request, and a write to stderr for each one cost its
/// HTTP threads about a tenth of their CPU at 10,000 requests a second (bench). Nothing is
/// dropped: a logger that gets 16k lines ahead of the writer waits for it.
pub fn init(format: LogFormat, filter: &str) -> Result<LogGuard, SettingError> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| SettingError(format!("RUST_LOG is not a valid log filter: {e}")))?;
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
        .with_target(false);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    // A second call (tests) keeps the first subscriber, and its writer.
    Ok(LogGuard(installed.is_ok().then_some(guard)))
}
