//! The startup-phase framing in both directions and every message the proxy reads in it
//! (Authentication*, the SASL mechanism list, SASLInitialResponse, BackendKeyData,
//! ErrorResponse fields), walked over a stream of frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgt_proxy::protocol::error_response::{message_of, sqlstate_of};
use pgt_proxy::protocol::message::{
    Authentication, MAX_BACKEND_STARTUP_MESSAGE, MAX_FRONTEND_AUTH_MESSAGE,
    parse_authentication, parse_backend_key_data, parse_frame, sasl_initial_mechanism,
    sasl_mechanisms,
};

fuzz_target!(|data: &[u8]| {
    for max in [MAX_FRONTEND_AUTH_MESSAGE, MAX_BACKEND_STARTUP_MESSAGE] {
        let mut rest = data;
        while let Ok(Some((frame, used))) = parse_frame(rest, max) {
            assert!(used >= 5 && used <= rest.len());
            match frame.tag {
                b'R' => {
                    if let Ok(Authentication::Sasl(list)) = parse_authentication(frame.body) {
                        let _ = sasl_mechanisms(list);
                    }
                }
                b'K' => {
                    let _ = parse_backend_key_data(frame.body);
                }
                b'p' => {
                    let _ = sasl_initial_mechanism(frame.body);
                }
                b'E' | b'N' => {
                    let _ = sqlstate_of(frame.body);
                    let _ = message_of(frame.body);
                }
                _ => {}
            }
            rest = &rest[used..];
        }
    }
    let _ = sasl_mechanisms(data);
});
