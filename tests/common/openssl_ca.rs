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

    /// Records `cert` as valid in the CA's database (what `openssl ocsp` answers "good" for;
    /// certificates missing from it are "unknown").
    pub fn register(&self, cert: &Issued) {
        let serial = cert
            .cert
            .serial_number()
            .to_bn()
            .unwrap()
            .to_hex_str()
            .unwrap()
            .to_string();
        let subject: String = cert
            .cert
            .subject_name()
            .entries()
            .map(|e| {
                format!(
                    "/{}={}",
                    e.object().nid().short_name().unwrap(),
                    e.data().to_string().unwrap()
                )
            })
            .collect();
        let line = format!("V\t491231235959Z\t\t{serial}\tunknown\t{subject}\n");
        let mut index = std::fs::read_to_string(self.dir.join("index.txt")).unwrap();
        index.push_str(&line);
        std::fs::write(self.dir.join("index.txt"), index).unwrap();
    }

    /// Starts `openssl ocsp` on 127.0.0.1:`port`, signing with the CA itself, answers valid
    /// for `next_minutes`; with `requests`, it exits after serving that many.
    pub fn responder(&self, port: u16, next_minutes: u32, requests: Option<u32>) -> Responder {
        let log = self.dir.join(format!("ocsp-{port}.log"));
        let mut cmd = Command::new("openssl");
        cmd.arg("ocsp")
            .arg("-index")
            .arg(self.dir.join("index.txt"))
            .args(["-port", &port.to_string()])
            .arg("-rsigner")
            .arg(self.dir.join("ca.crt"))
            .arg("-rkey")
            .arg(self.dir.join("ca.key"))
            .arg("-CA")
            .arg(self.dir.join("ca.crt"))
            .args(["-nmin", &next_minutes.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(n) = requests {
            cmd.args(["-nrequest", &n.to_string()]);
        }
        super::die_with_parent(&mut cmd, libc::SIGKILL);
        let child = cmd.spawn().expect("openssl ocsp");
        // Not a test connection: `openssl ocsp` (3.0) hangs on a connection that closes
        // without a request, so wait for its own word that it listens.
        super::wait_for(
            "the OCSP responder",
            std::time::Duration::from_secs(10),
            || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                text.contains("waiting for OCSP client connections")
                    .then_some(())
            },
        );
        Responder { child }
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

/// A running `openssl ocsp` responder, killed on drop.
pub struct Responder {
    child: std::process::Child,
}

impl Responder {
    /// Whether it has exited (with `-nrequest`, after serving its requests).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
