//! The test FIPS providers: one built by `scripts/fips-provider` (for the host's OpenSSL 3.0),
//! and an OpenSSL configuration that loads it, or trixie's own, for trixie's OpenSSL 3.5.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use super::trixie::{self, inside};

/// A FIPS provider for trixie's OpenSSL 3.5.
#[derive(Clone, Copy, Debug)]
pub enum FipsProvider {
    /// One built by `scripts/fips-provider --version V` ("3.0.8" or "3.1.2": no ML-KEM).
    Built(&'static str),
    /// Trixie's own (`openssl-provider-fips` 3.5, with ML-KEM).
    Trixie,
}

/// The configuration `scripts/fips-provider --version version` prints (built once, cached
/// under target/), for the host's OpenSSL; fips.so lies beside it.
pub fn built_fips_config(version: &str) -> PathBuf {
    // One build at a time: two tests' cold builds would share target/fips-VERSION/build.
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fips-provider");
    let out = Command::new(&script)
        .args(["--version", version])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/fips-provider --version {version} failed"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// An OpenSSL configuration in `dir` that loads `provider` for trixie's OpenSSL 3.5,
/// installed by trixie's own `fipsinstall` (a module's MAC and self-test settings belong to
/// the library that loads it).
pub fn fips_config_in_trixie(dir: &Path, provider: FipsProvider) -> PathBuf {
    let module = match provider {
        FipsProvider::Built(version) => {
            let module = dir.join("fips.so");
            std::fs::copy(
                built_fips_config(version).with_file_name("fips.so"),
                &module,
            )
            .unwrap();
            inside(&module)
        }
        FipsProvider::Trixie => "/usr/lib/x86_64-linux-gnu/ossl-modules/fips.so".to_owned(),
    };
    let fipsmodule = dir.join("fipsmodule.cnf");
    let out = trixie::command("/usr/bin/openssl")
        .args([
            "fipsinstall",
            "-module",
            &module,
            "-out",
            &inside(&fipsmodule),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fipsinstall on 3.5: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conf = dir.join("openssl-fips.cnf");
    let text = format!(
        "openssl_conf = openssl_init\n[openssl_init]\nproviders = provider_sect\n\
         [provider_sect]\nfips = fips_sect\nbase = base_sect\n[base_sect]\nactivate = 1\n\n{}\
         module = {module}\n",
        std::fs::read_to_string(&fipsmodule).unwrap(),
    );
    std::fs::write(&conf, text).unwrap();
    conf
}
