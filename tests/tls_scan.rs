//! The client-facing port as a TLS scanner sees it (sslyze, `--starttls postgres`): no SSL
//! 3.0, TLS 1.0 or 1.1; only forward-secret AEAD suites; no compression; no insecure
//! renegotiation; no known vulnerability; compliant with Mozilla's "intermediate" profile, or
//! "modern" with min_tls_version = "1.3"; in FIPS mode, only FIPS-approved suites and groups.

mod common;

use std::process::Command;

use common::proxy::{Proxy, ProxyConfig, TestPki, toml_path};
use serde_json::Value;

/// Scans `proxy` checking Mozilla's `profile`; returns (compliance problems, if any, and
/// the scan's JSON).
fn scan(proxy: &Proxy, pki: &TestPki, profile: &str) -> (Result<(), String>, Value) {
    let json = pki.dir.path().join(format!("scan-{profile}.json"));
    let out = Command::new("sslyze")
        .args(["--starttls", "postgres", "--mozilla_config", profile])
        .arg("--certinfo_ca_file")
        .arg(&pki.proxy_ca_path)
        .arg("--json_out")
        .arg(&json)
        .arg(proxy.addr.to_string())
        .output()
        .expect("sslyze is installed (scripts/test installs it into target/test-venv)");
    let text = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap_or_default())
        .unwrap_or_else(|e| panic!("no sslyze JSON ({e}): {text}"));
    let verdict = if out.status.success() && text.contains("OK - Compliant") {
        Ok(())
    } else {
        Err(text
            .split("COMPLIANCE AGAINST")
            .nth(1)
            .unwrap_or(&text)
            .to_owned())
    };
    (verdict, report)
}

fn result<'a>(report: &'a Value, scan: &str) -> &'a Value {
    &report["server_scan_results"][0]["scan_result"][scan]["result"]
}

fn accepted(report: &Value, scan: &str) -> Vec<String> {
    result(report, scan)["accepted_cipher_suites"]
        .as_array()
        .unwrap_or_else(|| panic!("no {scan} result"))
        .iter()
        .map(|s| s["cipher_suite"]["name"].as_str().unwrap().to_owned())
        .collect()
}

fn curves(report: &Value) -> Vec<String> {
    result(report, "elliptic_curves")["supported_curves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

/// What every configuration must show.
fn baseline(report: &Value) {
    for old in [
        "ssl_2_0_cipher_suites",
        "ssl_3_0_cipher_suites",
        "tls_1_0_cipher_suites",
        "tls_1_1_cipher_suites",
    ] {
        assert!(accepted(report, old).is_empty(), "{old} accepted");
    }
    for suite in accepted(report, "tls_1_2_cipher_suites") {
        assert!(suite.contains("ECDHE"), "{suite} lacks forward secrecy");
        assert!(
            suite.contains("GCM") || suite.contains("CHACHA20_POLY1305"),
            "{suite} is not AEAD"
        );
    }
    assert_eq!(
        result(report, "tls_compression")["supports_compression"],
        false
    );
    let reneg = result(report, "session_renegotiation");
    assert_eq!(reneg["is_vulnerable_to_client_renegotiation_dos"], false);
    assert_eq!(
        result(report, "heartbleed")["is_vulnerable_to_heartbleed"],
        false
    );
    assert_eq!(
        result(report, "openssl_ccs_injection")["is_vulnerable_to_ccs_injection"],
        false
    );
    let robot = result(report, "robot")["robot_result"].as_str().unwrap();
    assert!(robot.starts_with("NOT_VULNERABLE"), "{robot}");
}

#[test]
fn default_configuration_is_mozilla_intermediate() {
    let pki = TestPki::new();
    let proxy = Proxy::start(&ProxyConfig::new(&pki, common::postgres::free_port()));
    let (compliant, report) = scan(&proxy, &pki, "intermediate");
    if let Err(why) = compliant {
        panic!("not compliant with Mozilla intermediate: {why}");
    }
    baseline(&report);
    assert!(!accepted(&report, "tls_1_2_cipher_suites").is_empty());
    assert_eq!(curves(&report), ["X25519", "secp256r1", "secp384r1"]);
}

#[test]
fn min_tls_1_3_is_mozilla_modern() {
    let pki = TestPki::new();
    let proxy = Proxy::start(
        &ProxyConfig::new(&pki, common::postgres::free_port())
            .set("listen.min_tls_version", "\"1.3\""),
    );
    let (compliant, report) = scan(&proxy, &pki, "modern");
    if let Err(why) = compliant {
        panic!("not compliant with Mozilla modern: {why}");
    }
    baseline(&report);
    assert!(accepted(&report, "tls_1_2_cipher_suites").is_empty());
}

#[test]
fn fips_mode_offers_only_approved_suites_and_groups() {
    let pki = TestPki::new();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fips-provider");
    let conf = String::from_utf8(Command::new(script).output().unwrap().stdout).unwrap();
    let proxy = Proxy::start(
        &ProxyConfig::new(&pki, common::postgres::free_port())
            .set("tls.fips", "\"require\"")
            .set(
                "tls.openssl_config",
                &toml_path(std::path::Path::new(conf.trim())),
            ),
    );
    let (_, report) = scan(&proxy, &pki, "intermediate");
    baseline(&report);
    let approved = [
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
    ];
    for scan_name in ["tls_1_2_cipher_suites", "tls_1_3_cipher_suites"] {
        let suites = accepted(&report, scan_name);
        assert!(!suites.is_empty(), "{scan_name}");
        for suite in suites {
            assert!(
                approved.contains(&suite.as_str()),
                "{suite} is not FIPS-approved"
            );
        }
    }
    for curve in curves(&report) {
        assert!(
            ["secp256r1", "secp384r1", "secp521r1"].contains(&curve.as_str()),
            "{curve} offered in FIPS mode"
        );
    }
}
