//! The two exchanges against each other: the proxy's upstream-side client (with a key from a
//! password) logging in to the proxy's client-side server. Any password, salt and binding
//! works end to end; a wrong password, another certificate's binding, or any altered byte
//! of the client's final message is refused.

use proptest::prelude::*;

use super::ScramFailure;
use super::client::ClientExchange;
use super::keys::{client_key_from_password, sha256};
use super::server::ServerExchange;
use crate::config::schema::ChannelBindingPolicy;
use crate::protocol::scram::{SCRAM_SHA_256, SCRAM_SHA_256_PLUS, Verifier};

fn verifier(password: &[u8], salt: &[u8], iterations: u32) -> Verifier {
    let (client_key, server_key) = client_key_from_password(password, salt, iterations).unwrap();
    Verifier {
        iterations,
        salt: salt.to_vec(),
        stored_key: *sha256(client_key.bytes()).unwrap(),
        server_key,
    }
}

/// Runs one exchange; `tamper` may alter the client-final-message.
fn exchange(
    password: &[u8],
    verifier: &Verifier,
    client_sees: Option<Vec<u8>>,
    server_has: Option<Vec<u8>>,
    tamper: impl FnOnce(&mut Vec<u8>),
) -> Result<(), ScramFailure> {
    let mut server = ServerExchange::new(server_has);
    let offered: Vec<&[u8]> = server.mechanisms().iter().map(|m| m.as_bytes()).collect();
    let mut client = ClientExchange::new(&offered, client_sees, ChannelBindingPolicy::Prefer)?;
    server.receive_first(
        client.mechanism().as_bytes(),
        client.client_first().as_bytes(),
    )?;
    let server_first = server.server_first(verifier)?;
    let params = client.receive_server_first(server_first.as_bytes())?;
    let (key, _) = client_key_from_password(password, &params.salt, params.iterations)?;
    let mut fin = client.client_final(&key)?.as_bytes().to_vec();
    tamper(&mut fin);
    let (recovered, server_final) = server.receive_final(&fin, verifier)?;
    assert_eq!(
        recovered.bytes(),
        key.bytes(),
        "the proxy recovers the client's key"
    );
    client.verify_server_final(server_final.as_bytes(), &verifier.server_key)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_password_logs_in_and_a_wrong_one_does_not(
        password in proptest::collection::vec(any::<u8>(), 1..24),
        other in proptest::collection::vec(any::<u8>(), 1..24),
        salt in proptest::collection::vec(any::<u8>(), 16..17),
        iterations in 1u32..32,
        binding in proptest::option::of(proptest::collection::vec(any::<u8>(), 32..33)),
    ) {
        let v = verifier(&password, &salt, iterations);
        let right = exchange(&password, &v, binding.clone(), binding.clone(), |_| {});
        prop_assert!(right.is_ok(), "{:?}", right);
        if other != password {
            let wrong = exchange(&other, &v, binding.clone(), binding, |_| {});
            prop_assert!(matches!(wrong, Err(ScramFailure::WrongPassword)), "{:?}", wrong);
        }
    }

    #[test]
    fn any_altered_byte_of_the_client_final_is_refused(at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let v = verifier(b"pencil", b"0123456789abcdef", 4);
        let binding = Some(vec![7u8; 32]);
        let result = exchange(b"pencil", &v, binding.clone(), binding, |fin| {
            let i = at.index(fin.len());
            fin[i] ^= 1 << bit;
        });
        prop_assert!(result.is_err());
    }
}

#[test]
fn a_client_bound_to_another_certificate_is_refused() {
    let v = verifier(b"pencil", b"0123456789abcdef", 4);
    let result = exchange(b"pencil", &v, Some(vec![1; 32]), Some(vec![2; 32]), |_| {});
    assert!(
        matches!(result, Err(ScramFailure::BindingMismatch)),
        "{result:?}"
    );
}

#[test]
fn without_a_hash_only_plain_scram_is_offered_and_used() {
    let server = ServerExchange::new(None);
    assert_eq!(server.mechanisms(), [SCRAM_SHA_256]);
    let with = ServerExchange::new(Some(vec![0; 32]));
    assert_eq!(with.mechanisms(), [SCRAM_SHA_256_PLUS, SCRAM_SHA_256]);
    let v = verifier(b"pencil", b"0123456789abcdef", 4);
    assert!(exchange(b"pencil", &v, None, None, |_| {}).is_ok());
}

#[test]
fn a_downgrade_to_plain_scram_is_refused_as_postgresql_refuses_it() {
    // A client that can bind, shown a list stripped of -PLUS, says "y" ...
    let client = ClientExchange::new(
        &[SCRAM_SHA_256.as_bytes()],
        Some(vec![1; 32]),
        ChannelBindingPolicy::Prefer,
    )
    .unwrap();
    let first = client.client_first();
    assert!(first.starts_with("y,,"), "{first}");
    // ... which a proxy that offered -PLUS refuses with PostgreSQL's SQLSTATE and words.
    let mut offered_plus = ServerExchange::new(Some(vec![1; 32]));
    let refused = offered_plus
        .receive_first(SCRAM_SHA_256.as_bytes(), first.as_bytes())
        .unwrap_err();
    assert!(matches!(refused, ScramFailure::Downgrade), "{refused:?}");
    let refusal = refused.refusal("alice");
    assert_eq!(refusal.sqlstate.code(), "28000");
    assert_eq!(refusal.message, "SCRAM channel binding negotiation error");
    // Without a hash the proxy offered no -PLUS: "y" is the truth, and the login goes on.
    let mut plain_only = ServerExchange::new(None);
    assert!(
        plain_only
            .receive_first(SCRAM_SHA_256.as_bytes(), first.as_bytes())
            .is_ok()
    );
    // "y" with -PLUS selected is a malformed message (08P01), as in PostgreSQL.
    let mut plus = ServerExchange::new(Some(vec![1; 32]));
    let malformed = plus
        .receive_first(SCRAM_SHA_256_PLUS.as_bytes(), first.as_bytes())
        .unwrap_err();
    assert_eq!(malformed.refusal("alice").sqlstate.code(), "08P01");
}
