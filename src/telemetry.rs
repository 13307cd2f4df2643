//! Logs through `tracing`: human-readable text, or one JSON object per line for shippers.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, SettingError};

/// Installs the global subscriber. Logs go to stderr; stdout stays for command output.
pub fn init(format: LogFormat, filter: &str) -> Result<(), SettingError> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| SettingError(format!("RUST_LOG is not a valid log filter: {e}")))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    // A second call (tests) keeps the first subscriber.
    let _ = installed;
    Ok(())
}
