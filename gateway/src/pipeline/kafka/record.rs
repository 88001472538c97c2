//! The record: what downstream consumers read (`proto/record.md`). Its
//! value embeds the client's meta and event text unchanged after the
//! gateway's own fields; its headers carry the W3C trace context, the
//! request id and the tenant; its key comes from the key template.

use std::net::IpAddr;
use std::sync::Arc;

use rdkafka::message::{Header, OwnedHeaders};
use serde::Serialize;

use crate::config::template::{Template, Values};
use crate::model::{Geo, Meta};
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

/// The fields of the record value that the gateway writes itself.
#[derive(Serialize)]
pub(super) struct RecordFields<'a> {
    pub(super) backend_id: &'a str,
    pub(super) id: Option<&'a str>,
    pub(super) tenant: &'a str,
    pub(super) category: &'a str,
    pub(super) received_at: i64,
    pub(super) ts: Option<i64>,
    pub(super) request_id: &'a str,
    pub(super) client_ip: Option<IpAddr>,
    pub(super) geo: Option<&'a Geo>,
}

/// Writes the record value: the gateway's fields, then the client's `meta`
/// and event object exactly as they were sent (already validated JSON).
pub(super) fn write_value(out: &mut Vec<u8>, fields: &RecordFields<'_>, meta: &str, data: &str) {
    // Serializing a struct of strings and numbers into a Vec cannot fail.
    if sonic_rs::to_writer(&mut *out, fields).is_err() || out.last() != Some(&b'}') {
        out.clear();
        out.push(b'{');
    } else {
        out.pop(); // the closing brace; meta and data follow
        out.push(b',');
    }
    out.extend_from_slice(b"\"meta\":");
    out.extend_from_slice(meta.as_bytes());
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data.as_bytes());
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_embeds_the_client_text_unchanged() {
        let mut out = Vec::new();
        let geo = Geo {
            country: Some("GB".into()),
            region: None,
            city: Some("London".into()),
        };
        write_value(
            &mut out,
            &RecordFields {
                backend_id: "b",
                id: Some("e\"1"),
                tenant: "acme",
                category: "c",
                received_at: 5,
                ts: None,
                request_id: "r",
                client_ip: Some("81.2.69.142".parse().unwrap()),
                geo: Some(&geo),
            },
            r#"{"category":"c"}"#,
            r#"{ "id": "e\"1", "n": [1, 2] }"#,
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            r#"{"backend_id":"b","id":"e\"1","tenant":"acme","category":"c","received_at":5,"ts":null,"request_id":"r","client_ip":"81.2.69.142","geo":{"country":"GB","region":null,"city":"London"},"meta":{"category":"c"},"data":{ "id": "e\"1", "n": [1, 2] }}"#
        );
        let _: sonic_rs::Value = sonic_rs::from_str(&text).unwrap();
    }
}
