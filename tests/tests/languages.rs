//! Filters in Python (componentize-py) and JavaScript (jco / ComponentizeJS),
//! built as their authors build them (`scripts/build-filters.sh`), in a real
//! node writing to a real broker: they give the Rust filters' verdicts, and
//! hostile guests are contained. A component importing what Weir does not
//! provide is refused, naming the import. The nodes share a compiled-filter
//! cache, so each component is compiled once per build of the engine.

use std::collections::BTreeMap;
use std::sync::Arc;
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

/// Two events for tenant `hostile`, the first saying what the hostile
/// fixture is to try (`mode`).
async fn post_hostile(node: &Node, category: &str, mode: &str) -> weir_e2e::Answer {
    let body = json!({"meta": {"category": category}, "data": [
        {"id": format!("{mode}-1"), "mode": mode},
        {"id": format!("{mode}-2")}
    ]});
    post(node, "hostile", body.to_string()).await.unwrap()
}

/// Posts `events` as each of two tenants (key, category): both are answered
/// 200 with the same part for every event; returns those parts.
async fn equal_answers(
    node: &Node,
    events: &Value,
    tenants: [(&str, &str); 2],
) -> Vec<(String, String)> {
    let mut answers = Vec::new();
    for (key, category) in tenants {
        let body = json!({"meta": {"category": category}, "data": events});
        let answer = post(node, key, body.to_string()).await.unwrap();
        assert_eq!(answer.status, 200, "{key}: {}", answer.json());
        answers.push(outcomes(&answer.json()));
    }
    assert_eq!(answers[0], answers[1]);
    answers.swap_remove(1)
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
    equal_answers(
        &node,
        &events,
        [("rust", &rust_category), ("python", &python_category)],
    )
    .await;
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
    let post_mode = |mode: &'static str| post_hostile(&node, &category, mode);
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
    // `constructor` is a name every JavaScript object inherits: only an own
    // key counts as present.
    let config = r#"{"fields": ["user", "props.session", "props.constructor"]}"#;
    let rust = filter_wasm("require_fields").display().to_string();
    let js = js_filter("require_fields").display().to_string();
    let node = start(&format!(
        "{}{}",
        tenant("rust", &rust, config, "fail-closed"),
        tenant("js", &js, config, "fail-closed")
    ));
    let events = json!([
        {"id": "full", "user": "u1", "props": {"session": "s1", "constructor": "c"}},
        {"id": "null-user", "user": null, "props": {"session": "s1", "constructor": "c"}},
        {"id": "no-session", "user": "u2", "props": {"constructor": "c"}},
        {"id": "props-not-object", "user": "u3", "props": [1]},
        {"id": "falsy-but-present", "user": 0, "props": {"session": false, "constructor": 0}},
        {"id": "inherited-name-only", "user": "u4", "props": {"session": "s1"}}
    ]);
    let answers = equal_answers(
        &node,
        &events,
        [("rust", &rust_category), ("js", &js_category)],
    )
    .await;
    assert_eq!(
        answers.iter().filter(|(code, _)| code == "ok").count(),
        2,
        "{answers:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_javascript_guests_are_contained_and_their_console_is_log_lines() {
    let category = category("jshostile", 1).await;
    let hostile = js_filter("hostile_js").display().to_string();
    let node = start(&tenant("hostile", &hostile, "", "fail-closed"));
    let post_mode = |mode: &'static str| post_hostile(&node, &category, mode);
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

/// A tiny HTTP server of files, for remote filter sources: `GET /<name>`
/// answers the file's bytes; it counts the requests it answered.
struct FileServer {
    address: String,
    served: Arc<std::sync::atomic::AtomicUsize>,
}

impl FileServer {
    fn start(files: Vec<(&'static str, Vec<u8>)>) -> FileServer {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = served.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                let _ = reader.read_line(&mut request);
                // The rest of the request head.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let mut stream = stream;
                match files.iter().find(|(name, _)| path == format!("/{name}")) {
                    Some((_, body)) => {
                        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/wasm\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = stream.write_all(body);
                    }
                    None => {
                        let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    }
                }
            }
        });
        FileServer { address, served }
    }
}

/// Posts a bot's event as tenant acme (answered 200), then reads `/readyz`
/// on the admin listener.
async fn post_bot(node: &Node, category: &str) -> Value {
    let body =
        json!({"meta": {"category": category}, "data": [{"id": "b", "ua": "Googlebot/2.1"}]});
    let answer = post(node, "acme", body.to_string()).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.json());
    weir_e2e::get(node.admin.as_deref().unwrap(), "/readyz")
        .await
        .unwrap()
        .json()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_filter_fetched_by_url_is_checked_kept_and_never_replaced_by_a_bad_source() {
    let category = category("remote", 1).await;
    let tag_bots = std::fs::read(filter_wasm("tag_bots")).unwrap();
    let pass = std::fs::read(filter_wasm("pass_through")).unwrap();
    let (tag_hash, pass_hash) = (sha256_hex(&tag_bots), sha256_hex(&pass));
    let server = FileServer::start(vec![
        ("tag_bots.wasm", tag_bots),
        ("pass_through.wasm", pass),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let cache_path = cache.path().display().to_string();
    let tenant_with = |url: &str, sha256: &str| {
        weir_e2e::tenant(
            "acme",
            "acme",
            &format!("[[tenants.filters]]\nurl = \"{url}\"\nsha256 = \"{sha256}\"\nconfig = '{{\"field\": \"ua\", \"action\": \"tag\"}}'\n"),
        )
    };
    let good = format!("http://{}/tag_bots.wasm", server.address);
    let node = Node::start(
        &tenant_with(&good, &tag_hash),
        &[
            ("WEIR_KAFKA_BROKERS", kafka()),
            ("WEIR_FILTER_CACHE", &cache_path),
        ],
    )
    .unwrap();
    assert_eq!(server.served.load(std::sync::atomic::Ordering::Relaxed), 1);
    // Kept by its hash, beside the compiled filters.
    assert!(cache
        .path()
        .join("sources")
        .join(format!("{tag_hash}.wasm"))
        .is_file());
    let reload = |config: String| {
        let node = &node;
        async move {
            std::fs::write(&node.config_path, config).unwrap();
            let request = http::Request::post("/admin/reload")
                .header("host", "localhost")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            weir_e2e::send(
                &weir_e2e::Transport::Http,
                node.admin.as_deref().unwrap(),
                request,
            )
            .await
            .unwrap()
        }
    };
    let ready = post_bot(&node, &category).await;
    assert!(ready.get("filter_errors").is_none(), "{ready}");

    // A wrong hash: the version in use stays, /readyz says why.
    let answer = reload(tenant_with(&good, &pass_hash)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let ready = post_bot(&node, &category).await;
    let errors = ready["filter_errors"].to_string();
    assert!(
        errors.contains(&good) && errors.contains("not the configured"),
        "{ready}"
    );
    // An unreachable URL: the same.
    let gone = format!(
        "http://127.0.0.1:{}/pass_through.wasm",
        weir_e2e::free_port()
    );
    let answer = reload(tenant_with(&gone, &pass_hash)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let ready = post_bot(&node, &category).await;
    assert!(
        ready["filter_errors"].to_string().contains("fetching"),
        "{ready}"
    );
    // The events were still tagged by the version in use.
    let records = consume(kafka(), &format!("events.{category}"), 3).unwrap();
    assert!(records.iter().all(|r| r.value["data"]["is_bot"] == true));

    // A new good source replaces it.
    let pass_url = format!("http://{}/pass_through.wasm", server.address);
    let answer = reload(tenant_with(&pass_url, &pass_hash)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let ready = post_bot(&node, &category).await;
    assert!(ready.get("filter_errors").is_none(), "{ready}");
    let records = consume(kafka(), &format!("events.{category}"), 4).unwrap();
    assert!(
        records[3].value["data"].get("is_bot").is_none(),
        "{:?}",
        records[3].value
    );

    // Another node with the same cache starts from the kept file: no fetch.
    let fetched = server.served.load(std::sync::atomic::Ordering::Relaxed);
    let again = Node::start(
        &tenant_with(&pass_url, &pass_hash),
        &[
            ("WEIR_KAFKA_BROKERS", kafka()),
            ("WEIR_FILTER_CACHE", &cache_path),
        ],
    )
    .unwrap();
    assert_eq!(
        server.served.load(std::sync::atomic::Ordering::Relaxed),
        fetched
    );
    let ready = post_bot(&again, &category).await;
    assert!(ready.get("filter_errors").is_none(), "{ready}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_reaching_wasi_files_sockets_lookups_environment_and_http_is_denied() {
    let category = category("wasi", 1).await;
    let path = weir_e2e::built_component("target/wasm32-wasip2/release", "hostile_wasi");
    let node = start(&tenant(
        "hostile",
        &path.display().to_string(),
        "",
        "fail-closed",
    ));
    // A port that would take a connection, counting what it accepts.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    for (mode, denied) in [
        ("file", "denied: No such file or directory"),
        ("socket", "denied: Permission denied"),
        ("lookup", "denied: "),
        ("env", "env 0"),
        // wasi:http's outgoing handler (what ComponentizeJS's fetch uses).
        ("http", "denied: ErrorCode::HttpRequestDenied"),
    ] {
        let body = json!({"meta": {"category": category}, "data": [
            {"id": format!("{mode}-1"), "mode": mode, "port": port.to_string()}
        ]});
        let answer = post(&node, "hostile", body.to_string()).await.unwrap();
        let json = answer.json();
        let parts = outcomes(&json);
        assert_eq!(parts.len(), 1, "{json}");
        let (code, message) = &parts[0];
        assert_eq!(code, "filtered", "{mode}: {json}");
        let got = message.strip_prefix("hostile_wasi: ").unwrap_or(message);
        assert!(got.starts_with(denied), "{mode}: {got}");
    }
    assert!(
        listener.accept().is_err(),
        "the guest reached the test's port"
    );
}

/// Each record's client id and its `data` text exactly as the node wrote
/// it to `events.{category}` (the parsed value would hide a change of
/// number spelling, key order or a repeated key).
fn data_texts(category: &str, count: usize) -> BTreeMap<String, String> {
    consume(kafka(), &format!("events.{category}"), count)
        .unwrap()
        .iter()
        .map(|record| {
            let data = sonic_rs::get(record.raw.as_slice(), &["data"]).unwrap();
            (id_of(&record.raw), data.as_raw_str().to_owned())
        })
        .collect()
}

/// The `id` of a JSON object.
fn id_of(json: &[u8]) -> String {
    use sonic_rs::JsonValueTrait;
    let id = sonic_rs::get(json, &["id"]).unwrap();
    id.as_str().unwrap().to_owned()
}

/// The TypeScript port of redact-pii (filters/js/redact-pii) cannot be told
/// from the Rust filter: the same answers, the same record bytes and the
/// same count of masks, scanning every string and named fields. (Escaped
/// lone surrogates, which both filters mask whole, cannot be sent: the
/// node refuses such a batch before any filter.)
#[tokio::test(flavor = "multi_thread")]
async fn typescript_redact_pii_gives_the_rust_filters_answers_records_and_counts() {
    let rust = filter_wasm("redact_pii").display().to_string();
    let ts = js_filter("redact_pii").display().to_string();
    // Every string value scanned, and named fields with a mask of their own.
    let configs = [
        ("all", "{}"),
        (
            "fields",
            r#"{"fields": ["email", "props.phone", "props.email", "list"], "mask": "[redacted]"}"#,
        ),
    ];
    let mut config = String::new();
    // A category per tenant, created before the node starts (as an operator would).
    let mut categories = BTreeMap::new();
    for (name, filter_config) in configs {
        for (language, path) in [("rust", &rust), ("ts", &ts)] {
            let key = format!("{language}{name}");
            config += &tenant(&key, path, filter_config, "fail-closed");
            categories.insert(key.clone(), category(&format!("pii{key}"), 1).await);
        }
    }
    let node = start(&config);
    // Written as text: repeated keys, escapes, number spellings and spacing
    // must come out as they went in wherever nothing is masked.
    let long_run = "1 ".repeat(2048) + "1x";
    let events = [
        r#"{"id":"clean","page":"/home","n":1.50,"ok":true,"tags":["a","b"]}"#.to_owned(),
        r#"{"id":"email","email":"ann@example.com","note":"write to bob.lee+tag@mail.example.org, please."}"#.to_owned(),
        r#"{"id":"phones","props":{"phone":"+44 20 7946 0958","alt":"(555) 123-4567","note":"call 0466-12-3456 or 1.415.555.0123"}}"#.to_owned(),
        r#"{"id":"addresses","note":"from 81.2.69.142:443 and 10.0.0.1.","version":"10.0.19045.3803","bad":"999.1.1.1 01.2.3.4"}"#.to_owned(),
        r#"{"id":"lookalikes","order":"order-20240115","date":"2024-01-15 10:30:00","ver":"1.2.3","uuid":"12345678-ab12-cd34","short":"12345","at":"a@b and @home, x@.com"}"#.to_owned(),
        r#"{"id":"unicode","email":"josé@bücher.de","note":"Müller, tel. +49 30 1234567 ✓","emoji":"😀 555-123-4567 😀","glued":"é1234567 ٣1234567 1234567ⅷ"}"#.to_owned(),
        r#"{ "id" : "escapes", "email":"ann\u0040example.com", "email" : "none", "big":12345678901234567890123,"f":1E5,
            "esc":"caf\u00e9 \/ \"q\" \ud83d\ude00 555-123-4567\n","list":[1.50,{"deep":"x@y.io","ann@example.com":"the key stays"}]}"#.to_owned(),
        r#"{"id":"dotted","props.email":"top@example.com","props":{"email":"nested@example.com","phone":"555 123 4567","keep":"k@example.com"},"props":{"email":"again@example.com"}}"#.to_owned(),
        // Control characters in a masked string: escaped as serde_json does.
        r#"{"id":"controls","email":"\u0001\u001f\u007f ann@x.io\t\u2028","note":"\b\f 81.2.69.142"}"#.to_owned(),
        format!(r#"{{"id":"long-run","note":"{long_run}","email":"{long_run}"}}"#),
    ];
    let sent: BTreeMap<String, String> = events
        .iter()
        .map(|e| (id_of(e.as_bytes()), e.clone()))
        .collect();
    for (name, _) in configs {
        let mut seen = Vec::new();
        for language in ["rust", "ts"] {
            let key = format!("{language}{name}");
            let category = &categories[&key];
            let body = format!(
                r#"{{"meta":{{"category":"{category}"}},"data":[{}]}}"#,
                events.join(",")
            );
            let answer = post(&node, &key, body).await.unwrap();
            assert_eq!(answer.status, 200, "{key}: {}", answer.json());
            let answers = outcomes(&answer.json());
            let kept = answers.iter().filter(|(code, _)| code == "ok").count();
            seen.push((answers, data_texts(category, kept)));
        }
        let (rust_answers, rust_records) = &seen[0];
        let (ts_answers, ts_records) = &seen[1];
        assert_eq!(rust_answers, ts_answers, "{name}: answers");
        for (id, text) in rust_records {
            assert_eq!(
                Some(text),
                ts_records.get(id),
                "{name}: the record of {id} (sent {})",
                sent[id]
            );
        }
        assert_eq!(rust_records.len(), ts_records.len(), "{name}: records");
        // What was compared: some events masked, some as sent.
        let masked = rust_records
            .iter()
            .filter(|(id, t)| sent[*id] != **t)
            .count();
        assert!(
            0 < masked && masked < rust_records.len(),
            "{name}: {masked} of {} masked: {rust_records:#?}",
            rust_records.len()
        );
    }
    // The guest's counter of masks, per tenant.
    let samples = weir_e2e::metrics(node.admin.as_deref().unwrap()).await;
    let masks = |tenant: &str| {
        weir_e2e::scrape::sum(
            &samples,
            "weir_filter_guest_counter_total",
            &[("tenant", tenant), ("name", "masked")],
        )
    };
    for (name, _) in configs {
        let (rust, ts) = (masks(&format!("rust{name}")), masks(&format!("ts{name}")));
        assert!(
            rust > 0.0 && rust == ts,
            "{name}: {rust} masks in Rust, {ts} in TypeScript"
        );
    }
}
