//! `sample`: keeps a fraction of events, per category if configured,
//! deterministically by backend id: the same backend id always gets the
//! same decision (`weir filter test` makes each event's from its id, so its
//! runs repeat). A node assigns backend ids on arrival, so a client's retry
//! of an event that was not accepted is a new draw, at the same rate.
//!
//! Config: `{"rate": 0.25}` or `{"rate": 1.0, "categories": {"PERF": 0.1}}`.

use std::collections::HashMap;

use weir_guest_sdk::{config_json, export_filter, Event, Filter, Verdict};

struct Sample {
    rate: f64,
    categories: HashMap<String, f64>,
}

impl Filter for Sample {
    fn init(config: &str) -> Result<Self, String> {
        let config = config_json(config, &["rate", "categories"])?;
        let rate = |v: &serde_json::Value, at: &str| match v.as_f64() {
            Some(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => Err(format!("config: {at} must be a number from 0 to 1")),
        };
        let categories = match config.get("categories") {
            None => HashMap::new(),
            Some(serde_json::Value::Object(map)) => map
                .iter()
                .map(|(k, v)| Ok((k.clone(), rate(v, &format!("categories.{k}"))?)))
                .collect::<Result<_, String>>()?,
            Some(_) => return Err("config: categories must be an object of rates".into()),
        };
        Ok(Sample {
            rate: rate(
                config.get("rate").unwrap_or(&serde_json::Value::from(1.0)),
                "rate",
            )?,
            categories,
        })
    }

    fn filter(&self, events: &[Event]) -> Vec<Verdict> {
        events
            .iter()
            .map(|e| {
                let rate = self
                    .categories
                    .get(e.category())
                    .copied()
                    .unwrap_or(self.rate);
                if fraction(e.backend_id_bits()) < rate {
                    Verdict::Keep
                } else {
                    weir_guest_sdk::count("sampled_out", 1);
                    Verdict::Drop(format!("sampled out (rate {rate})"))
                }
            })
            .collect()
    }
}

/// FNV-1a of the backend id's bytes, as a fraction in [0, 1).
fn fraction(id: u128) -> f64 {
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in id.to_be_bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

export_filter!(Sample);
