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
                    .is_some_and(is_bot_agent);
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

/// Whether `agent` contains one of [`BOT_MARKERS`], ASCII case ignored.
///
/// One pass over the agent, trying at each byte only the markers that start
/// with it. Lowercasing the agent and calling `str::contains` per marker
/// costs more in a guest than the rest of the filter (perf of a node with
/// `WEIR_FILTER_PERFMAP`: a substring searcher set up nine times an event;
/// Wasm has none of the SIMD search `contains` uses natively).
fn is_bot_agent(agent: &str) -> bool {
    let agent = agent.as_bytes();
    (0..agent.len()).any(|at| {
        let first = agent[at].to_ascii_lowercase();
        BOT_MARKERS.iter().any(|marker| {
            let marker = marker.as_bytes();
            marker.first() == Some(&first)
                && agent
                    .get(at..at + marker.len())
                    .is_some_and(|found| found.eq_ignore_ascii_case(marker))
        })
    })
}

export_filter!(TagBots);

#[cfg(test)]
mod tests {
    use super::{is_bot_agent, BOT_MARKERS};

    /// The same answer as lowercasing the agent and looking for each marker.
    #[test]
    fn finds_a_marker_anywhere_in_any_case() {
        let agents = [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15",
            "curl/8.5.0",
            "CURL/8",
            "curl",
            "Wget/1.21",
            "python-requests/2.31",
            "Python-Requests",
            "python-request",
            "Mozilla/5.0 HeadlessChrome/120.0",
            "PhantomJS/2.1.1",
            "Yahoo! Slurp",
            "Baiduspider",
            "ROBOT",
            "b",
            "",
            "crawle",
            "Ünïcödé bot ☃",
            "☃spider",
            "spide☃r",
        ];
        for agent in agents {
            let lowered = agent.to_ascii_lowercase();
            let expected = BOT_MARKERS.iter().any(|m| lowered.contains(m));
            assert_eq!(is_bot_agent(agent), expected, "{agent:?}");
        }
        assert!(is_bot_agent("x Crawler"));
        assert!(!is_bot_agent(
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"
        ));
    }
}
