//! TLS on both legs, on the system's OpenSSL, one job per file:
//!
//! - `policy`: versions, suites, signature algorithms, ALPN (both legs).
//! - `groups`: key-exchange groups: the defaults by library, configured lists, names.
//! - `acceptor` and `connector`: the client-facing and upstream-facing contexts, built
//!   from specs that `crate::settings` validated.
//! - `identity`: the proxy's certificates and keys (permissions, key match, FIPS keys).
//! - `trust`: trust anchors with their CRLs.
//! - `verify`: recording why a peer's chain failed.
//! - [`revocation`]: CRL loading, OCSP, and the verdict both legs act on.
//! - `records`: record buffers (read-ahead, released while idle).
//! - `describe`: certificates, connections and OpenSSL errors as text.
//! - `files`: reading the PEM files keys name, and the setup error.
//! - `dates`: the certificates' and CRLs' dates in those files, reported to the metrics.
//! - `ffi`: every OpenSSL function openssl-sys does not declare.

pub(crate) mod acceptor;
pub(crate) mod connector;
pub(crate) mod dates;
pub(crate) mod describe;
pub(crate) mod ffi;
pub(crate) mod files;
pub(crate) mod groups;
pub(crate) mod identity;
pub(crate) mod policy;
pub(crate) mod records;
pub mod revocation;
pub(crate) mod trust;
pub(crate) mod verify;

pub use files::TlsSetupError;
