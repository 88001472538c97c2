//! `tag-bots`: finds events whose user agent looks like a bot, and drops
//! them or tags them with `"is_bot": true`.
//!
//! Config: `{"field": "user_agent", "action": "drop"}` (or `"tag"`).

use weir_guest_sdk::{config_json, export_filter, Event, Filter, Verdict};

const BOT_MARKERS: &[&str] = &[
    "bot",
    "crawler",
    "spider",
    "slurp",
    "curl/",
    "wget/",
    "python-requests",
    "headlesschrome",
    "phantomjs",
];

struct TagBots {
    field: String,
    drop: bool,
}

impl Filter for TagBots {
    fn init(config: &str) -> Result<Self, String> {
        let config = config_json(config, &["field", "action"])?;
        let text = |key: &str, default: &'static str| match config.get(key) {
            None => Ok(default),
            Some(value) => value
                .as_str()
                .ok_or(format!("config: {key} must be a string")),
        };
        let field = text("field", "user_agent")?.to_owned();
        let drop = match text("action", "tag")? {
            "drop" => true,
            "tag" => false,
            other => return Err(format!("config: action '{other}' is not drop or tag")),
        };
        Ok(TagBots { field, drop })
    }

    fn filter(&self, events: &[Event]) -> Vec<Verdict> {
        events
            .iter()
            .map(|e| {
                // Only the user agent is read; the whole body is parsed
                // only to tag a bot's event.
                let is_bot = e
                    .get(&self.field)
                    .ok()
                    .flatten()
                    .as_ref()
                    .and_then(|ua| ua.as_str())
                    .map(|ua| ua.to_ascii_lowercase())
                    .is_some_and(|ua| BOT_MARKERS.iter().any(|m| ua.contains(m)));
                if !is_bot {
                    return Verdict::Keep;
                }
                weir_guest_sdk::count("bots", 1);
                if self.drop {
                    return Verdict::Drop("bot user agent".into());
                }
                // The tag is spliced in: the rest of the body is not rebuilt.
                match e.with_field("is_bot", &true.into()) {
                    Ok(body) => Verdict::Replace(body),
                    // Not a JSON object: nothing to tag.
                    Err(_) => Verdict::Keep,
                }
            })
            .collect()
    }
}

export_filter!(TagBots);
