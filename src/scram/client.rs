//! The upstream leg of SCRAM termination: pgt-proxy as the SCRAM client of the server,
//! proving the ClientKey it recovered from the client, bound to the server's certificate
//! when the server offers SCRAM-SHA-256-PLUS. One step per message, no IO.

use super::ScramFailure;
use super::keys::{self, ClientKey, Key};
use zeroize::Zeroizing;

use crate::config::schema::ChannelBindingPolicy;
use crate::protocol::scram::{self, GS2_BINDING, SCRAM_SHA_256, SCRAM_SHA_256_PLUS, ServerFinal};

/// One login to the server.
pub(super) struct ClientExchange {
    plus: bool,
    /// The gs2 header sent.
    gs2: &'static str,
    nonce: String,
    /// The gs2 header, then the server certificate's hash when binding.
    cbind_input: Vec<u8>,
    bare: String,
    /// server-first-message and client-final-message-without-proof, once known.
    server_first: Option<String>,
    without_proof: Option<String>,
}

/// The gs2 header: "p" when binding; "y" when the proxy could bind but the server did not
/// offer it (RFC 5802: a server that can bind then detects the downgrade); "n" when this
/// server certificate has no tls-server-end-point hash, so the proxy cannot bind at all.
fn gs2_header(plus: bool, can_bind: bool) -> &'static str {
    match (plus, can_bind) {
        (true, _) => GS2_BINDING,
        (false, true) => "y,,",
        (false, false) => "n,,",
    }
}

/// What the server's first message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerParams {
    /// The salt the server holds for the user.
    pub(crate) salt: Vec<u8>,
    /// Its iteration count.
    pub(crate) iterations: u32,
}

impl ClientExchange {
    /// Chooses the mechanism from the server's `offered` list: -PLUS bound to `binding` (the
    /// server's certificate hash) when offered and possible, else plain SCRAM-SHA-256 unless
    /// `policy` requires binding.
    pub(super) fn new(
        offered: &[&[u8]],
        binding: Option<Vec<u8>>,
        policy: ChannelBindingPolicy,
    ) -> Result<Self, ScramFailure> {
        let offers = |m: &str| offered.contains(&m.as_bytes());
        let plus = offers(SCRAM_SHA_256_PLUS) && binding.is_some();
        if !plus && policy == ChannelBindingPolicy::Require {
            return Err(ScramFailure::UpstreamNoBinding);
        }
        if !plus && !offers(SCRAM_SHA_256) {
            return Err(ScramFailure::UpstreamMethod(
                "an unsupported SASL mechanism".into(),
            ));
        }
        let gs2 = gs2_header(plus, binding.is_some());
        let mut cbind_input = gs2.as_bytes().to_vec();
        if plus {
            cbind_input.extend_from_slice(binding.as_deref().unwrap_or_default());
        }
        let nonce = keys::nonce()?;
        Ok(Self {
            plus,
            gs2,
            bare: format!("n=,r={nonce}"),
            nonce,
            cbind_input,
            server_first: None,
            without_proof: None,
        })
    }

    /// The mechanism chosen.
    pub(super) fn mechanism(&self) -> &'static str {
        if self.plus {
            SCRAM_SHA_256_PLUS
        } else {
            SCRAM_SHA_256
        }
    }

    /// The client-first-message.
    pub(super) fn client_first(&self) -> String {
        scram::client_first(self.gs2, &self.nonce)
    }

    /// Takes the server-first-message: its nonce must extend ours.
    pub(super) fn receive_server_first(
        &mut self,
        data: &[u8],
    ) -> Result<ServerParams, ScramFailure> {
        let first = scram::parse_server_first(data).map_err(ScramFailure::UpstreamProtocol)?;
        if first.nonce.len() <= self.nonce.len() || !first.nonce.starts_with(&self.nonce) {
            return Err(ScramFailure::UpstreamProtocol(scram::ScramError {
                sqlstate: crate::protocol::sqlstate::UNABLE_TO_CONNECT,
                message: "the server's SCRAM nonce does not extend the proxy's",
                detail: None,
            }));
        }
        let params = ServerParams {
            salt: first.salt.clone(),
            iterations: first.iterations,
        };
        self.without_proof = Some(scram::client_final_without_proof(
            &self.cbind_input,
            first.nonce,
        ));
        self.server_first = Some(String::from_utf8_lossy(data).into_owned());
        Ok(params)
    }

    /// The client-final-message proving `client_key` (zeroed on drop, as its proof is).
    pub(super) fn client_final(
        &self,
        client_key: &ClientKey,
    ) -> Result<Zeroizing<String>, ScramFailure> {
        let (Some(server_first), Some(without_proof)) = (&self.server_first, &self.without_proof)
        else {
            return Err(ScramFailure::OutOfOrder);
        };
        let auth = keys::auth_message(&self.bare, server_first, without_proof);
        let proof = keys::client_proof(client_key.bytes(), &auth)?;
        Ok(scram::client_final(without_proof, &proof[..]))
    }

    /// Takes the server-final-message: the server must prove it holds `server_key`.
    pub(super) fn verify_server_final(
        &self,
        data: &[u8],
        server_key: &Key,
    ) -> Result<(), ScramFailure> {
        let (Some(server_first), Some(without_proof)) = (&self.server_first, &self.without_proof)
        else {
            return Err(ScramFailure::OutOfOrder);
        };
        match scram::parse_server_final(data).map_err(ScramFailure::UpstreamProtocol)? {
            ServerFinal::Error(e) => Err(ScramFailure::UpstreamRejected(e)),
            ServerFinal::Verifier(signature) => {
                let auth = keys::auth_message(&self.bare, server_first, without_proof);
                let expected = keys::server_signature(server_key, &auth)?;
                if keys::secrets_equal(&signature, &expected) {
                    Ok(())
                } else {
                    Err(ScramFailure::UpstreamSignature)
                }
            }
        }
    }
}
