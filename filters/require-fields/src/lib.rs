//! `require-fields`: drops events missing any of the configured fields
//! (schema enforcement at the edge). A field is a top-level key or a dotted
//! path; `null` counts as missing.
//!
//! Config: `{"fields": ["user", "props.screen"]}`.

use weir_guest_sdk::{config_json, export_filter, Event, Filter, Verdict};

struct RequireFields {
    fields: Vec<String>,
}

impl Filter for RequireFields {
    fn init(config: &str) -> Result<Self, String> {
        let config = config_json(config, &["fields"])?;
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
        if fields.is_empty() {
            return Err("config: fields is empty: name at least one required field".into());
        }
        Ok(RequireFields { fields })
    }

    fn filter(&self, events: &[Event]) -> Vec<Verdict> {
        events
            .iter()
            .map(|e| {
                // Each field is found in the text (`Event::get_text`): the
                // body is never built, and any value counts, `1e999` too.
                for f in &self.fields {
                    match e.get_text(f) {
                        Err(_) => return Verdict::Drop("body is not JSON".into()),
                        Ok(Some(text)) if text.get() != "null" => {}
                        Ok(_) => {
                            weir_guest_sdk::count("missing_field", 1);
                            return Verdict::Drop(format!("missing required field {f}"));
                        }
                    }
                }
                Verdict::Keep
            })
            .collect()
    }
}

export_filter!(RequireFields);
