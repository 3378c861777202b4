//! Where the proxy's SCRAM verifiers come from: `auth.userlist` (pgbouncer's format), then
//! the auth query, whose answers are cached for `auth.cache_ttl` (a user with none as long
//! as one with a verifier: a shorter life would let a prober tell them apart by the
//! lookup's cost) and refreshed at most three times a minute per user when the server's verifier
//! has changed. A reload builds a new store, which empties the cache.
//!
//! What `[auth]` says ([`Sources`]) is checked with the configuration; the store is started
//! from it for the process that serves with that configuration, never by `check-config`.
//!
//! Each query runs on a task of its own ([`super::flights`]), shared by every login waiting
//! for the same user, and fills the cache when it ends, whether or not anyone still waits.
//! A refresh first forgets the cached verifier (the server has just shown it stale), so
//! "no verifier" can then be remembered for that user; otherwise a "no verifier" answer
//! never replaces a fresh verifier ([`super::cache`]).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::cache::{AnswerCache, Limits};
use super::flights::Flights;
use super::query::{AuthQuery, QuerySpec};
use crate::protocol::scram::{Verifier, parse_verifier};

/// Most refreshes per user within [`REFRESH_WINDOW`].
const MAX_REFRESHES: usize = 3;
const REFRESH_WINDOW: Duration = Duration::from_secs(60);
/// Most users remembered with a verifier, and apart from them, without one.
const CACHE_LIMITS: Limits = Limits {
    positive: 10_000,
    negative: 10_000,
};
/// Most users whose refreshes are counted.
const REFRESH_LIMIT: usize = 10_000;

/// Where one upstream's verifiers come from, as `[auth]` sets them: the userlist, read and
/// parsed while the configuration is checked, the auth query, and the cache's lifetime.
pub(crate) struct Sources {
    /// `auth.userlist`'s verifiers, by user.
    pub userlist: Arc<HashMap<String, Verifier>>,
    /// `auth.query_user` and the query's other keys.
    pub query: Option<QuerySpec>,
    /// `auth.cache_ttl`.
    pub cache_ttl: Duration,
}

/// Where a verifier came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `auth.userlist`.
    Userlist,
    /// The auth query.
    Query,
}

/// One query's outcome, as every login waiting for it gets it.
type Answer = Result<Option<Verifier>, String>;

/// What a query's task needs after its client has gone.
struct Shared {
    query: AuthQuery,
    cache: Mutex<AnswerCache>,
}

impl Shared {
    fn cache(&self) -> std::sync::MutexGuard<'_, AnswerCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The verifiers a configuration gives access to.
pub(crate) struct Verifiers {
    userlist: Arc<HashMap<String, Verifier>>,
    query: Option<(Arc<Shared>, Arc<Flights<Answer>>)>,
    refreshes: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Verifiers {
    /// A store over `sources`, with an empty cache; the query connects at its first fetch.
    pub fn start(sources: &Sources) -> Self {
        let query = sources.query.clone().map(AuthQuery::new);
        Self::new(Arc::clone(&sources.userlist), query, sources.cache_ttl)
    }

    /// A store over a parsed userlist and an optional query.
    pub fn new(
        userlist: Arc<HashMap<String, Verifier>>,
        query: Option<AuthQuery>,
        ttl: Duration,
    ) -> Self {
        let query = query.map(|query| {
            let flights = Flights::new(query.concurrency());
            let cache = Mutex::new(AnswerCache::new(ttl, ttl, CACHE_LIMITS));
            (Arc::new(Shared { query, cache }), flights)
        });
        Self {
            userlist,
            query,
            refreshes: Mutex::default(),
        }
    }

    /// `user`'s verifier and where it came from; `Ok(None)` when the user has none.
    pub async fn lookup(&self, user: &str) -> Result<Option<(Verifier, Source)>, String> {
        if let Some(v) = self.userlist.get(user) {
            return Ok(Some((v.clone(), Source::Userlist)));
        }
        let Some((shared, _)) = &self.query else {
            return Ok(None);
        };
        let cached = shared.cache().get(user, Instant::now());
        let found = match cached {
            Some(answer) => answer,
            None => self.fetch(user).await?,
        };
        Ok(found.map(|v| (v, Source::Query)))
    }

    /// Fetches `user`'s verifier again (its server-side verifier has changed), within the
    /// refresh limit; `Ok(None)` when the limit is reached or the user has none now.
    pub async fn refresh(&self, user: &str) -> Result<Option<Verifier>, String> {
        if self.query.is_none() {
            return Ok(None);
        }
        self.forget(user);
        if !self.may_refresh(user) {
            return Ok(None);
        }
        self.fetch(user).await
    }

    /// Drops `user`'s cached answer.
    pub fn forget(&self, user: &str) {
        if let Some((shared, _)) = &self.query {
            shared.cache().forget(user);
        }
    }

    /// The query's answer for `user`, from the lookup running for that user or a new one,
    /// which caches its answer when it ends.
    async fn fetch(&self, user: &str) -> Answer {
        let Some((shared, flights)) = &self.query else {
            return Ok(None);
        };
        let shared = Arc::clone(shared);
        let owned = user.to_owned();
        let waiting = flights.join(user, move || async move {
            let answer = shared.query.fetch(&owned).await;
            if let Ok(found) = &answer {
                shared.cache().insert(&owned, found.clone(), Instant::now());
            }
            answer
        });
        waiting
            .answer()
            .await
            .unwrap_or_else(|| Err("the auth query's task ended without an answer".into()))
    }

    fn may_refresh(&self, user: &str) -> bool {
        let mut all = self.refreshes.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if all.len() >= REFRESH_LIMIT {
            all.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) <= REFRESH_WINDOW)
            });
            if all.len() >= REFRESH_LIMIT {
                all.clear();
            }
        }
        let recent = all.entry(user.to_owned()).or_default();
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > REFRESH_WINDOW)
        {
            recent.pop_front();
        }
        if recent.len() >= MAX_REFRESHES {
            return false;
        }
        recent.push_back(now);
        true
    }
}

/// Parses a userlist: `"user" "SCRAM-SHA-256$..."` per line (a `""` inside quotes is one
/// quote), blank lines and lines starting with `;` or `#` ignored. Every bad line is
/// reported with its number.
pub(crate) fn parse_userlist(text: &str) -> Result<HashMap<String, Verifier>, Vec<String>> {
    let mut users = HashMap::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let Some((user, rest)) = quoted(line) else {
            errors.push(format!("line {n}: expected \"user\" \"verifier\""));
            continue;
        };
        // The verifier's text holds its keys in base64: zeroed once parsed.
        let Some((verifier, rest)) = quoted(rest.trim_start()).map(|(v, r)| (Zeroizing::new(v), r))
        else {
            errors.push(format!("line {n}: expected \"user\" \"verifier\""));
            continue;
        };
        if !rest.trim().is_empty() {
            errors.push(format!("line {n}: unexpected text after the verifier"));
            continue;
        }
        match parse_verifier(&verifier) {
            Ok(v) => {
                users.insert(user, v);
            }
            Err(e) => errors.push(format!("line {n} (user \"{user}\"): {e}")),
        }
    }
    if errors.is_empty() {
        Ok(users)
    } else {
        Err(errors)
    }
}

/// A `"..."` string at the front of `s` (with `""` for a quote) and what follows it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut rest = s.strip_prefix('"')?;
    let mut out = String::new();
    loop {
        let at = rest.find('"')?;
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        match rest.strip_prefix('"') {
            Some(after) => {
                out.push('"');
                rest = after;
            }
            None => return Some((out, rest)),
        }
    }
}

/// Reads and parses `auth.userlist`, checking its permissions as key files' are.
pub(crate) fn load_userlist(path: &Path) -> Result<HashMap<String, Verifier>, Vec<String>> {
    let shown = path.display();
    crate::tls::identity::check_key_permissions("auth.userlist", path)
        .map_err(|e| vec![e.to_string()])?;
    let text = std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|e| vec![format!("auth.userlist {shown}: cannot read: {e}")])?;
    parse_userlist(&text).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| format!("auth.userlist {shown}: {e}"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    #[test]
    fn userlist_lines_and_their_errors() {
        let text = format!("; comment\n\n\"alice\" \"{V}\"\n\"o\"\"brien\" \"{V}\"\n");
        let users = parse_userlist(&text).unwrap();
        assert_eq!(users.len(), 2);
        assert!(users.contains_key("o\"brien"));
        let bad = format!(
            "\"alice\" \"{V}\"\n\"bob\" \"md5a3556571e93b0d20722ba62be61e8c2d\"\n\"carol\" \"pencil\"\nnonsense\n"
        );
        let errors = parse_userlist(&bad).unwrap_err();
        assert_eq!(errors.len(), 3);
        assert!(errors[0].starts_with("line 2 (user \"bob\"): an md5 password hash"));
        assert!(errors[1].starts_with("line 3 (user \"carol\"): not a SCRAM-SHA-256 verifier"));
        assert!(errors[2].starts_with("line 4: expected"));
    }

    #[test]
    fn refreshes_are_limited_per_user() {
        let store = Verifiers::new(Arc::default(), None, Duration::from_secs(60));
        assert!((0..3).all(|_| store.may_refresh("alice")));
        assert!(!store.may_refresh("alice"));
        assert!(store.may_refresh("bob"));
    }
}
