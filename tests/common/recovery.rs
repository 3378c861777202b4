//! Whether the proxy came through a bad input whole: its open descriptors back to the
//! baseline taken after one normal session, a normal client still served, no panic logged.

use std::time::Duration;

use super::proxy::{Proxy, TestPki};
use super::raw;

/// Serves one session, so lazily opened descriptors are in the baseline; returns the
/// proxy's open descriptors then.
pub async fn warm_baseline(proxy: &Proxy, pki: &TestPki) -> usize {
    drop(raw::trusted_session(proxy.addr, pki).await);
    proxy.wait_log(&["session ended"]);
    super::open_fds(proxy.pid())
}

/// After a bad input: descriptors back to `baseline`, a normal client served, no panic.
pub async fn assert_recovered(proxy: &Proxy, pki: &TestPki, baseline: usize) {
    super::wait_for(
        "descriptors back to baseline",
        Duration::from_secs(15),
        || (super::open_fds(proxy.pid()) <= baseline).then_some(()),
    );
    drop(raw::trusted_session(proxy.addr, pki).await);
    assert!(!proxy.log().contains("panicked"));
}
