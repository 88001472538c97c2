//! User Wasm filters in a real node, with real compiled components
//! (`scripts/build-filters.sh`), writing to a real tansu broker.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use weir_e2e::{
    category, consume, consume_all, contract, eventually, filter_wasm, get, ids, kafka, metrics,
    outcomes, post, scrape, weir_bin, Node,
};

/// A tenant with a chain of filters: (path, config, on_error) each.
fn tenant(name: &str, key: &str, filters: &[(&str, &str, &str)]) -> String {
    let mut toml = String::new();
    for (path, config, on_error) in filters {
        toml += &format!(
            "[[tenants.filters]]\npath = \"{path}\"\nconfig = '{config}'\non_error = \"{on_error}\"\ntimeout_ms = 500\n"
        );
    }
    weir_e2e::tenant(name, key, &toml)
}

fn wasm(name: &str) -> String {
    filter_wasm(name).display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_filters_redact_tag_and_require_in_a_chain() {
    let category = category("filt", 1).await;
    let (require, tag, redact, sample) = (
        wasm("require_fields"),
        wasm("tag_bots"),
        wasm("redact_pii"),
        wasm("sample"),
    );
    let chain = [
        (require.as_str(), r#"{"fields": ["user"]}"#, "fail-closed"),
        (
            tag.as_str(),
            r#"{"field": "ua", "action": "tag"}"#,
            "fail-closed",
        ),
        (
            redact.as_str(),
            r#"{"fields": ["email", "props.note"], "mask": "[x]"}"#,
            "fail-closed",
        ),
        (sample.as_str(), r#"{"rate": 1.0}"#, "fail-closed"),
    ];
    let node = Node::start(
        &tenant("acme", "k", &chain),
        &[("WEIR_KAFKA_BROKERS", kafka())],
    )
    .unwrap();
    let body = json!({"meta": {"category": category}, "data": [
        {"id": "human", "user": "u1", "ua": "Mozilla/5.0", "email": "ann@example.com", "props": {"note": "call +1 415 555 0100 or 10.1.2.3", "keep": "ann@example.com"}},
        {"id": "bot", "user": "u2", "ua": "Googlebot/2.1", "email": "none"},
        {"id": "anonymous", "ua": "Mozilla/5.0"}
    ]});
    let answer = post(&node, "k", body.to_string()).await.unwrap();
    let json = answer.json();
    // A filtered event is handled, not an error: 200, code 0.
    assert_eq!(answer.status, 200, "{json}");
    contract::check_answer("post", "/v1/batch", 200, &json);
    assert_eq!(json["code"], 0);
    assert_eq!(
        outcomes(&json),
        [
            ("ok".into(), "".into()),
            ("ok".into(), "".into()),
            (
                "filtered".into(),
                "require_fields: missing required field user".into()
            )
        ]
    );
    assert_eq!(json["parts"][2]["retryable"], false);
    let records = consume(kafka(), &format!("events.{category}"), 2).unwrap();
    let data = data_by_id(&records);
    let human = &data["human"];
    assert_eq!(human["email"], "[x]");
    assert_eq!(human["props"]["note"], "call [x] or [x]");
    assert_eq!(
        human["props"]["keep"], "ann@example.com",
        "only the configured fields are redacted"
    );
    assert!(human.get("is_bot").is_none());
    assert_eq!(data["bot"]["is_bot"], true);
    for r in &records {
        contract::check_record(&r.value);
    }
    // The filters' own counters are the node's metrics: redact-pii counted
    // its three masks.
    let samples = metrics(node.admin.as_ref().unwrap()).await;
    assert_eq!(
        scrape::sum(
            &samples,
            "weir_filter_guest_counter_total",
            &[
                ("tenant", "acme"),
                ("filter", "redact_pii"),
                ("name", "masked")
            ]
        ),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_filter_sees_every_enriched_field_of_every_event() {
    let category = category("filt", 1).await;
    let geoip = weir_e2e::fixture("GeoIP2-City-Test.mmdb");
    let node = Node::start(
        &tenant(
            "acme",
            "k",
            &[(&wasm("hostile_filter"), "echo", "fail-closed")],
        ),
        &[
            ("WEIR_KAFKA_BROKERS", kafka()),
            ("WEIR_GEOIP_PATH", geoip.to_str().unwrap()),
        ],
    )
    .unwrap();
    let events = json!([
        {"id": "london", "ip": "81.2.69.142", "n": 1},
        {"id": "v6", "ip": "2001:218::1"},
        {"id": "unknown", "ip": "10.0.0.1", "s": "ü \"q\""},
        {"id": "london-again", "ip": "81.2.69.160"}
    ]);
    let body = json!({"meta": {"category": category}, "data": events});
    let json = post(&node, "k", body.to_string()).await.unwrap().json();
    assert_eq!(json["code"], 0, "{json}");
    let records = consume(kafka(), &format!("events.{category}"), 4).unwrap();
    for (i, record) in records.iter().enumerate() {
        let seen = &record.value["data"];
        let sent = &events[i];
        assert_eq!(seen["backend_id"], json["parts"][i]["backend_id"]);
        assert_eq!(seen["backend_id"], record.value["backend_id"]);
        assert_eq!(seen["id"], sent["id"]);
        assert_eq!(seen["tenant"], "acme");
        assert_eq!(seen["category"], category.as_str());
        assert_eq!(seen["received_at"], record.value["received_at"]);
        assert_eq!(seen["client_ip"], sent["ip"]);
        let geo = &record.value["geo"];
        let expected = if geo.is_null() {
            Value::Null
        } else {
            json!([geo["country"], geo["region"], geo["city"]])
        };
        assert_eq!(seen["geo"], expected, "event {i}");
        let seen_body: Value = serde_json::from_str(seen["body"].as_str().unwrap()).unwrap();
        assert_eq!(&seen_body, sent);
    }
    assert_eq!(
        records[0].value["data"]["geo"],
        json!(["GB", "England", "London"])
    );
    assert!(
        records[1].value["data"]["geo"].is_array(),
        "the IPv6 address is located too"
    );
    assert_eq!(records[2].value["data"]["geo"], Value::Null);
}

/// (Whether a draw repeats for the same backend id is `weir filter test`'s
/// test: on a node every upload gets new backend ids.)
#[tokio::test(flavor = "multi_thread")]
async fn sample_keeps_about_the_configured_fraction() {
    let category = category("filt", 1).await;
    let half = tenant(
        "half",
        "half",
        &[(&wasm("sample"), r#"{"rate": 0.5}"#, "fail-closed")],
    );
    let none = tenant(
        "none",
        "none",
        &[(
            &wasm("sample"),
            r#"{"rate": 1.0, "categories": {"CAT": 0.0}}"#,
            "fail-closed",
        )],
    );
    let node = Node::start(
        &(half + &none.replace("CAT", &category)),
        &[("WEIR_KAFKA_BROKERS", kafka())],
    )
    .unwrap();
    let events: Vec<Value> = (0..200).map(|i| json!({"id": format!("e{i}")})).collect();
    let body = json!({"meta": {"category": category}, "data": events}).to_string();
    let json = post(&node, "half", body.clone()).await.unwrap().json();
    let kept: BTreeSet<String> = json["parts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["code"] == "ok")
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        (60..=140).contains(&kept.len()),
        "kept {} of 200 at rate 0.5",
        kept.len()
    );
    let stored = ids(&consume(kafka(), &format!("events.{category}"), kept.len()).unwrap());
    assert_eq!(stored, kept);
    // A per-category rate of 0 drops everything of that category.
    let json = post(&node, "none", body).await.unwrap().json();
    let parts = json["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 200, "{json}");
    assert!(parts.iter().all(|p| p["code"] == "filtered"));
    assert_eq!(json["code"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_filters_are_contained_by_their_policy() {
    let category = category("filt", 1).await;
    let hostile = wasm("hostile_filter");
    let mut config = String::new();
    let modes = [
        "loop",
        "log-flood",
        "log-huge",
        "memory",
        "trap",
        "wrong-count",
        "huge",
    ];
    for mode in modes {
        config += &tenant(
            &format!("{mode}-open"),
            &format!("{mode}-open"),
            &[(&hostile, mode, "fail-open")],
        );
        config += &tenant(
            &format!("{mode}-closed"),
            &format!("{mode}-closed"),
            &[(&hostile, mode, "fail-closed")],
        );
    }
    config += &tenant("calm", "calm", &[]);
    config = config.replace(
        "[[tenants.filters]]",
        "[[tenants.filters]]\nmax_output_bytes = 1048576\nmemory_mb = 32",
    );
    let node = Node::start(&config, &[("WEIR_KAFKA_BROKERS", kafka())]).unwrap();
    let body = |tag: &str| {
        json!({"meta": {"category": category}, "data": [{"id": format!("{tag}-1")}, {"id": format!("{tag}-2")}]}).to_string()
    };

    // A calm tenant keeps getting answers while the hostile calls run.
    let stop = Arc::new(AtomicBool::new(false));
    let calm_answers = Arc::new(AtomicUsize::new(0));
    let calm = {
        let (stop, answers, address, body) = (
            stop.clone(),
            calm_answers.clone(),
            node.http.clone(),
            body("calm"),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let answer = weir_e2e::send(
                    &weir_e2e::Transport::Http,
                    &address,
                    weir_e2e::batch_request(Some("calm"), body.clone(), &[]),
                )
                .await
                .unwrap();
                assert_eq!(answer.status, 200);
                answers.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    for mode in modes {
        // Fail-open: the events pass unfiltered.
        let calm_before = calm_answers.load(Ordering::Relaxed);
        let answer = post(
            &node,
            &format!("{mode}-open"),
            body(&format!("{mode}-open")),
        )
        .await
        .unwrap();
        assert_eq!(answer.status, 200, "{mode} fail-open: {}", answer.json());
        // While a guest runs to its CPU deadline (500 ms), the calm tenant
        // is still answered. (At least once: how often depends on the
        // machine's speed.)
        if matches!(mode, "loop" | "log-flood") {
            let calm_during = calm_answers.load(Ordering::Relaxed) - calm_before;
            assert!(
                calm_during >= 1,
                "the calm tenant got {calm_during} answers while a {mode} filter ran"
            );
        }
        // Fail-closed: filter_error, retryable, nothing written.
        let answer = post(
            &node,
            &format!("{mode}-closed"),
            body(&format!("{mode}-closed")),
        )
        .await
        .unwrap();
        let json = answer.json();
        assert_eq!(answer.status, 503, "{mode} fail-closed: {json}");
        contract::check_answer("post", "/v1/batch", 503, &json);
        assert_eq!(json["parts"].as_array().unwrap().len(), 2, "{mode}: {json}");
        for p in json["parts"].as_array().unwrap() {
            assert_eq!(p["code"], "filter_error");
            assert_eq!(p["retryable"], true);
            let expected = match mode {
                "loop" | "log-flood" => "ran past its CPU deadline of 500 ms",
                "memory" => "forcing trap when growing memory",
                "trap" => "trapped: wasm trap: wasm `unreachable` instruction executed",
                "wrong-count" => "returned 3 verdicts for 2 events",
                // Stopped while the host copied: never all of it.
                _ => "handed the host more than its limit of 1048576 bytes at once",
            };
            assert!(
                p["message"].as_str().unwrap().contains(expected),
                "{mode}: {p}"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    calm.await.unwrap();
    // Every call is counted by its filter and outcome: each mode's two
    // tenants failed.
    let samples = metrics(node.admin.as_ref().unwrap()).await;
    let calls = |outcome| hostile_calls(&samples, outcome);
    assert_eq!(calls("error"), (2 * modes.len()) as f64);
    assert!(
        node.log_text().contains("events in mode loop"),
        "a call's guest logs reach the node's log"
    );
    // The flood's 8 MiB lines are kept to their first KiB.
    let flood = |line: &str| line.bytes().filter(|&b| b == b'x').count();
    let longest = node.log_text().lines().map(flood).max();
    assert_eq!(longest, Some(1024), "the longest run of a guest's log line");
    assert!(
        node.log_text()
            .contains("filter init: hostile filter in mode loop"),
        "init's guest logs reach the node's log when the filter is loaded"
    );

    let stored = ids(&consume_all(
        kafka(),
        &format!("events.{category}"),
        Duration::from_secs(2),
    )
    .unwrap());
    for mode in modes {
        assert!(
            stored.contains(&format!("{mode}-open-1")),
            "{mode}: fail-open events are written"
        );
        assert!(
            !stored.contains(&format!("{mode}-closed-1")),
            "{mode}: fail-closed events are not"
        );
    }
}

/// A replacement that is not a JSON object within the event limits is a
/// failure of the filter for that event, as a trap is for a call: the
/// tenant's policy decides (fail-open passes the event as it was,
/// fail-closed answers `filter_error`, retryable), and the failure is
/// counted and logged. The call's valid verdicts apply either way.
#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_replacement_fails_its_event_under_the_tenants_policy() {
    let category = category("filt", 1).await;
    let hostile = wasm("hostile_filter");
    let config = tenant("open", "open", &[(&hostile, "by-id", "fail-open")])
        + &tenant("closed", "closed", &[(&hostile, "by-id", "fail-closed")]);
    let node = Node::start(&config, &[("WEIR_KAFKA_BROKERS", kafka())]).unwrap();
    // By the ends of their ids, what the filter replaces each event with.
    let invalid = [
        ("non-json", "text that is not JSON"),
        // Deep enough to overflow a parser's stack: refused unparsed.
        (
            "deep",
            "JSON nested deeper than the event limit of 62 levels",
        ),
        ("large", "100010 bytes, more than the event limit of 65536"),
        ("array", "JSON that is not an object"),
    ];
    let body = |tag: &str| {
        let data: Vec<Value> = std::iter::once("fine")
            .chain(invalid.iter().map(|(kind, _)| *kind))
            .map(|kind| json!({"id": format!("{tag}-{kind}"), "n": 1}))
            .collect();
        json!({"meta": {"category": category}, "data": data}).to_string()
    };

    // Fail-open: every event is accepted; those the filter failed on as the
    // client sent them.
    let answer = post(&node, "open", body("open")).await.unwrap();
    let json = answer.json();
    assert_eq!(answer.status, 200, "{json}");
    contract::check_answer("post", "/v1/batch", 200, &json);
    assert!(
        outcomes(&json).iter().all(|(code, _)| code == "ok"),
        "{json}"
    );

    // Fail-closed: the valid replacement is accepted; the others are
    // filter_error, retryable, with the reason.
    let answer = post(&node, "closed", body("closed")).await.unwrap();
    let json = answer.json();
    assert_eq!(answer.status, 207, "{json}");
    contract::check_answer("post", "/v1/batch", 207, &json);
    assert_eq!(outcomes(&json)[0].0, "ok", "{json}");
    for (i, (kind, problem)) in invalid.iter().enumerate() {
        let part = &json["parts"][i + 1];
        assert_eq!(part["id"], format!("closed-{kind}"));
        assert_eq!(part["code"], "filter_error", "{kind}: {part}");
        assert_eq!(part["retryable"], true, "{kind}: {part}");
        assert_eq!(
            part["message"],
            format!("filter hostile_filter failed: replaced the event with {problem}"),
            "{kind}"
        );
    }

    // Written: the valid replacements, and fail-open's other events unchanged.
    let records = consume(kafka(), &format!("events.{category}"), 2 + invalid.len()).unwrap();
    let data = data_by_id(&records);
    assert_eq!(
        data["open-fine"],
        json!({"id": "open-fine", "n": 1, "tagged": true})
    );
    assert_eq!(
        data["closed-fine"],
        json!({"id": "closed-fine", "n": 1, "tagged": true})
    );
    for (kind, _) in invalid {
        let id = format!("open-{kind}");
        assert_eq!(data[&id], json!({"id": id, "n": 1}), "{kind}");
    }

    // Counted and logged as failures of the filter, as a trap is.
    let samples = metrics(node.admin.as_ref().unwrap()).await;
    let calls = |outcome| hostile_calls(&samples, outcome);
    assert_eq!((calls("error"), calls("ok")), (2.0, 0.0));
    let logs = node.log_text();
    for (policy, says) in [
        ("open", "events pass unfiltered (fail-open)"),
        ("closed", "events refused (fail-closed)"),
    ] {
        assert!(
            logs.lines().any(|line| line.contains(says)
                && line.contains(&format!("\"tenant\":\"{policy}\""))
                && line.contains("replaced the event with")),
            "no failure logged for fail-{policy}: {logs}"
        );
    }
}

/// Every series of a filter's calls exists, at 0, from when the filter is
/// loaded: its first failure is then an increase that `rate()` (and the
/// WeirFilterFailing alert) sees, not a series born at 1. Also for a filter
/// a reload adds.
#[tokio::test(flavor = "multi_thread")]
async fn a_filters_call_counters_exist_at_zero_once_it_is_loaded() {
    let redact = (wasm("redact_pii"), "{}", "fail-open");
    let config = |filters: &[(String, &str, &str)]| {
        let filters: Vec<(&str, &str, &str)> = filters
            .iter()
            .map(|(path, config, on_error)| (path.as_str(), *config, *on_error))
            .collect();
        tenant("acme", "k", &filters)
    };
    let node = Node::start(
        &config(std::slice::from_ref(&redact)),
        &[("WEIR_KAFKA_BROKERS", kafka())],
    )
    .unwrap();
    let admin = node.admin.clone().unwrap();
    // The value of the filter's series for that outcome, if there is one.
    let calls = |samples: &BTreeMap<String, f64>, filter: &str, outcome: &str| {
        samples
            .iter()
            .find(|(series, _)| {
                series.starts_with("weir_filter_calls_total{")
                    && series.contains(&format!("filter=\"{filter}\""))
                    && series.contains(&format!("outcome=\"{outcome}\""))
            })
            .map(|(_, value)| *value)
    };
    // Right after start, before any traffic.
    let samples = metrics(&admin).await;
    for outcome in ["ok", "error"] {
        assert_eq!(
            calls(&samples, "redact_pii", outcome),
            Some(0.0),
            "redact_pii, {outcome}: {samples:?}"
        );
    }

    // A reload that adds a filter.
    std::fs::write(
        &node.config_path,
        config(&[redact, (wasm("tag_bots"), "{}", "fail-closed")]),
    )
    .unwrap();
    let request = http::Request::post("/admin/reload")
        .header("host", "localhost")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let answer = weir_e2e::send(&weir_e2e::Transport::Http, &admin, request)
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.json());
    let samples = metrics(&admin).await;
    for filter in ["redact_pii", "tag_bots"] {
        for outcome in ["ok", "error"] {
            assert_eq!(
                calls(&samples, filter, outcome),
                Some(0.0),
                "{filter}, {outcome}: {samples:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_filter_swapped_on_disk_is_used_without_a_failed_request() {
    let category = category("filt", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.wasm");
    std::fs::copy(filter_wasm("require_fields"), &live).unwrap();
    // One config both filters accept: require-fields needs `user`,
    // redact-pii masks PII in it.
    let config = tenant(
        "acme",
        "k",
        &[(
            live.to_str().unwrap(),
            r#"{"fields": ["user"]}"#,
            "fail-closed",
        )],
    );
    let node = Arc::new(Node::start(&config, &[("WEIR_KAFKA_BROKERS", kafka())]).unwrap());
    let body = {
        let category = category.clone();
        move |id: String| {
            json!({"meta": {"category": category}, "data": [{"id": id, "user": "u"}, {"id": "nouser"}]}).to_string()
        }
    };
    let first = post(&node, "k", body("before".into()))
        .await
        .unwrap()
        .json();
    assert_eq!(outcomes(&first)[0].0, "ok");
    assert_eq!(outcomes(&first)[1].1, "live: missing required field user");

    // Posts keep coming while the file is replaced: answered by the old
    // filter (the second event filtered), then by the new one (kept), and
    // never a failure. The load ends once it has met the new filter.
    let stop = Arc::new(AtomicBool::new(false));
    let [old, new, failed] = [(); 3].map(|()| Arc::new(AtomicUsize::new(0)));
    let load = {
        let (node, stop, body) = (node.clone(), stop.clone(), body.clone());
        let (old, new, failed) = (old.clone(), new.clone(), failed.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !(stop.load(Ordering::Relaxed) && new.load(Ordering::Relaxed) > 0) {
                i += 1;
                let answer = post(&node, "k", body(format!("load-{i}"))).await.unwrap();
                if answer.status != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                match outcomes(&answer.json())[1].0.as_str() {
                    "ok" => new.fetch_add(1, Ordering::Relaxed),
                    _ => old.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    // The load has met the old filter before the file is replaced.
    eventually(
        Duration::from_secs(20),
        "the load answered by the old filter",
        || async { old.load(Ordering::Relaxed) > 0 },
    )
    .await;
    // Written next to it and renamed over it, as a deploy tool does.
    let staged = dir.path().join("staged.wasm");
    std::fs::copy(filter_wasm("redact_pii"), &staged).unwrap();
    std::fs::rename(&staged, &live).unwrap();
    let json = eventually(Duration::from_secs(20), "the new filter used", || async {
        let json = post(&node, "k", body("after".into())).await.unwrap().json();
        if outcomes(&json)[1].0 == "ok" {
            Ok(json)
        } else {
            Err(json)
        }
    })
    .await;
    assert_eq!(outcomes(&json)[0].0, "ok");
    stop.store(true, Ordering::Relaxed);
    // The load ends at its next answer, from the new filter.
    tokio::time::timeout(Duration::from_secs(60), load)
        .await
        .expect("the load met the new filter")
        .unwrap();
    let [old, new, failed] = [old, new, failed].map(|n| n.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "requests failed during the swap");
    assert!(
        old > 0 && new > 0,
        "the load met the old filter {old} times and the new one {new} times"
    );
    assert!(consume_all(
        kafka(),
        &format!("events.{category}"),
        Duration::from_secs(2)
    )
    .unwrap()
    .iter()
    .any(|r| r.value["id"] == "after"));

    // A file that does not compile never replaces the working filter.
    std::fs::write(dir.path().join("broken.wasm"), b"\0asm not really").unwrap();
    std::fs::rename(dir.path().join("broken.wasm"), &live).unwrap();
    let ready = eventually(
        Duration::from_secs(20),
        "the broken file noticed (/readyz's filter_errors)",
        || async {
            let ready = get(&node.admin.clone().unwrap(), "/readyz")
                .await
                .unwrap()
                .json();
            if ready["filter_errors"].is_array() {
                Ok(ready)
            } else {
                Err(ready)
            }
        },
    )
    .await;
    assert!(
        ready["filter_errors"][0]
            .as_str()
            .unwrap()
            .contains("not a valid weir:filter component"),
        "{ready}"
    );
    let json = post(&node, "k", body("still".into())).await.unwrap().json();
    assert_eq!(outcomes(&json)[0].0, "ok", "{json}");
    assert_eq!(
        outcomes(&json)[1].0,
        "ok",
        "redact-pii still serves: {json}"
    );
}

/// A filter not compiled yet when a node starts loads after the node
/// listens: the tenants that do not use it are served at once; its own
/// tenant's events are refused, retryable, until it is in, then filtered.
/// A filter that does not load refuses its tenant's events and nobody
/// else's. The component comes by URL from a server that answers only when
/// the test lets it, so "still loading" is a state the test holds.
#[tokio::test(flavor = "multi_thread")]
async fn a_filter_loading_at_start_holds_up_only_its_own_tenant() {
    use sha2::Digest as _;
    use std::io::{BufRead as _, BufReader, Write as _};

    let category = category("load", 1).await;
    let component = std::fs::read(filter_wasm("tag_bots")).unwrap();
    let sha256 = hex::encode(sha2::Sha256::digest(&component));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/tag_bots.wasm", listener.local_addr().unwrap());
    let (release, held) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut head = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while head.read_line(&mut line).is_ok_and(|n| n > 2) {
            line.clear();
        }
        // Until the test has seen the node serve while this one loads.
        let _ = held.recv();
        let mut stream = stream;
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            component.len()
        );
        let _ = stream.write_all(&component);
    });
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm not really").unwrap();
    let config = weir_e2e::tenant("calm", "calm", "")
        + &weir_e2e::tenant(
            "tagged",
            "tagged",
            &format!("[[tenants.filters]]\nurl = \"{url}\"\nsha256 = \"{sha256}\"\nconfig = '{{\"field\": \"ua\", \"action\": \"tag\"}}'\non_error = \"fail-open\"\n"),
        )
        + &tenant("broken", "broken", &[(&broken.display().to_string(), "{}", "fail-open")]);
    let cache = tempfile::tempdir().unwrap();
    let (command, config_dir) = Node::command(
        &config,
        &[
            ("WEIR_KAFKA_BROKERS", kafka()),
            ("WEIR_FILTER_CACHE", &cache.path().display().to_string()),
        ],
    )
    .unwrap();
    let (node, filters_ready) = Node::spawn_listening(command, config_dir).unwrap();
    let body = |id: &str| {
        json!({"meta": {"category": category}, "data": [{"id": id, "ua": "Googlebot/2.1"}]})
            .to_string()
    };
    let ready = || async {
        get(node.admin.as_deref().unwrap(), "/readyz")
            .await
            .unwrap()
            .json()
    };

    // Served while the other tenant's filter loads.
    let answer = post(&node, "calm", body("calm")).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.json());
    let answer = post(&node, "tagged", body("early")).await.unwrap();
    let json = answer.json();
    assert_eq!(answer.status, 503, "retry later: {json}");
    assert_eq!(json["parts"][0]["code"], "filter_error", "{json}");
    assert_eq!(json["parts"][0]["retryable"], true, "{json}");
    assert!(
        json["parts"][0]["message"]
            .as_str()
            .unwrap()
            .contains("tag_bots is not loaded yet"),
        "refused though its policy is fail-open: {json}"
    );
    let readiness = ready().await;
    assert_eq!(readiness["status"], "ready", "{readiness}");
    assert!(
        readiness["filters_loading"].to_string().contains(&url),
        "{readiness}"
    );
    contract::check_answer("get", "/readyz", 200, &readiness);

    // The broken one does not load: its tenant is refused, with why.
    eventually(
        Duration::from_secs(60),
        "the broken filter's error in /readyz",
        || async {
            let readiness = ready().await;
            match readiness["filter_errors"]
                .to_string()
                .contains("broken.wasm")
            {
                true => Ok(()),
                false => Err(readiness),
            }
        },
    )
    .await;
    let json = post(&node, "broken", body("broken")).await.unwrap().json();
    assert_eq!(json["parts"][0]["code"], "filter_error", "{json}");
    let message = json["parts"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("broken does not load: not a valid weir:filter component"),
        "{json}"
    );

    // Let the component come: the tenant's events are then filtered.
    release.send(()).unwrap();
    filters_ready
        .recv_timeout(Duration::from_secs(600))
        .expect("filters ready");
    let answer = post(&node, "tagged", body("late")).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.json());
    assert!(ready().await.get("filters_loading").is_none());
    let records = consume(kafka(), &format!("events.{category}"), 2).unwrap();
    let late = records.iter().find(|r| r.value["id"] == "late").unwrap();
    assert_eq!(late.value["data"]["is_bot"], true, "{:?}", late.value);
    assert!(!records.iter().any(|r| r.value["id"] == "early"));
    assert!(node.log_text().contains("filter loaded"));
}

/// `weir filter test <filter> --events <events> <args…>`.
fn filter_test(filter: &str, events: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(weir_bin())
        .args(["filter", "test"])
        .arg(filter_wasm(filter))
        .arg("--events")
        .arg(events)
        .args(args)
        .output()
        .unwrap()
}

/// `WEIR_FILTER_PERFMAP=1`: wasmtime writes the guests' functions to perf's
/// map for the process (guest-sdk/README.md), and only then.
#[test]
fn the_perfmap_variable_names_a_filters_functions_for_perf() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.json");
    std::fs::write(&events, r#"[{"id": "a", "user_agent": "curl/8"}]"#).unwrap();
    let run = |perfmap: bool| {
        let started = std::time::SystemTime::now();
        let mut command = std::process::Command::new(weir_bin());
        command
            .args(["filter", "test"])
            .arg(filter_wasm("tag_bots"))
            .arg("--events")
            .arg(&events)
            .stdout(std::process::Stdio::null());
        if perfmap {
            command.env("WEIR_FILTER_PERFMAP", "1");
        } else {
            command.env_remove("WEIR_FILTER_PERFMAP");
        }
        let mut child = command.spawn().unwrap();
        let map = std::path::PathBuf::from(format!("/tmp/perf-{}.map", child.id()));
        assert!(child.wait().unwrap().success());
        // (A map left by an earlier process with the same pid is older.)
        let written = std::fs::metadata(&map)
            .and_then(|m| m.modified())
            .is_ok_and(|at| at >= started);
        let text = std::fs::read_to_string(&map).unwrap_or_default();
        if written {
            let _ = std::fs::remove_file(&map);
        }
        (written, text)
    };
    let (written, text) = run(true);
    assert!(written, "no perf map written");
    assert!(text.lines().any(|line| line.contains("wasm[")), "{text}");
    assert!(!run(false).0, "a perf map written without the variable");
}

#[test]
fn weir_filter_test_repeats_and_keeps_a_calls_counters_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.json");
    let list: Vec<Value> = (0..40).map(|i| json!({"id": format!("e{i}")})).collect();
    std::fs::write(&events, Value::Array(list).to_string()).unwrap();
    // Backend ids come from the events' ids: `sample` decides the same way
    // in every run (on a node each upload gets new ones).
    let verdicts = || {
        let output = filter_test("sample", &events, &["--config", r#"{"rate": 0.5}"#]);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{text}");
        text.lines()
            .filter(|line| line.starts_with("  e"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let first = verdicts();
    assert_eq!(first.len(), 40, "{first:?}");
    let kept = first.iter().filter(|line| line.ends_with(": keep")).count();
    assert!((8..=32).contains(&kept), "kept {kept} of 40 at rate 0.5");
    assert_eq!(verdicts(), first);
    // A call keeps 64 counter names: the 63 first, and `other` for the rest.
    let output = filter_test("hostile_filter", &events, &["--config", "counters"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("counter c62 = 1"), "{text}");
    assert!(!text.contains("counter c63 "), "{text}");
    assert!(text.contains("counter other = 7"), "{text}");
    // The output cap bounds what a call hands back, not the load: the
    // snapshot of `init`'s state reads the guest's whole memory (≈ 700 KiB).
    let output = filter_test("sample", &events, &["--max-output-bytes", "1024"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("calls start from its snapshot"), "{text}");
}

/// A field is there whatever its value: `1e999` is JSON a node takes, and
/// no `serde_json::Value`; `null` is no value.
#[test]
fn require_fields_takes_any_json_value_as_present() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.json");
    std::fs::write(
        &events,
        r#"[{"id": "big", "amount": 1e999}, {"id": "none", "amount": null}, {"id": "small", "amount": 1.50}]"#,
    )
    .unwrap();
    let output = filter_test(
        "require_fields",
        &events,
        &["--config", r#"{"fields": ["amount"]}"#],
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("  big: keep"), "{text}");
    assert!(
        text.contains("  none: drop (missing required field amount)"),
        "{text}"
    );
    assert!(text.contains("  small: keep"), "{text}");
}

#[test]
fn weir_filter_test_prints_each_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.json");
    std::fs::write(
        &events,
        r#"[{"id": "a", "email": "ann@example.com"}, {"id": "b", "n": 1}]"#,
    )
    .unwrap();
    let output = filter_test("redact_pii", &events, &["--config", r##"{"mask": "#"}"##]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Only the string is rewritten: the rest is the event's text as written.
    assert!(
        text.contains(r##"  a: replace {"id": "a", "email": "#"}"##),
        "{text}"
    );
    assert!(text.contains("  b: keep"), "{text}");
    assert!(text.contains("counter masked = 1"), "{text}");

    // As on a node: the filter sees each event's text as written, and a
    // replacement that is not a JSON object is a failure for that event.
    let output = filter_test("hostile_filter", &events, &["--config", "echo"]);
    let text = String::from_utf8_lossy(&output.stdout);
    let echoed: Value = text
        .lines()
        .find_map(|line| line.strip_prefix("  a: replace "))
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(echoed["body"], r#"{"id": "a", "email": "ann@example.com"}"#);
    let output = filter_test("hostile_filter", &events, &["--config", "non-json"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(
            "  b: failed: replaced the event with text that is not JSON (on a node, on_error decides)"
        ),
        "{text}"
    );

    let output = filter_test(
        "hostile_filter",
        &events,
        &["--config", "loop", "--timeout-ms", "50"],
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("the filter failed: ran past its CPU deadline of 50 ms"));
    // `init` ran once, when the filter was loaded, and the call started from
    // its snapshot: the call's own log has no line of `init`.
    let output = filter_test("hostile_filter", &events, &["--config", "keep"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("compile + init (once: calls start from its snapshot)"),
        "{text}"
    );
    assert!(
        text.contains("log info (init): hostile filter in mode keep"),
        "{text}"
    );
    assert!(text.contains("log info: 2 events in mode keep"), "{text}");
    assert!(!text.contains("log info: hostile filter"), "{text}");

    // Events a node would refuse are reported so, and not filtered.
    let odd = dir.path().join("odd.json");
    std::fs::write(&odd, r#"[{"id": "a"}, {"no": "id"}, {"id": "a"}]"#).unwrap();
    let output = filter_test("hostile_filter", &odd, &["--config", "keep"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("  a: keep"), "{text}");
    assert!(
        text.contains("  data[1]: invalid (data[1].id: missing; not filtered)"),
        "{text}"
    );
    assert!(
        text.contains("  a: invalid (data[2].id: 'a' is a duplicate of data[0].id; not filtered)"),
        "{text}"
    );
    assert!(text.contains("log info: 1 events in mode keep"), "{text}");

    // The same cap holds for `init`, which runs when the filter is loaded.
    let output = filter_test(
        "hostile_filter",
        &events,
        &["--config", "init-loop", "--timeout-ms", "50"],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ran past its CPU deadline of 50 ms"),
        "{stderr}"
    );

    // Fuel: an exact cap, reached long before the (generous) deadline; and
    // enough of it changes nothing for a filter that behaves.
    let run = |filter: &str, config: &str, fuel: &str| {
        filter_test(
            filter,
            &events,
            &["--config", config, "--timeout-ms", "60000", "--fuel", fuel],
        )
    };
    let started = Instant::now();
    let output = run("hostile_filter", "loop", "1000000");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("the filter failed: ran out of its fuel of 1000000"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    let output = run("redact_pii", r##"{"mask": "#"}"##, "100000000");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    // Only the string is rewritten: the rest is the event's text as written.
    assert!(
        text.contains(r##"  a: replace {"id": "a", "email": "#"}"##),
        "{text}"
    );
}

/// The deepest event a node can be configured to take (`max_depth` 128:
/// the event itself and 125 levels inside it) is read by a filter's JSON
/// reader within the guest's 128 KiB stack; one level more is refused by
/// the node before any filter sees it.
#[test]
fn a_filter_reads_the_deepest_event_a_node_takes() {
    let dir = tempfile::tempdir().unwrap();
    let deep = |levels: usize| {
        let path = dir.path().join(format!("deep{levels}.json"));
        let nested = format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        std::fs::write(
            &path,
            format!(r#"[{{"id": "deep", "x": {nested}, "user": "u"}}]"#),
        )
        .unwrap();
        path
    };
    let args = ["--config", r#"{"fields": ["user"]}"#, "--max-depth", "128"];
    let output = filter_test("require_fields", &deep(125), &args);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("  deep: keep"), "{text}");
    let output = filter_test("require_fields", &deep(126), &args);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("(too_deep)"), "{stderr}");
}

/// The guest SDK's arena: a 50-event batch is handed over and filtered
/// without the guest's memory growing (what spares the host an `mprotect`
/// pair per batch); a batch larger than the arena still works, on memory
/// grown past it.
#[test]
fn the_sdk_arena_takes_a_batch_without_growing_memory() {
    let dir = tempfile::tempdir().unwrap();
    let pages = |events: usize, pad: usize| {
        let path = dir.path().join(format!("{events}x{pad}.json"));
        let batch: Vec<Value> = (0..events)
            .map(|i| json!({"id": format!("e{i}"), "pad": "x".repeat(pad)}))
            .collect();
        std::fs::write(&path, serde_json::to_vec(&batch).unwrap()).unwrap();
        let output = filter_test("hostile_filter", &path, &["--config", "pages"]);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{text}");
        let verdicts: Vec<(usize, usize)> = text
            .lines()
            .filter_map(|line| line.split_once(": drop (pages ")?.1.strip_suffix(')'))
            .map(|pages| {
                let (init, now) = pages.split_once(' ').unwrap();
                (init.parse().unwrap(), now.parse().unwrap())
            })
            .collect();
        assert_eq!(verdicts.len(), events, "{text}");
        verdicts[0]
    };
    let (init, now) = pages(50, 380);
    assert_eq!(now, init, "a 50 × 400 B batch fits the arena");
    let (init, now) = pages(40, 60_000);
    assert!(
        now > init,
        "2.4 MB does not fit a 512 KiB arena: {init} → {now}"
    );
}

/// More calls at once than the instance pool holds all get their verdicts:
/// a call waits for an instance rather than fail for want of one (which,
/// fail-open, would let events through unfiltered). Ten filters, each
/// called 20 times at once by one task, each call yielding a few times:
/// 200 calls in flight, against a pool of `MAX_INSTANCES`.
#[test]
fn more_calls_at_once_than_the_pool_holds_all_get_verdicts() {
    use weir::pipeline::filter::host::{BatchInput, Caps, FilterEngine, Verdict, MAX_INSTANCES};
    let bytes = std::fs::read(wasm("hostile_filter")).unwrap();
    let caps = Caps {
        memory_bytes: 16 << 20,
        timeout: Duration::from_secs(60),
        max_output_bytes: 1 << 20,
        fuel: None,
    };
    let engine = FilterEngine::new();
    let filters: Vec<_> = (0..10)
        .map(|_| engine.compile(&bytes, "slow", caps).unwrap())
        .collect();
    let calls = filters.len() * 20;
    assert!(calls > MAX_INSTANCES as usize);
    let mut batch = BatchInput::with_capacity("acme", "PERF", 0, 2);
    batch.push(1, "a", None, None, b"{}");
    batch.push(2, "b", None, None, b"{}");
    let in_use = engine.instances();
    let most = AtomicUsize::new(0);
    let called = futures::executor::block_on(futures::future::join_all(
        filters.iter().cycle().take(calls).map(|filter| async {
            let called = filter.call(&batch).await;
            most.fetch_max(in_use() as usize, Ordering::Relaxed);
            called
        }),
    ));
    for c in &called {
        let verdicts = c.outcome.as_ref().expect("every call gets verdicts");
        assert!(matches!(verdicts[..], [Verdict::Keep, Verdict::Keep]));
    }
    let most = most.into_inner();
    assert!(
        (2..=MAX_INSTANCES as usize).contains(&most),
        "{most} instances at once"
    );
}

/// The `data` of each record, by its event id.
fn data_by_id(records: &[weir_e2e::Record]) -> BTreeMap<String, Value> {
    records
        .iter()
        .map(|r| {
            (
                r.value["id"].as_str().unwrap().to_owned(),
                r.value["data"].clone(),
            )
        })
        .collect()
}

/// `weir_filter_calls_total` of the hostile filter with `outcome`, summed over tenants.
fn hostile_calls(samples: &BTreeMap<String, f64>, outcome: &str) -> f64 {
    scrape::sum(
        samples,
        "weir_filter_calls_total",
        &[("filter", "hostile_filter"), ("outcome", outcome)],
    )
}
