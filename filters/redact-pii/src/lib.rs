//! `redact-pii`: masks e-mail addresses, phone numbers and IPv4 addresses
//! inside string values.
//!
//! Config: `{"fields": ["email", "props.phone"], "mask": "***"}`; without
//! `fields`, every string value of the event is scanned. A named field that
//! holds an object or list is scanned all the way down.

use std::borrow::Cow;
use std::net::Ipv4Addr;

use serde_json::Value;
use weir_guest_sdk::{config_json, edit_field, export_filter, Event, Filter, Verdict};

struct RedactPii {
    fields: Option<Vec<String>>,
    mask: String,
}

impl Filter for RedactPii {
    fn init(config: &str) -> Result<Self, String> {
        let config = config_json(config)?;
        let fields = match config.get("fields") {
            None => None,
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
        let mask = config
            .get("mask")
            .and_then(Value::as_str)
            .unwrap_or("***")
            .to_owned();
        Ok(RedactPii { fields, mask })
    }

    fn filter(&self, events: &[Event]) -> Vec<Verdict> {
        events
            .iter()
            .map(|e| {
                // Named fields: only they are read and, where needed, rewritten.
                if let Some(fields) = &self.fields {
                    let Some((body, masked)) = redact_fields(e.body(), fields, &self.mask) else {
                        return Verdict::Keep;
                    };
                    weir_guest_sdk::count("masked", masked as u64);
                    return Verdict::Replace(body);
                }
                let Ok(mut body) = e.json() else {
                    return Verdict::Keep;
                };
                let masked = redact_value(&mut body, &self.mask);
                if masked == 0 {
                    return Verdict::Keep;
                }
                weir_guest_sdk::count("masked", masked as u64);
                Verdict::replace_json(&body)
            })
            .collect()
    }
}

/// `body` with PII masked in `fields`, and the number of masks; `None` when
/// there was nothing to mask (or the body is not a JSON object). Each field
/// is read where it is and rewritten in place (every copy of a repeated
/// key); the rest of the body is neither parsed nor rewritten.
fn redact_fields(body: &[u8], fields: &[String], mask: &str) -> Option<(Vec<u8>, usize)> {
    let mut body = Cow::Borrowed(body);
    let mut masked = 0;
    for field in fields {
        let edit = |value: &mut Value| {
            let n = redact_value(value, mask);
            masked += n;
            n > 0
        };
        if let Ok(Some(patched)) = edit_field(&body, field, edit) {
            body = Cow::Owned(patched);
        }
    }
    (masked > 0).then(|| (body.into_owned(), masked))
}

/// Masks PII in every string under `value`; the number of masks applied.
fn redact_value(value: &mut Value, mask: &str) -> usize {
    match value {
        Value::String(s) => {
            let (text, n) = redact(s, mask);
            if n > 0 {
                let text = text.into_owned();
                *s = text;
            }
            n
        }
        Value::Array(items) => items.iter_mut().map(|v| redact_value(v, mask)).sum(),
        Value::Object(map) => map.values_mut().map(|v| redact_value(v, mask)).sum(),
        _ => 0,
    }
}

/// Masks e-mail addresses and IPv4 addresses (whole words) and phone
/// numbers (runs of digits, spaces, dashes, dots, parentheses and a leading
/// `+` with at least 7 digits) in `text`.
pub fn redact<'t>(text: &'t str, mask: &str) -> (Cow<'t, str>, usize) {
    // Each of them has an `@` or digits: most strings have neither.
    if !text.bytes().any(|b| b == b'@' || b.is_ascii_digit()) {
        return (Cow::Borrowed(text), 0);
    }
    let mut out = String::with_capacity(text.len());
    let mut count = 0;
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let trimmed = word.trim_matches(|c: char| ",;:!?()<>\"'".contains(c));
        if is_email(trimmed) || trimmed.trim_end_matches('.').parse::<Ipv4Addr>().is_ok() {
            out.push_str(&word.replacen(trimmed, mask, 1));
            count += 1;
        } else {
            out.push_str(word);
        }
    }
    let (out, phones) = mask_phones(&out, mask);
    (Cow::Owned(out), count + phones)
}

fn is_email(word: &str) -> bool {
    match word.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        }
        None => false,
    }
}

fn mask_phones(text: &str, mask: &str) -> (String, usize) {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut count = 0;
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i].is_ascii_digit()
            || ("+(".contains(chars[i]) && chars.get(i + 1).is_some_and(char::is_ascii_digit));
        if starts && (i == 0 || !chars[i - 1].is_alphanumeric()) {
            let mut j = i + 1;
            while j < chars.len() && (chars[j].is_ascii_digit() || " -.()".contains(chars[j])) {
                j += 1;
            }
            // Do not swallow trailing separators.
            while j > i && !chars[j - 1].is_ascii_digit() {
                j -= 1;
            }
            let digits = chars[i..j].iter().filter(|c| c.is_ascii_digit()).count();
            let dots = chars[i..j].iter().filter(|c| **c == '.').count();
            // A dotted run of 4 numbers is an IPv4 address, handled above.
            if digits >= 7 && dots != 3 && (j == chars.len() || !chars[j].is_alphanumeric()) {
                out.push_str(mask);
                count += 1;
                i = j;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    (out, count)
}

export_filter!(RedactPii);

#[cfg(test)]
mod tests {
    use super::{redact, redact_fields};

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
    }

    #[test]
    fn masks_emails_phones_and_ipv4() {
        let cases = [
            (
                "write to ann@example.com, please",
                "write to ***, please",
                1,
            ),
            ("call +44 20 7946 0958 now", "call *** now", 1),
            ("call (555) 123-4567.", "call ***.", 1),
            ("from 81.2.69.142 today", "from *** today", 1),
            (
                "version 1.2.3 and 42 items",
                "version 1.2.3 and 42 items",
                0,
            ),
            ("order 12345", "order 12345", 0),
            ("a@b", "a@b", 0),
            ("no digits, no at sign", "no digits, no at sign", 0),
        ];
        for (input, expected, n) in cases {
            let (output, masked) = redact(input, "***");
            assert_eq!((&*output, masked), (expected, n), "{input}");
        }
    }
}
