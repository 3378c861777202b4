//! SCRAM channel binding through the proxy (`auth.mode = "scram"`), with real PostgreSQL
//! servers: a downgrade and a wrong binding refused as PostgreSQL refuses them (raw client),
//! an Ed25519 certificate that offers plain SCRAM only, and RSA-PSS certificates bound on
//! both legs with the digest PostgreSQL uses.

mod common;

use std::path::Path;

use common::clients::{psql, psql_ok};
use common::postgres::{ALICE_PASSWORD, Postgres};
use common::proxy::{Proxy, ProxyConfig, TestPki, toml_path};
use common::raw;
use common::sasl::{message, read_message};
use common::scram::{conninfo, verifier_of, with_userlist, write_userlist};

/// A raw TLS session to `addr` (the proxy, or PostgreSQL itself) trusting `ca`, up to its
/// AuthenticationSASL, then `first` as the SASLInitialResponse; returns the answer to it.
async fn after_initial_response(
    addr: std::net::SocketAddr,
    ca: &Path,
    mechanism: &str,
    first: &str,
) -> (tokio_openssl::SslStream<tokio::net::TcpStream>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&raw::SSL_REQUEST).await.unwrap();
    let mut s = [0u8; 1];
    tcp.read_exact(&mut s).await.unwrap();
    assert_eq!(s[0], b'S');
    let mut connector =
        openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).unwrap();
    connector.set_ca_file(ca).unwrap();
    let ssl = connector
        .build()
        .configure()
        .unwrap()
        .into_ssl("localhost")
        .unwrap();
    let mut tls = raw::handshake(tcp, ssl).await.unwrap();
    tls.write_all(&raw::startup(&[
        ("user", "alice"),
        ("database", "postgres"),
    ]))
    .await
    .unwrap();
    let offer = read_message(&mut tls).await;
    assert_eq!(offer[0], b'R');
    assert!(
        offer.windows(18).any(|w| w == b"SCRAM-SHA-256-PLUS"),
        "-PLUS offered"
    );
    let mut body = mechanism.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&(first.len() as i32).to_be_bytes());
    body.extend_from_slice(first.as_bytes());
    tls.write_all(&message(b'p', &body)).await.unwrap();
    let answer = read_message(&mut tls).await;
    (tls, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downgrade_and_a_wrong_binding_are_refused_with_28000() {
    let (pki, pg, proxy) = tokio::task::spawn_blocking(with_userlist).await.unwrap();
    let ca = &pki.proxy_ca_path;
    // "y": the client can bind but was told the server cannot, though -PLUS was offered.
    let downgrade = "y,,n=,r=abcdef";
    let (_tls, answer) = after_initial_response(proxy.addr, ca, "SCRAM-SHA-256", downgrade).await;
    let (code, text) = raw::error_fields(&answer[5..]);
    assert_eq!(answer[0], b'E');
    assert_eq!(code, "28000");
    assert!(
        text.contains("SCRAM channel binding negotiation error"),
        "{text}"
    );
    // PostgreSQL answers the same downgrade with the same SQLSTATE and words
    // (auth-scram.c: ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION, not 08P01).
    let server = std::net::SocketAddr::from(([127, 0, 0, 1], pg.port));
    let (_tls, direct) =
        after_initial_response(server, &pki.upstream_ca_path, "SCRAM-SHA-256", downgrade).await;
    assert_eq!(direct[0], b'E');
    assert_eq!(raw::error_fields(&direct[5..]), (code, text));
    proxy.wait_log(&["session refused", "gs2 flag \"y\"", "a downgrade"]);

    // -PLUS with channel-binding data that is not this connection's certificate.
    let first = "p=tls-server-end-point,,n=,r=abcdef";
    let (mut tls, answer) =
        after_initial_response(proxy.addr, ca, "SCRAM-SHA-256-PLUS", first).await;
    assert_eq!(answer[0], b'R', "server-first");
    let server_first = String::from_utf8_lossy(&answer[9..]).into_owned();
    let nonce = server_first
        .split(',')
        .next()
        .unwrap()
        .trim_start_matches("r=");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut cbind = b"p=tls-server-end-point,,".to_vec();
    cbind.extend_from_slice(&[0u8; 32]);
    let fin = format!(
        "c={},r={nonce},p={}",
        b64.encode(&cbind),
        b64.encode([0u8; 32])
    );
    use tokio::io::AsyncWriteExt;
    tls.write_all(&message(b'p', fin.as_bytes())).await.unwrap();
    let answer = read_message(&mut tls).await;
    let (code, text) = raw::error_fields(&answer[5..]);
    assert_eq!((answer[0], code.as_str()), (b'E', "28000"));
    assert!(
        text.contains("SCRAM channel binding check failed"),
        "{text}"
    );
    proxy.wait_log(&["session refused", "channel binding does not match"]);
}

#[test]
fn an_ed25519_proxy_certificate_offers_plain_scram_only() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let userlist = write_userlist(pki.dir.path(), &[("alice", &verifier_of(&pg, "alice"))]);
    let (crt, key) = common::openssl_certs::openssl_req(pki.dir.path(), "ed25519", "ed25519");
    let proxy = Proxy::start(
        &ProxyConfig::new(&pki, pg.port)
            .set("listen.certificate", &toml_path(&crt))
            .set("listen.private_key", &toml_path(&key))
            .set("auth.mode", "\"scram\"")
            .set("auth.userlist", &toml_path(&userlist)),
    );
    let info = conninfo(proxy.port(), &crt, "alice", ALICE_PASSWORD, "");
    assert_eq!(psql_ok(&info, "select current_user"), "alice");
    let line = proxy.wait_log(&["session ended", "user=\"alice\""]);
    assert!(line.contains("client_auth=\"SCRAM-SHA-256\""), "{line}");
    assert!(
        line.contains("upstream_auth=\"SCRAM-SHA-256-PLUS\""),
        "{line}"
    );
    // A client that insists on binding cannot have it here, and says so.
    let require = conninfo(
        proxy.port(),
        &crt,
        "alice",
        ALICE_PASSWORD,
        "channel_binding=require",
    );
    assert!(!psql(&require, "select 1").status.success());
}

#[test]
fn rsa_pss_certificates_bind_on_both_legs_as_postgresql_hashes_them() {
    let pki = TestPki::new();
    let dir = pki.dir.path();
    // PostgreSQL's certificate signed with RSA-PSS over SHA-384, the proxy's over SHA-512:
    // the tls-server-end-point hash uses the digest in the signature's parameters.
    let (server_ca, server) = common::openssl_certs::openssl_rsa_pss(dir, "pg", "sha384");
    let (proxy_ca, proxy_leaf) = common::openssl_certs::openssl_rsa_pss(dir, "proxy", "sha512");
    let (proxy_crt, proxy_key) = proxy_leaf.write(dir, "proxy-pss");
    let pg = Postgres::start(&server);
    // libpq binds to PostgreSQL's RSA-PSS certificate directly: what the proxy's upstream
    // leg must compute the same way.
    let direct = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user=alice password={ALICE_PASSWORD} \
         dbname=postgres sslmode=verify-full sslrootcert={} channel_binding=require",
        pg.port,
        server_ca.display()
    );
    assert_eq!(psql_ok(&direct, "select current_user"), "alice");
    let userlist = write_userlist(dir, &[("alice", &verifier_of(&pg, "alice"))]);
    let proxy = Proxy::start(
        &ProxyConfig::new(&pki, pg.port)
            .set("listen.certificate", &toml_path(&proxy_crt))
            .set("listen.private_key", &toml_path(&proxy_key))
            .set("upstream.ca", &toml_path(&server_ca))
            .set("auth.mode", "\"scram\"")
            .set("auth.userlist", &toml_path(&userlist))
            .set("auth.upstream_channel_binding", "\"require\""),
    );
    let info = conninfo(
        proxy.port(),
        &proxy_ca,
        "alice",
        ALICE_PASSWORD,
        "channel_binding=require",
    );
    assert_eq!(psql_ok(&info, "select current_user"), "alice");
    let line = proxy.wait_log(&["session ended", "user=\"alice\""]);
    common::proxy::assert_auth(&line, "SCRAM-SHA-256-PLUS", "SCRAM-SHA-256-PLUS");
}
