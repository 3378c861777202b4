//! Replicas of a StatefulSet, without Kubernetes: three pgt-proxy pods that share one
//! configuration file (`cluster.peer_id = "from-hostname"`, `cluster.peer_address` a
//! template) and differ only in their host names, `pgt-proxy-0` to `-2`. Each runs in
//! network, UTS and mount namespaces of its own (tests/common/statefulset.rs, netns.rs): its own loopback
//! with the shared `listen.addresses`, its host name, and the test's hosts file as
//! `/etc/hosts`, where `pgt-proxy-N.pgt-proxy-peers.test.svc.cluster.local` is a relay to pod
//! N (the headless Service's DNS). A round-robin TCP balancer in front sends each query's
//! cancel to another pod than its session's, against a real PostgreSQL; the replicas present
//! one certificate for `*.pgt-proxy-peers.test.svc.cluster.local` from a cluster CA of its
//! own, as a cert-manager Certificate gives them.
//!
//! Also: a host name without an ordinal is refused at start and by check-config, naming the
//! host name; a cancel marked as forwarded that comes without a certificate from the cluster
//! CA is not acted on (a pod that can reach port 5432 is no peer); and one for a peer whose
//! name does not resolve is dropped and logged, the replica serving on. Against a DNS server
//! of the test's inside the pod (tests/common/pod_dns.rs): forged cancels for a name that
//! does not resolve cost one lookup per interval, and while DNS stalls they hold one lookup,
//! so a session's own upstream name still resolves at once.
//!
//! Processes are started from the test's own thread: they die with the thread that started
//! them (PR_SET_PDEATHSIG).

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::clients::rust_tls;
use common::cluster::{HOP, KeyedSession, PEER_SNI, session_from};
use common::netns;
use common::pki::Issued;
use common::pod_dns;
use common::proxy::{ProxyConfig, binary, toml_path};
use common::statefulset::{Fleet, PEERS_DOMAIN, POD_LISTEN, Shared, pod_ip};
use common::{runtime, wait_for_sleeper};
use openssl::ssl::{Ssl, SslConnector, SslMethod, SslVerifyMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;
use tokio_postgres::tls::MakeTlsConnect;

/// The replica id a cluster cancel key's pid names (src/cancel/key.rs).
fn owner_id(pid: i32) -> u16 {
    ((pid as u32 >> 16) & 0x3fff) as u16
}

#[test]
fn three_pods_from_one_config_cancel_each_others_queries_through_a_balancer() {
    let rt = runtime();
    let shared = Shared::new();
    let _guard = rt.enter();
    let fleet = Fleet::start(&shared);
    let pki = &shared.pki;
    let mut cancelled = 0;
    let mut slowest = Duration::ZERO;
    let mut owners = std::collections::BTreeSet::new();
    for round in 0..20 {
        let client = rt
            .block_on(session_from(pki, Ipv4Addr::LOCALHOST, fleet.port, &[]))
            .unwrap();
        let token = client.cancel_token();
        let query = rt.spawn(async move { client.simple_query("select pg_sleep(30)").await });
        wait_for_sleeper(&shared.pg);
        let asked = Instant::now();
        rt.block_on(async {
            let tcp = common::cluster::tcp_from(Ipv4Addr::LOCALHOST, fleet.port, &[]).await;
            let tls =
                MakeTlsConnect::<TcpStream>::make_tls_connect(&mut rust_tls(pki), "localhost")
                    .unwrap();
            token.cancel_query_raw(tcp, tls).await.unwrap();
        });
        let ended = rt.block_on(tokio::time::timeout(Duration::from_secs(10), query));
        let took = asked.elapsed();
        match ended {
            Ok(Ok(Err(e))) if e.code().is_some_and(|c| c.code() == "57014") => {
                cancelled += 1;
                slowest = slowest.max(took);
            }
            other => eprintln!("round {round}: not cancelled: {other:?}"),
        }
    }
    // A forwarding pod logs once its peer has closed, just after its client saw the close.
    let logs = common::wait_for("every forward's log line", Duration::from_secs(10), || {
        let logs = fleet.logs();
        (logs.matches("cancel request forwarded to peer").count() >= cancelled).then_some(logs)
    });
    for line in logs.lines().filter(|l| l.contains("forwarded to peer")) {
        // "... to peer N at ADDR ...": the template's name for N, resolved by /etc/hosts.
        let mut words = line.split("to peer ").nth(1).unwrap_or_default().split(' ');
        let (id, addr) = (
            words.next().unwrap_or_default(),
            words.nth(1).unwrap_or_default(),
        );
        let id: u8 = id.parse().unwrap_or_else(|_| panic!("{line}"));
        assert_eq!(addr, format!("{}:5432", pod_ip(id - 1)), "{line}");
        owners.insert(id);
    }
    // Each owner acted on a cancel from a peer that proved itself with the cluster CA's
    // certificate.
    for line in logs
        .lines()
        .filter(|l| l.contains("cancel request forwarded to 127.0.0.1:"))
    {
        assert!(
            line.contains("client_cert_issuer=\"CN=Test Cluster CA\""),
            "{line}"
        );
    }
    let via_peer = logs.matches("cancel request forwarded to peer").count();
    let to_server = logs
        .matches("cancel request forwarded to 127.0.0.1:")
        .count();
    eprintln!(
        "cancels: {cancelled}/20 cancelled (57014), slowest {slowest:?} from cancel to error; \
         {via_peer} forwarded to the owning pod (owners: peers {owners:?}), {to_server} \
         delivered to the server"
    );
    assert_eq!(cancelled, 20, "{logs}");
    // Round robin sends every cancel to another pod than its session's.
    assert_eq!(via_peer, 20, "{logs}");
    assert_eq!(to_server, 20, "{logs}");
    assert_eq!(owners.len(), 3, "every pod owned sessions: {owners:?}");
    assert!(slowest < Duration::from_secs(3), "{slowest:?}");
    assert!(!logs.contains("cancel request dropped"), "{logs}");
}

#[test]
fn a_pod_whose_host_name_has_no_ordinal_refuses_to_start() {
    let shared = Shared::new();
    let log = match shared.start_pod("pgt-proxy") {
        Ok(_) => panic!("a replica named pgt-proxy started"),
        Err(log) => log,
    };
    let expected = "cluster.peer_id: is \"from-hostname\", but the host name \"pgt-proxy\" has no \
                    StatefulSet ordinal";
    assert!(log.contains(expected), "{log}");
    // check-config says the same, and fails.
    let mut cmd = netns::pod_command("pgt-proxy", &shared.hosts, &binary());
    cmd.arg("check-config").arg("--config").arg(&shared.config);
    let out = cmd.output().expect("unshare (util-linux) runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains(expected), "{text}");
    // The same file with a host name that has one passes, naming the id it gives.
    let mut cmd = netns::pod_command("pgt-proxy-3", &shared.hosts, &binary());
    cmd.arg("check-config").arg("--config").arg(&shared.config);
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("this replica is peer 4;"), "{text}");
}

/// A TLS client that does not care who the server is (an attacker's), sending `sni`,
/// presenting `identity` if given.
fn any_server(sni: &str, identity: Option<&Issued>) -> Ssl {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    if let Some(identity) = identity {
        b.set_certificate(&identity.cert).unwrap();
        b.set_private_key(&identity.key).unwrap();
    }
    b.set_verify(SslVerifyMode::NONE);
    let mut ssl = Ssl::new(&b.build().into_context()).unwrap();
    ssl.set_hostname(sni).unwrap();
    ssl
}

/// Sends a CancelRequest on `tcp`, over TLS made with `ssl` after an SSLRequest when given;
/// `Err` when the handshake or exchange failed.
async fn cancel_on(
    mut tcp: TcpStream,
    ssl: Option<Ssl>,
    pid: i32,
    key: &[u8],
) -> Result<(), String> {
    let request = common::raw::cancel_request(pid, key);
    let Some(ssl) = ssl else {
        tcp.write_all(&request).await.map_err(|e| e.to_string())?;
        let _ = tcp.read_to_end(&mut Vec::new()).await;
        return Ok(());
    };
    tcp.write_all(&common::raw::SSL_REQUEST).await.unwrap();
    assert_eq!(common::raw::read_byte(&mut tcp).await, Some(b'S'));
    let mut tls = SslStream::new(ssl, tcp).unwrap();
    Pin::new(&mut tls)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(&request).await.map_err(|e| e.to_string())?;
    tls.read_to_end(&mut Vec::new())
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[test]
fn a_cancel_marked_as_forwarded_needs_a_cluster_certificate() {
    let rt = runtime();
    let shared = Shared::new();
    let _guard = rt.enter();
    let fleet = Fleet::start(&shared);
    let pki = &shared.pki;
    let balancer = SocketAddr::from((Ipv4Addr::LOCALHOST, fleet.port));
    let mut session = rt.block_on(KeyedSession::open(balancer, pki));
    let id = owner_id(session.pid);
    assert!((1..=3).contains(&id), "the key names a pod: {id}");
    let owner = usize::from(id - 1);
    rt.block_on(session.start_sleep(30));
    wait_for_sleeper(&shared.pg);
    // Another pod that can reach the owner's port, holding the session's key (say, seen
    // in a plaintext cancel), sends it marked as forwarded by a replica: in plaintext; over
    // TLS offering the listener's certificate (a real one, from the clients' CA, not the
    // cluster CA); and under the peers' server name without a certificate, or with that one.
    let marked = session.pid | HOP;
    let key = session.key.clone();
    rt.block_on(async {
        let tcp = fleet.dial_pod(owner).await;
        cancel_on(tcp, None, marked, &key).await.unwrap();
        let tcp = fleet.dial_pod(owner).await;
        cancel_on(
            tcp,
            Some(any_server("localhost", Some(&pki.proxy))),
            marked,
            &key,
        )
        .await
        .unwrap();
        for identity in [None, Some(&pki.proxy)] {
            let tcp = fleet.dial_pod(owner).await;
            let refused = cancel_on(tcp, Some(any_server(PEER_SNI, identity)), marked, &key).await;
            assert!(refused.is_err(), "the peers' context took a stranger");
        }
    });
    let still = rt.block_on(session.ended_within(Duration::from_secs(2)));
    assert_eq!(still, None, "the query was cancelled by a stranger");
    let log = fleet.pods[owner].log();
    assert_eq!(log.matches("not acted on").count(), 2, "{log}");
    assert!(log.contains("it came in plaintext"), "{log}");
    // The listener asks no client for a certificate (no listen.client_ca), so the one sent
    // never counts; under the peers' name, the cluster CA's context refused it outright.
    assert!(
        log.contains("the connection presented no client certificate"),
        "{log}"
    );
    // A cancel for a pod that is not there (id 10: pgt-proxy-9 does not resolve) is
    // dropped and logged; the pod serves on, and the session's own cancel, through the
    // balancer, still works: the test could fail.
    let nobody = (10 << 16) | 0x1234;
    rt.block_on(async {
        let tcp = fleet.dial_pod(owner).await;
        cancel_on(tcp, None, nobody, &[0; 4]).await.unwrap();
    });
    let line = fleet.pods[owner].wait_log(&["cancel request dropped", "peer 10"]);
    assert!(
        line.contains(&format!("pgt-proxy-9.{PEERS_DOMAIN}:5432")),
        "{line}"
    );
    assert!(line.contains("could not be reached"), "{line}");
    let key = session.key.clone();
    rt.block_on(async {
        let tcp = TcpStream::connect(balancer).await.unwrap();
        cancel_on(tcp, None, session.pid, &key).await.unwrap();
    });
    let ended = rt.block_on(session.ended_within(Duration::from_secs(5)));
    assert_eq!(ended.as_deref(), Some("57014"), "{}", fleet.logs());
}

/// check-config on `config` (written into `shared`'s directory) in the test's own
/// namespaces; (success, all output).
fn check_config(shared: &Shared, config: &ProxyConfig) -> (bool, String) {
    common::proxy::check_config(shared.pki.dir.path(), "check.toml", config)
}

#[test]
fn check_config_judges_the_peer_address_template() {
    let shared = Shared::new();
    let base = ProxyConfig::new(&shared.pki, shared.pg.port)
        .set("cluster.peer_id", "2")
        .set("cluster.ca", &toml_path(&shared.pki.proxy_ca_path));
    let refused = [
        (
            base.clone()
                .set("cluster.peer_address", "\"proxy-{ordinal}.peers:5432\"")
                .set("cluster.peers", r#"{ 3 = "p3:5432" }"#),
            "cluster.peer_address: and cluster.peers are both set",
        ),
        (
            base.clone()
                .set("cluster.peer_address", "\"proxy-{n}.peers:5432\""),
            "the only placeholders are {ordinal} (the peer id minus one) and {id}",
        ),
        (
            base.clone()
                .set("cluster.peer_address", "\"proxy-0.peers:5432\""),
            "names no peer: put {ordinal} where the StatefulSet ordinal goes",
        ),
        (
            base.clone()
                .set("cluster.peer_address", "\"proxy-{ordinal}.peers\""),
            "does not give HOST:PORT (for peer 1 it gives \"proxy-0.peers\")",
        ),
        (
            base.clone()
                .set("cluster.peer_address", "\"proxy-{ordinal}.peers:5432\"")
                .set("cluster.ca", "\"system\""),
            "cluster.ca: is \"system\" while cluster.peers or cluster.peer_address are set",
        ),
        (
            base.clone()
                .set("cluster.peer_id", "0")
                .set("cluster.peer_address", "\"proxy-{ordinal}.peers:5432\""),
            "cluster.peer_address: is set but cluster.peer_id is 0",
        ),
        (
            base.clone().set("cluster.peer_id", "\"from-host\""),
            "\"from-host\" is neither a peer id (1 to 16383, 0 for no cluster) nor \"from-hostname\"",
        ),
    ];
    for (config, expected) in refused {
        let (ok, out) = check_config(&shared, &config);
        assert!(
            !ok && out.contains(expected),
            "{expected:?} missing from:\n{out}"
        );
    }
    let config = base.set("cluster.peer_address", "\" proxy-{id}.internal:5432 \"");
    let (ok, out) = check_config(&shared, &config);
    assert!(ok, "{out}");
    assert!(
        out.contains("this replica is peer 2;")
            && out.contains("any other peer id N at \"proxy-{id}.internal:5432\""),
        "{out}"
    );
}

#[test]
fn a_forged_cancel_for_a_peer_that_does_not_resolve_costs_one_lookup_per_interval() {
    let rt = runtime();
    let shared = Shared::new();
    let _guard = rt.enter();
    let pod = shared.start_pod("pgt-proxy-0").unwrap();
    let ns = netns::Netns::of(pod.pid());
    // Peer 10 is pgt-proxy-9, which the hosts file does not name: the pod asks DNS.
    let asked = pod_dns::serve(&ns, "pgt-proxy-9.", true);
    let queries = || asked.lock().unwrap().len();
    let forged = |n: usize| {
        rt.block_on(async {
            for _ in 0..n {
                let target = (Some(Arc::clone(&ns)), POD_LISTEN);
                let tcp = netns::dial(&target).await.unwrap();
                cancel_on(tcp, None, (10 << 16) | 0x1234, &[0; 4])
                    .await
                    .unwrap();
            }
        })
    };
    let dropped = |n: usize| {
        common::wait_for("the dropped cancels", Duration::from_secs(20), || {
            let log = pod.log();
            let lines: Vec<String> = log
                .lines()
                .filter(|l| l.contains("cancel request dropped") && l.contains("peer 10"))
                .map(str::to_owned)
                .collect();
            (lines.len() >= n).then_some(lines)
        })
    };
    forged(1);
    let first = dropped(1);
    assert!(
        first[0].contains(&format!("pgt-proxy-9.{PEERS_DOMAIN}:5432"))
            && first[0].contains("could not be reached"),
        "{first:?}"
    );
    let once = queries();
    assert!(once > 0, "the pod's lookup reached the test's DNS server");
    // Nine more within the interval: each is dropped and logged, none is looked up.
    forged(9);
    let lines = dropped(10);
    assert_eq!(lines.len(), 10, "{lines:?}");
    assert_eq!(queries(), once, "queries for 10 forged cancels");
    for line in &lines[1..] {
        assert!(
            line.contains("its name did not resolve ")
                && line.contains("s ago (")
                && line.contains("a failed name is looked up again after 10s"),
            "{line}"
        );
    }
    // After the interval the name is looked up again.
    std::thread::sleep(Duration::from_secs(11));
    forged(1);
    let lines = dropped(11);
    assert!(
        lines[10].contains("could not be reached: its name did not resolve:"),
        "{lines:?}"
    );
    assert_eq!(queries(), 2 * once);
}

/// Forged cancels while DNS stalls: 20 for 20 peers that do not resolve, 10 a second (the
/// default `cluster.forward_rate`). One name is looked up, its lookup holding its place until
/// the resolver returns (well after the 5 s the forward waits); the others wait their turn
/// for those 5 s and are dropped and logged as such. Meanwhile a session whose upstream is
/// a name (`localhost`, from the pod's hosts file) resolves it at once: the stalled lookups
/// do not hold the blocking threads it needs.
#[test]
fn forged_cancels_while_dns_stalls_hold_one_lookup_and_sessions_still_resolve() {
    let rt = runtime();
    let shared = Shared::new();
    let config = std::fs::read_to_string(&shared.config).unwrap();
    let by_name = config.replace("host = \"127.0.0.1\"", "host = \"localhost\"");
    assert_ne!(config, by_name);
    std::fs::write(&shared.config, by_name).unwrap();
    let _guard = rt.enter();
    let pod = shared.start_pod("pgt-proxy-0").unwrap();
    let ns = netns::Netns::of(pod.pid());
    let pg = SocketAddr::from((Ipv4Addr::LOCALHOST, shared.pg.port));
    netns::relay(ns.listen(pg), vec![(None, pg)]);
    let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let front_port = front.local_addr().unwrap().port();
    netns::relay(front, vec![(Some(Arc::clone(&ns)), POD_LISTEN)]);
    let asked = pod_dns::serve(&ns, "pgt-proxy-", false);
    let mut sent = Vec::new();
    for batch in [10..20, 20..30] {
        for id in batch {
            let target = (Some(Arc::clone(&ns)), POD_LISTEN);
            sent.push(rt.spawn(async move {
                let tcp = netns::dial(&target).await.unwrap();
                cancel_on(tcp, None, (id << 16) | 0x1234, &[0; 4]).await
            }));
        }
        std::thread::sleep(Duration::from_millis(1100));
    }
    // The first lookup is stalled, 19 cancels wait: a session now.
    let started = Instant::now();
    let session = rt.block_on(common::cluster::session_from(
        &shared.pki,
        Ipv4Addr::LOCALHOST,
        front_port,
        &[],
    ));
    let took = started.elapsed();
    let session = session.unwrap_or_else(|e| panic!("{e}:\n{}", pod.log()));
    rt.block_on(session.simple_query("select 1")).unwrap();
    assert!(took < Duration::from_secs(2), "the session took {took:?}");
    for cancel in sent {
        rt.block_on(cancel).unwrap().unwrap();
    }
    let lines = common::wait_for("20 dropped cancels", Duration::from_secs(20), || {
        let log = pod.log();
        let lines: Vec<String> = log
            .lines()
            .filter(|l| l.contains("cancel request dropped: peer "))
            .map(str::to_owned)
            .collect();
        (lines.len() >= 20).then_some(lines)
    });
    // The peers whose names reached DNS ("pgt-proxy-N." for peer N + 1).
    let looked_up: std::collections::BTreeSet<String> = asked
        .lock()
        .unwrap()
        .iter()
        .filter_map(|name| name.split('.').next().map(str::to_owned))
        .collect();
    assert_eq!(looked_up.len(), 1, "{looked_up:?}");
    let waited = lines
        .iter()
        .filter(|l| l.contains("another lookup of a peer's name held the resolver for 5s"))
        .count();
    let timed_out = lines
        .iter()
        .filter(|l| l.contains("its name did not resolve: timed out after 5s"))
        .count();
    assert_eq!((waited, timed_out), (19, 1), "{lines:#?}");
}
