//! SCRAM termination's upstream leg: a real PostgreSQL that asks for md5 is named, and the
//! cases only the fake SCRAM server can play (an upstream without channel binding, refused
//! or accepted as `auth.upstream_channel_binding` says; a wrong server signature).

mod common;

use common::clients::psql_ok;
use common::fake_scram;
use common::postgres::{PgOptions, Postgres};
use common::proxy::{Proxy, ProxyConfig, TestPki, toml_path};
use common::scram::{conninfo, login, write_userlist};

#[test]
fn an_upstream_asking_for_md5_is_named() {
    let pki = TestPki::new();
    let pg = Postgres::start_with(PgOptions {
        tls: Some(&pki.server),
        conf: Vec::new(),
        hba: vec!["hostssl all carol 127.0.0.1/32 md5".into()],
    });
    pg.admin("set password_encryption = 'md5'; create role carol login password 'carol-pw'");
    // The proxy holds a SCRAM verifier for carol (as it would after a migration).
    let userlist = write_userlist(
        pki.dir.path(),
        &[("carol", &fake_scram::verifier("carol-pw"))],
    );
    let proxy = Proxy::start(
        &ProxyConfig::new(&pki, pg.port)
            .set("auth.mode", "\"scram\"")
            .set("auth.userlist", &toml_path(&userlist)),
    );
    let (code, text) = login(&proxy, &pki, "carol", "carol-pw").unwrap_err();
    assert_eq!(code, "08001", "{text}");
    assert!(
        text.contains("md5") && text.contains("SCRAM verifiers"),
        "{text}"
    );
}

/// A proxy in front of the fake SCRAM server (which offers SCRAM-SHA-256 only).
fn with_fake_upstream(
    rt: &tokio::runtime::Runtime,
    behaviour: fake_scram::Behaviour,
    binding: &str,
) -> (TestPki, Proxy) {
    let pki = TestPki::new();
    let port = rt.block_on(fake_scram::start(&pki.server, "eve-pw", behaviour));
    let userlist = write_userlist(pki.dir.path(), &[("eve", &fake_scram::verifier("eve-pw"))]);
    let proxy = Proxy::start(
        &ProxyConfig::new(&pki, port)
            .set("auth.mode", "\"scram\"")
            .set("auth.userlist", &toml_path(&userlist))
            .set("auth.upstream_channel_binding", binding),
    );
    (pki, proxy)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn an_upstream_without_channel_binding_is_refused_or_accepted_as_configured() {
    let rt = runtime();
    let honest = fake_scram::Behaviour {
        wrong_signature: false,
    };
    let (pki, proxy) = with_fake_upstream(&rt, honest, "\"require\"");
    let (code, text) = login(&proxy, &pki, "eve", "eve-pw").unwrap_err();
    assert_eq!(code, "08001");
    assert!(text.contains("offered no SCRAM channel binding"), "{text}");

    let (pki, proxy) = with_fake_upstream(&rt, honest, "\"prefer\"");
    let info = conninfo(proxy.port(), &pki.proxy_ca_path, "eve", "eve-pw", "");
    assert_eq!(psql_ok(&info, "select 'ok'"), "ok");
    let line = proxy.wait_log(&["session ended", "user=\"eve\""]);
    assert!(
        line.contains("client_auth=\"SCRAM-SHA-256-PLUS\""),
        "{line}"
    );
    assert!(line.contains("upstream_auth=\"SCRAM-SHA-256\""), "{line}");
}

#[test]
fn an_upstream_with_a_wrong_server_signature_is_refused() {
    let rt = runtime();
    let forger = fake_scram::Behaviour {
        wrong_signature: true,
    };
    let (pki, proxy) = with_fake_upstream(&rt, forger, "\"prefer\"");
    let (code, text) = login(&proxy, &pki, "eve", "eve-pw").unwrap_err();
    assert_eq!(code, "08001");
    assert!(text.contains("signature does not match"), "{text}");
}
