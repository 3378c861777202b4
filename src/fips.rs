//! FIPS mode: deciding it (`tls.fips` = off, require, auto), loading an extra OpenSSL
//! configuration (`tls.openssl_config`), activating OpenSSL's `fips` provider with the
//! `fips=yes` default property, proving it works before anything is served, and describing
//! the provider for logs, `check-config` and `--version`.
//!
//! Everything here acts on OpenSSL's process-wide default library context, so it runs once,
//! at start, before any TLS context exists. The TLS policy that FIPS mode selects (suites,
//! groups, signature algorithms, key sizes) lives in [`crate::tls::policy`] and
//! [`crate::tls::identity`].

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};
use std::path::Path;

use openssl::provider::Provider;

use crate::config::schema::FipsMode;
use crate::tls::describe::openssl_errors;
use crate::tls::ffi;

/// Where the kernel says whether it runs in FIPS mode.
pub const KERNEL_FIPS_FLAG: &str = "/proc/sys/crypto/fips_enabled";
/// For tests only: a file read instead of [`KERNEL_FIPS_FLAG`] (see the README).
pub const KERNEL_FIPS_FLAG_OVERRIDE_VAR: &str = "PGT_PROXY_TEST_FIPS_ENABLED_PATH";

/// The FIPS provider as it describes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderInfo {
    /// E.g. "OpenSSL FIPS Provider".
    pub name: String,
    /// E.g. "3.0.8".
    pub version: String,
    /// E.g. "3.0.8".
    pub build: String,
}

impl std::fmt::Display for ProviderInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} (build {})", self.name, self.version, self.build)
    }
}

/// Why FIPS mode could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum FipsError {
    /// `tls.openssl_config` could not be loaded.
    #[error("tls.openssl_config {path}: OpenSSL cannot load it: {reason}")]
    Config {
        /// The file.
        path: String,
        /// OpenSSL's errors.
        reason: String,
    },
    /// The provider did not load or does not work.
    #[error(
        "FIPS mode required but the OpenSSL \"fips\" provider is unusable: {reason} \
         (OPENSSL_CONF: {conf}; OPENSSL_MODULES: {modules}). Install your distribution's FIPS \
         provider (RHEL: fips-mode-setup --enable; Ubuntu Pro: pro enable fips), or point \
         tls.openssl_config at an OpenSSL configuration that includes the fipsmodule.cnf made by \
         `openssl fipsinstall` and names the module"
    )]
    Provider {
        /// What failed.
        reason: String,
        /// OPENSSL_CONF as seen (or the built-in default).
        conf: String,
        /// OPENSSL_MODULES as seen (or the built-in default).
        modules: String,
    },
}

/// Start-up: loads `tls.openssl_config`, then activates FIPS mode when `tls.fips` asks for
/// it. Returns the provider in use, or `None` when FIPS mode is off. Runs once per process:
/// OpenSSL's default library context cannot be rolled back.
pub fn prepare(tls: &crate::config::schema::RawTls) -> Result<Option<ProviderInfo>, FipsError> {
    if let Some(path) = &tls.openssl_config {
        load_openssl_config(path)?;
    }
    if wanted(tls.fips) {
        activate().map(Some)
    } else {
        Ok(None)
    }
}

/// Whether FIPS mode applies: "require", or "auto" on a kernel in FIPS mode.
pub fn wanted(mode: FipsMode) -> bool {
    match mode {
        FipsMode::Off => false,
        FipsMode::Require => true,
        FipsMode::Auto => kernel_fips_enabled(),
    }
}

/// The kernel's FIPS flag (`/proc/sys/crypto/fips_enabled` is "1").
pub fn kernel_fips_enabled() -> bool {
    let path =
        std::env::var(KERNEL_FIPS_FLAG_OVERRIDE_VAR).unwrap_or_else(|_| KERNEL_FIPS_FLAG.into());
    std::fs::read_to_string(path).is_ok_and(|s| s.trim() == "1")
}

/// Loads `path` into the default library context (providers it configures are loaded).
pub fn load_openssl_config(path: &Path) -> Result<(), FipsError> {
    let error = |reason: String| FipsError::Config {
        path: path.display().to_string(),
        reason,
    };
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| error("the path contains a NUL byte".into()))?;
    // SAFETY: a NULL context is the default one; the path is a valid C string.
    if unsafe { ffi::OSSL_LIB_CTX_load_config(std::ptr::null_mut(), c_path.as_ptr()) } != 1 {
        return Err(error(openssl_errors(&openssl::error::ErrorStack::get())));
    }
    Ok(())
}

/// Activates FIPS mode for the whole process and proves it, or explains what is missing.
/// The providers stay loaded for the life of the process.
pub fn activate() -> Result<ProviderInfo, FipsError> {
    let provider_error = |reason: String| FipsError::Provider {
        reason,
        conf: seen("OPENSSL_CONF", ffi::OPENSSL_INFO_CONFIG_DIR, "/openssl.cnf"),
        modules: seen("OPENSSL_MODULES", ffi::OPENSSL_INFO_MODULES_DIR, ""),
    };
    let fips = Provider::load(None, "fips")
        .map_err(|e| provider_error(format!("loading it failed: {}", openssl_errors(&e))))?;
    let base = Provider::load(None, "base").map_err(|e| {
        provider_error(format!(
            "loading the \"base\" provider failed: {}",
            openssl_errors(&e)
        ))
    })?;
    // SAFETY: a NULL context is the default one.
    if unsafe { openssl_sys::EVP_default_properties_enable_fips(std::ptr::null_mut(), 1) } != 1 {
        return Err(provider_error(
            "cannot set the default property query fips=yes".into(),
        ));
    }
    // Prove it: an approved algorithm is there, a non-approved one is not.
    openssl::md::Md::fetch(None, "SHA2-256", None)
        .map_err(|e| provider_error(format!("SHA-256 cannot be fetched with fips=yes: {e}")))?;
    if openssl::md::Md::fetch(None, "MD5", None).is_ok() {
        return Err(provider_error(
            "MD5 can still be fetched with fips=yes: the provider does not restrict algorithms"
                .into(),
        ));
    }
    let info = describe(&fips);
    // The process keeps both providers for its whole life.
    std::mem::forget(fips);
    std::mem::forget(base);
    Ok(info)
}

/// The FIPS provider's name, version and build, if OpenSSL can load it (without activating
/// FIPS mode), for `--version`.
pub fn available_provider() -> Option<ProviderInfo> {
    let fips = Provider::try_load(None, "fips", true).ok()?;
    Some(describe(&fips))
}

fn describe(provider: &Provider) -> ProviderInfo {
    let mut values: [*mut c_char; 3] = [std::ptr::null_mut(); 3];
    let keys = [c"name", c"version", c"buildinfo"];
    // SAFETY: each parameter points at one slot of `values`, which outlives the call; the
    // provider writes pointers to strings it owns.
    let ok = unsafe {
        let mut params = [
            ffi::OSSL_PARAM_construct_utf8_ptr(keys[0].as_ptr(), &mut values[0], 0),
            ffi::OSSL_PARAM_construct_utf8_ptr(keys[1].as_ptr(), &mut values[1], 0),
            ffi::OSSL_PARAM_construct_utf8_ptr(keys[2].as_ptr(), &mut values[2], 0),
            openssl_sys::OSSL_PARAM_construct_end(),
        ];
        use foreign_types::ForeignType;
        ffi::OSSL_PROVIDER_get_params(provider.as_ptr(), params.as_mut_ptr()) == 1
    };
    let text = |p: *mut c_char| {
        if !ok || p.is_null() {
            return "unknown".to_owned();
        }
        // SAFETY: the provider returned a NUL-terminated string it keeps alive.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    };
    ProviderInfo {
        name: text(values[0]),
        version: text(values[1]),
        build: text(values[2]),
    }
}

/// An environment variable as the process sees it, or OpenSSL's built-in default.
fn seen(var: &str, info: c_int, suffix: &str) -> String {
    match std::env::var(var) {
        Ok(v) => format!("{v} (from the environment)"),
        Err(_) => {
            // SAFETY: OPENSSL_info returns a static string or NULL.
            let dir = unsafe { ffi::OPENSSL_info(info) };
            if dir.is_null() {
                "not set".into()
            } else {
                // SAFETY: non-NULL, NUL-terminated, static.
                let dir = unsafe { CStr::from_ptr(dir) }.to_string_lossy();
                format!("not set, default {dir}{suffix}")
            }
        }
    }
}
