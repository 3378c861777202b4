//! Certificates generated at test time with the openssl crate: CAs, intermediates, server
//! and client certificates, valid or expired. ECDSA P-256 keys, so generation is instant.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509NameBuilder};

/// When a certificate is valid.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From yesterday for 80 days.
    Current,
    /// Expired yesterday.
    Expired,
}

/// A certificate and its key.
pub struct Issued {
    pub cert: X509,
    pub key: PKey<Private>,
    /// Issuer chain to present after the leaf (intermediates), if any.
    pub chain: Vec<X509>,
}

/// A certificate authority that can issue.
pub struct Ca {
    pub issued: Issued,
}

fn new_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

/// A random 64-bit serial number.
pub fn serial() -> Asn1Integer {
    let mut bn = BigNum::new().unwrap();
    bn.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    bn.to_asn1_integer().unwrap()
}

fn builder(cn: &str, key: &PKey<Private>, validity: Validity) -> X509Builder {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&serial()).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_pubkey(key).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let day = 86_400;
    let (from, to) = match validity {
        // Under 90 days, as Mozilla's "modern" profile asks of server certificates.
        Validity::Current => (now - day, now + 80 * day),
        Validity::Expired => (now - 30 * day, now - day),
    };
    b.set_not_before(&Asn1Time::from_unix(from).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(to).unwrap()).unwrap();
    b
}

/// The extensions that make a certificate a CA.
fn ca_extensions(b: &mut X509Builder) {
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .unwrap(),
    )
    .unwrap();
}

impl Ca {
    /// A self-signed root.
    pub fn new(cn: &str) -> Ca {
        let key = new_key();
        let mut b = builder(cn, &key, Validity::Current);
        let subject = {
            let mut n = X509NameBuilder::new().unwrap();
            n.append_entry_by_text("CN", cn).unwrap();
            n.build()
        };
        b.set_issuer_name(&subject).unwrap();
        ca_extensions(&mut b);
        let ski = SubjectKeyIdentifier::new()
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(ski).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        Ca {
            issued: Issued {
                cert: b.build(),
                key,
                chain: Vec::new(),
            },
        }
    }

    /// An intermediate CA issued by this one.
    pub fn intermediate(&self, cn: &str) -> Ca {
        let key = new_key();
        let mut b = builder(cn, &key, Validity::Current);
        b.set_issuer_name(self.issued.cert.subject_name()).unwrap();
        ca_extensions(&mut b);
        self.sign(&mut b);
        // Everything between the new CA and the root: this CA too, unless it is the root.
        let mut chain = vec![];
        if self.is_intermediate() {
            chain.push(self.issued.cert.clone());
        }
        chain.extend(self.issued.chain.iter().cloned());
        Ca {
            issued: Issued {
                cert: b.build(),
                key,
                chain,
            },
        }
    }

    fn sign(&self, b: &mut X509Builder) {
        let ski = SubjectKeyIdentifier::new()
            .build(&b.x509v3_context(Some(&self.issued.cert), None))
            .unwrap();
        b.append_extension(ski).unwrap();
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&self.issued.cert), None))
            .unwrap();
        b.append_extension(aki).unwrap();
        b.sign(&self.issued.key, MessageDigest::sha256()).unwrap();
    }

    /// A leaf certificate for `cn` with SANs like `"DNS:localhost"`, `"IP:127.0.0.1"`.
    pub fn issue(&self, cn: &str, sans: &[&str], validity: Validity) -> Issued {
        let key = new_key();
        let mut b = builder(cn, &key, validity);
        b.set_issuer_name(self.issued.cert.subject_name()).unwrap();
        b.append_extension(BasicConstraints::new().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_agreement()
                .build()
                .unwrap(),
        )
        .unwrap();
        b.append_extension(
            ExtendedKeyUsage::new()
                .server_auth()
                .client_auth()
                .build()
                .unwrap(),
        )
        .unwrap();
        if !sans.is_empty() {
            let mut san = SubjectAlternativeName::new();
            for s in sans {
                match s.split_once(':') {
                    Some(("DNS", v)) => san.dns(v),
                    Some(("IP", v)) => san.ip(v),
                    Some(("email", v)) => san.email(v),
                    _ => panic!("bad SAN {s}"),
                };
            }
            let ext = san
                .build(&b.x509v3_context(Some(&self.issued.cert), None))
                .unwrap();
            b.append_extension(ext).unwrap();
        }
        self.sign(&mut b);
        let mut chain = Vec::new();
        if !self.issued.chain.is_empty() || self.is_intermediate() {
            chain.push(self.issued.cert.clone());
            chain.extend(self.issued.chain.iter().cloned());
        }
        Issued {
            cert: b.build(),
            key,
            chain,
        }
    }

    /// [`Ca::issue`] with an AIA extension naming `ocsp_url` as the OCSP responder.
    pub fn issue_with_ocsp(&self, cn: &str, sans: &[&str], ocsp_url: &str) -> Issued {
        let key = new_key();
        let mut b = builder(cn, &key, Validity::Current);
        b.set_issuer_name(self.issued.cert.subject_name()).unwrap();
        let mut san = SubjectAlternativeName::new();
        for s in sans {
            match s.split_once(':') {
                Some(("DNS", v)) => san.dns(v),
                Some(("IP", v)) => san.ip(v),
                _ => panic!("bad SAN {s}"),
            };
        }
        let ext = san
            .build(&b.x509v3_context(Some(&self.issued.cert), None))
            .unwrap();
        b.append_extension(ext).unwrap();
        #[allow(deprecated)]
        let aia = openssl::x509::X509Extension::new(
            None,
            Some(&b.x509v3_context(Some(&self.issued.cert), None)),
            "authorityInfoAccess",
            &format!("OCSP;URI:{ocsp_url}"),
        )
        .unwrap();
        b.append_extension(aia).unwrap();
        self.sign(&mut b);
        Issued {
            cert: b.build(),
            key,
            chain: Vec::new(),
        }
    }

    fn is_intermediate(&self) -> bool {
        self.issued.cert.subject_name().to_der().unwrap()
            != self.issued.cert.issuer_name().to_der().unwrap()
    }

    /// Writes the CA certificate as PEM.
    pub fn write_cert(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.issued.cert.to_pem().unwrap()).unwrap();
        path.to_owned()
    }
}

impl Issued {
    /// Writes `<dir>/<name>.crt` (leaf then chain) and `<dir>/<name>.key` (mode 0600).
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert_path = dir.join(format!("{name}.crt"));
        let key_path = dir.join(format!("{name}.key"));
        let mut pem = self.cert.to_pem().unwrap();
        for c in &self.chain {
            pem.extend(c.to_pem().unwrap());
        }
        std::fs::write(&cert_path, pem).unwrap();
        std::fs::write(&key_path, self.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        (cert_path, key_path)
    }

    /// The leaf's serial number in hex, as OpenSSL prints it.
    pub fn serial_hex(&self) -> String {
        self.cert
            .serial_number()
            .to_bn()
            .unwrap()
            .to_hex_str()
            .unwrap()
            .to_string()
    }

    /// SHA-256 fingerprint of the leaf.
    pub fn fingerprint(&self) -> Vec<u8> {
        self.cert.digest(MessageDigest::sha256()).unwrap().to_vec()
    }
}
