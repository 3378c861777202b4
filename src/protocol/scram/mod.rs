//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, and the verifier format
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`: pure parsers and encoders
//! of the four exchange messages, no IO and no cryptography.
//!
//! Errors carry the SQLSTATE and message PostgreSQL's server gives for the same mistake
//! (`auth-scram.c`), so a client refused by pgt-proxy reads what it would read from the
//! server.

#[cfg(test)]
mod tests;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use zeroize::Zeroizing;

use super::sqlstate::{FEATURE_NOT_SUPPORTED, PROTOCOL_VIOLATION, SqlState};

/// The mechanism without channel binding.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// The mechanism with channel binding.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// The only channel-binding type PostgreSQL (and pgt-proxy) supports.
pub const CBIND_TYPE: &str = "tls-server-end-point";
/// The gs2 header of a client that binds with [`CBIND_TYPE`].
pub const GS2_BINDING: &str = "p=tls-server-end-point,,";
/// Length of SHA-256 keys, proofs and signatures.
pub const KEY_LEN: usize = 32;
/// Longest SCRAM message accepted (PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH).
pub const MAX_MESSAGE: usize = 65_535;

/// A malformed or unsupported SCRAM message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}{}", .detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
pub struct ScramError {
    /// The SQLSTATE PostgreSQL sends for it.
    pub sqlstate: SqlState,
    /// PostgreSQL's message.
    pub message: &'static str,
    /// PostgreSQL's detail, when it gives one.
    pub detail: Option<String>,
}

fn malformed(detail: impl Into<String>) -> ScramError {
    ScramError {
        sqlstate: PROTOCOL_VIOLATION,
        message: "malformed SCRAM message",
        detail: Some(detail.into()),
    }
}

/// The client's gs2 channel-binding flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gs2Flag {
    /// `n`: the client does not bind.
    No,
    /// `y`: the client could bind but thinks the server cannot.
    ClientOnly,
    /// `p=tls-server-end-point`: the client binds.
    Binding,
}

/// A client-first-message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst<'a> {
    /// The channel-binding flag.
    pub flag: Gs2Flag,
    /// The gs2 header as sent (`n,,`, `y,,` or `p=tls-server-end-point,,`).
    pub gs2_header: &'a str,
    /// client-first-message-bare: what the AuthMessage starts with.
    pub bare: &'a str,
    /// The client's nonce.
    pub nonce: &'a str,
}

/// Splits `attr=value` off the front of `rest` (up to the next comma).
fn attr<'a>(rest: &mut &'a str, name: char) -> Result<&'a str, ScramError> {
    let (field, after) = match rest.find(',') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (*rest, ""),
    };
    let value = field
        .strip_prefix(name)
        .and_then(|v| v.strip_prefix('='))
        .ok_or_else(|| malformed(format!("Expected attribute \"{name}\".")))?;
    *rest = after;
    Ok(value)
}

/// Printable ASCII without the comma (RFC 5802's `printable`).
fn printable(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Parses a client-first-message (the data of SASLInitialResponse).
pub fn parse_client_first(data: &[u8]) -> Result<ClientFirst<'_>, ScramError> {
    let text = std::str::from_utf8(data).map_err(|_| malformed("Invalid UTF-8."))?;
    let (flag, after_flag) = if let Some(rest) = text.strip_prefix("n,") {
        (Gs2Flag::No, rest)
    } else if let Some(rest) = text.strip_prefix("y,") {
        (Gs2Flag::ClientOnly, rest)
    } else if let Some(rest) = text.strip_prefix("p=") {
        let (kind, rest) = rest
            .split_once(',')
            .ok_or_else(|| malformed("Comma expected."))?;
        if kind != CBIND_TYPE {
            return Err(ScramError {
                sqlstate: PROTOCOL_VIOLATION,
                message: "unsupported SCRAM channel-binding type",
                detail: Some(kind.chars().take(64).collect()),
            });
        }
        (Gs2Flag::Binding, rest)
    } else {
        return Err(malformed("Unexpected channel-binding flag."));
    };
    if after_flag.starts_with('a') {
        return Err(ScramError {
            sqlstate: FEATURE_NOT_SUPPORTED,
            message: "client uses authorization identity, but it is not supported",
            detail: None,
        });
    }
    let bare = after_flag
        .strip_prefix(',')
        .ok_or_else(|| malformed("Unexpected attribute in client-first-message."))?;
    let gs2_header = &text[..text.len() - bare.len()];
    if bare.starts_with('m') {
        return Err(ScramError {
            sqlstate: FEATURE_NOT_SUPPORTED,
            message: "client requires an unsupported SCRAM extension",
            detail: None,
        });
    }
    let mut rest = bare;
    attr(&mut rest, 'n')?;
    let nonce = attr(&mut rest, 'r')?;
    if !printable(nonce) {
        return Err(ScramError {
            sqlstate: PROTOCOL_VIOLATION,
            message: "non-printable characters in SCRAM nonce",
            detail: None,
        });
    }
    Ok(ClientFirst {
        flag,
        gs2_header,
        bare,
        nonce,
    })
}

/// A client-final-message.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientFinal<'a> {
    /// The decoded `c=` attribute: the gs2 header, then the channel-binding data if any.
    pub channel_binding: Vec<u8>,
    /// The combined nonce.
    pub nonce: &'a str,
    /// The decoded proof, zeroed on drop: with the StoredKey it gives the ClientKey back.
    pub proof: Zeroizing<[u8; KEY_LEN]>,
    /// client-final-message-without-proof: what the AuthMessage ends with.
    pub without_proof: &'a str,
}

impl std::fmt::Debug for ClientFinal<'_> {
    /// Never prints the proof.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientFinal")
            .field("channel_binding", &self.channel_binding)
            .field("nonce", &self.nonce)
            .field("without_proof", &self.without_proof)
            .finish_non_exhaustive()
    }
}

/// Decodes base64 `text` into a key-sized array, with no copy left unzeroed.
fn decode_key(text: &str) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    let decoded = Zeroizing::new(B64.decode(text).ok()?);
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if decoded.len() != KEY_LEN {
        return None;
    }
    key.copy_from_slice(&decoded);
    Some(key)
}

/// Parses a client-final-message (the data of SASLResponse).
pub fn parse_client_final(data: &[u8]) -> Result<ClientFinal<'_>, ScramError> {
    let text = std::str::from_utf8(data).map_err(|_| malformed("Invalid UTF-8."))?;
    let mut rest = text;
    let c = attr(&mut rest, 'c')?;
    let channel_binding = B64
        .decode(c)
        .map_err(|_| malformed("Malformed channel-binding data."))?;
    let nonce = attr(&mut rest, 'r')?;
    // Extensions may come before the proof, which is last.
    let at = text
        .rfind(",p=")
        .ok_or_else(|| malformed("Expected attribute \"p\"."))?;
    let proof = decode_key(&text[at + 3..])
        .ok_or_else(|| malformed("Malformed proof in client-final-message."))?;
    if at + 1 < text.len() - rest.len() {
        return Err(malformed("Expected attribute \"p\"."));
    }
    Ok(ClientFinal {
        channel_binding,
        nonce,
        proof,
        without_proof: &text[..at],
    })
}

/// A server-first-message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFirst<'a> {
    /// The combined nonce (the client's, then the server's).
    pub nonce: &'a str,
    /// The decoded salt.
    pub salt: Vec<u8>,
    /// The PBKDF2 iteration count.
    pub iterations: u32,
}

/// Parses a server-first-message (the data of AuthenticationSASLContinue).
pub fn parse_server_first(data: &[u8]) -> Result<ServerFirst<'_>, ScramError> {
    let text = std::str::from_utf8(data).map_err(|_| malformed("Invalid UTF-8."))?;
    if text.starts_with('m') {
        return Err(malformed("The server requires an unsupported extension."));
    }
    let mut rest = text;
    let nonce = attr(&mut rest, 'r')?;
    let salt = B64
        .decode(attr(&mut rest, 's')?)
        .map_err(|_| malformed("Malformed salt."))?;
    let iterations = attr(&mut rest, 'i')?
        .parse::<u32>()
        .ok()
        .filter(|&i| i > 0)
        .ok_or_else(|| malformed("Malformed iteration count."))?;
    if !printable(nonce) || salt.is_empty() {
        return Err(malformed("Invalid nonce or empty salt."));
    }
    Ok(ServerFirst {
        nonce,
        salt,
        iterations,
    })
}

/// A server-final-message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFinal {
    /// `v=`: the server's signature.
    Verifier([u8; KEY_LEN]),
    /// `e=`: the server refused.
    Error(String),
}

/// Parses a server-final-message (the data of AuthenticationSASLFinal).
pub fn parse_server_final(data: &[u8]) -> Result<ServerFinal, ScramError> {
    let text = std::str::from_utf8(data).map_err(|_| malformed("Invalid UTF-8."))?;
    let first = text.split(',').next().unwrap_or_default();
    if let Some(e) = first.strip_prefix("e=") {
        return Ok(ServerFinal::Error(e.chars().take(200).collect()));
    }
    let v = first
        .strip_prefix("v=")
        .ok_or_else(|| malformed("Expected attribute \"v\"."))?;
    B64.decode(v)
        .ok()
        .and_then(|v| <[u8; KEY_LEN]>::try_from(v).ok())
        .map(ServerFinal::Verifier)
        .ok_or_else(|| malformed("Malformed server signature."))
}

/// The server-first-message for `nonce` (client's then server's), `salt` and `iterations`.
pub fn server_first(nonce: &str, salt: &[u8], iterations: u32) -> String {
    format!("r={nonce},s={},i={iterations}", B64.encode(salt))
}

/// The server-final-message carrying `signature`.
pub fn server_final(signature: &[u8]) -> String {
    format!("v={}", B64.encode(signature))
}

/// A client-first-message with an empty user name (PostgreSQL takes the user from the
/// StartupMessage), as libpq sends it.
pub fn client_first(gs2_header: &str, nonce: &str) -> String {
    format!("{gs2_header}n=,r={nonce}")
}

/// client-final-message-without-proof for `cbind_input` (gs2 header and binding data).
pub fn client_final_without_proof(cbind_input: &[u8], nonce: &str) -> String {
    format!("c={},r={nonce}", B64.encode(cbind_input))
}

/// client-final-message: `without_proof` and the proof; zeroed on drop, as the proof is.
pub fn client_final(without_proof: &str, proof: &[u8]) -> Zeroizing<String> {
    // Sized up front, so no reallocation leaves a copy of the proof behind.
    let mut out = String::with_capacity(without_proof.len() + 3 + proof.len().div_ceil(3) * 4);
    out.push_str(without_proof);
    out.push_str(",p=");
    B64.encode_string(proof, &mut out);
    Zeroizing::new(out)
}

/// A stored SCRAM-SHA-256 verifier, as in `pg_authid.rolpassword`.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// The salt.
    pub salt: Vec<u8>,
    /// H(ClientKey).
    pub stored_key: [u8; KEY_LEN],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; KEY_LEN],
}

impl Drop for Verifier {
    /// The keys are as secret as a password hash: no copy outlives its use.
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.stored_key.zeroize();
        self.server_key.zeroize();
    }
}

impl std::fmt::Debug for Verifier {
    /// Never prints the keys: a verifier is as secret as a password hash.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verifier(SCRAM-SHA-256, {} iterations)", self.iterations)
    }
}

/// Why a verifier text is not a SCRAM-SHA-256 verifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifierError {
    /// An md5 hash (`md5...`).
    #[error(
        "an md5 password hash, not a SCRAM-SHA-256 verifier (set the password again with password_encryption = 'scram-sha-256')"
    )]
    Md5,
    /// Something else: a plain password, or a damaged verifier.
    #[error(
        "not a SCRAM-SHA-256 verifier (expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)"
    )]
    NotScram,
}

/// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
pub fn parse_verifier(text: &str) -> Result<Verifier, VerifierError> {
    if text.starts_with("md5") && text.len() == 35 {
        return Err(VerifierError::Md5);
    }
    let parse = || -> Option<Verifier> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(Verifier {
            iterations: iterations.parse().ok().filter(|&i| i > 0)?,
            salt: B64.decode(salt).ok().filter(|s| !s.is_empty())?,
            stored_key: *decode_key(stored)?,
            server_key: *decode_key(server)?,
        })
    };
    parse().ok_or(VerifierError::NotScram)
}
