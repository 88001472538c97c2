//! A client posts batches to a real `weir` node in front of a real tansu
//! broker; every accepted event is read back from Kafka.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use serde_json::{json, Value};
use weir_e2e::{
    batch_request, category, consume, contract, fixture, get, kafka, outcomes, post, send, tenant,
    unique, Node, TestCerts, Transport,
};

const KEY: &str = "e2e-secret-key";
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// A node on tansu with one tenant `acme` allowed `categories`, plus extra TOML.
fn node_with(categories: &[&str], extra_tenant: &str, extra: &str, env: &[(&str, &str)]) -> Node {
    let categories: Vec<String> = categories.iter().map(|c| format!("\"{c}\"")).collect();
    let acme = tenant(
        "acme",
        KEY,
        &format!("categories = [{}]\n{extra_tenant}", categories.join(", ")),
    );
    let config = format!("{extra}\n{acme}");
    let geoip = fixture("GeoIP2-City-Test.mmdb");
    let mut all_env = vec![
        ("WEIR_KAFKA_BROKERS", kafka()),
        ("WEIR_GEOIP_PATH", geoip.to_str().unwrap_or_default()),
    ];
    all_env.extend_from_slice(env);
    Node::start(&config, &all_env).expect("node starts")
}

fn start(categories: &[&str]) -> Node {
    node_with(categories, "", "", &[])
}

fn parts(answer: &Value) -> &Vec<Value> {
    answer["parts"].as_array().expect("parts array")
}

#[tokio::test(flavor = "multi_thread")]
async fn events_land_in_kafka_enriched_with_the_clients_trace() {
    let category = category("cat", 4).await;
    let node = start(&[&category]);
    let body = json!({
        "meta": {"category": category, "device_id": "d-42", "app": "shop-ios"},
        "data": [
            {"id": "ev-1", "ts": 1763780000000u64, "ip": "81.2.69.142", "props": {"cold": true}},
            {"id": "ev-2", "ip": "2001:480:10::1", "name": "tap"},
            {"id": "ev-3", "name": "no ip: the client address"}
        ]
    });
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let request = batch_request(
        Some(KEY),
        body.to_string(),
        &[
            ("traceparent", &traceparent),
            ("tracestate", "vendor=abc"),
            ("x-request-id", "req-e2e-1"),
        ],
    );
    let answer = send(&Transport::Http, &node.http, request).await.unwrap();
    let json = answer.json();
    assert_eq!(answer.status, 200, "{json}");
    assert_eq!(answer.header("x-request-id"), Some("req-e2e-1"));
    contract::check_answer("post", "/v1/batch", 200, &json);
    assert_eq!(json["code"], 0);
    assert_eq!(json["request_id"], "req-e2e-1");
    assert_eq!(parts(&json).len(), 3);

    let records = consume(kafka(), &format!("events.{category}"), 3).unwrap();
    let by_backend_id: BTreeMap<&str, _> = records
        .iter()
        .map(|r| (r.value["backend_id"].as_str().unwrap(), r))
        .collect();
    for (i, part) in parts(&json).iter().enumerate() {
        assert_eq!(part["code"], "ok");
        assert_eq!(part["id"], format!("ev-{}", i + 1));
        assert_eq!(part["topic"], format!("events.{category}"));
        let record = by_backend_id[part["backend_id"].as_str().unwrap()];
        // The answer names exactly where the event is.
        assert_eq!(part["partition"], record.partition);
        assert_eq!(part["offset"], record.offset);
        contract::check_record(&record.value);
        assert_eq!(record.key.as_deref(), Some("acme:d-42"));
        assert_eq!(record.value["tenant"], "acme");
        assert_eq!(record.value["category"], category.as_str());
        assert_eq!(record.value["request_id"], "req-e2e-1");
        assert_eq!(record.value["meta"], body["meta"]);
        assert_eq!(record.value["data"], body["data"][i]);
        assert_eq!(record.value["id"], body["data"][i]["id"]);
        let headers = &record.headers;
        assert_eq!(headers["x-request-id"], "req-e2e-1");
        assert_eq!(headers["weir-tenant"], "acme");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["tracestate"], "vendor=abc");
        // Same trace as the client, parented on the gateway's own (produce) span.
        let tp: Vec<&str> = headers["traceparent"].split('-').collect();
        assert_eq!(tp.len(), 4, "{}", headers["traceparent"]);
        assert_eq!((tp[0], tp[1], tp[3]), ("00", CLIENT_TRACE, "01"));
        assert_ne!(tp[2], CLIENT_SPAN);
        assert_eq!(tp[2].len(), 16);
    }
    // One produce span per request: every record of it names the same parent.
    let parents: BTreeSet<&str> = records
        .iter()
        .map(|r| r.headers["traceparent"].as_str())
        .collect();
    assert_eq!(parents.len(), 1);

    let value = |id: &str| &records.iter().find(|r| r.value["id"] == id).unwrap().value;
    assert_eq!(value("ev-1")["ts"], 1763780000000u64);
    assert_eq!(value("ev-1")["client_ip"], "81.2.69.142");
    assert_eq!(
        value("ev-1")["geo"],
        json!({"country": "GB", "region": "England", "city": "London"})
    );
    assert_eq!(value("ev-2")["ts"], Value::Null);
    assert_eq!(value("ev-2")["geo"]["country"], "US");
    assert_eq!(value("ev-2")["geo"]["city"], "San Diego");
    assert_eq!(value("ev-3")["client_ip"], "127.0.0.1");
    assert_eq!(value("ev-3")["geo"], Value::Null);
    let received_at = value("ev-1")["received_at"].as_i64().unwrap();
    assert!(records
        .iter()
        .all(|r| r.value["received_at"] == received_at));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_without_trace_context_starts_a_new_trace_and_gets_a_request_id() {
    let category = category("cat", 1).await;
    let node = start(&[&category]);
    let body = json!({"meta": {"category": category}, "data": [{"id": "a"}]});
    let answer = post(&node, KEY, body.to_string()).await.unwrap();
    assert_eq!(answer.status, 200);
    let json = answer.json();
    let request_id = json["request_id"].as_str().unwrap().to_owned();
    assert_eq!(request_id.len(), 32, "a generated UUIDv7 in simple form");
    assert_eq!(answer.header("x-request-id"), Some(request_id.as_str()));
    let records = consume(kafka(), &format!("events.{category}"), 1).unwrap();
    let tp: Vec<&str> = records[0].headers["traceparent"].split('-').collect();
    assert_eq!(tp[0], "00");
    assert_ne!(tp[1], "0".repeat(32));
    assert_eq!(tp[1].len(), 32);
    assert!(!records[0].headers.contains_key("tracestate"));
    assert_eq!(records[0].headers["x-request-id"], request_id);
    // No device id: the key is the backend id, so events spread over partitions.
    assert_eq!(
        records[0].key.as_deref(),
        records[0].value["backend_id"].as_str()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn https_serves_http1_and_h2_with_the_configured_certificate() {
    let category = category("cat", 1).await;
    let certs = TestCerts::new().unwrap();
    let node = node_with(
        &[&category],
        "",
        "",
        &[
            ("WEIR_TLS_CERT", certs.cert_path.to_str().unwrap()),
            ("WEIR_TLS_KEY", certs.key_path.to_str().unwrap()),
        ],
    );
    let https = node.https.clone().expect("https listener");
    for (h2, id) in [(true, "over-h2"), (false, "over-h1")] {
        let transport = Transport::Https {
            ca_pem: certs.ca_pem.clone(),
            h2,
        };
        let body = json!({"meta": {"category": category}, "data": [{"id": id}]});
        let answer = send(
            &transport,
            &https,
            batch_request(Some(KEY), body.to_string(), &[]),
        )
        .await
        .unwrap();
        assert_eq!(answer.status, 200, "{}", answer.json());
        let expected = if h2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        assert_eq!(answer.version, expected);
    }
    let records = consume(kafka(), &format!("events.{category}"), 2).unwrap();
    let ids: BTreeSet<&str> = records
        .iter()
        .map(|r| r.value["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from(["over-h1", "over-h2"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_devices_events_stay_in_order_on_one_partition() {
    let category = category("cat", 4).await;
    let node = start(&[&category]);
    let devices: Vec<String> = (0..8).map(|d| format!("device-{d}")).collect();
    for round in 0..3 {
        for device in &devices {
            let body = json!({
                "meta": {"category": category, "device_id": device},
                "data": [{"id": format!("{device}-{round}a")}, {"id": format!("{device}-{round}b")}]
            });
            let answer = post(&node, KEY, body.to_string()).await.unwrap();
            assert_eq!(answer.status, 200);
        }
    }
    let records = consume(kafka(), &format!("events.{category}"), 8 * 3 * 2).unwrap();
    let mut by_device: BTreeMap<String, Vec<(i32, i64, String)>> = BTreeMap::new();
    for r in &records {
        let device = r.value["meta"]["device_id"].as_str().unwrap().to_owned();
        assert_eq!(r.key.as_deref(), Some(format!("acme:{device}").as_str()));
        by_device.entry(device).or_default().push((
            r.partition,
            r.offset,
            r.value["id"].as_str().unwrap().to_owned(),
        ));
    }
    let mut partitions_used = BTreeSet::new();
    for (device, mut events) in by_device {
        let partitions: BTreeSet<i32> = events.iter().map(|e| e.0).collect();
        assert_eq!(partitions.len(), 1, "{device} spread over {partitions:?}");
        partitions_used.extend(partitions);
        events.sort_by_key(|e| e.1);
        let ids: Vec<&str> = events.iter().map(|e| e.2.as_str()).collect();
        let expected: Vec<String> = (0..3)
            .flat_map(|r| [format!("{device}-{r}a"), format!("{device}-{r}b")])
            .collect();
        assert_eq!(ids, expected, "{device}'s events in offset order");
    }
    assert!(
        partitions_used.len() > 1,
        "8 devices all hashed to one partition"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partial_batch_lands_only_its_valid_events() {
    let category = category("cat", 2).await;
    let node = start(&[&category]);
    let body = json!({"meta": {"category": category}, "data": [
        {"id": "good-1"}, {"name": "no id"}, "not an object", {"id": "good-1"}, {"id": "good-2", "ts": -5}, {"id": "good-3"}
    ]});
    let answer = post(&node, KEY, body.to_string()).await.unwrap();
    let json = answer.json();
    assert_eq!(answer.status, 207, "{json}");
    contract::check_answer("post", "/v1/batch", 207, &json);
    assert_eq!(json["code"], 1);
    assert_eq!(json["message"], "4 of 6 events failed");
    let summary = outcomes(&json);
    let expected = [
        ("ok", ""),
        ("invalid", "data[1].id: missing"),
        ("invalid", "data[2]: must be an object"),
        (
            "invalid",
            "data[3].id: 'good-1' is a duplicate of data[0].id",
        ),
        (
            "invalid",
            "data[4].ts: must be milliseconds since the epoch (a non-negative integer)",
        ),
        ("ok", ""),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(summary, expected);
    for p in parts(&json).iter().filter(|p| p["code"] != "ok") {
        assert_eq!(p["retryable"], false);
    }
    let records = consume(kafka(), &format!("events.{category}"), 2).unwrap();
    let ids: BTreeSet<&str> = records
        .iter()
        .map(|r| r.value["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from(["good-1", "good-3"]));

    // All invalid: 400, code 2, and nothing is written.
    let category2 = self::category("cat", 1).await;
    let node2 = start(&[&category2]);
    let body = json!({"meta": {"category": category2}, "data": [{"x": 1}, 7]});
    let answer = post(&node2, KEY, body.to_string()).await.unwrap();
    let json = answer.json();
    assert_eq!(answer.status, 400, "{json}");
    contract::check_answer("post", "/v1/batch", 400, &json);
    assert_eq!(json["code"], 2);
    assert_eq!(parts(&json).len(), 2);
    let later = json!({"meta": {"category": category2}, "data": [{"id": "only"}]});
    assert_eq!(
        post(&node2, KEY, later.to_string()).await.unwrap().status,
        200
    );
    let records = consume(kafka(), &format!("events.{category2}"), 1).unwrap();
    assert_eq!(records[0].value["id"], "only");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_the_right_status_and_says_what_and_where() {
    let category = category("cat", 1).await;
    let node = node_with(
        &[&category, "allowed_*"],
        "max_body_bytes = 4096\nmax_decompressed_bytes = 8192\nmax_events_per_batch = 10\nmax_event_bytes = 512\nmax_meta_bytes = 1024\n",
        "",
        &[],
    );
    let ok_body = json!({"meta": {"category": category}, "data": [{"id": "a"}]}).to_string();
    let deep = format!(
        r#"{{"meta":{{"category":"{category}"}},"data":[{{"id":"a","x":{}1{}}}]}}"#,
        "[".repeat(70),
        "]".repeat(70)
    );
    let mut bad_utf8 =
        format!(r#"{{"meta":{{"category":"{category}"}},"data":[{{"id":"a"#).into_bytes();
    bad_utf8.extend_from_slice(&[0xc3, 0x28, b'"', b'}', b']', b'}']);
    let many: Vec<Value> = (0..11).map(|i| json!({"id": i.to_string()})).collect();
    let too_many = json!({"meta": {"category": category}, "data": many}).to_string();
    let big =
        json!({"meta": {"category": category}, "data": [{"id": "pad", "x": "y".repeat(5000)}]})
            .to_string();
    let bomb = gzip(&vec![b' '; 1 << 20]);

    struct Case {
        name: &'static str,
        key: Option<&'static str>,
        headers: Vec<(&'static str, &'static str)>,
        body: Vec<u8>,
        status: u16,
        error: &'static str,
        message: String,
    }
    let case = |name, body: Vec<u8>, status, error, message: &str| Case {
        name,
        key: Some(KEY),
        headers: vec![],
        body,
        status,
        error,
        message: message.to_owned(),
    };
    let cases =
        vec![
        case(
            "malformed JSON",
            b"{\"meta\": {".to_vec(),
            400,
            "malformed_json",
            "body: invalid JSON: ",
        ),
        case(
            "not an object",
            b"[1,2]".to_vec(),
            400,
            "malformed_json",
            "body: must be a JSON object with `meta` and `data`",
        ),
        case("empty body", vec![], 400, "empty_body", "body: empty"),
        case(
            "empty batch",
            json!({"meta": {"category": category}, "data": []})
                .to_string()
                .into_bytes(),
            400,
            "empty_batch",
            "data: empty, at least one event is required",
        ),
        case(
            "data not an array",
            json!({"meta": {"category": category}, "data": {"id": "a"}})
                .to_string()
                .into_bytes(),
            400,
            "invalid_data",
            "data: must be an array of event objects",
        ),
        case(
            "no meta",
            json!({"data": [{"id": "a"}]}).to_string().into_bytes(),
            400,
            "invalid_meta",
            "meta: missing",
        ),
        case(
            "meta too large",
            json!({"meta": {"category": category, "pad": "x".repeat(2000)}, "data": [{"id": "a"}]})
                .to_string()
                .into_bytes(),
            413,
            "meta_too_large",
            "meta: 20",
        ),
        case(
            "text after the object",
            format!("{} x", json!({"meta": {"category": category}, "data": [{"id": "a"}]}))
                .into_bytes(),
            400,
            "malformed_json",
            "body: unexpected text after the JSON object at byte ",
        ),
        case(
            "deep nesting",
            deep.into_bytes(),
            400,
            "too_deep",
            "body: JSON nested deeper than 64 levels at byte ",
        ),
        case(
            // Read as `\uabc\` by a lax parser, whose string would then end
            // early and let the nesting after it through.
            "a string escape that is not JSON",
            format!(
                r#"{{"meta":{{"category":"{category}"}},"data":[{{"id":"a","k":"\uabc\","n":{}{}}}]}}"#,
                "[".repeat(1000),
                "]".repeat(1000)
            )
            .into_bytes(),
            400,
            "malformed_json",
            "body: invalid string escape at byte ",
        ),
        case(
            "invalid UTF-8",
            bad_utf8,
            400,
            "invalid_utf8",
            "body: invalid UTF-8 at byte ",
        ),
        case(
            "too many events",
            too_many.into_bytes(),
            413,
            "too_many_events",
            "data: more than 10 events (the batch limit)",
        ),
        case(
            "body too large",
            big.into_bytes(),
            413,
            "body_too_large",
            "body: 50",
        ),
        case(
            "unsafe category",
            json!({"meta": {"category": "../etc"}, "data": [{"id": "a"}]})
                .to_string()
                .into_bytes(),
            400,
            "invalid_category",
            "meta.category: '../etc' is not a valid category",
        ),
        case(
            "category not allowed",
            json!({"meta": {"category": "secret"}, "data": [{"id": "a"}]})
                .to_string()
                .into_bytes(),
            403,
            "category_not_allowed",
            "meta.category: tenant 'acme' may not post to category 'secret'",
        ),
        Case {
            key: None,
            ..case(
                "missing key",
                ok_body.clone().into_bytes(),
                401,
                "unauthorized",
                "missing API key",
            )
        },
        Case {
            key: Some("wrong-key"),
            ..case(
                "unknown key",
                ok_body.clone().into_bytes(),
                401,
                "unauthorized",
                "unknown API key",
            )
        },
        Case {
            headers: vec![("content-type", "text/plain")],
            ..case(
                "wrong content type",
                ok_body.clone().into_bytes(),
                415,
                "unsupported_content_type",
                "Content-Type: 'text/plain' is not supported",
            )
        },
        Case {
            headers: vec![("content-encoding", "br")],
            ..case(
                "unknown encoding",
                ok_body.clone().into_bytes(),
                415,
                "unsupported_content_encoding",
                "Content-Encoding: 'br' is not supported",
            )
        },
        Case {
            headers: vec![("content-encoding", "gzip")],
            ..case(
                "decompression bomb",
                bomb,
                413,
                "body_too_large",
                "body: decompresses to more than the limit of 8192 bytes",
            )
        },
        Case {
            headers: vec![("content-encoding", "gzip")],
            ..case(
                "corrupt gzip",
                b"nope".to_vec(),
                400,
                "bad_encoding",
                "body: not valid gzip data",
            )
        },
    ];
    for case in cases {
        let mut request = batch_request(case.key, case.body, &case.headers);
        for (name, value) in &case.headers {
            request.headers_mut().insert(*name, value.parse().unwrap());
        }
        let answer = send(&Transport::Http, &node.http, request).await.unwrap();
        let json = answer.json();
        assert_eq!(answer.status, case.status, "{}: {json}", case.name);
        contract::check_answer("post", "/v1/batch", case.status, &json);
        assert_eq!(json["error"], case.error, "{}: {json}", case.name);
        assert_eq!(json["code"], 2, "{}", case.name);
        let message = json["message"].as_str().unwrap();
        assert!(
            message.starts_with(&case.message),
            "{}: {message}",
            case.name
        );
        assert!(json["request_id"].as_str().is_some_and(|id| !id.is_empty()));
        if case.status == 401 {
            assert!(answer.header("www-authenticate").is_some(), "{}", case.name);
        }
    }

    // Events too large for the tenant's event limit get their own part.
    let body = json!({"meta": {"category": category}, "data": [{"id": "big", "x": "y".repeat(600)}, {"id": "small"}]});
    let json = post(&node, KEY, body.to_string()).await.unwrap().json();
    assert_eq!(parts(&json)[0]["code"], "too_large");
    assert_eq!(parts(&json)[0]["id"], "big");
    assert_eq!(parts(&json)[0]["retryable"], false);
    assert_eq!(parts(&json)[1]["code"], "ok");

    // Compressed uploads are accepted.
    let body = json!({"meta": {"category": category}, "data": [{"id": "gz"}]}).to_string();
    let request = batch_request(
        Some(KEY),
        gzip(body.as_bytes()),
        &[("content-encoding", "gzip")],
    );
    assert_eq!(
        send(&Transport::Http, &node.http, request)
            .await
            .unwrap()
            .status,
        200
    );
    let body = json!({"meta": {"category": category}, "data": [{"id": "zs"}]}).to_string();
    let request = batch_request(
        Some(KEY),
        zstd::encode_all(body.as_bytes(), 3).unwrap(),
        &[("content-encoding", "zstd")],
    );
    assert_eq!(
        send(&Transport::Http, &node.http, request)
            .await
            .unwrap()
            .status,
        200
    );

    // Wrong routes and methods.
    let answer = get(&node.http, "/v1/batch").await.unwrap();
    assert_eq!((answer.status, answer.header("allow")), (405, Some("POST")));
    contract::check_answer("post", "/v1/batch", 405, &answer.json());
    let answer = get(&node.http, "/nope").await.unwrap();
    assert_eq!(answer.status, 404);
    assert_eq!(answer.json()["message"], "no route for GET /nope");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_input_crashes_the_node() {
    let category = category("cat", 1).await;
    let mut node = start(&[&category]);
    let valid = json!({"meta": {"category": category, "device_id": "d"}, "data": [
        {"id": "a", "ts": 1, "ip": "81.2.69.142", "p": {"q": [1, 2.5, "s\u{e9}\\n", null, true]}}
    ]})
    .to_string()
    .into_bytes();
    // Every truncation of a valid body, and deterministic byte corruptions of it.
    let mut bodies: Vec<Vec<u8>> = (0..valid.len()).map(|n| valid[..n].to_vec()).collect();
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    for _ in 0..300 {
        let mut body = valid.clone();
        for _ in 0..3 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed as usize) % body.len();
            body[at] = (seed >> 32) as u8;
        }
        bodies.push(body);
    }
    let mut statuses = BTreeMap::new();
    for body in bodies {
        let answer = post(&node, KEY, body).await.unwrap();
        let json = answer.json();
        assert!(json["request_id"].is_string());
        assert!(
            [200, 207, 400, 403, 413].contains(&answer.status),
            "unexpected {}: {json}",
            answer.status
        );
        *statuses.entry(answer.status).or_insert(0) += 1;
    }
    assert!(statuses.contains_key(&400), "{statuses:?}");
    assert!(node.is_running());
    assert_eq!(get(&node.http, "/healthz").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_topic_is_a_retryable_503_not_a_timeout() {
    let node = start(&["*"]);
    let category = unique("never_created");
    let body = json!({"meta": {"category": category}, "data": [{"id": "a"}, {"id": "b"}]});
    let answer = post(&node, KEY, body.to_string()).await.unwrap();
    let json = answer.json();
    assert_eq!(answer.status, 503, "{json}");
    contract::check_answer("post", "/v1/batch", 503, &json);
    assert!(answer.header("retry-after").is_some());
    // Per event, and said at once: the message names the topic, where a
    // wait for a delivery timeout would say "did not acknowledge".
    assert_eq!(parts(&json).len(), 2, "{json}");
    for p in parts(&json) {
        assert_eq!(p["code"], "delivery_failed");
        assert_eq!(p["retryable"], true);
        assert_eq!(
            p["message"],
            format!("topic 'events.{category}' does not exist on the Kafka cluster; an operator must create it")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let category = category("cat", 1).await;
    let trusted = node_with(
        &[&category],
        "",
        "",
        &[("WEIR_TRUSTED_PROXIES", "127.0.0.0/8")],
    );
    let untrusted = start(&[&category]);
    for (node, expected_ip) in [(&trusted, "81.2.69.142"), (&untrusted, "127.0.0.1")] {
        let body = json!({"meta": {"category": category}, "data": [{"id": expected_ip}]});
        let request = batch_request(
            Some(KEY),
            body.to_string(),
            &[("x-forwarded-for", "81.2.69.142")],
        );
        assert_eq!(
            send(&Transport::Http, &node.http, request)
                .await
                .unwrap()
                .status,
            200
        );
    }
    let records = consume(kafka(), &format!("events.{category}"), 2).unwrap();
    for r in records {
        assert_eq!(r.value["client_ip"], r.value["id"]);
        if r.value["id"] == "81.2.69.142" {
            assert_eq!(r.value["geo"]["city"], "London");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_readiness() {
    let node = start(&["*"]);
    let admin = node.admin.clone().expect("admin listener");
    for address in [&node.http, &admin] {
        let answer = get(address, "/healthz").await.unwrap();
        assert_eq!(answer.status, 200);
        contract::check_answer("get", "/healthz", 200, &answer.json());
        let answer = get(address, "/readyz").await.unwrap();
        let json = answer.json();
        assert_eq!(answer.status, 200, "{json}");
        contract::check_answer("get", "/readyz", 200, &json);
        assert_eq!(json["status"], "ready");
        // The details are the admin listener's; the public one says whether.
        match address == &admin {
            true => {
                assert!(json["geoip"].as_str().unwrap().starts_with("GeoIP2-City"));
                assert!(json["kafka"].as_str().unwrap().starts_with("ok: "));
            }
            false => assert_eq!(
                (&json["geoip"], &json["kafka"]),
                (&json!("loaded"), &json!("ok"))
            ),
        }
    }
    // The admin listener takes no events.
    let body = json!({"meta": {"category": "c"}, "data": [{"id": "a"}]}).to_string();
    let answer = send(
        &Transport::Http,
        &admin,
        batch_request(Some(KEY), body, &[]),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 404);

    // No broker answering: not ready, but alive.
    let dead = node_with(&["*"], "", "", &[("WEIR_KAFKA_BROKERS", "127.0.0.1:1")]);
    assert_eq!(get(&dead.http, "/healthz").await.unwrap().status, 200);
    let answer = get(&dead.http, "/readyz").await.unwrap();
    let json = answer.json();
    assert_eq!(answer.status, 503, "{json}");
    contract::check_answer("get", "/readyz", 503, &json);
    assert_eq!(json["status"], "not_ready");
    assert_eq!(
        json["kafka"], "unavailable",
        "no broker error text in public"
    );
}
