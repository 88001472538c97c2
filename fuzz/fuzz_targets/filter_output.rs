//! What a filter returns, through the host's checks and into records.
//!
//! A list of verdicts (keep, drop with a reason, replace with any bytes)
//! for an upload's events goes through the checks the host applies to a
//! replacement (size, depth, UTF-8, JSON syntax, an object); each event
//! still kept becomes its record value. Never a panic; a replacement taken
//! is a JSON object serde_json reads, within the event's size and depth
//! limits; and every record value, and every answer a reason goes into, is
//! JSON, whatever the filter returned.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use weir_core::config::Limits;
use weir_core::decode::{decode_and_split, replacement, EventLimits};
use weir_core::model::{Geo, Part, PartCode};
use weir_core::record::{write_value, RecordFields};
use weir_fuzz::{depth, is_json};

#[derive(Arbitrary, Debug)]
enum Verdict {
    Keep,
    Drop(String),
    Replace(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    verdicts: Vec<Verdict>,
    tight: bool,
}

const UPLOAD: &[u8] = br#"{"meta":{"category":"c","device_id":"d\u00e9"},"data":[{"id":"a","n":1e999},{"id":"b","s":"\ud83d\ude00"},{"id":"c","x":[[[]]]}]}"#;

fuzz_target!(|input: Input| {
    let limits = match input.tight {
        true => Limits {
            max_depth: 5,
            max_event_bytes: 40,
            ..Limits::default()
        },
        false => Limits::default(),
    };
    let event_limits = EventLimits::of(&limits);
    let mut batch = decode_and_split(UPLOAD, &Limits::default(), 1).expect("a valid upload");
    // As the host: a call's verdicts apply one for one to its events.
    for (event, verdict) in batch.events.iter_mut().zip(input.verdicts) {
        match verdict {
            Verdict::Keep => {}
            // As the host: the reason goes into the event's answer.
            Verdict::Drop(reason) => {
                let part = Part::failed(
                    event.id.clone(),
                    PartCode::Filtered,
                    format!("f: {reason}"),
                    false,
                );
                let answer = serde_json::to_vec(&part).expect("a part serializes");
                assert!(is_json(&answer));
                event.raw = "dropped".into();
            }
            Verdict::Replace(bytes) => match replacement(bytes, event_limits) {
                Ok(body) => {
                    assert!(body.len() <= event_limits.max_bytes);
                    assert!(body.trim_start().starts_with('{'), "{body}");
                    let d = depth(body.as_bytes()).expect("a replacement taken is JSON");
                    assert!(d <= event_limits.max_depth, "{d} levels: {body}");
                    event.raw = body.into();
                }
                Err(problem) => assert!(!problem.is_empty()),
            },
        }
    }
    let geo = Geo {
        country: Some("GB".into()),
        region: None,
        city: Some("\"quoted\"".into()),
    };
    let mut value = Vec::new();
    for event in batch.events.iter().filter(|e| e.raw != "dropped") {
        value.clear();
        let fields = RecordFields {
            backend_id: "0190a0e0-0000-7000-8000-000000000000",
            id: event.id.as_deref(),
            tenant: "acme",
            category: &batch.meta.category,
            received_at: batch.received_at,
            ts: event.ts,
            request_id: "r",
            client_ip: None,
            geo: Some(&geo),
        };
        write_value(&mut value, &fields, batch.meta.raw, &event.raw);
        assert!(
            is_json(&value),
            "a record that is not JSON: {}",
            String::from_utf8_lossy(&value)
        );
    }
});
