//! Certificates the openssl crate cannot make, made with the openssl command line: keys of
//! any type `openssl req -newkey` takes (ed25519, RSA-1024, ...), and RSA-PSS signatures.

use std::path::{Path, PathBuf};

use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::X509;

use super::pki::{Issued, serial};

/// A self-signed certificate and key made with the openssl command line.
pub fn openssl_req(dir: &Path, name: &str, newkey: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            newkey,
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    (crt, key)
}

/// An RSA CA and a server certificate it signed with RSA-PSS over `digest` (`sha384`, ...),
/// for localhost and 127.0.0.1, made with the openssl command line (the openssl crate signs
/// with PKCS#1 v1.5 only). Returns the CA certificate's path and the leaf.
pub fn openssl_rsa_pss(dir: &Path, name: &str, digest: &str) -> (PathBuf, Issued) {
    let path = |ext: &str| dir.join(format!("{name}-{ext}"));
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("the openssl command line");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let p = |ext: &str| path(ext).to_str().unwrap().to_owned();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={name} RSA-PSS CA"),
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.crt"),
    ]);
    run(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &p("leaf.key"),
        "-out",
        &p("leaf.csr"),
    ]);
    std::fs::write(
        path("ext.cnf"),
        "basicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n\
         subjectAltName = DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    let serial = format!("0x{}", serial().to_bn().unwrap().to_hex_str().unwrap());
    run(&[
        "x509",
        "-req",
        "-in",
        &p("leaf.csr"),
        "-CA",
        &p("ca.crt"),
        "-CAkey",
        &p("ca.key"),
        "-set_serial",
        &serial,
        "-days",
        "2",
        &format!("-{digest}"),
        "-sigopt",
        "rsa_padding_mode:pss",
        "-sigopt",
        "rsa_pss_saltlen:digest",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("leaf.crt"),
    ]);
    let cert = X509::from_pem(&std::fs::read(path("leaf.crt")).unwrap()).unwrap();
    assert_eq!(cert.signature_algorithm().object().nid(), Nid::RSASSAPSS);
    let key = PKey::private_key_from_pem(&std::fs::read(path("leaf.key")).unwrap()).unwrap();
    (
        path("ca.crt"),
        Issued {
            cert,
            key,
            chain: Vec::new(),
        },
    )
}
