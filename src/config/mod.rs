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
pub mod peer_id;
pub mod schema;
pub mod values;

pub(crate) use layers::{ConfigError, LoadedConfig, Origin, Overrides, load};

#[cfg(test)]
mod tests {
    use super::schema::RawConfig;

    /// packaging/config.toml documents every key: uncommented, it parses with the schema
    /// (no unknown or misspelled key) and holds every key the defaults have.
    #[test]
    fn the_packaged_config_documents_every_key() {
        let text = include_str!("../../packaging/config.toml");
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest)
                    if rest
                        .split_once(" = ")
                        .is_some_and(|(k, _)| !k.contains(' ')) =>
                {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let documented: toml::Table = toml::from_str(&uncommented).expect("valid TOML");
        let parsed: RawConfig = toml::from_str(&uncommented).expect("only known keys");
        assert!(parsed.upstream.host.is_some());
        let defaults = toml::Table::try_from(RawConfig::default()).unwrap();
        for (section, keys) in &defaults {
            // `[[routes]]` and `[upstreams.NAME]` (empty by default) are documented by
            // example, checked below.
            let Some(keys) = keys.as_table().filter(|k| !k.is_empty()) else {
                continue;
            };
            let doc = documented
                .get(section)
                .and_then(|s| s.as_table())
                .unwrap_or_else(|| panic!("[{section}] is not documented"));
            for key in keys.keys() {
                assert!(doc.contains_key(key), "{section}.{key} is not documented");
            }
        }
        // The routing example is prose-commented ("# key = ..."), since its tables cannot be
        // uncommented into the flat layout above.
        for needle in [
            "# [upstreams.",
            "# [[routes]]",
            "# server_name = ",
            "# database = ",
            "# upstream = ",
            "# certificate = ",
            "# private_key = ",
            "# client_ca = ",
            "# client_crl = ",
            "# client_cert_user = ",
            "# client_ocsp = ",
            "# allowed_clients = ",
            "# [upstreams.billing.auth]",
        ] {
            assert!(text.contains(needle), "{needle:?} is not documented");
        }
    }
}
