//! `POST /v1/batch`: the path of one upload, stage by stage, in order.
//!
//! authenticate → request rate → in-flight admission → read body → turn to
//! be processed → decode → authorize category → validate and split → event
//! rate → enrich → filter → produce → answer (the turn ends with Kafka's
//! answer). Each stage is a function in its own module, run here
//! inside its span and timer ([`StageRun`]); a stage that refuses the whole
//! request returns a [`Reject`], which becomes the answer.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use opentelemetry::trace::TraceContextExt;
use tracing::{field, Instrument};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{AnsweredFor, Gateway};
use crate::config::Limits;
use crate::edge::auth::Tenant;
use crate::edge::limit::processing::Turn;
use crate::edge::limit::{Admitted, Refusal};
use crate::edge::listener::Peer;
use crate::edge::{auth, body};
use crate::model::{Batch, Part, PartCode, Reject};
use crate::ops::metrics::Stage;
use crate::ops::stage::StageRun;
use crate::ops::trace::{self, RequestSpan};
use crate::pipeline::{decode, enrich, filter};
use crate::respond::{self, Body};
use crate::stage_span;

/// Handles one upload and always answers, with the request id.
pub async fn ingest<B>(
    gateway: &Gateway,
    request: Request<B>,
    peer: Peer,
    request_id: &str,
) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let trace = RequestSpan::start(&gateway.sampler, request.headers(), request_id);
    let mut outcome = Outcome::default();
    let answer = stages(gateway, request, peer, request_id, &trace, &mut outcome)
        .instrument(trace.span.clone())
        .await;
    let (mut response, error) = match answer {
        Ok(response) => {
            // Not refused whole: for a 5xx, the events' parts say why (a
            // failing filter, fail-closed, or Kafka).
            let error = match outcome.failure {
                Some(PartCode::FilterError) => ("filter_error", "a filter of the tenant failed"),
                _ => ("delivery_failed", "events were not delivered to Kafka"),
            };
            (response, error)
        }
        Err(reject) => {
            gateway.metrics.refused_upload(reject.error);
            trace.span.record("error.type", reject.error.as_str());
            tracing::info!(parent: &trace.span, status = reject.status.as_u16(), error = reject.error.as_str(), message = %reject.message, "upload refused");
            let response = respond::reject(&reject, request_id);
            trace.answered(
                response.status(),
                Some((reject.error.as_str(), &reject.message)),
            );
            return answered_for(response, outcome.tenant);
        }
    };
    trace.answered(response.status(), Some(error));
    if let Some(tenant) = outcome.tenant.take() {
        response.extensions_mut().insert(AnsweredFor(tenant));
    }
    response
}

/// The tenant a response was for, for the request metrics.
fn answered_for(mut response: Response<Body>, tenant: Option<Arc<str>>) -> Response<Body> {
    if let Some(tenant) = tenant {
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

/// The pipeline of one upload, every stage in order (each in its own
/// function below or in its own module): up to its turn here, the rest in
/// [`process`].
async fn stages<B>(
    gateway: &Gateway,
    request: Request<B>,
    peer: Peer,
    request_id: &str,
    trace: &RequestSpan,
    outcome: &mut Outcome,
) -> Result<Response<Body>, Reject>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (span, traced) = (&trace.span, trace.traced);
    let client_ip =
        weir_core::headers::client_ip(peer.addr, request.headers(), &gateway.trusted_proxies);
    let tenant = admit_tenant(gateway, &request, peer, client_ip).await?;
    span.record("tenant", &*tenant.name);
    outcome.tenant = Some(tenant.name.clone());
    let limits = tenant.limits();
    // Held until the request ends, or by the producer until its records are answered.
    let admitted = gateway.admission.admit(&tenant.quotas)?;

    let bytes = read_body(gateway, request, limits, traced).await?;
    // Before decoding, which is what a body's bytes cost.
    tenant
        .quotas
        .check_bytes(bytes.len())
        .await
        .map_err(|r| r.reject("body"))?;
    // Its turn among the requests processed at once, given back with the
    // records' answers like `admitted` (measured: see `edge::limit::processing`).
    let turn = StageRun::timed(stage_span!(traced, "turn"), &gateway.metrics, Stage::Turn)
        .run_async(gateway.processing.take(&tenant.name))
        .await;
    // Boxed, and made only now: the rest of the pipeline's future is ~8 KB,
    // and a request waiting its turn (hundreds, with a thousand
    // connections) holds only what came before.
    let held = (admitted, turn);
    let rest = process(gateway, &tenant, &bytes, client_ip, request_id, trace, held);
    let (answer, failure) = Box::pin(rest).await?;
    outcome.failure = failure;
    Ok(answer)
}

/// From the body to the answer: decode, split, the event rate, enrich,
/// filter and produce; with what failed, for a 5xx answer.
async fn process(
    gateway: &Gateway,
    tenant: &Tenant,
    bytes: &Bytes,
    client_ip: IpAddr,
    request_id: &str,
    trace: &RequestSpan,
    (admitted, turn): (Admitted, Turn),
) -> Result<(Response<Body>, Option<PartCode>), Reject> {
    let (span, traced, metrics) = (&trace.span, trace.traced, &gateway.metrics);
    let limits = tenant.limits();
    let decode =
        stage_span!(traced, "decode", bytes = bytes.len() as i64, error.type = field::Empty);
    let upload = StageRun::timed(decode, metrics, Stage::Decode)
        .try_run(|| decode::decode(bytes, limits))?;
    span.record("category", upload.meta.category.as_str());
    auth::authorize(tenant, &upload.meta.category)?;
    let mut batch = validate(upload, limits, trace, metrics)?;
    let limited = limit_events(tenant, &mut batch).await?;

    let valid = batch.pending().count();
    if limited.is_none() && valid > 0 {
        let enrich = stage_span!(
            traced,
            "enrich",
            events = valid as i64,
            geoip = gateway.geoip.is_some()
        );
        StageRun::timed(enrich, metrics, Stage::Enrich)
            .run(|| enrich::enrich(&mut batch, client_ip, gateway.geoip.as_ref()));
        if !tenant.filters.is_empty() {
            let limits = filter::EventLimits::of(limits);
            let chain = filter::filter(
                &tenant.filters,
                &mut batch,
                &tenant.name,
                limits,
                metrics,
                traced,
            );
            StageRun::timed(tracing::Span::none(), metrics, Stage::Filter)
                .run_async(chain)
                .await;
        }
        produce(
            gateway,
            tenant,
            &mut batch,
            request_id,
            trace,
            (admitted, turn.measured()),
        )
        .await;
    }
    metrics.batch(&tenant.name, &batch);
    let answer = respond::answer(&batch, request_id, limited.as_ref());
    let failure = answer.status().is_server_error().then(|| failure(&batch));
    Ok((answer, failure))
}

/// Authenticates the tenant (an address that keeps failing is refused
/// before anything else is done), checks its client certificate, and takes
/// its request rate and a first byte of its byte rate: all before the body
/// is read, so a tenant over its rates costs no read.
async fn admit_tenant<B>(
    gateway: &Gateway,
    request: &Request<B>,
    peer: Peer,
    client_ip: IpAddr,
) -> Result<Arc<Tenant>, Reject> {
    let tenant = match gateway.tenants.load().authenticate(request.headers()) {
        Ok(tenant) => tenant,
        Err(reject) => {
            if let Some(unauthenticated) = &gateway.unauthenticated {
                unauthenticated.check(client_ip)?;
            }
            return Err(reject);
        }
    };
    auth::check_client_cert(&tenant, peer.client_cert.as_ref())?;
    tenant
        .quotas
        .check_request()
        .await
        .map_err(|r| r.reject("request"))?;
    // A tenant already over its byte rate is refused before its body is
    // read (one byte of it is taken now; the body is charged once inflated).
    tenant
        .quotas
        .check_bytes(1)
        .await
        .map_err(|r| r.reject("body"))?;
    Ok(tenant)
}

/// Reads the body under the tenant's caps and decompresses it.
async fn read_body<B>(
    gateway: &Gateway,
    request: Request<B>,
    limits: &Limits,
    traced: bool,
) -> Result<Bytes, Reject>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let encoding = body::check_headers(request.headers())?;
    let (parts, incoming) = request.into_parts();
    let span = stage_span!(
        traced,
        "read_body",
        encoding = ?encoding,
        bytes = field::Empty,
        error.type = field::Empty
    );
    let stage = StageRun::new(span);
    let read = body::read(
        incoming,
        &parts.headers,
        encoding,
        limits,
        gateway.body_timeout,
    );
    let bytes = stage.try_run_async(read).await?;
    stage.span.record("bytes", bytes.len() as i64);
    Ok(bytes)
}

/// Splits the upload into its events and validates each.
fn validate<'a>(
    upload: decode::Upload<'a>,
    limits: &Limits,
    trace: &RequestSpan,
    metrics: &crate::ops::metrics::Metrics,
) -> Result<Batch<'a>, Reject> {
    let span = stage_span!(
        trace.traced,
        "validate",
        category = upload.meta.category.as_str(),
        events = field::Empty,
        invalid = field::Empty,
        error.type = field::Empty
    );
    let stage = StageRun::timed(span, metrics, Stage::Validate);
    let batch = stage.try_run(|| decode::split(upload, limits, now_ms()))?;
    let valid = batch.pending().count();
    stage.span.record("events", batch.events.len() as i64);
    stage
        .span
        .record("invalid", (batch.events.len() - valid) as i64);
    trace.span.record("events", batch.events.len() as i64);
    Ok(batch)
}

/// The whole batch against the event rate: taken or refused as a whole.
/// Over the rate, every valid event's part is `rate_limited` and the
/// refusal is returned for the answer; a batch that can never pass (over
/// the burst) is refused outright.
async fn limit_events(tenant: &Tenant, batch: &mut Batch<'_>) -> Result<Option<Reject>, Reject> {
    let valid = batch.pending().count() as u32;
    match tenant.quotas.check_events(valid).await {
        Ok(()) => Ok(None),
        Err(refusal @ Refusal::Never { .. }) => Err(refusal.reject("data")),
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
            Ok(Some(reject))
        }
    }
}

/// One record per event to Kafka, and the wait for its acknowledgement.
async fn produce(
    gateway: &Gateway,
    tenant: &Tenant,
    batch: &mut Batch<'_>,
    request_id: &str,
    trace: &RequestSpan,
    admitted: impl Send + Sync + 'static,
) {
    let topic: Arc<str> = gateway
        .producer
        .topic(&tenant.name, &batch.meta.category)
        .into();
    let span = stage_span!(
        trace.traced,
        "produce",
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.destination.name = %topic,
        messaging.batch.message_count = batch.pending().count() as i64,
        delivered = field::Empty,
        failed = field::Empty,
        spooled = field::Empty,
        otel.status_code = field::Empty,
        otel.status_description = field::Empty,
    );
    // The record's traceparent names the produce span: consumers become
    // its children. (Unsampled: the request's own ids, flagged not
    // sampled; with tracing off: the client's own context, when it sent one.)
    let trace_headers = match span.context() {
        cx if cx.span().span_context().is_valid() => trace::trace_headers(&cx),
        _ => trace::trace_headers(&trace.context),
    };
    let sending = gateway.producer.produce(
        batch,
        topic,
        &tenant.name,
        request_id,
        &trace_headers,
        admitted,
    );
    let produced = StageRun::new(span.clone()).run_async(sending).await;
    let metrics = &gateway.metrics;
    metrics.stage(Stage::Produce, produced.enqueue.as_secs_f64());
    metrics.stage(Stage::Deliver, produced.deliver.as_secs_f64());
    span.record("delivered", produced.delivered as i64);
    span.record("failed", produced.failed as i64);
    if produced.spooled > 0 {
        span.record("spooled", produced.spooled as i64);
        tracing::debug!(parent: &trace.span, tenant = %tenant.name, spooled = produced.spooled,
            "events spooled: Kafka could not take them now");
    }
    if produced.failed > 0 {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", "some records were not delivered");
    }
}

/// What failed when nothing was accepted and something is retryable: a
/// filter (fail-closed) or Kafka.
fn failure(batch: &Batch<'_>) -> PartCode {
    let filter_failed = batch
        .events
        .iter()
        .any(|e| matches!(&e.part, Some(p) if p.code == PartCode::FilterError));
    match filter_failed {
        true => PartCode::FilterError,
        false => PartCode::DeliveryFailed,
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
