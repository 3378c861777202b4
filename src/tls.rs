//! Building the two OpenSSL contexts from files: the acceptor that presents the proxy's
//! certificate to clients, and the connector that verifies the upstream.
//!
//! Policy lives here and nowhere else: protocol versions, cipher suites, groups, ALPN,
//! renegotiation and resumption, the private-key permission rule, and trust-anchor loading.
//! There is deliberately no way to build a connector that skips certificate or host name
//! verification.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{
    AlpnError, SslAcceptor, SslConnector, SslContextBuilder, SslMethod, SslMode, SslOptions,
    SslRef, SslSessionCacheMode, SslVerifyMode, SslVersion,
};
use std::sync::{Arc, Mutex};

use foreign_types::ForeignTypeRef;
use openssl::x509::store::{X509Store, X509StoreBuilder, X509StoreBuilderRef};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509, X509Crl, X509NameRef, X509Ref, X509StoreContextRef, X509VerifyResult};

use crate::config::schema::{CrlCheck, RawListen, RawTls, RawUpstream, TlsVersion};

/// ALPN protocol id of PostgreSQL (wire format: length-prefixed).
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";
const ALPN_WIRE: &[u8] = b"\x0apostgresql";

/// TLS 1.2 suites: ECDHE key exchange with AEAD only (Mozilla "intermediate" without DHE).
pub const TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
/// TLS 1.3 suites (all three standard AEAD suites).
pub const TLS13_CIPHERSUITES: &str =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
/// Key exchange groups, in preference order.
pub const GROUPS: &str = "X25519:P-256:P-384";
/// FIPS mode, TLS 1.2: ECDHE with AES-GCM only.
pub const FIPS_TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384";
/// FIPS mode, TLS 1.3: the AES-GCM suites (no ChaCha20-Poly1305).
pub const FIPS_TLS13_CIPHERSUITES: &str = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384";
/// FIPS mode groups: the NIST curves. Listed explicitly because the 3.0.8 and 3.1.2 FIPS
/// providers still register X25519 as fips=yes.
pub const FIPS_GROUPS: &str = "P-256:P-384:P-521";
/// FIPS mode signature algorithms: ECDSA and RSA(-PSS) with SHA-2 (no SHA-1, no EdDSA).
pub const FIPS_SIGALGS: &str = "ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512:\
rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512:\
rsa_pss_pss_sha256:rsa_pss_pss_sha384:rsa_pss_pss_sha512:RSA+SHA256:RSA+SHA384:RSA+SHA512";
/// A certificate that expires sooner than this is worth a warning.
pub const EXPIRY_WARNING_DAYS: i32 = 30;

/// A TLS setup failure, naming the key and file involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A file could not be read.
    #[error("{key} {}: cannot read: {source}", path.display())]
    Read {
        /// Config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A file's content is unusable.
    #[error("{key} {}: {message}", path.display())]
    Content {
        /// Config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// OpenSSL refused a setting (should not happen with the built-in policy).
    #[error("TLS setup: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

/// A loaded certificate chain and its key, checked to match.
pub struct Identity {
    /// Leaf first, then intermediates.
    pub chain: Vec<X509>,
    /// The leaf's private key.
    pub key: PKey<Private>,
}

/// Builds the client-facing acceptor from `[listen]` (and `[tls]` for revocation).
pub fn build_acceptor(
    listen: &RawListen,
    tls: &RawTls,
    fips: bool,
) -> Result<SslAcceptor, TlsSetupError> {
    let identity = load_identity(
        ("listen.certificate", &listen.certificate),
        ("listen.private_key", &listen.private_key),
        fips,
    )?;
    let mut b = match listen.min_tls_version {
        TlsVersion::V1_2 => SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?,
        TlsVersion::V1_3 => SslAcceptor::mozilla_modern_v5(SslMethod::tls_server())?,
    };
    if fips {
        set_fips_lists(&mut b)?;
    } else {
        if listen.min_tls_version == TlsVersion::V1_2 {
            b.set_cipher_list(TLS12_CIPHERS)?;
        }
        b.set_ciphersuites(TLS13_CIPHERSUITES)?;
        b.set_groups_list(GROUPS)?;
    }
    b.set_options(SslOptions::NO_RENEGOTIATION | SslOptions::NO_COMPRESSION);
    tune_records(&mut b);
    if !listen.session_tickets {
        b.set_options(SslOptions::NO_TICKET);
        b.set_num_tickets(0)?;
        b.set_session_cache_mode(SslSessionCacheMode::OFF);
    }
    let refused = |e| rejected("listen.certificate", &listen.certificate, e);
    b.set_certificate(&identity.chain[0]).map_err(refused)?;
    for extra in &identity.chain[1..] {
        b.add_extra_chain_cert(extra.clone()).map_err(refused)?;
    }
    b.set_private_key(&identity.key)
        .map_err(|e| rejected("listen.private_key", &listen.private_key, e))?;
    b.check_private_key().map_err(refused)?;
    if let Some(client_ca) = &listen.client_ca {
        let mut store = trust_anchor_builder("listen.client_ca", client_ca)?;
        if let Some(crl) = &listen.client_crl {
            add_crls(&mut store, "listen.client_crl", crl, tls.crl_check)?;
        }
        b.set_cert_store(store.build());
        // Enforced here for every connection; `accept_tls` adds a per-connection callback
        // that records why a certificate failed.
        b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    } else if listen.client_crl.is_some() {
        return Err(TlsSetupError::Content {
            key: "listen.client_crl",
            path: listen.client_crl.clone().unwrap_or_default(),
            message: "listen.client_crl needs listen.client_ca (client certificates are not requested without it)".into(),
        });
    }
    // PostgreSQL 17's rule: a client that offers ALPN must offer "postgresql". A client that
    // offers none is let through here; direct TLS then refuses it after the handshake.
    b.set_alpn_select_callback(|_, client| {
        openssl::ssl::select_next_proto(ALPN_WIRE, client).ok_or(AlpnError::ALERT_FATAL)
    });
    Ok(b.build())
}

/// Record handling both legs share. Idle sessions must not keep 2 x 16 KiB of record buffers
/// each (RELEASE_BUFFERS). Read-ahead lets one socket read take every record that has
/// arrived, instead of one read for each record's header and another for its body; a short
/// read also tells tokio the socket is drained, which saves the read that would only return
/// EAGAIN. Only TLS records follow the handshake on either leg, so reading ahead can never
/// swallow plaintext.
fn tune_records(b: &mut SslContextBuilder) {
    b.set_mode(SslMode::RELEASE_BUFFERS);
    b.set_read_ahead(true);
    // SAFETY: sets a length on the context being built.
    unsafe { SSL_CTX_set_default_read_buffer_len(b.as_ptr(), READ_BUFFER_LEN) };
}

/// OpenSSL's read buffer while data flows (released when idle): room for four full records,
/// so a bulk transfer takes several records per socket read.
const READ_BUFFER_LEN: usize = 4 * (16 * 1024 + 512);

/// Builds the upstream connector from `[upstream]`: full chain verification against the
/// configured trust anchors; host name checks are added per connection (see
/// [`crate::upstream`]).
pub fn build_connector(
    upstream: &RawUpstream,
    tls: &RawTls,
    fips: bool,
) -> Result<SslConnector, TlsSetupError> {
    let mut b = SslConnector::builder(SslMethod::tls_client())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    if fips {
        set_fips_lists(&mut b)?;
    } else {
        b.set_cipher_list(TLS12_CIPHERS)?;
        b.set_ciphersuites(TLS13_CIPHERSUITES)?;
        b.set_groups_list(GROUPS)?;
    }
    b.set_options(SslOptions::NO_RENEGOTIATION | SslOptions::NO_COMPRESSION);
    tune_records(&mut b);
    b.set_verify(SslVerifyMode::PEER);
    let mut store = trust_anchor_builder("upstream.ca", &upstream.ca)?;
    if let Some(crl) = &upstream.crl {
        add_crls(&mut store, "upstream.crl", crl, tls.crl_check)?;
    }
    b.set_cert_store(store.build());
    // Every PostgreSQL 17+ server requires it for direct TLS; older ones ignore it.
    b.set_alpn_protos(ALPN_WIRE)?;
    match (&upstream.client_certificate, &upstream.client_private_key) {
        (Some(cert), Some(key)) => {
            let identity = load_identity(
                ("upstream.client_certificate", cert),
                ("upstream.client_private_key", key),
                fips,
            )?;
            let refused = |e| rejected("upstream.client_certificate", cert, e);
            b.set_certificate(&identity.chain[0]).map_err(refused)?;
            for extra in &identity.chain[1..] {
                b.add_extra_chain_cert(extra.clone()).map_err(refused)?;
            }
            b.set_private_key(&identity.key)
                .map_err(|e| rejected("upstream.client_private_key", key, e))?;
            b.check_private_key().map_err(refused)?;
        }
        (None, None) => {}
        (Some(path), None) | (None, Some(path)) => {
            return Err(TlsSetupError::Content {
                key: "upstream.client_certificate",
                path: path.clone(),
                message: "upstream.client_certificate and upstream.client_private_key must be \
                          set together"
                    .into(),
            });
        }
    }
    Ok(b.build())
}

/// FIPS mode's protocol lists, the same on both legs.
fn set_fips_lists(b: &mut SslContextBuilder) -> Result<(), openssl::error::ErrorStack> {
    b.set_cipher_list(FIPS_TLS12_CIPHERS)?;
    b.set_ciphersuites(FIPS_TLS13_CIPHERSUITES)?;
    b.set_groups_list(FIPS_GROUPS)?;
    b.set_sigalgs_list(FIPS_SIGALGS)
}

/// Loads a PEM chain and its private key, enforcing the key permission rule and that the
/// key belongs to the leaf.
pub fn load_identity(
    (cert_key, cert_path): (&'static str, &Path),
    (key_key, key_path): (&'static str, &Path),
    fips: bool,
) -> Result<Identity, TlsSetupError> {
    let pem = read(cert_key, cert_path)?;
    let chain = X509::stack_from_pem(&pem).map_err(|e| content(cert_key, cert_path, e))?;
    if chain.is_empty() {
        return Err(none_found(cert_key, cert_path, "certificate"));
    }
    check_key_permissions(key_key, key_path)?;
    let key_pem = read(key_key, key_path)?;
    let key = PKey::private_key_from_pem(&key_pem).map_err(|e| content(key_key, key_path, e))?;
    let leaf_key = chain[0].public_key()?;
    if !key.public_eq(&leaf_key) {
        return Err(TlsSetupError::Content {
            key: key_key,
            path: key_path.into(),
            message: format!(
                "private key does not match the certificate in {}",
                cert_path.display()
            ),
        });
    }
    if fips && let Err(why) = fips_usable_key(&key) {
        return Err(TlsSetupError::Content {
            key: key_key,
            path: key_path.into(),
            message: format!("the FIPS provider cannot use this key: {why}"),
        });
    }
    Ok(Identity { chain, key })
}

/// Keys a FIPS 140 provider can sign with: RSA of 2048 bits or more, ECDSA on P-256, P-384
/// or P-521.
fn fips_usable_key(key: &PKey<Private>) -> Result<(), String> {
    use openssl::pkey::Id;
    match key.id() {
        Id::RSA if key.bits() >= 2048 => Ok(()),
        Id::RSA => Err(format!(
            "RSA keys must have at least 2048 bits, this one has {}",
            key.bits()
        )),
        Id::EC => {
            let curve = key
                .ec_key()
                .ok()
                .and_then(|ec| ec.group().curve_name())
                .and_then(|nid| nid.short_name().ok())
                .unwrap_or("unknown");
            match curve {
                "prime256v1" | "secp384r1" | "secp521r1" => Ok(()),
                other => Err(format!(
                    "EC keys must be on P-256, P-384 or P-521, not {other}"
                )),
            }
        }
        other => Err(format!(
            "{other:?} keys are not approved; use RSA (2048+) or ECDSA (P-256/384/521)"
        )),
    }
}

/// PostgreSQL's rule for its own key file: no group or other access, except group read
/// when the file is owned by root (so root:pgt-proxy 0640 works for a service user).
pub fn check_key_permissions(key: &'static str, path: &Path) -> Result<(), TlsSetupError> {
    let meta = fs::metadata(path).map_err(|source| TlsSetupError::Read {
        key,
        path: path.into(),
        source,
    })?;
    let mode = meta.mode() & 0o777;
    let allowed_extra = if meta.uid() == 0 { 0o040 } else { 0 };
    if mode & 0o077 & !allowed_extra != 0 {
        return Err(TlsSetupError::Content {
            key,
            path: path.into(),
            message: format!(
                "private key file has group or world access (mode {mode:04o}); it must be \
                 u=rw (0600) or less, or u=rw,g=r (0640) or less when owned by root"
            ),
        });
    }
    Ok(())
}

/// Loads trust anchors: "system" (OpenSSL's default paths), a PEM file, or a directory
/// whose every regular file is read as PEM certificates.
pub fn load_trust_anchors(key: &'static str, spec: &str) -> Result<X509Store, TlsSetupError> {
    Ok(trust_anchor_builder(key, spec)?.build())
}

/// [`load_trust_anchors`], still open for CRLs and flags.
fn trust_anchor_builder(key: &'static str, spec: &str) -> Result<X509StoreBuilder, TlsSetupError> {
    let mut store = X509StoreBuilder::new()?;
    if spec == "system" {
        store.set_default_paths()?;
        return Ok(store);
    }
    let path = Path::new(spec);
    let mut count = 0;
    for file in &pem_files(key, path)? {
        let pem = read(key, file)?;
        for cert in X509::stack_from_pem(&pem).map_err(|e| content(key, file, e))? {
            store.add_cert(cert)?;
            count += 1;
        }
    }
    if count == 0 {
        return Err(none_found(key, path, "certificate"));
    }
    Ok(store)
}

/// `path` itself, or every regular file in it (sorted) when it is a directory.
pub fn pem_files(key: &'static str, path: &Path) -> Result<Vec<PathBuf>, TlsSetupError> {
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files: Vec<PathBuf> = fs::read_dir(path)
        .map_err(|source| TlsSetupError::Read {
            key,
            path: path.into(),
            source,
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Loads every PEM CRL in `path` (a file, or a directory of files) into `store` and turns
/// on CRL checking for the leaf or the whole chain.
fn add_crls(
    store: &mut X509StoreBuilderRef,
    key: &'static str,
    path: &Path,
    check: CrlCheck,
) -> Result<(), TlsSetupError> {
    let mut count = 0;
    for file in pem_files(key, path)? {
        let pem = read(key, &file)?;
        for block in pem_blocks(&pem, "X509 CRL") {
            let crl = X509Crl::from_pem(block).map_err(|e| content(key, &file, e))?;
            // SAFETY: both pointers are valid; X509_STORE_add_crl takes its own reference.
            let rc = unsafe { X509_STORE_add_crl(store.as_ptr(), crl.as_ptr()) };
            if rc != 1 {
                return Err(openssl::error::ErrorStack::get().into());
            }
            count += 1;
        }
    }
    if count == 0 {
        return Err(none_found(key, path, "CRL"));
    }
    store.set_flags(match check {
        CrlCheck::Chain => X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL,
        CrlCheck::Leaf => X509VerifyFlags::CRL_CHECK,
    })?;
    Ok(())
}

// libcrypto's (OpenSSL 1.0.0 and later), which openssl-sys does not declare.
unsafe extern "C" {
    fn X509_STORE_add_crl(
        store: *mut openssl_sys::X509_STORE,
        crl: *mut openssl_sys::X509_CRL,
    ) -> std::os::raw::c_int;
}

// libssl's (OpenSSL 1.1.0 and later), which openssl-sys does not declare.
unsafe extern "C" {
    fn SSL_has_pending(ssl: *const openssl_sys::SSL) -> std::os::raw::c_int;
    fn SSL_free_buffers(ssl: *mut openssl_sys::SSL) -> std::os::raw::c_int;
    fn SSL_CTX_set_default_read_buffer_len(ctx: *mut openssl_sys::SSL_CTX, len: usize);
}

/// Frees a connection's record buffers while it is idle. RELEASE_BUFFERS alone does not
/// keep an idle session free of them: every read that finds the socket empty sets up a
/// fresh 16 KiB read buffer first, and it stays until data arrives. Only when nothing is
/// buffered (no partial record: `SSL_has_pending` is 0), so even OpenSSL releases without
/// the CVE-2024-4741 fix are safe; OpenSSL refuses by itself when a write is unfinished.
pub fn release_idle_buffers(ssl: &SslRef) {
    // SAFETY: `ssl` is a live SSL object borrowed for the call; both functions only look
    // at and free its own buffers, and decline when data is pending.
    unsafe {
        if SSL_has_pending(ssl.as_ptr()) == 0 {
            SSL_free_buffers(ssl.as_ptr());
        }
    }
}

/// The PEM blocks of type `label` in `pem`, each with its BEGIN and END lines.
fn pem_blocks<'a>(pem: &'a [u8], label: &str) -> Vec<&'a [u8]> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut blocks = Vec::new();
    let mut rest = pem;
    while let Some(start) = find(rest, begin.as_bytes()) {
        let Some(stop) = find(&rest[start..], end.as_bytes()) else {
            break;
        };
        let stop = start + stop + end.len();
        blocks.push(&rest[start..stop]);
        rest = &rest[stop..];
    }
    blocks
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The first thing that went wrong while verifying a peer's chain.
#[derive(Debug, Clone)]
pub struct VerifyFailure {
    /// OpenSSL's verify error.
    pub error: X509VerifyResult,
    /// Subject of the certificate concerned.
    pub subject: String,
    /// Its serial number, hex.
    pub serial: String,
    /// Its DNS/IP names (or CN).
    pub names: String,
}

impl VerifyFailure {
    /// Whether the certificate was found revoked.
    pub fn is_revoked(&self) -> bool {
        self.error.as_raw() == openssl_sys::X509_V_ERR_CERT_REVOKED
    }
}

/// Watches one handshake's chain verification: records the first failure, forgives an
/// expired CRL when `crl_allow_expired` says so, and (for clients) lets a revoked
/// certificate finish the handshake so the refusal can be a PostgreSQL error (28000) instead
/// of a bare alert. The connection is refused either way.
#[derive(Clone, Default)]
pub struct VerifyObserver {
    failure: Arc<Mutex<Option<VerifyFailure>>>,
    allow_expired_crl: bool,
    defer_revoked: bool,
}

impl VerifyObserver {
    /// An observer; see the type's documentation for the two switches.
    pub fn new(allow_expired_crl: bool, defer_revoked: bool) -> Self {
        Self {
            failure: Arc::default(),
            allow_expired_crl,
            defer_revoked,
        }
    }

    /// The callback for `set_verify_callback`.
    pub fn callback(
        &self,
    ) -> impl Fn(bool, &mut X509StoreContextRef) -> bool + Send + Sync + 'static {
        let this = self.clone();
        move |ok, ctx| {
            if ok {
                return true;
            }
            let error = ctx.error();
            if this.allow_expired_crl && error.as_raw() == openssl_sys::X509_V_ERR_CRL_HAS_EXPIRED {
                return true;
            }
            let mut slot = this.failure.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                let cert = ctx.current_cert();
                *slot = Some(VerifyFailure {
                    error,
                    subject: cert
                        .map(|c| name_to_string(c.subject_name()))
                        .unwrap_or_default(),
                    serial: cert.map(serial_hex).unwrap_or_default(),
                    names: cert
                        .map(|c| certificate_names(c).join(", "))
                        .unwrap_or_default(),
                });
            }
            this.defer_revoked && error.as_raw() == openssl_sys::X509_V_ERR_CERT_REVOKED
        }
    }

    /// The first failure seen, if any.
    pub fn failure(&self) -> Option<VerifyFailure> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A certificate's serial number in hex.
pub fn serial_hex(cert: &X509Ref) -> String {
    cert.serial_number()
        .to_bn()
        .and_then(|bn| bn.to_hex_str().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Days until `cert` expires (negative once expired) and whether it is valid yet.
pub fn validity(cert: &X509Ref) -> Result<(i32, bool), openssl::error::ErrorStack> {
    let now = Asn1Time::days_from_now(0)?;
    let until_expiry = now.diff(cert.not_after())?;
    let since_start = cert.not_before().diff(&now)?;
    let started = since_start.days > 0 || (since_start.days == 0 && since_start.secs >= 0);
    Ok((until_expiry.days, started))
}

/// A distinguished name as `CN=db, O=Example`.
pub fn name_to_string(name: &X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let field = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{field}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The names a certificate is valid for: its DNS and IP SANs, else its CN.
pub fn certificate_names(cert: &X509Ref) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(sans) = cert.subject_alt_names() {
        for san in &sans {
            if let Some(dns) = san.dnsname() {
                names.push(format!("DNS:{dns}"));
            } else if let Some(ip) = san.ipaddress() {
                let ip = match ip.len() {
                    4 => <[u8; 4]>::try_from(ip).map(std::net::IpAddr::from).ok(),
                    16 => <[u8; 16]>::try_from(ip).map(std::net::IpAddr::from).ok(),
                    _ => None,
                };
                if let Some(ip) = ip {
                    names.push(format!("IP:{ip}"));
                }
            }
        }
    }
    if names.is_empty() {
        for cn in cert
            .subject_name()
            .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        {
            if let Ok(cn) = cn.data().to_string() {
                names.push(format!("CN:{cn}"));
            }
        }
    }
    names
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    fs::read(path).map_err(|source| TlsSetupError::Read {
        key,
        path: path.into(),
        source,
    })
}

/// A file or directory that holds nothing of what it should.
fn none_found(key: &'static str, path: &Path, what: &str) -> TlsSetupError {
    TlsSetupError::Content {
        key,
        path: path.into(),
        message: format!("no PEM {what} found"),
    }
}

/// OpenSSL would not use a certificate or key (e.g. below the system's security level).
fn rejected(key: &'static str, path: &Path, e: openssl::error::ErrorStack) -> TlsSetupError {
    TlsSetupError::Content {
        key,
        path: path.into(),
        message: format!(
            "OpenSSL refuses it: {} (the system's OpenSSL security level may require a larger key)",
            openssl_errors(&e)
        ),
    }
}

fn content(key: &'static str, path: &Path, e: openssl::error::ErrorStack) -> TlsSetupError {
    TlsSetupError::Content {
        key,
        path: path.into(),
        message: format!("not a valid PEM file: {e}"),
    }
}

/// OpenSSL's error without the source-file noise, or the IO error behind it.
pub fn describe_ssl_error(e: &openssl::ssl::Error) -> String {
    if let Some(first) = e.ssl_error().and_then(|stack| stack.errors().first()) {
        return first
            .reason()
            .map(str::to_owned)
            .unwrap_or_else(|| first.to_string());
    }
    if let Some(io) = e.io_error() {
        return io.to_string();
    }
    match e.code() {
        openssl::ssl::ErrorCode::SYSCALL | openssl::ssl::ErrorCode::ZERO_RETURN => {
            "the peer closed the connection".into()
        }
        _ => e.to_string(),
    }
}

/// OpenSSL's errors as "reason (detail)", without source file positions.
pub fn openssl_errors(stack: &openssl::error::ErrorStack) -> String {
    let parts: Vec<String> = stack
        .errors()
        .iter()
        .map(|e| match (e.reason(), e.data()) {
            (Some(r), Some(d)) => format!("{r} ({d})"),
            (Some(r), None) => r.to_owned(),
            (None, Some(d)) => d.to_owned(),
            (None, None) => e.to_string(),
        })
        .collect();
    if parts.is_empty() {
        "no detail from OpenSSL".into()
    } else {
        parts.join("; ")
    }
}
