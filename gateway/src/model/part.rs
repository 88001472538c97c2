//! The answer for one event: a code from a closed set, and what a client
//! needs to act on it.

use std::sync::Arc;

closed_set! {
    /// The status of one event, a closed set every client can rely on:
    /// exactly the `PartCode` enum of `proto/openapi.yaml`, in its order.
    pub enum PartCode {
        /// Acknowledged by Kafka.
        Ok = "ok",
        /// The event is malformed; sending it again will not help.
        Invalid = "invalid",
        /// The event is larger than the tenant's event size limit.
        TooLarge = "too_large",
        /// The batch was over the tenant's event rate; send it again after `Retry-After`.
        RateLimited = "rate_limited",
        /// Dropped by one of the tenant's filters (handled, not an error).
        Filtered = "filtered",
        /// A filter failed on the event (the tenant's policy is fail-closed).
        FilterError = "filter_error",
        /// Kafka did not acknowledge the event in time; send it again.
        DeliveryFailed = "delivery_failed",
    }
}

impl PartCode {
    /// Whether a part with this code counts as handled (not an error).
    pub fn is_accepted(self) -> bool {
        matches!(self, PartCode::Ok | PartCode::Filtered)
    }
}

/// The answer for one event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Part {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub code: PartCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Present on every part that is not `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
}

impl Part {
    /// A part for an event that failed, with the reason and whether to retry.
    pub fn failed(id: Option<String>, code: PartCode, message: String, retryable: bool) -> Part {
        Part {
            id,
            code,
            message: Some(message),
            retryable: Some(retryable),
            backend_id: None,
            topic: None,
            partition: None,
            offset: None,
        }
    }
}
