//! `check-config --connect`'s question to an upstream: does it let the proxy in without a
//! password? It is asked with a StartupMessage for a random role that cannot exist:
//! PostgreSQL answers AuthenticationOk first only when pg_hba.conf trusts the proxy's address
//! (for every role), and asks a role it does not know for a password as it asks a real one.

use std::fmt::Write;

use tokio::io::AsyncWriteExt;

use crate::config::schema::{AuthMode, UnknownUser};
use crate::framed::FrameReader;
use crate::protocol::error_response::message_of;
use crate::protocol::message::{self, Authentication, MAX_BACKEND_STARTUP_MESSAGE, tag};
use crate::protocol::startup::encode_startup;
use crate::settings::AuthSettings;
use crate::tls::connector::Connector;
use crate::upstream::Endpoint;

/// How an upstream answered a role it does not know.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// AuthenticationOk: no password asked (pg_hba trust for the proxy's address).
    Trusts,
    /// A password or SASL request, named.
    Asks(&'static str),
    /// An ErrorResponse (e.g. no pg_hba.conf entry), with its message.
    Refuses(String),
}

/// Connects as a session would and sends a StartupMessage for a random role to database
/// `postgres`; the upstream's first answer.
pub(crate) async fn probe(endpoint: &Endpoint, connector: &Connector) -> Result<Answer, String> {
    let attempt = async {
        let up = crate::upstream::connect(endpoint, connector)
            .await
            .map_err(|e| e.to_string())?;
        let mut stream = up.stream;
        let mut raw = [0u8; 8];
        openssl::rand::rand_bytes(&mut raw).map_err(|e| e.to_string())?;
        let mut role = String::from("pgt_proxy_probe_");
        for b in raw {
            let _ = write!(role, "{b:02x}");
        }
        let startup = encode_startup(&[
            ("user", &role),
            ("database", "postgres"),
            ("application_name", "pgt-proxy check-config"),
        ]);
        let io = |e: std::io::Error| e.to_string();
        stream.write_all(&startup).await.map_err(io)?;
        stream.flush().await.map_err(io)?;
        let m = FrameReader::new()
            .message(&mut stream, MAX_BACKEND_STARTUP_MESSAGE)
            .await
            .map_err(|e| format!("{e:?}"))?
            .ok_or("the server closed the connection")?;
        // Terminate: the role does not exist, nothing more is wanted.
        let _ = stream.write_all(&[b'X', 0, 0, 0, 4]).await;
        let _ = stream.shutdown().await;
        answer(&m)
    };
    tokio::time::timeout(endpoint.connect_timeout * 2, attempt)
        .await
        .unwrap_or_else(|_| Err("no answer to a StartupMessage in time".into()))
}

/// What the first message says.
fn answer(m: &crate::framed::Message) -> Result<Answer, String> {
    match m.tag {
        tag::AUTHENTICATION => {
            let request = message::parse_authentication(m.body()).map_err(|e| e.to_string())?;
            Ok(match request {
                Authentication::Ok => Answer::Trusts,
                Authentication::CleartextPassword => Answer::Asks("a cleartext password"),
                Authentication::Md5Password => Answer::Asks("an md5 password"),
                Authentication::Sasl(_) => Answer::Asks("SCRAM"),
                Authentication::Gss | Authentication::GssContinue | Authentication::Sspi => {
                    Answer::Asks("GSSAPI/SSPI")
                }
                Authentication::SaslContinue(_) | Authentication::SaslFinal(_) => {
                    return Err("a SASL step before SASL was offered".into());
                }
            })
        }
        tag::ERROR_RESPONSE => Ok(Answer::Refuses(message_of(m.body()).unwrap_or_default())),
        other => Err(format!("unexpected message type 0x{other:02x}")),
    }
}

/// `check-config --connect`'s line for `prefix`'s answer, and whether it is acceptable: a
/// trusting upstream is a warning, and an error where users without a verifier are relayed
/// to it (`auth.unknown_user = "passthrough"` without `auth.passthrough_trust`: all of
/// them would be refused).
pub(crate) fn describe(
    prefix: &str,
    auth: &AuthSettings,
    answer: &Result<Answer, String>,
) -> (String, bool) {
    let relays_unchecked = auth.mode == AuthMode::Scram
        && auth.unknown_user == UnknownUser::Passthrough
        && !auth.passthrough_trust
        && !auth.upstream_certificate;
    match answer {
        Ok(Answer::Trusts) if relays_unchecked => (
            format!(
                "  {prefix}: FAILED: upstream {prefix} trusts the proxy's address (pg_hba trust): \
                 a role that does not exist got AuthenticationOk without a password, and \
                 auth.unknown_user = \"passthrough\" relays users without a verifier to it (each \
                 is refused with 28P01); set auth.unknown_user = \"refuse\", make the server ask \
                 for a password, or accept its trust with auth.passthrough_trust = true"
            ),
            false,
        ),
        Ok(Answer::Trusts) => (
            format!(
                "  {prefix}: warning: upstream {prefix} trusts the proxy's address (pg_hba trust): \
                 a role that does not exist got AuthenticationOk without a password; whoever \
                 reaches the server from this address is any role the proxy does not check"
            ),
            true,
        ),
        Ok(Answer::Asks(what)) => (
            format!(
                "  {prefix}: asks a role it does not know for {what} (no trust for the proxy's address)"
            ),
            true,
        ),
        Ok(Answer::Refuses(message)) => (
            format!("  {prefix}: refuses a role it does not know: {message}"),
            true,
        ),
        Err(e) => (
            format!("  {prefix}: cannot tell whether it trusts the proxy: {e}"),
            true,
        ),
    }
}
