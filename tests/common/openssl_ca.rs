//! An `openssl ca` directory around a test CA, so revocation lists are made by the real
//! OpenSSL command line (`openssl ca -revoke`, `openssl ca -gencrl`).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::pki::{Ca, Issued};

/// A CA directory: certificate, key, index, CRL number, config.
pub struct OpenSslCa {
    pub dir: PathBuf,
}

impl OpenSslCa {
    /// Sets up `dir` for `ca`.
    pub fn new(ca: &Ca, dir: &Path) -> OpenSslCa {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("ca.crt"), ca.issued.cert.to_pem().unwrap()).unwrap();
        std::fs::write(
            dir.join("ca.key"),
            ca.issued.key.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("crlnumber"), "1000\n").unwrap();
        std::fs::write(
            dir.join("ca.cnf"),
            format!(
                "[ca]\ndefault_ca = test\n[test]\ndir = {d}\ndatabase = $dir/index.txt\n\
                 crlnumber = $dir/crlnumber\ncertificate = $dir/ca.crt\nprivate_key = $dir/ca.key\n\
                 new_certs_dir = $dir\ndefault_md = sha256\ndefault_crl_days = 1\n\
                 policy = any\nunique_subject = no\n[any]\ncommonName = supplied\n",
                d = dir.display()
            ),
        )
        .unwrap();
        OpenSslCa {
            dir: dir.to_owned(),
        }
    }

    fn openssl_ca(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .arg("ca")
            .arg("-config")
            .arg(self.dir.join("ca.cnf"))
            .args(args)
            .output()
            .expect("the openssl command line");
        assert!(
            out.status.success(),
            "openssl ca {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Marks `cert` revoked in the CA's database.
    pub fn revoke(&self, cert: &Issued) {
        let path = self
            .dir
            .join(format!("revoke-{}.pem", hex(&cert.fingerprint()[..6])));
        std::fs::write(&path, cert.cert.to_pem().unwrap()).unwrap();
        self.openssl_ca(&["-revoke", path.to_str().unwrap()]);
    }

    /// Writes a CRL valid from now for a day.
    pub fn gencrl(&self, out: &Path) {
        self.openssl_ca(&["-gencrl", "-crldays", "1", "-out", out.to_str().unwrap()]);
    }

    /// Writes a CRL whose nextUpdate has passed.
    pub fn gencrl_expired(&self, out: &Path) {
        self.openssl_ca(&[
            "-gencrl",
            "-crl_lastupdate",
            "20200101000000Z",
            "-crl_nextupdate",
            "20200102000000Z",
            "-out",
            out.to_str().unwrap(),
        ]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
