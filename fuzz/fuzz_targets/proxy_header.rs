//! The PROXY v2 header as the session reads it: no panic; a prefix either asks for a total
//! beyond itself (never more than the cap) or agrees with the whole buffer's verdict, so the
//! reader never consumes a byte past the header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgt_proxy::protocol::proxy::{MAX_HEADER, Parsed, parse};

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    if let Ok(Parsed::Header { len, .. }) = &whole {
        assert!(*len <= data.len() && *len <= MAX_HEADER);
    }
    for k in 0..data.len().min(MAX_HEADER + 1) {
        match parse(&data[..k]) {
            Ok(Parsed::Incomplete { total }) => assert!(total > k && total <= MAX_HEADER),
            Ok(Parsed::Header { len, source }) => {
                assert!(len <= k);
                // The same header, whatever follows it.
                assert_eq!(parse(&data[..len]), Ok(Parsed::Header { len, source }));
                return;
            }
            // A verdict on a prefix is final: more bytes cannot make it a header.
            Err(e) => {
                assert!(data.len() > k);
                assert!(whole.is_err(), "{e:?} on a prefix, {whole:?} on the whole");
                return;
            }
        }
    }
});
