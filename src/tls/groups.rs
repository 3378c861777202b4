//! Key-exchange groups: the list each leg offers (post-quantum first where the loaded
//! library implements ML-KEM), checking a configured `groups` list against that library,
//! and the group a connection negotiated, or a refused client offered, by name.
//!
//! What the library implements is asked of the library actually loaded, at run time (the
//! same binary runs on OpenSSL 3.0 and 3.5), on a scratch context: after FIPS mode is set,
//! that also answers what the FIPS provider implements.

use std::ffi::CStr;
use std::os::raw::c_int;
use std::sync::OnceLock;

use foreign_types::ForeignTypeRef;
use openssl::ex_data::Index;
use openssl::ssl::{SslContext, SslContextBuilder, SslContextRef, SslMethod, SslRef};

use super::ffi;

/// Toward clients before OpenSSL 3.5, in preference order (a client's key share decides).
const CLASSIC_CLIENT: &str = "X25519:P-256:P-384";
/// Toward the server before OpenSSL 3.5, P-256 first: OpenSSL 3.0 sends a key share for the
/// first group only, and PostgreSQL up to 17 accepts only its `ssl_ecdh_curve` (prime256v1
/// by default), so X25519 first cost every connect a HelloRetryRequest.
const CLASSIC_UPSTREAM: &str = "P-256:X25519:P-384";
/// Toward clients on OpenSSL 3.5: two tuples. A client that supports X25519MLKEM768 gets
/// it, with a HelloRetryRequest if it sent no share for it; any other client gets the
/// classical group it sent a share for, without one.
const PQ_CLIENT: &str = "X25519MLKEM768/X25519:P-256:P-384";
/// Toward the server on OpenSSL 3.5: key shares for X25519MLKEM768 and P-256 (`*`), so a
/// post-quantum server takes the first and a PostgreSQL up to 17 (P-256 only) the second,
/// neither with a HelloRetryRequest.
const PQ_UPSTREAM: &str = "*X25519MLKEM768:*P-256:X25519:P-384";
/// FIPS mode without ML-KEM in the provider: the NIST curves. Listed explicitly because the
/// 3.0.8 and 3.1.2 FIPS providers still register X25519 as fips=yes.
const FIPS_CLASSIC: &str = "P-256:P-384:P-521";
/// FIPS mode, provider with ML-KEM (FIPS 203): the NIST hybrid first, as [`PQ_CLIENT`].
const FIPS_PQ_CLIENT: &str = "SecP256r1MLKEM768/P-256:P-384:P-521";
/// FIPS mode, provider with ML-KEM, toward the server, as [`PQ_UPSTREAM`].
const FIPS_PQ_UPSTREAM: &str = "*SecP256r1MLKEM768:*P-256:P-384:P-521";

/// The hybrid group each mode's post-quantum default starts with.
const PQ_GROUP: &str = "X25519MLKEM768";
const FIPS_PQ_GROUP: &str = "SecP256r1MLKEM768";
/// The first release whose group lists have tuples (`/`) and key-share marks (`*`) and
/// whose default provider implements ML-KEM.
const OPENSSL_3_5: i64 = 0x3050_0000;

/// What the defaults offer: the lists, and whether they are post-quantum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Defaults {
    /// Toward clients.
    pub client: &'static str,
    /// Toward servers.
    pub upstream: &'static str,
    /// The hybrid group offered first, or `None` for classical groups only.
    pub post_quantum: Option<&'static str>,
}

impl Defaults {
    /// The defaults for the loaded library (and, with `fips`, its FIPS provider, which is
    /// set up once at start, before this is first asked), found once per process.
    pub fn for_library(fips: bool) -> Self {
        static PLAIN: OnceLock<Defaults> = OnceLock::new();
        static FIPS: OnceLock<Defaults> = OnceLock::new();
        *if fips { &FIPS } else { &PLAIN }.get_or_init(|| Self::probe(fips))
    }

    fn probe(fips: bool) -> Self {
        let tuples = openssl::version::number() >= OPENSSL_3_5;
        match fips {
            false if tuples && library_has(PQ_GROUP) => Self {
                client: PQ_CLIENT,
                upstream: PQ_UPSTREAM,
                post_quantum: Some(PQ_GROUP),
            },
            false => Self {
                client: CLASSIC_CLIENT,
                upstream: CLASSIC_UPSTREAM,
                post_quantum: None,
            },
            true if tuples && library_has(FIPS_PQ_GROUP) => Self {
                client: FIPS_PQ_CLIENT,
                upstream: FIPS_PQ_UPSTREAM,
                post_quantum: Some(FIPS_PQ_GROUP),
            },
            true => Self {
                client: FIPS_CLASSIC,
                upstream: FIPS_CLASSIC,
                post_quantum: None,
            },
        }
    }

    /// One line for `check-config` and the start log.
    pub fn describe(&self, fips: bool) -> String {
        match (self.post_quantum, fips) {
            (Some(group), false) => format!("post-quantum first ({group}, then classical)"),
            (Some(group), true) => format!(
                "post-quantum first ({group}: the FIPS provider implements ML-KEM), then NIST curves"
            ),
            (None, false) => format!(
                "classical only ({} has no ML-KEM groups)",
                openssl::version::version()
            ),
            (None, true) => "NIST curves only (the FIPS provider has no ML-KEM)".into(),
        }
    }
}

/// Whether the loaded library (with the current default properties) accepts `list`.
fn library_has(list: &str) -> bool {
    SslContextBuilder::new(SslMethod::tls()).is_ok_and(|mut b| b.set_groups_list(list).is_ok())
}

/// Checks a configured list: `Err` names each group the library lacks, or says why the list
/// as a whole is refused (tuples and `*` need OpenSSL 3.5). A group marked `?` may be
/// missing: OpenSSL skips it, as its own syntax says.
pub(crate) fn check_list(list: &str) -> Result<(), String> {
    if list.trim().is_empty() {
        return Err("is empty: name at least one group".into());
    }
    let whole = match SslContextBuilder::new(SslMethod::tls()) {
        Ok(mut b) => b.set_groups_list(list),
        Err(e) => Err(e),
    };
    let Err(whole) = whole else {
        return Ok(());
    };
    let missing: Vec<&str> = list
        .split([':', '/'])
        .map(str::trim)
        .filter(|g| !g.starts_with('?') && !g.is_empty())
        .map(|g| g.trim_start_matches(['*', '-']))
        .filter(|g| *g != "DEFAULT" && !library_has(g))
        .collect();
    let version = openssl::version::version();
    Err(match missing.as_slice() {
        [] => format!(
            "{version} refuses the list ({}); tuples (\"/\") and the marks \"*\", \"?\" and \"-\" \
             need OpenSSL 3.5",
            super::describe::openssl_errors(&whole)
        ),
        [one] => format!("names group {one}, which {version} does not implement"),
        many => format!(
            "names groups {}, which {version} does not implement",
            many.join(", ")
        ),
    })
}

/// Remembers on a context the list it was given, for the message when a client shares none
/// of it.
pub(crate) fn remember(b: &mut SslContextBuilder, list: &str) {
    if let Some(index) = list_index() {
        b.set_ex_data(index, list.to_owned());
    }
}

/// For an upstream handshake that failed with `detail`: when the server answered the
/// ClientHello itself with a handshake-failure alert, what that almost always means and
/// which key sets it (a DBA sees "alert handshake failure" and nothing else otherwise).
/// Empty in every other case.
pub(crate) fn refused_hello_hint(ssl: &SslRef, detail: &str) -> String {
    // No cipher yet: the alert came before any ServerHello, i.e. in answer to our hello.
    if !detail.contains("handshake failure") || ssl.current_cipher().is_some() {
        return String::new();
    }
    let offered = configured(ssl.ssl_context())
        .map(|list| list.replace('*', "").replace('/', ":"))
        .unwrap_or_else(|| "the library's defaults".to_owned());
    format!(
        " (the server refused the proxy's ClientHello: it accepts none of the key-exchange groups offered, {offered}, or none of the cipher suites; upstream.groups sets the groups, and PostgreSQL up to 17 accepts only its ssl_ecdh_curve)"
    )
}

/// The list [`remember`] kept on `ctx`.
pub(crate) fn configured(ctx: &SslContextRef) -> Option<&str> {
    list_index()
        .and_then(|i| ctx.ex_data(i))
        .map(String::as_str)
}

fn list_index() -> Option<Index<SslContext, String>> {
    static INDEX: OnceLock<Option<Index<SslContext, String>>> = OnceLock::new();
    *INDEX.get_or_init(|| SslContext::new_ex_index().ok())
}

/// The group a finished handshake negotiated, by OpenSSL's name (e.g. `X25519MLKEM768`,
/// `x25519`, `secp256r1`); `None` without one (a resumed TLS 1.2 session may have none).
pub(crate) fn negotiated(ssl: &SslRef) -> Option<String> {
    // SAFETY: `ssl` is live; the control reads the connection's own state.
    let id = unsafe {
        openssl_sys::SSL_ctrl(
            ssl.as_ptr(),
            ffi::SSL_CTRL_GET_NEGOTIATED_GROUP,
            0,
            std::ptr::null_mut(),
        )
    };
    (id > 0).then(|| group_name(ssl, id as c_int))
}

/// For a client handshake that failed: when the client offered groups and none is one this
/// side allows, the groups it offered and the list configured. Nothing otherwise.
pub(crate) fn no_common_group(ssl: &SslRef) -> Option<(String, String)> {
    let ptr = ssl.as_ptr();
    // SAFETY: `ssl` is live; with a NULL array the control only counts.
    let offered =
        unsafe { openssl_sys::SSL_ctrl(ptr, ffi::SSL_CTRL_GET_GROUPS, 0, std::ptr::null_mut()) };
    if offered <= 0 {
        return None;
    }
    // SAFETY: as above; -1 asks for the number of shared groups.
    let shared = unsafe {
        openssl_sys::SSL_ctrl(
            ptr,
            ffi::SSL_CTRL_GET_SHARED_GROUP,
            -1,
            std::ptr::null_mut(),
        )
    };
    if shared != 0 {
        return None;
    }
    // A ClientHello carries at most 32767 groups; OpenSSL keeps what it parsed.
    let count = usize::try_from(offered).ok()?.min(1024);
    let mut ids = vec![0 as c_int; count];
    // SAFETY: OpenSSL writes one int per group it holds, `offered` of them, which fit.
    let written =
        unsafe { openssl_sys::SSL_ctrl(ptr, ffi::SSL_CTRL_GET_GROUPS, 0, ids.as_mut_ptr().cast()) };
    if written as usize != count {
        return None;
    }
    let names: Vec<String> = ids
        .iter()
        .filter(|id| !is_grease(**id))
        .map(|id| group_name(ssl, *id))
        .collect();
    let allowed = configured(ssl.ssl_context())
        .unwrap_or("(unknown)")
        .to_owned();
    Some((names.join(":"), allowed))
}

/// A group's name: the library's, or for one it does not implement, the IANA name of a few
/// well-known ones, else its code point.
fn group_name(ssl: &SslRef, id: c_int) -> String {
    // SAFETY: `ssl` is live; OpenSSL returns a static name or NULL.
    let name = unsafe { ffi::SSL_group_to_name(ssl.as_ptr(), id) };
    if !name.is_null() {
        // SAFETY: non-NULL, NUL-terminated, owned by the library.
        return unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned();
    }
    let code = (id & 0xffff) as u16;
    let known = match code {
        0x001d => "x25519",
        0x001e => "x448",
        0x0017 => "secp256r1",
        0x0018 => "secp384r1",
        0x0019 => "secp521r1",
        0x0200 => "MLKEM512",
        0x0201 => "MLKEM768",
        0x0202 => "MLKEM1024",
        0x11eb => "SecP256r1MLKEM768",
        0x11ec => "X25519MLKEM768",
        0x11ed => "SecP384r1MLKEM1024",
        0x6399 => "X25519Kyber768Draft00",
        _ => return format!("0x{code:04x}"),
    };
    known.to_owned()
}

/// RFC 8701's reserved values, which browsers send to keep servers tolerant.
fn is_grease(id: c_int) -> bool {
    id & ffi::TLSEXT_NID_UNKNOWN != 0 && (id & 0x0f0f) == 0x0a0a && (id >> 8) & 0xff == id & 0xff
}

/// The metrics label of a negotiated group: one of a known set, else "other".
pub(crate) fn label(name: &str) -> &'static str {
    const KNOWN: [&str; 14] = [
        "X25519MLKEM768",
        "SecP256r1MLKEM768",
        "SecP384r1MLKEM1024",
        "MLKEM512",
        "MLKEM768",
        "MLKEM1024",
        "x25519",
        "x448",
        "secp256r1",
        "secp384r1",
        "secp521r1",
        "ffdhe2048",
        "ffdhe3072",
        "ffdhe4096",
    ];
    KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(name))
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_lists_the_library_takes() {
        for fips in [false, true] {
            let d = Defaults::for_library(fips);
            if fips && d.post_quantum.is_none() {
                assert_eq!((d.client, d.upstream), (FIPS_CLASSIC, FIPS_CLASSIC));
            }
            assert_eq!(check_list(d.client), Ok(()), "{d:?}");
            assert_eq!(check_list(d.upstream), Ok(()), "{d:?}");
        }
    }

    #[test]
    fn on_openssl_3_0_the_lists_are_todays() {
        if openssl::version::number() >= OPENSSL_3_5 {
            return;
        }
        let d = Defaults::for_library(false);
        assert_eq!((d.client, d.upstream), (CLASSIC_CLIENT, CLASSIC_UPSTREAM));
        assert_eq!(d.post_quantum, None);
        assert_eq!(Defaults::for_library(true).client, FIPS_CLASSIC);
    }

    #[test]
    fn a_group_the_library_lacks_is_named() {
        let e = check_list("P-256:NoSuchGroup:X448").unwrap_err();
        assert!(e.contains("names group NoSuchGroup,"), "{e}");
        let e = check_list("Bogus1:P-256:Bogus2").unwrap_err();
        assert!(e.contains("names groups Bogus1, Bogus2,"), "{e}");
        assert!(check_list("").is_err());
        assert_eq!(check_list("P-384:P-256"), Ok(()));
    }

    #[test]
    fn grease_and_labels() {
        assert!(is_grease(ffi::TLSEXT_NID_UNKNOWN | 0x2a2a));
        assert!(!is_grease(ffi::TLSEXT_NID_UNKNOWN | 0x11ec));
        assert_eq!(label("X25519MLKEM768"), "X25519MLKEM768");
        assert_eq!(label("X25519"), "x25519");
        assert_eq!(label("0x1234"), "other");
    }
}
