//! Log output: the systemd journal with structured fields, or text/JSON lines on stderr,
//! filtered by `log.level`.
//!
//! In the journal every event field becomes `PGT_<FIELD>` (so `journalctl -u pgt-proxy
//! PGT_USER=alice` works) and carries `SYSLOG_IDENTIFIER=pgt-proxy`.

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;

use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::schema::{LogFormat, LogTarget};

/// Prefix of event fields in the journal.
pub const JOURNAL_FIELD_PREFIX: &str = "PGT";
/// SYSLOG_IDENTIFIER of every journal entry.
pub const SYSLOG_IDENTIFIER: &str = "pgt-proxy";

/// Installs the global subscriber. `level` was validated with the settings. Returns a
/// warning to log once logging works (e.g. the journal was asked for but is unreachable).
pub fn init(level: &str, format: LogFormat, target: LogTarget) -> Option<String> {
    let filter = || EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let use_journal = match target {
        LogTarget::Stderr => false,
        LogTarget::Journald => true,
        LogTarget::Auto => stderr_is_journal(),
    };
    let mut warning = None;
    if use_journal {
        match tracing_journald::layer() {
            Ok(journal) => {
                let journal = journal
                    .with_field_prefix(Some(JOURNAL_FIELD_PREFIX.into()))
                    .with_syslog_identifier(SYSLOG_IDENTIFIER.into())
                    // syslog's meaning of the levels: routine session lines are "info" (6),
                    // so `journalctl -p notice` shows only what needs attention.
                    .with_priority_mappings(PriorityMappings {
                        info: Priority::Informational,
                        debug: Priority::Debug,
                        ..PriorityMappings::new()
                    });
                let _ = tracing_subscriber::registry()
                    .with(filter())
                    .with(journal)
                    .try_init();
                return None;
            }
            Err(e) => {
                warning = Some(format!(
                    "cannot reach the systemd journal ({e}); logging to stderr instead"
                ));
            }
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colour codes only for a person at a terminal, never in files or the journal.
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    warning
}

/// Whether stderr is the journal's stream: systemd sets JOURNAL_STREAM to its
/// `device:inode`, and it is inherited by children whose stderr may be elsewhere, so compare.
fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}
