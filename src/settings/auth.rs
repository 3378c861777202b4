//! `[auth]`, validated: the mode, the verifier sources (the userlist read and checked
//! here, the auth query's spec, which the running store connects with), the mock
//! exchange's secret, and the policies.

use std::collections::HashMap;
use std::sync::Arc;

use super::Problems;
use crate::config::schema::{AuthMode, ChannelBindingPolicy, RawAuth, UnknownUser};
use crate::scram::mock::{self, Mock};
use crate::scram::query::{QuerySpec, read_password_file};
use crate::scram::verifiers::{Sources, load_userlist};
use crate::tls::connector::Connector;
use crate::upstream::Endpoint;

/// Most `auth.query_concurrency`: each query holds a server connection.
const MAX_QUERY_CONCURRENCY: u32 = 64;

/// How clients log in.
pub(crate) struct AuthSettings {
    /// Passthrough or SCRAM termination.
    pub mode: AuthMode,
    /// What happens to users without a verifier.
    pub unknown_user: UnknownUser,
    /// `auth.passthrough_trust`: a relayed user may be let in without a password.
    pub passthrough_trust: bool,
    /// The stand-in exchange for users the proxy cannot check.
    pub mock: Mock,
    /// Whether the upstream login must be bound.
    pub upstream_channel_binding: ChannelBindingPolicy,
    /// Where the verifiers come from (userlist, query, cache lifetime).
    pub verifiers: Sources,
    /// `upstream.client_certificate` is set (an upstream login without a password is then
    /// logged as "cert", else "trust").
    pub upstream_certificate: bool,
}

/// Validates `[auth]` (as one upstream sees it) once its connector exists (the auth query
/// connects with it); `upstream_certificate`: the upstream has `client_certificate` set.
pub(super) fn auth(
    a: &RawAuth,
    upstream: &Endpoint,
    connector: Option<&Connector>,
    upstream_certificate: bool,
    problems: &mut Problems,
    warnings: &mut Vec<String>,
) -> AuthSettings {
    let userlist = match &a.userlist {
        Some(path) => load_userlist(path).unwrap_or_else(|errors| {
            for e in errors {
                problems.key("auth.userlist", e);
            }
            HashMap::new()
        }),
        None => HashMap::new(),
    };
    if a.mode == AuthMode::Scram && a.userlist.is_none() && a.query_user.is_none() {
        problems.key(
            "auth.mode",
            "\"scram\" needs verifiers: set auth.userlist, auth.query_user, or both",
        );
    }
    if a.cache_ttl.is_zero() {
        problems.key("auth.cache_ttl", "must be longer than 0s");
    }
    if !(1..=MAX_QUERY_CONCURRENCY).contains(&a.query_concurrency) {
        problems.key(
            "auth.query_concurrency",
            format!("must be between 1 and {MAX_QUERY_CONCURRENCY} (queries at once, each on a connection of its own)"),
        );
    }
    let query = a.query_user.as_ref().and_then(|user| {
        check_query(&a.query, problems);
        let password = match &a.query_password_file {
            Some(path) => match read_password_file(path) {
                Ok(p) => Some(p),
                Err(e) => {
                    problems.key("auth.query_password_file", e);
                    None
                }
            },
            None => None,
        };
        let connector = connector?;
        Some(QuerySpec {
            user: user.clone(),
            database: a.query_database.clone(),
            sql: a.query.clone(),
            password,
            policy: a.upstream_channel_binding,
            concurrency: usize::try_from(a.query_concurrency.clamp(1, MAX_QUERY_CONCURRENCY))
                .unwrap_or(1),
            upstream: upstream.clone(),
            connector: connector.clone(),
        })
    });
    let secret = match &a.mock_secret_file {
        Some(path) => match mock::load_secret(path) {
            Ok(secret) => Some(secret),
            Err(e) => {
                problems.key("auth.mock_secret_file", e);
                None
            }
        },
        None => None,
    };
    if a.mode == AuthMode::Scram {
        trust_warnings(a, warnings);
    }
    let iterations = mock::common_iterations(userlist.values());
    let mock = Mock::new(
        secret,
        iterations,
        &format!("{}:{}", upstream.host, upstream.port),
    );
    AuthSettings {
        mode: a.mode,
        unknown_user: a.unknown_user,
        passthrough_trust: a.passthrough_trust,
        mock,
        upstream_channel_binding: a.upstream_channel_binding,
        verifiers: Sources {
            userlist: Arc::new(userlist),
            query,
            cache_ttl: a.cache_ttl,
        },
        upstream_certificate,
    }
}

/// What `check-config` and the start warn about in scram mode (once each, whatever the
/// number of upstreams).
fn trust_warnings(a: &RawAuth, warnings: &mut Vec<String>) {
    let mut warn = |w: String| {
        if !warnings.contains(&w) {
            warnings.push(w);
        }
    };
    if a.unknown_user == UnknownUser::Passthrough && a.passthrough_trust {
        warn(
            "auth.passthrough_trust = true: a user without a verifier is relayed, and a server \
             that trusts the proxy's address (pg_hba trust) lets them in with no password at all"
                .into(),
        );
    }
    if a.mock_secret_file.is_none() {
        warn(
            "auth.mock_secret_file is unset: unknown users get mock salts from a per-process \
             secret, which change at every restart and differ between replicas (real salts do \
             not), so a client can tell them from real users; the packages generate \
             /etc/pgt-proxy/mock-secret"
                .into(),
        );
    }
}

/// The query must bind the user name (`$1`) and name its function or table with a schema:
/// an unqualified name resolves through `search_path`, which a user could point at their
/// own object (pgbouncer's CVE-2025-12819).
fn check_query(sql: &str, problems: &mut Problems) {
    if !sql.contains("$1") {
        problems.key(
            "auth.query",
            "must take the user name as the parameter $1 (it is never spliced into the SQL)",
        );
    }
    let lower = sql.to_ascii_lowercase();
    let qualified = lower
        .split(" from ")
        .nth(1)
        .and_then(|after| after.split_whitespace().next())
        .is_some_and(|target| {
            let name = target.split('(').next().unwrap_or_default();
            name.contains('.') && !name.starts_with('.') && !name.ends_with('.')
        });
    if !qualified {
        problems.key(
            "auth.query",
            "must name its function or table with a schema (e.g. FROM pgt_proxy.get_auth($1)): \
             an unqualified name follows search_path, which a user could redirect",
        );
    }
}
