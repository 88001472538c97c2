//! Decode and split an upload, with the default limits and with tight ones.
//!
//! Never a panic or a stack overflow (scripts/fuzz.sh runs targets on a
//! 1 MiB stack). Differential against serde_json: every event accepted is
//! JSON serde_json takes, within the event's size and depth limits; an
//! accepted upload has exactly the events its `data` array holds, each the
//! element's own text; a body serde_json reads as an object within the
//! depth limit is never refused as malformed or too deep, and one nested
//! deeper always is; an accepted event's id, ts and ip are the ones
//! serde_json reads in it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use weir_core::config::Limits;
use weir_core::decode::decode_and_split;
use weir_core::model::ErrorCode;
use weir_fuzz::{depth, is_json};

/// The upload as serde_json reads it: `data`'s elements as their text.
#[derive(serde::Deserialize)]
struct Upload<'a> {
    #[serde(borrow)]
    data: Vec<&'a RawValue>,
}

fuzz_target!(|body: &[u8]| {
    let tight = Limits {
        max_depth: 4,
        max_event_bytes: 64,
        max_meta_bytes: 64,
        max_events_per_batch: 3,
        ..Limits::default()
    };
    let serde_depth = depth(body);
    for limits in [Limits::default(), tight] {
        let batch = match decode_and_split(body, &limits, 0) {
            Ok(batch) => batch,
            Err(refused) => {
                let status = refused.status.as_u16();
                assert!(
                    status == 400 || status == 413,
                    "{status}: {}",
                    refused.message
                );
                assert!(!refused.message.is_empty());
                // A body serde_json reads within the depth limit is not
                // refused for its syntax or its depth; a deeper one is.
                let object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
                match serde_depth {
                    Some(d) if object && d > limits.max_depth => {
                        assert_eq!(refused.error, ErrorCode::TooDeep, "{}", refused.message)
                    }
                    Some(_) if object => assert!(
                        !matches!(
                            refused.error,
                            ErrorCode::MalformedJson | ErrorCode::TooDeep | ErrorCode::InvalidUtf8
                        ) || refused.message.contains("is given twice"),
                        "serde_json reads it: {}",
                        refused.message
                    ),
                    _ => {}
                }
                continue;
            }
        };
        // Accepted: JSON within the depth limit, and its events are the
        // elements of its `data` array, one for one.
        let d = serde_depth.expect("an accepted upload is JSON serde_json reads");
        assert!(
            d <= limits.max_depth,
            "depth {d} accepted, limit {}",
            limits.max_depth
        );
        assert!(batch.meta.raw.len() <= limits.max_meta_bytes);
        assert!(
            is_json(batch.meta.raw.as_bytes()),
            "meta: {}",
            batch.meta.raw
        );
        let upload: Upload = serde_json::from_slice(body).expect("`data` is an array");
        assert_eq!(batch.events.len(), upload.data.len());
        assert!(batch.events.len() <= limits.max_events_per_batch);
        for (event, element) in batch.events.iter().zip(&upload.data) {
            if event.part.is_some() {
                continue;
            }
            assert_eq!(
                event.raw.trim(),
                element.get(),
                "an event is its element's text"
            );
            assert!(event.raw.len() <= limits.max_event_bytes, "{}", event.raw);
            assert!(event.raw.trim_start().starts_with('{'), "{}", event.raw);
            assert!(
                is_json(event.raw.as_bytes()),
                "accepted but not JSON: {}",
                event.raw
            );
            // The fields the node reads are serde_json's (the last copy of
            // a repeated key, escapes read).
            if let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(element.get()) {
                let field = |key| fields.get(key).filter(|v| !v.is_null());
                let text = element.get();
                assert_eq!(
                    event.id.as_deref(),
                    field("id").and_then(|v| v.as_str()),
                    "id of {text}"
                );
                assert_eq!(
                    event.ts,
                    field("ts").and_then(|v| v.as_i64()),
                    "ts of {text}"
                );
                let ip = field("ip")
                    .and_then(|v| v.as_str())
                    .and_then(|s| s.parse().ok());
                assert_eq!(event.ip, ip, "ip of {text}");
            }
        }
    }
});
