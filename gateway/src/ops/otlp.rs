//! OTLP export of the node's own traces and metrics to a collector (gRPC or
//! HTTP/protobuf), and the resource that names the node in both.
//!
//! The SDK's batch span processor and periodic metric reader export from
//! threads of their own; the exporters are built inside the tokio runtime
//! so their I/O runs there (tonic's channel task, or the HTTP client below).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::KeyValue;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{
    MetricExporter, Protocol, SpanExporter, WithExportConfig as _, WithHttpConfig as _,
    WithTonicConfig as _,
};
use opentelemetry_sdk::resource::TelemetryResourceDetector;
use opentelemetry_sdk::Resource;

use crate::config::TelemetryConfig;

/// How long one export may take before it is abandoned.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The node as OpenTelemetry names it: `service.name`
/// (`telemetry.service_name`), `service.version`, `deployment.environment`,
/// `cloud.region`, `host.name` and `service.instance.id` (the host name),
/// the SDK's own `telemetry.sdk.*`, and `telemetry.resource_attributes`
/// (with `OTEL_RESOURCE_ATTRIBUTES`, read with the config), which win.
pub fn resource(config: &TelemetryConfig) -> Resource {
    let mut attributes = vec![
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("deployment.environment", config.environment.clone()),
        KeyValue::new("deployment.environment.name", config.environment.clone()),
        KeyValue::new("host.name", hostname()),
        // Unique per node: Prometheus' `instance` for OTLP metrics.
        KeyValue::new("service.instance.id", hostname()),
    ];
    if !config.region.is_empty() {
        attributes.push(KeyValue::new("cloud.region", config.region.clone()));
    }
    attributes.extend(
        config
            .resource_attributes
            .iter()
            .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
    );
    // Not `Resource::builder()`: its detectors read the process environment
    // on their own, and would override the config.
    Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes(attributes)
        .with_service_name(config.service_name.clone())
        .build()
}

/// This machine's name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn http_protocol(config: &TelemetryConfig) -> bool {
    config.otlp_protocol == "http/protobuf"
}

/// `base` + `/v1/traces` or `/v1/metrics` (the spec's rule for a base endpoint).
fn signal_url(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

fn metadata(headers: &std::collections::BTreeMap<String, String>) -> tonic::metadata::MetadataMap {
    let mut map = tonic::metadata::MetadataMap::new();
    for (key, value) in headers {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.to_ascii_lowercase().as_bytes()),
            value.parse(),
        ) {
            map.insert(key, value);
        }
    }
    map
}

/// Builds an exporter of either signal the same way: OTLP/HTTP to
/// `base + path`, or gRPC to the endpoint, with the configured headers.
macro_rules! exporter {
    ($exporter:ident, $config:expr, $path:literal) => {{
        let config: &TelemetryConfig = $config;
        let built = if http_protocol(config) {
            $exporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(signal_url(&config.otlp_endpoint, $path))
                .with_headers(headers(config))
                .with_http_client(OtlpHttpClient::new())
                .with_timeout(EXPORT_TIMEOUT)
                .build()
        } else {
            $exporter::builder()
                .with_tonic()
                .with_endpoint(config.otlp_endpoint.clone())
                .with_metadata(metadata(&config.otlp_headers))
                .with_timeout(EXPORT_TIMEOUT)
                .build()
        };
        built.map_err(|e| format!("telemetry.otlp_endpoint: {e}"))
    }};
}

/// The span exporter for `config.otlp_endpoint`. Call inside the runtime.
pub fn span_exporter(config: &TelemetryConfig) -> Result<SpanExporter, String> {
    exporter!(SpanExporter, config, "/v1/traces")
}

/// The metric exporter for `config.otlp_endpoint`. Call inside the runtime.
pub fn metric_exporter(config: &TelemetryConfig) -> Result<MetricExporter, String> {
    exporter!(MetricExporter, config, "/v1/metrics")
}

fn headers(config: &TelemetryConfig) -> HashMap<String, String> {
    config
        .otlp_headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// OTLP/HTTP over hyper. The exporters call it from their own threads; the
/// request runs as a task on the runtime it was made in.
#[derive(Debug, Clone)]
struct OtlpHttpClient {
    runtime: tokio::runtime::Handle,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl OtlpHttpClient {
    fn new() -> OtlpHttpClient {
        OtlpHttpClient {
            runtime: tokio::runtime::Handle::current(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for OtlpHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let response = client.request(request.map(Full::new)).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        });
        task.await?
    }
}
