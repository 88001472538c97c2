// require-fields, in JavaScript: drops events that lack a required field
// (absent or null), with the Rust filter's config and verdicts
// (filters/require-fields).
//
// Config: {"fields": ["user", "props.session"]}

import { configJson, count, drop, exportFilter, keep } from "../../../guest-sdk/js/weir-filter.js";

class RequireFields {
  constructor(config) {
    const { fields } = configJson(config, ["fields"]);
    if (!Array.isArray(fields)) throw "config: fields must be a list of field names";
    if (!fields.every((f) => typeof f === "string")) throw "config: every field must be a string";
    if (fields.length === 0) throw "config: fields is empty: name at least one required field";
    this.fields = fields;
  }

  filter(events) {
    return events.map((event) => {
      for (const name of this.fields) {
        let value;
        try {
          value = event.get(name);
        } catch {
          return drop("body is not JSON");
        }
        if (value === undefined || value === null) {
          count("missing_field", 1);
          return drop(`missing required field ${name}`);
        }
      }
      return keep();
    });
  }
}

export const { init, filter } = exportFilter(RequireFields);
