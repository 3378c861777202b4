//! This replica's id, from `cluster.peer_id`: the number as written, or with
//! `"from-hostname"` the StatefulSet ordinal of the host name plus one (`pgt-proxy-3` is 4;
//! 0 keeps its meaning, no cluster). The kubelet sets a pod's host name to the pod's name,
//! so replicas sharing one configuration each know who they are.

use super::Problems;
use super::cluster::MAX_PEER_ID;
use crate::config::peer_id::{FROM_HOSTNAME, PeerIdSetting};
use crate::config::schema::RawConfig;

/// The id this replica's cancel keys name, or `None` with the problem recorded.
pub(super) fn resolve(raw: &RawConfig, problems: &mut Problems) -> Option<u16> {
    let key = "cluster.peer_id";
    match raw.cluster.peer_id {
        PeerIdSetting::Fixed(id) if id > MAX_PEER_ID => {
            problems.key(
                key,
                format!("{id} is out of range: 1 to {MAX_PEER_ID}, or 0 for no cluster"),
            );
            None
        }
        PeerIdSetting::Fixed(id) => Some(id),
        PeerIdSetting::FromHostname => {
            let judged = host_name().and_then(|name| from_host_name(&name));
            judged
                .map_err(|why| problems.key(key, format!("is \"{FROM_HOSTNAME}\", but {why}")))
                .ok()
        }
    }
}

/// The id a host name gives: its first label's trailing `-N` (a StatefulSet ordinal, no
/// leading zero), plus one.
pub(crate) fn from_host_name(name: &str) -> Result<u16, String> {
    let label = name.split('.').next().unwrap_or_default();
    let ordinal = label
        .rsplit_once('-')
        .filter(|(set, n)| {
            !set.is_empty()
                && !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && (n.len() == 1 || !n.starts_with('0'))
        })
        .map(|(_, n)| n);
    let Some(ordinal) = ordinal else {
        return Err(format!(
            "the host name {name:?} has no StatefulSet ordinal (a trailing -N, as in \
             \"pgt-proxy-0\"); run the replicas as a StatefulSet, or give each a number"
        ));
    };
    match ordinal.parse::<u16>().ok().filter(|n| *n < MAX_PEER_ID) {
        Some(n) => Ok(n + 1),
        None => Err(format!(
            "the host name {name:?} has ordinal {ordinal}: ids run from 1 to {MAX_PEER_ID}, \
             so ordinals from 0 to {}",
            MAX_PEER_ID - 1
        )),
    }
}

/// This host's name (the UTS namespace's: a pod's own).
fn host_name() -> Result<String, String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, which is what is passed.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(format!(
            "the host name cannot be read: {}",
            std::io::Error::last_os_error()
        ));
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::from_host_name;

    #[test]
    fn a_statefulset_ordinal_plus_one() {
        assert_eq!(from_host_name("pgt-proxy-0"), Ok(1));
        assert_eq!(from_host_name("pgt-proxy-3"), Ok(4));
        assert_eq!(
            from_host_name("pgt-proxy-3.pgt-proxy-peers.ns.svc.cluster.local"),
            Ok(4)
        );
        assert_eq!(from_host_name("db-proxy-16382"), Ok(16383));
    }

    #[test]
    fn no_ordinal_or_one_too_large_is_refused_naming_the_host() {
        for name in [
            "pgt-proxy",
            "pgt-proxy-",
            "-3",
            "pgt-proxy-03",
            "pgt-proxy-3a",
            "",
            "a.b-1",
        ] {
            let why = from_host_name(name).unwrap_err();
            assert!(why.contains(&format!("{name:?}")), "{why}");
            assert!(why.contains("no StatefulSet ordinal"), "{why}");
        }
        for name in ["pgt-proxy-16383", "pgt-proxy-99999"] {
            let why = from_host_name(name).unwrap_err();
            assert!(why.contains("ids run from 1 to 16383"), "{why}");
        }
    }
}
