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
        /// Kafka could not take the event now: it is in the node's durable
        /// spool and reaches Kafka once it can (accepted; not retryable).
        Spooled = "spooled",
    }
}

impl PartCode {
    /// Whether a part with this code counts as handled (not an error).
    pub fn is_accepted(self) -> bool {
        matches!(self, PartCode::Ok | PartCode::Filtered | PartCode::Spooled)
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
    /// Boxed text (no spare capacity): every event's part has room for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_id: Option<Box<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    /// A spooled event: where it is (boxed: rare, and parts are moved a lot).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub spooled: Option<Box<SpoolPlace>>,
}

/// Where a spooled event waits for Kafka.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SpoolPlace {
    /// The node whose spool holds it.
    pub node: Arc<str>,
    /// Its record number in that spool.
    pub spool_seq: u64,
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
            spooled: None,
        }
    }

    /// A part for an event written to the spool of `node` as record `seq`.
    pub fn spooled(
        id: Option<String>,
        backend_id: Option<Box<str>>,
        node: Arc<str>,
        seq: u64,
    ) -> Part {
        Part {
            id,
            code: PartCode::Spooled,
            message: Some(format!(
                "Kafka could not take the event now: it is in node {node}'s spool (record {seq}) and goes to Kafka once it can"
            )),
            retryable: Some(false),
            backend_id,
            topic: None,
            partition: None,
            offset: None,
            spooled: Some(Box::new(SpoolPlace {
                node,
                spool_seq: seq,
            })),
        }
    }
}
