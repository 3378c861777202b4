//! The `pgt-proxy` binary: parse the command line, load and validate the configuration
//! (and set up FIPS mode) before binding anything, then run the server until SIGTERM or
//! SIGINT.

use std::process::ExitCode;
use std::sync::Arc;

use pgt_proxy::cli::{Cli, Command};
use pgt_proxy::config::{self, ConfigError, LoadedConfig, Overrides};
use pgt_proxy::fips::{self, ProviderInfo};
use pgt_proxy::service::{self, Service};
use pgt_proxy::settings::Settings;
use pgt_proxy::{check, logging, memory, server, session};

/// sysexits.h: EX_UNAVAILABLE, a listening address could not be bound.
const EX_UNAVAILABLE: u8 = 69;
/// sysexits.h: EX_CONFIG.
const EX_CONFIG: u8 = 78;

/// Reads every configuration layer; the process environment is the variables layer.
fn load_config(overrides: &Overrides) -> Result<LoadedConfig, Vec<ConfigError>> {
    // Only valid UTF-8 variables can be configuration; others are skipped, not a panic.
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    config::load(overrides, env)
}

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    let overrides = cli.overrides();

    if cli.command == Some(Command::Manpage) {
        return match Cli::write_man_page(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pgt-proxy: cannot write the man page: {e}");
                ExitCode::FAILURE
            }
        };
    }

    let loaded = load_config(&overrides);
    // FIPS mode and tls.openssl_config apply to the whole process, once, before any TLS
    // context exists; reloads keep them.
    let fips = loaded.as_ref().ok().map(|l| fips::prepare(&l.raw.tls));
    let fips_error = match &fips {
        Some(Err(e)) => Some(ConfigError::Key {
            origin: loaded
                .as_ref()
                .map(|l| l.origin("tls.fips"))
                .unwrap_or(config::Origin::Default),
            key: "tls.fips".into(),
            message: e.to_string(),
        }),
        _ => None,
    };
    let provider: Option<ProviderInfo> = fips.and_then(Result::ok).flatten();

    if cli.command == Some(Command::CheckConfig) {
        let (text, ok) = match (&loaded, fips_error) {
            (Err(errors), _) => check::report(Err(errors), None, None),
            (Ok(loaded), Some(e)) => check::report(Ok(loaded), Some(Err(&[e])), None),
            (Ok(loaded), None) => {
                let settings = Settings::from_config(loaded, provider.as_ref());
                check::report(
                    Ok(loaded),
                    Some(settings.as_ref().map_err(Vec::as_slice)),
                    Some(provider.as_ref()),
                )
            }
        };
        print!("{text}");
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }

    let settings = match (&loaded, fips_error) {
        (Err(errors), _) => return config_failure(errors),
        (Ok(_), Some(e)) => return config_failure(&[e]),
        (Ok(loaded), None) => match Settings::from_config(loaded, provider.as_ref()) {
            Ok(settings) => settings,
            Err(errors) => return config_failure(&errors),
        },
    };
    let log_warning = logging::init(
        &settings.log_level,
        settings.log_format,
        settings.log_target,
    );
    if let Some(warning) = log_warning {
        tracing::warn!("{warning}");
    }
    match &provider {
        Some(p) => tracing::info!("FIPS mode active: {p}"),
        None => tracing::info!("FIPS mode off"),
    }
    if let Some(warning) = server::raise_fd_limit(settings.listen.max_connections) {
        tracing::warn!("{warning}");
    }
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    memory::limit_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Blocking threads only resolve the upstream's name (and trim memory): a burst of
        // connects must not start hundreds of them, each with a stack and an arena.
        .max_blocking_threads(memory::MAX_BLOCKING_THREADS)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgt-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listeners = match server::bind(&settings.listen.addresses).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::from(EX_UNAVAILABLE);
            }
        };
        for l in &listeners {
            if let Ok(addr) = l.local_addr() {
                tracing::info!(listen = %addr, "listening");
            }
        }
        tracing::info!(
            upstream = %format_args!("{}:{}", settings.upstream.host, settings.upstream.port),
            openssl = openssl::version::version(),
            "pgt-proxy {} ready",
            env!("CARGO_PKG_VERSION")
        );
        let shared = session::Shared::new(settings);
        let reload = move || {
            let loaded = load_config(&overrides)?;
            Settings::from_config(&loaded, provider.as_ref())
        };
        let service = Service::new(Arc::clone(&shared), listeners.len(), Box::new(reload));
        // READY=1 first: nothing may notify before it.
        service.ready();
        tokio::spawn(Arc::clone(&service).report_status());
        tokio::spawn(Arc::clone(&service).feed_watchdog());
        tokio::spawn(Arc::clone(&service).reload_on_sighup());
        tokio::spawn(Arc::clone(&service).reload_on_crl_change());
        server::run(listeners, shared, async {
            shutdown_signal().await;
            service::notify(&[sd_notify::NotifyState::Stopping]);
        })
        .await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

fn config_failure(errors: &[ConfigError]) -> ExitCode {
    for e in errors {
        eprintln!("pgt-proxy: configuration error: {e}");
    }
    eprintln!(
        "pgt-proxy: {} configuration error(s); not starting (run `pgt-proxy check-config` for details)",
        errors.len()
    );
    ExitCode::from(EX_CONFIG)
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
