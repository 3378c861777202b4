//! A StatefulSet's pods without Kubernetes: the fleet's certificates (the replicas' one
//! certificate for `*.pgt-proxy-peers.test.svc.cluster.local` from a cluster CA of its own,
//! as a cert-manager Certificate gives them), PostgreSQL, one configuration file and one
//! hosts file; pods started from them under a host name each, in namespaces of their own
//! ([`super::netns`]), with relays inside each pod for PostgreSQL and the peers' names (the
//! headless Service's DNS), and a round-robin TCP balancer in front.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::netns::{self, Netns, Target};
use super::pki::{Ca, Issued, Validity};
use super::postgres::{Postgres, free_port};
use super::proxy::{Proxy, ProxyConfig, TestPki, binary, toml_path};

/// The headless Service's domain in namespace "test".
pub const PEERS_DOMAIN: &str = "pgt-proxy-peers.test.svc.cluster.local";
/// Where every pod listens (each in its own network namespace, as every pod has its IP).
pub const POD_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 5432);
pub const REPLICAS: u8 = 3;

/// Pod `ordinal`'s address in every pod's /etc/hosts (a relay to that pod's listener).
pub fn pod_ip(ordinal: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 10 + ordinal)
}

/// The fleet's certificates, PostgreSQL and the one configuration file.
pub struct Shared {
    pub pki: TestPki,
    pub pg: Postgres,
    pub config: PathBuf,
    pub hosts: PathBuf,
    /// The replicas' certificate (wildcard, from the cluster CA).
    _cluster: Issued,
}

impl Shared {
    pub fn new() -> Shared {
        let pki = TestPki::new();
        let pg = Postgres::start(&pki.server);
        let dir = pki.dir.path();
        let cluster_ca = Ca::new("Test Cluster CA");
        let ca_path = cluster_ca.write_cert(&dir.join("cluster-ca.pem"));
        let wildcard = format!("DNS:*.{PEERS_DOMAIN}");
        let cluster = cluster_ca.issue(
            &format!("*.{PEERS_DOMAIN}"),
            &[&wildcard],
            Validity::Current,
        );
        let (cert, key) = cluster.write(dir, "cluster");
        let config = ProxyConfig::new(&pki, pg.port)
            .set("listen.addresses", &format!("[\"{POD_LISTEN}\"]"))
            .set("cluster.peer_id", "\"from-hostname\"")
            .set(
                "cluster.peer_address",
                &format!("\"pgt-proxy-{{ordinal}}.{PEERS_DOMAIN}:5432\""),
            )
            .set("cluster.ca", &toml_path(&ca_path))
            .set("cluster.certificate", &toml_path(&cert))
            .set("cluster.private_key", &toml_path(&key));
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config.render()).unwrap();
        let mut hosts = String::from("127.0.0.1 localhost\n");
        for n in 0..REPLICAS {
            hosts.push_str(&format!("{} pgt-proxy-{n}.{PEERS_DOMAIN}\n", pod_ip(n)));
        }
        let hosts_path = dir.join("hosts");
        std::fs::write(&hosts_path, hosts).unwrap();
        Shared {
            pki,
            pg,
            config: config_path,
            hosts: hosts_path,
            _cluster: cluster,
        }
    }

    /// The proxy as pod `host_name`, with the shared configuration and hosts file.
    pub fn start_pod(&self, host_name: &str) -> Result<Proxy, String> {
        let mut cmd = netns::pod_command(host_name, &self.hosts, &binary());
        cmd.arg("--config").arg(&self.config);
        Proxy::try_start_command(cmd, self.config.clone())
    }
}

/// Three pods, their relays (PostgreSQL and the peers' names, inside each pod), and the
/// balancer in front, on 127.0.0.1:`port`.
pub struct Fleet {
    pub pods: Vec<Proxy>,
    pub namespaces: Vec<Arc<Netns>>,
    pub port: u16,
}

impl Fleet {
    /// Must run inside the runtime (the relays are its tasks); the pods are started from
    /// the calling thread.
    pub fn start(shared: &Shared) -> Fleet {
        let pods: Vec<Proxy> = (0..REPLICAS)
            .map(|n| {
                shared
                    .start_pod(&format!("pgt-proxy-{n}"))
                    .unwrap_or_else(|log| panic!("pod pgt-proxy-{n} did not start:\n{log}"))
            })
            .collect();
        let namespaces: Vec<Arc<Netns>> = pods.iter().map(|p| Netns::of(p.pid())).collect();
        let pg = SocketAddr::from((Ipv4Addr::LOCALHOST, shared.pg.port));
        for (me, ns) in namespaces.iter().enumerate() {
            netns::relay(ns.listen(pg), vec![(None, pg)]);
            for (other, peer) in namespaces.iter().enumerate().filter(|(o, _)| *o != me) {
                let name = SocketAddr::from((pod_ip(other as u8), 5432));
                netns::relay(ns.listen(name), vec![(Some(Arc::clone(peer)), POD_LISTEN)]);
            }
        }
        let port = free_port();
        let front = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let targets: Vec<Target> = namespaces
            .iter()
            .map(|ns| (Some(Arc::clone(ns)), POD_LISTEN))
            .collect();
        netns::relay(front, targets);
        Fleet {
            pods,
            namespaces,
            port,
        }
    }

    pub fn logs(&self) -> String {
        self.pods.iter().map(Proxy::log).collect()
    }

    /// A connection straight to pod `ordinal`'s listener (as another pod would make).
    pub async fn dial_pod(&self, ordinal: usize) -> TcpStream {
        netns::dial(&(Some(Arc::clone(&self.namespaces[ordinal])), POD_LISTEN))
            .await
            .unwrap()
    }
}
