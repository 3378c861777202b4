//! RFC 7677's example exchange, and PostgreSQL's refusals.

use super::*;

// RFC 7677's example exchange (user "user", password "pencil").
const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";

#[test]
fn rfc_7677_messages_parse() {
    let first = parse_client_first(CLIENT_FIRST.as_bytes()).unwrap();
    assert_eq!(first.flag, Gs2Flag::No);
    assert_eq!(first.gs2_header, "n,,");
    assert_eq!(first.bare, "n=user,r=rOprNGfwEbeRWgbNEkqO");
    assert_eq!(first.nonce, "rOprNGfwEbeRWgbNEkqO");
    let server = parse_server_first(SERVER_FIRST.as_bytes()).unwrap();
    assert_eq!(server.iterations, 4096);
    assert_eq!(server.salt.len(), 16);
    assert_eq!(
        server_first(server.nonce, &server.salt, server.iterations),
        SERVER_FIRST
    );
    let fin = parse_client_final(CLIENT_FINAL.as_bytes()).unwrap();
    assert_eq!(fin.channel_binding, b"n,,");
    assert_eq!(fin.nonce, server.nonce);
    assert_eq!(
        fin.without_proof,
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    );
    assert_eq!(
        *client_final(fin.without_proof, &fin.proof[..]),
        CLIENT_FINAL
    );
}

#[test]
fn client_first_refusals_match_postgresql() {
    let code = |m: &str| {
        parse_client_first(m.as_bytes())
            .unwrap_err()
            .sqlstate
            .code()
            .to_owned()
    };
    assert_eq!(code("n,a=bob,n=,r=x"), "0A000");
    assert_eq!(code("n,,m=ext,n=,r=x"), "0A000");
    assert_eq!(code("p=tls-unique,,n=,r=x"), "08P01");
    assert_eq!(code("x,,n=,r=x"), "08P01");
    assert_eq!(code("n,,n=,r=a\u{7f}b"), "08P01");
    assert_eq!(code("n,,r=x"), "08P01");
    let p = parse_client_first(b"p=tls-server-end-point,,n=,r=abc").unwrap();
    assert_eq!((p.flag, p.gs2_header), (Gs2Flag::Binding, GS2_BINDING));
    assert_eq!(
        parse_client_first(b"y,,n=,r=abc").unwrap().flag,
        Gs2Flag::ClientOnly
    );
}

#[test]
fn verifiers_parse_and_md5_is_named() {
    let v = parse_verifier("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=").unwrap();
    assert_eq!(v.iterations, 4096);
    assert!(!format!("{v:?}").contains("WG5d"), "keys never printed");
    assert_eq!(
        parse_verifier("md5a3556571e93b0d20722ba62be61e8c2d"),
        Err(VerifierError::Md5)
    );
    assert_eq!(parse_verifier("pencil"), Err(VerifierError::NotScram));
    assert_eq!(
        parse_verifier("SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA"),
        Err(VerifierError::NotScram)
    );
}

#[test]
fn server_final_forms() {
    assert!(matches!(
        parse_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
        Ok(ServerFinal::Verifier(_))
    ));
    assert_eq!(
        parse_server_final(b"e=invalid-proof"),
        Ok(ServerFinal::Error("invalid-proof".into()))
    );
    assert!(parse_server_final(b"v=short").is_err());
}
