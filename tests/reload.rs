//! The configuration reloads itself: the config file laid out as Kubernetes projects a
//! ConfigMap (`config.toml -> ..data/config.toml`, `..data -> ..VERSION`), then the `..data`
//! link swapped atomically as the kubelet does: the proxy reloads within one refresh interval
//! (`tls.crl_refresh`), new connections follow the new file, the reload is counted and
//! timestamped; a broken edit is refused and logged and the running configuration stays;
//! a new `conf.d` file reloads too.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use common::clients::{conninfo, psql_err, psql_ok};
use common::cluster::{admin_addr, metric};
use common::postgres::{ALICE_PASSWORD, Postgres};
use common::proxy::{ProxyConfig, TestPki};

const OK: &str = r#"pgt_proxy_reloads_total{result="ok"}"#;
const FAILED: &str = r#"pgt_proxy_reloads_total{result="failed"}"#;
const LOADED: &str = "pgt_proxy_config_last_reload_success_timestamp_seconds";

/// Writes `text` as `..NAME/config.toml` in `dir` and points `..data` at it, replacing the
/// link in one rename, as the kubelet updates a projected ConfigMap.
fn project(dir: &Path, name: &str, text: &str) {
    let version = dir.join(format!("..{name}"));
    std::fs::create_dir(&version).unwrap();
    std::fs::write(version.join("config.toml"), text).unwrap();
    let staged = dir.join("..data_tmp");
    symlink(format!("..{name}"), &staged).unwrap();
    std::fs::rename(&staged, dir.join("..data")).unwrap();
}

/// Waits for `series` to reach `value`; returns how long that took.
fn wait_metric(admin: std::net::SocketAddr, series: &str, value: f64) -> Duration {
    let start = Instant::now();
    common::wait_for(series, Duration::from_secs(5), || {
        (metric(admin, series) >= value).then_some(())
    });
    start.elapsed()
}

#[test]
fn config_file_and_conf_d_changes_reload_and_a_broken_edit_is_refused() {
    let pki = TestPki::new();
    let pg = Postgres::start(&pki.server);
    let config = ProxyConfig::new(&pki, pg.port)
        .set("admin.listen", "\"127.0.0.1:0\"")
        .set("tls.crl_refresh", "\"1s\"");
    let proxy = common::proxy::Proxy::start(&config);
    let admin = admin_addr(&proxy);
    let info = conninfo(&proxy, &pki, "alice", ALICE_PASSWORD);
    assert_eq!(psql_ok(&info, "select 1"), "1");
    let started = metric(admin, LOADED);
    assert!(started > 1.6e9, "the start is a load: {started}");
    assert_eq!(metric(admin, OK), 0.0);

    // Turn the plain file into the ConfigMap layout (same content): a change of its own.
    let dir = proxy.config_path.parent().unwrap().to_owned();
    let text = config.render();
    project(&dir, "2026_01_01_v1", &text);
    symlink("..data/config.toml", dir.join("config.tmp")).unwrap();
    std::fs::rename(dir.join("config.tmp"), &proxy.config_path).unwrap();
    wait_metric(admin, OK, 1.0);

    // A ConfigMap edit: only the ..data link changes.
    let restricted = config
        .clone()
        .set("listen.allowed_clients", r#"["10.0.0.0/8"]"#)
        .render();
    std::thread::sleep(Duration::from_millis(1100));
    let before = metric(admin, LOADED);
    project(&dir, "2026_01_01_v2", &restricted);
    let took = wait_metric(admin, OK, 2.0);
    assert!(
        took < Duration::from_millis(2500),
        "reloaded {took:?} after the swap"
    );
    assert!(metric(admin, LOADED) > before, "the reload time moved");
    assert!(
        proxy.log().contains("configuration files changed"),
        "{}",
        proxy.log()
    );
    let refused = psql_err(&info, "select 1");
    assert!(refused.contains("no access from"), "{refused}");

    // A broken edit: refused, logged with the key, the v2 configuration keeps serving, and
    // it is not retried until the files change again.
    let broken = config
        .clone()
        .set("listen.allowed_clients", r#"["10.0.0.0/8"]"#)
        .set("listen.max_connections", r#""lots""#)
        .render();
    project(&dir, "2026_01_01_v3", &broken);
    wait_metric(admin, FAILED, 1.0);
    let line = proxy.wait_log(&["reload failed", "max_connections"]);
    assert!(line.contains("max_connections"), "{line}");
    assert!(
        proxy
            .log()
            .contains("still serving with the previous configuration")
    );
    let refused = psql_err(&info, "select 1");
    assert!(refused.contains("no access from"), "{refused}");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        metric(admin, FAILED),
        1.0,
        "a broken file is not reloaded again"
    );
    assert_eq!(metric(admin, OK), 2.0);

    // Fixed, then a conf.d file added beside it.
    project(&dir, "2026_01_01_v4", &text);
    wait_metric(admin, OK, 3.0);
    assert_eq!(psql_ok(&info, "select 1"), "1");
    let conf_d = dir.join("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    std::fs::write(
        conf_d.join("50-restrict.toml"),
        "[listen]\nallowed_clients = [\"10.0.0.0/8\"]\n",
    )
    .unwrap();
    wait_metric(admin, OK, 4.0);
    let refused = psql_err(&info, "select 1");
    assert!(refused.contains("no access from"), "{refused}");
}
