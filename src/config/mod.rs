//! What the user wrote: the configuration schema and the layers it is read from.
//!
//! - [`schema`]: the serde-typed keys with their defaults ([`RawConfig`]).
//! - [`layers`]: reading defaults, the config file, `conf.d/*.toml`, `PGT_PROXY__*` variables
//!   and command-line flags, validating each layer on its own so an error names its origin, and
//!   remembering which layer set each key.
//!
//! Turning this into what the proxy runs with (parsed addresses, built TLS contexts) is
//! [`crate::settings`]'s job.

pub mod layers;
pub mod schema;

pub(crate) use layers::{ConfigError, LoadedConfig, Origin, Overrides, load};
