//! The proxy's Prometheus metrics: one process-wide set of counters, gauges and histograms
//! that the rest of the proxy reports to (atomics; what a running session reports is in
//! [`live`]), the process's own figures read at scrape time ([`process`]), and the text
//! the `/metrics` endpoint serves. Labels are small fixed sets and configuration names,
//! never user names, addresses or other unbounded values.

mod live;
mod process;

pub(crate) use live::{Meter, RouteActive};

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A label set of one label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Outcome {
    /// `authenticated`, a SQLSTATE, `refused`, or `cancel`.
    pub outcome: String,
}

/// `leg` and `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LegReason {
    pub leg: &'static str,
    pub reason: &'static str,
}

/// `leg` and `result`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LegResult {
    pub leg: &'static str,
    pub result: &'static str,
}

/// `leg` and `group` (a key-exchange group from a known set, or "other").
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LegGroup {
    pub leg: &'static str,
    pub group: &'static str,
}

/// `route`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Route {
    pub route: String,
}

/// `route` and `reason` (a failure class from a fixed set).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteReason {
    pub route: String,
    pub reason: &'static str,
}

/// `direction`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Direction {
    pub direction: &'static str,
}

/// `result`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabel {
    pub result: &'static str,
}

/// `file`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct File {
    pub file: String,
}

/// `role` and `file`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RoleFile {
    pub role: &'static str,
    pub file: String,
}

/// `version` and `openssl`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Build {
    pub version: String,
    pub openssl: String,
}

type Seconds = fn() -> Histogram;

/// Every metric.
pub(crate) struct Metrics {
    registry: Registry,
    pub sessions_active: Gauge,
    pub sessions: Family<Outcome, Counter>,
    pub handshake_failures: Family<LegReason, Counter>,
    pub tls_groups: Family<LegGroup, Counter>,
    pub upstream_connect: Family<Route, Histogram, Seconds>,
    pub upstream_connect_failures: Family<RouteReason, Counter>,
    pub upstream_not_after: Family<Route, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub route_sessions_active: Family<Route, Gauge>,
    pub client_handshake: Histogram,
    pub auth: Histogram,
    pub session_duration: Histogram,
    pub bytes: Family<Direction, Counter>,
    /// `bytes{direction="from_client"}` and `{direction="to_client"}`, held so the relay
    /// adds to them without the family's lock.
    bytes_from_client: Counter,
    bytes_to_client: Counter,
    pub max_connections: Gauge,
    pub cancels: Family<ResultLabel, Counter>,
    pub ocsp: Family<LegResult, Counter>,
    pub crl_next_update: Family<File, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub certificate_not_after: Family<RoleFile, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub reloads: Family<ResultLabel, Counter>,
    pub last_reload_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub fips_mode: Gauge,
    build: Family<Build, Gauge>,
    /// `process_*`, without the prefix.
    process: Registry,
}

fn connect_buckets() -> Histogram {
    // 1 ms to ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    fn new() -> Self {
        let mut r = Registry::with_prefix("pgt_proxy");
        let m = Self {
            registry: Registry::default(),
            sessions_active: Gauge::default(),
            sessions: Family::default(),
            handshake_failures: Family::default(),
            tls_groups: Family::default(),
            upstream_connect: Family::new_with_constructor(connect_buckets as Seconds),
            upstream_connect_failures: Family::default(),
            upstream_not_after: Family::default(),
            route_sessions_active: Family::default(),
            client_handshake: connect_buckets(),
            auth: connect_buckets(),
            // 1 ms to ~4.7 h (4^12 ms).
            session_duration: Histogram::new(exponential_buckets(0.001, 4.0, 13)),
            bytes: Family::default(),
            bytes_from_client: Counter::default(),
            bytes_to_client: Counter::default(),
            max_connections: Gauge::default(),
            cancels: Family::default(),
            ocsp: Family::default(),
            crl_next_update: Family::default(),
            certificate_not_after: Family::default(),
            reloads: Family::default(),
            last_reload_success: Gauge::default(),
            fips_mode: Gauge::default(),
            build: Family::default(),
            process: process::registry(),
        };
        r.register(
            "sessions_active",
            "Client connections open now",
            m.sessions_active.clone(),
        );
        r.register(
            "sessions",
            "Connections ended, by outcome (authenticated, or the SQLSTATE that ended them)",
            m.sessions.clone(),
        );
        r.register(
            "handshake_failures",
            "Connections refused at a TLS or certificate check, by leg and reason",
            m.handshake_failures.clone(),
        );
        r.register(
            "tls_groups",
            "Sessions ended, by leg and the key-exchange group its TLS handshake negotiated",
            m.tls_groups.clone(),
        );
        r.register(
            "upstream_connect_seconds",
            "Time to a verified upstream connection, by route",
            m.upstream_connect.clone(),
        );
        r.register(
            "upstream_connect_failures",
            "Sessions' upstream connections that failed, by route and reason",
            m.upstream_connect_failures.clone(),
        );
        r.register(
            "upstream_certificate_not_after_timestamp_seconds",
            "notAfter of the upstream server's certificate, as seen at its route's last connect",
            m.upstream_not_after.clone(),
        );
        r.register(
            "route_sessions_active",
            "Client connections open now whose route is chosen, by route",
            m.route_sessions_active.clone(),
        );
        r.register(
            "client_handshake_duration_seconds",
            "Duration of clients' completed TLS handshakes",
            m.client_handshake.clone(),
        );
        r.register(
            "auth_duration_seconds",
            "Duration of successful logins, from the startup packet to the session being ready",
            m.auth.clone(),
        );
        r.register(
            "max_connections",
            "listen.max_connections: client connections served at once",
            m.max_connections.clone(),
        );
        r.register(
            "session_duration_seconds",
            "Duration of connections, from accept to close",
            m.session_duration.clone(),
        );
        r.register(
            "bytes",
            "Bytes relayed, by direction (from_client, to_client), counted as they are relayed",
            m.bytes.clone(),
        );
        r.register(
            "cancel_requests",
            "Cancel requests, by result",
            m.cancels.clone(),
        );
        r.register(
            "ocsp_requests",
            "OCSP checks, by leg and result",
            m.ocsp.clone(),
        );
        r.register(
            "crl_next_update_timestamp_seconds",
            "nextUpdate of the earliest CRL in each file",
            m.crl_next_update.clone(),
        );
        r.register(
            "certificate_not_after_timestamp_seconds",
            "The earliest notAfter in each certificate file, by role",
            m.certificate_not_after.clone(),
        );
        r.register(
            "reloads",
            "Configuration reloads, by result",
            m.reloads.clone(),
        );
        r.register(
            "config_last_reload_success_timestamp_seconds",
            "When the running configuration was loaded (at start or by the last successful reload)",
            m.last_reload_success.clone(),
        );
        r.register(
            "fips_mode",
            "1 when FIPS mode is active",
            m.fips_mode.clone(),
        );
        r.register("build_info", "Version and OpenSSL library", m.build.clone());
        m.build
            .get_or_create(&Build {
                version: env!("CARGO_PKG_VERSION").into(),
                openssl: openssl::version::version().into(),
            })
            .set(1);
        let counter = |direction| m.bytes.get_or_create(&Direction { direction }).clone();
        Self {
            bytes_from_client: counter("from_client"),
            bytes_to_client: counter("to_client"),
            registry: r,
            ..m
        }
    }

    /// The running configuration was loaded now (at start, or by a successful reload).
    pub fn configuration_loaded(&self) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        self.last_reload_success
            .set(now.map_or(0.0, |d| d.as_secs_f64()));
    }

    /// The text for a scrape: OpenMetrics, or Prometheus' text format 0.0.4 (the default).
    pub fn encode(&self, openmetrics: bool) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut text = String::new();
        let encoded = encode_registry(&mut text, &self.registry)
            .and_then(|()| encode_registry(&mut text, &self.process))
            .and_then(|()| encode_eof(&mut text));
        if encoded.is_err() {
            return String::new();
        }
        if openmetrics {
            text
        } else {
            to_text_004(&text)
        }
    }
}

/// OpenMetrics text as Prometheus' 0.0.4 format: no `# EOF` or `# UNIT`, and a counter's
/// HELP and TYPE name its `_total` samples.
fn to_text_004(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The process's metrics.
pub(crate) fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Publishes the dates a monitor watches, replacing those published before (so a reload
/// shows exactly the files in use): each certificate file's earliest notAfter, as `(role,
/// file, seconds since the epoch)`, and each CRL file's earliest nextUpdate, as `(file,
/// seconds)`.
pub(crate) fn publish_dates(certificates: &[(&'static str, String, i64)], crls: &[(String, i64)]) {
    let m = get();
    m.certificate_not_after.clear();
    m.crl_next_update.clear();
    for (role, file, t) in certificates {
        let labels = RoleFile {
            role,
            file: file.clone(),
        };
        m.certificate_not_after
            .get_or_create(&labels)
            .set(*t as f64);
    }
    for (file, t) in crls {
        let labels = File { file: file.clone() };
        m.crl_next_update.get_or_create(&labels).set(*t as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_004_names_counter_families_by_their_samples() {
        let m = get();
        m.sessions
            .get_or_create(&Outcome {
                outcome: "authenticated".into(),
            })
            .inc();
        let text = m.encode(false);
        assert!(
            text.contains("# TYPE pgt_proxy_sessions_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("pgt_proxy_sessions_total{outcome=\"authenticated\"} "),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        assert!(m.encode(true).ends_with("# EOF\n"));
        assert!(text.contains("pgt_proxy_build_info{version=\""), "{text}");
        // The process's figures, unprefixed, before the one # EOF.
        assert!(text.contains("\nprocess_open_fds "), "{text}");
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total "),
            "{text}"
        );
        let openmetrics = m.encode(true);
        assert_eq!(openmetrics.matches("# EOF").count(), 1);
        assert!(openmetrics.contains("\nprocess_cpu_seconds_total "));
    }
}
