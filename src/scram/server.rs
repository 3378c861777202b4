//! The client leg of SCRAM termination: pgt-proxy as the SCRAM server, one step per
//! message, with no IO. It offers SCRAM-SHA-256-PLUS bound to the certificate this
//! connection presented (when that certificate has a tls-server-end-point hash) and
//! SCRAM-SHA-256, and checks what PostgreSQL's server checks, with its answers.

use super::ScramFailure;
use super::keys::{self, ClientKey};
use crate::protocol::scram::{
    self, GS2_BINDING, Gs2Flag, SCRAM_SHA_256, SCRAM_SHA_256_PLUS, ScramError, Verifier,
};
use crate::protocol::sqlstate::PROTOCOL_VIOLATION;

/// What the client's first message established.
struct First {
    gs2_header: String,
    bare: String,
    client_nonce: String,
}

/// One client's exchange.
pub(crate) struct ServerExchange {
    /// Our certificate's tls-server-end-point hash, when -PLUS is offered.
    binding: Option<Vec<u8>>,
    first: Option<First>,
    /// The server-first-message sent, and the combined nonce in it.
    sent: Option<(String, String)>,
}

impl ServerExchange {
    /// An exchange that offers -PLUS when `binding` (our certificate's hash) is known.
    pub(crate) fn new(binding: Option<Vec<u8>>) -> Self {
        Self {
            binding,
            first: None,
            sent: None,
        }
    }

    /// The mechanisms offered, in AuthenticationSASL's order of preference.
    pub(crate) fn mechanisms(&self) -> Vec<&'static str> {
        match self.binding {
            Some(_) => vec![SCRAM_SHA_256_PLUS, SCRAM_SHA_256],
            None => vec![SCRAM_SHA_256],
        }
    }

    /// The mechanism the client used (after [`Self::receive_first`]).
    pub(crate) fn mechanism(&self) -> &'static str {
        match &self.first {
            Some(f) if f.gs2_header == GS2_BINDING => SCRAM_SHA_256_PLUS,
            _ => SCRAM_SHA_256,
        }
    }

    /// Takes the SASLInitialResponse: the chosen `mechanism` and its client-first-message.
    pub(crate) fn receive_first(
        &mut self,
        mechanism: &[u8],
        data: &[u8],
    ) -> Result<(), ScramFailure> {
        let plus = match mechanism {
            m if m == SCRAM_SHA_256_PLUS.as_bytes() && self.binding.is_some() => true,
            m if m == SCRAM_SHA_256.as_bytes() => false,
            _ => {
                return Err(ScramFailure::Client(ScramError {
                    sqlstate: PROTOCOL_VIOLATION,
                    message: "client selected an invalid SASL authentication mechanism",
                    detail: None,
                }));
            }
        };
        let first = scram::parse_client_first(data).map_err(ScramFailure::Client)?;
        let mismatch = |detail: &str| {
            ScramFailure::Client(ScramError {
                sqlstate: PROTOCOL_VIOLATION,
                message: "malformed SCRAM message",
                detail: Some(detail.into()),
            })
        };
        match (first.flag, plus) {
            (Gs2Flag::Binding, true) | (Gs2Flag::No, false) => {}
            (Gs2Flag::No | Gs2Flag::ClientOnly, true) => {
                return Err(mismatch(
                    "The client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data.",
                ));
            }
            (Gs2Flag::Binding, false) => {
                return Err(mismatch(
                    "The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data.",
                ));
            }
            // A client that could bind thinks we cannot, though we offered -PLUS: someone
            // in between removed it from the list.
            (Gs2Flag::ClientOnly, false) if self.binding.is_some() => {
                return Err(ScramFailure::Downgrade);
            }
            (Gs2Flag::ClientOnly, false) => {}
        }
        self.first = Some(First {
            gs2_header: first.gs2_header.to_owned(),
            bare: first.bare.to_owned(),
            client_nonce: first.nonce.to_owned(),
        });
        Ok(())
    }

    /// The server-first-message with `verifier`'s salt and iterations.
    pub(crate) fn server_first(&mut self, verifier: &Verifier) -> Result<String, ScramFailure> {
        let first = self.first.as_ref().ok_or(ScramFailure::OutOfOrder)?;
        let nonce = format!("{}{}", first.client_nonce, keys::nonce()?);
        let message = scram::server_first(&nonce, &verifier.salt, verifier.iterations);
        self.sent = Some((message.clone(), nonce));
        Ok(message)
    }

    /// Takes the client-final-message: checks channel binding, the nonce and the proof, and
    /// returns the recovered ClientKey with the server-final-message to send once the
    /// upstream login has succeeded.
    pub(crate) fn receive_final(
        &self,
        data: &[u8],
        verifier: &Verifier,
    ) -> Result<(ClientKey, String), ScramFailure> {
        let (Some(first), Some((server_first, nonce))) = (&self.first, &self.sent) else {
            return Err(ScramFailure::OutOfOrder);
        };
        let fin = scram::parse_client_final(data).map_err(ScramFailure::Client)?;
        let mut expected = first.gs2_header.as_bytes().to_vec();
        if first.gs2_header == GS2_BINDING {
            expected.extend_from_slice(self.binding.as_deref().unwrap_or_default());
            if !keys::secrets_equal(&fin.channel_binding, &expected) {
                return Err(ScramFailure::BindingMismatch);
            }
        } else if fin.channel_binding != expected {
            return Err(ScramFailure::Client(ScramError {
                sqlstate: PROTOCOL_VIOLATION,
                message: "unexpected SCRAM channel-binding attribute in client-final-message",
                detail: None,
            }));
        }
        if !keys::secrets_equal(fin.nonce.as_bytes(), nonce.as_bytes()) {
            return Err(ScramFailure::Client(ScramError {
                sqlstate: PROTOCOL_VIOLATION,
                message: "malformed SCRAM message",
                detail: Some("Nonce does not match.".into()),
            }));
        }
        let auth = keys::auth_message(&first.bare, server_first, fin.without_proof);
        let key = keys::recover_client_key(verifier, &auth, &fin.proof)?
            .ok_or(ScramFailure::WrongPassword)?;
        let signature = keys::server_signature(&verifier.server_key, &auth)?;
        Ok((key, scram::server_final(&signature)))
    }
}
