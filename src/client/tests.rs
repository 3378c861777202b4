//! The client's plaintext opening against scripted clients: split and pipelined
//! packets, GSSENC, direct TLS, plaintext refusals.

use super::*;
use tokio::io::duplex;

const RULES: Rules = Rules {
    direct_tls: true,
    plaintext_cancel: true,
};
const SSL_REQUEST: [u8; 8] = crate::protocol::startup::SSL_REQUEST;

/// Runs `negotiate` against a client that writes `pieces` one by one (each a separate
/// read for the proxy), and returns its result with what the proxy answered. The tests run
/// on paused time: a pause between pieces ends only when every task waits, so the proxy
/// has read one piece before the next is written, however slow the machine.
async fn scripted(pieces: &[&[u8]], rules: Rules) -> (Result<Opening, ClientError>, Vec<u8>) {
    let (mut proxy_side, mut client_side) = duplex(16 * 1024);
    let pieces: Vec<Vec<u8>> = pieces.iter().map(|p| p.to_vec()).collect();
    let client = tokio::spawn(async move {
        for p in pieces {
            client_side.write_all(&p).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        client_side.shutdown().await.unwrap();
        let mut answer = Vec::new();
        let _ = client_side.read_to_end(&mut answer).await;
        answer
    });
    let result = negotiate(&mut proxy_side, rules).await;
    drop(proxy_side);
    (result, client.await.unwrap())
}

#[tokio::test(start_paused = true)]
async fn an_ssl_request_split_in_two_reads_is_answered_s() {
    let (result, answer) = scripted(&[&SSL_REQUEST[..3], &SSL_REQUEST[3..]], RULES).await;
    assert_eq!(
        result.unwrap(),
        Opening::Tls {
            prefix: vec![],
            direct: false
        }
    );
    assert_eq!(answer, b"S");
}

#[tokio::test(start_paused = true)]
async fn bytes_pipelined_after_ssl_request_are_refused_with_08p01() {
    let mut pipelined = SSL_REQUEST.to_vec();
    pipelined.extend_from_slice(b"\x16\x03\x01");
    let (result, answer) = scripted(&[&pipelined], RULES).await;
    let e = result.unwrap_err();
    assert!(matches!(e, ClientError::DataAfterSslRequest));
    assert_eq!(e.refusal().unwrap().sqlstate.code(), "08P01");
    assert!(answer.is_empty(), "no 'S' for a pipelined request");
}

#[tokio::test(start_paused = true)]
async fn gssenc_is_declined_once_and_a_second_one_is_refused() {
    let gssenc = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
    let (result, answer) = scripted(&[&gssenc, &SSL_REQUEST], RULES).await;
    assert!(matches!(result, Ok(Opening::Tls { direct: false, .. })));
    assert_eq!(answer, b"NS");
    let (result, answer) = scripted(&[&gssenc, &gssenc], RULES).await;
    assert!(matches!(result, Err(ClientError::RepeatedGssEnc)));
    assert_eq!(answer, b"N");
}

#[tokio::test(start_paused = true)]
async fn direct_tls_keeps_the_bytes_read_ahead() {
    let hello = b"\x16\x03\x01\x00\x05hello";
    let (result, _) = scripted(&[hello], RULES).await;
    match result.unwrap() {
        Opening::Tls { prefix, direct } => {
            assert!(direct);
            assert!(hello.starts_with(&prefix) && !prefix.is_empty());
        }
        other => panic!("not TLS: {other:?}"),
    }
    let rules = Rules {
        direct_tls: false,
        ..RULES
    };
    let (result, _) = scripted(&[hello], rules).await;
    assert!(matches!(result, Err(ClientError::DirectTlsDisabled)));
}

#[tokio::test(start_paused = true)]
async fn a_plaintext_startup_is_told_to_use_tls() {
    let mut startup = vec![0, 0, 0, 0, 0, 3, 0, 0];
    startup.extend_from_slice(b"user\0alice\0\0");
    let len = startup.len() as i32;
    startup[..4].copy_from_slice(&len.to_be_bytes());
    let (result, _) = scripted(&[&startup], RULES).await;
    let e = result.unwrap_err();
    let refusal = e.refusal().unwrap();
    assert_eq!(refusal.sqlstate.code(), "28000");
    assert_eq!(refusal.message, "pgt-proxy accepts TLS connections only");
    assert!(e.to_string().contains("user \"alice\""));
}

#[tokio::test(start_paused = true)]
async fn silence_is_empty_and_a_partial_packet_is_truncated() {
    let (result, _) = scripted(&[], RULES).await;
    assert!(matches!(result, Err(ClientError::Empty)));
    let (result, _) = scripted(&[&SSL_REQUEST[..5]], RULES).await;
    assert!(matches!(result, Err(ClientError::Truncated(5))));
}
