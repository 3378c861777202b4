//! A connection that carries a CancelRequest instead of a session: a plaintext one, or an
//! encrypted one as the first packet inside TLS, forwarded to the session its key names
//! (here or on a cluster peer). The protocol has no answer to a CancelRequest: the client
//! hears nothing either way, and its connection's close is what tells libpq the cancel was
//! handed over.

use tokio::io::AsyncWriteExt;

use super::admission::Admission;
use super::error::SessionError;
use super::log::{Outcome, Record};
use super::sessions::Sessions;
use crate::cancel::{self, CancelOutcome};
use crate::client::{ClientIo, ClientStream};
use crate::protocol::startup::CancelSecret;
use crate::settings::Settings;

/// A plaintext CancelRequest, forwarded if admission allows this client a cancel. The
/// client's connection stays open until then.
pub(super) async fn plaintext(
    sessions: &Sessions,
    settings: &Settings,
    admission: &mut Admission,
    pid: i32,
    key: &CancelSecret,
    record: &mut Record,
) -> Outcome {
    match admission.cancel() {
        Ok(()) => {
            let via = cancel::Via::Plaintext;
            forward(sessions, settings, via, pid, key.as_bytes(), record).await
        }
        Err(e) => Outcome::Refused(SessionError::CancelRefused(Box::new(e))),
    }
}

/// An encrypted CancelRequest (admission has allowed it), forwarded, then the client's TLS
/// closed.
pub(super) async fn over_tls<S: ClientIo>(
    client: &mut ClientStream<S>,
    sessions: &Sessions,
    settings: &Settings,
    pid: i32,
    key: &CancelSecret,
    record: &mut Record,
) -> Outcome {
    let via = cancel::Via::Tls(client.ssl());
    let outcome = forward(sessions, settings, via, pid, key.as_bytes(), record).await;
    let _ = client.shutdown().await;
    outcome
}

/// Forwards a CancelRequest that matches a live session; `via` is the connection it came on.
async fn forward(
    sessions: &Sessions,
    settings: &Settings,
    via: cancel::Via<'_>,
    pid: i32,
    key: &[u8],
    record: &mut Record,
) -> Outcome {
    let sender = cancel::Sender {
        addr: record.peer,
        // Peers are reached at `[listen]`'s addresses (a balancer's PROXY port belongs in
        // `[[listen.extra]]`): a header goes with the request when those take one.
        proxy_header: settings.listen.proxy_v2,
        via,
    };
    let own = cancel::key::own_id();
    let dispatched = cancel::dispatch(&sessions.cancels, own, &settings.cluster, sender, pid, key);
    match dispatched.await {
        Ok(outcome) => {
            if let CancelOutcome::Forwarded { pid, .. } = outcome {
                record.backend_pid = Some(pid);
            }
            Outcome::Cancel(outcome)
        }
        Err(e) => {
            let failed = crate::metrics::ResultLabel { result: "failed" };
            crate::metrics::get().cancels.get_or_create(&failed).inc();
            Outcome::Refused(SessionError::Upstream(e))
        }
    }
}
