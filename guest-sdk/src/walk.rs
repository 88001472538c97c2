//! Walking JSON text the node has checked, where it lies.
//!
//! The node checks every body before a filter sees it: a client's events
//! when the upload is decoded, a filter's replacement before the next
//! filter of the chain gets it. A reader of such text need not check again
//! what it skips (the steps are `weir_json_walk`'s, which the node's split
//! takes too); what is checked comes free: the structure it walks and every
//! escape it meets. serde_json's checking walk was half of the guests' time
//! in a four-filter chain (perf with `WEIR_FILTER_PERFMAP`). Per call of 50
//! events (criterion, `benches/benches/filters.rs`): require-fields 72.1 →
//! 60.1 µs, tag-bots 57.6 → 51.0, redact-pii on two named fields 228 → 196.
//!
//! Text that is not JSON is never a panic or an endless loop: the walk
//! stops with an error where it finds the text is not as JSON would have
//! it, or, past what it checks, reads on and finds what it finds.

use std::borrow::Cow;
use std::ops::Range;

use weir_json_walk::{skip_ws, string_end, value_end, NotJson};

/// Text that is not JSON where the walk noticed it, as the SDK's error.
pub(crate) fn not_json(NotJson(at): NotJson) -> serde_json::Error {
    serde::de::Error::custom(format!("not JSON at byte {at}"))
}

/// A pull reader over JSON text: the caller says at each value whether to
/// skip it or walk into it.
pub(crate) struct Walk<'a> {
    pub text: &'a [u8],
    pub at: usize,
}

impl<'a> Walk<'a> {
    pub fn new(text: &'a [u8]) -> Self {
        Walk { text, at: 0 }
    }

    /// Steps into the object that is the next value: `false` (the value
    /// skipped) when it is something else.
    pub fn enter_object(&mut self) -> Result<bool, NotJson> {
        self.skip_ws();
        if self.text.get(self.at) != Some(&b'{') {
            self.skip_value()?;
            return Ok(false);
        }
        self.at += 1;
        self.skip_ws();
        // An empty object: the next `next_key` finds its end.
        Ok(true)
    }

    /// The next key of the object being walked, as written between its
    /// quotes (escapes and all), with the walk at its value; `None` past
    /// the object's closing brace.
    pub fn next_key(&mut self) -> Result<Option<&'a [u8]>, NotJson> {
        self.skip_ws();
        match self.text.get(self.at) {
            Some(b'}') => {
                self.at += 1;
                return Ok(None);
            }
            Some(b',') => {
                self.at += 1;
                self.skip_ws();
            }
            _ => {}
        }
        if self.text.get(self.at) != Some(&b'"') {
            return Err(NotJson(self.at));
        }
        let open = self.at;
        self.at = string_end(self.text, open)?;
        let key = &self.text[open + 1..self.at - 1];
        self.skip_ws();
        if self.text.get(self.at) != Some(&b':') {
            return Err(NotJson(self.at));
        }
        self.at += 1;
        self.skip_ws();
        Ok(Some(key))
    }

    /// Skips the next value: where its text lies.
    pub fn skip_value(&mut self) -> Result<Range<usize>, NotJson> {
        self.skip_ws();
        let start = self.at;
        self.at = value_end(self.text, start)?;
        Ok(start..self.at)
    }

    /// Only whitespace is left.
    pub fn end(&mut self) -> Result<(), NotJson> {
        self.skip_ws();
        match self.at < self.text.len() {
            true => Err(NotJson(self.at)),
            false => Ok(()),
        }
    }

    fn skip_ws(&mut self) {
        self.at = skip_ws(self.text, self.at);
    }
}

/// An object's entry: its key, read, and where its value's text lies.
pub(crate) type Entry<'a> = (Cow<'a, str>, Range<usize>);

/// The entries of the object `text`, in order.
pub(crate) fn entries(text: &[u8]) -> Result<Vec<Entry<'_>>, NotJson> {
    let mut walk = Walk::new(text);
    if !walk.enter_object()? {
        return Err(NotJson(0));
    }
    let mut entries = Vec::new();
    while let Some(key) = walk.next_key()? {
        let key = read_key(key).ok_or(NotJson(walk.at))?;
        entries.push((key, walk.skip_value()?));
    }
    walk.end()?;
    Ok(entries)
}

/// A key as written (escapes and all), read.
pub(crate) fn read_key(raw: &[u8]) -> Option<Cow<'_, str>> {
    if !raw.contains(&b'\\') {
        return std::str::from_utf8(raw).ok().map(Cow::Borrowed);
    }
    // Escaped (rare): read as JSON, as a parser would.
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice::<String>(&quoted)
        .ok()
        .map(Cow::Owned)
}

/// Whether the key written as `raw` is `key`. Reading an escape never makes
/// text longer, so a key of another length is another key unless escaped.
pub(crate) fn key_is(raw: &[u8], key: &str) -> bool {
    match raw.len().cmp(&key.len()) {
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal if raw == key.as_bytes() => !raw.contains(&b'\\'),
        _ => raw.contains(&b'\\') && read_key(raw).is_some_and(|k| k == key),
    }
}

/// Where the text of the field at `path` lies in the JSON object `body`,
/// found as [`crate::lookup()`] finds it: a top-level key equal to the
/// whole path wins, else the dotted path is followed; of a repeated key,
/// the last copy counts. `None` when it is missing or `body` is no object.
pub(crate) fn find(body: &[u8], path: &str) -> Result<Option<Range<usize>>, NotJson> {
    let mut walk = Walk::new(body);
    let found = find_in(&mut walk, Some(path), path)?;
    walk.end()?;
    Ok(found)
}

/// [`find`] in the value at the walk (the whole `whole` path is looked for
/// at the top level only); the walk ends past the value.
fn find_in(
    walk: &mut Walk<'_>,
    whole: Option<&str>,
    path: &str,
) -> Result<Option<Range<usize>>, NotJson> {
    if !walk.enter_object()? {
        return Ok(None);
    }
    let (head, tail) = match path.split_once('.') {
        Some((head, tail)) => (head, Some(tail)),
        None => (path, None),
    };
    let whole = whole.filter(|_| tail.is_some());
    let (mut by_whole, mut by_path) = (None, None);
    while let Some(key) = walk.next_key()? {
        if whole.is_some_and(|whole| key_is(key, whole)) {
            by_whole = Some(walk.skip_value()?);
        } else if key_is(key, head) {
            by_path = match tail {
                None => Some(walk.skip_value()?),
                Some(tail) => find_in(walk, None, tail)?,
            };
        } else {
            walk.skip_value()?;
        }
    }
    Ok(by_whole.or(by_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(body: &str, path: &str) -> Option<String> {
        find(body.as_bytes(), path)
            .unwrap()
            .map(|at| body[at].to_owned())
    }

    /// On JSON, the walk finds what serde_json's checking lookup finds.
    #[test]
    fn finds_what_the_checking_lookup_finds() {
        let bodies = [
            r#"{"id":"a","props":{"email":"ann@example.com","n":[1,{"x":2}],"deep":{"er":null}},"props.email":"top","list":[{"a":1}],"s":"text","esc\"aped":1}"#,
            r#" { "a" : 1 , "a" : { "b" : "x\"}]{[" } , "a" : [ "}" ] } "#,
            r#"{"p":{"e":1},"p":"no object","q":{"r":{"s":-1.5e3}},"t":true,"f":false,"z":null}"#,
            r#"{"k\u00e9y":"\u00e9","kéy2":"é","long":"0123456789abcdef0123456789abcdef\\","":0}"#,
            "{}",
        ];
        let paths = [
            "id",
            "props",
            "props.email",
            "props.n",
            "props.deep.er",
            "props.n.x",
            "list.a",
            "esc\"aped",
            "a",
            "a.b",
            "p.e",
            "q.r.s",
            "q.r",
            "t",
            "z",
            "kéy",
            "kéy2",
            "long",
            "",
            "missing",
            "s.x",
        ];
        for body in bodies {
            for path in paths {
                let checked =
                    crate::lookup::<Box<serde_json::value::RawValue>>(body.as_bytes(), path)
                        .unwrap()
                        .map(|raw| raw.get().to_owned());
                assert_eq!(text_of(body, path), checked, "{body} {path}");
            }
        }
    }

    #[test]
    fn entries_read_keys_and_find_values() {
        let body = br#"{"a":1, "b\"c" : [1,2],"d":{"e":"}"}}"#;
        let found: Vec<_> = entries(body)
            .unwrap()
            .into_iter()
            .map(|(k, at)| {
                (
                    k.into_owned(),
                    String::from_utf8(body[at].to_vec()).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("a".into(), "1".into()),
                ("b\"c".into(), "[1,2]".into()),
                ("d".into(), r#"{"e":"}"}"#.into())
            ]
        );
        assert!(entries(b"[1]").is_err());
    }

    #[test]
    fn keys_compare_as_read() {
        assert!(key_is(b"id", "id"));
        assert!(!key_is(b"i", "id"));
        assert!(!key_is(b"idd", "id"));
        assert!(key_is(br"\u0069d", "id"));
        assert!(key_is(br#"a\"b"#, "a\"b"));
        // Written with a backslash it is not the same text as read.
        assert!(!key_is(br"a\\", "a\\\\"));
        assert!(key_is(br"a\\", "a\\"));
    }

    /// Text that is not JSON stops the walk with an error where it shows,
    /// bad escapes included; it never panics or loops.
    #[test]
    fn text_that_is_not_json_is_an_error() {
        for text in [
            "{",
            "{\"a\"",
            "{\"a\":",
            "{\"a\":1",
            "{\"a\" 1}",
            "{\"a\":\"x",
            "{\"a\":[1,",
            "{,}",
            "{\"a\":]",
            "{\"a\":}",
            "",
            "{\"a\":1} x",
            "{\"a\":\"\\uZZZZ\"}",
            "{\"a\":\"\\q\"}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":{\"b\":\"\\",
        ] {
            assert!(find(text.as_bytes(), "a").is_err(), "{text:?}");
            assert!(entries(text.as_bytes()).is_err(), "{text:?}");
        }
        // Not an object: no field, and no error.
        assert_eq!(find(b"[1]", "a").unwrap(), None);
        assert_eq!(find(b"\"s\"", "a").unwrap(), None);
    }

    #[test]
    fn long_strings_are_skipped_a_word_at_a_time() {
        for n in 0..20 {
            let pad = "x".repeat(n);
            let body = format!(r#"{{"pad":"{pad}\"{pad}","id":"{pad}"}}"#);
            assert_eq!(text_of(&body, "id"), Some(format!("\"{pad}\"")), "{n}");
        }
    }
}
