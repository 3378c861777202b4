//! The systemd side of the daemon: readiness and stopping notifications, a one-line STATUS,
//! watchdog pings, and configuration reload on SIGHUP and when a file it was loaded from
//! changes (the configuration file, `conf.d`, certificates, keys, CRLs).
//!
//! Every notification is best effort: without NOTIFY_SOCKET (not under systemd) they are
//! no-ops. Reload goes through the same loading and validation as start-up, and swaps the
//! settings (TLS contexts included) in one atomic store: new connections use the new ones,
//! live sessions keep what they started with, and a broken configuration changes nothing.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sd_notify::NotifyState;

use super::runtimes::SessionThreads;
use super::shared::Shared;
use crate::config::ConfigError;
use crate::config::schema::ProxyProtocol;
use crate::running::Running;
use crate::settings::listeners;

use crate::settings::Settings;

/// How often STATUS is refreshed.
const STATUS_INTERVAL: Duration = Duration::from_secs(5);

/// Sends `states` to the service manager, if there is one.
pub(crate) fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Loads and validates the whole configuration, as at start-up.
pub(crate) type Loader = Box<dyn Fn() -> Result<Settings, Vec<ConfigError>> + Send + Sync>;

/// The service's state shown in STATUS, and how to reload it.
pub(crate) struct Service {
    shared: Arc<Shared>,
    last_reload: Mutex<String>,
    threads: Arc<SessionThreads>,
    load: Loader,
}

impl Service {
    /// Tracks `shared`, which serves its listening sockets with sessions on `threads`;
    /// `load` reloads.
    pub(crate) fn new(
        shared: Arc<Shared>,
        threads: Arc<SessionThreads>,
        load: Loader,
    ) -> Arc<Self> {
        Arc::new(Self {
            shared,
            last_reload: Mutex::new("none".into()),
            threads,
            load,
        })
    }

    /// E.g. `3 active sessions, 120 served; last reload: ok`.
    pub(crate) fn status(&self) -> String {
        let last = self
            .last_reload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        format!(
            "{} active sessions, {} served; last reload: {last}",
            self.shared.sessions.active.load(Ordering::Relaxed),
            self.shared.sessions.total.load(Ordering::Relaxed),
        )
    }

    /// Tells systemd the proxy is ready (listeners bound, everything loaded).
    pub(crate) fn ready(&self) {
        notify(&[NotifyState::Ready, NotifyState::Status(&self.status())]);
    }

    /// Refreshes STATUS every few seconds, for `systemctl status`.
    pub(crate) async fn report_status(self: Arc<Self>) {
        // The first STATUS goes out with READY=1; refresh from one interval later.
        let start = tokio::time::Instant::now() + STATUS_INTERVAL;
        let mut tick = tokio::time::interval_at(start, STATUS_INTERVAL);
        loop {
            tick.tick().await;
            notify(&[NotifyState::Status(&self.status())]);
        }
    }

    /// Sends WATCHDOG=1 at half of WATCHDOG_USEC while the proxy is healthy
    /// ([`super::health::check`], session threads answering within a quarter of it). It runs on the control runtime, so a
    /// stalled control runtime stops the pings too.
    pub(crate) async fn feed_watchdog(self: Arc<Self>) {
        let Some(period) = sd_notify::watchdog_enabled() else {
            return;
        };
        let mut tick = tokio::time::interval(period / 2);
        loop {
            tick.tick().await;
            match super::health::check(&self.shared, &self.threads, period / 4).await {
                Ok(()) => notify(&[NotifyState::Watchdog]),
                Err(e) => tracing::error!("{e}; no longer feeding the watchdog"),
            }
        }
    }

    /// Reloads on every SIGHUP.
    pub(crate) async fn reload_on_sighup(self: Arc<Self>) {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::error!("cannot install the SIGHUP handler; reload is unavailable");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the configuration");
            self.reload();
        }
    }

    /// Reloads whenever the configuration file, a `conf.d` file, or a CRL, certificate or key
    /// file in use changes (new, replaced, touched, removed, or a symlink turned to another
    /// file), checked every `tls.crl_refresh`: a ConfigMap edit (Kubernetes swaps its `..data`
    /// link), a CRL updated on disk or a certificate renewed in place (certbot, a Secret)
    /// applies without a restart or a signal. A broken edit is refused by the reload, which
    /// keeps the running configuration, and is not retried until the files change again.
    pub(crate) async fn reload_on_file_change(self: Arc<Self>) {
        let state = |s: &Settings| {
            (
                file_state(&s.config_files),
                file_state(&s.crl_paths),
                file_state(&s.identity_files()),
            )
        };
        let mut seen = state(&self.shared.settings.load());
        loop {
            let every = self.shared.settings.load().crl_refresh;
            tokio::time::sleep(every).await;
            let (config, crls, identities) = state(&self.shared.settings.load());
            if config != seen.0 {
                tracing::info!("configuration files changed: reloading the configuration");
            } else if crls != seen.1 {
                tracing::info!("CRL files changed: reloading the configuration");
            } else if identities != seen.2 {
                tracing::info!("certificate or key files changed: reloading the configuration");
            } else {
                continue;
            }
            self.reload();
            seen = state(&self.shared.settings.load());
        }
    }

    /// `new`, unless its `[listen]` rule would leave a bound socket beside another with
    /// a rule check-config refuses (the extras' rules change only with a restart).
    fn fits_bound_listeners(&self, new: Settings) -> Result<Settings, Vec<String>> {
        let running = self.shared.settings.load();
        let protocol = if new.listen.proxy_v2 {
            ProxyProtocol::V2
        } else {
            ProxyProtocol::Off
        };
        let start = &running.start;
        let refused = listeners::reload_conflicts(&start.addresses, protocol, &start.extra);
        if refused.is_empty() {
            Ok(new)
        } else {
            Err(refused)
        }
    }

    /// One reload: RELOADING=1, load and validate everything, swap or keep, READY=1.
    pub(crate) fn reload(&self) {
        let mut states = vec![NotifyState::Reloading];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        notify(&states);
        let loaded = (self.load)()
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>());
        let outcome = match loaded.and_then(|new| self.fits_bound_listeners(new)) {
            Ok(mut new) => {
                let running = self.shared.settings.load();
                let restart = running.start.changed_keys(&new.start);
                // What is bound and set up stays the process's own: the next reload still
                // names what is pending, and an edit put back is no longer a change.
                new.start = running.start.clone();
                drop(running);
                for warning in &new.warnings {
                    tracing::warn!("{warning}");
                }
                crate::tls::dates::publish(&new.certificate_files, &new.crl_paths);
                self.shared.settings.store(Arc::new(Running::start(new)));
                if !restart.is_empty() {
                    tracing::warn!(
                        "configuration reloaded, but {} changed and apply only after a restart",
                        restart.join(", ")
                    );
                }
                tracing::info!("configuration reloaded; new connections use it");
                let ok = crate::metrics::ResultLabel { result: "ok" };
                crate::metrics::get().reloads.get_or_create(&ok).inc();
                crate::metrics::get().configuration_loaded();
                "ok".to_owned()
            }
            Err(errors) => {
                for e in &errors {
                    tracing::error!("reload failed: {e}");
                }
                tracing::error!(
                    "reload failed with {} error(s); still serving with the previous configuration",
                    errors.len()
                );
                let failed = crate::metrics::ResultLabel { result: "failed" };
                crate::metrics::get().reloads.get_or_create(&failed).inc();
                format!("reload failed: {}", errors[0])
            }
        };
        *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = outcome;
        notify(&[NotifyState::Ready, NotifyState::Status(&self.status())]);
    }
}

/// What identifies a file's current content: its path, the file it resolves to through
/// symlinks (which Kubernetes' `..data` swap changes even when size and time match), its
/// size and modification time.
type FileState = (PathBuf, Option<PathBuf>, u64, Option<SystemTime>);

/// [`FileState`] of every file in `paths` (files, or directories of files).
fn file_state(paths: &[PathBuf]) -> Vec<FileState> {
    let mut state = Vec::new();
    for path in paths {
        for file in crate::tls::files::list_files(path).unwrap_or_default() {
            let target = std::fs::canonicalize(&file).ok();
            let meta = std::fs::metadata(&file).ok();
            let len = meta.as_ref().map(|m| m.len()).unwrap_or(0);
            let modified = meta.and_then(|m| m.modified().ok());
            state.push((file, target, len, modified));
        }
    }
    state
}
