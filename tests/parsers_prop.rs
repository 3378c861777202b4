//! Property tests for every parser of bytes from the network: any byte string either parses
//! or yields a typed error (never a panic), and a packet fed in pieces parses the same as
//! whole: a prefix either asks for more bytes, or gives exactly the answer the whole buffer
//! gives.

use pgt_proxy::protocol::error_response::{Refusal, encode_fatal, message_of, sqlstate_of};
use pgt_proxy::protocol::message::{
    MessageTracker, parse_authentication, parse_backend_key_data, parse_frame,
    sasl_initial_mechanism, sasl_mechanisms,
};
use pgt_proxy::protocol::sqlstate::SqlState;
use pgt_proxy::protocol::startup::{encode_cancel_request, parse_first_packet, parse_untagged};
use proptest::prelude::*;

/// Byte strings that are often close to valid: a plausible length prefix, a known code, and
/// arbitrary bodies, mixed with fully random bytes.
fn packet_like() -> impl Strategy<Value = Vec<u8>> {
    let code = prop_oneof![
        Just(80_877_103i32),
        Just(80_877_104),
        Just(80_877_102),
        Just(0x0003_0000),
        Just(0x0003_0002),
        any::<i32>(),
    ];
    let shaped = (
        code,
        proptest::collection::vec(any::<u8>(), 0..64),
        -4i32..16,
    )
        .prop_map(|(code, body, skew)| {
            let len = (body.len() as i32 + 8).saturating_add(skew);
            let mut v = len.to_be_bytes().to_vec();
            v.extend_from_slice(&code.to_be_bytes());
            v.extend(body);
            v
        });
    prop_oneof![shaped, proptest::collection::vec(any::<u8>(), 0..128)]
}

/// Tagged-message-like byte strings.
fn frame_like() -> impl Strategy<Value = Vec<u8>> {
    let shaped = (
        any::<u8>(),
        proptest::collection::vec(any::<u8>(), 0..64),
        -6i32..8,
    )
        .prop_map(|(tag, body, skew)| {
            let mut v = vec![tag];
            v.extend_from_slice(&(body.len() as i32 + 4 + skew).to_be_bytes());
            v.extend(body);
            v
        });
    prop_oneof![shaped, proptest::collection::vec(any::<u8>(), 0..128)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn first_packet_prefixes_agree_with_the_whole(buf in packet_like()) {
        let whole = parse_first_packet(&buf);
        for k in 0..=buf.len() {
            match parse_first_packet(&buf[..k]) {
                Ok(None) => {}
                Ok(Some((packet, used))) => {
                    prop_assert!(used <= k);
                    prop_assert_eq!(&whole, &Ok(Some((packet, used))));
                }
                Err(e) => prop_assert_eq!(&whole, &Err(e)),
            }
        }
    }

    #[test]
    fn untagged_inside_tls_never_panics(buf in packet_like()) {
        let _ = parse_untagged(&buf);
    }

    #[test]
    fn frame_prefixes_agree_with_the_whole(buf in frame_like(), max in 4usize..100) {
        let whole = parse_frame(&buf, max);
        for k in 0..=buf.len() {
            match parse_frame(&buf[..k], max) {
                Ok(None) => {}
                Ok(Some((frame, used))) => {
                    prop_assert!(used <= k);
                    prop_assert_eq!(&whole, &Ok(Some((frame, used))));
                }
                Err(e) => prop_assert_eq!(&whole, &Err(e)),
            }
        }
    }

    #[test]
    fn startup_phase_message_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..96)) {
        let _ = parse_authentication(&body);
        let _ = sasl_mechanisms(&body);
        let _ = sasl_initial_mechanism(&body);
        let _ = parse_backend_key_data(&body);
        let _ = sqlstate_of(&body);
        let _ = message_of(&body);
    }

    #[test]
    fn tracker_state_is_independent_of_how_the_stream_is_split(
        stream in proptest::collection::vec(any::<u8>(), 0..256),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut whole = MessageTracker::default();
        whole.feed(&stream);
        let mut pieces = MessageTracker::default();
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        points.sort_unstable();
        let mut at = 0;
        for p in points.into_iter().chain([stream.len()]) {
            pieces.feed(&stream[at..p]);
            at = p;
        }
        prop_assert_eq!(whole, pieces);
    }

    #[test]
    fn our_error_responses_parse_back(message in ".{0,200}", hint in proptest::option::of(".{0,50}")) {
        let refusal = Refusal {
            hint: hint.clone(),
            ..Refusal::new(SqlState::new("08001"), message.clone())
        };
        let bytes = encode_fatal(&refusal);
        let (frame, used) = parse_frame(&bytes, 1 << 20).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(frame.tag, b'E');
        prop_assert_eq!(sqlstate_of(frame.body), Some("08001".to_owned()));
        prop_assert_eq!(message_of(frame.body), Some(message.replace('\0', "?")));
    }

    #[test]
    fn cancel_requests_round_trip(pid in any::<i32>(), key in proptest::collection::vec(any::<u8>(), 4..=256)) {
        let bytes = encode_cancel_request(pid, &key);
        let (packet, used) = parse_first_packet(&bytes).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        match packet {
            pgt_proxy::protocol::startup::FirstPacket::Cancel(c) => {
                prop_assert_eq!(c.pid, pid);
                prop_assert_eq!(c.key, &key[..]);
            }
            other => prop_assert!(false, "not a cancel: {other:?}"),
        }
    }
}

/// The real first packets in the fuzz seed corpus (captured by fuzz/capture-seeds.sh from
/// psql 15 and libpq 18) parse as what they are, and no prefix of them is misread.
#[test]
fn captured_first_packets_parse_at_every_prefix() {
    use pgt_proxy::protocol::startup::FirstPacket;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/first_packet");
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    fn check(bytes: &[u8]) -> (FirstPacket<'_>, usize) {
        let whole = parse_first_packet(bytes).unwrap().unwrap();
        for k in 0..whole.1 {
            assert_eq!(parse_first_packet(&bytes[..k]), Ok(None), "prefix {k}");
        }
        whole
    }
    let psql = read("seed-psql15-startup-3.0.bin");
    let FirstPacket::Startup(s) = check(&psql).0 else {
        panic!("psql 15 startup")
    };
    assert_eq!(
        (s.major, s.minor, s.get("user").as_deref()),
        (3, 0, Some("alice"))
    );
    let libpq18 = read("seed-libpq18-startup-3.2.bin");
    let FirstPacket::Startup(s) = check(&libpq18).0 else {
        panic!("libpq 18 startup")
    };
    assert_eq!((s.major, s.minor), (3, 2));
    assert_eq!(
        check(&read("seed-psql15-sslrequest.bin")).0,
        FirstPacket::SslRequest
    );
    let hello = read("seed-libpq18-direct-tls-clienthello.bin");
    assert_eq!(
        parse_first_packet(&hello),
        Ok(Some((FirstPacket::DirectTls, 0)))
    );
}

#[path = "common/pki.rs"]
#[allow(dead_code)]
mod pki;

mod ocsp_answers {
    //! The OCSP response handling gets untrusted bytes from a responder: anything that is not
    //! a good, signed, current answer about the certificate is an error, never a panic. The
    //! real responses (`fuzz/corpus/ocsp_response`, from `openssl ocsp`) are signed by another
    //! CA and must be refused too.
    use openssl::hash::MessageDigest;
    use openssl::ocsp::{OcspCertId, OcspRequest};
    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;
    use pgt_proxy::tls::revocation::ocsp::judge_response;
    use proptest::prelude::*;

    use super::pki;

    struct Fixture {
        ca: pki::Ca,
        leaf: pki::Issued,
        request: OcspRequest,
        store: openssl::x509::store::X509Store,
    }

    thread_local! {
        /// Built once per test thread: debug-mode key generation is slow.
        static FIXTURE: Fixture = {
            let ca = pki::Ca::new("prop CA");
            let leaf = ca.issue("leaf", &["DNS:leaf"], pki::Validity::Current);
            let mut request = OcspRequest::new().unwrap();
            request
                .add_id(OcspCertId::from_cert(MessageDigest::sha1(), &leaf.cert, &ca.issued.cert).unwrap())
                .unwrap();
            let mut store = X509StoreBuilder::new().unwrap();
            store.add_cert(ca.issued.cert.clone()).unwrap();
            Fixture { ca, leaf, request, store: store.build() }
        };
    }

    fn judge(bytes: &[u8]) -> bool {
        FIXTURE.with(|f| {
            let id = OcspCertId::from_cert(MessageDigest::sha1(), &f.leaf.cert, &f.ca.issued.cert)
                .unwrap();
            judge_response(bytes, &f.request, &id, &Stack::new().unwrap(), &f.store).is_err()
        })
    }

    #[test]
    fn real_responses_from_another_ca_are_refused() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/ocsp_response");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(judge(&bytes));
            seen += 1;
        }
        assert!(seen >= 7, "the seed corpus is missing ({seen} files)");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn arbitrary_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            prop_assert!(judge(&bytes));
        }
    }
}

/// The PROXY v2 header: what the proxy writes when it forwards a cancel to a peer is what it
/// reads from a balancer, whatever the addresses and whatever follows; and no byte string
/// makes the reader ask for more than the cap or read past a header.
mod proxy_header {
    use std::net::{IpAddr, SocketAddr};

    use pgt_proxy::protocol::proxy::{MAX_HEADER, Parsed, SIGNATURE, encode, parse};
    use proptest::prelude::*;

    fn addr() -> impl Strategy<Value = SocketAddr> {
        (any::<IpAddr>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn an_encoded_header_gives_back_its_client(
            source in addr(), destination in addr(),
            after in proptest::collection::vec(any::<u8>(), 0..32),
        ) {
            let mut bytes = encode(source, destination);
            let len = bytes.len();
            bytes.extend_from_slice(&after);
            let want = match (source, destination) {
                (SocketAddr::V4(_), SocketAddr::V4(_)) => source,
                (SocketAddr::V4(s), _) => SocketAddr::from((s.ip().to_ipv6_mapped(), s.port())),
                _ => source,
            };
            prop_assert_eq!(parse(&bytes), Ok(Parsed::Header { len, source: Some(want) }));
        }

        #[test]
        fn any_bytes_after_the_signature_are_judged_within_the_cap(
            tail in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut bytes = SIGNATURE.to_vec();
            bytes.extend_from_slice(&tail);
            match parse(&bytes) {
                Ok(Parsed::Incomplete { total }) => {
                    prop_assert!(total > bytes.len() && total <= MAX_HEADER)
                }
                Ok(Parsed::Header { len, .. }) => prop_assert!(len <= bytes.len()),
                Err(_) => {}
            }
        }
    }
}
