// redact-pii, in TypeScript: masks e-mail addresses, phone numbers and
// IPv4 addresses inside string values, with the Rust filter's config,
// verdicts, replaced bodies and counter (filters/redact-pii).
//
// Config: {"fields": ["email", "props.phone"], "mask": "***"}; without
// `fields`, every string value of the event is scanned. A named field that
// holds an object or list is scanned all the way down. Only the masked
// strings are rewritten; the rest of the body stays as the client wrote it.

import { configJson, count, exportFilter, keep, replace } from "../../../guest-sdk/js/weir-filter.js";
import type { Event, Verdict } from "../../../guest-sdk/js/weir-filter.js";
import { redactFields, redactStrings, warmUp, wellFormed } from "./redact";

class RedactPii {
  readonly fields: string[] | null;
  readonly mask: string;

  constructor(config: string) {
    const { fields, mask } = configJson(config, ["fields", "mask"]);
    if (fields === undefined) {
      this.fields = null;
    } else if (!Array.isArray(fields)) {
      throw "config: fields must be a list of field names";
    } else if (fields.length === 0) {
      // An empty list would mask nothing, unlike no list (every string).
      throw "config: fields is empty (leave it out to scan every string)";
    } else {
      const names = fields.filter((f): f is string => typeof f === "string");
      if (names.length !== fields.length) throw "config: every field must be a string";
      this.fields = names;
    }
    if (mask === undefined) this.mask = "***";
    else if (typeof mask !== "string") throw "config: mask must be a string";
    else this.mask = mask;
    // serde_json refuses a lone surrogate (`"\ud800"`) where JSON.parse
    // takes it: refuse the config as the Rust filter does.
    if (![this.mask, ...(this.fields ?? [])].every(wellFormed)) throw "config: a lone surrogate in a string";
    // Every call starts from the state init left: scanning once here
    // compiles the regexes into it, instead of in every call.
    warmUp();
  }

  filter(events: Event[]): Verdict[] {
    let masked = 0;
    const verdicts = events.map((event) => {
      const body = event.body;
      const redacted =
        this.fields === null ? redactStrings(body, this.mask) : redactFields(body, this.fields, this.mask);
      if (redacted === null) return keep();
      masked += redacted[1];
      return replace(redacted[0]);
    });
    // One host call for the batch (the Rust filter makes one per event: the
    // counter adds up the same). From JavaScript a host call costs about as
    // much as scanning an event.
    if (masked > 0) count("masked", masked);
    return verdicts;
  }
}

export const { init, filter } = exportFilter(RedactPii);
