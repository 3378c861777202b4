//! pgt-proxy: a PostgreSQL TLS proxy on the system's OpenSSL.
//!
//! Clients connect with TLS and verify the proxy's certificate; the proxy opens its own
//! verified TLS connection to the PostgreSQL server and relays the session.
//!
//! Layout, from the bytes up:
//! - [`protocol`]: the wire protocol as pure functions over bytes (no IO).
//! - [`framed`]: reading whole protocol items from a stream during the startup phase.
//! - [`prefixed`]: replaying read-ahead bytes to OpenSSL (direct TLS detection).
//! - [`socket`]: TCP options both legs use.
//! - [`config`]: what the user wrote: schema and layers, with each value's origin.
//! - [`fips`]: FIPS mode: the OpenSSL FIPS provider, activated and proven at start.
//! - [`tls`]: building the OpenSSL contexts; the TLS policy.
//! - [`settings`]: what the proxy runs with, validated from the config.
//! - [`client`]: the client leg up to the end of its TLS handshake.
//! - [`upstream`]: the upstream leg: resolve, connect, negotiate, verify.
//! - [`ocsp`]: OCSP revocation checks of a verified peer, with a cache.
//! - [`session`]: one connection end to end, and its log line.
//! - [`relay`]: bytes both ways after authentication.
//! - [`cancel`]: the cancel-key registry and cancel forwarding.
//! - [`server`]: listeners, accept loops, the connection limit, graceful shutdown.
//! - [`memory`]: handing freed memory back to the system after sessions end.
//! - [`service`]: systemd notifications, status, watchdog, reload on SIGHUP.
//! - [`cli`], [`check`], [`logging`]: the binary's command line, `check-config` report, and
//!   log output.

pub mod cancel;
pub mod check;
pub mod cli;
pub mod client;
pub mod config;
pub mod fips;
pub mod framed;
pub mod logging;
pub mod memory;
pub mod ocsp;
pub mod prefixed;
pub mod protocol;
pub mod relay;
pub mod server;
pub mod service;
pub mod session;
pub mod settings;
pub mod socket;
pub mod tls;
pub mod upstream;
