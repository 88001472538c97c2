// Weir's guest SDK for JavaScript (and TypeScript) filters, built with
// jco / ComponentizeJS. A filter is a class with a constructor taking the
// config string (throw to refuse it) and `filter(events)` returning one
// verdict per event, in order; `exportFilter` turns it into the world's
// `init` and `filter` exports:
//
//   import { exportFilter, keep } from "../../../guest-sdk/js/weir-filter.js";
//   class PassThrough { filter(events) { return events.map(() => keep()); } }
//   export const { init, filter } = exportFilter(PassThrough);
//
// The same helpers as the Rust SDK: each event's fields, its JSON body read
// and edited, `log`, `count`, and the verdicts `keep`, `replace` and `drop`.

import { log as hostLog, count as hostCount } from "weir:filter/host@0.1.0";

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** Pass the event on unchanged. */
export function keep() {
  return { tag: "keep" };
}

/** Pass this JSON object on instead of the event's body (an object, or its JSON text). */
export function replace(body) {
  const text = typeof body === "string" ? body : JSON.stringify(body);
  return { tag: "replace", val: encoder.encode(text) };
}

/** Drop the event; the client sees part code `filtered` with `reason`. */
export function drop(reason) {
  return { tag: "drop", val: String(reason) };
}

/** Adds `delta` to the filter's counter `name` (a node metric). */
export function count(name, delta = 1) {
  hostCount(name, BigInt(delta));
}

/** Log lines, tagged by the host with the filter, tenant and request. */
export const log = {
  trace: (message) => hostLog("trace", String(message)),
  debug: (message) => hostLog("debug", String(message)),
  info: (message) => hostLog("info", String(message)),
  warn: (message) => hostLog("warn", String(message)),
  error: (message) => hostLog("error", String(message)),
};

/** The config as a JSON object ({} when empty), refusing keys not in `allowed`. */
export function configJson(config, allowed) {
  if (!config.trim()) return {};
  let value;
  try {
    value = JSON.parse(config);
  } catch (e) {
    throw `config is not JSON: ${e.message}`;
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw "config must be a JSON object";
  }
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) {
      throw `config: unknown key '${key}' (known: ${allowed.join(", ")})`;
    }
  }
  return value;
}

/** Sets `object[key]` as an own data property: plain assignment to
 * `__proto__` would change the object's prototype instead of its JSON. */
function setOwn(object, key, value) {
  Object.defineProperty(object, key, { value, writable: true, enumerable: true, configurable: true });
}

/** The value at a dotted `path` (`props.email`) of a parsed body, or undefined. */
export function field(body, path) {
  let value = body;
  for (const part of path.split(".")) {
    // Own keys only: `in` also finds `constructor`, `toString`… on every object.
    if (value === null || typeof value !== "object" || Array.isArray(value) || !Object.hasOwn(value, part)) {
      return undefined;
    }
    value = value[part];
  }
  return value;
}

/** One event of the batch, with the batch's shared fields. */
export class Event {
  #batch;
  #event;
  #json;

  constructor(batch, event) {
    this.#batch = batch;
    this.#event = event;
  }

  #text(span) {
    return decoder.decode(this.#batch.bytes.subarray(span.offset, span.offset + span.len));
  }

  /** The client's event id. */
  get id() {
    return this.#text(this.#event.id);
  }

  /** The event object's JSON text, as sent or as an earlier filter replaced it. */
  get body() {
    return this.#text(this.#event.body);
  }

  /** The body parsed (once per event); throws when it is not JSON. */
  json() {
    if (this.#json === undefined) this.#json = JSON.parse(this.body);
    return this.#json;
  }

  /** The body's value at a dotted path, or undefined. */
  get(path) {
    return field(this.json(), path);
  }

  /** The body with `path` set to `value`, as a `replace` verdict. */
  withField(path, value) {
    const body = JSON.parse(this.body);
    const parts = path.split(".");
    let target = body;
    for (const part of parts.slice(0, -1)) {
      const own = Object.hasOwn(target, part) ? target[part] : undefined;
      if (own === null || typeof own !== "object") setOwn(target, part, {});
      target = target[part];
    }
    setOwn(target, parts[parts.length - 1], value);
    return replace(body);
  }

  get tenant() {
    return this.#batch.tenant;
  }

  get category() {
    return this.#batch.category;
  }

  /** Upload time, milliseconds since the Unix epoch. */
  get receivedAt() {
    return Number(this.#batch.receivedAt);
  }

  /** The server's UUIDv7 for the event, as text. */
  get backendId() {
    const [high, low] = this.#event.backendId;
    const hex = high.toString(16).padStart(16, "0") + low.toString(16).padStart(16, "0");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  /** `{country, region, city}` of the client IP, or undefined. */
  get geo() {
    const index = this.#event.geo;
    return index === undefined || index === null ? undefined : this.#batch.geos[index];
  }
}

/** The world's `init` and `filter` exports for a filter class. */
export function exportFilter(FilterClass) {
  let instance;
  return {
    init(config) {
      try {
        instance = new FilterClass(config);
      } catch (e) {
        throw typeof e === "string" ? e : String(e?.message ?? e);
      }
    },
    filter(batch) {
      if (instance === undefined) instance = new FilterClass("");
      return instance.filter(batch.events.map((e) => new Event(batch, e)));
    },
  };
}
