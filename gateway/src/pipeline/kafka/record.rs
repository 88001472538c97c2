//! The record: what downstream consumers read (`proto/record.md`). Its
//! value ([`weir_core::record`]) embeds the client's meta and event text
//! unchanged after the gateway's own fields; its headers carry the W3C
//! trace context, the request id and the tenant; its key comes from the
//! key template.

use std::sync::Arc;

use rdkafka::message::{Header, OwnedHeaders};

use crate::config::template::{Template, Values};
use crate::model::Meta;
use crate::ops::trace::TraceHeaders;

/// Where a record entered: the node's region (`telemetry.region`, when
/// set) and the node (its host name), so that consumers of a topic fed by
/// several regions can tell them apart.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub region: Option<Arc<str>>,
    pub node: Arc<str>,
}

/// The record key of an upload's events from the template, or `None` when
/// a placeholder has no value (each event's backend id is its key then).
pub(super) fn key(template: &Template, tenant: &str, meta: &Meta<'_>) -> Option<String> {
    template.render(&Values {
        tenant,
        category: &meta.category,
        device_id: meta.device_id.as_deref(),
        app: meta.app.as_deref(),
    })
}

/// The headers of every record of a request (design §3), as name and
/// value: the producer's and the spool's records are built from this one
/// list, so a replayed record carries exactly the headers it would have.
pub(super) fn header_pairs<'a>(
    trace: &'a TraceHeaders,
    request_id: &'a str,
    tenant: &'a str,
    origin: &'a Origin,
) -> impl Iterator<Item = (&'static str, &'a str)> {
    let traceparent = trace.traceparent.as_deref().map(|v| ("traceparent", v));
    let tracestate = trace.tracestate.as_deref().map(|v| ("tracestate", v));
    let region = origin.region.as_deref().map(|v| ("weir-region", v));
    traceparent
        .into_iter()
        .chain(tracestate)
        .chain(region)
        .chain([
            ("weir-node", &*origin.node),
            ("x-request-id", request_id),
            ("weir-tenant", tenant),
            ("content-type", "application/json"),
        ])
}

/// The headers of every record of a request, for librdkafka.
pub(super) fn record_headers(
    trace: &TraceHeaders,
    request_id: &str,
    tenant: &str,
    origin: &Origin,
) -> OwnedHeaders {
    owned_headers(header_pairs(trace, request_id, tenant, origin).map(|(k, v)| (k, v.as_bytes())))
}

/// Headers for librdkafka from names and values.
pub(super) fn owned_headers<'a>(pairs: impl Iterator<Item = (&'a str, &'a [u8])>) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new_with_capacity(8);
    for (key, value) in pairs {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    headers
}
