//! Syncs that failed, remembered so that every appender of a record they
//! covered is told, however late it asks.

use std::io;

/// Sequence ranges `[lo, hi)` whose sync failed, with the error: their
/// appenders get it even after later syncs succeed. Consecutive failures
/// merge, so an outage keeps this short.
#[derive(Debug, Default)]
pub(super) struct Failures {
    ranges: Vec<(u64, u64, io::ErrorKind, String)>,
}

impl Failures {
    pub(super) fn contains(&self, seq: u64) -> bool {
        self.find(seq).is_some()
    }

    pub(super) fn find(&self, seq: u64) -> Option<&(u64, u64, io::ErrorKind, String)> {
        self.ranges
            .iter()
            .find(|(lo, hi, ..)| (*lo..*hi).contains(&seq))
    }

    pub(super) fn add(&mut self, lo: u64, hi: u64, error: &io::Error) {
        if lo >= hi {
            return;
        }
        match self.ranges.last_mut() {
            Some(last) if last.1 == lo && last.2 == error.kind() => last.1 = hi,
            _ => self.ranges.push((lo, hi, error.kind(), error.to_string())),
        }
    }
}
