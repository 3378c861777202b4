//! Whether the connection a forwarded cancel (one with the hop bit, [`super::key`]) came on
//! is from a replica of the fleet: a TLS connection whose client certificate verifies, for
//! TLS client authentication, against `cluster.ca` and nothing else (not the listener's
//! client CA, which may admit any client). A client's own cancel never carries the bit, so
//! this is asked only of requests that claim to come from a peer.
//!
//! Replicas reach each other under one reserved server name (`settings`' `PEER_SNI`); the listener
//! switches such a connection to the cluster context, which requires a certificate from
//! `cluster.ca` in the handshake. The chain is verified here again whatever context the
//! handshake ran under, so the judgement does not rest on that switch.

use openssl::ssl::SslRef;
use openssl::stack::Stack;
use openssl::x509::store::X509StoreRef;
use openssl::x509::{X509StoreContext, X509VerifyResult};

use crate::settings::ClusterSettings;
use crate::tls::describe::name_to_string;

/// The connection a CancelRequest came on.
#[derive(Clone, Copy)]
pub(crate) enum Via<'a> {
    /// A plaintext CancelRequest.
    Plaintext,
    /// Inside the client's TLS.
    Tls(&'a SslRef),
}

/// The verified peer's certificate subject, or why the connection is not a peer's.
pub(super) fn peer(cluster: &ClusterSettings, via: Via<'_>) -> Result<String, String> {
    let Some(accept) = &cluster.accept else {
        return Err(
            "this replica has no cluster.peers or cluster.peer_address, so it takes forwarded \
             cancels from no one"
                .into(),
        );
    };
    let Via::Tls(ssl) = via else {
        return Err(
            "it came in plaintext (replicas forward cancels over TLS with a certificate from \
             cluster.ca)"
                .into(),
        );
    };
    let Some(leaf) = ssl.peer_certificate() else {
        return Err(
            "the connection presented no client certificate (replicas present \
             cluster.certificate, issued by cluster.ca)"
                .into(),
        );
    };
    let subject = name_to_string(leaf.subject_name());
    let refused = |why: String| {
        let issuer = name_to_string(leaf.issuer_name());
        format!(
            "its client certificate (subject {subject}, issuer {issuer}) does not verify \
             against cluster.ca: {why}"
        )
    };
    match verify(&accept.store, ssl) {
        Ok(()) => Ok(subject),
        Err(why) => Err(refused(why)),
    }
}

/// Verifies the client's chain (leaf and the intermediates it sent) against `store`.
fn verify(store: &X509StoreRef, ssl: &SslRef) -> Result<(), String> {
    let error = |e: openssl::error::ErrorStack| e.to_string();
    let leaf = ssl.peer_certificate().ok_or("no certificate")?;
    let mut chain = Stack::new().map_err(error)?;
    for cert in ssl.peer_cert_chain().into_iter().flatten() {
        chain.push(cert.to_owned()).map_err(error)?;
    }
    let mut context = X509StoreContext::new().map_err(error)?;
    let result = context
        .init(store, &leaf, &chain, |c| {
            Ok(if c.verify_cert()? {
                X509VerifyResult::OK
            } else {
                c.error()
            })
        })
        .map_err(error)?;
    if result == X509VerifyResult::OK {
        Ok(())
    } else {
        Err(result.error_string().to_owned())
    }
}
