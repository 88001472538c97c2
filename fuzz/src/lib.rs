//! What the fuzz targets share: reference readings of JSON to compare the
//! node's parsers with (serde_json's), and an allocator that counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Whether serde_json takes `text` as one JSON value, as a filter reading
/// it would: UTF-8, the grammar, and every string decodable (no lone
/// surrogate escape). Numbers are checked for syntax only: one past f64's
/// range (`1e999`) is JSON, as it is for the node. (serde_json's
/// `IgnoredAny` alone checks neither UTF-8 inside strings nor surrogates.)
pub fn is_json(text: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(text) else {
        return false;
    };
    serde_json::from_str::<IgnoredAny>(text).is_ok()
        && strings(text.as_bytes()).all(|s| serde_json::from_slice::<String>(s).is_ok())
}

/// Whether `text` is JSON by the grammar alone (RFC 8259): UTF-8 and the
/// syntax, with any `\u` escape, a lone surrogate too (which [`is_json`]
/// refuses, as serde_json does when it decodes the string).
pub fn is_json_grammar(text: &[u8]) -> bool {
    std::str::from_utf8(text).is_ok_and(|text| serde_json::from_str::<IgnoredAny>(text).is_ok())
}

/// The string literals of a text serde_json has read, quotes included.
fn strings(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let start = at + text.get(at..)?.iter().position(|&b| b == b'"')?;
        let mut end = start + 1;
        while end < text.len() && text[end] != b'"' {
            end += if text[end] == b'\\' { 2 } else { 1 };
        }
        at = end + 1;
        text.get(start..=end)
    })
}

/// How deeply a JSON text nests (`{}` and `[]` count one level each; a
/// scalar none); `None` when serde_json does not take it as JSON (or it
/// nests past serde_json's own limit of 128). Counted on text serde_json
/// has read, where brackets outside strings are structure.
pub fn depth(text: &[u8]) -> Option<usize> {
    if !is_json(text) {
        return None;
    }
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for &b in text {
        match (in_string, b) {
            (true, _) if escaped => escaped = false,
            (true, b'\\') => escaped = true,
            (true, b'"') => in_string = false,
            (true, _) => {}
            (false, b'"') => in_string = true,
            (false, b'{' | b'[') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, b'}' | b']') => depth -= 1,
            (false, _) => {}
        }
    }
    Some(deepest)
}

/// Whether some object in `text` repeats a key: serde_json's `Value` keeps
/// only the last copy, so it cannot stand for such a text.
pub fn repeats_a_key(text: &[u8]) -> bool {
    let mut de = serde_json::Deserializer::from_slice(text);
    de.deserialize_any(Repeats).unwrap_or(true)
}

struct Repeats;

impl<'de> Visitor<'de> for Repeats {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut any = false;
        while let Some(r) = seq.next_element_seed(RepeatsSeed)? {
            any |= r;
        }
        Ok(any)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut keys = std::collections::HashSet::new();
        let mut any = false;
        while let Some(key) = map.next_key::<String>()? {
            any |= !keys.insert(key);
            any |= map.next_value_seed(RepeatsSeed)?;
        }
        Ok(any)
    }
}

struct RepeatsSeed;

impl<'de> serde::de::DeserializeSeed<'de> for RepeatsSeed {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<bool, D::Error> {
        de.deserialize_any(Repeats)
    }
}

/// The system allocator, counting the bytes live and the most live at once
/// since the last [`Counting::reset`]: a target declares it its
/// `#[global_allocator]` to bound what a parser allocates.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

impl Counting {
    /// Starts a measurement: the peak becomes what is live now.
    pub fn reset() {
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// The most bytes live at once since [`Counting::reset`], above what
    /// was live then (`base`, from [`Counting::live`]).
    pub fn peak_above(base: usize) -> usize {
        PEAK.load(Ordering::Relaxed).saturating_sub(base)
    }

    /// Bytes live now.
    pub fn live() -> usize {
        LIVE.load(Ordering::Relaxed)
    }

    fn grew(size: usize) {
        let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
        PEAK.fetch_max(live, Ordering::Relaxed);
    }
}

// SAFETY: every call goes to the system allocator unchanged; only counts
// are kept beside.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Both blocks may be live for a moment: count the new one first.
            Self::grew(new_size);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}
