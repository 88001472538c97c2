//! The node observed from outside: after known traffic, `/metrics` on the
//! admin listener counts exactly what was sent, in valid Prometheus text;
//! spans and metrics reach a real OTLP receiver (HTTP and gRPC) with their
//! structure, the client's trace id and their attributes; log lines join
//! requests and traces.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use weir_e2e::otlp::Receiver;
use weir_e2e::scrape::{parse, sum};
use weir_e2e::{
    category, consume, contract, eventually, get, kafka, poll_until, post, tenant, unique, Node,
};

/// The config of one tenant, `acme`, with key `k`.
fn acme() -> String {
    tenant("acme", "k", "")
}

/// Runs promtool (from Debian's package, fetched by `scripts/setup.sh
/// --tests` where apt can) with `input` on stdin and asserts it succeeds;
/// without promtool, says so and checks nothing.
fn promtool(args: &[&str], input: &str) {
    let promtool = weir_e2e::root().join("var/bin/promtool");
    if !promtool.exists() {
        eprintln!("promtool not installed (scripts/setup.sh --tests): `promtool {args:?}` skipped");
        return;
    }
    let mut child = std::process::Command::new(&promtool)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
    let checked = child.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_exactly_what_was_sent() {
    let category = category("obs", 1).await;
    let config = acme();
    let node = Node::start(&config, &[("WEIR_KAFKA_BROKERS", kafka())]).unwrap();
    let ok = |n: usize| {
        let data: Vec<_> = (0..n).map(|i| json!({"id": format!("e{i}")})).collect();
        json!({"meta": {"category": category}, "data": data}).to_string()
    };
    assert_eq!(post(&node, "k", ok(3)).await.unwrap().status, 200);
    assert_eq!(post(&node, "k", ok(3)).await.unwrap().status, 200);
    let partial =
        json!({"meta": {"category": category}, "data": [{"id": "a"}, {"no": "id"}]}).to_string();
    assert_eq!(post(&node, "k", partial).await.unwrap().status, 207);
    assert_eq!(post(&node, "k", "{not json").await.unwrap().status, 400);
    assert_eq!(
        post(&node, "k", json!({"meta": {}, "data": []}).to_string())
            .await
            .unwrap()
            .status,
        400
    );
    assert_eq!(post(&node, "wrong", ok(1)).await.unwrap().status, 401);

    let admin = node.admin.clone().unwrap();
    let answer = get(&admin, "/metrics").await.unwrap();
    assert_eq!(answer.status, 200);
    assert!(answer
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(answer.body.to_vec()).unwrap();
    let samples = parse(&text);
    // Prometheus' own linter accepts the exposition (when installed).
    promtool(&["check", "metrics"], &text);

    let uploads = |outcome| sum(&samples, "weir_uploads_total", &[("outcome", outcome)]);
    assert_eq!(uploads("all_upload"), 6.0, "{text}");
    assert_eq!(uploads("success_upload"), 2.0);
    assert_eq!(uploads("wrong_meta"), 1.0);
    assert_eq!(uploads("wrong_data"), 2.0);

    let events = |code| {
        sum(
            &samples,
            "weir_events_total",
            &[("tenant", "acme"), ("category", &category), ("code", code)],
        )
    };
    assert_eq!(events("ok"), 7.0);
    assert_eq!(events("invalid"), 1.0);

    let requests = |status, tenant| {
        sum(
            &samples,
            "weir_http_requests_total",
            &[
                ("route", "/v1/batch"),
                ("status", status),
                ("tenant", tenant),
            ],
        )
    };
    assert_eq!(requests("200", "acme"), 2.0);
    assert_eq!(requests("207", "acme"), 1.0);
    assert_eq!(requests("400", "acme"), 2.0);
    assert_eq!(requests("401", "-"), 1.0);
    assert_eq!(
        sum(
            &samples,
            "weir_http_request_duration_seconds_count",
            &[("route", "/v1/batch")]
        ),
        6.0
    );
    assert_eq!(
        sum(
            &samples,
            "weir_stage_duration_seconds_count",
            &[("stage", "produce")]
        ),
        3.0
    );
    assert_eq!(
        sum(
            &samples,
            "weir_stage_duration_seconds_count",
            &[("stage", "decode")]
        ),
        5.0
    );
    assert_eq!(
        sum(
            &samples,
            "weir_stage_duration_seconds_count",
            &[("stage", "turn")]
        ),
        5.0,
        "every request decoded waited for its turn first"
    );
    assert_eq!(
        sum(
            &samples,
            "weir_stage_duration_seconds_count",
            &[("stage", "deliver")]
        ),
        3.0,
        "the wait for Kafka is its own stage"
    );
    // Saturation: the scrape's own connection is open on the admin listener.
    assert!(
        sum(&samples, "weir_open_connections", &[("listener", "admin")]) >= 1.0,
        "{text}"
    );
    // A gauge read as 0 must be there: `sum` is 0 for a missing series too.
    for gauge in [
        "weir_inflight_requests",
        "weir_kafka_queue_messages",
        "weir_filter_instances",
    ] {
        assert!(
            samples
                .keys()
                .any(|k| k == gauge || k.starts_with(&format!("{gauge}{{"))),
            "{gauge} missing: {text}"
        );
    }
    assert_eq!(sum(&samples, "weir_inflight_requests", &[]), 0.0);
    assert_eq!(
        sum(&samples, "weir_inflight_requests_max", &[]),
        1024.0,
        "server.max_inflight's default"
    );
    assert_eq!(sum(&samples, "weir_kafka_queue_messages", &[]), 0.0);
    assert_eq!(sum(&samples, "weir_filter_instances", &[]), 0.0);
    assert_eq!(sum(&samples, "weir_filter_instances_max", &[]), 128.0);
    assert!(sum(&samples, "weir_runtime_workers", &[]) >= 1.0);
    assert!(sum(&samples, "weir_runtime_busy_seconds_total", &[]) > 0.0);
    for family in [
        "weir_kafka_queue_bytes",
        "weir_kafka_queue_max_bytes",
        "weir_kafka_queue_max_messages",
    ] {
        assert!(
            samples.keys().any(|k| k.starts_with(family)),
            "{family} missing: {text}"
        );
    }
    // Bounded labels: never a device, IP, event or request id.
    assert!(
        !text.contains("\"e0\"") && !text.contains("127.0.0.1"),
        "{text}"
    );
}

/// Every `weir_*` metric name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("weir_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_and_alert_rules_use_only_metrics_a_node_exposes() {
    let category = category("obsd", 1).await;
    let pass = weir_e2e::filter_wasm("pass_through");
    // librdkafka's statistics twice a second, so its broker metrics appear soon.
    let acme = tenant(
        "acme",
        "k",
        &format!("[[tenants.filters]]\npath = \"{}\"", pass.display()),
    );
    let config = format!("[kafka.producer]\n\"statistics.interval.ms\" = \"500\"\n{acme}");
    // With a spool, as the shipped manifests run it.
    let spool = tempfile::tempdir().unwrap();
    let spool_path = spool.path().to_str().unwrap();
    // And region-wide quotas on a real Redis.
    let redis = weir_e2e::Redis::start();
    let env = [
        ("WEIR_KAFKA_BROKERS", kafka()),
        ("WEIR_SPOOL_PATH", spool_path),
        ("WEIR_REDIS_URL", redis.url.as_str()),
    ];
    let node = Node::start(&config, &env).unwrap();
    let body = json!({"meta": {"category": category}, "data": [{"id": "a"}]}).to_string();
    assert_eq!(post(&node, "k", body).await.unwrap().status, 200);
    // Up to 10 s for librdkafka's broker metrics; the exposition as it is
    // then either way (the checks below name any metric missing).
    let text = poll_until(Duration::from_secs(10), || async {
        let text = String::from_utf8(
            get(&node.admin.clone().unwrap(), "/metrics")
                .await
                .unwrap()
                .body
                .to_vec(),
        )
        .unwrap();
        if text.contains("weir_kafka_broker_rtt_p99_seconds{") {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .await
    .unwrap_or_else(|text| text);
    let exposed: std::collections::BTreeSet<String> = parse(&text)
        .keys()
        .map(|series| series.split('{').next().unwrap().to_owned())
        .collect();

    let root = weir_e2e::root().join("deploy/observability");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("dashboard.json")).unwrap())
            .unwrap();
    let mut expressions: Vec<String> = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            // Grafana's variables stand for label regexes.
            let expr = target["expr"].as_str().expect("expr");
            expressions.push(expr.replace("$instance", ".*").replace("$tenant", ".*"));
        }
    }
    // The variables' own queries name metrics too.
    let mut variables = Vec::new();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if let Some(query) = variable["definition"].as_str() {
            variables.push(query.to_owned());
        }
    }
    assert!(
        variables.iter().any(|v| v.contains("region")),
        "a region variable"
    );
    let rules: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("alerts.yml")).unwrap()).unwrap();
    let mut alerts = 0;
    for group in rules["groups"].as_array().expect("groups") {
        assert!(group["name"].is_string());
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().expect("every rule is an alert");
            assert!(rule["labels"]["severity"].is_string(), "{name}: severity");
            assert!(
                rule["annotations"]["runbook"]
                    .as_str()
                    .is_some_and(|r| !r.is_empty()),
                "{name}: runbook"
            );
            assert!(
                rule["annotations"]["summary"].is_string(),
                "{name}: summary"
            );
            let expr = rule["expr"].as_str().expect("expr");
            expressions.push(expr.to_owned());
            alerts += 1;
        }
    }
    assert!(alerts >= 10);
    // Every expression is valid PromQL (Prometheus' grammar, as ported by promql-parser).
    for expr in &expressions {
        if let Err(e) = promql_parser::parser::parse(expr) {
            panic!("not valid PromQL: {e}\n{expr}");
        }
    }
    // And the rules file is what Prometheus loads (promtool from Debian's
    // package, fetched by scripts/setup.sh --tests where apt can).
    let rules = root.join("alerts.yml");
    promtool(&["check", "rules", rules.to_str().unwrap()], "");
    let mut used = 0;
    for expr in expressions.iter().chain(&variables) {
        for name in metric_names(expr) {
            assert!(
                exposed.contains(&name),
                "{name} (in `{expr}`) is not exposed; exposed: {exposed:?}"
            );
            used += 1;
        }
    }
    assert!(used > expressions.len(), "every expression names a metric");

    // The Collector takes OTLP and sends traces to Jaeger, metrics to Prometheus.
    let collector: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("collector.yaml")).unwrap())
            .expect("collector.yaml is YAML");
    let pipelines = &collector["service"]["pipelines"];
    assert_eq!(pipelines["traces"]["receivers"], json!(["otlp"]));
    assert_eq!(pipelines["traces"]["exporters"], json!(["otlp/jaeger"]));
    assert_eq!(pipelines["metrics"]["receivers"], json!(["otlp"]));
    assert_eq!(
        pipelines["metrics"]["exporters"],
        json!(["prometheusremotewrite"])
    );
    for pipeline in ["traces", "metrics"] {
        for part in ["receivers", "processors", "exporters"] {
            for name in pipelines[pipeline][part].as_array().unwrap() {
                let name = name.as_str().unwrap();
                assert!(
                    collector[part].get(name).is_some(),
                    "{pipeline} uses {part} {name}, which is not defined"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn log_lines_carry_the_request_and_trace_ids_and_never_the_key() {
    let config = tenant("acme", "the-secret-key", "");
    let node = Node::start(&config, &[("WEIR_KAFKA_BROKERS", kafka())]).unwrap();
    let request = weir_e2e::batch_request(
        Some("the-secret-key"),
        "{broken",
        &[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("x-request-id", "log-test-1"),
        ],
    );
    let answer = weir_e2e::send(&weir_e2e::Transport::Http, &node.http, request)
        .await
        .unwrap();
    assert_eq!(answer.status, 400);
    let line = eventually(
        Duration::from_secs(5),
        "an 'upload refused' log line",
        || async {
            let logs = node.log_text();
            let line = logs.lines().find(|l| l.contains("upload refused"));
            line.map(str::to_owned).ok_or(logs)
        },
    )
    .await;
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["span"]["request_id"], "log-test-1", "{line}");
    assert_eq!(
        line["span"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{line}"
    );
    assert_eq!(line["span"]["tenant"], "acme", "{line}");
    // The node's own request span: 16 hex digits, not the client's span.
    let span_id = line["span"]["span_id"].as_str().unwrap_or_default();
    assert_eq!(span_id.len(), 16, "{line}");
    assert_ne!(span_id, "00f067aa0ba902b7", "{line}");
    assert_eq!(line["error"], "malformed_json");
    assert!(
        !node.log_text().contains("the-secret-key"),
        "an API key was logged"
    );
}

/// A node exporting to `receiver` over `protocol`, with batches of spans and
/// metrics sent every 200 ms.
/// A node exporting to `receiver`, with the tenant `acme` and `tenants`.
fn exporting_node(receiver: &Receiver, protocol: &str, ratio: &str, tenants: &str) -> Node {
    let config = format!(
        "[telemetry]\nmetrics_interval_ms = 300\nenvironment = \"test\"\nregion = \"eu-test-1\"\n{}{tenants}",
        acme()
    );
    Node::start(
        &config,
        &[
            ("WEIR_KAFKA_BROKERS", kafka()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_TRACES_SAMPLER_ARG", ratio),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_RESOURCE_ATTRIBUTES", "k8s.pod.name=weir-0"),
        ],
    )
    .unwrap()
}

/// Posts `body` with `key` in the trace `trace_id`, which must get 503, and
/// returns the request's span as the collector received it.
async fn span_of_a_503(
    node: &Node,
    receiver: &Receiver,
    key: &str,
    body: Value,
    trace_id: &str,
) -> weir_e2e::otlp::ReceivedSpan {
    let traceparent = format!("00-{trace_id}-b7ad6b7169203331-01");
    let request = weir_e2e::batch_request(
        Some(key),
        body.to_string(),
        &[("traceparent", &traceparent)],
    );
    let answer = weir_e2e::send(&weir_e2e::Transport::Http, &node.http, request)
        .await
        .unwrap();
    assert_eq!(answer.status, 503, "{}", answer.json());
    let is_it = |s: &weir_e2e::otlp::ReceivedSpan| {
        s.trace_id() == trace_id && s.span.name == "POST /v1/batch"
    };
    let spans = receiver
        .wait_for_spans(Duration::from_secs(15), |spans| spans.iter().any(is_it))
        .await;
    spans
        .into_iter()
        .find(|s| is_it(s))
        .expect("the request's span")
}

async fn spans_of_a_posted_batch_reach_the_collector(receiver: Receiver, protocol: &str) {
    let category = category("otlp", 1).await;
    // A tenant whose filter always traps, fail-closed: its uploads get 503.
    let trapped = tenant(
        "trapped",
        "t",
        &format!(
            "[[tenants.filters]]\npath = \"{}\"\nconfig = \"trap\"\non_error = \"fail-closed\"",
            weir_e2e::filter_wasm("hostile_filter").display()
        ),
    );
    let node = exporting_node(&receiver, protocol, "1.0", &trapped);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let body =
        json!({"meta": {"category": category}, "data": [{"id": "a"}, {"id": "b"}, {"no": "id"}]});
    let request = weir_e2e::batch_request(
        Some("k"),
        body.to_string(),
        &[("traceparent", &format!("00-{trace_id}-{client_span}-01"))],
    );
    let answer = weir_e2e::send(&weir_e2e::Transport::Http, &node.http, request)
        .await
        .unwrap();
    assert_eq!(answer.status, 207);
    let names = [
        "POST /v1/batch",
        "read_body",
        "turn",
        "decode",
        "validate",
        "enrich",
        "produce",
    ];
    let spans = receiver
        .wait_for_spans(Duration::from_secs(15), |spans| {
            names.iter().all(|n| {
                spans
                    .iter()
                    .any(|s| s.trace_id() == trace_id && s.span.name == *n)
            })
        })
        .await;
    let ours: Vec<_> = spans.iter().filter(|s| s.trace_id() == trace_id).collect();
    let named = |name: &str| {
        ours.iter()
            .find(|s| s.span.name == name)
            .unwrap_or_else(|| panic!("no span {name} in the client's trace: {ours:#?}"))
    };
    let ingest = named("POST /v1/batch");
    assert_eq!(
        ingest.parent_id(),
        client_span,
        "the request span continues the client's trace"
    );
    for stage in &names[1..] {
        assert_eq!(
            named(stage).parent_id(),
            ingest.span_id(),
            "{stage} is a child of the request span"
        );
    }
    assert_eq!(ingest.attribute("tenant").as_deref(), Some("acme"));
    assert_eq!(
        ingest.attribute("category").as_deref(),
        Some(category.as_str())
    );
    assert_eq!(ingest.attribute("events").as_deref(), Some("3"));
    assert_eq!(
        ingest.attribute("http.response.status_code").as_deref(),
        Some("207")
    );
    assert_eq!(named("validate").attribute("invalid").as_deref(), Some("1"));
    let produce = named("produce");
    assert_eq!(produce.attribute("delivered").as_deref(), Some("2"));
    assert_eq!(produce.attribute("failed").as_deref(), Some("0"));
    assert_eq!(
        produce.attribute("messaging.destination.name"),
        Some(format!("events.{category}"))
    );
    // The record's traceparent names the exported produce span.
    let records = consume(kafka(), &format!("events.{category}"), 2).unwrap();
    let traceparent = &records[0].headers["traceparent"];
    assert_eq!(
        traceparent,
        &format!("00-{trace_id}-{}-01", produce.span_id())
    );
    // The resource names the node.
    assert_eq!(
        ingest.resource_attribute("service.name").as_deref(),
        Some("weir")
    );
    assert_eq!(
        ingest.resource_attribute("service.version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        ingest
            .resource_attribute("deployment.environment")
            .as_deref(),
        Some("test")
    );
    assert_eq!(
        ingest.resource_attribute("cloud.region").as_deref(),
        Some("eu-test-1")
    );
    assert!(ingest.resource_attribute("host.name").is_some());
    assert_eq!(
        ingest.resource_attribute("k8s.pod.name").as_deref(),
        Some("weir-0"),
        "the operator's own attributes"
    );

    // A server-side failure is an error on the span, with its reason:
    // a category whose topic does not exist is a 503.
    let missing = unique("nosuchtopic");
    let body = json!({"meta": {"category": missing}, "data": [{"id": "a"}]});
    let failed = span_of_a_503(
        &node,
        &receiver,
        "k",
        body,
        "0af7651916cd43dd8448eb211c80319c",
    )
    .await;
    let status = failed.span.status.clone().expect("a status");
    assert_eq!(status.code, 2, "STATUS_CODE_ERROR: {status:?}");
    assert!(!status.message.is_empty());
    assert_eq!(
        failed.attribute("error.type").as_deref(),
        Some("delivery_failed"),
        "{failed:?}"
    );
    // A filter that fails, fail-closed, is named as the cause.
    let body = json!({"meta": {"category": category}, "data": [{"id": "a"}]});
    let failed = span_of_a_503(
        &node,
        &receiver,
        "t",
        body,
        "1af7651916cd43dd8448eb211c80319c",
    )
    .await;
    assert_eq!(
        failed.attribute("error.type").as_deref(),
        Some("filter_error"),
        "{failed:?}"
    );

    // Metrics go out over OTLP too.
    eventually(
        Duration::from_secs(15),
        "a weir.events metric over OTLP",
        || async {
            let names = receiver.metric_names();
            if names.iter().any(|n| n == "weir.events") {
                Ok(())
            } else {
                Err(format!("{names:?}"))
            }
        },
    )
    .await;
    for name in [
        "weir.http.requests",
        "weir.http.request.duration",
        "weir.stage.duration",
        "weir.uploads",
    ] {
        assert!(
            receiver.metric_names().iter().any(|n| n == name),
            "{name} not exported"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_and_metrics_are_exported_over_otlp_http() {
    let receiver = Receiver::http().await.unwrap();
    spans_of_a_posted_batch_reach_the_collector(receiver, "http/protobuf").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_and_metrics_are_exported_over_otlp_grpc() {
    let receiver = Receiver::grpc().await.unwrap();
    spans_of_a_posted_batch_reach_the_collector(receiver, "grpc").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn new_traces_are_sampled_at_the_ratio_and_a_client_decision_is_followed() {
    let receiver = Receiver::http().await.unwrap();
    let category = category("sampled", 1).await;
    let node = exporting_node(&receiver, "http/protobuf", "0", "");
    let body = json!({"meta": {"category": category}, "data": [{"id": "a"}]}).to_string();
    // No traceparent: a new trace, sampled at ratio 0 → never exported.
    for _ in 0..5 {
        assert_eq!(post(&node, "k", body.clone()).await.unwrap().status, 200);
    }
    // The client sampled its trace: followed despite the ratio.
    let sampled = "11111111111111111111111111111111";
    let request = weir_e2e::batch_request(
        Some("k"),
        body.clone(),
        &[("traceparent", &format!("00-{sampled}-2222222222222222-01"))],
    );
    let answer = weir_e2e::send(&weir_e2e::Transport::Http, &node.http, request)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    let spans = receiver
        .wait_for_spans(Duration::from_secs(15), |spans| {
            spans
                .iter()
                .any(|s| s.trace_id() == sampled && s.span.name == "produce")
        })
        .await;
    assert!(spans
        .iter()
        .any(|s| s.trace_id() == sampled && s.span.name == "POST /v1/batch"));
    assert!(
        spans.iter().all(|s| s.trace_id() == sampled),
        "unsampled traces were exported: {:?}",
        spans.iter().map(|s| s.trace_id()).collect::<BTreeSet<_>>()
    );
    // Unsampled requests still propagate: their records carry a traceparent flagged 00.
    let records = consume(kafka(), &format!("events.{category}"), 6).unwrap();
    let flags: BTreeSet<String> = records
        .iter()
        .map(|r| {
            r.headers["traceparent"]
                .rsplit('-')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(flags, BTreeSet::from(["00".to_owned(), "01".to_owned()]));
}

#[tokio::test(flavor = "multi_thread")]
async fn with_tracing_off_records_carry_the_clients_trace_context_or_a_new_one() {
    let category = category("notrace", 1).await;
    let config = acme();
    let node = Node::start(
        &config,
        &[
            ("WEIR_KAFKA_BROKERS", kafka()),
            ("WEIR_TELEMETRY_TRACES", "off"),
        ],
    )
    .unwrap();
    let body = json!({"meta": {"category": category}, "data": [{"id": "a"}]}).to_string();
    let client = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let request = weir_e2e::batch_request(Some("k"), body.clone(), &[("traceparent", client)]);
    let answer = weir_e2e::send(&weir_e2e::Transport::Http, &node.http, request)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    let two = json!({"meta": {"category": category}, "data": [{"id": "b"}, {"id": "c"}]});
    assert_eq!(post(&node, "k", two.to_string()).await.unwrap().status, 200);
    let records = consume(kafka(), &format!("events.{category}"), 3).unwrap();
    assert_eq!(
        records[0].headers.get("traceparent").map(String::as_str),
        Some(client)
    );
    // No trace context sent: the records still carry one, of a new trace
    // (the request's, shared by its records), unsampled.
    let made: Vec<Vec<&str>> = records[1..]
        .iter()
        .map(|r| r.headers["traceparent"].split('-').collect())
        .collect();
    for parts in &made {
        assert_eq!(parts.len(), 4, "{parts:?}");
        assert_eq!((parts[0], parts[3]), ("00", "00"), "{parts:?}");
        assert_eq!((parts[1].len(), parts[2].len()), (32, 16), "{parts:?}");
        assert_ne!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736");
    }
    assert_eq!(made[0], made[1], "one request, one trace context");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_profile_whose_client_left_does_not_block_the_next() {
    let node = Node::start(&acme(), &[("WEIR_KAFKA_BROKERS", kafka())]).unwrap();
    let admin = node.admin.clone().unwrap();
    // The client gives up long before its 1 s profile ends.
    let gone = tokio::time::timeout(
        Duration::from_millis(200),
        get(&admin, "/debug/pprof/profile?seconds=1"),
    )
    .await;
    assert!(gone.is_err(), "the profile answered within 200 ms");
    // Once that profile has run its course (sampled, then symbolised), the
    // next one is taken; before, the node refused every later one (409).
    let next = eventually(
        Duration::from_secs(30),
        "a profile not refused (409) once the abandoned one ended",
        || async {
            let next = get(&admin, "/debug/pprof/profile?seconds=1").await.unwrap();
            match next.status {
                409 => Err(String::from_utf8_lossy(&next.body).into_owned()),
                _ => Ok(next),
            }
        },
    )
    .await;
    assert_eq!(next.status, 200, "{}", String::from_utf8_lossy(&next.body));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cpu_profile_is_taken_under_load() {
    let category = category("prof", 1).await;
    let config = acme();
    let node =
        std::sync::Arc::new(Node::start(&config, &[("WEIR_KAFKA_BROKERS", kafka())]).unwrap());
    let admin = node.admin.clone().unwrap();
    // Load: four clients posting 50-event batches until the profiles are taken.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (node, stop, category) = (node.clone(), stop.clone(), category.clone());
            tokio::spawn(async move {
                let data: Vec<_> = (0..50)
                    .map(|i| json!({"id": format!("e{i}"), "pad": "x".repeat(300)}))
                    .collect();
                let body = json!({"meta": {"category": category}, "data": data}).to_string();
                let mut ok = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if post(&node, "k", body.clone())
                        .await
                        .is_ok_and(|a| a.status == 200)
                    {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    // Two at once: whichever starts first profiles, the other is refused.
    let (first, second) = tokio::join!(
        get(&admin, "/debug/pprof/profile?seconds=2"),
        get(&admin, "/debug/pprof/profile?seconds=1")
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    let mut statuses = [first.status, second.status];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "one profile at a time");
    let (profile, seconds, refused) = match first.status {
        200 => (first, 2, second),
        _ => (second, 1, first),
    };
    contract::check_answer("get", "/debug/pprof/profile", 409, &refused.json());
    assert_eq!(refused.json()["error"], "profile_running");
    let svg = get(&admin, "/debug/pprof/profile?seconds=1&format=flamegraph")
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut posted = 0;
    for task in load {
        posted += task.await.unwrap();
    }
    assert!(posted > 0);

    assert_eq!(profile.status, 200);
    let mut encoded = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&profile.body[..]),
        &mut encoded,
    )
    .expect("gzipped");
    let decoded: pprof::protos::Profile =
        pprof::protos::Message::decode(&encoded[..]).expect("a pprof protobuf");
    assert!(!decoded.sample.is_empty(), "no samples under load");
    let strings = &decoded.string_table;
    assert!(
        strings.iter().any(|s| s.contains("weir::")),
        "no weir function was sampled under load"
    );
    assert!(
        decoded.duration_nanos >= seconds * 950_000_000,
        "{} for {seconds} s",
        decoded.duration_nanos
    );

    assert_eq!(svg.status, 200);
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    assert!(String::from_utf8_lossy(&svg.body).contains("<svg"));

    let bad = get(&admin, "/debug/pprof/profile?seconds=9999")
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"], "invalid_query");
    contract::check_answer("get", "/debug/pprof/profile", 400, &bad.json());
}
