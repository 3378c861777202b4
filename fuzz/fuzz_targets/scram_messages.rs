//! The SCRAM messages a peer sends (client-first, client-final from clients; server-first,
//! server-final from servers), SASLInitialResponse framing, and verifier text from userlists
//! and the auth query. None may panic; a client-first that parses must split into a gs2
//! header and a bare part that rebuild it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgt_proxy::protocol::message::parse_sasl_initial_response;
use pgt_proxy::protocol::scram::{
    parse_client_final, parse_client_first, parse_server_final, parse_server_first,
    parse_verifier,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(first) = parse_client_first(data) {
        assert_eq!(
            format!("{}{}", first.gs2_header, first.bare).as_bytes(),
            data
        );
    }
    if let Ok(fin) = parse_client_final(data) {
        assert!(data.starts_with(fin.without_proof.as_bytes()));
    }
    let _ = parse_server_first(data);
    let _ = parse_server_final(data);
    if let Ok((_, Some(inner))) = parse_sasl_initial_response(data) {
        let _ = parse_client_first(inner);
    }
    let _ = parse_verifier(&String::from_utf8_lossy(data));
});
