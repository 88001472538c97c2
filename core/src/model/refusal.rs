//! A whole request refused: an HTTP status, a code from a closed set that
//! clients and dashboards can rely on, and a message that says what and where.

use http::StatusCode;

closed_set! {
    /// Why a whole request was refused: the `error` of an answer, exactly
    /// the `ErrorCode` enum of `proto/openapi.yaml`, in its order (a test
    /// keeps the two the same).
    pub enum ErrorCode {
        // Limits (429, 503, 413).
        RateLimited = "rate_limited",
        TooManyInFlight = "too_many_in_flight",
        Overloaded = "overloaded",
        BatchOverBurst = "batch_over_burst",
        // Who may post what (401, 403).
        Unauthorized = "unauthorized",
        CategoryNotAllowed = "category_not_allowed",
        ClientCertificateRequired = "client_certificate_required",
        // The admin listener's CPU profile.
        InvalidQuery = "invalid_query",
        ProfileRunning = "profile_running",
        ProfileFailed = "profile_failed",
        // The body on the wire (415, 413, 408, 400).
        UnsupportedContentType = "unsupported_content_type",
        UnsupportedContentEncoding = "unsupported_content_encoding",
        BodyTooLarge = "body_too_large",
        MetaTooLarge = "meta_too_large",
        BodyTimeout = "body_timeout",
        BodyReadFailed = "body_read_failed",
        BadEncoding = "bad_encoding",
        // The upload's JSON (400).
        InvalidUtf8 = "invalid_utf8",
        EmptyBody = "empty_body",
        MalformedJson = "malformed_json",
        TooDeep = "too_deep",
        InvalidMeta = "invalid_meta",
        InvalidCategory = "invalid_category",
        InvalidData = "invalid_data",
        EmptyBatch = "empty_batch",
        TooManyEvents = "too_many_events",
        // Routing (404, 405).
        NotFound = "not_found",
        MethodNotAllowed = "method_not_allowed",
    }
}

/// What a refused upload counts as in `weir_uploads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadFault {
    /// Its `meta` object, or the category it names.
    WrongMeta,
    /// Its body or `data`.
    WrongData,
}

impl ErrorCode {
    /// Whether the refusal was the upload's fault, and where; `None` for
    /// limits, keys, routes and the admin listener's own refusals.
    pub fn upload_fault(self) -> Option<UploadFault> {
        use ErrorCode::*;
        match self {
            InvalidMeta | MetaTooLarge | InvalidCategory | CategoryNotAllowed => {
                Some(UploadFault::WrongMeta)
            }
            MalformedJson | InvalidData | EmptyBatch | TooDeep | InvalidUtf8 | EmptyBody
            | TooManyEvents | BadEncoding | BodyTooLarge => Some(UploadFault::WrongData),
            RateLimited
            | TooManyInFlight
            | Overloaded
            | BatchOverBurst
            | Unauthorized
            | ClientCertificateRequired
            | InvalidQuery
            | ProfileRunning
            | ProfileFailed
            | UnsupportedContentType
            | UnsupportedContentEncoding
            | BodyTimeout
            | BodyReadFailed
            | NotFound
            | MethodNotAllowed => None,
        }
    }
}

/// A whole request refused before or during split: a status, a stable
/// machine-readable `error` and a message that says what and where.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct Reject {
    pub status: StatusCode,
    pub error: ErrorCode,
    pub message: String,
    /// Extra headers, such as `WWW-Authenticate`, `Allow` or `Retry-After`.
    pub headers: Vec<(&'static str, String)>,
    /// The limit that was hit, for 429 and over-burst 413 answers.
    pub limit: Option<&'static str>,
    /// When the limit would pass, in milliseconds (exact; `Retry-After` is rounded up).
    pub retry_after_ms: Option<u64>,
}

impl Reject {
    pub fn new(status: StatusCode, error: ErrorCode, message: impl Into<String>) -> Reject {
        Reject {
            status,
            error,
            message: message.into(),
            headers: Vec::new(),
            limit: None,
            retry_after_ms: None,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reject {
        self.headers.push((name, value.into()));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes of `proto/openapi.yaml`'s `ErrorCode` enum, in its order.
    fn documented(schema: &str) -> Vec<String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/openapi.yaml");
        let text = std::fs::read_to_string(path).expect("proto/openapi.yaml");
        let yaml: serde_json::Value = serde_yaml::from_str(&text).expect("openapi.yaml is YAML");
        yaml["components"]["schemas"][schema]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{schema} has an enum"))
            .iter()
            .map(|v| v.as_str().expect("a string code").to_owned())
            .collect()
    }

    #[test]
    fn error_codes_are_exactly_the_documented_ones() {
        let ours: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(ours, documented("ErrorCode"));
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::json!(code.as_str())
            );
        }
    }

    #[test]
    fn part_codes_are_exactly_the_documented_ones() {
        let ours: Vec<&str> = crate::model::PartCode::ALL
            .iter()
            .map(|c| c.as_str())
            .collect();
        assert_eq!(ours, documented("PartCode"));
    }
}
