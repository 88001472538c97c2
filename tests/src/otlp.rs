//! An in-process OTLP receiver, as a collector would be: OTLP/HTTP
//! (protobuf, `POST /v1/traces` and `/v1/metrics`) and OTLP/gRPC, each
//! decoding the real export requests a node sends.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

/// What the receiver was sent, in order.
#[derive(Default)]
pub struct Received {
    pub traces: Vec<ExportTraceServiceRequest>,
    pub metrics: Vec<ExportMetricsServiceRequest>,
}

/// A running receiver; it stops with the test's runtime.
#[derive(Clone)]
pub struct Receiver {
    /// `http://127.0.0.1:PORT`: the node's `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    received: Arc<Mutex<Received>>,
}

/// One received span with its resource's attributes.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub span: Span,
    pub resource: Vec<KeyValue>,
}

impl ReceivedSpan {
    pub fn trace_id(&self) -> String {
        hex::encode(&self.span.trace_id)
    }
    pub fn span_id(&self) -> String {
        hex::encode(&self.span.span_id)
    }
    pub fn parent_id(&self) -> String {
        hex::encode(&self.span.parent_span_id)
    }
    /// A span attribute as text (strings, integers and booleans).
    pub fn attribute(&self, key: &str) -> Option<String> {
        find(&self.span.attributes, key)
    }
    pub fn resource_attribute(&self, key: &str) -> Option<String> {
        find(&self.resource, key)
    }
}

fn find(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    text(value)
}

fn text(value: &AnyValue) -> Option<String> {
    Some(match value.value.as_ref()? {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

impl Receiver {
    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let received = self.received.lock().unwrap();
        received
            .traces
            .iter()
            .flat_map(|request| &request.resource_spans)
            .flat_map(|rs| {
                let resource = rs
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default();
                rs.scope_spans
                    .iter()
                    .flat_map(|ss| &ss.spans)
                    .map(move |span| ReceivedSpan {
                        span: span.clone(),
                        resource: resource.clone(),
                    })
            })
            .collect()
    }

    /// The names of every metric received so far.
    pub fn metric_names(&self) -> Vec<String> {
        let received = self.received.lock().unwrap();
        received
            .metrics
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .map(|m| m.name.clone())
            .collect()
    }

    /// Waits (up to `timeout`) until `done` holds for the spans received;
    /// the spans received by then either way (the caller checks them).
    pub async fn wait_for_spans(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let wanted = crate::poll_until(timeout, || async {
            let spans = self.spans();
            done(&spans).then_some(spans)
        });
        wanted.await.unwrap_or_else(|_| self.spans())
    }

    /// An OTLP/HTTP receiver (protobuf bodies).
    pub async fn http() -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Received::default()));
        let store = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: http::Request<hyper::body::Incoming>| {
                            let store = store.clone();
                            async move {
                                let path = request.uri().path().to_owned();
                                let body =
                                    request.into_body().collect().await.map(|b| b.to_bytes());
                                let (status, answer) = match (path.as_str(), body) {
                                    ("/v1/traces", Ok(body)) => {
                                        match ExportTraceServiceRequest::decode(body) {
                                            Ok(export) => {
                                                store.lock().unwrap().traces.push(export);
                                                (
                                                    200,
                                                    ExportTraceServiceResponse::default()
                                                        .encode_to_vec(),
                                                )
                                            }
                                            Err(_) => (400, Vec::new()),
                                        }
                                    }
                                    ("/v1/metrics", Ok(body)) => {
                                        match ExportMetricsServiceRequest::decode(body) {
                                            Ok(export) => {
                                                store.lock().unwrap().metrics.push(export);
                                                (
                                                    200,
                                                    ExportMetricsServiceResponse::default()
                                                        .encode_to_vec(),
                                                )
                                            }
                                            Err(_) => (400, Vec::new()),
                                        }
                                    }
                                    _ => (404, Vec::new()),
                                };
                                Ok::<_, Infallible>(
                                    http::Response::builder()
                                        .status(status)
                                        .header("content-type", "application/x-protobuf")
                                        .body(Full::new(Bytes::from(answer)))
                                        .unwrap(),
                                )
                            }
                        });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Receiver {
            endpoint: format!("http://{address}"),
            received,
        })
    }

    /// An OTLP/gRPC receiver.
    pub async fn grpc() -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address: SocketAddr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Received::default()));
        let service = Grpc(received.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(service.clone()))
                .add_service(MetricsServiceServer::new(service))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        Ok(Receiver {
            endpoint: format!("http://{address}"),
            received,
        })
    }
}

#[derive(Clone)]
struct Grpc(Arc<Mutex<Received>>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().traces.push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().metrics.push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}
