//! Setting one field of an event's body without rebuilding the rest.
//!
//! A filter that tags or masks one field would otherwise parse the whole
//! body into values and write it all back: every key and value allocated,
//! and the client's text (key order, number spelling, escapes) rewritten.
//! This reads the body once to find where the field's value lies and
//! splices the new value in: the rest stays byte for byte as it was.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

/// `body` (a JSON object) with the field at `path` set to `value`: a
/// top-level key equal to the whole path if there is one, else the dotted
/// path (`"props.email"`), the field [`crate::field_mut`] and
/// [`crate::Event::get`] find. A missing field is added at the end of its
/// object, with the objects on its path that are missing. Where a key is
/// repeated, every copy is set (readers disagree on which copy counts).
///
/// `Err` when `body` is not a JSON object, or a value on the path is not
/// an object.
pub fn set_field(body: &[u8], path: &str, value: &Value) -> Result<Vec<u8>, serde_json::Error> {
    set_field_read(body, path, value, Read::Check)
}

/// [`set_field`] with `body` read as `read` says.
pub(crate) fn set_field_read(
    body: &[u8],
    path: &str,
    value: &Value,
    read: Read,
) -> Result<Vec<u8>, serde_json::Error> {
    let text = serde_json::to_vec(value)?;
    let mut out = Vec::with_capacity(body.len() + text.len() + 16);
    let mut set = |_: &str| Ok(Some(text.clone()));
    rewrite(
        body,
        read,
        Some(path),
        path,
        &mut set,
        Some(value),
        &mut out,
    )?;
    Ok(out)
}

/// `body` (a JSON object) with the field at `path` passed to `edit`, which
/// changes it in place and says whether it did; `Ok(None)` when nothing
/// changed (or there is no such field). Every place the field may be is
/// edited, each on its own, so that a filter that masks a field misses
/// none: every copy of a repeated key, and both a top-level key equal to
/// the whole path (`"props.email"`) and the dotted path into `props`. The
/// rest of the text is unchanged.
///
/// `Err` when `body` is not a JSON object.
pub fn edit_field(
    body: &[u8],
    path: &str,
    mut edit: impl FnMut(&mut Value) -> bool,
) -> Result<Option<Vec<u8>>, serde_json::Error> {
    edit_field_text(body, path, |text| {
        let mut value: Value = serde_json::from_str(text)?;
        Ok(match edit(&mut value) {
            true => Some(serde_json::to_vec(&value)?),
            false => None,
        })
    })
}

/// As [`edit_field`], but `edit` gets each copy of the field as the JSON
/// text the client wrote, and returns new JSON text for it, or `None` to
/// keep it. For a field that is an object or a list, this keeps what a
/// `Value` would lose: key order, number spelling, repeated keys inside it.
/// `edit`'s text must be JSON: it goes into the body as it is.
pub fn edit_field_text(
    body: &[u8],
    path: &str,
    edit: impl FnMut(&str) -> Result<Option<Vec<u8>>, serde_json::Error>,
) -> Result<Option<Vec<u8>>, serde_json::Error> {
    edit_field_text_read(body, path, edit, Read::Check)
}

/// [`edit_field_text`] with `body` read as `read` says.
pub(crate) fn edit_field_text_read(
    body: &[u8],
    path: &str,
    mut edit: impl FnMut(&str) -> Result<Option<Vec<u8>>, serde_json::Error>,
    read: Read,
) -> Result<Option<Vec<u8>>, serde_json::Error> {
    let mut out = Vec::with_capacity(body.len() + 16);
    let changed = rewrite(body, read, Some(path), path, &mut edit, None, &mut out)?;
    Ok(changed.then_some(out))
}

/// How a body is read: checked as JSON by serde_json (text from anywhere),
/// or walked without checking again what the node has checked
/// (`crate::walk`).
#[derive(Clone, Copy)]
pub(crate) enum Read {
    Check,
    Trust,
}

/// New text for one copy of a field, or `None` to keep it.
type Edit<'e> = dyn FnMut(&str) -> serde_json::Result<Option<Vec<u8>>> + 'e;

/// Writes `object` into `out` with every copy of the field at `rest` passed
/// through `edit` (`whole`, the full path, is looked for as a key at the top
/// level only). A missing field is added as `missing` when given. Whether
/// anything changed.
fn rewrite(
    object: &[u8],
    read: Read,
    whole: Option<&str>,
    rest: &str,
    edit: &mut Edit<'_>,
    missing: Option<&Value>,
    out: &mut Vec<u8>,
) -> serde_json::Result<bool> {
    let entries: Vec<crate::walk::Entry> = match read {
        Read::Check => {
            let Entries(entries) = serde_json::from_slice(object)?;
            entries
                .into_iter()
                .map(|(key, raw)| (key, span(object, raw)))
                .collect()
        }
        Read::Trust => crate::walk::entries(object).map_err(crate::walk::not_json)?,
    };
    let (head, tail) = match rest.split_once('.') {
        Some((head, tail)) => (head, Some(tail)),
        None => (rest, None),
    };
    // Where the field is: a key equal to the whole path, which readers take
    // over the dotted path. Setting, it wins; editing, both are edited, so a
    // mask misses neither.
    let whole_found = whole.is_some_and(|w| entries.iter().any(|(k, _)| k == w));
    let editing = missing.is_none();
    let targets: Vec<(Range<usize>, Option<&str>)> = entries
        .iter()
        .filter_map(|(key, at)| {
            if whole_found && whole == Some(key.as_ref()) {
                Some((at.clone(), None))
            } else if key == head && (editing || !whole_found) {
                Some((at.clone(), tail))
            } else {
                None
            }
        })
        .collect();
    if targets.is_empty() {
        let Some(value) = missing else {
            out.extend_from_slice(object);
            return Ok(false);
        };
        // Before the closing brace (the object parsed, so it ends with one).
        let close = object
            .iter()
            .rposition(|&b| b == b'}')
            .unwrap_or(object.len());
        out.extend_from_slice(&object[..close]);
        if !entries.is_empty() {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, head)?;
        out.push(b':');
        write_nested(tail, value, out)?;
        out.extend_from_slice(&object[close..]);
        return Ok(true);
    }
    let mut changed = false;
    let mut written = 0;
    for (at, tail) in targets {
        let raw = &object[at.clone()];
        out.extend_from_slice(&object[written..at.start]);
        written = at.end;
        match tail {
            None => {
                let text = std::str::from_utf8(raw).map_err(serde_json::Error::custom)?;
                match edit(text)? {
                    Some(text) => {
                        out.extend_from_slice(&text);
                        changed = true;
                    }
                    None => out.extend_from_slice(raw),
                }
            }
            Some(tail) if raw.starts_with(b"{") => {
                changed |= rewrite(raw, read, None, tail, edit, missing, out)?;
            }
            // Not an object: it has no field to edit, and none can be set.
            Some(tail) => match missing {
                None => out.extend_from_slice(raw),
                Some(_) => {
                    return Err(serde_json::Error::custom(format!(
                        "`{head}` is not an object, so it has no field `{tail}`"
                    )))
                }
            },
        }
    }
    out.extend_from_slice(&object[written..]);
    Ok(changed)
}

/// `value` under the dotted `path` of new objects (`a.b` → `{"a":{"b":value}}`).
fn write_nested(path: Option<&str>, value: &Value, out: &mut Vec<u8>) -> serde_json::Result<()> {
    let Some(path) = path else {
        return serde_json::to_writer(out, value);
    };
    let (head, tail) = match path.split_once('.') {
        Some((head, tail)) => (head, Some(tail)),
        None => (path, None),
    };
    out.push(b'{');
    serde_json::to_writer(&mut *out, head)?;
    out.push(b':');
    write_nested(tail, value, out)?;
    out.push(b'}');
    Ok(())
}

/// Where `raw` (borrowed from `text` by the parser) lies in `text`.
fn span(text: &[u8], raw: &RawValue) -> Range<usize> {
    let start = raw.get().as_ptr() as usize - text.as_ptr() as usize;
    start..start + raw.get().len()
}

/// A JSON object's entries in order: each key and its value's text.
struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Entries<'a> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_map(EntriesVisitor)
    }
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
        let mut entries = Vec::new();
        while let Some(Key(key)) = map.next_key()? {
            entries.push((key, map.next_value::<&RawValue>()?));
        }
        Ok(Entries(entries))
    }
}

/// A key, borrowed from the text unless it has escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
        }
        de.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(body: &str, path: &str, value: Value) -> String {
        String::from_utf8(set_field(body.as_bytes(), path, &value).unwrap()).unwrap()
    }

    #[test]
    fn only_the_field_changes_and_the_rest_keeps_its_text() {
        let body = r#"{ "b": 1.50, "ua" : "curl/8", "n": {"x": "é\u00e9", "y": [1, 2]} }"#;
        assert_eq!(
            set(body, "ua", json!("bot")),
            r#"{ "b": 1.50, "ua" : "bot", "n": {"x": "é\u00e9", "y": [1, 2]} }"#
        );
        assert_eq!(
            set(body, "n.y", json!(null)),
            r#"{ "b": 1.50, "ua" : "curl/8", "n": {"x": "é\u00e9", "y": null} }"#
        );
    }

    #[test]
    fn a_missing_field_is_added_with_the_objects_on_its_path() {
        assert_eq!(
            set(r#"{"a":1}"#, "is_bot", json!(true)),
            r#"{"a":1,"is_bot":true}"#
        );
        assert_eq!(set("{ }", "a", json!(1)), r#"{ "a":1}"#);
        assert_eq!(
            set(r#"{"a":1}"#, "p.q.r", json!("x")),
            r#"{"a":1,"p":{"q":{"r":"x"}}}"#
        );
        assert_eq!(set(r#"{"p":{}}"#, "p.q", json!(2)), r#"{"p":{"q":2}}"#);
        assert_eq!(set(r#"{"a":1}"#, "k\"ey", json!(1)), r#"{"a":1,"k\"ey":1}"#);
    }

    /// Whatever the text, the result reads as `field_mut` on the parsed body
    /// would have left it, and the set field reads back.
    #[test]
    fn agrees_with_field_mut_on_a_parsed_body() {
        let body = json!({
            "id": "a",
            "props": {"email": "ann@example.com", "deep": {"er": null}},
            "props.email": "top-level wins",
            "esc\"aped": 1,
        });
        let text = serde_json::to_vec(&body).unwrap();
        for path in ["id", "props", "props.email", "props.deep.er", "esc\"aped"] {
            let value = json!({"new": [path]});
            let mut expected = body.clone();
            *crate::field_mut(&mut expected, path).unwrap() = value.clone();
            let patched = set_field(&text, path, &value).unwrap();
            let patched: Value = serde_json::from_slice(&patched).unwrap();
            assert_eq!(patched, expected, "{path}");
            assert_eq!(
                crate::lookup::lookup(&serde_json::to_vec(&patched).unwrap(), path).unwrap(),
                Some(value)
            );
        }
    }

    #[test]
    fn every_copy_of_a_repeated_key_is_set_and_bad_bodies_are_errors() {
        assert_eq!(
            set(r#"{"a":1,"b":0,"a":2}"#, "a", json!(3)),
            r#"{"a":3,"b":0,"a":3}"#
        );
        assert_eq!(
            set(r#"{"p":{"e":1},"p":{"e":2,"e":3}}"#, "p.e", json!(0)),
            r#"{"p":{"e":0},"p":{"e":0,"e":0}}"#
        );
        assert!(set_field(b"[1]", "a", &json!(1)).is_err());
        assert!(set_field(br#"{"a":1"#, "a", &json!(1)).is_err());
        assert!(set_field(br#"{"a":1} x"#, "a", &json!(1)).is_err());
        let err = set_field(br#"{"a":"s"}"#, "a.b", &json!(1)).unwrap_err();
        assert!(err.to_string().contains("`a` is not an object"), "{err}");
    }

    /// On JSON, the walk that trusts the node's check sets and edits
    /// fields as the checking parse does, byte for byte.
    #[test]
    fn the_trusting_walk_rewrites_as_the_checking_parse() {
        let bodies = [
            r#"{"id":"a","props":{"email":"ann@example.com","deep":{"er":null}},"props.email":"top"}"#,
            r#" { "a" : 1 , "a" : { "b" : "x\"}]{[" } , "p" : [ "}" ] , "k\u00e9y": {} } "#,
            r#"{"p":{"e":1},"p":"no object","p":{"e":{"f":[1,2]}}}"#,
            "{}",
        ];
        let paths = [
            "id",
            "props.email",
            "props.deep.er",
            "a",
            "a.b",
            "p.e",
            "p.e.f",
            "kéy",
            "kéy.x",
            "new.field",
        ];
        let value = json!({"n": [1, "x"]});
        for body in bodies {
            for path in paths {
                let body = body.as_bytes();
                assert_eq!(
                    set_field_read(body, path, &value, Read::Trust).ok(),
                    set_field(body, path, &value).ok(),
                    "{path}"
                );
                let wrap = |text: &str| Ok(Some(format!("[{text}]").into_bytes()));
                assert_eq!(
                    edit_field_text_read(body, path, wrap, Read::Trust).ok(),
                    edit_field_text(body, path, wrap).ok(),
                    "{path}"
                );
            }
        }
        // What it notices of text that is not JSON is an error too.
        assert!(set_field_read(br#"{"a":"\uZZZZ"}"#, "a", &value, Read::Trust).is_err());
        assert!(set_field_read(b"[1]", "a", &value, Read::Trust).is_err());
    }

    /// A masking filter must reach every copy: readers disagree on which
    /// copy of a repeated key counts, and the text goes on unchanged.
    #[test]
    fn edit_reaches_every_copy_on_its_own() {
        let mask = |v: &mut Value| match v.as_str() {
            Some(s) if s.contains('@') => {
                *v = json!("***");
                true
            }
            _ => false,
        };
        let edited = |body: &str, path| {
            edit_field(body.as_bytes(), path, mask)
                .unwrap()
                .map(|b| String::from_utf8(b).unwrap())
        };
        assert_eq!(
            edited(r#"{"email": "ann@x.io", "n": 1, "email": "none"}"#, "email").as_deref(),
            Some(r#"{"email": "***", "n": 1, "email": "none"}"#)
        );
        assert_eq!(
            edited(
                r#"{"p":{"email":"a@b.c"},"p":"text","p":{"x":1}}"#,
                "p.email"
            )
            .as_deref(),
            Some(r#"{"p":{"email":"***"},"p":"text","p":{"x":1}}"#)
        );
        // A top-level key equal to the whole path, and the dotted path too.
        assert_eq!(
            edited(
                r#"{"props.email":"x@y.z","props":{"email":"ann@x.com"}}"#,
                "props.email"
            )
            .as_deref(),
            Some(r#"{"props.email":"***","props":{"email":"***"}}"#)
        );
        // Nothing to change, or no such field: `None`, and nothing is added.
        assert_eq!(edited(r#"{"email": "none"}"#, "email"), None);
        assert_eq!(edited(r#"{"a": 1}"#, "email"), None);
        assert_eq!(edited(r#"{"a": 1}"#, "a.b"), None);
        assert!(edit_field(b"[]", "a", mask).is_err());
    }

    /// serde_json with `raw_value` (as this crate has it) reads an object
    /// whose only key is its RawValue token as a RawValue, so no `Value`
    /// holds one; the text-level helpers read and edit around it. (Found by
    /// fuzz/fuzz_targets/sdk_json.rs; a filter that parses bodies into
    /// `Value`s gets an error for such an event, and its policy decides.)
    #[test]
    fn the_raw_value_token_is_text_to_the_helpers() {
        let body = br#"{"a":{"$serde_json::private::RawValue":1}}"#;
        assert!(serde_json::from_slice::<Value>(body).is_err());
        let raw = crate::lookup::<Box<RawValue>>(body, "a").unwrap().unwrap();
        assert_eq!(raw.get(), r#"{"$serde_json::private::RawValue":1}"#);
        assert_eq!(
            set(std::str::from_utf8(body).unwrap(), "a.b", json!(2)),
            r#"{"a":{"$serde_json::private::RawValue":1,"b":2}}"#
        );
    }
}
