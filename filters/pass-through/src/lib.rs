//! `pass-through`: keeps every event. The smallest complete filter, and the
//! one the benchmarks use to measure what the host itself costs.

use weir_guest_sdk::{export_filter, Event, Filter, Verdict};

struct PassThrough;

impl Filter for PassThrough {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(PassThrough)
    }

    fn filter(&self, events: &[Event]) -> Vec<Verdict> {
        events.iter().map(|_| Verdict::Keep).collect()
    }
}

export_filter!(PassThrough);
