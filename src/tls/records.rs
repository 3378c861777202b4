//! TLS record buffers on both legs: read-ahead while data flows, and no buffers at all while
//! a session is idle.

use foreign_types::ForeignTypeRef;
use openssl::ssl::{SslContextBuilder, SslMode, SslRef};

use super::ffi;

/// Idle sessions must not keep 2 x 16 KiB of record buffers each (RELEASE_BUFFERS).
/// Read-ahead lets one socket read take every record that has arrived, instead of one read
/// for each record's header and another for its body; a short read also tells tokio the
/// socket is drained, which saves the read that would only return EAGAIN. Only TLS records
/// follow the handshake on either leg, so reading ahead can never swallow plaintext.
///
/// The read buffer stays OpenSSL's default (one full record): OpenSSL 3.0 moves every byte
/// it holds beyond the current record to the front of the buffer before each record it
/// takes, so a bigger buffer copies each byte of a COPY several times over, for fewer reads
/// that save less in the kernel than the copies cost (measured in BENCHMARKS.md, "What each
/// change did").
pub(super) fn tune_records(b: &mut SslContextBuilder) {
    b.set_mode(SslMode::RELEASE_BUFFERS);
    b.set_read_ahead(true);
}

/// Whether OpenSSL holds bytes of `ssl`'s peer that it has not returned yet (records read
/// ahead, or part of one).
pub(crate) fn has_pending(ssl: &SslRef) -> bool {
    // SAFETY: `ssl` is a live SSL object borrowed for the call; the function only reads it.
    unsafe { ffi::SSL_has_pending(ssl.as_ptr()) != 0 }
}

/// Keeps `ssl`'s record buffers between records (RELEASE_BUFFERS off): for the relay, which
/// frees them itself with [`release_idle_buffers`] once the session goes quiet. Reallocating
/// both buffers for every record costs more than the record's own encryption.
pub(crate) fn keep_buffers(ssl: &SslRef) {
    const SSL_CTRL_CLEAR_MODE: std::os::raw::c_int = 78;
    const SSL_CTRL_MODE: std::os::raw::c_int = 33;
    // SAFETY: `ssl` is a live SSL object borrowed for the call, used by this task alone;
    // clearing a mode bit only changes when OpenSSL frees the buffers it owns.
    unsafe {
        openssl_sys::SSL_ctrl(
            ssl.as_ptr(),
            SSL_CTRL_CLEAR_MODE,
            openssl_sys::SSL_MODE_RELEASE_BUFFERS,
            std::ptr::null_mut(),
        );
        // OpenSSL 3.2 and later hand the mode to their record layers only when a mode is
        // set, not when one is cleared: setting none passes the cleared mode on.
        openssl_sys::SSL_ctrl(ssl.as_ptr(), SSL_CTRL_MODE, 0, std::ptr::null_mut());
    };
}

/// Frees a connection's record buffers while it is idle. RELEASE_BUFFERS alone does not
/// keep an idle session free of them: every read that finds the socket empty sets up a
/// fresh 16 KiB read buffer first, and it stays until data arrives. Only when nothing is
/// buffered (no partial record: `SSL_has_pending` is 0), so even OpenSSL releases without
/// the CVE-2024-4741 fix are safe; OpenSSL refuses by itself when a write is unfinished.
pub(crate) fn release_idle_buffers(ssl: &SslRef) {
    // SAFETY: `ssl` is a live SSL object borrowed for the call; both functions only look
    // at and free its own buffers, and decline when data is pending.
    if !has_pending(ssl) {
        // SAFETY: as above; SSL_free_buffers declines by itself when a write is unfinished.
        unsafe { ffi::SSL_free_buffers(ssl.as_ptr()) };
    }
}
