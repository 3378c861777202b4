//! Property tests of the StartupMessage the proxy rebuilds for the server: for any packet the
//! parser accepts and the judge admits, the values judged are the ones the server would act
//! on (its `ProcessStartupPacket` rules, written out below as a model), and the rebuilt
//! packet reads back to the same values.

use pgt_proxy::protocol::parameters::{
    MAX_NAME, REPLICATION_DATABASE, Replication, encode_packet, judge,
};
use pgt_proxy::protocol::startup::{FirstPacket, parse_untagged};
use proptest::prelude::*;

/// Parameter names, weighted towards the ones the proxy and the server treat specially and
/// their letter-case variants.
fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"user".to_vec()),
        Just(b"database".to_vec()),
        Just(b"options".to_vec()),
        Just(b"replication".to_vec()),
        Just(b"application_name".to_vec()),
        Just(b"User".to_vec()),
        Just(b"DATABASE".to_vec()),
        Just(b"_pq_.x".to_vec()),
        proptest::collection::vec(1u8..=255, 1..12),
    ]
}

/// Values: short names, the replication words, long names past NAMEDATALEN, any bytes.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(b"alice".to_vec()),
        Just(b"victim".to_vec()),
        Just(b"database".to_vec()),
        Just(b"on".to_vec()),
        Just(b"0".to_vec()),
        Just(b"-c search_path=evil".to_vec()),
        proptest::collection::vec(b'a'..=b'z', 60..70),
        proptest::collection::vec(1u8..=255, 0..80),
    ]
}

fn packet(version: u32, params: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let params: Vec<(&[u8], &[u8])> = params.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    encode_packet(version, &params)
}

/// The user, the database and `options`, as the server takes them.
type ServerView = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

/// What the server makes of a parameter list (PostgreSQL's `ProcessStartupPacket`): the last
/// value of a key wins, an absent or empty database is the user's name, both names are cut to
/// NAMEDATALEN - 1 bytes, physical replication opens no database. `None`: no user.
fn server_reads(params: &[(Vec<u8>, Vec<u8>)]) -> Option<ServerView> {
    let last = |key: &[u8]| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let user = last(b"user").filter(|u| !u.is_empty())?;
    let database = last(b"database")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user.clone());
    let cut = |mut v: Vec<u8>| {
        v.truncate(MAX_NAME);
        v
    };
    Some((cut(user), cut(database), last(b"options")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn the_judged_values_are_the_servers_and_the_rebuilt_packet_reads_back_the_same(
        params in proptest::collection::vec((name(), value()), 0..6),
        minor in prop_oneof![Just(0u32), Just(2u32)],
    ) {
        let bytes = packet(0x0003_0000 | minor, &params);
        let Ok(Some((FirstPacket::Startup(message), _))) = parse_untagged(&bytes) else {
            // Too long for MAX_STARTUP_PACKET or not a startup: nothing to judge.
            return Ok(());
        };
        let Ok(judged) = judge(&message) else {
            return Ok(());
        };
        // Admitted only with each key once, in any letter case.
        let mut names: Vec<Vec<u8>> = params.iter().map(|(k, _)| k.to_ascii_lowercase()).collect();
        names.sort();
        names.dedup();
        prop_assert_eq!(names.len(), params.len());

        let (user, database, options) = server_reads(&params).expect("judged without a user");
        prop_assert_eq!(judged.user.as_bytes(), &user[..]);
        if judged.replication == Replication::Physical {
            prop_assert_eq!(judged.database.as_str(), REPLICATION_DATABASE);
        } else {
            prop_assert_eq!(judged.database.as_bytes(), &database[..]);
        }
        prop_assert_eq!(judged.get("options").map(<[u8]>::to_vec), options);
        prop_assert_eq!((judged.major, u32::from(judged.minor)), (3, minor));

        // The server gets the rebuilt packet; it must mean the same to it and to the proxy.
        let rebuilt = judged.encode();
        prop_assert!(rebuilt.len() <= bytes.len(), "longer than the client's packet");
        let Ok(Some((FirstPacket::Startup(again), used))) = parse_untagged(&rebuilt) else {
            panic!("the rebuilt packet does not parse: {rebuilt:?}");
        };
        prop_assert_eq!(used, rebuilt.len());
        let rejudged = judge(&again).expect("the rebuilt packet is refused");
        prop_assert_eq!(&rejudged, &judged);
        let mut server_params = Vec::new();
        for (k, v) in again.params() {
            server_params.push((k.to_vec(), v.to_vec()));
        }
        if let Some((u, d, o)) = server_reads(&server_params) {
            prop_assert_eq!(u, judged.user.as_bytes().to_vec());
            if judged.replication != Replication::Physical {
                prop_assert_eq!(d, judged.database.as_bytes().to_vec());
            }
            prop_assert_eq!(o, judged.get("options").map(<[u8]>::to_vec));
        } else {
            panic!("the rebuilt packet has no user");
        }
    }

    #[test]
    fn a_packet_with_a_repeated_key_is_never_admitted(
        params in proptest::collection::vec((name(), value()), 1..6),
        at in any::<prop::sample::Index>(),
        again in value(),
    ) {
        let mut params = params;
        let (key, _) = params[at.index(params.len())].clone();
        params.push((key, again));
        let bytes = packet(0x0003_0000, &params);
        if let Ok(Some((FirstPacket::Startup(message), _))) = parse_untagged(&bytes) {
            prop_assert!(judge(&message).is_err());
        }
    }
}
