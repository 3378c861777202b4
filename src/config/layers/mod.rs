//! Reading the configuration layers, later wins: built-in defaults, the config file,
//! `conf.d/*.toml` in name order, `PGT_PROXY__<SECTION>__<KEY>` environment variables, then
//! command-line flags.
//!
//! Each key of each layer is checked on its own against the schema before the layers are
//! merged, so every error names the file, variable or flag it came from and the key, and one
//! run reports every mistake rather than the first.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use config::{Config, File, FileFormat, Value, ValueKind};

use super::schema::RawConfig;

/// The config file read when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/pgt-proxy/config.toml";
/// Prefix of the environment variables that set keys.
pub const ENV_PREFIX: &str = "PGT_PROXY__";
/// Keys whose value is a list; in an environment variable they are comma-separated.
const LIST_KEYS: &[&str] = &[
    "listen.addresses",
    "listen.allowed_clients",
    "listen.trusted_proxies",
];

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// A TOML file.
    File(PathBuf),
    /// An environment variable (its name).
    Env(String),
    /// A command-line flag (its spelling, e.g. `--upstream-host`).
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// A configuration mistake, naming where it was made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read or is not valid TOML.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A key's name or value is wrong, or a required key is missing.
    #[error("{origin}: {key}: {message}")]
    Key {
        /// Where the key was set (or [`Origin::Default`] when it is missing).
        origin: Origin,
        /// The dotted key, e.g. `listen.max_connections`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A certificate, key or CA file named by a key is unusable.
    #[error("{message} (key set by {origin})")]
    Tls {
        /// Where the key naming the file was set.
        origin: Origin,
        /// What is wrong, naming the key and the file.
        message: String,
    },
}

/// Values given on the command line, each with the flag that gave it.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config PATH`, when given.
    pub config_path: Option<PathBuf>,
    /// `(flag spelling, dotted key, value)` in command-line order.
    pub flags: Vec<(String, String, FlagValue)>,
}

/// A flag's value: most keys take one string, list keys take several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagValue {
    /// A scalar, converted to the key's type like an environment variable.
    One(String),
    /// A list.
    Many(Vec<String>),
}

/// The merged configuration and where each key came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The merged, schema-checked configuration.
    pub raw: RawConfig,
    /// For each key set by some layer, the last layer that set it; absent keys are defaults.
    pub origins: BTreeMap<String, Origin>,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
    /// What a change to reloads: the configuration file (read or not) and the `conf.d`
    /// directory beside it.
    pub watched: Vec<PathBuf>,
}

impl LoadedConfig {
    /// Where `key` came from.
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }
}

/// One layer's keys, flattened.
struct Layer {
    origin: Origin,
    keys: Vec<(String, Value)>,
}

/// Reads every layer. `env` is the process environment (passed in so tests need not mutate
/// the real one). Returns every error found.
pub fn load(
    overrides: &Overrides,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<LoadedConfig, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut layers = Vec::new();
    let (config_path, explicit) = match &overrides.config_path {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let mut files = Vec::new();
    if explicit || config_path.exists() {
        files.push(config_path.clone());
    }
    files.extend(conf_d_files(&config_path, &mut errors));
    for path in &files {
        match read_file(path) {
            Ok(layer) => layers.push(layer),
            Err(e) => errors.push(e),
        }
    }
    layers.extend(env_layers(env));
    for (flag, key, value) in &overrides.flags {
        let value = match value {
            FlagValue::One(v) => Value::from(v.as_str()),
            FlagValue::Many(vs) => Value::from(vs.clone()),
        };
        layers.push(Layer {
            origin: Origin::Flag(flag.clone()),
            keys: vec![(key.clone(), value)],
        });
    }

    let mut origins = BTreeMap::new();
    let mut builder = Config::builder();
    for layer in &layers {
        for (key, value) in &layer.keys {
            if let Err(message) = check_key(key, value) {
                errors.push(ConfigError::Key {
                    origin: layer.origin.clone(),
                    key: key.clone(),
                    message,
                });
                continue;
            }
            // Overrides apply in insertion order and replace earlier ones, which gives
            // exactly "later layer wins".
            builder = match builder.set_override(key.as_str(), value.clone()) {
                Ok(b) => b,
                Err(e) => {
                    errors.push(ConfigError::Key {
                        origin: layer.origin.clone(),
                        key: key.clone(),
                        message: e.to_string(),
                    });
                    return Err(errors);
                }
            };
            origins.insert(key.clone(), layer.origin.clone());
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let raw = builder
        .build()
        .and_then(|c| c.try_deserialize::<RawConfig>())
        .map_err(|e| {
            vec![ConfigError::Key {
                origin: Origin::Default,
                key: "(merged configuration)".into(),
                message: describe(&e),
            }]
        })?;
    let conf_d = config_path
        .parent()
        .unwrap_or(Path::new("."))
        .join("conf.d");
    Ok(LoadedConfig {
        raw,
        origins,
        files,
        watched: vec![config_path, conf_d],
    })
}

/// `*.toml` files in the `conf.d` directory beside `config_path`, in name order.
fn conf_d_files(config_path: &Path, errors: &mut Vec<ConfigError>) -> Vec<PathBuf> {
    let dir = config_path
        .parent()
        .unwrap_or(Path::new("."))
        .join("conf.d");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            errors.push(ConfigError::File {
                path: dir,
                message: format!("cannot read directory: {e}"),
            });
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    files
}

fn read_file(path: &Path) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.to_owned(),
        message: format!("cannot read: {e}"),
    })?;
    let config = Config::builder()
        .add_source(File::from_str(&text, FileFormat::Toml))
        .build()
        .map_err(|e| ConfigError::File {
            path: path.to_owned(),
            message: format!("not valid TOML: {e}"),
        })?;
    let table = config
        .try_deserialize::<config::Map<String, Value>>()
        .map_err(|e| ConfigError::File {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    let mut keys = Vec::new();
    for (name, value) in table {
        flatten(name, value, &mut keys);
    }
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Layer {
        origin: Origin::File(path.to_owned()),
        keys,
    })
}

/// One layer per `PGT_PROXY__SECTION__KEY` variable, in name order.
fn env_layers(env: impl IntoIterator<Item = (String, String)>) -> Vec<Layer> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    vars.into_iter()
        .map(|(name, value)| {
            let key = name[ENV_PREFIX.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect::<Vec<_>>()
                .join(".");
            let value = if LIST_KEYS.contains(&key.as_str()) {
                Value::from(
                    value
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>(),
                )
            } else {
                Value::from(value)
            };
            Layer {
                origin: Origin::Env(name),
                keys: vec![(key, value)],
            }
        })
        .collect()
}

/// Collects the leaf keys of a table value as dotted names.
fn flatten(prefix: String, value: Value, out: &mut Vec<(String, Value)>) {
    match value.kind {
        ValueKind::Table(table) => {
            for (name, value) in table {
                flatten(format!("{prefix}.{name}"), value, out);
            }
        }
        _ => out.push((prefix, value)),
    }
}

/// Checks one key against the schema, alone, so the error is about this key only.
fn check_key(key: &str, value: &Value) -> Result<(), String> {
    Config::builder()
        .set_override(key, value.clone())
        .and_then(|b| b.build())
        .and_then(|c| c.try_deserialize::<RawConfig>())
        .map(drop)
        .map_err(|e| describe(&e))
}

/// The config crate's message without the parts our own message already gives (the key
/// and origin are named by [`ConfigError`] itself).
fn describe(e: &config::ConfigError) -> String {
    match e {
        config::ConfigError::Type {
            unexpected,
            expected,
            ..
        } => format!("expected {expected}, found {unexpected}"),
        other => {
            let text = other.to_string();
            match text.rfind(" for key `") {
                Some(at) if text.ends_with('`') => text[..at].to_owned(),
                _ => text,
            }
        }
    }
}
