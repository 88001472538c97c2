//! `POST /v1/batch`: the path of one upload, stage by stage, in order.
//!
//! authenticate → request rate → in-flight admission → read body → decode →
//! authorize category → validate and split → event rate → enrich → produce →
//! answer. Each stage is a function in its own
//! module and a span (child of the request span) here; a stage that refuses
//! the whole request returns a [`Reject`], which becomes the answer.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::{Request, Response};
use opentelemetry::trace::TraceContextExt;
use tracing::{field, info_span, Instrument};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::batch::{Part, PartCode};
use crate::limit::Refusal;
use crate::metrics::Stage;
use crate::respond::{self, Body, Reject};
use crate::server::{AnsweredFor, Gateway, Peer};
use crate::trace::RequestTrace;
use crate::{auth, body, decode, enrich, filter, stage_span, trace};

/// Handles one upload and always answers, with the request id.
pub async fn ingest<B>(
    gateway: &Gateway,
    request: Request<B>,
    peer: Peer,
    request_id: &str,
) -> Response<Body>
where
    B: hyper::body::Body<Data = bytes::Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    // The request span: for OpenTelemetry (target `weir`) when the request
    // is sampled and spans go somewhere, else for log lines only (target
    // `weir::request`, which costs nothing while the log level is above info).
    macro_rules! request_span {
        ($target:expr) => {
            info_span!(
                target: $target,
                "ingest",
                otel.name = trace::REQUEST_SPAN,
                otel.kind = "server",
                request_id,
                trace_id = field::Empty,
                span_id = field::Empty,
                tenant = field::Empty,
                category = field::Empty,
                events = field::Empty,
                http.response.status_code = field::Empty,
                error.type = field::Empty,
                otel.status_code = field::Empty,
                otel.status_description = field::Empty,
            )
        };
    }
    // A request without (valid) trace context starts a new trace. The
    // sampling decision comes before any span (see `trace::RequestSampler`).
    let client_context = trace::extract(request.headers());
    let decision = gateway.sampler.decide(&client_context);
    // Stage spans only for requests whose own span is recorded (see `stage_span!`).
    let traced = matches!(decision, RequestTrace::Record(_));
    let (span, context) = match decision {
        RequestTrace::Record(parent) => {
            let span = request_span!("weir");
            let _ = span.set_parent(parent);
            let own = span.context();
            (span, own)
        }
        RequestTrace::Skip(own) => (request_span!("weir::request"), own),
    };
    // Log lines of the request carry its trace and span ids (and request id,
    // tenant) to join logs and traces.
    let ids = context.span().span_context().clone();
    if ids.is_valid() {
        span.record("trace_id", field::display(ids.trace_id()));
        span.record("span_id", field::display(ids.span_id()));
    }
    let mut outcome = Outcome::default();
    let mut problem = None;
    let mut response = match stages(
        gateway,
        request,
        peer,
        request_id,
        &context,
        traced,
        &mut outcome,
    )
    .instrument(span.clone())
    .await
    {
        Ok(response) => response,
        Err(reject) => {
            gateway.metrics.refused_upload(reject.error);
            span.record("error.type", reject.error);
            tracing::info!(parent: &span, status = reject.status.as_u16(), error = reject.error, message = %reject.message, "upload refused");
            problem = Some(reject.message.clone());
            respond::reject(&reject, request_id)
        }
    };
    let status = response.status();
    span.record("http.response.status_code", i64::from(status.as_u16()));
    // A client's mistake (4xx) is not the server span's error (OTel HTTP
    // conventions); a 5xx is, with its reason.
    if status.is_server_error() {
        // Not refused whole: the events' parts say why (a Kafka delivery
        // or a failing filter, fail-closed).
        let problem = problem.unwrap_or_else(|| match outcome.failure {
            Some(PartCode::FilterError) => {
                span.record("error.type", "filter_error");
                "a filter of the tenant failed".into()
            }
            _ => {
                span.record("error.type", "delivery_failed");
                "events were not delivered to Kafka".into()
            }
        });
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", problem.as_str());
    }
    if let Some(tenant) = outcome.tenant {
        response.extensions_mut().insert(AnsweredFor(tenant));
    }
    response
}

/// What the stages leave for the request's span and metrics.
#[derive(Default)]
struct Outcome {
    /// The tenant the answer was for, once known.
    tenant: Option<Arc<str>>,
    /// What failed, for a 5xx answer that is not a refusal: a filter
    /// (fail-closed) or Kafka.
    failure: Option<PartCode>,
}

async fn stages<B>(
    gateway: &Gateway,
    request: Request<B>,
    peer: Peer,
    request_id: &str,
    context_of_request: &opentelemetry::Context,
    traced: bool,
    outcome: &mut Outcome,
) -> Result<Response<Body>, Reject>
where
    B: hyper::body::Body<Data = bytes::Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let span = tracing::Span::current();
    let client_ip = enrich::client_ip(peer.addr, request.headers(), &gateway.trusted_proxies);
    let authenticated = gateway.tenants.load().authenticate(request.headers());
    let tenant = match authenticated {
        Ok(tenant) => tenant,
        Err(reject) => {
            // An address that keeps failing is refused before anything else is done.
            if let Some(unauthenticated) = &gateway.unauthenticated {
                unauthenticated.check(client_ip)?;
            }
            return Err(reject);
        }
    };
    span.record("tenant", &*tenant.name);
    auth::check_client_cert(&tenant, peer.client_cert.as_ref())?;
    outcome.tenant = Some(tenant.name.clone());
    let limits = tenant.limits();
    let metrics = &gateway.metrics;

    // Before the body is read: the request rate, then a place among the in-flight requests.
    tenant
        .quotas
        .check_request()
        .map_err(|r| r.reject("request"))?;
    // A tenant already over its byte rate is refused before its body is
    // read (one byte of it is taken now; the body is charged once inflated).
    tenant.quotas.check_bytes(1).map_err(|r| r.reject("body"))?;
    // Held until the request ends, or by the producer until its records are answered.
    let admitted = gateway.admission.admit(&tenant.quotas)?;

    let encoding = body::check_headers(request.headers())?;
    let (parts, incoming) = request.into_parts();
    let read_body = stage_span!(
        traced,
        "read_body",
        encoding = ?encoding,
        bytes = field::Empty,
        error.type = field::Empty
    );
    let bytes = body::read(
        incoming,
        &parts.headers,
        encoding,
        limits,
        gateway.body_timeout,
    )
    .instrument(read_body.clone())
    .await
    .inspect_err(|reject| failed(&read_body, reject))?;
    read_body.record("bytes", bytes.len() as i64);
    // Before decoding, which is what a body's bytes cost.
    tenant
        .quotas
        .check_bytes(bytes.len())
        .map_err(|r| r.reject("body"))?;

    let timer = Instant::now();
    let decode =
        stage_span!(traced, "decode", bytes = bytes.len() as i64, error.type = field::Empty);
    let decoded = decode.in_scope(|| decode::decode(&bytes, limits));
    metrics.stage(Stage::Decode, timer.elapsed().as_secs_f64());
    let upload = decoded.inspect_err(|reject| failed(&decode, reject))?;
    span.record("category", upload.meta.category.as_str());
    auth::authorize(&tenant, &upload.meta.category)?;

    let validate = stage_span!(
        traced,
        "validate",
        category = upload.meta.category.as_str(),
        events = field::Empty,
        invalid = field::Empty,
        error.type = field::Empty
    );
    let timer = Instant::now();
    let split = validate.in_scope(|| decode::split(upload, limits, now_ms()));
    metrics.stage(Stage::Validate, timer.elapsed().as_secs_f64());
    let mut batch = split.inspect_err(|reject| failed(&validate, reject))?;
    let valid = batch.pending().count();
    validate.record("events", batch.events.len() as i64);
    validate.record("invalid", (batch.events.len() - valid) as i64);
    span.record("events", batch.events.len() as i64);

    // The whole batch against the event rate: taken or refused as a whole.
    let limited = match tenant.quotas.check_events(valid as u32) {
        Ok(()) => None,
        Err(refusal @ Refusal::Never { .. }) => return Err(refusal.reject("data")),
        Err(refusal) => {
            let reject = refusal.reject("data");
            for event in batch.events.iter_mut().filter(|e| e.part.is_none()) {
                event.part = Some(Part::failed(
                    event.id.clone(),
                    PartCode::RateLimited,
                    reject.message.clone(),
                    true,
                ));
            }
            Some(reject)
        }
    };

    if limited.is_none() && valid > 0 {
        let timer = Instant::now();
        stage_span!(
            traced,
            "enrich",
            events = valid as i64,
            geoip = gateway.geoip.is_some()
        )
        .in_scope(|| enrich::enrich(&mut batch, client_ip, gateway.geoip.as_ref()));
        metrics.stage(Stage::Enrich, timer.elapsed().as_secs_f64());
        if !tenant.filters.is_empty() {
            let timer = Instant::now();
            filter::filter(
                &tenant.filters,
                &mut batch,
                &tenant.name,
                filter::EventLimits::of(limits),
                metrics,
                traced,
            )
            .await;
            metrics.stage(Stage::Filter, timer.elapsed().as_secs_f64());
        }

        let topic = gateway.producer.topic(&tenant.name, &batch.meta.category);
        let produce = stage_span!(
            traced,
            "produce",
            otel.kind = "producer",
            messaging.system = "kafka",
            messaging.destination.name = %topic,
            messaging.batch.message_count = batch.pending().count() as i64,
            delivered = field::Empty,
            failed = field::Empty,
            otel.status_code = field::Empty,
            otel.status_description = field::Empty,
        );
        // The record's traceparent names the produce span: consumers become
        // its children. (Unsampled: the request's own ids, flagged not
        // sampled; with tracing off: the client's own context, when it sent one.)
        let trace_headers = match produce.context() {
            cx if cx.span().span_context().is_valid() => trace::inject(&cx),
            _ => trace::inject(context_of_request),
        };
        let timings = gateway
            .producer
            .produce(
                &mut batch,
                &tenant.name,
                request_id,
                &trace_headers,
                admitted,
            )
            .instrument(produce.clone())
            .await;
        metrics.stage(Stage::Produce, timings.enqueue.as_secs_f64());
        metrics.stage(Stage::Deliver, timings.deliver.as_secs_f64());
        // Counted only for a recorded span: off the path of unsampled requests.
        if !produce.is_none() {
            let count = |code| {
                batch
                    .events
                    .iter()
                    .filter(|e| matches!(&e.part, Some(p) if p.code == code))
                    .count()
            };
            let failed = count(PartCode::DeliveryFailed);
            produce.record("failed", failed as i64);
            produce.record("delivered", count(PartCode::Ok) as i64);
            if failed > 0 {
                produce.record("otel.status_code", "ERROR");
                produce.record("otel.status_description", "some records were not delivered");
            }
        }
    }
    metrics.batch(&tenant.name, &batch);
    let answer = respond::answer(&batch, request_id, limited.as_ref());
    if answer.status().is_server_error() {
        // Nothing accepted and some failure retryable: a filter's, or Kafka's.
        let filter_failed = batch
            .events
            .iter()
            .any(|e| matches!(&e.part, Some(p) if p.code == PartCode::FilterError));
        outcome.failure = Some(match filter_failed {
            true => PartCode::FilterError,
            false => PartCode::DeliveryFailed,
        });
    }
    Ok(answer)
}

/// Marks a stage span as where the request was refused.
fn failed(span: &tracing::Span, reject: &Reject) {
    span.record("error.type", reject.error);
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
