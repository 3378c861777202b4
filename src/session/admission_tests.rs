//! Admission in-process: the session driver the daemon runs, over one end of a Unix socket
//! pair, with the client's address given as the accept loop would give it. A raw client
//! speaks the protocol (SSLRequest, TLS with a generated certificate, StartupMessage or
//! CancelRequest); the upstream is a real listening socket that counts who reached it, so a
//! test sees exactly whether a refused connection made the proxy open one.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openssl::asn1::Asn1Time;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslConnector, SslMethod};
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509, X509NameBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::Semaphore;

use super::{Limit, Sessions, serve};
use crate::cancel::{CancelKey, SessionKeys};
use crate::config::layers::{Overrides, load};
use crate::protocol::startup::{SSL_REQUEST, encode_cancel_request, encode_startup};
use crate::running::Running;
use crate::settings::{Listener, Settings};

/// A self-signed certificate for "localhost" and its key, written as PEM into `dir`.
fn certificate(dir: &Path) -> (X509, std::path::PathBuf, std::path::PathBuf) {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key: PKey<Private> = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "localhost").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .dns("localhost")
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let cert = b.build();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.to_pem().unwrap()).unwrap();
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (cert, cert_path, key_path)
}

/// The proxy's state for `extra` TOML, relaying to a listener this returns.
struct World {
    settings: Arc<Running>,
    sessions: Arc<Sessions>,
    upstream: TcpListener,
    cert: X509,
    _dir: tempfile::TempDir,
}

async fn world(extra: &str) -> World {
    world_with(extra, "").await
}

/// As [`world`], with `tail` (routes, `[upstreams.NAME]`, where `PORT` is our listener's
/// port) after `[upstream]`.
async fn world_with(extra: &str, tail: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let (cert, cert_path, key_path) = certificate(dir.path());
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    let config = format!(
        "[listen]\naddresses = [\"127.0.0.1:0\"]\ncertificate = {:?}\nprivate_key = {:?}\n\
         handshake_timeout = \"5s\"\nstartup_timeout = \"5s\"\n{extra}\n\
         [upstream]\nhost = \"127.0.0.1\"\nport = {port}\nca = {:?}\nconnect_timeout = \"2s\"\n{}",
        cert_path,
        key_path,
        cert_path,
        tail.replace("PORT", &port.to_string())
            .replace("CA", &format!("{cert_path:?}"))
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let overrides = Overrides {
        config_path: Some(path),
        flags: Vec::new(),
    };
    let loaded = load(&overrides, Vec::new()).unwrap();
    let settings = Settings::from_config(&loaded, None).unwrap_or_else(|e| panic!("{e:?}"));
    World {
        settings: Arc::new(Running::start(settings)),
        sessions: Arc::default(),
        upstream,
        cert,
        _dir: dir,
    }
}

impl World {
    /// Serves one connection from `client` (the address the accept loop saw); returns the
    /// client's end.
    fn connect(&self, client: IpAddr, limit: Limit) -> (UnixStream, tokio::task::JoinHandle<()>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let peer = SocketAddr::new(client, 40000);
        let settings = Arc::clone(&self.settings);
        let sessions = Arc::clone(&self.sessions);
        let task = tokio::spawn(serve(
            theirs,
            (peer, Listener::Main),
            settings,
            sessions,
            permit,
            limit,
        ));
        (ours, task)
    }

    /// A live session whose server-side cancel key is (4242, [7; 4]), relayed to our
    /// upstream listener.
    fn session_with_key(&self) -> crate::cancel::Registration {
        let server = CancelKey {
            pid: 4242,
            key: zeroize::Zeroizing::new(vec![7; 4]),
        };
        let keys = SessionKeys::issue(server, 0);
        let settings = &self.settings;
        let target = Arc::clone(settings.default.as_ref().unwrap());
        let addr = self.upstream.local_addr().unwrap();
        self.sessions.cancels.register(keys, addr, target)
    }

    /// Whether anyone connected to the upstream within `wait`.
    async fn upstream_reached(&self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.upstream.accept())
            .await
            .is_ok()
    }

    /// SSLRequest and a TLS handshake trusting our certificate.
    async fn tls(&self, mut io: UnixStream) -> tokio_openssl::SslStream<UnixStream> {
        io.write_all(&SSL_REQUEST).await.unwrap();
        let mut answer = [0u8; 1];
        io.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"S");
        let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
        b.cert_store_mut().add_cert(self.cert.clone()).unwrap();
        let ssl = b
            .build()
            .configure()
            .unwrap()
            .into_ssl("localhost")
            .unwrap();
        let mut s = tokio_openssl::SslStream::new(ssl, io).unwrap();
        Pin::new(&mut s).connect().await.unwrap();
        s
    }

    /// A connection from `client` that sends `first` inside TLS: the SQLSTATE it is told.
    async fn refused_over_tls(&self, client: IpAddr, limit: Limit, first: &[u8]) -> String {
        let (io, task) = self.connect(client, limit);
        let mut tls = self.tls(io).await;
        tls.write_all(first).await.unwrap();
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        task.await.unwrap();
        sqlstate(&answer)
    }

    /// A plaintext CancelRequest for the live session, from `client`.
    async fn plaintext_cancel(&self, client: IpAddr, limit: Limit) -> UnixStream {
        let (mut io, _task) = self.connect(client, limit);
        io.write_all(&encode_cancel_request(4242, &[7; 4]))
            .await
            .unwrap();
        io
    }
}

/// The SQLSTATE of the ErrorResponse at the front of `bytes`.
fn sqlstate(bytes: &[u8]) -> String {
    assert_eq!(
        bytes.first(),
        Some(&b'E'),
        "not an ErrorResponse: {bytes:?}"
    );
    let field = bytes[5..]
        .split(|&b| b == 0)
        .find(|f| f.first() == Some(&b'C'))
        .expect("no SQLSTATE");
    String::from_utf8_lossy(&field[1..]).into_owned()
}

const OUTSIDER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));
const INSIDER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3));
const ALLOWED: &str = "allowed_clients = [\"10.0.0.0/8\"]";

#[tokio::test]
async fn a_plaintext_cancel_from_outside_allowed_clients_is_not_forwarded() {
    let world = world(ALLOWED).await;
    let _session = world.session_with_key();
    let mut io = world.plaintext_cancel(OUTSIDER, Limit::Within).await;
    let mut rest = Vec::new();
    io.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "a cancel gets no answer: {rest:?}");
    assert!(!world.upstream_reached(Duration::from_millis(300)).await);
    // The same cancel from inside the allowlist reaches the server.
    let _io = world.plaintext_cancel(INSIDER, Limit::Within).await;
    assert!(world.upstream_reached(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn an_encrypted_cancel_and_a_session_from_outside_allowed_clients_are_refused_over_tls() {
    let world = world(ALLOWED).await;
    let _session = world.session_with_key();
    for first in [
        encode_cancel_request(4242, &[7; 4]),
        encode_startup(&[("user", "alice")]),
    ] {
        let code = world
            .refused_over_tls(OUTSIDER, Limit::Within, &first)
            .await;
        assert_eq!(code, "28000");
    }
    assert!(!world.upstream_reached(Duration::from_millis(300)).await);
}

#[tokio::test]
async fn over_the_limit_a_session_gets_53300_and_a_cancel_is_still_served() {
    let world = world("").await;
    let _session = world.session_with_key();
    let startup = encode_startup(&[("user", "alice")]);
    let code = world.refused_over_tls(INSIDER, Limit::Over, &startup).await;
    assert_eq!(code, "53300");
    assert!(!world.upstream_reached(Duration::from_millis(300)).await);
    let _io = world.plaintext_cancel(INSIDER, Limit::Over).await;
    assert!(world.upstream_reached(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn over_the_per_client_limit_a_session_is_refused_and_a_cancel_is_served() {
    let world = world("max_connections_per_client = 1").await;
    let _session = world.session_with_key();
    let (held, _held_task) = world.connect(INSIDER, Limit::Within);
    let _held = world.tls(held).await;
    let startup = encode_startup(&[("user", "alice")]);
    let code = world
        .refused_over_tls(INSIDER, Limit::Within, &startup)
        .await;
    assert_eq!(code, "53300");
    let _io = world.plaintext_cancel(INSIDER, Limit::Within).await;
    assert!(world.upstream_reached(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_route_narrower_than_listen_refuses_the_judged_database_only() {
    let listen = format!("{ALLOWED}\nunrouted = \"default\"");
    let tail = "[upstreams.pay]\nhost = \"127.0.0.1\"\nport = PORT\nca = CA\n\n\
                [[routes]]\ndatabase = \"payroll\"\nupstream = \"pay\"\n\
                allowed_clients = [\"10.9.0.0/16\"]\n";
    let world = world_with(&listen, tail).await;
    // database given twice would have let the proxy judge one and the server open the other.
    let twice = crate::protocol::parameters::encode_packet(
        0x0003_0000,
        &[
            (b"user", b"alice"),
            (b"database", b"postgres"),
            (b"database", b"payroll"),
        ],
    );
    for (first, code) in [
        (
            encode_startup(&[("user", "alice"), ("database", "payroll")]),
            "28000",
        ),
        (twice, "08P01"),
    ] {
        let answer = world.refused_over_tls(INSIDER, Limit::Within, &first).await;
        assert_eq!(answer, code);
    }
    assert!(!world.upstream_reached(Duration::from_millis(300)).await);
    // Another database goes by the default route, which admits the client.
    let (io, _task) = world.connect(INSIDER, Limit::Within);
    let mut tls = world.tls(io).await;
    tls.write_all(&encode_startup(&[
        ("user", "alice"),
        ("database", "postgres"),
    ]))
    .await
    .unwrap();
    assert!(world.upstream_reached(Duration::from_secs(5)).await);
}
