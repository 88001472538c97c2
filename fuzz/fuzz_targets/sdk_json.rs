//! The guest SDK's JSON helpers, differential against serde_json: a field
//! read (`lookup`), set (`set_field`) or edited (`edit_field`) in the
//! body's text is the field `field`/`field_mut` finds, sets or edits in a
//! serde_json `Value` of the same body, wherever a `Value` can stand for
//! the body (no repeated key, no number past f64's range). Never a panic;
//! what the helpers write is JSON. The `trusted` helpers, which skip what
//! the node has checked, read, set and edit as the checking ones do on
//! JSON text, and never panic on other text.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use weir_fuzz::{is_json, is_json_grammar, repeats_a_key};
use weir_guest_sdk::{edit_field, edit_field_text, field, lookup, set_field, trusted};

#[derive(Arbitrary, Debug)]
enum New {
    Null,
    Flag(bool),
    Number(i64),
    Text(String),
    Nested(String, String),
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    body: &'a [u8],
    path: &'a str,
    new: New,
}

fuzz_target!(|input: Input| {
    let new = match input.new {
        New::Null => Value::Null,
        New::Flag(b) => json!(b),
        New::Number(n) => json!(n),
        New::Text(s) => json!(s),
        New::Nested(k, v) => json!({ k: [v] }),
    };
    let (body, path) = (input.body, input.path);
    let read = lookup::<Value>(body, path);
    let set = set_field(body, path, &new);
    let masked = json!("masked");
    let edited = edit_field(body, path, |value| {
        *value = masked.clone();
        true
    });
    // The trusting helpers: on any text, no panic; on JSON, the same
    // answers as the checking ones, byte for byte, where those have one
    // (serde_json refuses to step into a number past f64's range, `1e999`,
    // which is JSON, and the node takes it: the walk skips it).
    let wrap = |text: &str| Ok(Some(format!("[{text}]").into_bytes()));
    let trusted_read = trusted::get_text(body, path);
    let trusted_set = trusted::set_field(body, path, &new);
    let trusted_edited = trusted::edit_field_text(body, path, wrap);
    if is_json(body) {
        if let Ok(checked) = lookup::<Box<RawValue>>(body, path) {
            let checked = checked.map(|raw| raw.get().to_owned());
            let trusted = trusted_read.ok().map(|text| text.map(str::to_owned));
            assert_eq!(trusted, Some(checked), "trusted read of {path:?}");
        }
        if let Ok(checked) = &set {
            assert_eq!(
                trusted_set.ok().as_ref(),
                Some(checked),
                "trusted set of {path:?}"
            );
        }
        if let Ok(checked) = edit_field_text(body, path, wrap) {
            assert_eq!(
                trusted_edited.ok(),
                Some(checked),
                "trusted edit of {path:?}"
            );
        }
    }
    // What a helper takes is JSON by the grammar (a lone surrogate escape in
    // a string it skips is grammar; the node never hands one to a filter),
    // and what it writes is JSON as strict as what it was given.
    if read.is_ok() || set.is_ok() || edited.is_ok() {
        assert!(is_json_grammar(body), "a helper read text that is not JSON");
    }
    let strict = is_json(body);
    let written = set
        .as_ref()
        .ok()
        .into_iter()
        .chain(edited.as_ref().ok().and_then(Option::as_ref));
    for out in written {
        let text = String::from_utf8_lossy(out);
        assert!(is_json_grammar(out), "wrote {text}");
        assert!(!strict || is_json(out), "wrote {text}");
    }
    // serde_json (with `raw_value`, as the SDK has it) reads an object whose
    // only key is this token as a RawValue, so no `Value` holds one: a field
    // set under that name has no `Value` to compare with (found by this
    // target; the text-level helpers are not affected).
    if path
        .split('.')
        .any(|key| key == "$serde_json::private::RawValue")
    {
        return;
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    if repeats_a_key(body) {
        return;
    }
    assert_eq!(
        read.ok(),
        Some(field(&value, path).cloned()),
        "lookup of {path:?}"
    );

    let mut expected = value.clone();
    match (set_reference(&mut expected, path, &new, true), set) {
        (Ok(()), Ok(out)) => assert_eq!(parsed(&out), expected, "set {path:?}"),
        (Err(()), Err(_)) => {}
        (reference, sdk) => panic!("set {path:?}: reference {reference:?}, SDK {sdk:?}"),
    }

    let mut expected = value.clone();
    match (value.is_object(), edited) {
        (true, Ok(out)) => {
            let changed = edit_reference(&mut expected, path, &masked, true);
            match out {
                Some(out) => assert_eq!(parsed(&out), expected, "edit {path:?}"),
                None => assert!(!changed, "edit {path:?}: the SDK found nothing"),
            }
        }
        (false, Err(_)) => {}
        (object, sdk) => panic!("edit {path:?} of an object: {object}, SDK {sdk:?}"),
    }
});

fn parsed(text: &[u8]) -> Value {
    serde_json::from_slice(text).expect("the helper wrote JSON")
}

/// `set_field` on a `Value`: a top-level key equal to the whole path wins,
/// else the dotted path, adding the objects missing on it; an error where
/// the body or a value on the path is not an object.
fn set_reference(value: &mut Value, path: &str, new: &Value, top: bool) -> Result<(), ()> {
    let object = value.as_object_mut().ok_or(())?;
    if top && object.contains_key(path) {
        object.insert(path.to_owned(), new.clone());
        return Ok(());
    }
    let (head, tail) = match path.split_once('.') {
        Some((head, tail)) => (head, Some(tail)),
        None => (path, None),
    };
    match (object.get_mut(head), tail) {
        (Some(child), None) => *child = new.clone(),
        (Some(child), Some(tail)) => set_reference(child, tail, new, false)?,
        (None, tail) => {
            object.insert(head.to_owned(), nested(tail, new));
        }
    }
    Ok(())
}

fn nested(path: Option<&str>, new: &Value) -> Value {
    let Some(path) = path else {
        return new.clone();
    };
    let (head, tail) = match path.split_once('.') {
        Some((head, tail)) => (head, Some(tail)),
        None => (path, None),
    };
    Value::Object(Map::from_iter([(head.to_owned(), nested(tail, new))]))
}

/// `edit_field` on a `Value`: both a top-level key equal to the whole path
/// and the dotted path are edited; whether either was there.
fn edit_reference(value: &mut Value, path: &str, new: &Value, top: bool) -> bool {
    let Some(object) = value.as_object_mut() else {
        return false;
    };
    let mut changed = false;
    if top && object.contains_key(path) {
        object.insert(path.to_owned(), new.clone());
        if !path.contains('.') {
            return true;
        }
        changed = true;
    }
    let Some((head, tail)) = path.split_once('.') else {
        if let Some(child) = object.get_mut(path) {
            *child = new.clone();
            return true;
        }
        return changed;
    };
    if let Some(child) = object.get_mut(head) {
        changed |= edit_reference(child, tail, new, false);
    }
    changed
}
