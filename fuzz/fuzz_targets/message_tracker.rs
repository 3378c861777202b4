//! The relay's message-boundary tracker: the same state however the stream is split, and
//! `until_boundary` never overshoots.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgt_proxy::protocol::message::MessageTracker;

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let mut whole = MessageTracker::default();
    whole.feed(stream);
    let mut pieces = MessageTracker::default();
    let step = usize::from(step).max(1);
    for chunk in stream.chunks(step) {
        pieces.feed(chunk);
    }
    assert_eq!(whole, pieces);
    let mut walker = MessageTracker::default();
    let mut at = 0;
    while at < stream.len() {
        let n = if walker.at_boundary() { 1 } else { walker.until_boundary().min(stream.len() - at) };
        assert!(n > 0);
        walker.feed(&stream[at..at + n]);
        at += n;
    }
    assert_eq!(walker, whole);
});
