//! SCRAM-SHA-256 cryptography on the system's OpenSSL (so FIPS mode covers it): SHA-256,
//! HMAC, the proof and signature computations, the tls-server-end-point hash, and the
//! ClientKey, which is zeroed when dropped and never printed.
//!
//! Terminating SCRAM from verifiers runs no PBKDF2: the proxy recovers the ClientKey from
//! the client's proof and reuses it upstream. Only `query_user`'s own login from a password
//! file derives a key from a password.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::x509::X509Ref;
use zeroize::Zeroizing;

use crate::protocol::scram::{KEY_LEN, Verifier};

/// A 32-byte key or MAC.
pub(crate) type Key = [u8; KEY_LEN];

/// The key a client proves it knows: H(ClientKey) is the verifier's StoredKey. Zeroed on
/// drop; no Debug or Display.
pub(crate) struct ClientKey(Zeroizing<Key>);

impl ClientKey {
    /// The key's bytes, for the proof toward the server.
    pub fn bytes(&self) -> &Key {
        &self.0
    }
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> Result<Key, ErrorStack> {
    let digest = openssl::hash::hash(MessageDigest::sha256(), data)?;
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(&digest);
    Ok(out)
}

/// HMAC-SHA-256 of the concatenation of `parts` under `key`.
pub(crate) fn hmac(key: &[u8], parts: &[&[u8]]) -> Result<Key, ErrorStack> {
    let pkey = PKey::hmac(key)?;
    let mut signer = Signer::new(MessageDigest::sha256(), &pkey)?;
    for part in parts {
        signer.update(part)?;
    }
    let mut out = [0u8; KEY_LEN];
    signer.sign(&mut out)?;
    Ok(out)
}

/// Compares two secrets in constant time.
pub(crate) fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

/// AuthMessage's parts: client-first-message-bare, server-first-message and
/// client-final-message-without-proof, joined by commas.
pub(crate) fn auth_message<'a>(
    client_first_bare: &'a str,
    server_first: &'a str,
    client_final_without_proof: &'a str,
) -> [&'a [u8]; 5] {
    [
        client_first_bare.as_bytes(),
        b",",
        server_first.as_bytes(),
        b",",
        client_final_without_proof.as_bytes(),
    ]
}

/// The ClientKey behind a client's `proof`, if H(ClientKey) is the verifier's StoredKey
/// (compared in constant time).
pub(crate) fn recover_client_key(
    verifier: &Verifier,
    auth_message: &[&[u8]],
    proof: &Key,
) -> Result<Option<ClientKey>, ErrorStack> {
    let signature = Zeroizing::new(hmac(&verifier.stored_key, auth_message)?);
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    for (k, (p, s)) in key.iter_mut().zip(proof.iter().zip(signature.iter())) {
        *k = p ^ s;
    }
    let stored = sha256(&key[..])?;
    Ok(secrets_equal(&stored, &verifier.stored_key).then(|| ClientKey(key)))
}

/// The proof of `client_key` for `auth_message`: ClientKey XOR HMAC(StoredKey, AuthMessage).
pub(crate) fn client_proof(client_key: &Key, auth_message: &[&[u8]]) -> Result<Key, ErrorStack> {
    let stored = sha256(client_key)?;
    let signature = Zeroizing::new(hmac(&stored, auth_message)?);
    let mut proof = [0u8; KEY_LEN];
    for (out, (k, s)) in proof
        .iter_mut()
        .zip(client_key.iter().zip(signature.iter()))
    {
        *out = k ^ s;
    }
    Ok(proof)
}

/// HMAC(ServerKey, AuthMessage): what proves the server (or the proxy) holds the verifier.
pub(crate) fn server_signature(
    server_key: &Key,
    auth_message: &[&[u8]],
) -> Result<Key, ErrorStack> {
    hmac(server_key, auth_message)
}

/// A fresh nonce: 18 random bytes in base64 (24 printable characters), as PostgreSQL makes.
pub(crate) fn nonce() -> Result<String, ErrorStack> {
    let mut raw = [0u8; 18];
    openssl::rand::rand_bytes(&mut raw)?;
    Ok(B64.encode(raw))
}

/// The tls-server-end-point channel-binding data of `cert` (RFC 5929 4.1): its hash with the
/// signature's digest, SHA-256 for MD5 and SHA-1. `None` where the signature has no single
/// digest (Ed25519, Ed448, RSA-PSS): channel binding is not offered then.
pub(crate) fn endpoint_hash(cert: &X509Ref) -> Option<Vec<u8>> {
    let algorithms = cert
        .signature_algorithm()
        .object()
        .nid()
        .signature_algorithms()?;
    let digest = match algorithms.digest {
        Nid::MD5 | Nid::SHA1 => MessageDigest::sha256(),
        Nid::UNDEF => return None,
        other => MessageDigest::from_nid(other)?,
    };
    cert.digest(digest).ok().map(|d| d.to_vec())
}

/// The SaltedPassword's ClientKey and the matching keys, for logging in with a password
/// (`auth.query_password_file`): PBKDF2-HMAC-SHA-256, then HMAC "Client Key".
pub(crate) fn client_key_from_password(
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Result<(ClientKey, Key), ErrorStack> {
    let mut salted = Zeroizing::new([0u8; KEY_LEN]);
    let rounds = usize::try_from(iterations).unwrap_or(usize::MAX);
    openssl::pkcs5::pbkdf2_hmac(
        password,
        salt,
        rounds,
        MessageDigest::sha256(),
        &mut salted[..],
    )?;
    let client = Zeroizing::new(hmac(&salted[..], &[b"Client Key"])?);
    let server = hmac(&salted[..], &[b"Server Key"])?;
    Ok((ClientKey(client), server))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677: user "user", password "pencil".
    #[test]
    fn rfc_7677_proof_and_signature() {
        let bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let without_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth = auth_message(bare, server_first, without_proof);
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let (client_key, server_key) = client_key_from_password(b"pencil", &salt, 4096).unwrap();
        let proof = client_proof(client_key.bytes(), &auth).unwrap();
        assert_eq!(
            B64.encode(proof),
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let signature = server_signature(&server_key, &auth).unwrap();
        assert_eq!(
            B64.encode(signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );

        let verifier = Verifier {
            iterations: 4096,
            salt,
            stored_key: sha256(client_key.bytes()).unwrap(),
            server_key,
        };
        let recovered = recover_client_key(&verifier, &auth, &proof)
            .unwrap()
            .unwrap();
        assert_eq!(recovered.bytes(), client_key.bytes());
        let mut wrong = proof;
        wrong[0] ^= 1;
        assert!(
            recover_client_key(&verifier, &auth, &wrong)
                .unwrap()
                .is_none()
        );
    }
}
