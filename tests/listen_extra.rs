//! `[[listen.extra]]`: one process with a balancer's PROXY v2 port and a plain port for
//! in-cluster clients, with a real PostgreSQL, psql and tokio-postgres. Whether a PROXY
//! header is required, and whether one is believed, is the rule of the listener the
//! connection arrived on: a header sent to the plain port from a trusted balancer's address
//! is not a header (the client is the socket's peer), and the v2 port still refuses a
//! connection without one. check-config refuses an address two listeners would share with
//! different rules, and a reload cannot change a bound listener's rule.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::clients::{conninfo_at, psql_err, psql_ok};
use common::cluster::{admin_addr, refusal, session_from};
use common::postgres::{ALICE_PASSWORD, Postgres};
use common::proxy::{Proxy, ProxyConfig, TestPki};
use pgt_proxy::protocol::proxy::encode;

/// `[listen]` plain on a free port, one extra v2 listener on another, 127.0.0.1 trusted.
fn two_audiences(pki: &TestPki, pg_port: u16) -> ProxyConfig {
    ProxyConfig::new(pki, pg_port)
        .set("listen.trusted_proxies", r#"["127.0.0.1/32"]"#)
        .set("admin.listen", r#""127.0.0.1:0""#)
        .append("[[listen.extra]]\naddresses = [\"127.0.0.1:0\"]\nproxy_protocol = \"v2\"")
}

/// The bound sockets from the proxy's "listening" lines: (address, proxy_protocol).
fn listening(proxy: &Proxy) -> Vec<(SocketAddr, String)> {
    proxy.wait_log(&["ready"]);
    proxy
        .log()
        .lines()
        .filter(|l| l.contains("listening") && l.contains(" listen="))
        .map(|l| {
            let field = |name: &str| {
                let at = l.find(name).unwrap() + name.len();
                l[at..].split_whitespace().next().unwrap().trim_matches('"')
            };
            (
                field(" listen=").parse().unwrap(),
                field("proxy_protocol=").to_owned(),
            )
        })
        .collect()
}

/// `GET path` on the admin endpoint: the status code.
fn http_status(admin: SocketAddr, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_port_and_a_plain_port_each_judge_the_client_by_their_own_rule() {
    let (pki, _pg, proxy) = tokio::task::spawn_blocking(|| {
        let pki = TestPki::new();
        let pg = Postgres::start(&pki.server);
        let proxy = Proxy::start(&two_audiences(&pki, pg.port));
        (pki, pg, proxy)
    })
    .await
    .unwrap();
    let sockets = listening(&proxy);
    assert_eq!(sockets.len(), 2, "{sockets:?}");
    let (plain, v2) = (sockets[0].clone(), sockets[1].clone());
    assert_eq!((plain.1.as_str(), v2.1.as_str()), ("off", "v2"));
    let (plain, v2) = (plain.0.port(), v2.0.port());
    // Ready only when both accept loops run: both count.
    assert_eq!(http_status(admin_addr(&proxy), "/readyz"), 200);

    // In-cluster: psql through the plain port, no header.
    let plain_info = conninfo_at(plain, &pki, "alice", ALICE_PASSWORD);
    let v2_info = conninfo_at(v2, &pki, "alice", ALICE_PASSWORD);
    let (out, err) = tokio::task::spawn_blocking(move || {
        (
            psql_ok(&plain_info, "select 'plain ' || 1"),
            psql_err(&v2_info, "select 1"),
        )
    })
    .await
    .unwrap();
    assert_eq!(out, "plain 1");
    let line = proxy.wait_log(&["session ended", "application_name=\"psql\""]);
    assert!(line.contains("client_addr=127.0.0.1:"), "{line}");
    assert!(
        line.contains("proxy_addr= "),
        "no balancer on the plain port: {line}"
    );
    // The same psql to the v2 port, from a trusted balancer address but without a header:
    // refused as today.
    assert!(
        err.contains("this listener expects connections through its load balancer"),
        "{err}"
    );
    proxy.wait_log(&["session refused", "sent no PROXY protocol v2 header"]);

    // Through the balancer: the header's client is the one judged.
    let balancer = Ipv4Addr::new(127, 0, 0, 1);
    let header = |client: &str, port: u16| {
        encode(
            client.parse().unwrap(),
            SocketAddr::from(([127, 0, 0, 1], port)),
        )
    };
    let through = session_from(&pki, balancer, v2, &header("10.9.9.9:1000", v2))
        .await
        .unwrap();
    through.simple_query("select 1").await.unwrap();
    drop(through);
    let line = proxy.wait_log(&["client_addr=10.9.9.9:1000", "session ended"]);
    assert!(line.contains("proxy_addr=127.0.0.1:"), "{line}");

    // trusted_proxies still guards the v2 port: a header from elsewhere is closed unread.
    let outsider = Ipv4Addr::new(127, 0, 0, 9);
    let spoofed = session_from(&pki, outsider, v2, &header("10.8.8.8:1000", v2)).await;
    assert!(spoofed.is_err(), "a session through an untrusted header");
    let line =
        proxy.wait_log(&["sent a PROXY header, but 127.0.0.9 is not in listen.trusted_proxies"]);
    assert!(line.contains("client_addr=127.0.0.9:"), "{line}");

    // A header on the plain port, from the very address that is a trusted balancer on the
    // v2 port: not believed. It is the first packet, malformed, and the client is the
    // socket's peer.
    let forged = session_from(&pki, balancer, plain, &header("10.7.7.7:1000", plain)).await;
    assert!(forged.is_err(), "a session through a forged header");
    let line = proxy.wait_log(&["session refused", "invalid first packet"]);
    assert!(line.contains("client_addr=127.0.0.1:"), "{line}");
    assert!(line.contains("proxy_addr= "), "{line}");
    let log = proxy.log();
    assert!(
        !log.contains("10.7.7.7") && !log.contains("10.8.8.8"),
        "the forged addresses are never used"
    );
    drop(proxy);
}

/// A dual-stack balancer port (`[::]`): the balancer's IPv4 address reaches it as
/// `::ffff:127.0.0.1` and is still the trusted one; the client in its header is judged and
/// logged as given (an IPv4-mapped one as IPv4), and an untrusted IPv4 address is still
/// closed unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_balancer_port_trusts_the_balancers_ipv4_address() {
    let (pki, _pg, proxy) = tokio::task::spawn_blocking(|| {
        let pki = TestPki::new();
        let pg = Postgres::start(&pki.server);
        let config = ProxyConfig::new(&pki, pg.port)
            .set("listen.trusted_proxies", r#"["127.0.0.1/32"]"#)
            .append("[[listen.extra]]\naddresses = [\"[::]:0\"]\nproxy_protocol = \"v2\"");
        let proxy = Proxy::start(&config);
        (pki, pg, proxy)
    })
    .await
    .unwrap();
    let v2 = listening(&proxy)[1].0.port();
    let to = SocketAddr::from(([127, 0, 0, 1], v2));
    let header = encode("10.9.9.9:1000".parse().unwrap(), to);
    let through = session_from(&pki, Ipv4Addr::LOCALHOST, v2, &header)
        .await
        .unwrap();
    through.simple_query("select 1").await.unwrap();
    drop(through);
    let line = proxy.wait_log(&["client_addr=10.9.9.9:1000", "session ended"]);
    assert!(line.contains("proxy_addr=127.0.0.1:"), "{line}");
    // An IPv4 client in an IPv6 header (what a replica forwarding a cancel to an IPv6 peer
    // address sends, or a dual-stack balancer): the IPv4 client.
    let mapped = encode("[::ffff:10.8.7.6]:1000".parse().unwrap(), to);
    let through = session_from(&pki, Ipv4Addr::LOCALHOST, v2, &mapped)
        .await
        .unwrap();
    through.simple_query("select 1").await.unwrap();
    drop(through);
    proxy.wait_log(&["client_addr=10.8.7.6:1000", "session ended"]);
    let outsider = Ipv4Addr::new(127, 0, 0, 9);
    let spoofed = session_from(&pki, outsider, v2, &header).await;
    assert!(spoofed.is_err(), "a session through an untrusted header");
    proxy.wait_log(&["sent a PROXY header, but 127.0.0.9 is not in listen.trusted_proxies"]);
}

/// `pgt-proxy check-config` on `config`: success and the report.
fn check_config(pki: &TestPki, config: &ProxyConfig) -> (bool, String) {
    common::proxy::check_config(pki.dir.path(), "extra.toml", config)
}

#[test]
fn check_config_refuses_an_address_two_listeners_would_judge_differently() {
    let pki = TestPki::new();
    let base = ProxyConfig::new(&pki, 5432)
        .set("listen.addresses", r#"["127.0.0.1:6432"]"#)
        .set("listen.trusted_proxies", r#"["10.0.0.0/8"]"#);
    let extra = |addresses: &str, protocol: &str| {
        format!("[[listen.extra]]\naddresses = {addresses}\nproxy_protocol = \"{protocol}\"")
    };

    // The same address in [listen] (off) and an extra (v2).
    let (ok, out) = check_config(
        &pki,
        &base.clone().append(&extra(r#"["127.0.0.1:6432"]"#, "v2")),
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "listen.extra[0].addresses: 127.0.0.1:6432 is listed twice, with proxy_protocol = \
             \"v2\" here and \"off\""
        ),
        "{out}"
    );
    assert!(
        out.contains("extra.toml"),
        "the error names the file: {out}"
    );
    // A wildcard on the same port overlaps it just as well (the kernel would choose).
    let (ok, out) = check_config(
        &pki,
        &base.clone().append(&extra(r#"["0.0.0.0:6432"]"#, "v2")),
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("listen.extra[0].addresses: 0.0.0.0:6432 overlaps 127.0.0.1:6432"),
        "{out}"
    );
    // An IPv4-mapped IPv6 address is the IPv4 address: with reuse_port both bind, and the
    // kernel gives 127.0.0.1's connections to one of them whatever the operator meant.
    let reusing = base.clone().set("listen.reuse_port", "true");
    let (ok, out) = check_config(
        &pki,
        &reusing
            .clone()
            .append(&extra(r#"["[::ffff:127.0.0.1]:6432"]"#, "v2")),
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("listen.extra[0].addresses: [::ffff:127.0.0.1]:6432 is listed twice"),
        "{out}"
    );
    let (ok, out) = check_config(
        &pki,
        &reusing
            .clone()
            .set("listen.addresses", r#"["0.0.0.0:6432"]"#)
            .append(&extra(r#"["[::ffff:127.0.0.1]:6432"]"#, "v2")),
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("listen.extra[0].addresses: [::ffff:127.0.0.1]:6432 overlaps 0.0.0.0:6432"),
        "{out}"
    );
    // Two extras sharing an address.
    let both = format!(
        "{}\n{}",
        extra(r#"["127.0.0.1:6433"]"#, "v2"),
        extra(r#"["127.0.0.1:6433"]"#, "off")
    );
    let (ok, out) = check_config(&pki, &base.clone().append(&both));
    assert!(!ok, "{out}");
    assert!(
        out.contains("listen.extra[1].addresses: 127.0.0.1:6433 is listed twice")
            && out.contains("in listen.extra[0].addresses"),
        "{out}"
    );
    // A v2 extra needs trusted balancers like [listen] does.
    let (ok, out) = check_config(
        &pki,
        &base
            .clone()
            .unset("listen.trusted_proxies")
            .append(&extra(r#"["127.0.0.1:6433"]"#, "v2")),
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "listen.trusted_proxies: is empty while listen.extra[0].proxy_protocol = \"v2\""
        ),
        "{out}"
    );
    // An unknown key in an entry is an error: only addresses and proxy_protocol are its own.
    let (ok, out) = check_config(
        &pki,
        &base
            .clone()
            .append("[[listen.extra]]\naddresses = [\"127.0.0.1:6433\"]\nallowed_clients = []"),
    );
    assert!(!ok && out.contains("allowed_clients"), "{out}");

    // Separate ports: fine, and the report says which rule each port has.
    let (ok, out) = check_config(&pki, &base.append(&extra(r#"["127.0.0.1:6433"]"#, "v2")));
    assert!(ok, "{out}");
    for expected in [
        "on 127.0.0.1:6432 (listen.addresses): the socket's peer (listen.proxy_protocol = \"off\")",
        "on 127.0.0.1:6433 (listen.extra[0], proxy_protocol = \"v2\"): from a PROXY v2 header",
    ] {
        assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
    }
}

/// Waits until `pid` catches SIGHUP (its handler is installed once the accept loops run; a
/// SIGHUP before that would end the process).
fn wait_for_sighup_handler(pid: u32) {
    common::wait_for("the SIGHUP handler", Duration::from_secs(10), || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let caught = status.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
        let mask = u64::from_str_radix(caught.trim(), 16).ok()?;
        (mask & (1 << (libc::SIGHUP - 1)) != 0).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_cannot_change_a_bound_listeners_rule() {
    let (pki, _pg, proxy, config) = tokio::task::spawn_blocking(|| {
        let pki = TestPki::new();
        let pg = Postgres::start(&pki.server);
        let config = two_audiences(&pki, pg.port);
        let proxy = Proxy::start(&config);
        (pki, pg, proxy, config)
    })
    .await
    .unwrap();
    let v2 = listening(&proxy)[1].0.port();
    // The same file with the extra listener turned plain: reloaded, with the warning that
    // it applies only after a restart; the bound port still requires its header.
    let text = config
        .render()
        .replace("proxy_protocol = \"v2\"", "proxy_protocol = \"off\"");
    std::fs::write(&proxy.config_path, text).unwrap();
    wait_for_sighup_handler(proxy.pid());
    proxy.signal(libc::SIGHUP);
    proxy.wait_log(&["listen.extra", "apply only after a restart"]);
    let balancer = Ipv4Addr::new(127, 0, 0, 1);
    let err = session_from(&pki, balancer, v2, &[]).await.unwrap_err();
    assert_eq!(
        refusal(err),
        (
            "08P01".into(),
            "pgt-proxy: this listener expects connections through its load balancer".into()
        )
    );

    // Still not applied, so the next reload says so again; and once the file is back to
    // what is bound, a reload has nothing pending to report.
    let reloads = |log: &str| {
        log.matches("configuration reloaded; new connections use it")
            .count()
    };
    let pending = |log: &str| log.matches("apply only after a restart").count();
    let before = reloads(&proxy.log());
    proxy.signal(libc::SIGHUP);
    common::wait_for("the second reload", Duration::from_secs(10), || {
        (reloads(&proxy.log()) > before).then_some(())
    });
    assert_eq!(pending(&proxy.log()), 2, "{}", proxy.log());
    std::fs::write(&proxy.config_path, config.render()).unwrap();
    proxy.signal(libc::SIGHUP);
    common::wait_for("the third reload", Duration::from_secs(10), || {
        (reloads(&proxy.log()) > before + 1).then_some(())
    });
    assert_eq!(
        pending(&proxy.log()),
        2,
        "the file is what is bound again: {}",
        proxy.log()
    );
}

/// With `reuse_port`, `[listen]` on `0.0.0.0:P` and an extra on `127.0.0.5:P` share a port,
/// which check-config allows only while both have the same rule. A reload that turns both
/// "off" would change `[listen]`'s rule (a reload applies it) but not the bound extra's (a
/// restart does): the pair check-config refuses. The reload is refused, naming both, and
/// `[listen]` still requires its header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_would_split_a_shared_ports_rules_is_refused() {
    let (pki, _pg, proxy, config, port) = tokio::task::spawn_blocking(|| {
        let pki = TestPki::new();
        let pg = Postgres::start(&pki.server);
        let port = common::postgres::free_port();
        let config = ProxyConfig::new(&pki, pg.port)
            .set("listen.addresses", &format!("[\"0.0.0.0:{port}\"]"))
            .set("listen.proxy_protocol", "\"v2\"")
            .set("listen.reuse_port", "true")
            .set("listen.trusted_proxies", r#"["127.0.0.1/32"]"#)
            .append(&format!(
                "[[listen.extra]]\naddresses = [\"127.0.0.5:{port}\"]\nproxy_protocol = \"v2\""
            ));
        let proxy = Proxy::start(&config);
        (pki, pg, proxy, config, port)
    })
    .await
    .unwrap();
    assert_eq!(listening(&proxy).len(), 2);
    let text = config
        .render()
        .replace("proxy_protocol = \"v2\"", "proxy_protocol = \"off\"");
    assert_eq!(
        text.matches("proxy_protocol = \"off\"").count(),
        2,
        "{text}"
    );
    std::fs::write(&proxy.config_path, text).unwrap();
    wait_for_sighup_handler(proxy.pid());
    proxy.signal(libc::SIGHUP);
    let line = proxy.wait_log(&["reload failed:", "listen.proxy_protocol"]);
    assert!(
        line.contains(&format!("0.0.0.0:{port}"))
            && line.contains(&format!("overlaps 127.0.0.5:{port}"))
            && line.contains("listen.extra[0].addresses"),
        "{line}"
    );
    proxy.wait_log(&["still serving with the previous configuration"]);
    assert!(
        !proxy.log().contains("configuration reloaded"),
        "{}",
        proxy.log()
    );
    // `[listen]` (127.0.0.1 reaches 0.0.0.0) still wants the balancer's header.
    let err = session_from(&pki, Ipv4Addr::LOCALHOST, port, &[])
        .await
        .unwrap_err();
    assert_eq!(
        refusal(err),
        (
            "08P01".into(),
            "pgt-proxy: this listener expects connections through its load balancer".into()
        )
    );
}

/// The README's `PGT_PROXY__LISTEN__ADDRESSES="0.0.0.0:5432,[::]:5432"`: both bind (the
/// `[::]` socket takes IPv6 only, as PostgreSQL's `listen_addresses = '*'` does, where
/// Linux's default would make it dual-stack and refuse the port 0.0.0.0 holds), and an IPv4
/// and an IPv6 psql each connect. `[::]` alone stays dual-stack: an IPv4 psql still connects.
#[test]
fn ipv4_and_ipv6_wildcards_on_one_port_both_bind_and_ipv6_alone_takes_ipv4() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let config = ProxyConfig::new(&pki, pg.port);
    let port = common::postgres::free_port();
    let both = format!("0.0.0.0:{port},[::]:{port}");
    let proxy = Proxy::try_start_env(&config, &[("PGT_PROXY__LISTEN__ADDRESSES", &both)])
        .unwrap_or_else(|log| panic!("both wildcards did not bind:\n{log}"));
    let sockets: Vec<SocketAddr> = listening(&proxy).into_iter().map(|(a, _)| a).collect();
    assert_eq!(
        sockets,
        [
            SocketAddr::from(([0, 0, 0, 0], port)),
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port))
        ]
    );
    let v4 = conninfo_at(port, &pki, "alice", ALICE_PASSWORD);
    let v6 = v4.replace("hostaddr=127.0.0.1", "hostaddr=::1");
    assert_eq!(psql_ok(&v4, "select 'v4 ' || 1"), "v4 1");
    assert_eq!(psql_ok(&v6, "select 'v6 ' || 1"), "v6 1");
    proxy.wait_log(&["session ended", "client_addr=127.0.0.1:"]);
    proxy.wait_log(&["session ended", "client_addr=[::1]:"]);
    drop(proxy);

    let proxy = Proxy::start(&config.set("listen.addresses", &format!("[\"[::]:{port}\"]")));
    assert_eq!(psql_ok(&v4, "select 'dual ' || 1"), "dual 1");
    proxy.wait_log(&["session ended", "client_addr=127.0.0.1:"]);
}
