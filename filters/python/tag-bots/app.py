"""tag-bots, in Python: finds events whose user agent looks like a bot,
and drops them or tags them with "is_bot": true. The same config and
verdicts as the Rust filter (filters/tag-bots).

Config: {"field": "user_agent", "action": "drop"} (or "tag").
"""

import weir_filter as weir

BOT_MARKERS = (
    "bot",
    "crawler",
    "spider",
    "slurp",
    "curl/",
    "wget/",
    "python-requests",
    "headlesschrome",
    "phantomjs",
)


class TagBots(weir.Filter):
    def __init__(self, config):
        config = weir.config_json(config, ["field", "action"])
        self.field = config.get("field", "user_agent")
        action = config.get("action", "tag")
        if not isinstance(self.field, str):
            raise ValueError("config: field must be a string")
        if action not in ("drop", "tag"):
            raise ValueError(f"config: action '{action}' is not drop or tag")
        self.drop = action == "drop"

    def filter(self, events):
        return [self.verdict(event) for event in events]

    def verdict(self, event):
        try:
            agent = event.get(self.field)
        except ValueError:
            return weir.keep()
        if not isinstance(agent, str) or not any(m in agent.lower() for m in BOT_MARKERS):
            return weir.keep()
        weir.count("bots", 1)
        if self.drop:
            return weir.drop("bot user agent")
        if not isinstance(event.json(), dict):
            return weir.keep()
        return weir.replace(event.with_field("is_bot", True))


WitWorld = weir.export(TagBots)
