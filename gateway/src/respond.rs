//! Every answer the node writes: a per-event status for a batch, or a
//! rejection of the whole request. Always JSON, always with the request id.
//!
//! Overall `code`: 0 all accepted, 1 partial, 2 none accepted. The HTTP status
//! follows the parts: 200 all accepted, 202 all accepted with some only in
//! the spool so far, 207 partial, 503 + `Retry-After` when
//! nothing was accepted but something may be sent again (Kafka unavailable),
//! 400 when nothing was accepted and nothing is worth sending again.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use crate::model::{Batch, ErrorCode, Part, PartCode, Reject};

/// Seconds a client should wait before it sends a retryable batch again.
const RETRY_AFTER_SECONDS: u64 = 5;

/// The header that carries the request id.
pub const REQUEST_ID: &str = "x-request-id";

/// The body type of every response.
pub type Body = Full<Bytes>;

#[derive(Serialize)]
struct BatchAnswer<'a> {
    code: u8,
    message: String,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    parts: Vec<&'a Part>,
}

/// Turns a batch whose every event is decided into the response. `limited`
/// is the event-rate refusal when the batch was refused as a whole.
pub fn answer(batch: &Batch<'_>, request_id: &str, limited: Option<&Reject>) -> Response<Body> {
    let parts: Vec<&Part> = batch
        .events
        .iter()
        .filter_map(|e| e.part.as_ref())
        .collect();
    let total = parts.len();
    let accepted = parts.iter().filter(|p| p.code.is_accepted()).count();
    let retryable = parts.iter().any(|p| p.retryable == Some(true));
    let failed = total - accepted;
    let filtered = parts
        .iter()
        .filter(|p| p.code == PartCode::Filtered)
        .count();
    let spooled = parts.iter().filter(|p| p.code == PartCode::Spooled).count();
    let (code, status, message) = if let (Some(limited), 0) = (limited, accepted) {
        (2, limited.status, limited.message.clone())
    } else if failed == 0 && spooled > 0 {
        (
            0,
            StatusCode::ACCEPTED,
            format!("{total} events accepted, {spooled} of them spooled until Kafka takes them"),
        )
    } else if failed == 0 && filtered > 0 {
        let written = total - filtered;
        (
            0,
            StatusCode::OK,
            format!("{written} events accepted, {filtered} filtered"),
        )
    } else if failed == 0 {
        (0, StatusCode::OK, format!("{total} events accepted"))
    } else if accepted > 0 {
        (
            1,
            StatusCode::MULTI_STATUS,
            format!("{failed} of {total} events failed"),
        )
    } else if retryable {
        (
            2,
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{failed} of {total} events failed; retry later"),
        )
    } else {
        (
            2,
            StatusCode::BAD_REQUEST,
            format!("{failed} of {total} events failed"),
        )
    };
    let body = BatchAnswer {
        code,
        message,
        request_id,
        error: limited.map(|l| l.error),
        limit: limited.and_then(|l| l.limit),
        retry_after_ms: limited.and_then(|l| l.retry_after_ms),
        parts,
    };
    let mut response = json(status, &body, request_id);
    match limited {
        Some(limited) => add_headers(&mut response, limited),
        None if retryable => {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        None => {}
    }
    response
}

/// Turns a rejection into its response.
pub fn reject(reject: &Reject, request_id: &str) -> Response<Body> {
    let body = BatchAnswer {
        code: 2,
        message: reject.message.clone(),
        request_id,
        error: Some(reject.error),
        limit: reject.limit,
        retry_after_ms: reject.retry_after_ms,
        parts: Vec::new(),
    };
    let mut response = json(reject.status, &body, request_id);
    add_headers(&mut response, reject);
    response
}

fn add_headers(response: &mut Response<Body>, reject: &Reject) {
    for (name, value) in &reject.headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(*name, value);
        }
    }
}

/// A JSON response with the request id header.
pub fn json(status: StatusCode, body: &impl Serialize, request_id: &str) -> Response<Body> {
    // Serializing these plain structs cannot fail; an empty object is the safe fallback.
    let bytes = sonic_rs::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID, id);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, Meta};

    fn batch_of(parts: Vec<Part>) -> Batch<'static> {
        Batch {
            meta: Meta {
                category: "c".into(),
                device_id: None,
                app: None,
                raw: "{}",
            },
            events: parts
                .into_iter()
                .map(|p| Event {
                    id: p.id.clone(),
                    raw: "{}".into(),
                    ts: None,
                    ip: None,
                    enrichment: None,
                    part: Some(p),
                })
                .collect(),
            received_at: 0,
        }
    }

    fn ok() -> Part {
        Part {
            id: Some("a".into()),
            code: PartCode::Ok,
            message: None,
            retryable: None,
            backend_id: Some("b".into()),
            topic: Some("t".into()),
            partition: Some(0),
            offset: Some(1),
            spooled: None,
        }
    }

    fn spooled() -> Part {
        Part::spooled(Some("s".into()), Some("b".into()), "node-1".into(), 7)
    }

    fn failed(code: PartCode, retryable: bool) -> Part {
        Part::failed(Some("x".into()), code, "why".into(), retryable)
    }

    fn outcome(parts: Vec<Part>) -> (u16, u8, bool) {
        let response = answer(&batch_of(parts), "r", None);
        let status = response.status().as_u16();
        let retry = response.headers().contains_key(RETRY_AFTER);
        let body =
            futures::executor::block_on(http_body_util::BodyExt::collect(response.into_body()))
                .unwrap()
                .to_bytes();
        let value: sonic_rs::Value = sonic_rs::from_slice(&body).unwrap();
        let code = sonic_rs::JsonValueTrait::as_u64(&value["code"]).unwrap() as u8;
        (status, code, retry)
    }

    #[test]
    fn status_follows_the_parts() {
        assert_eq!(outcome(vec![ok(), ok()]), (200, 0, false));
        // Spooled counts as accepted: 202, code 0, nothing to send again.
        assert_eq!(outcome(vec![ok(), spooled()]), (202, 0, false));
        assert_eq!(outcome(vec![spooled()]), (202, 0, false));
        let mut filtered = failed(PartCode::Filtered, false);
        filtered.retryable = Some(false);
        assert_eq!(outcome(vec![filtered, spooled()]), (202, 0, false));
        assert_eq!(
            outcome(vec![spooled(), failed(PartCode::DeliveryFailed, true)]),
            (207, 1, true)
        );
        assert_eq!(
            outcome(vec![ok(), failed(PartCode::Invalid, false)]),
            (207, 1, false)
        );
        assert_eq!(
            outcome(vec![ok(), failed(PartCode::DeliveryFailed, true)]),
            (207, 1, true)
        );
        assert_eq!(
            outcome(vec![failed(PartCode::Invalid, false)]),
            (400, 2, false)
        );
        assert_eq!(
            outcome(vec![
                failed(PartCode::Invalid, false),
                failed(PartCode::DeliveryFailed, true)
            ]),
            (503, 2, true)
        );
    }
}
