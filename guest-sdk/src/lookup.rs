//! Reading one field of an event's body without building the whole body.
//!
//! Most filters look at one or two fields of each event (a user agent, a
//! category, a required key). Parsing the body into a `serde_json::Value`
//! allocates every key and value of it; this walks the JSON text once,
//! skipping what is not on the path (still checking it is valid JSON), and
//! builds only the field asked for.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

/// The field at `path` in the JSON object `body`, read as a `T` (a
/// `serde_json::Value`, or a `Box<RawValue>` for its text): a top-level key
/// equal to the whole path wins, else the dotted path (`"props.email"`) is
/// followed, as [`crate::field`] does on a parsed body. `Ok(None)` when it
/// is missing; `Err` when `body` is not JSON, or the field is no `T`.
pub fn lookup<T: DeserializeOwned>(
    body: &[u8],
    path: &str,
) -> Result<Option<T>, serde_json::Error> {
    // UTF-8 first: serde_json checks it in the strings it reads, not in
    // those it skips (found by fuzz/fuzz_targets/sdk_json.rs).
    let text = std::str::from_utf8(body)
        .map_err(|e| serde::de::Error::custom(format!("not UTF-8 at byte {}", e.valid_up_to())))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let found = Walk {
        whole: Some(path),
        rest: path,
        found: PhantomData,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(found)
}

/// Looks for `rest` (a dotted path) in the value being read; at the top
/// level a key equal to `whole` is looked for too, and wins.
struct Walk<'p, T> {
    whole: Option<&'p str>,
    rest: &'p str,
    found: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for Walk<'_, T> {
    type Value = Option<T>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Option<T>, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for Walk<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    // Only an object has fields: every other value holds none.
    fn visit_bool<E>(self, _: bool) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Option<T>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let (head, tail) = match self.rest.split_once('.') {
            Some((head, tail)) => (head, Some(tail)),
            None => (self.rest, None),
        };
        let (mut by_whole, mut by_path) = (None, None);
        // Every entry is read (a later duplicate key wins, as in a parsed
        // body); only the ones on the path are kept.
        while let Some(key) = map.next_key_seed(Key {
            whole: self.whole,
            head,
        })? {
            match key {
                Which::Whole => by_whole = Some(map.next_value::<T>()?),
                Which::Head => {
                    by_path = match tail {
                        None => Some(map.next_value::<T>()?),
                        Some(rest) => map.next_value_seed(Walk {
                            whole: None,
                            rest,
                            found: PhantomData,
                        })?,
                    }
                }
                Which::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(by_whole.or(by_path))
    }
}

/// Which key was read: the whole path, the path's next segment, or another.
enum Which {
    Whole,
    Head,
    Other,
}

/// Reads a key and compares it, without keeping it.
struct Key<'p> {
    whole: Option<&'p str>,
    head: &'p str,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Which;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Which, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Which;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Which, E> {
        Ok(if self.whole == Some(key) && key.contains('.') {
            Which::Whole
        } else if key == self.head {
            Which::Head
        } else {
            Which::Other
        })
    }
}

#[cfg(test)]
mod tests {
    use super::lookup;
    use serde_json::value::RawValue;
    use serde_json::{json, Value};

    /// A body that is not UTF-8 is not JSON, in a field skipped too.
    #[test]
    fn a_body_that_is_not_utf8_is_refused() {
        let body = b"{\"prail\":\"\x99\",\"zk\":0}";
        assert!(lookup::<Value>(body, "zk").is_err());
        assert!(lookup::<Value>(body, "other").is_err());
        assert!(crate::set_field(body, "zk", &json!(1)).is_err());
        assert!(crate::edit_field(body, "zk", |_| true).is_err());
    }

    /// As text, any value is found as written: `1e999`, which is JSON but
    /// no `Value`, too.
    #[test]
    fn a_field_is_found_as_text_whatever_its_value() {
        let body = br#"{"amount": 1e999, "props": {"n": 1.50, "gone": null}}"#;
        let text = |path| {
            lookup::<Box<RawValue>>(body, path)
                .unwrap()
                .map(|raw| raw.get().to_owned())
        };
        assert_eq!(text("amount").as_deref(), Some("1e999"));
        assert_eq!(text("props.n").as_deref(), Some("1.50"));
        assert_eq!(text("props.gone").as_deref(), Some("null"));
        assert_eq!(text("props.missing"), None);
        assert!(lookup::<Value>(body, "amount").is_err());
    }

    /// `lookup` on the text agrees with `field` on the parsed body.
    #[test]
    fn finds_what_field_finds_on_a_parsed_body() {
        let body = json!({
            "id": "a",
            "props": {"email": "ann@example.com", "n": [1, {"x": 2}], "deep": {"er": null}},
            "props.email": "top-level wins",
            "list": [{"a": 1}],
            "s": "text",
            "esc\"aped": 1,
        });
        let text = serde_json::to_vec(&body).unwrap();
        for path in [
            "id",
            "props",
            "props.email",
            "props.n",
            "props.deep.er",
            "props.deep.missing",
            "props.n.x",
            "list.a",
            "s.x",
            "esc\"aped",
            "missing",
            "",
        ] {
            assert_eq!(
                lookup(&text, path).unwrap(),
                crate::field(&body, path).cloned(),
                "{path}"
            );
        }
        assert_eq!(
            lookup(br#"{"props":{"email":"x"}}"#, "props.email").unwrap(),
            Some(json!("x"))
        );
    }

    #[test]
    fn a_later_duplicate_key_wins_and_bad_json_is_an_error() {
        assert_eq!(
            lookup(br#"{"a":1,"a":2}"#, "a").unwrap(),
            Some(Value::from(2))
        );
        assert!(lookup::<Value>(br#"{"a":1,"b":[}"#, "a").is_err());
        assert!(lookup::<Value>(br#"{"a":1} trailing"#, "a").is_err());
        assert_eq!(lookup::<Value>(b"[1,2]", "a").unwrap(), None);
    }
}
