//! The handler's own tracing: one span per stage under the request span, in
//! the client's trace, and the Kafka record's `traceparent` names the
//! produce span. Spans are captured with the OpenTelemetry SDK's in-memory
//! exporter; Kafka is librdkafka's mock cluster.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::{Offset, TopicPartitionList};
use sha2::{Digest, Sha256};
use tracing_subscriber::layer::SubscriberExt;

use weir::config::Config;
use weir::node::Gateway;
use weir::pipeline::kafka::Producer;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn every_stage_is_a_child_span_in_the_clients_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("weir")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events.spans", 1, 1).unwrap();
    let config = Config::parse(&format!(
        "[[tenants]]\nname = \"acme\"\nkeys_sha256 = [\"{}\"]\n",
        hex::encode(Sha256::digest(b"k"))
    ))
    .unwrap();
    let producer = Producer::new(&config.kafka, &cluster.bootstrap_servers(), false).unwrap();
    let mut gateway = Gateway::new(&config, None, producer, None).unwrap();
    // Spans go to the in-memory exporter: the gateway records them.
    gateway.sampler = weir::ops::trace::RequestSampler::new(&Default::default(), true);
    let request = http::Request::post("/v1/batch")
        .header("authorization", "Bearer k")
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{TRACE}-{CLIENT_SPAN}-01"))
        .body(Full::new(Bytes::from_static(
            br#"{"meta":{"category":"spans"},"data":[{"id":"a"},{"id":"b"},{"x":1}]}"#,
        )))
        .unwrap();
    let response = weir::node::ingest::ingest(
        &gateway,
        request,
        weir::edge::listener::Peer::plain("127.0.0.1:9".parse().unwrap()),
        "rid-1",
    )
    .await;
    assert_eq!(response.status(), 207);
    let _ = response.into_body().collect().await;
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let by_name: HashMap<&str, _> = spans.iter().map(|s| (s.name.as_ref(), s)).collect();
    let ingest = by_name["POST /v1/batch"];
    assert_eq!(ingest.span_context.trace_id().to_string(), TRACE);
    assert_eq!(ingest.parent_span_id.to_string(), CLIENT_SPAN);
    assert!(ingest.parent_span_is_remote);
    let attribute = |span: &opentelemetry_sdk::trace::SpanData, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attribute(ingest, "tenant").as_deref(), Some("acme"));
    assert_eq!(attribute(ingest, "category").as_deref(), Some("spans"));
    assert_eq!(attribute(ingest, "request_id").as_deref(), Some("rid-1"));
    assert_eq!(
        attribute(ingest, "http.response.status_code").as_deref(),
        Some("207")
    );
    for stage in ["read_body", "decode", "validate", "enrich", "produce"] {
        let span = by_name
            .get(stage)
            .unwrap_or_else(|| panic!("no {stage} span in {:?}", by_name.keys()));
        assert_eq!(span.span_context.trace_id().to_string(), TRACE, "{stage}");
        assert_eq!(
            span.parent_span_id,
            ingest.span_context.span_id(),
            "{stage} is a child of the request span"
        );
    }
    assert_eq!(
        attribute(by_name["validate"], "events").as_deref(),
        Some("3")
    );
    assert_eq!(
        attribute(by_name["validate"], "invalid").as_deref(),
        Some("1")
    );
    assert_eq!(
        attribute(by_name["produce"], "messaging.destination.name").as_deref(),
        Some("events.spans")
    );

    // The records' traceparent: the client's trace, the produce span as parent.
    let produce_span = by_name["produce"].span_context.span_id().to_string();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "spans")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset("events.spans", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut seen = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while seen < 2 && std::time::Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.unwrap();
        let headers = message.headers().unwrap();
        let traceparent = headers
            .iter()
            .find(|h| h.key == "traceparent")
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap();
        assert_eq!(traceparent, format!("00-{TRACE}-{produce_span}-01"));
        seen += 1;
    }
    assert_eq!(seen, 2);
}
