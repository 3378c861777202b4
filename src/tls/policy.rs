//! The TLS policy, the same on both legs: protocol versions, cipher suites, signature
//! algorithms (FIPS), ALPN, no renegotiation and no compression, and the key-exchange
//! groups each leg was given ([`super::groups`] chooses them). Nothing else in the crate
//! sets any of these.

use openssl::ssl::{SslContextBuilder, SslOptions};

/// ALPN protocol id of PostgreSQL.
pub(crate) const ALPN_POSTGRESQL: &[u8] = b"postgresql";
/// The same in ALPN wire format (length-prefixed).
pub(crate) const ALPN_WIRE: &[u8] = b"\x0apostgresql";

/// TLS 1.2 suites: ECDHE key exchange with AEAD only (Mozilla "intermediate" without DHE).
const TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
/// TLS 1.3 suites (all three standard AEAD suites).
const TLS13_CIPHERSUITES: &str =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
/// FIPS mode, TLS 1.2: ECDHE with AES-GCM only.
const FIPS_TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384";
/// FIPS mode, TLS 1.3: the AES-GCM suites (no ChaCha20-Poly1305).
const FIPS_TLS13_CIPHERSUITES: &str = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384";
/// FIPS mode signature algorithms: ECDSA and RSA(-PSS) with SHA-2 (no SHA-1, no EdDSA).
const FIPS_SIGALGS: &str = "ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512:\
rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512:\
rsa_pss_pss_sha256:rsa_pss_pss_sha384:rsa_pss_pss_sha512:RSA+SHA256:RSA+SHA384:RSA+SHA512";

/// Applies the suites, `groups` and options to a context. `tls12` is false when only
/// TLS 1.3 is allowed (Mozilla modern), which keeps OpenSSL's TLS 1.2 list untouched.
pub(crate) fn apply_policy(
    b: &mut SslContextBuilder,
    fips: bool,
    tls12: bool,
    groups: &str,
) -> Result<(), openssl::error::ErrorStack> {
    if fips {
        b.set_cipher_list(FIPS_TLS12_CIPHERS)?;
        b.set_ciphersuites(FIPS_TLS13_CIPHERSUITES)?;
        b.set_sigalgs_list(FIPS_SIGALGS)?;
    } else {
        if tls12 {
            b.set_cipher_list(TLS12_CIPHERS)?;
        }
        b.set_ciphersuites(TLS13_CIPHERSUITES)?;
    }
    b.set_groups_list(groups)?;
    super::groups::remember(b, groups);
    b.set_options(SslOptions::NO_RENEGOTIATION | SslOptions::NO_COMPRESSION);
    Ok(())
}
