//! The entries of an event object the parser has already checked, walked
//! where they lie in the body.
//!
//! `split` reads three fields of every event (`id`, `ts`, `ip`). sonic-rs's
//! object iterator, even unchecked, parses every key and makes a lazy value
//! of every entry (about 3,900 instructions for a 400-byte event). Here a
//! string is skipped from quote or backslash to the next (memchr, as
//! `check_depth` skips them), a nested value by counting its own kind of
//! bracket outside strings, and only the three values are read, from their
//! text. Measured with `benches/instructions.sh`: 1,679,315 → 1,642,853
//! instructions per 50-event request (−2.2%).
//!
//! The text must be JSON (decode's checked parse read it): that is what
//! makes skipping without checking right. Text that is not JSON is never
//! a panic or an endless loop, only an early end (`None`). The fuzz target
//! `decode_split` holds the fields read to serde_json's.

/// The entries of the object `text` (starting with `{`): each key's text
/// between its quotes (escapes as written) and its value's text. `None` in
/// place of an entry where the text is not as JSON would have it.
pub(super) fn entries(text: &str) -> impl Iterator<Item = Option<(&str, &str)>> {
    let bytes = text.as_bytes();
    let mut at = match bytes.first() {
        Some(b'{') => Some(1),
        _ => None,
    };
    let mut first = true;
    std::iter::from_fn(move || {
        let start = at?;
        let next = entry(bytes, start, first);
        first = false;
        match next {
            Entry::Found { key, value, end } => {
                at = Some(end);
                // (Each range starts and ends at an ASCII byte: on characters.)
                Some(text.get(key).zip(text.get(value)))
            }
            Entry::Closed => {
                at = None;
                None
            }
            Entry::Broken => {
                at = None;
                Some(None)
            }
        }
    })
}

enum Entry {
    Found {
        key: std::ops::Range<usize>,
        value: std::ops::Range<usize>,
        end: usize,
    },
    Closed,
    Broken,
}

/// The entry after `at` (just after `{`, or after the previous value).
fn entry(bytes: &[u8], at: usize, first: bool) -> Entry {
    let mut at = skip_ws(bytes, at);
    match bytes.get(at) {
        Some(b'}') => return Entry::Closed,
        Some(b',') if !first => at = skip_ws(bytes, at + 1),
        Some(b'"') if first => {}
        _ => return Entry::Broken,
    }
    if bytes.get(at) != Some(&b'"') {
        return Entry::Broken;
    }
    let Some(key_end) = string_end(bytes, at) else {
        return Entry::Broken;
    };
    let colon = skip_ws(bytes, key_end);
    if bytes.get(colon) != Some(&b':') {
        return Entry::Broken;
    }
    let start = skip_ws(bytes, colon + 1);
    match value_end(bytes, start) {
        Some(end) => Entry::Found {
            key: at + 1..key_end - 1,
            value: start..end,
            end,
        },
        None => Entry::Broken,
    }
}

fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(at) {
        at += 1;
    }
    at
}

/// Where the value at `at` ends.
fn value_end(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at)? {
        b'"' => string_end(bytes, at),
        b'{' | b'[' => nested_end(bytes, at),
        _ => {
            // A number or a literal: up to the next delimiter.
            let len = bytes[at..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(bytes.len() - at);
            (len > 0).then_some(at + len)
        }
    }
}

/// Where the object or array opening at `open` ends. In JSON, braces and
/// brackets are each balanced outside strings, so counting the opening
/// kind alone finds its end (and memchr finds the next one quickly).
fn nested_end(bytes: &[u8], open: usize) -> Option<usize> {
    let (opening, closing) = match bytes.get(open)? {
        b'{' => (b'{', b'}'),
        _ => (b'[', b']'),
    };
    let mut depth = 0usize;
    let mut at = open;
    loop {
        at += memchr::memchr3(b'"', opening, closing, bytes.get(at..)?)?;
        match bytes[at] {
            b'"' => {
                at = string_end(bytes, at)?;
                continue;
            }
            b if b == opening => depth += 1,
            _ => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(at + 1);
                }
            }
        }
        at += 1;
    }
}

/// Where the string whose opening quote is at `open` ends (after its
/// closing quote): from quote or backslash to the next, as `check_depth`
/// skips strings.
fn string_end(bytes: &[u8], open: usize) -> Option<usize> {
    let mut at = open + 1;
    loop {
        at += memchr::memchr2(b'"', b'\\', bytes.get(at..)?)?;
        match bytes[at] {
            b'"' => return Some(at + 1),
            _ => at += 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::entries;

    fn all(text: &str) -> Vec<Option<(&str, &str)>> {
        entries(text).collect()
    }

    /// What sonic-rs's object iterator finds, keys as written.
    #[test]
    fn finds_each_entry_as_the_parser_does() {
        let texts = [
            r#"{"id":"a","ts":1,"ip":"10.0.0.1"}"#,
            r#" {} "#,
            r#"{ "id" : "x\"y\\" , "n" : { "a" : [1, "]}\"", {"b": null}] }, "t": true, "f": -1.5e3 }"#,
            r#"{"long":"0123456789abcdef0123456789abcdef","k\"ey":"v","e":"\u00e9é","last":[]}"#,
            r#"{"a":1,"a":2}"#,
        ];
        for text in texts {
            let expected: Vec<(String, String)> = sonic_rs::to_object_iter(text)
                .map(|entry| {
                    let (key, value) = entry.unwrap();
                    // Keys without escapes: compare as written.
                    (key.to_string(), value.as_raw_str().to_owned())
                })
                .collect();
            let found: Vec<(String, String)> = all(text.trim())
                .into_iter()
                .map(|entry| {
                    let (key, value) = entry.unwrap();
                    (key.replace("\\\"", "\""), value.to_owned())
                })
                .collect();
            assert_eq!(found, expected, "{text}");
        }
    }

    /// Text that is not JSON ends the walk; it never panics or loops.
    #[test]
    fn text_that_is_not_json_ends_the_walk() {
        for text in [
            "{",
            "{\"a\"",
            "{\"a\":",
            "{\"a\":1",
            "{\"a\" 1}",
            "{\"a\":\"x",
            "{\"a\":[1,",
            "{,}",
            "{\"a\":1,,}",
            "{\"a\":]",
            "{\"a\":}",
            "[1]",
            "",
            "{\"a\":{\"b\":1}}}",
        ] {
            let walked = all(text);
            assert!(walked.len() <= 2, "{text:?}: {walked:?}");
        }
        assert_eq!(all("{\"a\":1"), vec![Some(("a", "1")), None]);
        assert_eq!(all("{\"a\" 1}"), vec![None]);
        assert_eq!(all("{\"a\":1,}"), vec![Some(("a", "1")), None]);
    }
}
