//! Write a Weir filter: implement [`Filter`] and export it with [`export_filter!`].
//!
//! ```ignore
//! use weir_guest_sdk::{export_filter, Event, Filter, Verdict};
//!
//! struct DropDebug;
//!
//! impl Filter for DropDebug {
//!     fn init(_config: &str) -> Result<Self, String> {
//!         Ok(DropDebug)
//!     }
//!     fn filter(&self, events: &[Event]) -> Vec<Verdict> {
//!         events
//!             .iter()
//!             .map(|e| match e.get("debug") {
//!                 Ok(Some(serde_json::Value::Bool(true))) => Verdict::Drop("debug event".into()),
//!                 _ => Verdict::Keep,
//!             })
//!             .collect()
//!     }
//! }
//!
//! export_filter!(DropDebug);
//! ```
//!
//! Build it as a component with no WASI imports (see README.md):
//! `cargo build --release --target wasm32-unknown-unknown` with the
//! toolchain's `wasm-component-ld` as the linker.
//!
//! The contract is `proto/wit/filter.wit` (`weir:filter`); this crate wraps
//! the bindings wit-bindgen generates from it.

#[cfg(all(feature = "arena", target_arch = "wasm32"))]
mod arena;
mod lookup;
mod patch;
mod walk;

#[doc(hidden)]
// Generated: the canonical ABI passes the batch record as flat arguments.
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../proto/wit",
        world: "filter",
        pub_export_macro: true,
        export_macro_name: "export_world",
        default_bindings_module: "weir_guest_sdk::bindings",
    });
}

pub use bindings::weir::filter::types::{Geo, Verdict};
pub use lookup::lookup;
pub use patch::{edit_field, edit_field_text, set_field};
pub use serde_json;

use bindings::weir::filter::types::{Batch, Event as WitEvent, IpAddress, Span};

/// A filter: built by `init` from the tenant's config (once, when the node
/// loads it: each call starts from a snapshot of the result), then asked
/// for one verdict per event, in order.
///
/// `Send + Sync` because [`export_filter!`] keeps it in a `static` (a guest
/// is single-threaded, but Rust asks it of every static): hold caches in a
/// `Mutex` or `OnceLock`, not a `RefCell` or `Rc`. Nothing outlives a call
/// anyway: each call starts from the snapshot taken after `init`.
pub trait Filter: Sized + Send + Sync + 'static {
    /// Parses the tenant's `config` string (often JSON). An error refuses the filter.
    fn init(config: &str) -> Result<Self, String>;

    /// One verdict per event, in the same order.
    fn filter(&self, events: &[Event]) -> Vec<Verdict>;
}

/// One event of the batch, enriched by the gateway. (On the wire its text
/// lives in the batch's shared buffer; this view reads it from there.)
#[derive(Clone, Copy)]
pub struct Event<'a> {
    batch: &'a Batch,
    event: &'a WitEvent,
}

impl<'a> Event<'a> {
    /// Views every event of `batch`, in order.
    #[doc(hidden)]
    pub fn all(batch: &'a Batch) -> Vec<Event<'a>> {
        batch
            .events
            .iter()
            .map(|event| Event { batch, event })
            .collect()
    }

    fn bytes(&self, span: Span) -> &'a [u8] {
        let start = span.offset as usize;
        self.batch
            .bytes
            .get(start..start.saturating_add(span.len as usize))
            .unwrap_or_default()
    }

    /// The server-assigned UUIDv7, hyphenated (`0190a1b2-...`).
    pub fn backend_id(&self) -> String {
        let bits = self.backend_id_bits();
        let hex = format!("{bits:032x}");
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }

    /// The backend id's 128 bits. On a node it is a UUIDv7: the time in ms,
    /// then a counter within the millisecond, then (the low 32 bits) random;
    /// to draw from it, hash all 128 bits, as the `sample` filter does.
    pub fn backend_id_bits(&self) -> u128 {
        let (high, low) = self.event.backend_id;
        (u128::from(high) << 64) | u128::from(low)
    }

    /// The client's event id (unique within its batch).
    pub fn id(&self) -> &'a str {
        std::str::from_utf8(self.bytes(self.event.id)).unwrap_or_default()
    }

    /// The tenant (from the API key).
    pub fn tenant(&self) -> &'a str {
        &self.batch.tenant
    }

    /// `meta.category` of the upload.
    pub fn category(&self) -> &'a str {
        &self.batch.category
    }

    /// Upload time, milliseconds since the Unix epoch.
    pub fn received_at(&self) -> i64 {
        self.batch.received_at
    }

    /// The event's `ip` or the client address.
    pub fn client_ip(&self) -> Option<std::net::IpAddr> {
        Some(match self.event.client_ip? {
            IpAddress::Ipv4((a, b, c, d)) => std::net::Ipv4Addr::new(a, b, c, d).into(),
            IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => {
                std::net::Ipv6Addr::new(a, b, c, d, e, f, g, h).into()
            }
        })
    }

    /// Where the client IP is, when the node has a GeoIP database.
    pub fn geo(&self) -> Option<&'a Geo> {
        self.batch.geos.get(self.event.geo? as usize)
    }

    /// The event object as JSON (UTF-8): as the client sent it, or as an
    /// earlier filter of the chain replaced it.
    pub fn body(&self) -> &'a [u8] {
        self.bytes(self.event.body)
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(self.body())
    }

    /// One field of the body, by a top-level key or a dotted path
    /// (`"props.email"`, as [`field`] finds it), read without parsing the
    /// rest of the body into values: several times cheaper than
    /// [`Event::json`] for a filter that looks at a field or two (and the
    /// body is walked as [`trusted`] walks it: the node has checked it).
    /// `Ok(None)` when it is missing; `Err` when the field is no `Value`.
    pub fn get(&self, path: &str) -> Result<Option<serde_json::Value>, serde_json::Error> {
        trusted::get_text(self.body(), path)?
            .map(serde_json::from_str)
            .transpose()
    }

    /// As [`Event::get`], but the field's JSON text as the client wrote it:
    /// for a filter that only asks whether a field is there, or reads it
    /// itself. Any JSON value is text: a number past f64's range (`1e999`),
    /// which a node takes and [`Event::get`] cannot make a `Value` of, is
    /// no error here.
    pub fn get_text(
        &self,
        path: &str,
    ) -> Result<Option<Box<serde_json::value::RawValue>>, serde_json::Error> {
        trusted::get_text(self.body(), path)?
            .map(|text| serde_json::value::RawValue::from_string(text.to_owned()))
            .transpose()
    }

    /// The body with one field (found as [`Event::get`] finds it) set to
    /// `value`, added if missing, and the rest of the text unchanged: for a
    /// filter that tags or masks a field, the client's text (key order,
    /// numbers, escapes) survives, and it is cheaper than parsing the body
    /// with [`Event::json`] and writing it all back. Pass the result to
    /// `Verdict::Replace`; [`trusted::set_field`] sets more fields on it.
    pub fn with_field(
        &self,
        path: &str,
        value: &serde_json::Value,
    ) -> Result<Vec<u8>, serde_json::Error> {
        trusted::set_field(self.body(), path, value)
    }
}

/// Readers and editors of JSON text the node has checked: an event's body
/// (the node checks a client's events, and a filter's replacement before
/// the next filter gets it), or text these editors made from one with
/// edits that are JSON. They find fields as [`lookup()`], [`set_field`]
/// and [`edit_field_text`] do, without checking again the text they skip
/// (only its structure and its escapes): 11 to 17% less per call of the
/// example filters than those, which check any text (criterion,
/// `benches/benches/filters.rs`). On text that is not JSON they never panic; they
/// may find a field where a checking reader would have refused the text.
pub mod trusted {
    use super::patch::{self, Read};

    /// The JSON text of the field at `path` of `body`: a top-level key
    /// equal to the whole path, else the dotted path; of a repeated key,
    /// the last copy. `Ok(None)` when it is missing.
    pub fn get_text<'a>(body: &'a [u8], path: &str) -> Result<Option<&'a str>, serde_json::Error> {
        let Some(at) = crate::walk::find(body, path).map_err(crate::walk::not_json)? else {
            return Ok(None);
        };
        // (A value starts and ends at an ASCII byte: on characters.)
        let text = body.get(at).unwrap_or_default();
        std::str::from_utf8(text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }

    /// As [`crate::set_field`].
    pub fn set_field(
        body: &[u8],
        path: &str,
        value: &serde_json::Value,
    ) -> Result<Vec<u8>, serde_json::Error> {
        patch::set_field_read(body, path, value, Read::Trust)
    }

    /// As [`crate::edit_field_text`].
    pub fn edit_field_text(
        body: &[u8],
        path: &str,
        edit: impl FnMut(&str) -> Result<Option<Vec<u8>>, serde_json::Error>,
    ) -> Result<Option<Vec<u8>>, serde_json::Error> {
        patch::edit_field_text_read(body, path, edit, Read::Trust)
    }
}

impl Verdict {
    /// Replaces the event's body with this JSON value (it must be an object).
    pub fn replace_json(value: &serde_json::Value) -> Verdict {
        Verdict::Replace(serde_json::to_vec(value).unwrap_or_default())
    }
}

/// Log lines, tagged by the host with the filter, tenant and request. The
/// host keeps a line's first 1 KiB, and a call's first 100 lines.
pub mod log {
    use super::bindings::weir::filter::host::{self, Level};
    use super::prefix;

    /// Bytes of a line the host keeps: the rest is not handed over at all.
    const MAX_LINE: usize = 1024;

    pub fn trace(message: &str) {
        host::log(Level::Trace, prefix(message, MAX_LINE))
    }
    pub fn debug(message: &str) {
        host::log(Level::Debug, prefix(message, MAX_LINE))
    }
    pub fn info(message: &str) {
        host::log(Level::Info, prefix(message, MAX_LINE))
    }
    pub fn warn(message: &str) {
        host::log(Level::Warn, prefix(message, MAX_LINE))
    }
    pub fn error(message: &str) {
        host::log(Level::Error, prefix(message, MAX_LINE))
    }
}

/// Adds `delta` to the filter's counter `name` (its first 128 bytes, as
/// the host keeps them).
pub fn count(name: &str, delta: u64) {
    bindings::weir::filter::host::count(prefix(name, 128), delta)
}

/// At most the first `max` bytes of `text`, cut at a character boundary:
/// what the host keeps of a log line or a counter name, so that the rest
/// is never copied out of the guest (the host takes a bounded amount at
/// once, and a call that hands more fails).
fn prefix(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Parses a filter's config string as a JSON object whose keys are all in
/// `known` (an empty string is `{}`). A mistyped key or a config that is
/// not an object is an error that says so, so that a filter never runs
/// with a setting it silently ignored.
pub fn config_json(
    config: &str,
    known: &[&str],
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    if config.trim().is_empty() {
        return Ok(serde_json::Map::new());
    }
    let map = match serde_json::from_str(config).map_err(|e| format!("config: {e}"))? {
        serde_json::Value::Object(map) => map,
        other => return Err(format!("config: expected a JSON object, got {other}")),
    };
    if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!(
            "config: unknown key '{unknown}' (known: {})",
            known.join(", ")
        ));
    }
    Ok(map)
}

/// Finds a field of a JSON object by a top-level key or a dotted path
/// (`"props.email"`), as the example filters' configs name fields.
pub fn field_mut<'a>(
    body: &'a mut serde_json::Value,
    path: &str,
) -> Option<&'a mut serde_json::Value> {
    if body.get(path).is_some() {
        return body.get_mut(path);
    }
    path.split('.')
        .try_fold(body, |value, key| value.get_mut(key))
}

/// As [`field_mut`], read-only.
pub fn field<'a>(body: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    body.get(path)
        .or_else(|| path.split('.').try_fold(body, |value, key| value.get(key)))
}

/// Exports a [`Filter`] implementation as the component's `weir:filter` world.
#[macro_export]
macro_rules! export_filter {
    ($filter:ty) => {
        struct __WeirFilterExport;

        // One instance serves one batch call, from the state init left.
        static __WEIR_FILTER: ::std::sync::OnceLock<$filter> = ::std::sync::OnceLock::new();

        impl $crate::bindings::Guest for __WeirFilterExport {
            fn init(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                let filter = <$filter as $crate::Filter>::init(&config)?;
                __WEIR_FILTER
                    .set(filter)
                    .map_err(|_| ::std::string::String::from("init called twice"))
            }

            fn filter(batch: $crate::bindings::weir::filter::types::Batch) -> ::std::vec::Vec<$crate::Verdict> {
                match __WEIR_FILTER.get() {
                    Some(filter) => <$filter as $crate::Filter>::filter(filter, &$crate::Event::all(&batch)),
                    None => ::std::panic!("filter called before init"),
                }
            }
        }

        $crate::bindings::export_world!(__WeirFilterExport with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    use super::config_json;

    #[test]
    fn a_config_is_an_object_of_known_keys() {
        assert!(config_json("", &["rate"]).unwrap().is_empty());
        assert_eq!(
            config_json(r#"{"rate": 0.5}"#, &["rate"]).unwrap()["rate"],
            0.5
        );
        assert_eq!(
            config_json(r#"{"ratio": 0.5}"#, &["rate", "categories"]),
            Err("config: unknown key 'ratio' (known: rate, categories)".into())
        );
        assert_eq!(
            config_json("0.1", &["rate"]),
            Err("config: expected a JSON object, got 0.1".into())
        );
        assert!(config_json("{", &["rate"])
            .unwrap_err()
            .starts_with("config: "));
    }
}
