//! Each upstream of a routed proxy as its own: check-config's route table, its checks of
//! routes (a certificate for another name, an upstream that does not exist or does not
//! answer), and an upstream's own revocation list and SCRAM termination, which leave the
//! other upstreams untouched. Two real PostgreSQL clusters behind one proxy.

mod common;

use common::clients::{psql, psql_ok};
use common::pki::Validity;
use common::proxy::{Proxy, ProxyConfig, binary, toml_path};
use common::routes::{fleet, info, routed};

fn check_config(config: &ProxyConfig, connect: bool) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config.render()).unwrap();
    let mut cmd = std::process::Command::new(binary());
    cmd.args(["--config", path.to_str().unwrap(), "check-config"]);
    if connect {
        cmd.arg("--connect");
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_config_prints_the_route_table_connects_and_catches_a_certificate_for_another_name() {
    let f = fleet();
    let (ok, text) = check_config(&routed(&f), true);
    assert!(ok, "{text}");
    // Shown with --nocapture: what an administrator sees.
    eprintln!("{text}");
    for needle in [
        "routes (",
        "orders.db.test",
        "-> orders",
        "*.wild.test",
        "database=billing",
        "anything else",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert!(text.contains("upstreams.orders (127.0.0.1:"), "{text}");
    assert!(
        text.contains("certificate verified for \"127.0.0.1\""),
        "{text}"
    );
    // A route served with listen.certificate (localhost) for a name it does not cover.
    let wrong =
        routed(&f).append("[[routes]]\nserver_name = \"plain.db.test\"\nupstream = \"orders\"\n");
    let (ok, text) = check_config(&wrong, false);
    assert!(!ok);
    assert!(
        text.contains("listen.certificate is not valid for \"plain.db.test\""),
        "{text}"
    );
    // An upstream that does not exist, and one that does not answer (--connect).
    let missing = routed(&f).append("[[routes]]\ndatabase = \"x\"\nupstream = \"nowhere\"\n");
    let (ok, text) = check_config(&missing, false);
    assert!(
        !ok && text.contains("\"nowhere\" is not an upstream"),
        "{text}"
    );
    let down = routed(&f).set(
        "upstreams.billing.port",
        &common::postgres::free_port().to_string(),
    );
    let (ok, text) = check_config(&down, true);
    assert!(
        !ok && text.contains("upstreams.billing") && text.contains("FAILED"),
        "{text}"
    );
}

#[test]
fn each_upstream_has_its_own_revocation_and_auth() {
    let f = fleet();
    let dir = f.pki.dir.path();
    // orders' server certificate is revoked by its CA's CRL, which only upstreams.orders uses.
    let ca = common::openssl_ca::OpenSslCa::new(&f.pki.upstream_ca, &dir.join("orders-ca"));
    let crl = dir.join("orders.crl");
    ca.revoke(&f.pki.server);
    ca.gencrl(&crl);
    // A second upstream on the billing cluster with SCRAM termination of its own.
    let verifier = f
        .billing
        .admin("select rolpassword from pg_authid where rolname = 'alice'");
    let userlist = dir.join("billing-users.txt");
    std::fs::write(&userlist, format!("\"alice\" \"{verifier}\"\n")).unwrap();
    std::fs::set_permissions(
        &userlist,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let scram_cert = f
        .pki
        .proxy_ca
        .issue("scram.db.test", &["DNS:scram.db.test"], Validity::Current)
        .write(dir, "scram");
    let config = routed(&f)
        .set("upstreams.orders.crl", &toml_path(&crl))
        .set("upstreams.billing_scram.host", "\"127.0.0.1\"")
        .set("upstreams.billing_scram.port", &f.billing.port.to_string())
        .set("upstreams.billing_scram.ca", &toml_path(&f.billing_ca))
        .set("upstreams.billing_scram.auth.mode", "\"scram\"")
        .set("upstreams.billing_scram.auth.userlist", &toml_path(&userlist))
        .append(&format!(
            "[[routes]]\nserver_name = \"scram.db.test\"\nupstream = \"billing_scram\"\ncertificate = {}\nprivate_key = {}\n",
            toml_path(&scram_cert.0),
            toml_path(&scram_cert.1)
        ));
    let proxy = Proxy::start(&config);
    let err = String::from_utf8_lossy(
        &psql(
            &info(&proxy, &f, "orders.db.test", "postgres", "verify-full"),
            "select 1",
        )
        .stderr,
    )
    .into_owned();
    assert!(
        err.contains("upstream server certificate revoked (CRL)"),
        "{err}"
    );
    // billing is not affected by orders' CRL.
    let billing = info(&proxy, &f, "a.wild.test", "postgres", "verify-full");
    assert_eq!(psql_ok(&billing, "select 1"), "1");
    // Only billing_scram terminates SCRAM: libpq's default channel binding works there...
    let scram = info(&proxy, &f, "scram.db.test", "postgres", "verify-full")
        .replace("channel_binding=disable", "channel_binding=require");
    assert_eq!(psql_ok(&scram, "select current_user"), "alice");
    let line = proxy.wait_log(&["session ended", "route=\"billing_scram\""]);
    assert!(
        line.contains("client_auth=\"SCRAM-SHA-256-PLUS\""),
        "{line}"
    );
    // ...and is refused with the explanation on a passthrough route.
    let passthrough = billing.replace("channel_binding=disable", "channel_binding=require");
    let err = String::from_utf8_lossy(&psql(&passthrough, "select 1").stderr).into_owned();
    assert!(err.contains("channel binding"), "{err}");
}
