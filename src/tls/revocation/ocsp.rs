//! OCSP revocation checking of a verified peer certificate, for either leg.
//!
//! After a handshake has verified a chain, `OcspChecker::check` asks the certificate's
//! responder (from its AIA extension, or the configured override) whether it is revoked: a
//! request with a nonce over plain HTTP, a response whose signature must verify against the
//! issuer (or a responder certificate the issuer delegated to), and thisUpdate/nextUpdate
//! within a small clock-skew allowance. Good answers are cached per certificate until their
//! nextUpdate, in a bounded cache. What to do with "unknown" or an unreachable responder is
//! the caller's policy (`OcspMode`); "revoked" is always a refusal.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use foreign_types::ForeignTypeRef;
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::ocsp::{
    OcspCertId, OcspCertStatus, OcspFlag, OcspRequest, OcspResponse, OcspResponseStatus,
};
use openssl::ssl::{SslContext, SslContextRef, SslRef};
use openssl::stack::{Stack, StackRef};
use openssl::x509::X509;
use openssl::x509::store::X509StoreRef;

pub(crate) use crate::config::schema::OcspMode;
use crate::tls::describe::CertSummary;
use crate::tls::ffi;

/// Allowed clock difference when checking thisUpdate and nextUpdate.
const CLOCK_SKEW_SECS: u32 = 300;
/// How long a good answer without nextUpdate is trusted.
const NO_NEXT_UPDATE_TTL: Duration = Duration::from_secs(3600);
/// Most certificates remembered.
const CACHE_LIMIT: usize = 10_000;
/// Largest response read.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// Why a certificate is not known to be good.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OcspError {
    /// The responder says the certificate is revoked.
    #[error("revoked (OCSP)")]
    Revoked,
    /// The status could not be established: unknown to the responder, responder
    /// unreachable, or an invalid response.
    #[error("revocation status unknown (OCSP): {0}")]
    Unknown(String),
}

/// One leg's OCSP policy and cache.
#[derive(Debug)]
pub(crate) struct OcspChecker {
    mode: OcspMode,
    responder: Option<String>,
    timeout: Duration,
    cache: Mutex<HashMap<Vec<u8>, SystemTime>>,
}

impl OcspChecker {
    /// A checker; `None` when `mode` is off.
    pub fn new(mode: OcspMode, responder: Option<String>, timeout: Duration) -> Option<Self> {
        (mode != OcspMode::Off).then(|| Self {
            mode,
            responder,
            timeout,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The policy for unknown answers and unreachable responders.
    pub fn mode(&self) -> OcspMode {
        self.mode
    }

    /// Checks the peer certificate of a completed, verified handshake. `context` holds the
    /// trust store the chain was verified with.
    pub async fn check(
        &self,
        ssl: &SslRef,
        context: &SslContextRef,
    ) -> Result<(), (OcspError, CertSummary)> {
        let chain: Vec<X509> = ssl
            .verified_chain()
            .map(|c| c.iter().map(|x| x.to_owned()).collect())
            .unwrap_or_default();
        let (Some(leaf), Some(issuer)) = (chain.first().cloned(), chain.get(1).cloned()) else {
            return Err((
                OcspError::Unknown("no verified chain with an issuer".into()),
                CertSummary::default(),
            ));
        };
        let who = CertSummary::of(&leaf);
        let key = leaf
            .digest(MessageDigest::sha256())
            .map(|d| d.to_vec())
            .unwrap_or_default();
        if self.cached_good(&key) {
            return Ok(());
        }
        let url = match self.responder.clone().or_else(|| responder_of(&leaf)) {
            Some(url) => url,
            None => {
                return Err((
                    OcspError::Unknown("the certificate names no OCSP responder".into()),
                    who,
                ));
            }
        };
        let context: SslContext = context.to_owned();
        let timeout = self.timeout;
        let answer = tokio::task::spawn_blocking(move || {
            query(&url, &leaf, &issuer, &chain, &context, timeout)
        })
        .await
        .unwrap_or_else(|e| Err(OcspError::Unknown(format!("OCSP task failed: {e}"))));
        match answer {
            Ok(valid_until) => {
                self.remember(key, valid_until);
                Ok(())
            }
            Err(e) => Err((e, who)),
        }
    }

    fn cached_good(&self, key: &[u8]) -> bool {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(key)
            .is_some_and(|until| SystemTime::now() < *until)
    }

    fn remember(&self, key: Vec<u8>, until: SystemTime) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_LIMIT {
            let now = SystemTime::now();
            cache.retain(|_, until| now < *until);
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
        }
        cache.insert(key, until);
    }
}

/// The first HTTP OCSP responder in the certificate's AIA extension.
fn responder_of(cert: &X509) -> Option<String> {
    cert.ocsp_responders()
        .ok()?
        .iter()
        .map(|s| s.to_string())
        .find(|s| s.starts_with("http://"))
}

/// One exchange with the responder; returns until when a good answer may be trusted.
fn query(
    url: &str,
    leaf: &X509,
    issuer: &X509,
    chain: &[X509],
    context: &SslContext,
    timeout: Duration,
) -> Result<SystemTime, OcspError> {
    let unknown =
        |what: &str, e: &dyn std::fmt::Display| OcspError::Unknown(format!("{what}: {e}"));
    let id = || OcspCertId::from_cert(MessageDigest::sha1(), leaf, issuer);
    let mut request = OcspRequest::new().map_err(|e| unknown("building the request", &e))?;
    request
        .add_id(id().map_err(|e| unknown("building the request", &e))?)
        .map_err(|e| unknown("building the request", &e))?;
    // SAFETY: a valid request; a null value asks for a random nonce of the default length.
    if unsafe { ffi::OCSP_request_add1_nonce(request.as_ptr(), std::ptr::null_mut(), -1) } != 1 {
        return Err(OcspError::Unknown("cannot add a nonce".into()));
    }
    let der = request
        .to_der()
        .map_err(|e| unknown("encoding the request", &e))?;

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(url)
        .header("Content-Type", "application/ocsp-request")
        .send(&der[..])
        .map_err(|e| unknown(&format!("responder {url} unreachable"), &e))?;
    if response.status() != 200 {
        return Err(OcspError::Unknown(format!(
            "responder {url} answered HTTP {}",
            response.status()
        )));
    }
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE_BYTES)
        .read_to_vec()
        .map_err(|e| unknown(&format!("reading the answer of {url}"), &e))?;

    let mut untrusted = Stack::new().map_err(|e| unknown("verifying", &e))?;
    for cert in chain {
        untrusted
            .push(cert.clone())
            .map_err(|e| unknown("verifying", &e))?;
    }
    let id = id().map_err(|e| unknown("verifying", &e))?;
    judge_response(&body, &request, &id, &untrusted, context.cert_store()).map_err(|e| match e {
        OcspError::Unknown(why) if why == UNKNOWN_TO_RESPONDER => {
            OcspError::Unknown(format!("responder {url} does not know the certificate"))
        }
        other => other,
    })
}

/// What `judge_response` says when the responder does not know the certificate.
const UNKNOWN_TO_RESPONDER: &str = "the responder does not know the certificate";

/// Judges a responder's answer (`body`, untrusted bytes from the network) to `request`
/// about the certificate `id`: its status, nonce, signature (chained to `store`, with
/// `untrusted` as intermediates) and validity period. Returns until when a good answer may
/// be trusted. No IO; `fuzz/fuzz_targets/ocsp_response.rs` feeds it arbitrary bytes.
pub fn judge_response(
    body: &[u8],
    request: &OcspRequest,
    id: &OcspCertId,
    untrusted: &StackRef<X509>,
    store: &X509StoreRef,
) -> Result<SystemTime, OcspError> {
    let unknown =
        |what: &str, e: &dyn std::fmt::Display| OcspError::Unknown(format!("{what}: {e}"));
    let response = OcspResponse::from_der(body).map_err(|e| unknown("invalid response", &e))?;
    if response.status() != OcspResponseStatus::SUCCESSFUL {
        return Err(OcspError::Unknown(format!(
            "responder refused the request (status {})",
            response.status().as_raw()
        )));
    }
    let basic = response
        .basic()
        .map_err(|e| unknown("invalid response", &e))?;
    // SAFETY: both objects are valid for the duration of the call.
    match unsafe { ffi::OCSP_check_nonce(request.as_ptr(), basic.as_ptr()) } {
        // Equal nonces; or the responder ignored ours (allowed: pre-signed responses), in
        // which case the validity period below bounds replay.
        1 | -1 => {}
        _ => {
            return Err(OcspError::Unknown(
                "the response's nonce does not match".into(),
            ));
        }
    }
    basic
        .verify(untrusted, store, OcspFlag::empty())
        .map_err(|e| unknown("the response's signature does not verify", &e))?;
    let status = basic
        .find_status(id)
        .ok_or_else(|| OcspError::Unknown("the response does not cover the certificate".into()))?;
    status
        .check_validity(CLOCK_SKEW_SECS, None)
        .map_err(|e| unknown("the response is outside its validity period", &e))?;
    match status.status {
        OcspCertStatus::GOOD => Ok(status
            .next_update()
            .and_then(seconds_from_now)
            .map(|secs| SystemTime::now() + Duration::from_secs(secs))
            .unwrap_or_else(|| SystemTime::now() + NO_NEXT_UPDATE_TTL)),
        OcspCertStatus::REVOKED => Err(OcspError::Revoked),
        _ => Err(OcspError::Unknown(UNKNOWN_TO_RESPONDER.into())),
    }
}

/// Seconds from now until `time` (0 if past).
fn seconds_from_now(time: &openssl::asn1::Asn1GeneralizedTimeRef) -> Option<u64> {
    let now = Asn1Time::days_from_now(0).ok()?;
    // Asn1GeneralizedTime and Asn1Time share the ASN1_TIME layout in OpenSSL.
    // SAFETY: ASN1_GENERALIZEDTIME is an ASN1_STRING like ASN1_TIME; ASN1_TIME_diff accepts
    // both forms.
    let time = unsafe { openssl::asn1::Asn1TimeRef::from_ptr(time.as_ptr() as *mut _) };
    let diff = now.diff(time).ok()?;
    let secs = i64::from(diff.days) * 86_400 + i64::from(diff.secs);
    Some(secs.max(0) as u64)
}
