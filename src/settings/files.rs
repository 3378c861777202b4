//! The files a configuration uses, found from what the user wrote: certificates by role
//! (for the expiry metrics), the proxy's private keys, and CRLs (the change watcher reloads
//! when one of them changes).

use std::path::PathBuf;

use crate::config::schema::RawConfig;

/// Every certificate file or directory in use, with its role.
pub(super) fn certificate_files(raw: &RawConfig) -> Vec<(&'static str, PathBuf)> {
    let mut files = vec![("listen", raw.listen.certificate.clone())];
    files.extend(
        raw.listen
            .client_ca
            .iter()
            .map(|c| ("client_ca", PathBuf::from(c))),
    );
    for r in &raw.routes {
        files.extend(r.certificate.iter().map(|c| ("route", c.clone())));
        files.extend(r.client_ca.iter().map(|c| ("client_ca", PathBuf::from(c))));
    }
    let cluster = &raw.cluster;
    files.extend(cluster.certificate.iter().map(|c| ("cluster", c.clone())));
    let peers = !cluster.peers.is_empty() || cluster.peer_address.is_some();
    if peers && cluster.ca != "system" {
        files.push(("cluster_ca", PathBuf::from(&cluster.ca)));
    }
    let upstreams = std::iter::once(&raw.upstream).chain(raw.upstreams.values());
    for u in upstreams.filter(|u| u.host.is_some()) {
        if u.ca != "system" {
            files.push(("upstream_ca", PathBuf::from(&u.ca)));
        }
        files.extend(
            u.client_certificate
                .iter()
                .map(|c| ("upstream_client", c.clone())),
        );
    }
    files
}

/// The proxy's own private keys.
pub(super) fn key_files(raw: &RawConfig) -> Vec<PathBuf> {
    let mut keys = vec![raw.listen.private_key.clone()];
    keys.extend(raw.routes.iter().filter_map(|r| r.private_key.clone()));
    keys.extend(raw.cluster.private_key.clone());
    let upstreams = std::iter::once(&raw.upstream).chain(raw.upstreams.values());
    keys.extend(upstreams.filter_map(|u| u.client_private_key.clone()));
    keys
}

/// Every CRL file or directory in use, on either leg, for the change watcher.
pub(super) fn crl_paths(raw: &RawConfig) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = [&raw.listen.client_crl, &raw.upstream.crl]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    paths.extend(raw.upstreams.values().filter_map(|u| u.crl.clone()));
    paths.extend(raw.routes.iter().filter_map(|r| r.client_crl.clone()));
    paths
}
