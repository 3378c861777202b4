//! What only a restart changes: the addresses bound (`[listen]`'s and `[[listen.extra]]`),
//! the connection limit (fitted to the open-files limit when not set), and logging. A reload compares the new [`StartOnly`] with
//! the running one to say which keys need a restart.

use std::net::SocketAddr;

use serde::Serialize;

use super::Problems;
use super::listeners::{self, ExtraListener, Listener};
use crate::config::schema::{LogFormat, LogTarget, RawConfig};
use crate::config::{LoadedConfig, Origin};

/// The settings a running proxy cannot change: it binds its addresses, sizes its limit and
/// sets up logging once. Serialized under the keys' own names, so the keys a reload could
/// not apply are found by comparison, never by a hand-kept list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StartOnly {
    /// Addresses to bind.
    #[serde(rename = "listen.addresses")]
    pub addresses: Vec<SocketAddr>,
    /// `[[listen.extra]]`: more addresses, each entry with its `proxy_protocol`.
    #[serde(rename = "listen.extra")]
    pub extra: Vec<ExtraListener>,
    /// Concurrent connection limit.
    #[serde(rename = "listen.max_connections")]
    pub max_connections: usize,
    /// Logging filter directive (already checked to parse).
    #[serde(rename = "log.level")]
    pub log_level: String,
    /// Log line format.
    #[serde(rename = "log.format")]
    pub log_format: LogFormat,
    /// Where logs go.
    #[serde(rename = "log.target")]
    pub log_target: LogTarget,
    /// SO_REUSEPORT on the listeners.
    #[serde(rename = "listen.reuse_port")]
    pub reuse_port: bool,
    /// This replica's `cluster.peer_id` (resolved: `"from-hostname"` gives the number): the
    /// cancel keys handed out name it, so it holds for the process's life.
    #[serde(rename = "cluster.peer_id")]
    pub peer_id: u16,
    /// The admin endpoint's address (`admin.listen`), if any.
    #[serde(rename = "admin.listen", skip_serializing_if = "Option::is_none")]
    pub admin: Option<SocketAddr>,
}

impl StartOnly {
    /// Every address to bind, with the listener it belongs to.
    pub(crate) fn listeners(&self) -> Vec<(SocketAddr, Listener)> {
        listeners::all(&self.addresses, &self.extra)
    }

    /// The keys whose values differ between `self` and `other`.
    pub fn changed_keys(&self, other: &StartOnly) -> Vec<String> {
        let (Ok(a), Ok(b)) = (toml::Table::try_from(self), toml::Table::try_from(other)) else {
            return vec!["listen.*, log.*".into()];
        };
        a.iter()
            .filter(|(key, value)| b.get(*key) != Some(value))
            .map(|(key, _)| key.clone())
            .collect()
    }
}

/// `listen.max_connections` when it is not set: as many as the open-files limit allows, up
/// to this.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

pub(super) fn start_only(
    raw: &RawConfig,
    loaded: &LoadedConfig,
    peer_id: u16,
    problems: &mut Problems,
) -> StartOnly {
    let addresses = listeners::addresses("listen.addresses", &raw.listen.addresses, problems);
    let extra = listeners::extra(raw, &addresses, problems);
    if raw.listen.max_connections == 0 {
        problems.key("listen.max_connections", "must be at least 1");
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&raw.log.level) {
        problems.key(
            "log.level",
            format!("{:?} is not a level or filter: {e}", raw.log.level),
        );
    }
    let max_connections = match loaded.origin("listen.max_connections") {
        Origin::Default => crate::fdlimit::sessions_allowed()
            .map_or(DEFAULT_MAX_CONNECTIONS, |n| n.min(DEFAULT_MAX_CONNECTIONS)),
        _ => raw.listen.max_connections as usize,
    };
    let admin = match raw.admin.listen.trim() {
        "" => None,
        text => match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                problems.key(
                    "admin.listen",
                    format!("{text:?} is not an IP socket address such as \"127.0.0.1:9187\""),
                );
                None
            }
        },
    };
    StartOnly {
        reuse_port: raw.listen.reuse_port,
        peer_id,
        admin,
        addresses,
        extra,
        max_connections,
        log_level: raw.log.level.clone(),
        log_format: raw.log.format,
        log_target: raw.log.target,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(max: usize, level: &str) -> StartOnly {
        StartOnly {
            addresses: vec!["127.0.0.1:5432".parse().unwrap()],
            extra: Vec::new(),
            max_connections: max,
            log_level: level.into(),
            log_format: LogFormat::Text,
            log_target: LogTarget::Auto,
            admin: None,
            reuse_port: false,
            peer_id: 0,
        }
    }

    #[test]
    fn changed_keys_names_exactly_the_keys_that_differ() {
        assert!(
            start(10, "info")
                .changed_keys(&start(10, "info"))
                .is_empty()
        );
        assert_eq!(
            start(10, "info").changed_keys(&start(11, "debug")),
            ["listen.max_connections", "log.level"]
        );
    }
}
