//! `require-fields`: drops events missing any of the configured fields
//! (schema enforcement at the edge). A field is a top-level key or a dotted
//! path; `null` counts as missing.
//!
//! Config: `{"fields": ["user", "props.screen"]}`.

use weir_guest_sdk::{config_json, export_filter, field, Event, Filter, Verdict};

struct RequireFields {
    fields: Vec<String>,
}

impl Filter for RequireFields {
    fn init(config: &str) -> Result<Self, String> {
        let config = config_json(config)?;
        let fields = config
            .get("fields")
            .and_then(|f| f.as_array())
            .ok_or("config: fields must be a list of field names")?
            .iter()
            .map(|f| {
                f.as_str()
                    .map(str::to_owned)
                    .ok_or("config: every field must be a string")
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RequireFields { fields })
    }

    fn filter(&self, events: &[Event]) -> Vec<Verdict> {
        events
            .iter()
            .map(|e| {
                let Ok(body) = e.json() else {
                    return Verdict::Drop("body is not JSON".into());
                };
                match self
                    .fields
                    .iter()
                    .find(|f| field(&body, f).is_none_or(|v| v.is_null()))
                {
                    Some(missing) => {
                        weir_guest_sdk::count("missing_field", 1);
                        Verdict::Drop(format!("missing required field {missing}"))
                    }
                    None => Verdict::Keep,
                }
            })
            .collect()
    }
}

export_filter!(RequireFields);
