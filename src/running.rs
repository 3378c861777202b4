//! The configuration a process serves with: the validated [`Settings`], and what is started
//! from them and lives until the next reload swaps them whole, each upstream's verifier
//! store (its cache, and the auth query's connections).
//!
//! `check-config` validates without starting anything; a start and every reload validate
//! the same way, then start a new store, so a reload empties the cache.

use std::ops::Deref;
use std::sync::Arc;

use crate::scram::verifiers::Verifiers;
use crate::settings::{Settings, Target};

/// Validated settings and the state started from them.
pub struct Running {
    settings: Settings,
    /// One store for each upstream (`[upstream]` and every `[upstreams.NAME]`).
    stores: Vec<(Arc<Target>, Verifiers)>,
    /// What an upstream without a store of its own gets: no verifiers, so its users are
    /// unknown users. Every upstream a route can lead to has one.
    none: Verifiers,
}

impl Running {
    /// Starts the verifier stores of `settings`' upstreams.
    pub fn start(settings: Settings) -> Self {
        let targets = settings.default.iter().chain(settings.targets.values());
        let stores = targets
            .map(|t| (Arc::clone(t), Verifiers::start(&t.auth.verifiers)))
            .collect();
        let none = Verifiers::new(Arc::default(), None, std::time::Duration::ZERO);
        Self {
            settings,
            stores,
            none,
        }
    }

    /// The verifier store of `target`, one of these settings' upstreams.
    pub(crate) fn verifiers(&self, target: &Target) -> &Verifiers {
        self.stores
            .iter()
            .find(|(t, _)| std::ptr::eq(Arc::as_ptr(t), target))
            .map_or(&self.none, |(_, store)| store)
    }
}

impl Deref for Running {
    type Target = Settings;

    fn deref(&self) -> &Settings {
        &self.settings
    }
}
