//! Every libssl and libcrypto function pgt-proxy calls that openssl-sys does not declare, in
//! one place, so the unsafe surface is visible at a glance. The safe wrappers live with the
//! code that needs them (records, CRL loading, OCSP nonces, FIPS set-up, the SCRAM
//! tls-server-end-point hash).

use std::os::raw::{c_char, c_int};

// libssl (OpenSSL 1.1.0 and later).
unsafe extern "C" {
    pub(super) fn SSL_has_pending(ssl: *const openssl_sys::SSL) -> c_int;
    pub(super) fn SSL_free_buffers(ssl: *mut openssl_sys::SSL) -> c_int;
    pub(super) fn SSL_get_verify_callback(
        ssl: *const openssl_sys::SSL,
    ) -> Option<extern "C" fn(c_int, *mut openssl_sys::X509_STORE_CTX) -> c_int>;
    pub(super) fn X509_check_host(
        cert: *mut openssl_sys::X509,
        name: *const c_char,
        len: usize,
        flags: std::os::raw::c_uint,
        peername: *mut *mut c_char,
    ) -> c_int;
}

// libcrypto (OpenSSL 1.1.1 and later).
unsafe extern "C" {
    pub(crate) fn X509_get_signature_info(
        x: *mut openssl_sys::X509,
        mdnid: *mut c_int,
        pknid: *mut c_int,
        secbits: *mut c_int,
        flags: *mut u32,
    ) -> c_int;
}

// libcrypto (OpenSSL 1.0.0 and later).
unsafe extern "C" {
    pub(super) fn X509_STORE_add_crl(
        store: *mut openssl_sys::X509_STORE,
        crl: *mut openssl_sys::X509_CRL,
    ) -> c_int;
    pub(super) fn OCSP_request_add1_nonce(
        req: *mut openssl_sys::OCSP_REQUEST,
        val: *mut u8,
        len: c_int,
    ) -> c_int;
    pub(super) fn OCSP_check_nonce(
        req: *mut openssl_sys::OCSP_REQUEST,
        bs: *mut openssl_sys::OCSP_BASICRESP,
    ) -> c_int;
}

// libcrypto 3.0.
unsafe extern "C" {
    pub(crate) fn OSSL_LIB_CTX_load_config(
        ctx: *mut openssl_sys::OSSL_LIB_CTX,
        file: *const c_char,
    ) -> c_int;
    pub(crate) fn OSSL_PROVIDER_get_params(
        prov: *const openssl_sys::OSSL_PROVIDER,
        params: *mut openssl_sys::OSSL_PARAM,
    ) -> c_int;
    pub(crate) fn OSSL_PARAM_construct_utf8_ptr(
        key: *const c_char,
        buf: *mut *mut c_char,
        bsize: usize,
    ) -> openssl_sys::OSSL_PARAM;
    pub(crate) fn OPENSSL_info(kind: c_int) -> *const c_char;
}

/// `OPENSSL_info` selector: the configuration directory.
pub(crate) const OPENSSL_INFO_CONFIG_DIR: c_int = 1001;
/// `OPENSSL_info` selector: the provider modules directory.
pub(crate) const OPENSSL_INFO_MODULES_DIR: c_int = 1003;

// libssl 3.0: key-exchange groups. The getters are `SSL_ctrl` macros in the headers.
unsafe extern "C" {
    pub(crate) fn SSL_group_to_name(ssl: *mut openssl_sys::SSL, id: c_int) -> *const c_char;
}

/// `SSL_get1_groups`: the groups a client offered.
pub(crate) const SSL_CTRL_GET_GROUPS: c_int = 90;
/// `SSL_get_shared_group`: with -1, how many groups both sides have.
pub(crate) const SSL_CTRL_GET_SHARED_GROUP: c_int = 93;
/// `SSL_get_negotiated_group`.
pub(crate) const SSL_CTRL_GET_NEGOTIATED_GROUP: c_int = 134;
/// Marks a group id that has no NID: the low 16 bits are its code point.
pub(crate) const TLSEXT_NID_UNKNOWN: c_int = 0x0100_0000;
