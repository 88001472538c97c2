//! The scanner's steps (bytes looked at, loop turns), counted with the
//! `steps` feature for the fuzz target that checks the scanner's time is
//! linear in its input (fuzz/fuzz_targets/redact_pii.rs): a step budget,
//! not a clock. Without the feature, `step` is nothing.

#[cfg(feature = "steps")]
thread_local! {
    static STEPS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts `n` steps.
#[inline(always)]
pub fn step(n: usize) {
    #[cfg(feature = "steps")]
    STEPS.with(|steps| steps.set(steps.get().saturating_add(n)));
    #[cfg(not(feature = "steps"))]
    let _ = n;
}

/// The steps counted on this thread since the last call (0 without the feature).
pub fn take() -> usize {
    #[cfg(feature = "steps")]
    return STEPS.with(|steps| steps.replace(0));
    #[cfg(not(feature = "steps"))]
    0
}

/// The first byte of `bytes` that `matches`, counting the bytes looked at.
#[inline]
pub fn find(bytes: &[u8], matches: impl Fn(u8) -> bool) -> Option<usize> {
    let found = bytes.iter().position(|&b| matches(b));
    step(found.map_or(bytes.len(), |n| n + 1));
    found
}
