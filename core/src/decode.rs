//! Decode, validate and split: the body becomes a [`Batch`] of events.
//!
//! Problems with the upload as a whole (not JSON, no `meta`, too many events)
//! reject the request with a [`Reject`]. Problems with one event (no `id`,
//! not an object, too large) become that event's own `invalid`/`too_large`
//! part, and the other events go on: a client loses only what was wrong.
//!
//! The parse is lazy (sonic-rs iterators): the top-level keys and each event's
//! `id`, `ts` and `ip` are read, and everything else stays the raw text the
//! client sent, which `produce` copies into the record as it is. The iterators
//! validate what they skip, so the whole body is still checked to be JSON
//! (but for the digits of `\u` escapes, which [`check_depth`] checks).

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use http::StatusCode;
use sonic_rs::{JsonType, JsonValueTrait, LazyValue};

use crate::config::Limits;
use crate::model::{is_valid_category, Batch, Event, Meta, Part, PartCode};
use crate::model::{ErrorCode, Reject};

mod entries;

/// Longest event `id` accepted, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// An upload after decode: its meta object, and the `data` array not yet split.
#[derive(Debug)]
pub struct Upload<'a> {
    pub meta: Meta<'a>,
    /// The raw text of the `data` array, which [`decode`]'s checked parse
    /// has read whole: valid JSON, as [`split`]'s unchecked iterators need.
    /// Private, so that no other `Upload` can be made.
    data: &'a str,
}

/// Decodes `body`: checks it is UTF-8 JSON within the depth limit, and reads
/// and validates `meta`. Splitting `data` is [`split`]'s job.
pub fn decode<'a>(body: &'a [u8], limits: &Limits) -> Result<Upload<'a>, Reject> {
    let text = std::str::from_utf8(body).map_err(|e| {
        bad_request(
            ErrorCode::InvalidUtf8,
            format!("body: invalid UTF-8 at byte {}", e.valid_up_to()),
        )
    })?;
    let start = text.trim_start_matches(is_json_space);
    if start.is_empty() {
        return Err(bad_request(ErrorCode::EmptyBody, "body: empty"));
    }
    if !start.starts_with('{') {
        return Err(bad_request(
            ErrorCode::MalformedJson,
            "body: must be a JSON object with `meta` and `data`",
        ));
    }
    let end = match check_depth(text.as_bytes(), limits.max_depth) {
        Ok(end) => end,
        Err(Unreadable::TooDeep(at)) => {
            return Err(bad_request(
                ErrorCode::TooDeep,
                format!(
                    "body: JSON nested deeper than {} levels at byte {at}",
                    limits.max_depth
                ),
            ))
        }
        Err(Unreadable::BadEscape(at)) => {
            return Err(bad_request(
                ErrorCode::MalformedJson,
                format!("body: invalid string escape at byte {at}"),
            ))
        }
    };
    let (mut meta, mut data) = (None, None);
    for entry in sonic_rs::to_object_iter(text) {
        let (key, value) = entry.map_err(malformed)?;
        let slot = match key.as_ref() {
            "meta" => &mut meta,
            "data" => &mut data,
            _ => continue,
        };
        // Readers disagree on which copy of a repeated key counts.
        if slot.replace(value).is_some() {
            return Err(bad_request(
                ErrorCode::MalformedJson,
                format!("body: `{key}` is given twice"),
            ));
        }
    }
    // The parser stops at the object's end: what follows is checked here.
    if let Some(extra) = text
        .get(end..)
        .and_then(|rest| rest.find(|c: char| !is_json_space(c)))
    {
        return Err(bad_request(
            ErrorCode::MalformedJson,
            format!(
                "body: unexpected text after the JSON object at byte {}",
                end + extra
            ),
        ));
    }
    let meta = decode_meta(
        meta.ok_or_else(|| bad_request(ErrorCode::InvalidMeta, "meta: missing"))?,
        limits,
    )?;
    let data = data.ok_or_else(|| bad_request(ErrorCode::InvalidData, "data: missing"))?;
    if data.get_type() != JsonType::Array {
        return Err(bad_request(
            ErrorCode::InvalidData,
            "data: must be an array of event objects",
        ));
    }
    Ok(Upload {
        meta,
        data: raw_text(&data)?,
    })
}

/// Splits the upload's `data` array into events, validating each on its own.
pub fn split<'a>(
    upload: Upload<'a>,
    limits: &Limits,
    received_at: i64,
) -> Result<Batch<'a>, Reject> {
    Ok(Batch {
        meta: upload.meta,
        events: split_events(upload.data, limits)?,
        received_at,
    })
}

/// Decode and split in one call.
pub fn decode_and_split<'a>(
    body: &'a [u8],
    limits: &Limits,
    received_at: i64,
) -> Result<Batch<'a>, Reject> {
    split(decode(body, limits)?, limits, received_at)
}

fn decode_meta<'a>(value: LazyValue<'a>, limits: &Limits) -> Result<Meta<'a>, Reject> {
    if value.get_type() != JsonType::Object {
        return Err(bad_request(
            ErrorCode::InvalidMeta,
            "meta: must be an object",
        ));
    }
    let raw = raw_text(&value)?;
    // Every record carries `meta`: its size counts as many times as there are events.
    if raw.len() > limits.max_meta_bytes {
        return Err(Reject::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::MetaTooLarge,
            format!(
                "meta: {} bytes, more than the limit of {}",
                raw.len(),
                limits.max_meta_bytes
            ),
        ));
    }
    let (mut category, mut device_id, mut app) = (None, None, None);
    let mut seen = [false; 3];
    for entry in sonic_rs::to_object_iter(raw) {
        let (key, value) = entry.map_err(malformed)?;
        let (slot, i) = match key.as_ref() {
            "category" => (&mut category, 0),
            "device_id" => (&mut device_id, 1),
            "app" => (&mut app, 2),
            _ => continue,
        };
        // The record carries `meta` as sent: a consumer reading another
        // copy would see another category (or device) than the one checked.
        if std::mem::replace(&mut seen[i], true) {
            return Err(bad_request(
                ErrorCode::InvalidMeta,
                format!("meta.{key}: given twice"),
            ));
        }
        if value.is_null() {
            continue; // null is the same as absent
        }
        let Some(s) = value.as_str() else {
            return Err(bad_request(
                ErrorCode::InvalidMeta,
                format!("meta.{key}: must be a string"),
            ));
        };
        *slot = Some(s.to_owned());
    }
    let category =
        category.ok_or_else(|| bad_request(ErrorCode::InvalidMeta, "meta.category: missing"))?;
    if !is_valid_category(&category) {
        return Err(bad_request(
            ErrorCode::InvalidCategory,
            format!(
                "meta.category: '{}' is not a valid category (1 to 64 characters of A-Z a-z 0-9 _ . -)",
                category.escape_debug()
            ),
        ));
    }
    Ok(Meta {
        category,
        device_id,
        app,
        raw,
    })
}

/// The raw text of a lazy value, with the body's lifetime. Parsing a `&str`
/// always borrows; the owned case cannot happen but is an error, not a panic.
fn raw_text<'a>(value: &LazyValue<'a>) -> Result<&'a str, Reject> {
    match value.as_raw_cow() {
        Cow::Borrowed(text) => Ok(text),
        Cow::Owned(_) => Err(bad_request(
            ErrorCode::MalformedJson,
            "body: unexpected JSON layout",
        )),
    }
}

fn split_events<'a>(data: &'a str, limits: &Limits) -> Result<Vec<Event<'a>>, Reject> {
    let mut events = Vec::new();
    let mut ids: HashMap<Cow<'a, str>, usize> = HashMap::new();
    // Read once, checked, by `decode` (sonic-rs checks what it skips):
    // walked here where it lies, each event once (`entries`: the walk that
    // reads its id, ts and ip finds where it ends), the longest stage of a
    // request. The walk ends early only where the text is not JSON, which
    // decode has ruled out.
    let layout = || bad_request(ErrorCode::MalformedJson, "body: unexpected JSON layout");
    let mut array = entries::Elements::new(data);
    let mut index = 0;
    while let Some(start) = array.next_start().map_err(|()| layout())? {
        if index >= limits.max_events_per_batch {
            return Err(Reject::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooManyEvents,
                format!(
                    "data: more than {} events (the batch limit)",
                    limits.max_events_per_batch
                ),
            ));
        }
        let text = data.get(start..).unwrap_or_default();
        let (len, checked) = walk_event(index, text, limits).ok_or_else(layout)?;
        array.ended_at(start + len);
        let raw = &text[..len];
        let mut event = Event {
            id: None,
            raw: Cow::Borrowed(raw),
            ts: None,
            ip: None,
            enrichment: None,
            part: None,
        };
        match checked {
            Ok(head) => {
                event.id = Some(head.id.to_string());
                if let Some(&first) = ids.get(&head.id) {
                    event.part = Some(Part::failed(
                        event.id.clone(),
                        PartCode::Invalid,
                        format!(
                            "data[{index}].id: '{}' is a duplicate of data[{first}].id",
                            head.id.escape_debug()
                        ),
                        false,
                    ));
                } else {
                    ids.insert(head.id, index);
                    event.ts = head.ts;
                    event.ip = head.ip;
                }
            }
            Err(failure) => event.part = Some(failure),
        }
        events.push(event);
        index += 1;
    }
    if events.is_empty() {
        return Err(bad_request(
            ErrorCode::EmptyBatch,
            "data: empty, at least one event is required",
        ));
    }
    Ok(events)
}

/// The fields of an event the gateway reads.
struct Head<'a> {
    /// Borrowed from the body unless it has escapes.
    id: Cow<'a, str>,
    ts: Option<i64>,
    ip: Option<IpAddr>,
}

/// Walks the event at the start of `text` (the rest of the upload's
/// `data`): its length, and what split reads of it or, if it is no event
/// the node takes, its failure (the event's part). `None` where the walk
/// found text that is not JSON.
fn walk_event<'a>(
    index: usize,
    text: &'a str,
    limits: &Limits,
) -> Option<(usize, Result<Head<'a>, Part>)> {
    if !text.starts_with('{') {
        let len = entries::value_end_in(text, 0)?;
        return Some((
            len,
            Err(invalid(None, format!("data[{index}]: must be an object"))),
        ));
    }
    // The id is read even for an oversized event, so the client can tell which one it was.
    let (mut id, mut ts, mut ip) = (None, None, None);
    let mut walk = entries::entries(text);
    for entry in walk.by_ref() {
        let (key, value) = entry?;
        // A key is read with its escapes (`"i\u0064"` is `id`).
        let key = match key.contains('\\') {
            false => Cow::Borrowed(key),
            true => {
                sonic_rs::from_str(&format!("\"{key}\"")).map_or(Cow::Borrowed(key), Cow::Owned)
            }
        };
        let slot = match key.as_ref() {
            "id" => &mut id,
            "ts" => &mut ts,
            "ip" => &mut ip,
            _ => continue,
        };
        // (A later copy of a key wins, as it did with sonic-rs's iterator.)
        *slot = Some(value);
    }
    let len = walk.end()?;
    Some((len, check_event(index, &text[..len], id, ts, ip, limits)))
}

/// Checks what split read of one event (`raw`); a failure is the event's part.
fn check_event<'a>(
    index: usize,
    raw: &str,
    id: Option<&'a str>,
    ts: Option<&str>,
    ip: Option<&str>,
    limits: &Limits,
) -> Result<Head<'a>, Part> {
    let id = match id {
        None => return Err(invalid(None, format!("data[{index}].id: missing"))),
        Some(text) => match string_of(text) {
            None => return Err(invalid(None, format!("data[{index}].id: must be a string"))),
            Some(s) if s.is_empty() => {
                return Err(invalid(None, format!("data[{index}].id: empty")))
            }
            Some(s) if s.len() > MAX_ID_BYTES => {
                return Err(invalid(
                    None,
                    format!("data[{index}].id: longer than {MAX_ID_BYTES} bytes"),
                ))
            }
            Some(s) => s,
        },
    };
    let owned_id = || Some(id.to_string());
    if raw.len() > limits.max_event_bytes {
        return Err(Part::failed(
            owned_id(),
            PartCode::TooLarge,
            format!(
                "data[{index}]: {} bytes, the event limit is {}",
                raw.len(),
                limits.max_event_bytes
            ),
            false,
        ));
    }
    let ts = match ts {
        None | Some("null") => None,
        Some(text) => match integer_of(text).filter(|t| *t >= 0) {
            Some(t) => Some(t),
            None => {
                return Err(invalid(
                    owned_id(),
                    format!("data[{index}].ts: must be milliseconds since the epoch (a non-negative integer)"),
                ))
            }
        },
    };
    let ip = match ip {
        None | Some("null") => None,
        Some(text) => match string_of(text).map(|s| s.parse::<IpAddr>()) {
            Some(Ok(ip)) => Some(ip),
            _ => {
                return Err(invalid(
                    owned_id(),
                    format!(
                        "data[{index}].ip: {} is not an IP address",
                        text.chars().take(64).collect::<String>()
                    ),
                ))
            }
        },
    };
    Ok(Head { id, ts, ip })
}

/// The contents of a JSON value's text if it is a string, borrowed from the
/// body when it has no escapes (ids almost never do), so split allocates
/// nothing to check duplicates.
fn string_of(text: &str) -> Option<Cow<'_, str>> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    match inner.contains('\\') {
        false => Some(Cow::Borrowed(inner)),
        true => sonic_rs::from_str::<String>(text).ok().map(Cow::Owned),
    }
}

/// A JSON value's text as an i64 if it is an integer that fits, as
/// sonic-rs's `as_i64` reads it (plain digits without sonic-rs: most
/// timestamps).
fn integer_of(text: &str) -> Option<i64> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    sonic_rs::from_str::<LazyValue>(text).ok()?.as_i64()
}

fn invalid(id: Option<String>, message: String) -> Part {
    Part::failed(id, PartCode::Invalid, message, false)
}

fn bad_request(error: ErrorCode, message: impl Into<String>) -> Reject {
    Reject::new(StatusCode::BAD_REQUEST, error, message)
}

fn malformed(e: sonic_rs::Error) -> Reject {
    bad_request(ErrorCode::MalformedJson, format!("body: invalid JSON: {e}"))
}

/// JSON's white space (RFC 8259 §2), the only text allowed around and
/// between values: Rust's `trim` and `is_ascii_whitespace` take more (a
/// form feed, Unicode spaces), which serde_json, and so every filter and
/// consumer, refuses.
fn is_json_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Why [`check_depth`] refused a text, and at which byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// An object or array nested deeper than the limit: its bracket.
    TooDeep(usize),
    /// A string escape JSON does not have (`\x`, `\u` without four hex
    /// digits, half a surrogate pair): its backslash.
    BadEscape(usize),
}

/// Checks that no object or array nests deeper than `max`, and that every
/// string escape is JSON; the result is where the first value (the body's
/// object) ends. Runs before the parser so that hostile nesting is refused
/// in one linear pass, never by deep recursion.
///
/// The escapes are checked here because this pass and the parser must agree
/// on where each string ends, and sonic-rs's lazy iterators do not check
/// the digits of a `\u` when they skip a string: `"\uabc\"` would end the
/// string for them and not for this pass, which would then miss the nesting
/// that follows, and the record would carry text that is not JSON. A lone
/// surrogate (`\ud800`) is refused too: strict readers (serde_json, so
/// every filter) refuse it.
pub fn check_depth(text: &[u8], max: usize) -> Result<usize, Unreadable> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' => {
                // Skip the string: jump from quote or backslash to the next one.
                i += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &text[i..]) {
                        Some(n) if text[i + n] == b'\\' => {
                            let at = i + n;
                            i = at + escape_len(text, at).ok_or(Unreadable::BadEscape(at))?;
                        }
                        Some(n) => {
                            i += n;
                            break;
                        }
                        // Unterminated: the parser reports it.
                        None => return Ok(text.len()),
                    }
                    if i >= text.len() {
                        return Ok(text.len());
                    }
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Err(Unreadable::TooDeep(i));
                }
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(text.len())
}

/// The length of the escape whose backslash is at `at`, if it is JSON's.
fn escape_len(text: &[u8], at: usize) -> Option<usize> {
    match text.get(at + 1)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(2),
        b'u' => match hex4(text, at + 2)? {
            // A high surrogate: a low one must follow.
            0xD800..=0xDBFF => match (text.get(at + 6..at + 8), hex4(text, at + 8)) {
                (Some(b"\\u"), Some(0xDC00..=0xDFFF)) => Some(12),
                _ => None,
            },
            0xDC00..=0xDFFF => None,
            _ => Some(6),
        },
        _ => None,
    }
}

/// The four hex digits at `at`, as a number.
fn hex4(text: &[u8], at: usize) -> Option<u16> {
    let digits = text.get(at..at + 4)?;
    digits.iter().try_fold(0u16, |n, &d| {
        let digit = (d as char).to_digit(16)?;
        Some(n << 4 | digit as u16)
    })
}

/// What a replacement body must fit: the limits of an event in an upload.
#[derive(Debug, Clone, Copy)]
pub struct EventLimits {
    pub max_bytes: usize,
    /// Nesting of the event object itself (which counts as one level).
    pub max_depth: usize,
}

impl EventLimits {
    pub fn of(limits: &Limits) -> EventLimits {
        EventLimits {
            max_bytes: limits.max_event_bytes,
            // An event sits two levels down in its upload: `{"data": [ {…} ]}`.
            max_depth: limits.max_depth.saturating_sub(2),
        }
    }
}

/// A replacement body: a JSON object within the event's size and depth
/// limits. The depth is checked before parsing, in one linear pass: a guest
/// could otherwise send nesting deep enough to overflow the parser's stack,
/// and with it the node.
pub fn replacement(bytes: Vec<u8>, limits: EventLimits) -> Result<String, String> {
    if bytes.len() > limits.max_bytes {
        return Err(format!(
            "{} bytes, more than the event limit of {}",
            bytes.len(),
            limits.max_bytes
        ));
    }
    let end = match check_depth(&bytes, limits.max_depth) {
        Err(Unreadable::TooDeep(_)) => {
            return Err(format!(
                "JSON nested deeper than the event limit of {} levels",
                limits.max_depth
            ))
        }
        Err(Unreadable::BadEscape(at)) => {
            return Err(format!(
                "text that is not JSON (a string escape at byte {at})"
            ))
        }
        Ok(end) => end,
    };
    let text = String::from_utf8(bytes).map_err(|_| "text that is not UTF-8".to_owned())?;
    if !text.trim_start_matches(is_json_space).starts_with('{') {
        return Err(match sonic_rs::from_str::<sonic_rs::Value>(&text) {
            Ok(_) => "JSON that is not an object".into(),
            Err(_) => "text that is not JSON".into(),
        });
    }
    // Checked as an upload's events are, for syntax only (a number past
    // f64's range, `1e999`, is JSON the node takes from clients, and a
    // filter that tags such an event must not lose it).
    let valid = sonic_rs::from_str::<LazyValue>(&text).is_ok()
        && text
            .get(end..)
            .is_some_and(|rest| rest.chars().all(is_json_space));
    match valid {
        true => Ok(text),
        false => Err("text that is not JSON".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn reject(body: &str) -> (u16, String) {
        let r = decode_and_split(body.as_bytes(), &limits(), 0).unwrap_err();
        (r.status.as_u16(), r.message)
    }

    fn messages(body: &str) -> Vec<Option<String>> {
        decode_and_split(body.as_bytes(), &limits(), 0)
            .unwrap()
            .events
            .iter()
            .map(|e| e.part.as_ref().and_then(|p| p.message.clone()))
            .collect()
    }

    #[test]
    fn splits_a_valid_batch_keeping_raw_text() {
        let body = r#"{"meta":{"category":"PERF_CRASH","device_id":"d-42","app":"shop"},
            "data":[{"id":"ev-1","ts":1763780000000,"ip":"81.2.69.142","props":{"cold":true}},
                    {"id":"ev-2","name":"x"}]}"#;
        let batch = decode_and_split(body.as_bytes(), &limits(), 7).unwrap();
        assert_eq!(batch.meta.category, "PERF_CRASH");
        assert_eq!(batch.meta.device_id.as_deref(), Some("d-42"));
        assert_eq!(batch.meta.app.as_deref(), Some("shop"));
        assert!(batch.meta.raw.starts_with("{\"category\""));
        assert_eq!(batch.events.len(), 2);
        let e = &batch.events[0];
        assert_eq!(e.id.as_deref(), Some("ev-1"));
        assert_eq!(e.ts, Some(1763780000000));
        assert_eq!(e.ip, Some("81.2.69.142".parse().unwrap()));
        assert_eq!(
            &*e.raw,
            r#"{"id":"ev-1","ts":1763780000000,"ip":"81.2.69.142","props":{"cold":true}}"#
        );
        assert!(batch.events.iter().all(|e| e.part.is_none()));
        assert_eq!(batch.received_at, 7);
        let null_device = r#"{"meta":{"category":"c","device_id":null},"data":[{"id":"a"}]}"#;
        let batch = decode_and_split(null_device.as_bytes(), &limits(), 0).unwrap();
        assert_eq!(batch.meta.device_id, None);
    }

    /// Keys are read as JSON reads them, escapes and all, and a later copy
    /// of a key is the one that counts; the rest is skipped where it lies.
    #[test]
    fn an_events_fields_are_found_whatever_surrounds_them() {
        let body = r#"{"meta":{"category":"c"},"data":[
            {"s":"}\"{","n":{"id":"inner","l":[1,"]"]},"i\u0064":"a","ts":1,"ip":"10.0.0.1","\u0069p":"10.0.0.2"},
            {"id":"b","id":"c","ts":null,"x":[{"ts":5}]}]}"#;
        let batch = decode_and_split(body.as_bytes(), &limits(), 0).unwrap();
        let found: Vec<_> = batch
            .events
            .iter()
            .map(|e| (e.id.as_deref(), e.ts, e.ip, e.part.is_none()))
            .collect();
        assert_eq!(
            found,
            [
                (Some("a"), Some(1), Some("10.0.0.2".parse().unwrap()), true),
                (Some("c"), None, None, true),
            ]
        );
    }

    #[test]
    fn whole_request_problems_are_rejected_with_their_place() {
        let cases = [
            ("", (400, "body: empty")),
            ("[1]", (400, "body: must be a JSON object with `meta` and `data`")),
            (r#"{"data":[]}"#, (400, "meta: missing")),
            (r#"{"meta":1,"data":[]}"#, (400, "meta: must be an object")),
            (r#"{"meta":{},"data":[]}"#, (400, "meta.category: missing")),
            (r#"{"meta":{"category":3},"data":[]}"#, (400, "meta.category: must be a string")),
            (r#"{"meta":{"category":"a/b"},"data":[]}"#, (400, "meta.category: 'a/b' is not a valid category (1 to 64 characters of A-Z a-z 0-9 _ . -)")),
            (r#"{"meta":{"category":"c","device_id":5},"data":[]}"#, (400, "meta.device_id: must be a string")),
            (r#"{"meta":{"category":"c"}}"#, (400, "data: missing")),
            (r#"{"meta":{"category":"c"},"data":{}}"#, (400, "data: must be an array of event objects")),
            (r#"{"meta":{"category":"c"},"data":[]}"#, (400, "data: empty, at least one event is required")),
            (r#"{"meta":{"category":"c"},"data":[{}]} ]x"#, (400, "body: unexpected text after the JSON object at byte 38")),
            (r#"{"meta":{"category":"c"},"data":[{}],"data":[]}"#, (400, "body: `data` is given twice")),
            (r#"{"meta":{"category":"a","category":"b"},"data":[{}]}"#, (400, "meta.category: given twice")),
            (&format!(r#"{{"meta":{{"category":"c","pad":"{}"}},"data":[{{}}]}}"#, "x".repeat(8192)), (413, "meta: 8217 bytes, more than the limit of 8192")),
        ];
        for (body, (status, message)) in cases {
            assert_eq!(reject(body), (status, message.to_owned()), "{body:.80}");
        }
    }

    #[test]
    fn malformed_json_is_rejected_anywhere_in_the_body() {
        for body in [
            r#"{"meta":{"category":"c"},"data":[{"id":"a"}"#,
            r#"{"meta":{"category":"c"},"data":[{"id":"a","x":[1,}]}"#,
            r#"{"meta":{"category":"c"},"data":[{"id":"a"}],}"#,
            r#"{"meta":{"category":"c"} "data":[]}"#,
        ] {
            let (status, message) = reject(body);
            assert_eq!(status, 400, "{body}");
            assert!(
                message.starts_with("body: invalid JSON: "),
                "{body}: {message}"
            );
        }
    }

    #[test]
    fn invalid_utf8_names_the_byte() {
        let mut body = br#"{"meta":{"category":"c"},"data":[{"id":""#.to_vec();
        body.extend_from_slice(&[0xff, b'"', b'}', b']', b'}']);
        let r = decode_and_split(&body, &limits(), 0).unwrap_err();
        assert_eq!(r.message, "body: invalid UTF-8 at byte 40");
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let body = format!(
            r#"{{"meta":{{"category":"c"}},"data":[{{"id":"a","x":{}{}}}]}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let (status, message) = reject(&body);
        assert_eq!(status, 400);
        assert!(
            message.starts_with("body: JSON nested deeper than 64 levels at byte "),
            "{message}"
        );
        // Brackets inside strings do not count.
        let ok = format!(
            r#"{{"meta":{{"category":"c"}},"data":[{{"id":"a","x":"{}\"\\"}}]}}"#,
            "[".repeat(1000)
        );
        assert!(decode_and_split(ok.as_bytes(), &limits(), 0).is_ok());
    }

    #[test]
    fn a_string_escape_that_is_not_json_is_refused() {
        let body = |text: &str| {
            format!(r#"{{"meta":{{"category":"c"}},"data":[{{"id":"a","x":"{text}"}}]}}"#)
        };
        // Byte 48 is the backslash.
        for bad in [
            r"\uZZZZ",
            r"\u12",
            r"\x41",
            r"\ud800",
            r"\ud800x",
            r"\udc00",
            r"\ud800\u0041",
        ] {
            let (status, message) = reject(&body(bad));
            assert_eq!(status, 400, "{bad}");
            assert_eq!(message, "body: invalid string escape at byte 48", "{bad}");
        }
        for good in [r#"\"\\\/\b\f\n\r\t"#, r"\u00e9\u20AC", r"\ud83d\ude00"] {
            let text = body(good);
            let batch = decode_and_split(text.as_bytes(), &limits(), 0).unwrap();
            assert!(batch.events[0].part.is_none(), "{good}");
        }
        // The parser's lazy skip would end this string at the quote after
        // `\uabc\` and then recurse through the nesting that follows:
        // 300,000 levels overflow a worker's 2 MiB stack. It is refused first.
        let hostile = format!(
            r#"{{"meta":{{"category":"c"}},"data":[{{"id":"a","k":"\uabc\","n":{}{}}}]}}"#,
            "[".repeat(300_000),
            "]".repeat(300_000)
        );
        let refused = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || reject(&hostile))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(
            refused,
            (400, "body: invalid string escape at byte 48".to_owned())
        );
    }

    #[test]
    fn each_bad_event_gets_its_own_message_and_the_rest_go_on() {
        let body = r#"{"meta":{"category":"c"},"data":[
            {"id":"a"}, 5, {"x":1}, {"id":7}, {"id":""}, {"id":"a"},
            {"id":"t","ts":"yesterday"}, {"id":"i","ip":"not-an-ip"}, {"id":"b","ts":null,"ip":"::1"}]}"#;
        let got = messages(body);
        let expected: Vec<Option<String>> = vec![
            None,
            Some("data[1]: must be an object".into()),
            Some("data[2].id: missing".into()),
            Some("data[3].id: must be a string".into()),
            Some("data[4].id: empty".into()),
            Some("data[5].id: 'a' is a duplicate of data[0].id".into()),
            Some(
                "data[6].ts: must be milliseconds since the epoch (a non-negative integer)".into(),
            ),
            Some("data[7].ip: \"not-an-ip\" is not an IP address".into()),
            None,
        ];
        assert_eq!(got, expected);
    }

    #[test]
    fn limits_apply_per_batch_and_per_event() {
        let small = Limits {
            max_events_per_batch: 2,
            max_event_bytes: 40,
            ..Limits::default()
        };
        let three = r#"{"meta":{"category":"c"},"data":[{"id":"a"},{"id":"b"},{"id":"c"}]}"#;
        let r = decode_and_split(three.as_bytes(), &small, 0).unwrap_err();
        assert_eq!(
            (r.status.as_u16(), r.message.as_str()),
            (413, "data: more than 2 events (the batch limit)")
        );

        let big = format!(
            r#"{{"meta":{{"category":"c"}},"data":[{{"id":"big","pad":"{}"}},{{"id":"ok"}}]}}"#,
            "x".repeat(100)
        );
        let batch = decode_and_split(big.as_bytes(), &small, 0).unwrap();
        let part = batch.events[0].part.as_ref().unwrap();
        assert_eq!(part.code, PartCode::TooLarge);
        assert_eq!(part.id.as_deref(), Some("big"));
        assert_eq!(
            part.message.as_deref(),
            Some("data[0]: 121 bytes, the event limit is 40")
        );
        assert!(batch.events[1].part.is_none());
    }

    #[test]
    fn long_and_escaped_ids() {
        let long = format!(
            r#"{{"meta":{{"category":"c"}},"data":[{{"id":"{}"}}]}}"#,
            "x".repeat(129)
        );
        assert_eq!(
            messages(&long),
            vec![Some("data[0].id: longer than 128 bytes".into())]
        );
        let escaped = r#"{"meta":{"category":"c"},"data":[{"id":"a\"b"},{"id":"a\u0022b"}]}"#;
        let batch = decode_and_split(escaped.as_bytes(), &limits(), 0).unwrap();
        assert_eq!(batch.events[0].id.as_deref(), Some("a\"b"));
        assert!(batch.events[0].part.is_none());
        // The same id spelled with another escape is still a duplicate.
        assert_eq!(
            batch.events[1]
                .part
                .as_ref()
                .and_then(|p| p.message.as_deref()),
            Some("data[1].id: 'a\\\"b' is a duplicate of data[0].id")
        );
    }

    /// Around and between values only JSON's white space (space, tab, line
    /// feed, carriage return): a form feed or a Unicode space is no JSON,
    /// though Rust's `trim` and `is_ascii_whitespace` take them. (A trailing
    /// form feed was accepted, and the record was no JSON for serde_json:
    /// found by fuzz/fuzz_targets/decode_split.rs.)
    #[test]
    fn only_json_white_space_stands_around_values() {
        let limits = Limits::default();
        let ok = r#"{"meta": {"category": "c"}, "data": [1, {"id": "ok"}]}"#;
        assert!(decode_and_split(format!(" \t\r\n{ok} \t\r\n").as_bytes(), &limits, 0).is_ok());
        for odd in ['\u{c}', '\u{b}', '\u{a0}', '\u{2028}', '\u{85}'] {
            for body in [
                format!("{ok}{odd}"),
                format!("{odd}{ok}"),
                ok.replace("\"meta\": ", &format!("\"meta\":{odd}")),
                ok.replace("[1, ", &format!("[1,{odd}")),
            ] {
                let refused = decode_and_split(body.as_bytes(), &limits, 0)
                    .err()
                    .unwrap_or_else(|| panic!("{body:?} accepted"));
                assert_eq!(
                    refused.error,
                    ErrorCode::MalformedJson,
                    "{body:?}: {}",
                    refused.message
                );
            }
            let replaced = format!("{{\"a\":1}}{odd}");
            assert_eq!(
                replacement(replaced.clone().into_bytes(), EventLimits::of(&limits)),
                Err("text that is not JSON".to_owned()),
                "{replaced:?}"
            );
        }
    }

    #[test]
    fn a_replacement_must_be_a_json_object_within_the_limits() {
        let limits = |max_bytes| EventLimits {
            max_bytes,
            max_depth: 3,
        };
        assert_eq!(
            replacement(br#"{"a":1}"#.to_vec(), limits(100)),
            Ok(r#"{"a":1}"#.to_owned())
        );
        assert_eq!(
            replacement(b"[1]".to_vec(), limits(100)),
            Err("JSON that is not an object".to_owned())
        );
        assert_eq!(
            replacement(b"nope".to_vec(), limits(100)),
            Err("text that is not JSON".to_owned())
        );
        // Syntax only, as the node reads an upload: a number past f64's
        // range is JSON a client may send, and a filter may keep.
        assert_eq!(
            replacement(br#"{"n":1e999,"t":true}"#.to_vec(), limits(100)),
            Ok(r#"{"n":1e999,"t":true}"#.to_owned())
        );
        for broken in [
            &br#"{"a":1"#[..],
            br#"{"a":1} x"#,
            br#"{"a":tru}"#,
            br#"{"a" 1}"#,
        ] {
            assert_eq!(
                replacement(broken.to_vec(), limits(100)),
                Err("text that is not JSON".to_owned()),
                "{}",
                String::from_utf8_lossy(broken)
            );
        }
        assert_eq!(
            replacement(vec![0xff], limits(100)),
            Err("text that is not UTF-8".to_owned())
        );
        assert_eq!(
            replacement(br#"{"a":"long"}"#.to_vec(), limits(5)),
            Err("12 bytes, more than the event limit of 5".to_owned())
        );
        assert_eq!(
            replacement(br#"{"a":[{"b":1}]}"#.to_vec(), limits(100)),
            Ok(r#"{"a":[{"b":1}]}"#.to_owned())
        );
        assert_eq!(
            replacement(br#"{"a":[{"b":[]}]}"#.to_vec(), limits(100)),
            Err("JSON nested deeper than the event limit of 3 levels".to_owned())
        );
        // Nesting that would overflow a recursive parser's stack is refused
        // before any parsing, on a thread with tokio's worker stack.
        let n = 32_000;
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(n), "]".repeat(n));
        let refused = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || replacement(deep.into_bytes(), EventLimits::of(&Limits::default())))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(
            refused,
            Err("JSON nested deeper than the event limit of 62 levels".to_owned())
        );
    }
}
