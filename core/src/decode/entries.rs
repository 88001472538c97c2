//! The entries of an event object the parser has already checked, walked
//! where they lie in the body; and the events of the `data` array, each
//! found where the walk of its entries ended.
//!
//! `split` reads three fields of every event (`id`, `ts`, `ip`). sonic-rs's
//! object iterator, even unchecked, parses every key and makes a lazy value
//! of every entry (about 3,900 instructions for a 400-byte event). Here
//! strings, nested values and numbers are skipped as `weir_json_walk` skips
//! them (memchr from quote or backslash to the next, brackets counted
//! outside strings; the guest SDK walks a filter's events the same way),
//! and only the three values are read, from their text. Measured with
//! `benches/instructions.sh`: 1,679,315 → 1,642,853 instructions per
//! 50-event request (−2.2%).
//!
//! The text must be JSON (decode's checked parse read it): that is what
//! makes skipping without checking right. Text that is not JSON is never
//! a panic or an endless loop, only an early end (`None`). The fuzz target
//! `decode_split` holds the fields read to serde_json's.

use weir_json_walk::{skip_ws, string_end, value_end};

/// The entries of the object `text` (starting with `{`): each key's text
/// between its quotes (escapes as written) and its value's text. `None` in
/// place of an entry where the text is not as JSON would have it. After
/// the last entry, [`Entries::end`] says where the object ended.
pub(super) fn entries(text: &str) -> Entries<'_> {
    Entries {
        text,
        at: text.starts_with('{').then_some(1),
        first: true,
        end: None,
    }
}

pub(super) struct Entries<'a> {
    text: &'a str,
    /// Where the next entry starts; `None` once the walk has ended.
    at: Option<usize>,
    first: bool,
    end: Option<usize>,
}

impl Entries<'_> {
    /// Where the object ended (just past its `}`), once the walk reached it.
    pub(super) fn end(&self) -> Option<usize> {
        self.end
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Option<(&'a str, &'a str)>;

    fn next(&mut self) -> Option<Self::Item> {
        let bytes = self.text.as_bytes();
        let next = entry(bytes, self.at?, self.first);
        self.first = false;
        match next {
            Entry::Found { key, value, end } => {
                self.at = Some(end);
                // (Each range starts and ends at an ASCII byte: on characters.)
                Some(self.text.get(key).zip(self.text.get(value)))
            }
            Entry::Closed(end) => {
                self.at = None;
                self.end = Some(end);
                None
            }
            Entry::Broken => {
                self.at = None;
                Some(None)
            }
        }
    }
}

/// The elements of the array `text` (starting with `[`), walked as
/// [`entries`] walks an object: [`Elements::next_start`] gives where the
/// next one starts, and the caller, which reads it, says where it ended.
pub(super) struct Elements<'a> {
    bytes: &'a [u8],
    /// Where the walk is: just after `[` or an element; `None` at the end.
    at: Option<usize>,
    first: bool,
}

impl<'a> Elements<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Elements {
            bytes: text.as_bytes(),
            at: text.starts_with('[').then_some(1),
            first: true,
        }
    }

    /// Where the next element starts: `Ok(None)` after the last, `Err` where
    /// the text is not as JSON would have it.
    pub(super) fn next_start(&mut self) -> Result<Option<usize>, ()> {
        let Some(at) = self.at else {
            return Ok(None);
        };
        let mut at = skip_ws(self.bytes, at);
        match self.bytes.get(at) {
            Some(b']') => {
                self.at = None;
                return Ok(None);
            }
            Some(b',') if !self.first => at = skip_ws(self.bytes, at + 1),
            Some(_) if self.first => {}
            _ => return Err(()),
        }
        self.first = false;
        self.at = None;
        match self.bytes.get(at) {
            Some(_) => Ok(Some(at)),
            None => Err(()),
        }
    }

    /// The element [`Elements::next_start`] gave ended at `end`: the walk
    /// goes on from there (until it is told, the next call ends it).
    pub(super) fn ended_at(&mut self, end: usize) {
        self.at = Some(end);
    }
}

/// Where the value at `at` of `text` ends.
pub(super) fn value_end_in(text: &str, at: usize) -> Option<usize> {
    value_end(text.as_bytes(), at).ok()
}

enum Entry {
    Found {
        key: std::ops::Range<usize>,
        value: std::ops::Range<usize>,
        end: usize,
    },
    /// The object's `}`, and where it ends (just past it).
    Closed(usize),
    Broken,
}

/// The entry after `at` (just after `{`, or after the previous value).
fn entry(bytes: &[u8], at: usize, first: bool) -> Entry {
    let mut at = skip_ws(bytes, at);
    match bytes.get(at) {
        Some(b'}') => return Entry::Closed(at + 1),
        Some(b',') if !first => at = skip_ws(bytes, at + 1),
        Some(b'"') if first => {}
        _ => return Entry::Broken,
    }
    if bytes.get(at) != Some(&b'"') {
        return Entry::Broken;
    }
    let Ok(key_end) = string_end(bytes, at) else {
        return Entry::Broken;
    };
    let colon = skip_ws(bytes, key_end);
    if bytes.get(colon) != Some(&b':') {
        return Entry::Broken;
    }
    let start = skip_ws(bytes, colon + 1);
    match value_end(bytes, start) {
        Ok(end) => Entry::Found {
            key: at + 1..key_end - 1,
            value: start..end,
            end,
        },
        Err(_) => Entry::Broken,
    }
}

#[cfg(test)]
mod tests {
    use super::{entries, value_end_in, Elements};

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

    /// The walk knows where its object ended: split needs no second pass
    /// to find where the next event starts.
    #[test]
    fn the_walk_ends_just_past_its_object() {
        let text = r#"{"a":{"b":"}"},"c":[1]} , {"next":1}"#;
        let mut walk = entries(text);
        assert_eq!(walk.by_ref().count(), 2);
        assert_eq!(walk.end(), Some(23));
        assert_eq!(&text[..23], r#"{"a":{"b":"}"},"c":[1]}"#);
        let mut walk = entries("{ }");
        assert_eq!(walk.next(), None);
        assert_eq!(walk.end(), Some(3));
        // Broken: no end.
        let mut walk = entries("{\"a\" 1}");
        assert_eq!(walk.by_ref().count(), 1);
        assert_eq!(walk.end(), None);
    }

    /// Each element of an array, as sonic-rs's array iterator gives them.
    fn elements(text: &str) -> Result<Vec<&str>, ()> {
        let mut array = Elements::new(text);
        let mut found = Vec::new();
        while let Some(start) = array.next_start()? {
            let end = value_end_in(text, start).ok_or(())?;
            array.ended_at(end);
            found.push(&text[start..end]);
        }
        Ok(found)
    }

    #[test]
    fn elements_are_found_as_the_parser_finds_them() {
        for text in [
            r#"[ {"a":1} , "x\"]" ,[1,[2]],{}, -1.5e3,true,null ]"#,
            "[]",
            "[ ]",
            r#"[{"id":"a"},{"id":"b"}]"#,
        ] {
            let expected: Vec<String> = sonic_rs::to_array_iter(text)
                .map(|item| item.unwrap().as_raw_str().to_owned())
                .collect();
            assert_eq!(elements(text).unwrap(), expected, "{text}");
        }
    }

    /// Text that is not a JSON array ends the walk with an error; never a
    /// panic or a loop.
    #[test]
    fn text_that_is_not_an_array_is_an_error() {
        for text in ["[", "[1", "[1 2]", "[1,", "[,1]", "[1,]", "[1,,2]"] {
            assert!(elements(text).is_err(), "{text:?}");
        }
        // Not an array at all: nothing in it.
        assert_eq!(elements("{}"), Ok(vec![]));
    }
}
