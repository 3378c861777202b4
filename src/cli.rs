//! The command line: subcommands, flags that set configuration keys, and the help text that
//! doubles as the man page.
//!
//! Flags are the last configuration layer. PGT-Proxy's flag names are accepted as aliases so
//! its users can switch without rewriting their command lines.

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::layers::{FlagValue, Overrides};

const ABOUT: &str = "A PostgreSQL TLS proxy: verified TLS to the server, TLS-only for clients";

const LONG_ABOUT: &str = "\
pgt-proxy sits in front of a PostgreSQL server. Clients connect to it with TLS and verify its
certificate (sslmode=verify-full); it connects to the server with its own TLS connection,
verifies the server's certificate chain against the configured CA and its host name, and only
then relays the session. Clients never need the server's private CA.

Everything cryptographic goes through the system's OpenSSL 3 library.";

const AFTER_LONG_HELP: &str = "\
CONFIGURATION
    Layers, later wins: built-in defaults; the config file (/etc/pgt-proxy/config.toml or
    --config PATH); every *.toml in the conf.d/ directory beside it, in name order;
    environment variables PGT_PROXY__<SECTION>__<KEY> (e.g. PGT_PROXY__UPSTREAM__HOST,
    PGT_PROXY__LISTEN__ADDRESSES=\"0.0.0.0:5432,[::]:5432\"); then the flags above.
    Unknown keys are errors. Durations are written like \"10s\", \"2m\", \"1h 30m\".
    `pgt-proxy check-config` prints the effective configuration and where each value came from.

EXAMPLES
    Check a configuration before (re)starting the service:
        pgt-proxy --config /etc/pgt-proxy/config.toml check-config

    Run in the foreground in front of db.internal:5432:
        pgt-proxy --upstream-host db.internal --upstream-ca /etc/pgt-proxy/upstream-ca.pem \\
                  --certificate proxy.crt --private-key proxy.key --listen 0.0.0.0:6432

    Connect through it:
        psql \"host=proxy.example.com port=6432 sslmode=verify-full channel_binding=disable user=alice dbname=app\"

FILES
    /etc/pgt-proxy/config.toml     main configuration file
    /etc/pgt-proxy/conf.d/*.toml   drop-in overrides, read in name order
    /etc/pgt-proxy/tls/            the proxy's certificate and private key (0600, or 0640 root-owned)

EXIT STATUS
    0 success (including a stop by SIGTERM or SIGINT); 1 check-config found errors; 2 usage
    error; 69 a listening address could not be bound; 78 configuration error (nothing was
    bound).";

/// The parsed command line.
#[derive(Debug, Parser)]
#[command(name = "pgt-proxy", about = ABOUT, long_about = LONG_ABOUT, after_long_help = AFTER_LONG_HELP)]
pub struct Cli {
    /// Configuration file [default: /etc/pgt-proxy/config.toml]; conf.d/ beside it is read too.
    #[arg(short, long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Flags that set configuration keys.
    #[command(flatten)]
    pub keys: KeyFlags,

    /// What to do [default: run].
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Clone, Copy, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// Run the proxy in the foreground (the default).
    Run,
    /// Load every layer, certificate, key and CA; print the effective configuration with the
    /// layer each value came from and the route table; exit 0 if it is usable, 1 with the
    /// errors otherwise.
    CheckConfig {
        /// Also connect to every upstream and verify it exactly as a session would (chain,
        /// host name, CRL, OCSP, TLS version and cipher), one line per upstream; any failure
        /// makes the exit status 1.
        #[arg(long)]
        connect: bool,
    },
    /// Print the pgt-proxy(1) man page (roff) to standard output; used to build packages.
    #[command(hide = true)]
    Manpage,
}

/// Flags that override configuration keys (the last layer).
#[derive(Debug, Clone, Args)]
pub struct KeyFlags {
    /// listen.addresses: address to listen on; repeat for several.
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Vec<String>,
    /// listen.addresses = ["0.0.0.0:PORT"] (PGT-Proxy's flag).
    #[arg(long, global = true, value_name = "PORT")]
    pub server_port: Option<u16>,
    /// listen.certificate: the proxy's PEM certificate chain.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        visible_alias = "server-certificate-path"
    )]
    pub certificate: Option<String>,
    /// listen.private_key: its PEM private key.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        visible_alias = "server-private-key-path"
    )]
    pub private_key: Option<String>,
    /// upstream.host: the PostgreSQL server's host name or address.
    #[arg(
        long,
        global = true,
        value_name = "HOST",
        visible_alias = "client-connection-host-or-ip"
    )]
    pub upstream_host: Option<String>,
    /// upstream.port.
    #[arg(
        long,
        global = true,
        value_name = "PORT",
        visible_alias = "client-connection-port"
    )]
    pub upstream_port: Option<String>,
    /// upstream.tls_server_name: the name the server certificate must match.
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        visible_alias = "client-tls-validation-host"
    )]
    pub upstream_tls_server_name: Option<String>,
    /// upstream.ca: PEM file, directory of PEM files, or "system".
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        visible_alias = "client-ca-roots-path"
    )]
    pub upstream_ca: Option<String>,
    /// log.level: error, warn, info, debug, trace, or a filter directive.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// log.format: text or json.
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

impl Cli {
    /// The clap command with the runtime version string (which names OpenSSL).
    pub fn full_command() -> clap::Command {
        Self::command().version(version_string(false))
    }

    /// Writes the man page, generated from the same definitions as `--help`.
    pub fn write_man_page(out: &mut dyn std::io::Write) -> std::io::Result<()> {
        clap_mangen::Man::new(Self::full_command()).render(out)
    }

    /// Parses the process's arguments; `--version` includes the OpenSSL version in use.
    pub fn parse_args() -> Self {
        // Describing the FIPS provider loads it, which only `--version` should do.
        let asks_version = std::env::args_os().any(|a| a == "--version" || a == "-V");
        let matches = Self::command()
            .version(version_string(asks_version))
            .get_matches();
        match Self::from_arg_matches(&matches) {
            Ok(cli) => cli,
            Err(e) => e.exit(),
        }
    }

    /// The configuration layer the flags make.
    pub fn overrides(&self) -> Overrides {
        let k = &self.keys;
        let mut flags = Vec::new();
        let mut one = |flag: &str, key: &str, value: &Option<String>| {
            if let Some(v) = value {
                flags.push((flag.to_owned(), key.to_owned(), FlagValue::One(v.clone())));
            }
        };
        one("--certificate", "listen.certificate", &k.certificate);
        one("--private-key", "listen.private_key", &k.private_key);
        one("--upstream-host", "upstream.host", &k.upstream_host);
        one("--upstream-port", "upstream.port", &k.upstream_port);
        one(
            "--upstream-tls-server-name",
            "upstream.tls_server_name",
            &k.upstream_tls_server_name,
        );
        one("--upstream-ca", "upstream.ca", &k.upstream_ca);
        one("--log-level", "log.level", &k.log_level);
        one("--log-format", "log.format", &k.log_format);
        if let Some(port) = k.server_port {
            flags.push((
                "--server-port".into(),
                "listen.addresses".into(),
                FlagValue::Many(vec![format!("0.0.0.0:{port}")]),
            ));
        }
        if !k.listen.is_empty() {
            flags.push((
                "--listen".into(),
                "listen.addresses".into(),
                FlagValue::Many(k.listen.clone()),
            ));
        }
        Overrides {
            config_path: self.config.clone(),
            flags,
        }
    }
}

/// `0.1.0 (OpenSSL 3.0.19 ...)`, and with `fips`, what FIPS support this machine has.
fn version_string(fips: bool) -> &'static str {
    let mut text = format!(
        "{} ({})",
        env!("CARGO_PKG_VERSION"),
        openssl::version::version()
    );
    if fips {
        let provider = crate::fips::available_provider()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "not available".into());
        let kernel = if crate::fips::kernel_fips_enabled() {
            "on"
        } else {
            "off"
        };
        text.push_str(&format!(
            "\nFIPS provider: {provider}\nkernel FIPS mode: {kernel} (tls.fips = \"auto\" follows it)"
        ));
    }
    // Built once per process, for clap's lifetime.
    Box::leak(text.into_boxed_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn pgt_proxy_flags_are_aliases() {
        let cli = Cli::try_parse_from([
            "pgt-proxy",
            "--server-private-key-path",
            "k.pem",
            "--server-certificate-path",
            "c.pem",
            "--server-port",
            "6432",
            "--client-connection-host-or-ip",
            "db",
            "--client-connection-port",
            "5433",
            "--client-tls-validation-host",
            "db.example",
            "--client-ca-roots-path",
            "/cas",
        ])
        .unwrap();
        let keys: Vec<(String, FlagValue)> = cli
            .overrides()
            .flags
            .into_iter()
            .map(|(_, k, v)| (k, v))
            .collect();
        let one = |k: &str, v: &str| (k.to_owned(), FlagValue::One(v.to_owned()));
        assert!(keys.contains(&one("listen.private_key", "k.pem")));
        assert!(keys.contains(&one("listen.certificate", "c.pem")));
        assert!(keys.contains(&one("upstream.host", "db")));
        assert!(keys.contains(&one("upstream.port", "5433")));
        assert!(keys.contains(&one("upstream.tls_server_name", "db.example")));
        assert!(keys.contains(&one("upstream.ca", "/cas")));
        assert!(keys.contains(&(
            "listen.addresses".to_owned(),
            FlagValue::Many(vec!["0.0.0.0:6432".into()])
        )));
        assert_eq!(cli.command, None);
    }
}
