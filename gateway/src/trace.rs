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
//! are made at all, and records carry the client's own `traceparent`.

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{LogConfig, TelemetryConfig};
use crate::otlp;

/// The tracer provider of the node: by default parent-based sampling (a
/// client's decision is followed; `sample_ratio` of new traces are
/// sampled), batched OTLP export when an endpoint is configured. Call
/// inside the runtime.
pub fn tracer_provider(config: &TelemetryConfig) -> Result<SdkTracerProvider, String> {
    let mut builder = SdkTracerProvider::builder()
        .with_sampler(sampler(config))
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
            .with_filter(Targets::new().with_target("weir", LevelFilter::INFO))
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()
        .map_err(|e| e.to_string())
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

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The trace context a request carries (empty when it carries none or a malformed one).
pub fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// The `traceparent` (and `tracestate`, when there is one) for `cx`.
#[derive(Debug, Default, Clone)]
pub struct TraceHeaders {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl Injector for TraceHeaders {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "traceparent" => self.traceparent = Some(value),
            "tracestate" if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}

/// The W3C headers naming the span of `cx` as parent.
pub fn inject(cx: &Context) -> TraceHeaders {
    let mut headers = TraceHeaders::default();
    TraceContextPropagator::new().inject_context(cx, &mut headers);
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    #[test]
    fn extracts_and_injects_w3c_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        h.insert("tracestate", "vendor=abc".parse().unwrap());
        let cx = extract(&h);
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(sc.is_remote());
        let out = inject(&cx);
        assert_eq!(
            out.traceparent.as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(out.tracestate.as_deref(), Some("vendor=abc"));
    }

    #[test]
    fn a_malformed_traceparent_is_ignored() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", "00-zz-00f067aa0ba902b7-01".parse().unwrap());
        assert!(!extract(&h).span().span_context().is_valid());
        assert!(inject(&Context::new()).traceparent.is_none());
    }
}
