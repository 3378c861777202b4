//! Key exchange that follows the library, on the upstream leg: the proxy on Debian 13's
//! OpenSSL 3.5 (a trixie root, `scripts/trixie-root`) toward trixie's servers, a
//! post-quantum-only `openssl s_server` and PostgreSQL 17 as Debian ships it. What a user
//! checks: the group the upstream leg negotiated in the session log line, and no
//! HelloRetryRequest, seen on the wire by a relay between the two. Needs root (chroot).

mod common;

use common::pq::{SServer, psql17};
use common::proxy::{Proxy, ProxyConfig, TestPki};
use common::trixie::Postgres17;
use common::wire::Wire;

/// Upstream on OpenSSL 3.5: a server that accepts only X25519MLKEM768 (`openssl s_server`)
/// gets it, and trixie's PostgreSQL 17 (Debian's settings: prime256v1 only) gets P-256,
/// neither with a HelloRetryRequest. The relay that sees no retry does see one when the
/// proxy is told to send an X25519 share first (so it can tell).
#[test]
fn upstreams_on_openssl_3_5_get_their_group_without_a_hello_retry() {
    let pki = TestPki::in_trixie();
    // A post-quantum-only server.
    let server = SServer::start(&pki.server, pki.dir.path(), "X25519MLKEM768");
    let wire = Wire::to(server.port);
    let proxy = Proxy::start_in_trixie(
        &ProxyConfig::new(&pki, wire.port)
            .set("upstream.tls_negotiation", "\"direct\"")
            .set("listen.startup_timeout", "\"1s\""),
    );
    // s_server never answers the StartupMessage: the session ends after both handshakes.
    let _ = psql17(proxy.port(), &pki, "alice", "x", "select 1");
    let line = proxy.wait_log(&["upstream_tls_group="]);
    assert!(
        line.contains("upstream_tls_group=\"X25519MLKEM768\""),
        "{line}"
    );
    assert_eq!(wire.hello_retries(), (1, 0), "{line}");
    drop(server);
    drop(proxy);

    // PostgreSQL 17 of trixie, as Debian ships it.
    let pg = Postgres17::start(&pki.server);
    let wire = Wire::to(pg.port);
    let proxy = Proxy::start_in_trixie(&ProxyConfig::new(&pki, wire.port));
    let out = psql17(proxy.port(), &pki, "postgres", "x", "select version()");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("PostgreSQL 17"),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        pg.log()
    );
    let line = proxy.wait_log(&["session ended", "user=\"postgres\""]);
    assert!(line.contains("upstream_tls_group=\"secp256r1\""), "{line}");
    assert!(
        line.contains("client_tls_group=\"X25519MLKEM768\""),
        "{line}"
    );
    assert_eq!(wire.hello_retries(), (1, 0), "{line}");
    drop(proxy);

    // The control: an X25519 share first costs PostgreSQL 17 a retry, and the relay sees it.
    let wire = Wire::to(pg.port);
    let proxy = Proxy::start_in_trixie(
        &ProxyConfig::new(&pki, wire.port).set("upstream.groups", "\"X25519:P-256\""),
    );
    let out = psql17(proxy.port(), &pki, "postgres", "x", "select 1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(wire.hello_retries(), (1, 1));
}
