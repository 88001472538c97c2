//! The README's first command (`scripts/run-node.sh`) really starts a node in
//! front of the embedded broker, takes a batch, and `weir tail` reads it back.

use std::process::Command;

use serde_json::json;
use weir_e2e::{fixture, post, root, weir_bin, Node};

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_run_command_serves_a_batch_on_the_embedded_broker() {
    let mut command = Command::new(root().join("scripts/run-node.sh"));
    command
        // The same script and config as the README; a debug build (the test
        // run already built it), the MaxMind test database instead of the
        // 100 MB download, and ephemeral ports.
        .env("WEIR_PROFILE", "debug")
        .env("WEIR_GEOIP_PATH", fixture("GeoIP2-City-Test.mmdb"))
        .env("WEIR_LISTEN", "127.0.0.1:0")
        .env("WEIR_TLS_LISTEN", "127.0.0.1:0")
        .env("WEIR_ADMIN_LISTEN", "127.0.0.1:0")
        .env("WEIR_LOG_FORMAT", "json")
        .env_remove("WEIR_KAFKA_BROKERS")
        .env_remove("WEIR_CONFIG");
    let node = Node::spawn(command, tempfile::tempdir().unwrap()).unwrap();
    assert!(
        node.log_text().contains("NO KAFKA CONFIGURED"),
        "the embedded broker is announced loudly"
    );

    let body = json!({"meta": {"category": "PERF_CRASH", "device_id": "d-42"},
                      "data": [{"id": "ev-1", "ip": "81.2.69.142"}, {"id": "ev-2"}]});
    let answer = post(&node, "demo-key", body.to_string()).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.json());

    // `weir tail` reads the embedded broker from another process.
    let output = Command::new(weir_bin())
        .args([
            "tail",
            "--brokers",
            &node.kafka,
            "--topic",
            "events.PERF_CRASH",
            "--max",
            "2",
            "--idle-ms",
            "10000",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["topic"], "events.PERF_CRASH");
        assert_eq!(line["key"], "demo:d-42");
        assert_eq!(line["offset"], i as i64);
        let headers: Vec<&str> = line["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h[0].as_str().unwrap())
            .collect();
        assert_eq!(
            headers,
            [
                "traceparent",
                "weir-node",
                "x-request-id",
                "weir-tenant",
                "content-type"
            ]
        );
        let value: serde_json::Value =
            serde_json::from_str(line["value"].as_str().unwrap()).unwrap();
        assert_eq!(value["id"], format!("ev-{}", i + 1));
    }
    let first: serde_json::Value =
        serde_json::from_str(lines[0]["value"].as_str().unwrap()).unwrap();
    assert_eq!(first["geo"]["city"], "London");
}

/// A clean stop in front of the embedded broker logs no error: the node
/// lets its producer go before the broker it writes to (before, librdkafka
/// logged `AllBrokersDown` and failed connects after "producer flushed; bye").
#[tokio::test(flavor = "multi_thread")]
async fn a_clean_stop_logs_no_error() {
    let config = format!(
        "[[tenants]]\nname = \"acme\"\nkeys_sha256 = [\"{}\"]\ncategories = [\"stop\"]\n",
        weir_e2e::key_hash("k")
    );
    let mut node = Node::start(&config, &[]).unwrap();
    let body = json!({"meta": {"category": "stop"}, "data": [{"id": "ev-1"}]});
    let answer = post(&node, "k", body.to_string()).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.json());
    let status = node.terminate().unwrap();
    assert!(status.success(), "{status}");
    let logs = node.log_text();
    assert!(logs.contains("producer flushed; bye"), "{logs}");
    let errors: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains(r#""level":"ERROR""#))
        .collect();
    assert!(
        errors.is_empty(),
        "error lines at a clean stop: {errors:#?}"
    );
}
