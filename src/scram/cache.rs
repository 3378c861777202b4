//! The auth query's answers, remembered: a verifier and "no verifier" each for their own
//! lifetime (both `auth.cache_ttl` in service). Each kind lives in its own bounded map, because anyone can make the proxy ask
//! about made-up names: their answers can only push out each other, never a verifier; and
//! "no verifier" never replaces a verifier that is still fresh (only an explicit
//! [`AnswerCache::forget`], when the server has shown that verifier stale, drops it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::protocol::scram::Verifier;

/// How many answers of each kind are kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Users with a verifier.
    pub positive: usize,
    /// Users without one.
    pub negative: usize,
}

/// Both maps, with their lifetimes and bounds.
#[derive(Debug)]
pub(crate) struct AnswerCache {
    positive: HashMap<String, (Verifier, Instant)>,
    negative: HashMap<String, Instant>,
    ttl: Duration,
    negative_ttl: Duration,
    limits: Limits,
}

impl AnswerCache {
    /// An empty cache; `ttl` for verifiers, `negative_ttl` for "no verifier".
    pub fn new(ttl: Duration, negative_ttl: Duration, limits: Limits) -> Self {
        Self {
            positive: HashMap::new(),
            negative: HashMap::new(),
            ttl,
            negative_ttl,
            limits,
        }
    }

    /// The fresh answer for `user` at `now`: `Some(None)` is a remembered "no verifier".
    pub fn get(&self, user: &str, now: Instant) -> Option<Option<Verifier>> {
        if let Some((v, until)) = self.positive.get(user)
            && now < *until
        {
            return Some(Some(v.clone()));
        }
        self.negative
            .get(user)
            .filter(|until| now < **until)
            .map(|_| None)
    }

    /// Remembers the query's answer for `user`, fetched at `now`.
    pub fn insert(&mut self, user: &str, answer: Option<Verifier>, now: Instant) {
        match answer {
            Some(verifier) => {
                self.negative.remove(user);
                if !self.positive.contains_key(user) {
                    make_room(&mut self.positive, self.limits.positive, now, |e| e.1);
                }
                let until = later(now, self.ttl);
                self.positive.insert(user.to_owned(), (verifier, until));
            }
            None => {
                match self.positive.get(user) {
                    Some((_, until)) if now < *until => return,
                    Some(_) => {
                        self.positive.remove(user);
                    }
                    None => {}
                }
                if !self.negative.contains_key(user) {
                    make_room(&mut self.negative, self.limits.negative, now, |until| {
                        *until
                    });
                }
                let until = later(now, self.negative_ttl);
                self.negative.insert(user.to_owned(), until);
            }
        }
    }

    /// Drops whatever is remembered for `user`.
    pub fn forget(&mut self, user: &str) {
        self.positive.remove(user);
        self.negative.remove(user);
    }

    /// How many verifiers and how many "no verifier" answers are held (expired included).
    #[cfg(test)]
    pub fn len(&self) -> (usize, usize) {
        (self.positive.len(), self.negative.len())
    }
}

/// `now + ttl`, or as far as an `Instant` goes (a TTL of centuries must not panic).
fn later(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

/// Frees one slot in a full map: expired entries first, else the one expiring soonest.
fn make_room<V>(
    map: &mut HashMap<String, V>,
    limit: usize,
    now: Instant,
    until: impl Fn(&V) -> Instant,
) {
    if map.len() < limit {
        return;
    }
    map.retain(|_, v| now < until(v));
    if map.len() < limit {
        return;
    }
    let soonest = map
        .iter()
        .min_by_key(|(_, v)| until(v))
        .map(|(k, _)| k.clone());
    if let Some(key) = soonest {
        map.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn verifier(n: u8) -> Verifier {
        Verifier {
            iterations: 4096,
            salt: vec![n; 16],
            stored_key: [n; 32],
            server_key: [n; 32],
        }
    }

    const TTL: Duration = Duration::from_secs(300);
    const NEG: Duration = Duration::from_secs(30);

    fn cache(positive: usize, negative: usize) -> AnswerCache {
        AnswerCache::new(TTL, NEG, Limits { positive, negative })
    }

    #[test]
    fn answers_expire_after_their_ttl() {
        let t = Instant::now();
        let mut c = cache(10, 10);
        c.insert("alice", Some(verifier(1)), t);
        c.insert("nobody", None, t);
        assert_eq!(
            c.get("alice", t + TTL - Duration::from_secs(1)),
            Some(Some(verifier(1)))
        );
        assert_eq!(c.get("alice", t + TTL), None);
        assert_eq!(
            c.get("nobody", t + NEG - Duration::from_secs(1)),
            Some(None)
        );
        assert_eq!(c.get("nobody", t + NEG), None);
        assert_eq!(c.get("carol", t), None);
    }

    #[test]
    fn no_verifier_never_replaces_a_fresh_verifier() {
        let t = Instant::now();
        let mut c = cache(10, 10);
        c.insert("alice", Some(verifier(1)), t);
        c.insert("alice", None, t + Duration::from_secs(1));
        assert_eq!(
            c.get("alice", t + Duration::from_secs(2)),
            Some(Some(verifier(1)))
        );
        // Once it has expired, the newer answer stands.
        c.insert("alice", None, t + TTL);
        assert_eq!(c.get("alice", t + TTL), Some(None));
        assert_eq!(c.len(), (0, 1));
        // Forgetting is how a stale verifier goes before its time.
        c.insert("bob", Some(verifier(2)), t);
        c.forget("bob");
        c.insert("bob", None, t);
        assert_eq!(c.get("bob", t), Some(None));
    }

    #[test]
    fn a_verifier_replaces_no_verifier() {
        let t = Instant::now();
        let mut c = cache(10, 10);
        c.insert("alice", None, t);
        c.insert("alice", Some(verifier(1)), t);
        assert_eq!(c.get("alice", t), Some(Some(verifier(1))));
        assert_eq!(c.len(), (1, 0));
    }

    #[test]
    fn a_flood_of_unknown_names_keeps_every_verifier() {
        let t = Instant::now();
        let mut c = cache(3, 5);
        for (i, user) in ["alice", "bob", "carol"].into_iter().enumerate() {
            c.insert(user, Some(verifier(i as u8)), t);
        }
        for i in 0..1000 {
            c.insert(&format!("junk{i}"), None, t + Duration::from_millis(i));
        }
        assert_eq!(c.len(), (3, 5));
        for user in ["alice", "bob", "carol"] {
            assert!(matches!(c.get(user, t), Some(Some(_))), "{user}");
        }
        // The newest junk stays, the oldest went.
        assert_eq!(c.get("junk999", t + Duration::from_secs(1)), Some(None));
        assert_eq!(c.get("junk0", t + Duration::from_secs(1)), None);
    }

    #[test]
    fn a_full_map_drops_expired_entries_first_then_the_oldest() {
        let t = Instant::now();
        let mut c = cache(2, 2);
        c.insert("old", Some(verifier(1)), t);
        c.insert("new", Some(verifier(2)), t + TTL);
        c.insert("newer", Some(verifier(3)), t + TTL + Duration::from_secs(1));
        let now = t + TTL + Duration::from_secs(2);
        assert!(c.get("new", now).is_some() && c.get("newer", now).is_some());
        c.insert("newest", Some(verifier(4)), now);
        assert_eq!(c.get("new", now), None);
        assert!(c.get("newer", now).is_some() && c.get("newest", now).is_some());
    }

    #[test]
    fn a_ttl_of_centuries_does_not_panic() {
        let t = Instant::now();
        let mut c = AnswerCache::new(
            Duration::MAX,
            Duration::MAX,
            Limits {
                positive: 1,
                negative: 1,
            },
        );
        c.insert("alice", Some(verifier(1)), t);
        c.insert("nobody", None, t);
        assert!(c.get("alice", t).is_some() && c.get("nobody", t).is_some());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Found(u8, u8),
        NotFound(u8),
        Forget(u8),
        Wait(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..12, 1u8..4).prop_map(|(u, v)| Op::Found(u, v)),
            (0u8..40).prop_map(Op::NotFound),
            (0u8..12).prop_map(Op::Forget),
            (0u16..400).prop_map(Op::Wait),
        ]
    }

    proptest! {
        /// Against a model with no bounds: within the bounds the cache answers as the model
        /// does, and a user whose verifier is fresh in the model keeps it while the
        /// verifiers fit, however many "no verifier" answers arrive.
        #[test]
        fn bounds_never_cost_a_verifier_to_a_negative(ops in proptest::collection::vec(op(), 1..200)) {
            let start = Instant::now();
            let mut now = start;
            let mut c = cache(12, 4);
            let mut model: HashMap<String, (Option<Verifier>, Instant)> = HashMap::new();
            for op in ops {
                match op {
                    Op::Found(u, v) => {
                        let user = format!("u{u}");
                        c.insert(&user, Some(verifier(v)), now);
                        model.insert(user, (Some(verifier(v)), now + TTL));
                    }
                    Op::NotFound(u) => {
                        let user = format!("u{u}");
                        c.insert(&user, None, now);
                        let fresh_positive = matches!(model.get(&user), Some((Some(_), until)) if now < *until);
                        if !fresh_positive {
                            model.insert(user, (None, now + NEG));
                        }
                    }
                    Op::Forget(u) => {
                        let user = format!("u{u}");
                        c.forget(&user);
                        model.remove(&user);
                    }
                    Op::Wait(s) => now += Duration::from_secs(u64::from(s)),
                }
                let (positive, negative) = c.len();
                prop_assert!(positive <= 12 && negative <= 4);
                for (user, (answer, until)) in &model {
                    let got = c.get(user, now);
                    match answer {
                        // Twelve names can hold verifiers, as many as the bound: none is lost.
                        Some(v) if now < *until => prop_assert_eq!(got, Some(Some(v.clone())), "{}", user),
                        // A negative may have been pushed out by another, never be wrong.
                        None if now < *until => prop_assert!(got.is_none() || got == Some(None)),
                        _ => prop_assert!(got.is_none(), "{} expired", user),
                    }
                }
            }
        }
    }
}
