//! Property tests of the SCRAM message parsers and encoders (`protocol::scram`): arbitrary
//! bytes and SCRAM-shaped text are parsed or refused with a typed error, never a panic, and
//! what the proxy encodes parses back to what it encoded.

use pgt_proxy::protocol::message::parse_sasl_initial_response;
use pgt_proxy::protocol::scram::{
    GS2_BINDING, Gs2Flag, ServerFinal, client_final, client_final_without_proof, client_first,
    parse_client_final, parse_client_first, parse_server_final, parse_server_first, parse_verifier,
    server_final, server_first,
};
use proptest::prelude::*;

/// Text made of SCRAM's own pieces: attributes, commas, base64-ish values.
fn scram_like() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just("n,".to_string()),
        Just("y,".to_string()),
        Just("p=tls-server-end-point,".to_string()),
        Just(",".to_string()),
        Just("a=x,".to_string()),
        "[cnrspvemi]=[A-Za-z0-9+/=]{0,12}".prop_map(|s| s),
        "[ -~]{0,6}".prop_map(|s| s),
    ];
    let shaped = proptest::collection::vec(piece, 0..10).prop_map(|v| v.join(",").into_bytes());
    prop_oneof![shaped, proptest::collection::vec(any::<u8>(), 0..96)]
}

/// A nonce as clients make them: printable ASCII without a comma.
fn nonce() -> impl Strategy<Value = String> {
    "[!-+\\--~]{1,40}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn parsers_never_panic(data in scram_like()) {
        let _ = parse_client_first(&data);
        let _ = parse_client_final(&data);
        let _ = parse_server_first(&data);
        let _ = parse_server_final(&data);
        let _ = parse_sasl_initial_response(&data);
        let _ = parse_verifier(&String::from_utf8_lossy(&data));
    }

    #[test]
    fn client_first_round_trips(n in nonce(), binding in any::<bool>()) {
        let gs2 = if binding { GS2_BINDING } else { "n,," };
        let text = client_first(gs2, &n);
        let parsed = parse_client_first(text.as_bytes()).unwrap();
        prop_assert_eq!(parsed.nonce, n.as_str());
        prop_assert_eq!(parsed.gs2_header, gs2);
        prop_assert_eq!(parsed.flag, if binding { Gs2Flag::Binding } else { Gs2Flag::No });
        prop_assert_eq!(format!("{}{}", parsed.gs2_header, parsed.bare), text);
    }

    #[test]
    fn server_first_round_trips(
        n in nonce(),
        salt in proptest::collection::vec(any::<u8>(), 1..32),
        iterations in 1u32..1_000_000,
    ) {
        let text = server_first(&n, &salt, iterations);
        let parsed = parse_server_first(text.as_bytes()).unwrap();
        prop_assert_eq!(parsed.nonce, n.as_str());
        prop_assert_eq!(parsed.salt, salt);
        prop_assert_eq!(parsed.iterations, iterations);
    }

    #[test]
    fn client_final_round_trips(
        n in nonce(),
        cbind in proptest::collection::vec(any::<u8>(), 0..64),
        proof in any::<[u8; 32]>(),
    ) {
        let without = client_final_without_proof(&cbind, &n);
        let text = client_final(&without, &proof);
        let parsed = parse_client_final(text.as_bytes()).unwrap();
        prop_assert_eq!(parsed.channel_binding, cbind);
        prop_assert_eq!(parsed.nonce, n.as_str());
        prop_assert_eq!(*parsed.proof, proof);
        prop_assert_eq!(parsed.without_proof, without.as_str());
    }

    #[test]
    fn server_final_round_trips(signature in any::<[u8; 32]>()) {
        let parsed = parse_server_final(server_final(&signature).as_bytes()).unwrap();
        prop_assert_eq!(parsed, ServerFinal::Verifier(signature));
    }
}
