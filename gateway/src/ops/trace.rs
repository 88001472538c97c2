//! Tracing of the gateway's own handlers with OpenTelemetry, and the W3C
//! trace context that travels in and out.
//!
//! The request span continues the client's trace (`traceparent` and
//! `tracestate` in the request) or starts a new one; each stage is a child
//! span; the Kafka record's `traceparent` names the produce span, so a
//! consumer's span becomes its child.
//!
//! Spans go to OpenTelemetry independently of the log level: turning logs
//! down never breaks propagation. With `telemetry.traces = false` no spans
//! are made at all: records carry the client's own `traceparent`, or, when
//! it sent none, a new trace's, unsampled (every record carries one: the
//! record contract, `proto/record.md`).
//!
//! A request is sampled or not before any span is made ([`RequestSampler`]):
//! an unsampled request, most of them at low ratios, gets no OpenTelemetry
//! span at all, only ids made here to propagate and to log, so it does not
//! pay for span bookkeeping that would be thrown away.

use http::HeaderMap;
use opentelemetry::trace::{
    Link, SpanContext, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, SamplingResult, SdkTracerProvider,
    ShouldSample,
};
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{LogConfig, TelemetryConfig};
use crate::ops::otlp;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
pub use weir_core::headers::{trace_context, trace_headers, TraceHeaders};

/// The tracer provider of the node: by default parent-based sampling (a
/// client's decision is followed; `sample_ratio` of new traces are
/// sampled), batched OTLP export when an endpoint is configured. Call
/// inside the runtime.
pub fn tracer_provider(config: &TelemetryConfig) -> Result<SdkTracerProvider, String> {
    let mut builder = SdkTracerProvider::builder()
        .with_sampler(KeepDecision(sampler(config)))
        .with_resource(otlp::resource(config));
    if !config.otlp_endpoint.is_empty() {
        builder = builder.with_batch_exporter(otlp::span_exporter(config)?);
    }
    Ok(builder.build())
}

/// The sampler `config.sampler` names (validated with the config).
fn sampler(config: &TelemetryConfig) -> Sampler {
    let ratio = Sampler::TraceIdRatioBased(config.sample_ratio);
    match config.sampler.as_str() {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => ratio,
        "parentbased_always_on" => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        _ => Sampler::ParentBased(Box::new(ratio)),
    }
}

/// Name of the request span, as exported.
pub const REQUEST_SPAN: &str = "POST /v1/batch";

/// Decides whether a request is sampled, before its span is made.
#[derive(Debug)]
pub struct RequestSampler {
    sampler: Sampler,
    ids: RandomIdGenerator,
    /// Whether sampled spans go anywhere (an exporter is set).
    export: bool,
    /// `telemetry.traces`: false, no request is ever recorded.
    traces: bool,
}

/// The outcome for one request.
pub enum RequestTrace {
    /// Make the request span (and its stage spans) with this parent: the
    /// client's context, marked so that the SDK keeps this decision.
    Record(Context),
    /// No span: this context (a span id made here, the client's trace id or
    /// a new one, the decision in its flags) is propagated and logged.
    Skip(Context),
}

/// Marks a parent context whose child was sampled by [`RequestSampler`].
#[derive(Debug, Clone, Copy)]
struct Sampled;

impl RequestSampler {
    pub fn new(config: &TelemetryConfig, export: bool) -> RequestSampler {
        RequestSampler {
            sampler: sampler(config),
            ids: RandomIdGenerator::default(),
            export,
            traces: config.traces,
        }
    }

    /// The configured sampler's decision for a request whose client sent
    /// `client` (an empty context when it sent none).
    pub fn decide(&self, client: &Context) -> RequestTrace {
        let parent = client.span().span_context().clone();
        if !self.traces {
            // No spans of ours: the client's context travels on unchanged
            // (a consumer's span is the child of the client's), and without
            // one the records still get a trace id of their own, unsampled.
            return RequestTrace::Skip(match parent.is_valid() {
                true => client.clone(),
                false => self.own(
                    self.ids.new_trace_id(),
                    TraceFlags::default(),
                    TraceState::default(),
                ),
            });
        }
        let trace_id = match parent.is_valid() {
            true => parent.trace_id(),
            false => self.ids.new_trace_id(),
        };
        let result = self.sampler.should_sample(
            Some(client),
            trace_id,
            REQUEST_SPAN,
            &SpanKind::Server,
            &[],
            &[],
        );
        let sampled = result.decision == SamplingDecision::RecordAndSample;
        if sampled && self.export {
            // (For a new trace the SDK picks another trace id for the span;
            // the decision, made on a random id, is as random.)
            return RequestTrace::Record(client.with_value(Sampled));
        }
        let flags = match sampled {
            true => TraceFlags::SAMPLED,
            false => TraceFlags::default(),
        };
        RequestTrace::Skip(self.own(trace_id, flags, result.trace_state))
    }

    /// A context of `trace_id` with a span id made here: the request's
    /// own, which is propagated and logged but never exported.
    fn own(&self, trace_id: TraceId, flags: TraceFlags, state: TraceState) -> Context {
        let own = SpanContext::new(trace_id, self.ids.new_span_id(), flags, false, state);
        Context::new().with_remote_span_context(own)
    }
}

/// The provider's sampler: keeps a [`RequestSampler`]'s decision for the
/// request span, and decides every other span as configured.
#[derive(Debug, Clone)]
struct KeepDecision(Sampler);

impl ShouldSample for KeepDecision {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        match parent {
            Some(cx) if cx.get::<Sampled>().is_some() => SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state: cx.span().span_context().trace_state().clone(),
            },
            _ => self
                .0
                .should_sample(parent, trace_id, name, kind, attributes, links),
        }
    }
}

/// Installs logging (JSON lines or pretty) and, given a provider, the
/// OpenTelemetry layer as the global subscriber. `RUST_LOG` wins over the
/// configured level.
pub fn init(log: &LogConfig, provider: Option<&SdkTracerProvider>) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.is_empty() => {
            EnvFilter::try_new(&value).map_err(|e| format!("RUST_LOG: {e}"))?
        }
        _ => EnvFilter::try_new(&log.level).map_err(|e| format!("log.level: {e}"))?,
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stdout);
    let fmt = if log.format == "pretty" {
        fmt.boxed()
    } else {
        fmt.json()
            .flatten_event(true)
            // The request's span fields (request_id, trace_id, tenant) on every line.
            .with_current_span(true)
            .with_span_list(false)
            .boxed()
    };
    let otel = provider.map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("weir"))
            // The spans' own attributes say enough; no source location,
            // thread or busy/idle time on every span.
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            // Spans are entered at every poll; the OpenTelemetry context is
            // taken from them explicitly (`span.context()`), never from the
            // thread's current context, so it need not follow each enter.
            .with_context_activation(false)
            // `weir::request` spans are the log-only request spans of
            // unsampled requests: never OpenTelemetry's business.
            .with_filter(
                Targets::new()
                    .with_target("weir", LevelFilter::INFO)
                    .with_target("weir::request", LevelFilter::OFF),
            )
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()
        .map_err(|e| e.to_string())
}

/// A request's span and its trace context: the one helper that starts a
/// request's tracing and records how it ended, so that the handler reads
/// as the pipeline it is.
pub struct RequestSpan {
    pub span: tracing::Span,
    /// The request's own context (propagated to records when no stage span
    /// is recorded).
    pub context: Context,
    /// Whether the request is recorded: its stages get spans of their own.
    pub traced: bool,
}

impl RequestSpan {
    /// Starts the span of a request (a request without valid trace context
    /// starts a new trace). The sampling decision comes before any span:
    /// a recorded request gets a span for OpenTelemetry (target `weir`);
    /// any other one a span for log lines only (target `weir::request`,
    /// which costs nothing while the log level is above info).
    pub fn start(sampler: &RequestSampler, headers: &HeaderMap, request_id: &str) -> RequestSpan {
        macro_rules! request_span {
            ($target:expr) => {
                tracing::info_span!(
                    target: $target,
                    "ingest",
                    otel.name = REQUEST_SPAN,
                    otel.kind = "server",
                    request_id,
                    trace_id = tracing::field::Empty,
                    span_id = tracing::field::Empty,
                    tenant = tracing::field::Empty,
                    category = tracing::field::Empty,
                    events = tracing::field::Empty,
                    http.response.status_code = tracing::field::Empty,
                    error.type = tracing::field::Empty,
                    otel.status_code = tracing::field::Empty,
                    otel.status_description = tracing::field::Empty,
                )
            };
        }
        let (span, context, traced) = match sampler.decide(&trace_context(headers)) {
            RequestTrace::Record(parent) => {
                let span = request_span!("weir");
                let _ = span.set_parent(parent);
                let own = span.context();
                (span, own, true)
            }
            RequestTrace::Skip(own) => (request_span!("weir::request"), own, false),
        };
        // Log lines of the request carry its trace and span ids (and request
        // id, tenant) to join logs and traces.
        let ids = context.span().span_context().clone();
        if ids.is_valid() {
            span.record("trace_id", tracing::field::display(ids.trace_id()));
            span.record("span_id", tracing::field::display(ids.span_id()));
        }
        RequestSpan {
            span,
            context,
            traced,
        }
    }

    /// Records the answer's status. A client's mistake (4xx) is not the
    /// server span's error (OTel HTTP conventions); a 5xx is, with its
    /// type and reason.
    pub fn answered(&self, status: http::StatusCode, error: Option<(&str, &str)>) {
        self.span
            .record("http.response.status_code", i64::from(status.as_u16()));
        if let (true, Some((error_type, problem))) = (status.is_server_error(), error) {
            self.span.record("error.type", error_type);
            self.span.record("otel.status_code", "ERROR");
            self.span.record("otel.status_description", problem);
        }
    }
}

/// A stage's span, recorded only when `$traced` (the request is sampled):
/// an unsampled request, most of them at low ratios, pays for its request
/// span alone. `Span::none()` takes records and instrumentation as no-ops.
#[macro_export]
macro_rules! stage_span {
    ($traced:expr, $($span:tt)+) => {
        if $traced {
            ::tracing::info_span!($($span)+)
        } else {
            ::tracing::Span::none()
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    fn sampler(name: &str, ratio: f64, export: bool) -> RequestSampler {
        let config = TelemetryConfig {
            sampler: name.into(),
            sample_ratio: ratio,
            ..TelemetryConfig::default()
        };
        RequestSampler::new(&config, export)
    }

    fn client(flags: &str) -> Context {
        let mut h = HeaderMap::new();
        let traceparent = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}");
        h.insert("traceparent", traceparent.parse().unwrap());
        trace_context(&h)
    }

    #[test]
    fn requests_are_sampled_before_any_span_is_made() {
        let none = Context::new();
        // Sampled and exported: a span is to be made, under the client's context.
        let RequestTrace::Record(parent) =
            sampler("parentbased_traceidratio", 1.0, true).decide(&none)
        else {
            panic!("ratio 1 records every request")
        };
        assert!(parent.get::<Sampled>().is_some());
        // Not sampled: ids made here, a new trace, flags 00.
        let RequestTrace::Skip(own) = sampler("parentbased_traceidratio", 0.0, true).decide(&none)
        else {
            panic!("ratio 0 records no new trace")
        };
        let own = own.span().span_context().clone();
        assert!(own.is_valid());
        assert!(!own.is_sampled());
        // The client's decision wins (parent-based) both ways; its trace id is kept.
        assert!(matches!(
            sampler("parentbased_traceidratio", 0.0, true).decide(&client("01")),
            RequestTrace::Record(_)
        ));
        let RequestTrace::Skip(own) =
            sampler("parentbased_traceidratio", 1.0, true).decide(&client("00"))
        else {
            panic!("an unsampled client trace stays unsampled")
        };
        let own = own.span().span_context().clone();
        assert_eq!(
            own.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_ne!(
            own.span_id().to_string(),
            "00f067aa0ba902b7",
            "our own span id"
        );
        assert_eq!(
            trace_headers(&Context::new().with_remote_span_context(own.clone())).traceparent,
            Some(format!(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-00",
                own.span_id()
            ))
        );
        // Sampled, but no exporter: no span, the decision still propagates.
        let RequestTrace::Skip(own) = sampler("always_on", 1.0, false).decide(&none) else {
            panic!("without an exporter no span is made")
        };
        assert!(own.span().span_context().is_sampled());
        // About `ratio` of new traces are sampled.
        let half = sampler("traceidratio", 0.5, true);
        let recorded = (0..2000)
            .filter(|_| matches!(half.decide(&none), RequestTrace::Record(_)))
            .count();
        assert!((800..1200).contains(&recorded), "{recorded} of 2000");
    }

    #[test]
    fn with_tracing_off_a_client_context_travels_on_and_otherwise_one_is_made() {
        let off = RequestSampler::new(
            &TelemetryConfig {
                traces: false,
                sampler: "always_on".into(),
                ..TelemetryConfig::default()
            },
            true,
        );
        // The client's context, unchanged, whatever its decision.
        for flags in ["00", "01"] {
            let RequestTrace::Skip(cx) = off.decide(&client(flags)) else {
                panic!("tracing off records nothing")
            };
            assert_eq!(
                trace_headers(&cx).traceparent,
                Some(format!(
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}"
                ))
            );
        }
        // None sent: a new trace of our own, unsampled, despite `always_on`.
        let RequestTrace::Skip(cx) = off.decide(&Context::new()) else {
            panic!("tracing off records nothing")
        };
        let own = cx.span().span_context().clone();
        assert!(own.is_valid());
        assert!(!own.is_sampled());
        let RequestTrace::Skip(other) = off.decide(&Context::new()) else {
            panic!("tracing off records nothing")
        };
        assert_ne!(other.span().span_context().trace_id(), own.trace_id());
    }

    #[test]
    fn the_provider_keeps_the_request_decision() {
        let keep = KeepDecision(Sampler::AlwaysOff);
        let decide = |cx: &Context| {
            keep.should_sample(Some(cx), TraceId::from(7), "x", &SpanKind::Server, &[], &[])
                .decision
        };
        assert_eq!(
            decide(&Context::new().with_value(Sampled)),
            SamplingDecision::RecordAndSample
        );
        assert_eq!(decide(&Context::new()), SamplingDecision::Drop);
    }
}
