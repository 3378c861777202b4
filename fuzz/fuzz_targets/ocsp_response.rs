//! OCSP response handling: arbitrary bytes as a responder's answer to a real request about a
//! real certificate. No panic; anything that is not a good, signed, current answer about that
//! certificate is an error.
#![no_main]

use std::sync::LazyLock;

use foreign_types::ForeignType;
use libfuzzer_sys::fuzz_target;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::ocsp::{OcspCertId, OcspRequest};
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{X509, X509NameBuilder};
use pgt_proxy::tls::revocation::ocsp::judge_response;

struct Fixture {
    request: OcspRequest,
    leaf: X509,
    issuer: X509,
    store: X509Store,
}

unsafe extern "C" {
    fn OCSP_request_add1_nonce(
        req: *mut openssl_sys::OCSP_REQUEST,
        val: *mut std::os::raw::c_uchar,
        len: std::os::raw::c_int,
    ) -> std::os::raw::c_int;
}

fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn cert(cn: &str, serial: u32, key: &PKey<Private>, signer: &PKey<Private>, issuer: Option<&X509>) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(serial).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map_or(&*name, |i| i.subject_name()))
        .unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap()).unwrap();
    b.sign(signer, MessageDigest::sha256()).unwrap();
    b.build()
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let ca_key = key();
    let issuer = cert("fuzz CA", 1, &ca_key, &ca_key, None);
    let leaf = cert("fuzz leaf", 2, &key(), &ca_key, Some(&issuer));
    let mut request = OcspRequest::new().unwrap();
    request
        .add_id(OcspCertId::from_cert(MessageDigest::sha1(), &leaf, &issuer).unwrap())
        .unwrap();
    // With a nonce, as pgt-proxy sends: a response without one then reaches the signature check.
    // SAFETY: a valid request; a null value asks for a random nonce.
    assert_eq!(
        unsafe { OCSP_request_add1_nonce(request.as_ptr(), std::ptr::null_mut(), -1) },
        1
    );
    let mut store = X509StoreBuilder::new().unwrap();
    store.add_cert(issuer.clone()).unwrap();
    Fixture {
        request,
        leaf,
        issuer,
        store: store.build(),
    }
});

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    let id = OcspCertId::from_cert(MessageDigest::sha1(), &f.leaf, &f.issuer).unwrap();
    let untrusted = Stack::new().unwrap();
    // Random bytes are never a good answer signed by the fixture's CA.
    assert!(judge_response(data, &f.request, &id, &untrusted, &f.store).is_err());
});
