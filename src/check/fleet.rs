//! The fleet part of the check-config report: where client addresses come from (each
//! listener's PROXY rule), who may connect, and the cluster's peers.

use std::fmt::Write;

use crate::config::schema::ProxyProtocol;
use crate::settings::Settings;

pub(super) fn list(nets: &[ipnet::IpNet]) -> String {
    let texts: Vec<String> = nets.iter().map(ToString::to_string).collect();
    texts.join(", ")
}

/// Where client addresses come from, who may connect, and the cluster table.
pub(super) fn describe_fleet(out: &mut String, settings: &Settings, ca: &str) {
    let listen = &settings.listen;
    let _ = writeln!(
        out,
        "
client addresses:"
    );
    let lead = match settings.start.extra.is_empty() {
        true => String::new(),
        false => {
            let main: Vec<String> = settings
                .start
                .addresses
                .iter()
                .map(ToString::to_string)
                .collect();
            format!("on {} (listen.addresses): ", main.join(", "))
        }
    };
    if listen.proxy_v2 {
        let _ = writeln!(
            out,
            "  {lead}from a PROXY v2 header, required from {} (listen.trusted_proxies); others refused",
            list(&listen.trusted_proxies)
        );
    } else {
        let _ = writeln!(
            out,
            "  {lead}the socket's peer (listen.proxy_protocol = \"off\")"
        );
    }
    for (i, extra) in settings.start.extra.iter().enumerate() {
        let addresses: Vec<String> = extra.addresses.iter().map(ToString::to_string).collect();
        let rule = match extra.proxy_protocol {
            ProxyProtocol::V2 => "from a PROXY v2 header, required from listen.trusted_proxies",
            ProxyProtocol::Off => "the socket's peer; a PROXY header there is refused as malformed",
        };
        let _ = writeln!(
            out,
            "  on {} (listen.extra[{i}], proxy_protocol = {:?}): {rule}",
            addresses.join(", "),
            String::from(extra.proxy_protocol)
        );
    }
    let _ = writeln!(out, "  allowed: {}", list(&listen.allowed_clients));
    if listen.max_per_client > 0 {
        let _ = writeln!(out, "  at most {} connections each", listen.max_per_client);
    }
    let cluster = &settings.cluster;
    if cluster.peer_id == 0 {
        return;
    }
    if let Some(template) = &cluster.peer_address {
        let _ = writeln!(
            out,
            "\ncluster: this replica is peer {}; cancel keys name it, peers verified against cluster.ca = {ca:?}",
            cluster.peer_id
        );
        let _ = writeln!(
            out,
            "  any other peer id N at {:?} ({{ordinal}} = N - 1), resolved when a cancel is forwarded; its certificate must match the host",
            template.template()
        );
        return;
    }
    let _ = writeln!(
        out,
        "\ncluster: this replica is peer {} of {}; cancel keys name it, peers verified against cluster.ca = {ca:?}",
        cluster.peer_id,
        cluster.peers.len() + 1
    );
    let _ = writeln!(out, "  {:<8} this replica", cluster.peer_id);
    for (id, peer) in &cluster.peers {
        let _ = writeln!(
            out,
            "  {id:<8} {} (certificate must match {:?})",
            peer.address, peer.endpoint.server_name
        );
    }
}
