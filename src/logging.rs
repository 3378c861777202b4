//! Log output: a tracing subscriber writing text or JSON lines to stderr, filtered by
//! `log.level`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::schema::LogFormat;

/// Installs the global subscriber. `level` was validated with the settings.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colour codes only for a person at a terminal, never in files or the journal.
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
