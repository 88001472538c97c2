//! redact-pii's scanner (the example filter's own code, built natively):
//! never a panic; JSON in, JSON out; what it leaves has nothing more to
//! mask (a second pass finds nothing); and its work is linear in the
//! body: a step budget (bytes looked at, counted with the filter's `steps`
//! feature) proportional to the body's length, not a clock.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use redact_pii::{redact_event, steps};
use weir_fuzz::is_json;

/// Steps allowed per byte of body: each pass (strings, e-mails, IPv4
/// addresses, phones) looks at a byte a bounded number of times. With
/// named fields, each field's text is scanned on its own: the budget is per
/// field (the fields are the operator's config, not the client's input).
const STEPS_PER_BYTE: usize = 24;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    body: &'a [u8],
    fields: Option<Vec<String>>,
}

fuzz_target!(|input: Input| {
    let (body, fields) = (input.body, input.fields.as_deref());
    steps::take();
    let redacted = redact_event(body, fields, "***");
    let taken = steps::take();
    let scans = 1 + fields.map_or(0, <[String]>::len);
    let budget = scans * (STEPS_PER_BYTE * body.len() + 64);
    assert!(
        taken <= budget,
        "{taken} steps for {} bytes (budget {budget})",
        body.len()
    );
    let Some((out, masked)) = redacted else {
        return;
    };
    assert!(masked > 0);
    if is_json(body) {
        assert!(
            is_json(&out),
            "JSON in, not out: {}",
            String::from_utf8_lossy(&out)
        );
    }
    if fields.is_none() {
        let again = redact_event(&out, None, "***");
        assert!(
            again.is_none(),
            "a second pass masked more: {} → {}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&again.map(|(o, _)| o).unwrap_or_default())
        );
    }
});
