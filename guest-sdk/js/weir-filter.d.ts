// Types of the JavaScript SDK (weir-filter.js), for filters written in
// TypeScript. Written by hand; the WIT's own types (batch, event, verdict)
// are generated from proto/wit into ./types (see README.md) and used here,
// so that a change to the WIT shows up as a type error in every filter.

import type * as World from "./types/filter.js";
import type {
  Batch,
  Event as WitEvent,
  Geo,
  Verdict,
  VerdictDrop,
  VerdictKeep,
  VerdictReplace,
} from "./types/interfaces/weir-filter-types.js";

export type { Batch, Geo, Verdict, VerdictDrop, VerdictKeep, VerdictReplace, WitEvent };

/** A value JSON text can hold. */
export type JsonValue = null | boolean | number | string | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

/** Pass the event on unchanged. */
export function keep(): VerdictKeep;

/** Pass this JSON object on instead of the event's body (an object, or its JSON text). */
export function replace(body: JsonObject | string): VerdictReplace;

/** Drop the event; the client sees part code `filtered` with `reason`. */
export function drop(reason: unknown): VerdictDrop;

/** Adds `delta` (default 1) to the filter's counter `name` (a node metric). */
export function count(name: string, delta?: number | bigint): void;

/** Log lines, tagged by the host with the filter, tenant and request. */
export const log: {
  trace(message: unknown): void;
  debug(message: unknown): void;
  info(message: unknown): void;
  warn(message: unknown): void;
  error(message: unknown): void;
};

/**
 * The config as a JSON object ({} when empty), refusing keys not in
 * `allowed`. Throws a string (the refusal) when the config is not a JSON
 * object or has another key.
 */
export function configJson(config: string, allowed: readonly string[]): JsonObject;

/** The value at a dotted `path` (`props.email`) of a parsed body, or undefined. */
export function field(body: JsonValue, path: string): JsonValue | undefined;

/** One event of the batch, with the batch's shared fields. */
export class Event {
  constructor(batch: Batch, event: WitEvent);
  /** The client's event id. */
  readonly id: string;
  /** The event object's JSON text, as sent or as an earlier filter replaced it. */
  readonly body: string;
  /** The body parsed (once per event); throws when it is not JSON. */
  json(): JsonObject;
  /** The body's value at a dotted path, or undefined. */
  get(path: string): JsonValue | undefined;
  /** The body with `path` set to `value`, as a `replace` verdict. */
  withField(path: string, value: JsonValue): VerdictReplace;
  readonly tenant: string;
  readonly category: string;
  /** Upload time, milliseconds since the Unix epoch. */
  readonly receivedAt: number;
  /** The server's UUIDv7 for the event, as text. */
  readonly backendId: string;
  /** `{country, region, city}` of the client IP, or undefined. */
  readonly geo: Geo | undefined;
}

/** What `exportFilter` takes: built from the config (throw to refuse it), then one verdict per event. */
export interface Filter {
  filter(events: Event[]): Verdict[];
}
export type FilterClass = new (config: string) => Filter;

/** The world's `init` and `filter` exports for a filter class. */
export function exportFilter(filterClass: FilterClass): {
  init: typeof World.init;
  filter: typeof World.filter;
};
