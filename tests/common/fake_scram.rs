//! A TLS upstream that runs a SCRAM-SHA-256 server of its own, for the SCRAM cases a real
//! PostgreSQL cannot be made to play: a server that offers no channel binding, and one
//! whose ServerSignature is wrong (it does not hold the verifier it claims to). Its
//! cryptography is OpenSSL's, written out here from RFC 5802, not the proxy's code.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::hash::{MessageDigest, hash};
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::ssl::{SslAcceptor, SslMethod};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::pki::Issued;

/// How the fake server behaves.
#[derive(Clone, Copy)]
pub struct Behaviour {
    /// Sends a ServerSignature made with the wrong key.
    pub wrong_signature: bool,
}

/// The salt and iteration count the fake server's user has.
pub const SALT: &[u8] = b"fake-server-salt";
pub const ITERATIONS: u32 = 4096;

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let pkey = PKey::hmac(key).unwrap();
    let mut s = Signer::new(MessageDigest::sha256(), &pkey).unwrap();
    s.update(data).unwrap();
    s.sign_to_vec().unwrap()
}

/// (StoredKey, ServerKey) for `password`.
pub fn keys(password: &str) -> (Vec<u8>, Vec<u8>) {
    let mut salted = [0u8; 32];
    openssl::pkcs5::pbkdf2_hmac(
        password.as_bytes(),
        SALT,
        ITERATIONS as usize,
        MessageDigest::sha256(),
        &mut salted,
    )
    .unwrap();
    let client_key = hmac(&salted, b"Client Key");
    let stored = hash(MessageDigest::sha256(), &client_key).unwrap().to_vec();
    (stored, hmac(&salted, b"Server Key"))
}

/// The pg_authid-style verifier for `password`.
pub fn verifier(password: &str) -> String {
    let (stored, server) = keys(password);
    format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        B64.encode(SALT),
        B64.encode(stored),
        B64.encode(server)
    )
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn auth(code: i32, data: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(data);
    msg(b'R', &body)
}

async fn read_message<S: AsyncReadExt + Unpin>(s: &mut S) -> Option<Vec<u8>> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len.clamp(4, 1 << 16) - 4];
    s.read_exact(&mut body).await.ok()?;
    Some(body)
}

/// Starts the server on 127.0.0.1 with `identity`, for a user whose password is
/// `password`, offering SCRAM-SHA-256 only; returns its port.
pub async fn start(identity: &Issued, password: &str, behaviour: Behaviour) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    b.set_certificate(&identity.cert).unwrap();
    b.set_private_key(&identity.key).unwrap();
    let acceptor = b.build();
    let (stored, server_key) = keys(password);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let (stored, server_key) = (stored.clone(), server_key.clone());
            tokio::spawn(async move {
                let mut tls = super::fake_upstream::accept_session(tcp, &acceptor).await?;
                tls.write_all(&auth(10, b"SCRAM-SHA-256\0\0")).await.ok()?;
                // SASLInitialResponse: mechanism, length, client-first.
                let body = read_message(&mut tls).await?;
                let at = body.iter().position(|&b| b == 0)?;
                let client_first = String::from_utf8(body[at + 5..].to_vec()).ok()?;
                let bare = client_first.splitn(3, ',').nth(2)?.to_owned();
                let client_nonce = bare.split(",r=").nth(1)?.to_owned();
                let server_first = format!(
                    "r={client_nonce}fakeservernonce,s={},i={ITERATIONS}",
                    B64.encode(SALT)
                );
                tls.write_all(&auth(11, server_first.as_bytes()))
                    .await
                    .ok()?;
                let client_final = String::from_utf8(read_message(&mut tls).await?).ok()?;
                let (without_proof, proof) = client_final.rsplit_once(",p=")?;
                let auth_message = format!("{bare},{server_first},{without_proof}");
                let signature = hmac(&stored, auth_message.as_bytes());
                let proof = B64.decode(proof).ok()?;
                let client_key: Vec<u8> =
                    proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
                if hash(MessageDigest::sha256(), &client_key).ok()?.to_vec() != stored {
                    let e = b"SFATAL\0C28P01\0Mpassword authentication failed\0\0";
                    tls.write_all(&msg(b'E', e)).await.ok()?;
                    return None;
                }
                let key = if behaviour.wrong_signature {
                    &stored
                } else {
                    &server_key
                };
                let server_signature = hmac(key, auth_message.as_bytes());
                let server_final = format!("v={}", B64.encode(server_signature));
                let mut out = auth(12, server_final.as_bytes());
                out.extend(auth(0, &[]));
                out.extend(msg(b'S', b"server_version\x0015.0\0"));
                out.extend(msg(b'K', &[0, 0, 0, 9, 1, 2, 3, 4]));
                out.extend(msg(b'Z', b"I"));
                tls.write_all(&out).await.ok()?;
                // Answers one simple query (any) with "ok", then waits for the close.
                while let Some(_query) = read_message(&mut tls).await {
                    let mut answer = msg(
                        b'T',
                        b"\0\x01r\0\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0",
                    );
                    answer.extend(msg(b'D', b"\0\x01\0\0\0\x02ok"));
                    answer.extend(msg(b'C', b"SELECT 1\0"));
                    answer.extend(msg(b'Z', b"I"));
                    tls.write_all(&answer).await.ok()?;
                }
                Some(())
            });
        }
    });
    port
}
