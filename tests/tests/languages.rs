//! Filters in Python (componentize-py) and JavaScript (jco / ComponentizeJS),
//! built as their authors build them (`scripts/build-filters.sh`), in a real
//! node writing to a real broker: they give the Rust filters' verdicts, and
//! hostile guests are contained. A component importing what Weir does not
//! provide is refused, naming the import. The nodes share a compiled-filter
//! cache, so each component is compiled once per build of the engine.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use weir_e2e::{
    category, consume, filter_cache, filter_wasm, js_filter, kafka, outcomes, post, python_filter,
    weir_bin, Node,
};

/// A tenant whose chain is the one filter at `path` with `config`.
fn tenant(name: &str, path: &str, config: &str, on_error: &str) -> String {
    weir_e2e::tenant(
        name,
        name,
        &format!(
            "[[tenants.filters]]\npath = \"{path}\"\nconfig = '{config}'\non_error = \"{on_error}\"\ntimeout_ms = 1000\nmemory_mb = 128\n"
        ),
    )
}

fn start(config: &str) -> Node {
    Node::start(
        config,
        &[
            ("WEIR_KAFKA_BROKERS", kafka()),
            ("WEIR_FILTER_CACHE", &filter_cache()),
        ],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn python_tag_bots_gives_the_rust_filters_verdicts() {
    let (rust_category, python_category) = (category("pyrs", 1).await, category("pypy", 1).await);
    let config = r#"{"field": "ua", "action": "tag"}"#;
    let rust = filter_wasm("tag_bots").display().to_string();
    let python = python_filter("tag_bots").display().to_string();
    let node = start(&format!(
        "{}{}",
        tenant("rust", &rust, config, "fail-closed"),
        tenant("python", &python, config, "fail-closed")
    ));
    let events = json!([
        {"id": "human", "ua": "Mozilla/5.0 (X11; Linux x86_64)", "n": 1},
        {"id": "google", "ua": "Googlebot/2.1 (+http://www.google.com/bot.html)", "nested": {"a": [1, 2]}},
        {"id": "curl", "ua": "curl/8.5.0"},
        {"id": "no-agent", "page": "/"},
        {"id": "agent-not-text", "ua": 42},
        {"id": "unicode", "ua": "Spïder-Crawler ✓", "note": "héllo"}
    ]);
    let mut answers = Vec::new();
    for (key, category) in [("rust", &rust_category), ("python", &python_category)] {
        let body = json!({"meta": {"category": category}, "data": events});
        let answer = post(&node, key, body.to_string()).await.unwrap();
        assert_eq!(answer.status, 200, "{key}: {}", answer.json());
        answers.push(outcomes(&answer.json()));
    }
    assert_eq!(answers[0], answers[1]);
    // The records: the same bodies (as JSON values; the text may differ).
    let records = |category: &str| -> BTreeMap<String, Value> {
        consume(kafka(), &format!("events.{category}"), 6)
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    r.value["id"].as_str().unwrap().to_owned(),
                    r.value["data"].clone(),
                )
            })
            .collect()
    };
    let (from_rust, from_python) = (records(&rust_category), records(&python_category));
    assert_eq!(from_rust, from_python);
    assert_eq!(from_python["google"]["is_bot"], true);
    assert_eq!(from_python["unicode"]["is_bot"], true);
    assert!(from_python["human"].get("is_bot").is_none());
    // The guest's counter reached the node's metrics.
    let samples = weir_e2e::metrics(node.admin.as_deref().unwrap()).await;
    let bots = |tenant| {
        weir_e2e::scrape::sum(
            &samples,
            "weir_filter_guest_counter_total",
            &[("tenant", tenant), ("name", "bots")],
        )
    };
    assert_eq!((bots("rust"), bots("python")), (3.0, 3.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_python_guests_are_contained_and_their_prints_are_log_lines() {
    let category = category("pyhostile", 1).await;
    let hostile = python_filter("hostile_python").display().to_string();
    let rust = filter_wasm("pass_through").display().to_string();
    let node = start(&format!(
        "{}{}",
        tenant("hostile", &hostile, "", "fail-closed"),
        tenant("calm", &rust, "", "fail-closed")
    ));
    let post_mode = |mode: &'static str| {
        let node = &node;
        let category = category.clone();
        async move {
            let body = json!({"meta": {"category": category}, "data": [
                {"id": format!("{mode}-1"), "mode": mode},
                {"id": format!("{mode}-2")}
            ]});
            post(node, "hostile", body.to_string()).await.unwrap()
        }
    };
    // What the sandbox denies, as the guest saw it: no file system, no
    // environment, no sockets.
    for (mode, seen) in [
        ("file", "denied: FileNotFoundError"),
        ("env", "env []"),
        ("socket", "denied: "),
    ] {
        let answer = post_mode(mode).await;
        let json = answer.json();
        let parts = outcomes(&json);
        assert_eq!(parts.len(), 2, "{json}");
        for (code, message) in parts {
            assert_eq!(code, "filtered", "{mode}: {json}");
            // The reason is the filter's, after its name.
            let reason = message.strip_prefix("hostile_python: ").unwrap_or(&message);
            assert!(reason.starts_with(seen), "{mode}: {message}");
            assert!(!message.contains("root:"), "{mode}: {message}");
        }
    }
    // An endless loop and a memory bomb: stopped, the tenant's policy
    // (fail-closed) answers, and the node goes on.
    for (mode, why) in [("loop", "CPU deadline"), ("memory", "memory cap")] {
        let started = Instant::now();
        let answer = post_mode(mode).await;
        let json = answer.json();
        assert_eq!(answer.status, 503, "{mode}: {json}");
        for part in json["parts"].as_array().unwrap() {
            assert_eq!(part["code"], "filter_error", "{mode}: {json}");
            assert_eq!(part["retryable"], true);
            assert!(
                part["message"].as_str().unwrap().contains(why),
                "{mode}: {json}"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    // A calm tenant's Rust filter still answers.
    let calm = json!({"meta": {"category": category}, "data": [{"id": "calm"}]});
    assert_eq!(
        post(&node, "calm", calm.to_string()).await.unwrap().status,
        200
    );
    // print() and stderr become log lines tagged with the filter and tenant.
    let answer = post_mode("print").await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    let logs = node.log_text();
    let line = logs
        .lines()
        .find(|l| l.contains("hello from python: print-1"))
        .unwrap_or_else(|| panic!("no guest print in the log:\n{logs}"));
    let line: Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["tenant"], "hostile");
    assert_eq!(line["filter"], "hostile_python");
    assert_eq!(line["guest_level"], "info");
    assert!(logs.contains("to stderr"));
}

#[tokio::test(flavor = "multi_thread")]
async fn javascript_require_fields_gives_the_rust_filters_verdicts() {
    let (rust_category, js_category) = (category("jsrs", 1).await, category("jsjs", 1).await);
    let config = r#"{"fields": ["user", "props.session"]}"#;
    let rust = filter_wasm("require_fields").display().to_string();
    let js = js_filter("require_fields").display().to_string();
    let node = start(&format!(
        "{}{}",
        tenant("rust", &rust, config, "fail-closed"),
        tenant("js", &js, config, "fail-closed")
    ));
    let events = json!([
        {"id": "full", "user": "u1", "props": {"session": "s1"}},
        {"id": "null-user", "user": null, "props": {"session": "s1"}},
        {"id": "no-session", "user": "u2", "props": {}},
        {"id": "props-not-object", "user": "u3", "props": [1]},
        {"id": "falsy-but-present", "user": 0, "props": {"session": false}}
    ]);
    let mut answers = Vec::new();
    for (key, category) in [("rust", &rust_category), ("js", &js_category)] {
        let body = json!({"meta": {"category": category}, "data": events});
        let answer = post(&node, key, body.to_string()).await.unwrap();
        assert_eq!(answer.status, 200, "{key}: {}", answer.json());
        answers.push(outcomes(&answer.json()));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(
        answers[1].iter().filter(|(code, _)| code == "ok").count(),
        2,
        "{:?}",
        answers[1]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_javascript_guests_are_contained_and_their_console_is_log_lines() {
    let category = category("jshostile", 1).await;
    let hostile = js_filter("hostile_js").display().to_string();
    let node = start(&tenant("hostile", &hostile, "", "fail-closed"));
    let post_mode = |mode: &'static str| {
        let node = &node;
        let category = category.clone();
        async move {
            let body = json!({"meta": {"category": category}, "data": [
                {"id": format!("{mode}-1"), "mode": mode},
                {"id": format!("{mode}-2")}
            ]});
            post(node, "hostile", body.to_string()).await.unwrap()
        }
    };
    let env = post_mode("env").await.json();
    for (code, message) in outcomes(&env) {
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("filtered", "hostile_js: env {}")
        );
    }
    for (mode, why) in [("loop", "CPU deadline"), ("memory", "memory cap")] {
        let answer = post_mode(mode).await;
        let json = answer.json();
        assert_eq!(answer.status, 503, "{mode}: {json}");
        for part in json["parts"].as_array().unwrap() {
            assert_eq!(part["code"], "filter_error", "{mode}: {json}");
            assert!(
                part["message"].as_str().unwrap().contains(why),
                "{mode}: {json}"
            );
        }
    }
    let answer = post_mode("print").await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    let logs = node.log_text();
    let line = logs
        .lines()
        .find(|l| l.contains("hello from javascript: print-1"))
        .unwrap_or_else(|| panic!("no console.log in the log:\n{logs}"));
    let line: Value = serde_json::from_str(line).unwrap();
    assert_eq!(
        (&line["tenant"], &line["filter"]),
        (&json!("hostile"), &json!("hostile_js"))
    );
    assert!(logs.contains("to stderr"));
}

#[test]
fn a_component_importing_what_weir_does_not_provide_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    let extra = filter_wasm("extra_import").display().to_string();
    std::fs::write(&config, tenant("acme", &extra, "", "fail-closed")).unwrap();
    let out = std::process::Command::new(weir_bin())
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tenant 'acme'")
            && stderr
                .contains("it imports `weir:filter/secrets@0.1.0`, which Weir does not provide"),
        "{stderr}"
    );
}
