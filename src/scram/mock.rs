//! The stand-in exchange for a user the proxy cannot check (no verifier, a failed lookup):
//! a verifier that looks like the real ones and that no proof matches, and the wait that
//! makes its server-first leave when a real user's would.
//!
//! - The salt is HMAC-SHA-256(secret, user), cut to PostgreSQL's 16 bytes: the same for a
//!   user at every try, across restarts and on every replica that shares
//!   `auth.mock_secret_file`, as a real salt is. Without the file, a per-process secret.
//! - The iteration count is the userlist's most common one (else PostgreSQL's 4096).
//! - The keys are fresh random bytes at each try: nothing outside ever sees them, and no
//!   ClientKey hashes to them.
//! - A real user's server-first waits for the server's (the proxy's own upstream login):
//!   those waits, per upstream, are kept, and a mock one waits as long as one drawn from them.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use openssl::error::ErrorStack;
use zeroize::Zeroizing;

use super::keys;
use crate::protocol::scram::{KEY_LEN, Verifier};

/// PostgreSQL's defaults for new verifiers.
pub(super) const DEFAULT_ITERATIONS: u32 = 4096;
const SALT_LEN: usize = 16;
/// The shortest secret accepted: 256 bits.
pub(super) const MIN_SECRET: usize = 32;
/// The longest file read.
const MAX_SECRET: u64 = 4096;
/// How many recent real waits are kept per upstream.
const SAMPLES: usize = 64;
/// No mock wait is longer (the startup deadline bounds real ones anyway).
const MAX_WAIT: Duration = Duration::from_secs(2);
/// The most a mock timer is set early, in microseconds.
const MAX_EARLY_US: u64 = 2000;
/// Most upstreams whose waits are remembered across reloads.
const MAX_UPSTREAMS: usize = 1024;

/// The mock side of one upstream's `[auth]`.
pub(crate) struct Mock {
    secret: Zeroizing<Vec<u8>>,
    iterations: u32,
    waits: Arc<Waits>,
}

impl Mock {
    /// A mock with `secret` (`None`: the per-process one) and `iterations`, whose waits are
    /// those of real users of `upstream` ("host:port").
    pub(crate) fn new(secret: Option<Zeroizing<Vec<u8>>>, iterations: u32, upstream: &str) -> Self {
        Self {
            secret: secret.unwrap_or_else(|| Zeroizing::new(process_secret().to_vec())),
            iterations,
            waits: waits_of(upstream),
        }
    }

    /// The stand-in verifier of `user`.
    pub(crate) fn verifier(&self, user: &str) -> Result<Verifier, ErrorStack> {
        let salt = keys::hmac(&self.secret, &[user.as_bytes()])?;
        let mut stored_key = [0u8; KEY_LEN];
        let mut server_key = [0u8; KEY_LEN];
        openssl::rand::rand_bytes(&mut stored_key)?;
        openssl::rand::rand_bytes(&mut server_key)?;
        Ok(Verifier {
            iterations: self.iterations,
            salt: salt[..SALT_LEN].to_vec(),
            stored_key,
            server_key,
        })
    }

    /// How long a real user's server-first waited for the server (from the client's
    /// AuthenticationSASL).
    pub(crate) fn observed(&self, wait: Duration) {
        self.waits.push(wait.min(MAX_WAIT));
    }

    /// How long a mock server-first waits (from the client's AuthenticationSASL): one of the
    /// recent real waits, at random; none before the first real login.
    pub(super) fn wait(&self) -> Duration {
        self.waits.draw()
    }

    /// Waits until [`Self::wait`] after `offered`, with a timer finer than tokio's (whose
    /// millisecond ticks are as long as a real wait), set early by how late it has woken
    /// on average: a real server-first is sent as soon as the server's is read.
    pub(crate) async fn hold(&self, offered: Instant) {
        let target = offered + self.wait();
        let early = self.waits.late_us.load(Ordering::Relaxed);
        let deadline = target
            .checked_sub(Duration::from_micros(early))
            .unwrap_or(target);
        if deadline <= Instant::now() {
            // No time to wait: the average decays, so a high one cannot stay.
            self.waits.late_us.store(early * 7 / 8, Ordering::Relaxed);
            return;
        }
        super::timer::sleep_until(deadline).await;
        let late = Instant::now().saturating_duration_since(deadline);
        let late = u64::try_from(late.as_micros()).map_or(MAX_EARLY_US, |l| l.min(MAX_EARLY_US));
        self.waits
            .late_us
            .store((early * 7 + late) / 8, Ordering::Relaxed);
    }
}

/// Recent real waits of one upstream, and how late a mock one's timer wakes on average.
#[derive(Default)]
struct Waits {
    recent: Mutex<VecDeque<Duration>>,
    late_us: AtomicU64,
}

impl Waits {
    fn push(&self, wait: Duration) {
        let mut all = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() >= SAMPLES {
            all.pop_front();
        }
        all.push_back(wait);
    }

    fn draw(&self) -> Duration {
        let all = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if all.is_empty() {
            return Duration::ZERO;
        }
        let mut r = [0u8; 4];
        // Without randomness the draw is the first sample: still a real wait.
        let _ = openssl::rand::rand_bytes(&mut r);
        let i = usize::try_from(u32::from_le_bytes(r)).unwrap_or(0) % all.len();
        all[i]
    }
}

/// The waits of `upstream`, kept across reloads (a reload must not leave the mock without
/// them).
fn waits_of(upstream: &str) -> Arc<Waits> {
    static ALL: OnceLock<Mutex<HashMap<String, Arc<Waits>>>> = OnceLock::new();
    let mut all = ALL
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if all.len() >= MAX_UPSTREAMS && !all.contains_key(upstream) {
        all.clear();
    }
    all.entry(upstream.to_owned()).or_default().clone()
}

/// The secret used when `auth.mock_secret_file` is unset: random, for this process only.
fn process_secret() -> &'static [u8; KEY_LEN] {
    static SECRET: OnceLock<[u8; KEY_LEN]> = OnceLock::new();
    SECRET.get_or_init(|| {
        let mut secret = [0u8; KEY_LEN];
        // Without randomness the mock salt would be predictable, not wrong; OpenSSL's
        // generator failing at start is reported by every other TLS operation anyway.
        let _ = openssl::rand::rand_bytes(&mut secret);
        secret
    })
}

/// Reads `auth.mock_secret_file`, checking its permissions as key files' are: every byte of
/// it is the secret (at least [`MIN_SECRET`]).
pub(crate) fn load_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    crate::tls::identity::check_key_permissions("auth.mock_secret_file", path)
        .map_err(|e| e.to_string())?;
    let shown = path.display();
    let mut secret = Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SECRET + 1).read_to_end(&mut secret))
        .map_err(|e| format!("auth.mock_secret_file {shown}: cannot read: {e}"))?;
    let len = secret.len();
    if len < MIN_SECRET || len as u64 > MAX_SECRET {
        return Err(format!(
            "auth.mock_secret_file {shown}: holds {len} bytes; it must hold {MIN_SECRET} to {MAX_SECRET} random bytes \
             (e.g. head -c 32 /dev/urandom)"
        ));
    }
    Ok(secret)
}

/// The iteration count most verifiers of `userlist` use (the higher one on a tie), else
/// PostgreSQL's default.
pub(crate) fn common_iterations<'a>(userlist: impl Iterator<Item = &'a Verifier>) -> u32 {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for v in userlist {
        *counts.entry(v.iterations).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(iterations, n)| (n, iterations))
        .map_or(DEFAULT_ITERATIONS, |(iterations, _)| iterations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::scram::parse_verifier;

    #[test]
    fn mock_salts_are_hmac_of_the_user_and_look_real() {
        let mock = Mock::new(Some(Zeroizing::new(vec![7u8; 32])), 4096, "h:1");
        let a = mock.verifier("alice").unwrap();
        let again = mock.verifier("alice").unwrap();
        assert_eq!(a.salt, again.salt);
        assert_ne!(a.stored_key, again.stored_key, "keys are fresh at each try");
        assert_eq!(
            a.salt,
            keys::hmac(&[7u8; 32], &[b"alice"]).unwrap()[..16].to_vec()
        );
        assert_ne!(a.salt, mock.verifier("bob").unwrap().salt);
        assert_eq!((a.salt.len(), a.iterations), (16, 4096));
        let real = parse_verifier("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=").unwrap();
        assert_eq!(real.salt.len(), a.salt.len());
        let other = Mock::new(Some(Zeroizing::new(vec![8u8; 32])), 4096, "h:1");
        assert_ne!(other.verifier("alice").unwrap().salt, a.salt);
    }

    #[test]
    fn the_iteration_count_is_the_most_common() {
        let v = |i| Verifier {
            iterations: i,
            salt: vec![0; 16],
            stored_key: [0; 32],
            server_key: [0; 32],
        };
        let list = [v(4096), v(10000), v(10000), v(600_000)];
        assert_eq!(common_iterations(list.iter()), 10000);
        assert_eq!(common_iterations([].iter()), DEFAULT_ITERATIONS);
        assert_eq!(common_iterations([v(4096), v(8192)].iter()), 8192);
    }

    #[test]
    fn waits_are_drawn_from_what_was_observed() {
        let mock = Mock::new(None, 4096, "waits-test:1");
        assert_eq!(mock.wait(), Duration::ZERO);
        for ms in [3, 5] {
            mock.observed(Duration::from_millis(ms));
        }
        mock.observed(Duration::from_secs(60));
        for _ in 0..20 {
            let w = mock.wait();
            assert!([3, 5, 2000].contains(&w.as_millis()), "{w:?}");
        }
        let reloaded = Mock::new(None, 4096, "waits-test:1");
        assert_ne!(reloaded.wait(), Duration::ZERO, "kept across a reload");
    }
}
