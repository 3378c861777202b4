//! The StartupMessage the proxy rebuilds for the server: for any packet the parser accepts and
//! the judge admits, the rebuilt packet parses, is admitted again, and means the same (user,
//! database, replication, every other parameter); and the judged user is the last (only)
//! `user` the client sent, cut as the server cuts it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgt_proxy::protocol::parameters::{MAX_NAME, judge};
use pgt_proxy::protocol::startup::{FirstPacket, parse_untagged};

fuzz_target!(|data: &[u8]| {
    let Ok(Some((FirstPacket::Startup(message), size))) = parse_untagged(data) else {
        return;
    };
    let Ok(judged) = judge(&message) else {
        return;
    };
    let sent_user = message
        .params()
        .filter(|(name, _)| *name == b"user")
        .last()
        .map(|(_, value)| value)
        .expect("judged without a user");
    assert_eq!(
        judged.user.as_bytes(),
        &sent_user[..sent_user.len().min(MAX_NAME)]
    );
    let rebuilt = judged.encode();
    assert!(rebuilt.len() <= size, "the rebuilt packet is longer than the client's");
    let Ok(Some((FirstPacket::Startup(again), used))) = parse_untagged(&rebuilt) else {
        panic!("the rebuilt packet does not parse");
    };
    assert_eq!(used, rebuilt.len());
    assert_eq!(judge(&again).as_ref(), Ok(&judged));
});
