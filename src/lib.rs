//! pgt-proxy: a PostgreSQL TLS proxy on the system's OpenSSL.
//!
//! Clients connect with TLS and verify the proxy's certificate; the proxy opens its own
//! verified TLS connection to the PostgreSQL server and relays the session.
//!
//! Layout, from the bytes up:
//! - [`protocol`]: the wire protocol as pure functions over bytes (no IO), including
//!   [`protocol::error_response::Refusal`], what a refused client is told.
//! - `framed`: reading whole, typed protocol items from a stream during the startup phase.
//! - `prefixed`: replaying read-ahead bytes to OpenSSL (direct TLS detection).
//! - `socket`: TCP options both legs use.
//! - `leg`: which side of the proxy something happened on.
//! - `metrics`: the Prometheus metrics, a sink the rest reports to (it reads nothing).
//! - `config`: what the user wrote: schema, values and layers, with each value's origin.
//! - `fips`: FIPS mode: the OpenSSL FIPS provider, activated and proven at start.
//! - [`tls`]: TLS by job: policy, the two contexts, identities, trust, verification,
//!   revocation (CRL and OCSP), record buffers, descriptions, FFI.
//! - `settings`: what the proxy runs with, validated from the config: the upstreams
//!   (`[upstream]`, `[upstreams.NAME]`), the routes, `[auth]`, and what only a restart
//!   changes.
//! - [`routing`]: the route table: server names (RFC 6125) and databases to upstreams, pure.
//! - `client`: the client leg up to the end of its TLS handshake, over any client socket
//!   (`client::ClientIo`).
//! - `upstream`: the upstream leg: resolve, connect, negotiate, verify.
//! - `session`: one connection end to end, by phase (admission, handshake, startup, login:
//!   relayed, or SCRAM terminated), the one refusal decision
//!   (`session::SessionError::refusal`) and the one log line.
//! - `scram`: SCRAM termination: its cryptography, the client-leg and upstream-leg
//!   exchanges, the proxy's own logins, and where verifiers come from (userlist, auth query).
//! - `running`: what a process serves with: the settings and each upstream's verifier store
//!   started from them, swapped whole by a reload.
//! - `relay`: bytes both ways after authentication.
//! - `cancel`: the cancel-key registry and cancel forwarding.
//! - `server`: listeners, accept loops, the connection limit, graceful shutdown.
//! - `workers`: the session threads, one single-threaded runtime per core.
//! - `fdlimit`: the open-files limit and the sessions it leaves room for.
//! - `memory`: handing freed memory back to the system after sessions end.
//! - `service`: systemd notifications, status, watchdog, reload on SIGHUP.
//! - [`app`]: the binary's orchestration; `cli`, `check`, `logging`: its command line,
//!   `check-config` report, and log output; `trust_probe`: whether an upstream trusts the
//!   proxy's address (`check-config --connect`).
//!
//! Only what the binary, the tests, the fuzz targets and the benchmark use is public.

mod admin;
pub mod app;
mod cancel;
mod check;
mod cli;
mod client;
mod config;
mod fdlimit;
mod fips;
mod framed;
mod leg;
mod logging;
mod memory;
mod metrics;
mod prefixed;
pub mod protocol;
mod relay;
pub mod routing;
mod running;
mod scram;
mod server;
mod service;
mod session;
mod settings;
mod socket;
pub mod tls;
mod trust_probe;
mod upstream;
mod workers;
