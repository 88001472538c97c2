//! `redact-pii`: masks e-mail addresses, phone numbers and IPv4 addresses
//! inside string values.
//!
//! Config: `{"fields": ["email", "props.phone"], "mask": "***"}`; without
//! `fields`, every string value of the event is scanned. A named field that
//! holds an object or list is scanned all the way down.
//!
//! Only the masked strings are rewritten; the rest of the event stays as the
//! client wrote it. It fails safe: every copy of a repeated key is masked, a
//! string whose escapes cannot be read is masked whole, and a body the
//! field reader refuses has all its strings scanned.

use std::borrow::Cow;
use std::net::Ipv4Addr;

use serde_json::Value;
use steps::step;
use weir_guest_sdk::{config_json, export_filter, trusted, Event, Filter, Verdict};

pub mod steps;

struct RedactPii {
    fields: Option<Vec<String>>,
    mask: String,
}

impl Filter for RedactPii {
    fn init(config: &str) -> Result<Self, String> {
        let config = config_json(config, &["fields", "mask"])?;
        let fields = match config.get("fields") {
            None => None,
            // An empty list would mask nothing, unlike no list (every string).
            Some(Value::Array(list)) if list.is_empty() => {
                return Err("config: fields is empty (leave it out to scan every string)".into())
            }
            Some(Value::Array(list)) => Some(
                list.iter()
                    .map(|f| {
                        f.as_str()
                            .map(str::to_owned)
                            .ok_or("config: every field must be a string")
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => return Err("config: fields must be a list of field names".into()),
        };
        let mask = match config.get("mask") {
            None => "***".to_owned(),
            Some(Value::String(mask)) => mask.clone(),
            Some(_) => return Err("config: mask must be a string".into()),
        };
        Ok(RedactPii { fields, mask })
    }

    fn filter(&self, events: &[Event]) -> Vec<Verdict> {
        events
            .iter()
            .map(|e| {
                let Some((body, masked)) =
                    redact_event(e.body(), self.fields.as_deref(), &self.mask)
                else {
                    return Verdict::Keep;
                };
                weir_guest_sdk::count("masked", masked as u64);
                Verdict::Replace(body)
            })
            .collect()
    }
}

/// An event's body with PII masked, in the named `fields` or, without
/// them, in every string value; and the number of masks. `None` when there
/// was nothing to mask.
pub fn redact_event(
    body: &[u8],
    fields: Option<&[String]>,
    mask: &str,
) -> Option<(Vec<u8>, usize)> {
    match fields {
        // Named fields: only they are read and, where needed, rewritten.
        Some(fields) => redact_fields(body, fields, mask),
        None => redact_strings(body, mask),
    }
}

/// `body` with PII masked in `fields`, and the number of masks; `None` when
/// there was nothing to mask. Each field is read where it is and rewritten
/// in place (every copy of a repeated key); the rest of the body is neither
/// parsed nor rewritten. The body is walked as the node checked it
/// (`weir_guest_sdk::trusted`); one the walk finds is not JSON (its
/// structure, a bad escape) has every string value scanned instead: PII
/// never passes because its event was odd.
fn redact_fields(body: &[u8], fields: &[String], mask: &str) -> Option<(Vec<u8>, usize)> {
    let mut patched = Cow::Borrowed(body);
    let mut masked = 0;
    for field in fields {
        // The field's own text is walked as a whole body is: an object or a
        // list keeps its key order, numbers and every copy of a repeated
        // key, each of them masked.
        let edit = |text: &str| {
            Ok(redact_strings(text.as_bytes(), mask).map(|(text, n)| {
                masked += n;
                text
            }))
        };
        match trusted::edit_field_text(&patched, field, edit) {
            Ok(Some(edited)) => patched = Cow::Owned(edited),
            Ok(None) => {}
            Err(_) => return redact_strings(body, mask),
        }
    }
    (masked > 0).then(|| (patched.into_owned(), masked))
}

/// `body` with PII masked in every string value (keys are left alone), and
/// the number of masks; `None` when there was nothing to mask. The JSON
/// text is walked, not parsed into values, so every copy of a repeated key
/// is seen and the rest of the text stays as the client wrote it. A string
/// whose escapes cannot be read (a lone surrogate, `\uZZZZ`) is masked
/// whole: it could hide anything.
fn redact_strings(body: &[u8], mask: &str) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut copied = 0;
    let mut masked = 0;
    let mut i = 0;
    while let Some(open) = steps::find(&body[i..], |b| b == b'"') {
        let start = i + open;
        // The closing quote: skip escaped characters.
        let mut end = start + 1;
        loop {
            let rest = body.get(end..).unwrap_or_default();
            match steps::find(rest, |b| b == b'"' || b == b'\\') {
                Some(n) if body[end + n] == b'\\' => end += n + 2,
                Some(n) => {
                    end += n;
                    break;
                }
                // Unterminated (the node accepts no such body): nothing more to scan.
                None => {
                    end = body.len();
                    break;
                }
            }
        }
        if end >= body.len() {
            break;
        }
        let after =
            steps::find(&body[end + 1..], |b| !b.is_ascii_whitespace()).map(|n| &body[end + 1 + n]);
        if after != Some(&b':') {
            let raw = &body[start..=end];
            step(raw.len());
            let replacement = match serde_json::from_slice::<String>(raw) {
                Ok(text) => match redact(&text, mask) {
                    (redacted, n) if n > 0 => Some((json_string(&redacted), n)),
                    _ => None,
                },
                Err(_) => Some((json_string(mask), 1)),
            };
            if let Some((text, n)) = replacement {
                out.extend_from_slice(&body[copied..start]);
                out.extend_from_slice(text.as_bytes());
                copied = end + 1;
                masked += n;
            }
        }
        i = end + 1;
    }
    if masked == 0 {
        return None;
    }
    out.extend_from_slice(&body[copied..]);
    Some((out, masked))
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// Masks e-mail addresses, IPv4 addresses (with or without a port) and
/// phone numbers (runs of digits, spaces, dashes, dots, parentheses and a
/// leading `+` with 7 to 15 digits, not glued to a word, not an ISO date or
/// a dotted version) in `text`.
pub fn redact<'t>(text: &'t str, mask: &str) -> (Cow<'t, str>, usize) {
    // Each of them has an `@` or digits: most strings have neither.
    step(text.len());
    if !text.bytes().any(|b| b == b'@' || b.is_ascii_digit()) {
        return (Cow::Borrowed(text), 0);
    }
    let (text_1, emails) = mask_spans(text, mask, email_at);
    let (text_2, addresses) = mask_spans(&text_1, mask, ipv4_at);
    let (text_3, phones) = mask_phones(&text_2, mask);
    match emails + addresses + phones {
        0 => (Cow::Borrowed(text), 0),
        n => (Cow::Owned(text_3.into_owned()), n),
    }
}

/// Finds the next span (start, end) to mask at or after a byte offset.
type FindSpan = fn(&[u8], usize) -> Option<(usize, usize)>;

/// `text` with every span `find` reports masked, and how many (`text`
/// itself, not a copy, when there is none: most strings pass every kind).
fn mask_spans<'t>(text: &'t str, mask: &str, find: FindSpan) -> (Cow<'t, str>, usize) {
    let bytes = text.as_bytes();
    let Some(mut span) = find(bytes, 0) else {
        return (Cow::Borrowed(text), 0);
    };
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut count) = (0, 0);
    loop {
        let (start, end) = span;
        step(end - copied);
        out.push_str(&text[copied..start]);
        out.push_str(mask);
        copied = end;
        count += 1;
        match find(bytes, copied) {
            Some(next) => span = next,
            None => break,
        }
    }
    out.push_str(&text[copied..]);
    (Cow::Owned(out), count)
}

/// The next e-mail address at or after `from`: around an `@`, a local part
/// of letters, digits and `. _ % + -` and a dotted domain of letters,
/// digits and `. -`, any non-ASCII letter included (`josé@bücher.de`); a
/// sentence's full stop after it is not part of it. (Every walk stops at an
/// ASCII byte or at `from`, so the span is on character boundaries.)
fn email_at(text: &[u8], from: usize) -> Option<(usize, usize)> {
    let local = |b: u8| b >= 0x80 || b.is_ascii_alphanumeric() || b"._%+-".contains(&b);
    let domain = |b: u8| b >= 0x80 || b.is_ascii_alphanumeric() || b".-".contains(&b);
    let mut at = from;
    loop {
        at += steps::find(&text[at..], |b| b == b'@')?;
        let mut start = at;
        while start > from && local(text[start - 1]) {
            step(1);
            start -= 1;
        }
        while start < at && text[start] == b'.' {
            start += 1;
        }
        let mut end = at + 1;
        while end < text.len() && domain(text[end]) {
            step(1);
            end += 1;
        }
        while end > at + 1 && b".-".contains(&text[end - 1]) {
            end -= 1;
        }
        let host = &text[at + 1..end];
        if start < at && host.contains(&b'.') && host[0] != b'.' {
            return Some((start, end));
        }
        at += 1;
    }
}

/// The next IPv4 address at or after `from`: four dotted numbers not glued
/// to a word or another number (a port after a colon may follow).
fn ipv4_at(text: &[u8], from: usize) -> Option<(usize, usize)> {
    let part = |b: u8| b.is_ascii_digit() || b == b'.';
    let mut start = from;
    loop {
        start += steps::find(&text[start..], |b| b.is_ascii_digit())?;
        let mut end = start;
        while end < text.len() && part(text[end]) {
            step(1);
            end += 1;
        }
        let run = end;
        while end > start && text[end - 1] == b'.' {
            end -= 1;
        }
        let glued = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'.');
        let alone = !glued(start.checked_sub(1).and_then(|i| text.get(i)))
            && !text.get(end).is_some_and(u8::is_ascii_alphanumeric);
        let address = std::str::from_utf8(&text[start..end])
            .ok()
            .and_then(|s| s.parse::<Ipv4Addr>().ok());
        if alone && address.is_some() {
            return Some((start, end));
        }
        start = run;
    }
}

fn mask_phones<'t>(text: &'t str, mask: &str) -> (Cow<'t, str>, usize) {
    // Every phone number starts at, and every date has, an ASCII digit.
    step(text.len());
    if !text.bytes().any(|b| b.is_ascii_digit()) {
        return (Cow::Borrowed(text), 0);
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut count = 0;
    let mut i = 0;
    // Glued to a word: `order-20240115`, `id_4155550123`, `12345678-ab12`.
    let glued = |k: usize| {
        chars.get(k).is_some_and(|c| c.is_alphanumeric())
            || (chars.get(k).is_some_and(|c| "-_".contains(*c))
                && chars.get(k + 1).is_some_and(|c| c.is_alphanumeric()))
    };
    step(text.len());
    while i < chars.len() {
        step(1);
        let alone = i == 0 || !(chars[i - 1].is_alphanumeric() || "-_".contains(chars[i - 1]));
        // An ISO date (2024-01-15) has eight digits but is no phone number.
        if alone && is_iso_date(&chars[i..]) {
            out.extend(&chars[i..i + 10]);
            i += 10;
            continue;
        }
        let starts = chars[i].is_ascii_digit()
            || ("+(".contains(chars[i]) && chars.get(i + 1).is_some_and(char::is_ascii_digit));
        if starts && alone {
            let mut j = i + 1;
            while j < chars.len() && (chars[j].is_ascii_digit() || " -.()".contains(chars[j])) {
                step(1);
                j += 1;
            }
            // Do not swallow trailing separators.
            while j > i && !chars[j - 1].is_ascii_digit() {
                j -= 1;
            }
            let run = &chars[i..j];
            let digits = run.iter().filter(|c| c.is_ascii_digit()).count();
            // E.164 numbers have at most 15 digits.
            if (7..=15).contains(&digits) && !glued(j) && !is_version(run) {
                out.push_str(mask);
                count += 1;
            } else {
                // Every later start inside this run has fewer digits and the
                // same end: none of them is a phone number either.
                out.extend(run);
            }
            i = j.max(i + 1);
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    (Cow::Owned(out), count)
}

/// Whether `chars` starts with a date `yyyy-mm-dd` that is not the start
/// of a longer number (`0466-12-3456` is a phone number).
fn is_iso_date(chars: &[char]) -> bool {
    let number = |range: std::ops::Range<usize>| {
        chars[range]
            .iter()
            .try_fold(0u32, |n, c| c.to_digit(10).map(|d| n * 10 + d))
    };
    chars.len() >= 10
        && chars[4] == '-'
        && chars[7] == '-'
        && number(0..4).is_some()
        && number(5..7).is_some_and(|m| (1..=12).contains(&m))
        && number(8..10).is_some_and(|d| (1..=31).contains(&d))
        && !chars.get(10).is_some_and(char::is_ascii_digit)
}

/// Whether a run of digits and dots alone is a version (`10.0.19045.3803`)
/// rather than a dotted phone number (`1.415.555.0123`): a phone's groups
/// after the first have two to four digits.
fn is_version(run: &[char]) -> bool {
    if !run.iter().all(|c| c.is_ascii_digit() || *c == '.') {
        return false;
    }
    let groups: Vec<usize> = run.split(|c| *c == '.').map(<[char]>::len).collect();
    groups.len() > 1 && groups[1..].iter().any(|n| !(2..=4).contains(n))
}

export_filter!(RedactPii);

#[cfg(test)]
mod tests {
    use super::{redact, redact_fields, redact_strings};

    /// Named fields are masked in place, every copy of a repeated key
    /// included (a consumer may read either copy), nested fields too; the
    /// rest of the text is as the client sent it.
    #[test]
    fn named_fields_are_masked_in_every_copy() {
        let fields = ["email".to_owned(), "props.note".to_owned()];
        let body = br#"{"email": "ann@example.com", "n": 1.50, "email": "none",
            "props": {"note": "call +44 20 7946 0958", "keep": "bob@example.com"}}"#;
        let (masked, n) = redact_fields(body, &fields, "***").unwrap();
        assert_eq!(
            String::from_utf8(masked).unwrap(),
            r#"{"email": "***", "n": 1.50, "email": "none",
            "props": {"note": "call ***", "keep": "bob@example.com"}}"#
        );
        assert_eq!(n, 2);
        assert_eq!(redact_fields(br#"{"email": "none"}"#, &fields, "***"), None);
        // A named field that is an object or a list: walked as written, so
        // every copy of a key inside it is masked, and its key order and
        // numbers stay as they were.
        let props = ["props".to_owned(), "list".to_owned()];
        let body = br#"{"id":"e1","props":{"email":"ann@example.com","n":1.50,"big":12345678901234567890123,"email":"bob@example.com"},"list":["x","81.2.69.142"]}"#;
        let (masked, n) = redact_fields(body, &props, "***").unwrap();
        assert_eq!(
            String::from_utf8(masked).unwrap(),
            r#"{"id":"e1","props":{"email":"***","n":1.50,"big":12345678901234567890123,"email":"***"},"list":["x","***"]}"#
        );
        assert_eq!(n, 3);
    }

    #[test]
    fn masks_emails_phones_and_ipv4() {
        let cases = [
            (
                "write to ann@example.com, please",
                "write to ***, please",
                1,
            ),
            ("mail ann@example.com.", "mail ***.", 1),
            ("a@x.com,b@y.co\nc.d@z.org", "***,***\n***", 3),
            ("<ann.lee+tag@mail.example.com>", "<***>", 1),
            ("call +44 20 7946 0958 now", "call *** now", 1),
            ("call (555) 123-4567.", "call ***.", 1),
            ("tel:+14155550123", "tel:***", 1),
            ("1.415.555.0123", "***", 1),
            ("from 81.2.69.142 today", "from *** today", 1),
            ("81.2.69.142:443", "***:443", 1),
            ("ip=81.2.69.142\n", "ip=***\n", 1),
            (
                "version 1.2.3 and 42 items",
                "version 1.2.3 and 42 items",
                0,
            ),
            ("order 12345", "order 12345", 0),
            ("order-20240115", "order-20240115", 0),
            ("12345678-ab12-cd34", "12345678-ab12-cd34", 0),
            ("call 0466-12-3456", "call ***", 1),
            ("os 10.0.19045.3803", "os 10.0.19045.3803", 0),
            ("josé@example.com, ann@bücher.de", "***, ***", 2),
            ("müller@x.de", "***", 1),
            ("2024-01-15 10:30:00", "2024-01-15 10:30:00", 0),
            ("999.1.1.1", "999.1.1.1", 0),
            ("a@b", "a@b", 0),
            ("@home and x@.com", "@home and x@.com", 0),
            ("no digits, no at sign", "no digits, no at sign", 0),
        ];
        for (input, expected, n) in cases {
            let (output, masked) = redact(input, "***");
            assert_eq!((&*output, masked), (expected, n), "{input}");
        }
    }

    /// A long run of short numbers is no phone number, however it ends. (It
    /// is also scanned once, not once per digit: quadratic, this 64 KB
    /// string took minutes, past any filter's CPU deadline.)
    #[test]
    fn a_long_run_of_short_numbers_is_no_phone_number() {
        for end in ["1x", "x", ""] {
            let text = "1 ".repeat(32 * 1024) + end;
            let (output, masked) = redact(&text, "***");
            assert_eq!((&*output, masked), (text.as_str(), 0), "ending {end:?}");
        }
    }

    /// Without named fields every string value is scanned in the text
    /// itself: every copy of a repeated key, numbers spelled as the client
    /// did, keys untouched, and a string whose escapes cannot be read is
    /// masked whole.
    #[test]
    fn every_string_value_is_masked_in_the_text() {
        let body = br#"{"id":"e1","email":"ann@example.com","email":"none","n":1e999,
            "list":["call 555-123-4567",{"ann@example.com":"ok"}],"odd":"\uZZZZ ann@x.io","esc":"\u0061@example.com"}"#;
        let (masked, n) = redact_strings(body, "***").unwrap();
        assert_eq!(
            String::from_utf8(masked).unwrap(),
            r#"{"id":"e1","email":"***","email":"none","n":1e999,
            "list":["call ***",{"ann@example.com":"ok"}],"odd":"***","esc":"***"}"#
        );
        assert_eq!(n, 4);
        assert_eq!(redact_strings(br#"{"id":"e1","a":"b"}"#, "***"), None);
    }

    /// A named field in a body the field reader refuses falls back to
    /// scanning every string, rather than letting the event pass.
    #[test]
    fn an_unreadable_body_is_scanned_whole() {
        let fields = ["email".to_owned()];
        let body = br#"{"email":"ann@example.com","bad":"\uZZZZ"}"#;
        let (masked, n) = redact_fields(body, &fields, "***").unwrap();
        assert_eq!(
            String::from_utf8(masked).unwrap(),
            r#"{"email":"***","bad":"***"}"#
        );
        assert_eq!(n, 2);
    }
}
