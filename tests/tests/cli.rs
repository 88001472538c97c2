//! The `weir` command line: configuration checks an operator runs before
//! deploying, and start-up refusals that name what is wrong.

use std::process::Command;

use weir_e2e::{fixture, key_hash, tenant, weir_bin};

fn weir(args: &[&str], config: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(weir_bin());
    command.arg("--config").arg(&path).args(args);
    for var in [
        "WEIR_LISTEN",
        "WEIR_TLS_LISTEN",
        "WEIR_ADMIN_LISTEN",
        "WEIR_KAFKA_BROKERS",
        "WEIR_GEOIP_PATH",
    ] {
        command.env_remove(var);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn check_config_accepts_a_good_file_and_names_the_key_of_a_bad_one() {
    let good = tenant("acme", "k", "");
    let (ok, text) = weir(&["check-config"], &good, &[]);
    assert!(ok, "{text}");
    assert!(
        text.contains("config OK: 1 tenant(s), kafka embedded (not durable)"),
        "{text}"
    );

    let (ok, text) = weir(
        &["check-config"],
        &good,
        &[("WEIR_KAFKA_BROKERS", "k1:9092,k2:9092")],
    );
    assert!(ok && text.contains("kafka k1:9092,k2:9092"), "{text}");

    for (config, env, expected) in [
        (
            "[[tenants]]\nname = \"acme\"\nkeys_sha256 = [\"secret\"]\n",
            vec![],
            "tenants[0].keys_sha256[0]: must be 64 hex digits",
        ),
        (
            "[server]\nlisten = 8080\n",
            vec![],
            "invalid type: integer `8080`, expected a string",
        ),
        (
            "[kafka]\nbrokres = \"x\"\n",
            vec![],
            "unknown field `brokres`",
        ),
        (
            "",
            vec![("WEIR_ADMIN_LISTEN", "localhost")],
            "server.admin_listen: 'localhost' is not an address such as 127.0.0.1:8080",
        ),
    ] {
        let (ok, text) = weir(&["check-config"], config, &env);
        assert!(!ok, "accepted: {config}");
        assert!(text.contains(expected), "{expected} not in: {text}");
    }
}

#[test]
fn serve_refuses_a_geoip_database_of_another_layout() {
    let asn = fixture("GeoLite2-ASN-Test.mmdb");
    let (ok, text) = weir(
        &["serve"],
        "",
        &[
            ("WEIR_GEOIP_PATH", asn.to_str().unwrap()),
            ("WEIR_LISTEN", "127.0.0.1:0"),
            ("WEIR_TLS_LISTEN", ""),
            ("WEIR_ADMIN_LISTEN", ""),
        ],
    );
    assert!(!ok);
    assert!(
        text.contains("layout 'GeoLite2-ASN' is not supported"),
        "{text}"
    );
}

#[test]
fn hash_key_prints_what_keys_sha256_takes() {
    let output = Command::new(weir_bin())
        .args(["hash-key", "demo-key"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        key_hash("demo-key")
    );
}
