//! pgt-proxy: a PostgreSQL TLS proxy on the system's OpenSSL.
//!
//! Clients connect with TLS and verify the proxy's certificate; the proxy opens its own
//! verified TLS connection to the PostgreSQL server and relays the session.
//!
//! Layout, from the bytes up:
//! - `leg`: which side of the proxy something happened on.
//! - `socket`: TCP options both legs use.
//! - `prefixed`: replaying read-ahead bytes to OpenSSL (direct TLS detection).
//! - `fdlimit`: the open-files limit and the sessions it leaves room for.
//! - [`routing`]: the route table: server names (RFC 6125) and databases to upstreams, pure.
//! - [`protocol`]: the wire protocol as pure functions over bytes (no IO), including
//!   [`protocol::error_response::Refusal`], what a refused client is told (`encode`,
//!   `error_response`, `message`, `parameters`, `proxy`, `scram`, `sqlstate`, `startup`).
//! - `config`: what the user wrote, with each value's origin (`schema`, `values`, `layers`).
//! - `framed`: reading whole, typed protocol items from a stream during the startup phase.
//! - `logging`: log output (stderr or the journal).
//! - `metrics`: the Prometheus metrics, a sink the rest reports to (it imports nothing of
//!   ours).
//! - [`tls`]: TLS by job (`policy`, `groups`, `acceptor`, `connector`, `identity`, `trust`,
//!   `verify`, `revocation` with its `crl` and `ocsp`, `records`, `describe`, `files`,
//!   `dates`, `ffi`).
//! - `fips`: FIPS mode: the OpenSSL FIPS provider, activated and proven at start.
//! - `scram`: SCRAM termination: its cryptography (`keys`), the client-leg and upstream-leg
//!   exchanges (`server`, `client`), the proxy's own login to a server (`upstream_login`),
//!   and where verifiers come from (`verifiers`, `query`, `query_answer`, `cache`,
//!   `flights`, `mock`, `timer`).
//! - `relay`: bytes both ways after authentication (`pipe`).
//! - `settings`: what the proxy runs with, validated from the config: the upstreams
//!   (`upstream`), the routes (`routes`), `[auth]` (`auth`), TLS (`tls`), the cluster
//!   (`cluster`), the files in use (`files`), and what only a restart changes (`start`).
//!   Settings hold what the user wrote, resolved; nothing in them runs.
//! - `cli`: the command line.
//! - `client`: the client leg up to the end of its TLS handshake, over any client socket
//!   (`client::ClientIo`; `proxied`, `socket`).
//! - `upstream`: the upstream leg: where it is (`upstream::Endpoint`), resolve, connect,
//!   negotiate, verify (`error`).
//! - `cancel`: the cancel-key registry and cancel forwarding (`key`, `limit`, `outcome`,
//!   `peer`, `proof`).
//! - `trust_probe`: whether an upstream trusts the proxy's address (`check-config
//!   --connect`); `check`: the `check-config` report.
//! - `running`: what a process serves with: the settings and each upstream's verifier store
//!   started from them, swapped whole by a reload.
//! - `session`: one connection end to end, by phase (`admission`, `handshake`, `startup`,
//!   `login`: relayed in `passthrough`, or SCRAM terminated in `scram_login` with the
//!   client's half in `client_proof`), a connection that carries a cancel (`cancel`), the
//!   one refusal decision (`error`), the one log line (`log`), and what the live sessions
//!   share (`sessions`: cancel keys, counts, per-address claims, the stop signal).
//! - [`daemon`]: the process around the sessions: the binary's orchestration (`app`), the
//!   process state (`shared`), the accept loops (`server`), the runtimes and session
//!   threads (`runtimes`), systemd (`service`), the admin endpoint (`admin`), and memory
//!   (`memory`).
//!
//! Visibility, one rule: `pub` marks only what leaves the crate (what the binary, the tests,
//! the fuzz targets and the benchmark use, reachable through the `pub mod`s below). Inside a
//! private module, an item or field that other modules use is `pub(crate)`, or `pub(super)`
//! when only its own folder uses it; never bare `pub`. So a bare `pub` anywhere is the
//! crate's API, and rustc's `unreachable_pub` lint can check the rule.

mod cancel;
mod check;
mod cli;
mod client;
mod config;
pub mod daemon;
mod fdlimit;
mod fips;
mod framed;
mod leg;
mod logging;
mod metrics;
mod prefixed;
pub mod protocol;
mod relay;
pub mod routing;
mod running;
mod scram;
mod session;
mod settings;
mod socket;
pub mod tls;
mod trust_probe;
mod upstream;
