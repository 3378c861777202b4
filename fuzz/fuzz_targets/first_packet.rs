//! The first-packet classifier and the untagged packets inside TLS: no panic, and every
//! prefix either asks for more bytes or gives the whole buffer's answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgt_proxy::protocol::startup::{parse_first_packet, parse_untagged};

fuzz_target!(|data: &[u8]| {
    let whole = parse_first_packet(data);
    let _ = parse_untagged(data);
    for k in 0..data.len().min(64) {
        match parse_first_packet(&data[..k]) {
            Ok(None) => {}
            Ok(Some((packet, used))) => {
                assert!(used <= k);
                assert_eq!(whole, Ok(Some((packet, used))));
            }
            Err(e) => assert_eq!(whole, Err(e)),
        }
    }
    if let Ok(Some((pgt_proxy::protocol::startup::FirstPacket::Startup(s), _))) = &whole {
        let _ = s.get("user");
        let _ = s.params().count();
    }
});
