//! The session path in-process: real clients (tokio-postgres, raw bytes) over in-memory
//! pipes, through the proxy's own phases (startup packet, authentication relay, refusal,
//! relay) to a scripted upstream that speaks the server's side of the protocol.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::login::{LoginEnds, Plan, login};
use super::startup::{self, StartupPacket};
use super::{Outcome, SessionError, refuse};
use crate::framed::FrameReader;
use crate::protocol::error_response::{message_of, sqlstate_of};
use crate::protocol::message::parse_frame;
use crate::protocol::startup::parse_untagged;
use crate::relay::{self, Ended};

const PIPE: usize = 64 * 1024;

/// A server message: tag, length, body.
fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn auth_request(code: i32, rest: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(rest);
    msg(b'R', &body)
}

fn error_response(code: &str, message: &str) -> Vec<u8> {
    let body = format!("SFATAL\0VFATAL\0C{code}\0M{message}\0\0");
    msg(b'E', body.as_bytes())
}

/// What follows a successful login: AuthenticationOk, a parameter, the cancel key, and
/// ReadyForQuery.
fn login_ok() -> Vec<u8> {
    let mut m = auth_request(0, &[]);
    m.extend(msg(b'S', b"server_version\x0015.0\0"));
    m.extend(msg(b'S', b"client_encoding\0UTF8\0"));
    m.extend(msg(b'K', &[0, 0, 0x30, 0x39, 1, 2, 3, 4]));
    m.extend(msg(b'Z', b"I"));
    m
}

/// The server's side: reads whole messages.
struct Script {
    io: DuplexStream,
    reader: FrameReader,
}

impl Script {
    async fn startup(&mut self) -> Vec<u8> {
        self.reader
            .next(&mut self.io, |b| {
                Ok(parse_untagged(b)?.map(|(_, n)| (b[..n].to_vec(), n)))
            })
            .await
            .unwrap()
            .unwrap()
    }

    async fn message(&mut self) -> Option<(u8, Vec<u8>)> {
        let m = self.reader.message(&mut self.io, 1 << 20).await.ok()??;
        Some((m.tag, m.body().to_vec()))
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }
}

/// The proxy's phases from the first packet inside TLS on, as `establish` and `relay`
/// run them, over in-memory streams.
async fn proxy(mut client: DuplexStream, mut server: DuplexStream) -> Outcome {
    let mut reader = FrameReader::new();
    let startup = match startup::read(&mut client, &mut reader).await {
        Ok(StartupPacket::Startup(s)) => s,
        Ok(other) => panic!("not a startup: {other:?}"),
        Err(e) => return refuse(&mut client, e).await,
    };
    let stop = CancellationToken::new();
    let ends = LoginEnds {
        deadline: Instant::now() + Duration::from_secs(5),
        limit: Duration::from_secs(5),
        stop: &stop,
    };
    match login(
        &mut client,
        &mut server,
        &startup,
        reader,
        ends,
        Plan::Passthrough,
    )
    .await
    {
        Ok((auth, _)) => {
            let outcome = relay::relay(
                &mut client,
                &mut server,
                auth.client_pending,
                auth.upstream_pending,
                &stop,
            )
            .await;
            Outcome::Relayed(outcome.ended)
        }
        Err(e) => refuse(&mut client, e).await,
    }
}

/// Starts the proxy between a client pipe and a scripted server; returns the client's end,
/// the script, and the proxy's task.
fn start() -> (DuplexStream, Script, tokio::task::JoinHandle<Outcome>) {
    let (client, proxy_client) = duplex(PIPE);
    let (proxy_server, server) = duplex(PIPE);
    let task = tokio::spawn(proxy(proxy_client, proxy_server));
    let script = Script {
        io: server,
        reader: FrameReader::new(),
    };
    (client, script, task)
}

#[tokio::test]
async fn tokio_postgres_logs_in_and_queries_through_the_relay() {
    let (client_io, mut server, proxy) = start();
    let upstream = tokio::spawn(async move {
        let startup = server.startup().await;
        assert!(
            startup.windows(6).any(|w| w == b"alice\0"),
            "user forwarded"
        );
        server.send(&auth_request(3, &[])).await;
        let (tag, password) = server.message().await.unwrap();
        assert_eq!((tag, password.as_slice()), (b'p', &b"s3cret\0"[..]));
        server.send(&login_ok()).await;
        let (tag, query) = server.message().await.unwrap();
        assert_eq!((tag, query.as_slice()), (b'Q', &b"select 42\0"[..]));
        let mut answer = msg(
            b'T',
            b"\0\x01answer\0\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0",
        );
        answer.extend(msg(b'D', b"\0\x01\0\0\0\x0242"));
        answer.extend(msg(b'C', b"SELECT 1\0"));
        answer.extend(msg(b'Z', b"I"));
        server.send(&answer).await;
        // The client's Terminate, then its close.
        while server.message().await.is_some() {}
    });
    let (client, connection) = tokio_postgres::Config::new()
        .user("alice")
        .password("s3cret")
        .dbname("app")
        .connect_raw(client_io, tokio_postgres::NoTls)
        .await
        .expect("login through the proxy");
    let connection = tokio::spawn(connection);
    let rows = client.simple_query("select 42").await.unwrap();
    let value = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(value.as_deref(), Some("42"));
    drop(client);
    let _ = connection.await;
    upstream.await.unwrap();
    let outcome = proxy.await.unwrap();
    assert!(
        matches!(outcome, Outcome::Relayed(Ended::ByClient)),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn scram_plus_chosen_by_the_client_gets_28000_and_never_reaches_the_server() {
    let (mut client, mut server, proxy) = start();
    let upstream = tokio::spawn(async move {
        server.startup().await;
        server
            .send(&auth_request(10, b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"))
            .await;
        server.message().await
    });
    let mut startup = vec![0, 0, 0, 0, 0, 3, 0, 0];
    startup.extend_from_slice(b"user\0alice\0\0");
    let len = startup.len() as i32;
    startup[..4].copy_from_slice(&len.to_be_bytes());
    client.write_all(&startup).await.unwrap();
    let mut sasl = b"SCRAM-SHA-256-PLUS\0".to_vec();
    let first = b"p=tls-server-end-point,,n=,r=abc";
    sasl.extend_from_slice(&(first.len() as i32).to_be_bytes());
    sasl.extend_from_slice(first);
    client.write_all(&msg(b'p', &sasl)).await.unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    // AuthenticationSASL as the server sent it, then the proxy's refusal.
    let (request, used) = parse_frame(&answer, 1 << 20).unwrap().unwrap();
    assert_eq!(request.tag, b'R');
    let (error, _) = parse_frame(&answer[used..], 1 << 20).unwrap().unwrap();
    assert_eq!(error.tag, b'E');
    assert_eq!(sqlstate_of(error.body).as_deref(), Some("28000"));
    assert!(message_of(error.body).unwrap().contains("channel binding"));
    let outcome = proxy.await.unwrap();
    assert!(matches!(
        outcome,
        Outcome::Refused(SessionError::ChannelBinding)
    ));
    assert_eq!(upstream.await.unwrap(), None, "nothing reached the server");
}

#[tokio::test]
async fn a_server_refusal_is_relayed_word_for_word_and_logged_with_its_sqlstate() {
    let (client_io, mut server, proxy) = start();
    let refusal = error_response("28P01", "password authentication failed for user \"alice\"");
    let sent = refusal.clone();
    let upstream = tokio::spawn(async move {
        server.startup().await;
        server.send(&auth_request(3, &[])).await;
        server.message().await.unwrap();
        server.send(&sent).await;
    });
    let error = tokio_postgres::Config::new()
        .user("alice")
        .password("wrong")
        .connect_raw(client_io, tokio_postgres::NoTls)
        .await
        .err()
        .expect("refused");
    let db = error.as_db_error().expect("the server's ErrorResponse");
    assert_eq!(db.code().code(), "28P01");
    assert_eq!(
        db.message(),
        "password authentication failed for user \"alice\""
    );
    upstream.await.unwrap();
    let outcome = proxy.await.unwrap();
    let Outcome::Refused(e) = outcome else {
        panic!("not refused: {outcome:?}");
    };
    assert_eq!(
        e.refusal(),
        None,
        "the proxy adds nothing to the server's words"
    );
    assert_eq!(
        e.sqlstate().map(|s| s.to_string()).as_deref(),
        Some("28P01")
    );
}

#[tokio::test]
async fn an_upstream_that_hangs_up_during_authentication_gives_the_client_08006() {
    let (client_io, mut server, proxy) = start();
    let upstream = tokio::spawn(async move {
        server.startup().await;
        drop(server);
    });
    let error = tokio_postgres::Config::new()
        .user("alice")
        .connect_raw(client_io, tokio_postgres::NoTls)
        .await
        .err()
        .expect("refused");
    let db = error
        .as_db_error()
        .expect("an ErrorResponse, not a bare close");
    assert_eq!(db.code().code(), "08006");
    assert!(
        db.message()
            .contains("upstream server closed the connection")
    );
    upstream.await.unwrap();
    assert!(matches!(
        proxy.await.unwrap(),
        Outcome::Refused(SessionError::Closed(crate::leg::Leg::Upstream))
    ));
}
