//! Layering and origins: defaults, files, conf.d, variables and flags.

use super::*;
use std::io::Write;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

fn overrides(path: &Path) -> Overrides {
    Overrides {
        config_path: Some(path.to_owned()),
        flags: Vec::new(),
    }
}

#[test]
fn later_layers_win_and_origins_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "config.toml",
        "[upstream]\nhost = \"a\"\nport = 1\n[listen]\nmax_connections = 5\n",
    );
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    write(
        &dir.path().join("conf.d"),
        "20-b.toml",
        "[upstream]\nhost = \"c\"\n",
    );
    write(
        &dir.path().join("conf.d"),
        "10-a.toml",
        "[upstream]\nhost = \"b\"\nport = 2\n",
    );
    write(&dir.path().join("conf.d"), "ignored.conf", "nonsense");
    let mut o = overrides(&main);
    o.flags.push((
        "--upstream-port".into(),
        "upstream.port".into(),
        FlagValue::One("4".into()),
    ));
    let env = vec![
        ("PGT_PROXY__UPSTREAM__PORT".to_owned(), "3".to_owned()),
        (
            "PGT_PROXY__LISTEN__ADDRESSES".to_owned(),
            "127.0.0.1:1, [::1]:2".to_owned(),
        ),
        ("UNRELATED".to_owned(), "x".to_owned()),
    ];
    let loaded = load(&o, env).unwrap();
    assert_eq!(loaded.raw.upstream.host.as_deref(), Some("c"));
    assert_eq!(loaded.raw.upstream.port, 4);
    assert_eq!(loaded.raw.listen.max_connections, 5);
    assert_eq!(loaded.raw.listen.addresses, vec!["127.0.0.1:1", "[::1]:2"]);
    assert_eq!(
        loaded.origin("upstream.host"),
        Origin::File(dir.path().join("conf.d/20-b.toml"))
    );
    assert_eq!(
        loaded.origin("upstream.port"),
        Origin::Flag("--upstream-port".into())
    );
    assert_eq!(
        loaded.origin("listen.addresses"),
        Origin::Env("PGT_PROXY__LISTEN__ADDRESSES".into())
    );
    assert_eq!(loaded.origin("listen.direct_tls"), Origin::Default);
    assert_eq!(loaded.files.len(), 3);
}

#[test]
fn every_error_names_origin_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "config.toml",
        "[listen]\nmax_conections = 5\nhandshake_timeout = \"ten seconds\"\n[upstrem]\nhost = \"x\"\n",
    );
    let env = vec![
        ("PGT_PROXY__UPSTREAM__PORT".to_owned(), "99999".to_owned()),
        ("PGT_PROXY__LOG__FORMAT".to_owned(), "xml".to_owned()),
    ];
    let errors = load(&overrides(&main), env).unwrap_err();
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let find = |needle: &str| {
        text.iter()
            .find(|t| t.contains(needle))
            .unwrap_or_else(|| panic!("no error about {needle} in {text:#?}"))
            .clone()
    };
    assert!(find("listen.max_conections").contains("unknown field"));
    assert!(find("listen.handshake_timeout").contains("config.toml"));
    assert!(find("upstrem.host").contains("unknown field"));
    assert!(find("PGT_PROXY__UPSTREAM__PORT").contains("upstream.port"));
    assert!(find("PGT_PROXY__LOG__FORMAT").contains("xml"));
    assert_eq!(text.len(), 5, "{text:#?}");
}

#[test]
fn missing_explicit_file_and_bad_toml_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let errors = load(&overrides(&dir.path().join("absent.toml")), vec![]).unwrap_err();
    assert!(errors[0].to_string().contains("absent.toml: cannot read"));
    let bad = write(dir.path(), "bad.toml", "[listen\n");
    let errors = load(&overrides(&bad), vec![]).unwrap_err();
    assert!(
        errors[0].to_string().contains("not valid TOML"),
        "{errors:?}"
    );
}
