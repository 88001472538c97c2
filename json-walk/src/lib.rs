//! Skipping over JSON text that has been checked, where it lies.
//!
//! The node checks every body before anything walks it this way: a
//! client's upload when it is decoded (sonic-rs), a filter's replacement
//! before the next filter or the record gets it. Whoever then looks for a
//! few fields need not check again what it skips: a string is skipped from
//! quote or backslash to the next, a nested value by counting its own kind
//! of bracket outside strings (in JSON each kind is balanced there), a
//! number or literal up to its delimiter. Two walkers stand on these
//! steps: the node's split (`weir-core`, `decode/entries.rs`) and the
//! guest SDK's field readers (`weir-guest-sdk`, `walk.rs`).
//!
//! What is checked comes free: every escape a string holds (a bad escape is
//! where JSON readers disagree). Text that is not JSON is never a panic or
//! an endless loop: a step ends with [`NotJson`] where it noticed, or, past
//! what it checks, reads on and finds what it finds.
//!
//! The small steps (whitespace, strings, the byte search) are `#[inline]`:
//! a filter built without LTO would otherwise call across crates for each
//! string (criterion: tag-bots 30% slower so). `value_end` and
//! `nested_end` are inlined natively only: in the node, calls cost split
//! 1.1% more instructions per request (`benches/instructions.sh`), while
//! in a guest, inlining them cost the walks 3–6% more fuel (`weir filter
//! test --fuel`, the example filters on 50 events).

/// Text that is not JSON where a step noticed it: the byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotJson(pub usize);

/// The first byte at or after `at` that is not JSON whitespace.
#[inline]
pub fn skip_ws(text: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = text.get(at) {
        at += 1;
    }
    at
}

/// Where the value starting at `at` ends.
#[cfg_attr(not(target_arch = "wasm32"), inline)]
pub fn value_end(text: &[u8], at: usize) -> Result<usize, NotJson> {
    match text.get(at) {
        Some(b'"') => string_end(text, at),
        Some(b'{' | b'[') => nested_end(text, at),
        Some(_) => {
            // A number or a literal: up to the next delimiter.
            let len = text[at..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(text.len() - at);
            match len {
                0 => Err(NotJson(at)),
                _ => Ok(at + len),
            }
        }
        None => Err(NotJson(at)),
    }
}

/// Where the string whose opening quote is at `open` ends (just past its
/// closing quote). Its escapes are checked: JSON has eight one-letter ones
/// and `\u` with four hex digits.
#[inline]
pub fn string_end(text: &[u8], open: usize) -> Result<usize, NotJson> {
    let mut at = open + 1;
    loop {
        at = find2(text, at, b'"', b'\\').ok_or(NotJson(text.len()))?;
        if text[at] == b'"' {
            return Ok(at + 1);
        }
        at += match text.get(at + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => 2,
            Some(b'u')
                if text
                    .get(at + 2..at + 6)
                    .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) =>
            {
                6
            }
            _ => return Err(NotJson(at)),
        };
    }
}

/// Where the object or array opening at `open` ends (just past its closing
/// bracket). Braces and brackets are each balanced outside strings, so
/// counting the opening kind alone finds its end.
#[cfg_attr(not(target_arch = "wasm32"), inline)]
pub fn nested_end(text: &[u8], open: usize) -> Result<usize, NotJson> {
    let (opening, closing) = match text.get(open) {
        Some(b'{') => (b'{', b'}'),
        Some(b'[') => (b'[', b']'),
        _ => return Err(NotJson(open)),
    };
    let mut depth = 0usize;
    let mut at = open;
    loop {
        at = find3(text, at, b'"', opening, closing).ok_or(NotJson(text.len()))?;
        match text[at] {
            b'"' => {
                at = string_end(text, at)?;
                continue;
            }
            b if b == opening => depth += 1,
            // The first bracket found is the opening one: never below 0.
            _ => {
                depth = depth.checked_sub(1).ok_or(NotJson(at))?;
                if depth == 0 {
                    return Ok(at + 1);
                }
            }
        }
        at += 1;
    }
}

/// The first byte at or after `at` that is `a` or `b`: memchr natively
/// (SIMD), and eight bytes at a time in Wasm, where memchr's word-at-a-time
/// search measured slower.
#[cfg(not(target_arch = "wasm32"))]
#[inline]
fn find2(text: &[u8], at: usize, a: u8, b: u8) -> Option<usize> {
    Some(at + memchr::memchr2(a, b, text.get(at..)?)?)
}

/// As [`find2`], for three bytes.
#[cfg(not(target_arch = "wasm32"))]
#[inline]
fn find3(text: &[u8], at: usize, a: u8, b: u8, c: u8) -> Option<usize> {
    Some(at + memchr::memchr3(a, b, c, text.get(at..)?)?)
}

#[cfg(target_arch = "wasm32")]
#[inline]
fn find2(text: &[u8], at: usize, a: u8, b: u8) -> Option<usize> {
    // Three patterns, the first twice: measured faster in a guest than two
    // (criterion, redact_pii_fields/50: 270–277 µs against 301–306).
    find_any(text, at, [a, b, a])
}

#[cfg(target_arch = "wasm32")]
#[inline]
fn find3(text: &[u8], at: usize, a: u8, b: u8, c: u8) -> Option<usize> {
    find_any(text, at, [a, b, c])
}

/// The first byte at or after `at` that is one of `wanted`, eight bytes at
/// a time: a guest has no SIMD search, and every turn of a loop costs it
/// fuel.
#[cfg(any(target_arch = "wasm32", test))]
#[inline]
fn find_any(text: &[u8], mut at: usize, wanted: [u8; 3]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    let splat = wanted.map(|b| ONES * u64::from(b));
    while let Some(chunk) = text.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().ok()?);
        // A zero byte of `word ^ splat` is a wanted byte. The lowest flag
        // is exact (a borrow only flags bytes above a true zero).
        let found = splat
            .iter()
            .map(|s| {
                let x = word ^ s;
                x.wrapping_sub(ONES) & !x & HIGHS
            })
            .fold(0, |a, b| a | b);
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    Some(at + text.get(at..)?.iter().position(|b| wanted.contains(b))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_end_where_a_parser_ends_them() {
        for (text, end) in [
            (r#""a\"b\\" ,"#, 8),
            (r#""\u00e9\n""#, 10),
            (r#"{"a":"}{","b":[{}]} x"#, 19),
            (r#"[1,["]"],{"c":[]}],"#, 18),
            ("-1.5e3,", 6),
            ("true}", 4),
            ("null", 4),
        ] {
            assert_eq!(value_end(text.as_bytes(), 0), Ok(end), "{text}");
        }
        assert_eq!(skip_ws(b" \t\r\n x", 0), 5);
    }

    /// Text that is not JSON ends a step with an error where it showed,
    /// bad escapes included; never a panic or a loop.
    #[test]
    fn text_that_is_not_json_is_an_error() {
        for text in [
            "",
            "\"",
            "\"abc",
            "\"\\",
            "\"\\q\"",
            "\"\\u12\"",
            "\"\\uZZZZ\"",
            "{",
            "[1,",
            "{\"a\":\"}",
            ",",
            "]",
            "}",
        ] {
            assert!(value_end(text.as_bytes(), 0).is_err(), "{text:?}");
        }
        assert_eq!(string_end(br#""a\x""#, 0), Err(NotJson(2)));
        assert_eq!(nested_end(b"x", 0), Err(NotJson(0)));
    }

    /// The word-at-a-time search a guest uses finds what a plain search
    /// finds, at every offset and alignment.
    #[test]
    fn the_word_at_a_time_search_finds_the_first_wanted_byte() {
        let text = br#"abcdefgh"ijklmnopqrstu\vwxyz{0123456789}[abcdefghijklmnopqrstuvwxyz]"#;
        for wanted in [[b'"', b'\\', b'"'], [b'"', b'{', b'}'], [b'"', b'[', b']']] {
            for at in 0..=text.len() {
                let plain = text[at..]
                    .iter()
                    .position(|b| wanted.contains(b))
                    .map(|n| at + n);
                assert_eq!(find_any(text, at, wanted), plain, "{at} {wanted:?}");
            }
        }
        // Bytes with the high bit set next to a wanted one.
        let text = "ééé\"é".as_bytes();
        assert_eq!(find_any(text, 0, [b'"', b'\\', b'"']), Some(6));
    }
}
