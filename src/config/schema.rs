//! The configuration keys, their types and defaults. Each field's doc comment is the
//! reference text; `packaging/config.toml` and the README repeat it for users.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::peer_id::PeerIdSetting;

pub use super::values::*;

/// The whole configuration as written, after layering. Unknown keys are errors.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// The client-facing side.
    pub listen: RawListen,
    /// The PostgreSQL server the proxy connects to (without `[[routes]]`), or the default
    /// route (with `listen.unrouted = "default"`).
    pub upstream: RawUpstream,
    /// Named upstreams that `[[routes]]` lead to; each has every key of `[upstream]`.
    pub upstreams: BTreeMap<String, RawUpstream>,
    /// Which upstream a connection goes to, by the server name it sent or its database.
    pub routes: Vec<RawRoute>,
    /// Logging.
    pub log: RawLog,
    /// TLS settings that apply to both legs.
    pub tls: RawTls,
    /// Who authenticates clients: the server (passthrough) or the proxy (SCRAM on both legs).
    pub auth: RawAuth,
    /// The metrics and health endpoint.
    pub admin: RawAdmin,
    /// Several replicas behind a load balancer, answering each other's cancel requests.
    pub cluster: RawCluster,
}

/// `[cluster]`: the replicas of one proxy fleet. A cancel request is a new connection, which
/// a balancer may send to any replica; with `peer_id` set, each replica hands out cancel keys
/// that name it and forwards a key it does not own to the replica that does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCluster {
    /// This replica's id, 1 to 16383, unique in the fleet; 0 (the default) is no cluster:
    /// cancel keys are relayed unchanged. `"from-hostname"`: the host name's StatefulSet
    /// ordinal plus one (`pgt-proxy-3` is 4), for replicas that share one configuration.
    pub peer_id: PeerIdSetting,
    /// The CA that issued the replicas' `certificate`s, a PEM file or a directory of PEM
    /// files: a peer's certificate is verified against it both ways (the owner's as a
    /// server, the forwarding replica's as a client). "system" is refused with `peers`.
    pub ca: String,
    /// The other replicas by id: `2 = "pgt-proxy-2.internal:5432"`, where their listeners
    /// are; the host is also the name their certificate must match.
    pub peers: BTreeMap<String, String>,
    /// Instead of `peers`: any peer's address, built from its id when a cancel is forwarded
    /// to it, e.g. `"pgt-proxy-{ordinal}.pgt-proxy-peers.NAMESPACE.svc.cluster.local:5432"`
    /// (`{ordinal}` is the id minus one, `{id}` the id), so scaling needs no edit.
    pub peer_address: Option<String>,
    /// PEM certificate chain a replica presents to its peers, as a client when it forwards
    /// a cancel and as a server when one is forwarded to it; default: `listen.certificate`.
    pub certificate: Option<PathBuf>,
    /// Its private key; default: `listen.private_key`.
    pub private_key: Option<PathBuf>,
    /// Cancels forwarded to peers per second for one client address (an IPv6 /64), and as
    /// many at once; beyond that they are dropped.
    pub forward_rate: u32,
    /// Most cancels being forwarded to peers at once, from all clients; beyond that they
    /// are dropped.
    pub max_concurrent_forwards: u32,
}

impl Default for RawCluster {
    fn default() -> Self {
        Self {
            peer_id: PeerIdSetting::default(),
            ca: "system".into(),
            peers: BTreeMap::new(),
            peer_address: None,
            certificate: None,
            private_key: None,
            forward_rate: 10,
            max_concurrent_forwards: 64,
        }
    }
}

/// `[admin]`: Prometheus metrics and health checks over plain HTTP, on a listener of its own.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// `"127.0.0.1:9187"` or `"[::]:9187"`: where `/metrics`, `/healthz` and `/readyz` are
    /// served; empty (the default) for none.
    pub listen: String,
    /// Keep `/readyz` at 200 while the proxy is at `listen.max_connections`; by default it
    /// answers 503 then, so a balancer sends new connections to a replica with room.
    pub ready_at_max_connections: bool,
}

/// `[listen]`: where clients connect and how their TLS is set up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawListen {
    /// Socket addresses to listen on (`"0.0.0.0:5432"`, `"[::]:5432"`).
    pub addresses: Vec<String>,
    /// PEM file with the proxy's certificate first, then its intermediates.
    pub certificate: PathBuf,
    /// PEM private key of the certificate; must not be readable by group or others (0640 is
    /// allowed when owned by root).
    pub private_key: PathBuf,
    /// Lowest TLS version accepted from clients: "1.2" (Mozilla intermediate) or "1.3"
    /// (Mozilla modern).
    pub min_tls_version: TlsVersion,
    /// Accept PostgreSQL 17's direct TLS (`sslnegotiation=direct`, ALPN "postgresql").
    pub direct_tls: bool,
    /// Accept CancelRequests sent in plaintext (libpq before 17 sends them so).
    pub plaintext_cancel: bool,
    /// Most concurrent client connections; more get FATAL 53300. Left unset, the proxy uses
    /// 10,000 or as many as the open-files limit allows, whichever is lower.
    pub max_connections: u32,
    /// From accept until the client's TLS handshake completes.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// From the end of the TLS handshake until authentication completes.
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
    /// On SIGTERM, how long the listeners keep accepting (with `/readyz` at 503) before
    /// they close, so balancers that take seconds to deregister refuse no one.
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// On SIGTERM, after `drain_delay`, how long live sessions may run before the proxy exits.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Offer TLS session resumption (tickets and the session cache) to clients.
    pub session_tickets: bool,
    /// Key-exchange groups offered to clients, an OpenSSL group list
    /// ("X25519MLKEM768/X25519:P-256:P-384"). Unset: post-quantum first where the loaded
    /// OpenSSL implements ML-KEM (3.5 and later), else "X25519:P-256:P-384".
    pub groups: Option<String>,
    /// Trust anchors for client certificates (a PEM file or a directory of PEM files). When
    /// set, every client must present a certificate that chains to them.
    pub client_ca: Option<String>,
    /// Whether the StartupMessage's user must match the client certificate: "off", "cn"
    /// (the subject's common name, PostgreSQL's clientcert=verify-full rule) or "san-email".
    pub client_cert_user: ClientCertUser,
    /// Revocation lists for client certificates: a PEM file or a directory of PEM files.
    pub client_crl: Option<PathBuf>,
    /// OCSP for client certificates: "off", "soft-fail" or "hard-fail".
    pub client_ocsp: OcspMode,
    /// OCSP responder URL for client certificates, instead of their AIA extension.
    pub client_ocsp_responder: Option<String>,
    /// With `[[routes]]`: what matches no route, "reject" (FATAL 08001) or "default" (to
    /// `[upstream]`).
    pub unrouted: Unrouted,
    /// Client addresses (CIDR) that may connect; others get FATAL 28000 after their TLS
    /// handshake. Default: all.
    pub allowed_clients: Vec<String>,
    /// Most concurrent connections from one client address; 0 = no limit; beyond: FATAL 53300.
    pub max_connections_per_client: u32,
    /// SO_REUSEPORT, so several pgt-proxy processes share the listening addresses.
    pub reuse_port: bool,
    /// "off", or "v2": every connection starts with a PROXY protocol v2 header (from a load
    /// balancer in `trusted_proxies`) that gives the client's own address.
    pub proxy_protocol: ProxyProtocol,
    /// With `proxy_protocol = "v2"`: the balancers' addresses (CIDR); a connection from any
    /// other address is refused. Empty: none trusted.
    pub trusted_proxies: Vec<String>,
    /// `[[listen.extra]]`: more listeners in the same process, each with its own `addresses`
    /// and `proxy_protocol` (e.g. a balancer's PROXY v2 port beside a plain in-cluster one);
    /// every other key is `[listen]`'s. Bound at start, like `addresses`.
    pub extra: Vec<RawExtraListen>,
}

/// One `[[listen.extra]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExtraListen {
    /// Socket addresses to listen on; none of them may be another listener's.
    pub addresses: Vec<String>,
    /// "off" or "v2", for connections to these addresses only.
    #[serde(default = "proxy_off")]
    pub proxy_protocol: ProxyProtocol,
}

fn proxy_off() -> ProxyProtocol {
    ProxyProtocol::Off
}

impl Default for RawListen {
    fn default() -> Self {
        Self {
            addresses: vec!["0.0.0.0:5432".into()],
            certificate: "/etc/pgt-proxy/tls/proxy.crt".into(),
            private_key: "/etc/pgt-proxy/tls/proxy.key".into(),
            min_tls_version: TlsVersion::V1_2,
            direct_tls: true,
            plaintext_cancel: true,
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            startup_timeout: Duration::from_secs(60),
            drain_delay: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(30),
            session_tickets: false,
            groups: None,
            client_ca: None,
            client_cert_user: ClientCertUser::Off,
            client_crl: None,
            client_ocsp: OcspMode::Off,
            client_ocsp_responder: None,
            unrouted: Unrouted::Reject,
            allowed_clients: vec!["0.0.0.0/0".into(), "::/0".into()],
            max_connections_per_client: 0,
            reuse_port: false,
            proxy_protocol: ProxyProtocol::Off,
            trusted_proxies: Vec::new(),
            extra: Vec::new(),
        }
    }
}

/// `[upstream]`: the PostgreSQL server and how its certificate is verified.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    /// Host name or IP address; resolved again at every connect.
    pub host: Option<String>,
    /// TCP port.
    pub port: u16,
    /// Name the server certificate must carry (DNS or IP SAN); default: `host`.
    pub tls_server_name: Option<String>,
    /// Trust anchors: a PEM file, a directory of PEM files, or "system".
    pub ca: String,
    /// PEM client certificate chain to present to the upstream.
    pub client_certificate: Option<PathBuf>,
    /// Private key of `client_certificate`.
    pub client_private_key: Option<PathBuf>,
    /// "postgres" (SSLRequest first) or "direct" (ClientHello at once; PostgreSQL 17+).
    pub tls_negotiation: TlsNegotiation,
    /// Bound on resolving, connecting and the TLS handshake, per address tried.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Revocation lists for the server's certificate chain: a PEM file or a directory.
    pub crl: Option<PathBuf>,
    /// OCSP for the server's certificate: "off", "soft-fail" or "hard-fail".
    pub ocsp: OcspMode,
    /// OCSP responder URL, instead of the certificate's AIA extension.
    pub ocsp_responder: Option<String>,
    /// Key-exchange groups offered to this server, an OpenSSL group list. Unset:
    /// "*X25519MLKEM768:*P-256:X25519:P-384" where the loaded OpenSSL implements ML-KEM
    /// (3.5 and later), else "P-256:X25519:P-384".
    pub groups: Option<String>,
    /// `[auth]` keys this upstream overrides (`[upstreams.NAME.auth]`).
    pub auth: Option<RawAuthOverride>,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            host: None,
            port: 5432,
            tls_server_name: None,
            ca: "system".into(),
            client_certificate: None,
            client_private_key: None,
            tls_negotiation: TlsNegotiation::Postgres,
            connect_timeout: Duration::from_secs(10),
            crl: None,
            ocsp: OcspMode::Off,
            ocsp_responder: None,
            groups: None,
            auth: None,
        }
    }
}

/// `[upstreams.NAME.auth]`: the `[auth]` keys one upstream may set differently.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthOverride {
    /// `auth.mode` for this upstream.
    pub mode: Option<AuthMode>,
    /// `auth.userlist` for this upstream.
    pub userlist: Option<PathBuf>,
    /// `auth.query_user` for this upstream.
    pub query_user: Option<String>,
}

/// One `[[routes]]` entry: a server name (SNI) or a database, and the upstream it leads to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// The server name the client sent; `"*.example.com"` matches exactly one label.
    pub server_name: Option<String>,
    /// The StartupMessage's database, for clients that send no matching server name.
    pub database: Option<String>,
    /// The `[upstreams.NAME]` it leads to.
    pub upstream: String,
    /// The certificate served for this server name (default: `listen.certificate`).
    pub certificate: Option<PathBuf>,
    /// Its private key.
    pub private_key: Option<PathBuf>,
    /// Client certificates for this route (default: `listen.client_ca`).
    pub client_ca: Option<String>,
    /// Revocation lists for this route's client certificates.
    pub client_crl: Option<PathBuf>,
    /// `listen.client_cert_user` for this route.
    pub client_cert_user: Option<ClientCertUser>,
    /// `listen.client_ocsp` for this route.
    pub client_ocsp: Option<OcspMode>,
    /// Client addresses (CIDR) this route admits, within `listen.allowed_clients`; others
    /// get FATAL 28000. Default: what `[listen]` allows.
    pub allowed_clients: Option<Vec<String>>,
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// A level (`error`, `warn`, `info`, `debug`, `trace`) or a tracing filter directive
    /// such as `"info,pgt_proxy::session=debug"`.
    pub level: String,
    /// "text" or "json" (on stderr; the journal always gets structured fields).
    pub format: LogFormat,
    /// "auto" (the journal when stderr is connected to it, as under systemd), "journald" or
    /// "stderr".
    pub target: LogTarget,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
            target: LogTarget::Auto,
        }
    }
}

/// `[tls]`: settings that apply to both legs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    /// FIPS mode: "off", "require" (refuse to start unless OpenSSL's FIPS provider works) or
    /// "auto" ("require" when the kernel runs in FIPS mode).
    pub fips: FipsMode,
    /// An OpenSSL configuration file loaded at start, before any TLS context exists (e.g.
    /// one that includes a fipsmodule.cnf for a provider outside the default paths).
    pub openssl_config: Option<PathBuf>,
    /// Which certificates CRLs are checked for: "chain" (every certificate below the trust
    /// anchor) or "leaf" (the peer's own certificate only).
    pub crl_check: CrlCheck,
    /// Accept a CRL past its nextUpdate instead of failing verification.
    pub crl_allow_expired: bool,
    /// How often CRL files are checked for changes (a change reloads the configuration).
    #[serde(with = "humantime_serde")]
    pub crl_refresh: Duration,
    /// Bound on one OCSP exchange with a responder.
    #[serde(with = "humantime_serde")]
    pub ocsp_timeout: Duration,
}

impl Default for RawTls {
    fn default() -> Self {
        Self {
            fips: FipsMode::Auto,
            openssl_config: None,
            crl_check: CrlCheck::Chain,
            crl_allow_expired: false,
            crl_refresh: Duration::from_secs(60),
            ocsp_timeout: Duration::from_secs(5),
        }
    }
}

/// `[auth]`: how clients log in.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    /// "passthrough": the server authenticates the client through the proxy (SCRAM without
    /// channel binding, or any other method); "scram": the proxy runs SCRAM-SHA-256 with the
    /// client (channel binding to its own certificate) and with the server (bound to the
    /// server's certificate), from the users' SCRAM verifiers.
    pub mode: AuthMode,
    /// A file of `"user" "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"` lines
    /// (pgbouncer's format); 0600, or 0640 when owned by root. Re-read on reload.
    pub userlist: Option<PathBuf>,
    /// A role the proxy logs in as to fetch verifiers it does not have from `userlist`.
    pub query_user: Option<String>,
    /// The query that returns a user's verifier (`$1` is the user name); schema-qualified.
    pub query: String,
    /// The database `query_user` connects to.
    pub query_database: String,
    /// A file holding `query_user`'s password (mode 0600); without it the proxy logs in with
    /// `upstream.client_certificate` (or trust).
    pub query_password_file: Option<PathBuf>,
    /// How long a fetched verifier is reused.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Most auth queries running at once (each on a connection of its own); logins for the
    /// same user share one query.
    pub query_concurrency: u32,
    /// A user without a verifier: "refuse" (28P01 after a mock exchange, the same answer
    /// as a wrong password) or "passthrough" (relayed to the server as without `[auth]`).
    pub unknown_user: UnknownUser,
    /// With `unknown_user = "passthrough"`: accept a server that lets a relayed user in
    /// without asking for a password (it trusts the proxy's address). Off: such a session
    /// is refused with 28P01.
    pub passthrough_trust: bool,
    /// 32 or more random bytes (0600, or 0640 owned by root) that unknown users' mock salts
    /// are derived from; the same file on every replica. Unset: a per-process secret.
    pub mock_secret_file: Option<PathBuf>,
    /// A server that offers no channel binding: "prefer" (plain SCRAM-SHA-256) or "require"
    /// (the client gets FATAL 08001).
    pub upstream_channel_binding: ChannelBindingPolicy,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            mode: AuthMode::Passthrough,
            userlist: None,
            query_user: None,
            query: "SELECT username, verifier FROM pgt_proxy.get_auth($1)".into(),
            query_database: "postgres".into(),
            query_password_file: None,
            cache_ttl: Duration::from_secs(300),
            query_concurrency: 4,
            unknown_user: UnknownUser::Refuse,
            passthrough_trust: false,
            mock_secret_file: None,
            upstream_channel_binding: ChannelBindingPolicy::Prefer,
        }
    }
}
