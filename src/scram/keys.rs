//! SCRAM-SHA-256 cryptography on the system's OpenSSL (so FIPS mode covers it): SHA-256,
//! HMAC, the proof and signature computations, the tls-server-end-point hash, and the
//! ClientKey, which is zeroed when dropped and never printed. Every digest and MAC is
//! written straight into a buffer zeroed on drop, since most of them are keys.
//!
//! Terminating SCRAM from verifiers runs no PBKDF2: the proxy recovers the ClientKey from
//! the client's proof and reuses it upstream. Only `query_user`'s own login from a password
//! file derives a key from a password.

use std::os::raw::c_int;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::md::Md;
use openssl::md_ctx::MdCtx;
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
    pub(super) fn bytes(&self) -> &Key {
        &self.0
    }
}

/// SHA-256 of `data` (H(ClientKey) is the StoredKey).
pub(super) fn sha256(data: &[u8]) -> Result<Zeroizing<Key>, ErrorStack> {
    let mut ctx = MdCtx::new()?;
    ctx.digest_init(Md::sha256())?;
    ctx.digest_update(data)?;
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    ctx.digest_final(&mut out[..])?;
    Ok(out)
}

/// HMAC-SHA-256 of the concatenation of `parts` under `key` (ClientKey, ServerKey, the
/// signatures).
pub(super) fn hmac(key: &[u8], parts: &[&[u8]]) -> Result<Zeroizing<Key>, ErrorStack> {
    let pkey = PKey::hmac(key)?;
    let mut signer = Signer::new(MessageDigest::sha256(), &pkey)?;
    for part in parts {
        signer.update(part)?;
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    signer.sign(&mut out[..])?;
    Ok(out)
}

/// Compares two secrets in constant time.
pub(super) fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

/// AuthMessage's parts: client-first-message-bare, server-first-message and
/// client-final-message-without-proof, joined by commas.
pub(super) fn auth_message<'a>(
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
pub(super) fn recover_client_key(
    verifier: &Verifier,
    auth_message: &[&[u8]],
    proof: &Key,
) -> Result<Option<ClientKey>, ErrorStack> {
    let signature = hmac(&verifier.stored_key, auth_message)?;
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    for (k, (p, s)) in key.iter_mut().zip(proof.iter().zip(signature.iter())) {
        *k = p ^ s;
    }
    let stored = sha256(&key[..])?;
    Ok(secrets_equal(&stored[..], &verifier.stored_key).then(|| ClientKey(key)))
}

/// The proof of `client_key` for `auth_message`: ClientKey XOR HMAC(StoredKey, AuthMessage).
/// Zeroed on drop: with the StoredKey it gives the ClientKey back.
pub(super) fn client_proof(
    client_key: &Key,
    auth_message: &[&[u8]],
) -> Result<Zeroizing<Key>, ErrorStack> {
    let stored = sha256(client_key)?;
    let signature = hmac(&stored[..], auth_message)?;
    let mut proof = Zeroizing::new([0u8; KEY_LEN]);
    for (out, (k, s)) in proof
        .iter_mut()
        .zip(client_key.iter().zip(signature.iter()))
    {
        *out = k ^ s;
    }
    Ok(proof)
}

/// HMAC(ServerKey, AuthMessage): what proves the server (or the proxy) holds the verifier.
/// Not secret once sent, so a plain copy.
pub(super) fn server_signature(
    server_key: &Key,
    auth_message: &[&[u8]],
) -> Result<Key, ErrorStack> {
    Ok(*hmac(server_key, auth_message)?)
}

/// A fresh nonce: 18 random bytes in base64 (24 printable characters), as PostgreSQL makes.
pub(super) fn nonce() -> Result<String, ErrorStack> {
    let mut raw = [0u8; 18];
    openssl::rand::rand_bytes(&mut raw)?;
    Ok(B64.encode(raw))
}

/// The tls-server-end-point channel-binding data of `cert` (RFC 5929 4.1), as PostgreSQL's
/// server and libpq derive it: the certificate hashed with its signature's digest (for
/// RSA-PSS the one in the signature's parameters), SHA-256 for MD5 and SHA-1. `None` where
/// the signature has no digest of its own (Ed25519, Ed448): channel binding is not offered
/// then.
pub(crate) fn endpoint_hash(cert: &X509Ref) -> Option<Vec<u8>> {
    let digest = match signature_digest(cert)? {
        Nid::MD5 | Nid::SHA1 => MessageDigest::sha256(),
        other => MessageDigest::from_nid(other)?,
    };
    cert.digest(digest).ok().map(|d| d.to_vec())
}

/// The digest `cert`'s signature was made with, as `X509_get_signature_info` reports it
/// (what PostgreSQL asks): unlike the signature algorithm's OID, it knows RSA-PSS's
/// parameters. `None` for a signature without a digest, or one OpenSSL cannot read.
fn signature_digest(cert: &X509Ref) -> Option<Nid> {
    let mut mdnid: c_int = 0;
    // SAFETY: `cert` is a live certificate borrowed for the call. The function takes a
    // mutable pointer only to cache the certificate's decoded extensions (under the
    // certificate's own lock); the out-pointers it is given are a live local or null,
    // which it accepts for the values not wanted.
    let ok = unsafe {
        crate::tls::ffi::X509_get_signature_info(
            cert.as_ptr(),
            &mut mdnid,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    (ok == 1 && mdnid != Nid::UNDEF.as_raw()).then(|| Nid::from_raw(mdnid))
}

/// The SaltedPassword's ClientKey and the matching keys, for logging in with a password
/// (`auth.query_password_file`): PBKDF2-HMAC-SHA-256, then HMAC "Client Key".
pub(super) fn client_key_from_password(
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
    let client = hmac(&salted[..], &[b"Client Key"])?;
    // A plain copy: the login's Prover hands the ServerKey over by value, and its caller
    // holds it zeroed.
    let server = *hmac(&salted[..], &[b"Server Key"])?;
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
            B64.encode(&proof[..]),
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
            stored_key: *sha256(client_key.bytes()).unwrap(),
            server_key,
        };
        let recovered = recover_client_key(&verifier, &auth, &proof)
            .unwrap()
            .unwrap();
        assert_eq!(recovered.bytes(), client_key.bytes());
        let mut wrong = *proof;
        wrong[0] ^= 1;
        assert!(
            recover_client_key(&verifier, &auth, &wrong)
                .unwrap()
                .is_none()
        );
    }

    /// A self-signed certificate made by the openssl command line with `args` (key and
    /// signature options).
    fn openssl_cert(dir: &std::path::Path, name: &str, args: &[&str]) -> openssl::x509::X509 {
        let path = dir.join(format!("{name}.crt"));
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
            ])
            .args(args)
            .arg("-keyout")
            .arg(dir.join(format!("{name}.key")))
            .arg("-out")
            .arg(&path)
            .output()
            .expect("the openssl command line");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        openssl::x509::X509::from_pem(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn rsa_pss_certificates_are_hashed_with_the_digest_in_their_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let pss = |name: &str, md: &str, key: &str| {
            let cert = openssl_cert(
                dir.path(),
                name,
                &[
                    "-newkey",
                    key,
                    &format!("-{md}"),
                    "-sigopt",
                    "rsa_padding_mode:pss",
                    "-sigopt",
                    "rsa_pss_saltlen:digest",
                ],
            );
            // The signature algorithm's OID alone (rsassaPss) names no digest.
            assert_eq!(cert.signature_algorithm().object().nid(), Nid::RSASSAPSS);
            cert
        };
        let sha384 = pss("pss-sha384", "sha384", "rsa:2048");
        assert_eq!(
            endpoint_hash(&sha384).unwrap(),
            sha384.digest(MessageDigest::sha384()).unwrap().to_vec()
        );
        let sha512 = pss("pss-sha512", "sha512", "rsa:2048");
        assert_eq!(
            endpoint_hash(&sha512).unwrap(),
            sha512.digest(MessageDigest::sha512()).unwrap().to_vec()
        );
        // RFC 5929: SHA-1 becomes SHA-256.
        let sha1 = pss("pss-sha1", "sha1", "rsa:2048");
        assert_eq!(
            endpoint_hash(&sha1).unwrap(),
            sha1.digest(MessageDigest::sha256()).unwrap().to_vec()
        );
        // An RSA-PSS key (not only a PSS signature by an RSA key) too.
        let pss_key = pss("pss-key", "sha384", "rsa-pss");
        assert_eq!(
            endpoint_hash(&pss_key).unwrap(),
            pss_key.digest(MessageDigest::sha384()).unwrap().to_vec()
        );
        // PKCS#1 v1.5 and ECDSA as before; Ed25519 has no digest to bind with.
        let rsa = openssl_cert(dir.path(), "rsa", &["-newkey", "rsa:2048", "-sha512"]);
        assert_eq!(
            endpoint_hash(&rsa).unwrap(),
            rsa.digest(MessageDigest::sha512()).unwrap().to_vec()
        );
        let ec = openssl_cert(
            dir.path(),
            "ec",
            &[
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-384",
                "-sha384",
            ],
        );
        assert_eq!(
            endpoint_hash(&ec).unwrap(),
            ec.digest(MessageDigest::sha384()).unwrap().to_vec()
        );
        let ed = openssl_cert(dir.path(), "ed", &["-newkey", "ed25519"]);
        assert_eq!(endpoint_hash(&ed), None);
    }

    #[test]
    fn key_material_is_held_in_buffers_zeroed_on_drop() {
        fn zeroed_on_drop<T: zeroize::ZeroizeOnDrop>(_: &T) {}
        let auth = auth_message("n=,r=a", "r=ab,s=c2FsdA==,i=1", "c=biws,r=ab");
        let (client_key, _) = client_key_from_password(b"pencil", b"salt", 1).unwrap();
        zeroed_on_drop(&client_key.0);
        zeroed_on_drop(&sha256(client_key.bytes()).unwrap());
        zeroed_on_drop(&hmac(client_key.bytes(), &auth).unwrap());
        let proof = client_proof(client_key.bytes(), &auth).unwrap();
        zeroed_on_drop(&proof);
        let message = crate::protocol::scram::client_final("c=biws,r=ab", &proof[..]);
        zeroed_on_drop(&message);
        let fin = crate::protocol::scram::parse_client_final(message.as_bytes()).unwrap();
        zeroed_on_drop(&fin.proof);
        assert!(!format!("{fin:?}").contains(" proof:"), "{fin:?}");
    }
}
