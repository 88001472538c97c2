//! The types every stage shares: an upload split into events, each event's
//! answer, and a refusal of a whole request. They depend on nothing else of
//! the gateway; the edge, the pipeline and the node depend on them.

/// An enum of a closed set of codes that travel as strings (answers,
/// metrics, spans): each variant with its text, `ALL` in declaration order,
/// `as_str`, `Display` and `Serialize` from one list, so that the three
/// cannot drift apart.
macro_rules! closed_set {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every code, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The code as it appears in answers, metrics and spans.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

mod batch;
mod part;
mod refusal;

pub use batch::{Batch, Enrichment, Event, Geo, Meta};
pub use part::{Part, PartCode, SpoolPlace};
pub use refusal::{ErrorCode, Reject, UploadFault};

/// A byte allowed in tenant names and categories: `A-Z a-z 0-9 _ . -`.
pub fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// Whether `name` (a category, a tenant's name) is a safe topic-name
/// part: `^[A-Za-z0-9_.-]{1,64}$`, but not `.` or `..`, which Kafka refuses
/// as topic names (a topic template may be just `{category}`).
pub fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(is_name_byte) && name != "." && name != ".."
}

/// Whether `category` is a safe topic-name part (see [`is_valid_name`]).
pub fn is_valid_category(category: &str) -> bool {
    is_valid_name(category)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_safe_topic_names() {
        assert!(is_valid_category("PERF_CRASH"));
        assert!(is_valid_category("a.b-c_9"));
        assert!(!is_valid_category(""));
        assert!(!is_valid_category("a/b"));
        assert!(!is_valid_category("."));
        assert!(!is_valid_category(".."));
        assert!(is_valid_category("..."));
        assert!(!is_valid_category(&"a".repeat(65)));
        assert!(!is_valid_category("é"));
        assert!(!is_valid_category(&"x".repeat(65)));
        assert!(is_valid_category(&"x".repeat(64)));
    }
}
