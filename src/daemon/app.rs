//! The binary's orchestration, in order: parse the command line, load and validate the
//! configuration (and set up FIPS mode) before binding anything, start logging, bind, tell
//! systemd, and serve until SIGTERM or SIGINT. Returns the process's exit code (sysexits).

use std::process::ExitCode;
use std::sync::Arc;

use super::runtimes::{self, SessionThreads};
use super::service::{self, Service};
use super::shared::Shared;
use super::{admin, memory, server};
use crate::cli::{Cli, Command};
use crate::config::{self, ConfigError, LoadedConfig, Overrides};
use crate::fips::{self, ProviderInfo};
use crate::settings::Settings;
use crate::{check, fdlimit, logging};

/// sysexits.h: EX_UNAVAILABLE, a listening address could not be bound.
const EX_UNAVAILABLE: u8 = 69;
/// sysexits.h: EX_CONFIG.
const EX_CONFIG: u8 = 78;

/// Runs the `pgt-proxy` command.
pub fn main() -> ExitCode {
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
    let (provider, fips_error) = match &loaded {
        Ok(l) => prepare_fips(l),
        Err(_) => (None, None),
    };
    if let Some(Command::CheckConfig { connect }) = cli.command {
        return check_config(&loaded, fips_error, provider.as_ref(), connect);
    }
    let settings = match (&loaded, fips_error) {
        (Err(errors), _) => return config_failure(errors),
        (Ok(_), Some(e)) => return config_failure(&[e]),
        (Ok(loaded), None) => match Settings::from_config(loaded, provider.as_ref()) {
            Ok(settings) => settings,
            Err(errors) => return config_failure(&errors),
        },
    };
    start_logging(&settings, provider.as_ref());
    memory::limit_arenas();
    let runtime = match runtimes::control() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgt-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let fips_active = provider.is_some();
    let reload = move || {
        let loaded = load_config(&overrides)?;
        Settings::from_config(&loaded, provider.as_ref())
    };
    runtime.block_on(serve(settings, Box::new(reload), fips_active))
}

/// Reads every configuration layer; the process environment is the variables layer.
fn load_config(overrides: &Overrides) -> Result<LoadedConfig, Vec<ConfigError>> {
    // Only valid UTF-8 variables can be configuration; others are skipped, not a panic.
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    config::load(overrides, env)
}

/// Loads `tls.openssl_config` and activates FIPS mode if asked: the provider in use, or
/// the error as a problem with `tls.fips`.
fn prepare_fips(loaded: &LoadedConfig) -> (Option<ProviderInfo>, Option<ConfigError>) {
    match fips::prepare(&loaded.raw.tls) {
        Ok(provider) => (provider, None),
        Err(e) => (
            None,
            Some(ConfigError::Key {
                origin: loaded.origin("tls.fips"),
                key: "tls.fips".into(),
                message: e.to_string(),
            }),
        ),
    }
}

/// `pgt-proxy check-config`: the report, and success only for a usable configuration.
fn check_config(
    loaded: &Result<LoadedConfig, Vec<ConfigError>>,
    fips_error: Option<ConfigError>,
    provider: Option<&ProviderInfo>,
    connect: bool,
) -> ExitCode {
    let (text, ok) = match (loaded, fips_error) {
        (Err(errors), _) => check::report(Err(errors), None, None),
        (Ok(loaded), Some(e)) => check::report(Ok(loaded), Some(Err(&[e])), None),
        (Ok(loaded), None) => {
            let settings = Settings::from_config(loaded, provider);
            let (mut text, mut ok) = {
                let settings = settings.as_ref().map_err(Vec::as_slice);
                check::report(Ok(loaded), Some(settings), Some(provider))
            };
            if let (true, Ok(settings)) = (connect, &settings) {
                let (lines, reachable) = check::connect_all(settings);
                text.push_str(&lines);
                ok &= reachable;
            }
            (text, ok)
        }
    };
    print!("{text}");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Logging, and the start-up lines that need it.
fn start_logging(settings: &Settings, provider: Option<&ProviderInfo>) {
    let start = &settings.start;
    if let Some(warning) = logging::init(&start.log_level, start.log_format, start.log_target) {
        tracing::warn!("{warning}");
    }
    match provider {
        Some(p) => tracing::info!("FIPS mode active: {p}"),
        None => tracing::info!("FIPS mode off"),
    }
    tracing::info!(
        "{}",
        crate::check::key_exchange(settings, provider.is_some())
    );
    if let Some(warning) = fdlimit::raise(start.max_connections) {
        tracing::warn!("{warning}");
    }
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
}

/// Binds, tells systemd, serves until a stop signal.
async fn serve(settings: Settings, reload: service::Loader, fips_active: bool) -> ExitCode {
    let addresses = settings.start.listeners();
    let listeners = match server::bind(&addresses, settings.start.reuse_port).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    for (l, kind) in &listeners {
        if let Ok(addr) = l.local_addr() {
            let proxy_v2 = kind.proxy_v2(&settings.listen);
            tracing::info!(listen = %addr, proxy_protocol = if proxy_v2 { "v2" } else { "off" }, "listening");
        }
    }
    tracing::info!(
        upstream = %settings.default.as_ref().map_or_else(
            || format!("{} routes", settings.route_list.len()),
            |t| format!("{}:{}", t.upstream.host, t.upstream.port)
        ),
        openssl = openssl::version::version(),
        max_connections = settings.start.max_connections,
        "pgt-proxy {} ready",
        env!("CARGO_PKG_VERSION")
    );
    let admin = match settings.start.admin {
        Some(addr) => match admin::bind(addr).await {
            Ok(l) => {
                tracing::info!(admin = %l.local_addr().map_or(addr, |a| a), "admin endpoint listening (/metrics, /healthz, /readyz)");
                Some(l)
            }
            Err(e) => {
                tracing::error!("admin.listen: {e}");
                return ExitCode::from(EX_UNAVAILABLE);
            }
        },
        None => None,
    };
    let metrics = crate::metrics::get();
    metrics.fips_mode.set(i64::from(fips_active));
    let max = i64::try_from(settings.start.max_connections).unwrap_or(i64::MAX);
    metrics.max_connections.set(max);
    metrics.configuration_loaded();
    crate::tls::dates::publish(&settings.certificate_files, &settings.crl_paths);
    crate::cancel::key::set_own_id(settings.start.peer_id);
    let shared = Shared::new(settings);
    shared
        .listeners
        .store(listeners.len(), std::sync::atomic::Ordering::Relaxed);
    let tracker = tokio_util::task::TaskTracker::new();
    let threads = match SessionThreads::start(SessionThreads::per_core(), &tracker) {
        Ok(threads) => Arc::new(threads),
        Err(e) => {
            tracing::error!("cannot start the session threads: {e}");
            return ExitCode::FAILURE;
        }
    };
    let admin_stop = tokio_util::sync::CancellationToken::new();
    if let Some(l) = admin {
        let (shared, threads) = (Arc::clone(&shared), Arc::clone(&threads));
        tokio::spawn(admin::serve(l, shared, threads, admin_stop.clone()));
    }
    let service = Service::new(Arc::clone(&shared), Arc::clone(&threads), reload);
    // READY=1 once the accept loops run (as /readyz), and first: nothing may notify before it.
    let started = move || {
        service.ready();
        tokio::spawn(Arc::clone(&service).report_status());
        tokio::spawn(Arc::clone(&service).feed_watchdog());
        tokio::spawn(Arc::clone(&service).reload_on_sighup());
        tokio::spawn(Arc::clone(&service).reload_on_file_change());
    };
    let draining = Arc::clone(&shared);
    server::run(listeners, shared, threads, tracker, started, async move {
        shutdown_signal().await;
        // Not ready from now on, before the listeners close: a balancer stops sending.
        draining
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        service::notify(&[sd_notify::NotifyState::Stopping]);
    })
    .await;
    admin_stop.cancel();
    tracing::info!("stopped");
    ExitCode::SUCCESS
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
