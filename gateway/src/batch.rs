//! The types every stage shares: a tenant, an upload split into events, and
//! the per-event status that becomes the answer.
//!
//! A [`Batch`] borrows the request body: the meta object and each event stay
//! the raw JSON text the client sent, so the record value is written without
//! re-encoding the client's data.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::Limits;
use crate::filter::FilterSlot;
use crate::limit::Quotas;

/// A tenant as the request path sees it, resolved from its API key.
pub struct Tenant {
    pub name: Arc<str>,
    /// Glob patterns of the categories it may post.
    pub categories: Vec<String>,
    /// Its rate limiters and in-flight count, with the limits they enforce.
    pub quotas: Arc<Quotas>,
    /// Its filter chain, in order.
    pub filters: Vec<Arc<FilterSlot>>,
    /// SHA-256 of the client certificates it must present; empty: none needed.
    pub client_certs: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant").field("name", &self.name).finish()
    }
}

impl Tenant {
    /// The tenant's limits.
    pub fn limits(&self) -> &Limits {
        &self.quotas.limits
    }

    /// Whether the tenant may post to `category` (a glob match, `*` any run of characters).
    pub fn allows(&self, category: &str) -> bool {
        self.categories
            .iter()
            .any(|pattern| glob_match(pattern.as_bytes(), category.as_bytes()))
    }
}

/// Matches `text` against `pattern`, where `*` stands for any run of bytes.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative match with backtracking to the last star: linear for the
    // short patterns of a config file, no recursion.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// A byte allowed in tenant names and categories: `A-Z a-z 0-9 _ . -`.
pub fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// Whether `category` is a safe topic-name part: `^[A-Za-z0-9_.-]{1,64}$`.
pub fn is_valid_category(category: &str) -> bool {
    (1..=64).contains(&category.len()) && category.bytes().all(is_name_byte)
}

/// The `meta` object of an upload: what the stages need of it, plus its raw text.
#[derive(Debug)]
pub struct Meta<'a> {
    pub category: String,
    pub device_id: Option<String>,
    pub app: Option<String>,
    /// The whole meta object as the client sent it.
    pub raw: &'a str,
}

/// One event of an upload, from split to answer.
#[derive(Debug)]
pub struct Event<'a> {
    /// The client's id, when it gave a usable one.
    pub id: Option<String>,
    /// The event object as the client sent it, or as a filter replaced it.
    pub raw: Cow<'a, str>,
    pub ts: Option<i64>,
    /// The event's own `ip` field, which wins over the client address.
    pub ip: Option<IpAddr>,
    /// Set by `enrich`.
    pub enrichment: Option<Enrichment>,
    /// `None` while the event is still on its way; set once it is decided.
    pub part: Option<Part>,
}

/// What the gateway adds to every event.
#[derive(Debug, Clone)]
pub struct Enrichment {
    /// UUIDv7, time-ordered; kept as bits (written out hyphenated where
    /// it leaves the node: the record, the key, the answer).
    pub backend_id: uuid::Uuid,
    pub client_ip: Option<IpAddr>,
    /// Shared by the events of a batch that come from one address.
    pub geo: Option<Arc<Geo>>,
}

/// Location of an IP address; any field may be unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Geo {
    /// ISO 3166-1 alpha-2 code.
    pub country: Option<String>,
    /// First subdivision, English name.
    pub region: Option<String>,
    /// English name.
    pub city: Option<String>,
}

/// An upload after decode and split: the meta object and every event in order.
#[derive(Debug)]
pub struct Batch<'a> {
    pub meta: Meta<'a>,
    pub events: Vec<Event<'a>>,
    /// Upload time, milliseconds since the epoch; one value for the whole batch.
    pub received_at: i64,
}

impl<'a> Batch<'a> {
    /// Events that no stage has decided yet.
    pub fn pending(&self) -> impl Iterator<Item = &Event<'a>> {
        self.events.iter().filter(|e| e.part.is_none())
    }
}

/// The status of one event, a closed set every client can rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartCode {
    /// Acknowledged by Kafka.
    Ok,
    /// The event is malformed; sending it again will not help.
    Invalid,
    /// The event is larger than the tenant's event size limit.
    TooLarge,
    /// The batch was over the tenant's event rate; send it again after `Retry-After`.
    RateLimited,
    /// Dropped by one of the tenant's filters (handled, not an error).
    Filtered,
    /// A filter failed on the event, or replaced it with something invalid.
    FilterError,
    /// Kafka did not acknowledge the event in time; send it again.
    DeliveryFailed,
}

impl PartCode {
    /// The code as it appears in answers and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            PartCode::Ok => "ok",
            PartCode::Invalid => "invalid",
            PartCode::TooLarge => "too_large",
            PartCode::RateLimited => "rate_limited",
            PartCode::Filtered => "filtered",
            PartCode::FilterError => "filter_error",
            PartCode::DeliveryFailed => "delivery_failed",
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_a_shell() {
        for (pattern, text, expected) in [
            ("*", "anything", true),
            ("PERF_CRASH", "PERF_CRASH", true),
            ("PERF_CRASH", "PERF_CRASHX", false),
            ("app_*", "app_start", true),
            ("app_*", "app_", true),
            ("app_*", "ap", false),
            ("*_x_*", "a_x_b", true),
            ("*_x_*", "a_y_b", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
        ] {
            assert_eq!(
                glob_match(pattern.as_bytes(), text.as_bytes()),
                expected,
                "{pattern} ~ {text}"
            );
        }
    }

    #[test]
    fn categories_are_safe_topic_names() {
        assert!(is_valid_category("PERF_CRASH"));
        assert!(is_valid_category("a.b-c_9"));
        assert!(!is_valid_category(""));
        assert!(!is_valid_category("a/b"));
        assert!(!is_valid_category("é"));
        assert!(!is_valid_category(&"x".repeat(65)));
        assert!(is_valid_category(&"x".repeat(64)));
    }
}
