// The scanner of redact-pii, ported from the Rust filter
// (filters/redact-pii/src/lib.rs) rule for rule, so that both mask the same
// spans and write the same bytes: read the rules there.
//
// Every walk here is linear in its text, as there. ComponentizeJS runs the
// guest's JavaScript in an interpreter, where each JavaScript operation
// costs about a microsecond: the walks jump from one place that matters to
// the next with indexOf and sticky regexes (character classes and
// star-loops that cannot backtrack into each other, so no catastrophic
// backtracking on an attacker's text) rather than step through characters.
// Indices are UTF-16 code units where Rust's are bytes: every rule stops
// at ASCII characters, on which both agree, and a character outside ASCII
// is "not ASCII" in both.

import { ALPHANUMERIC_RANGES } from "./alphanumeric";

/** A text with PII masked and the number of masks; null when none. */
export type Redacted = [text: string, masked: number] | null;

const TAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
const QUOTE = 0x22;
const PLUS = 0x2b;
const COMMA = 0x2c;
const DASH = 0x2d;
const DOT = 0x2e;
const ZERO = 0x30;
const NINE = 0x39;
const COLON = 0x3a;
const OPEN_BRACKET = 0x5b;
const BACKSLASH = 0x5c;
const CLOSE_BRACKET = 0x5d;
const UNDERSCORE = 0x5f;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;

// A lone surrogate: with the u flag a well-formed pair is one code point,
// so only an unpaired half is in this range. (No `\p{...}`: ComponentizeJS's
// SpiderMonkey is built without ICU and refuses Unicode property escapes.)
const LONE_SURROGATE = /[\ud800-\udfff]/u;
// Text outside strings, and strings with no escape, control character,
// `@` or digit (nothing to mask, nothing unreadable), up to the next
// other string. Quotes pair up as in Rust's walk: such a string closes at
// the next quote.
const PLAIN = /(?:[^"]+|"[^"\\\u0000-\u001f@0-9]*")*/y;
// A string with no escape or control character, from its opening quote.
const PLAIN_STRING = /"[^"\\\u0000-\u001f]*"/y;
// A string from its opening quote; a backslash skips the unit after it.
const STRING = /"[^"\\]*(?:\\[\s\S][^"\\]*)*"/y;
const BLANK = /[ \t\n\f\r]*/y;
// What an IPv4 address and a phone number need at least: four dotted
// numbers, and seven digits among separators.
const IPV4_LIKE = /[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]/;
const SEVEN_DIGITS = /[0-9](?:[ \-.()]*[0-9]){6}/;
const ESCAPE_OR_CONTROL = /[\\\u0000-\u001f]/;
const AT_OR_DIGIT = /[@0-9]/;

const isDigit = (c: number) => c >= ZERO && c <= NINE;
const isAsciiAlphanumeric = (c: number) =>
  isDigit(c) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);

/** Runs every walk once (each regex is compiled when first used). */
export function warmUp(): void {
  const body =
    '{"a":{"b":"ann@example.com, 81.2.69.142, call +44 20 7946 0958 on 2024-01-15, x1234567"},"c":["\\u0041\\ud800",1.5]}';
  redactStrings(body, "***");
  redactFields(body, ["a.b", "c"], "***");
  redactFields(body.replace("\\ud800", ""), ["a.b", "c"], "***");
}

/** Whether `text` holds no lone surrogate (as Rust's strings cannot). */
export function wellFormed(text: string): boolean {
  return !LONE_SURROGATE.test(text);
}

/** Rust's char::is_alphanumeric for the code point `cp` (undefined: none), from Rust's own table. */
function alphanumeric(cp: number | undefined): boolean {
  if (cp === undefined) return false;
  if (cp < 0x80) return isAsciiAlphanumeric(cp);
  // The last range that starts at or before cp.
  let [low, high] = [0, ALPHANUMERIC_RANGES.length / 2 - 1];
  while (low < high) {
    const mid = (low + high + 1) >> 1;
    if (ALPHANUMERIC_RANGES[2 * mid] <= cp) low = mid;
    else high = mid - 1;
  }
  return ALPHANUMERIC_RANGES[2 * low] <= cp && cp <= ALPHANUMERIC_RANGES[2 * low + 1];
}

/** The code point that ends just before code unit `i`. */
function codePointBefore(text: string, i: number): number | undefined {
  if (i <= 0) return undefined;
  const low = text.charCodeAt(i - 1);
  if (low >= 0xdc00 && low <= 0xdfff && i >= 2) {
    const high = text.charCodeAt(i - 2);
    if (high >= 0xd800 && high <= 0xdbff) return text.codePointAt(i - 2);
  }
  return low;
}

// --- Every string value of a JSON text ---------------------------------

/**
 * `body` with PII masked in every string value (keys are left alone): the
 * text is walked, not parsed, so every copy of a repeated key is seen and
 * the rest stays as the client wrote it. A string whose escapes cannot be
 * read is masked whole: it could hide anything.
 */
export function redactStrings(body: string, mask: string): Redacted {
  const parts: string[] = [];
  const len = body.length;
  let copied = 0;
  let masked = 0;
  for (let i = 0; ; ) {
    // Past text outside strings and strings that hold nothing to mask.
    PLAIN.lastIndex = i;
    PLAIN.test(body);
    const start = PLAIN.lastIndex;
    if (start >= len) break;
    // A string with no escape or control character is its own text.
    let text: string | null;
    let end: number;
    PLAIN_STRING.lastIndex = start;
    if (PLAIN_STRING.test(body)) {
      end = PLAIN_STRING.lastIndex - 1;
      text = body.slice(start + 1, end);
    } else {
      // The closing quote: skip escaped characters. Unterminated (the node
      // accepts no such body): nothing more to scan.
      STRING.lastIndex = start;
      if (!STRING.test(body)) break;
      end = STRING.lastIndex - 1;
      text = null;
    }
    // A key is followed by a colon (Rust's is_ascii_whitespace between).
    let next = body.charCodeAt(end + 1);
    if (next <= SPACE) {
      BLANK.lastIndex = end + 1;
      BLANK.test(body);
      next = body.charCodeAt(BLANK.lastIndex);
    }
    if (next !== COLON) {
      text ??= stringValue(body.slice(start, end + 1));
      let replacement: string | null = null;
      let n = 0;
      if (text === null) {
        [replacement, n] = [JSON.stringify(mask), 1];
      } else {
        const [redacted, count] = redact(text, mask);
        if (count > 0) [replacement, n] = [JSON.stringify(redacted), count];
      }
      if (replacement !== null) {
        parts.push(body.slice(copied, start), replacement);
        copied = end + 1;
        masked += n;
      }
    }
    i = end + 1;
  }
  if (masked === 0) return null;
  parts.push(body.slice(copied));
  return [parts.join(""), masked];
}

/**
 * The string a JSON string literal `raw` (quotes included) stands for, or
 * null where serde_json refuses it: a bad escape, a raw control character
 * or a lone surrogate (which JSON.parse alone lets through).
 */
function stringValue(raw: string): string | null {
  if (!ESCAPE_OR_CONTROL.test(raw)) return raw.slice(1, -1);
  let text: unknown;
  try {
    text = JSON.parse(raw);
  } catch {
    return null;
  }
  return typeof text === "string" && wellFormed(text) ? text : null;
}

/**
 * Masks e-mail addresses, IPv4 addresses (with or without a port) and
 * phone numbers in `text`, and says how many.
 */
export function redact(text: string, mask: string): [string, number] {
  // Each of them has an `@` or digits: most strings have neither.
  if (!AT_OR_DIGIT.test(text)) return [text, 0];
  // In Rust's order, each on the text the one before left; a kind whose
  // least pattern is absent is not looked for.
  const none = (t: string): [string, number] => [t, 0];
  const [text1, emails] = text.includes("@") ? maskSpans(text, mask, emailAt) : none(text);
  const [text2, addresses] = IPV4_LIKE.test(text1) ? maskSpans(text1, mask, ipv4At) : none(text1);
  const [text3, phones] = SEVEN_DIGITS.test(text2) ? maskPhones(text2, mask) : none(text2);
  const n = emails + addresses + phones;
  return n === 0 ? [text, 0] : [text3, n];
}

/** The next span [start, end) to mask at or after `from`, or null. */
type FindSpan = (text: string, from: number) => [number, number] | null;

function maskSpans(text: string, mask: string, find: FindSpan): [string, number] {
  const parts: string[] = [];
  let copied = 0;
  let count = 0;
  for (let span = find(text, copied); span !== null; span = find(text, copied)) {
    parts.push(text.slice(copied, span[0]), mask);
    copied = span[1];
    count += 1;
  }
  if (count === 0) return [text, 0];
  parts.push(text.slice(copied));
  return [parts.join(""), count];
}

// ASCII characters of a local part, by code.
const LOCAL = new Uint8Array(128);
for (const c of "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz._%+-") LOCAL[c.charCodeAt(0)] = 1;
// The domain's characters (every code unit from 0x80 up: non-ASCII letters).
const DOMAIN = /[0-9A-Za-z.\-\u0080-\uffff]*/y;

/**
 * The next e-mail address: around an `@`, a local part of letters, digits
 * and `. _ % + -` and a dotted domain of letters, digits and `. -`, any
 * non-ASCII letter included; a sentence's full stop after it is not part
 * of it.
 */
function emailAt(text: string, from: number): [number, number] | null {
  for (let at = text.indexOf("@", from); at >= 0; at = text.indexOf("@", at + 1)) {
    // Back no further than the last `@` or `from`: linear in all.
    let start = at;
    for (let c = text.charCodeAt(start - 1); start > from && (c >= 0x80 || LOCAL[c] === 1); c = text.charCodeAt(start - 1)) {
      start -= 1;
    }
    while (start < at && text.charCodeAt(start) === DOT) start += 1;
    DOMAIN.lastIndex = at + 1;
    DOMAIN.exec(text);
    let end = DOMAIN.lastIndex;
    while (end > at + 1 && (text.charCodeAt(end - 1) === DOT || text.charCodeAt(end - 1) === DASH)) end -= 1;
    // The host alone is searched (a search to the end, for every `@`, would be quadratic).
    const host = text.slice(at + 1, end);
    if (start < at && host.includes(".") && host.charCodeAt(0) !== DOT) return [start, end];
  }
  return null;
}

// A run of digits and dots that starts with a digit.
const DOTTED_DIGITS = /[0-9][0-9.]*/g;

/**
 * The next IPv4 address: four dotted numbers not glued to a word or
 * another number (a port after a colon may follow).
 */
function ipv4At(text: string, from: number): [number, number] | null {
  DOTTED_DIGITS.lastIndex = from;
  // Each run is looked at once: the search goes on after it.
  for (let run = DOTTED_DIGITS.exec(text); run !== null; run = DOTTED_DIGITS.exec(text)) {
    const start = run.index;
    let end = start + run[0].length;
    while (end > start && text.charCodeAt(end - 1) === DOT) end -= 1;
    // The character before may be before `from`, as in Rust.
    const before = start > 0 ? text.charCodeAt(start - 1) : NaN;
    const alone =
      !(isAsciiAlphanumeric(before) || before === DOT) && !(end < text.length && isAsciiAlphanumeric(text.charCodeAt(end)));
    if (alone && isIpv4(text.slice(start, end))) return [start, end];
  }
  return null;
}

/** Rust's `str::parse::<Ipv4Addr>` on digits and dots: four numbers up to 255, no leading zero. */
function isIpv4(text: string): boolean {
  const parts = text.split(".");
  return (
    parts.length === 4 &&
    parts.every((p) => p.length >= 1 && p.length <= 3 && (p.length === 1 || p[0] !== "0") && Number(p) <= 255)
  );
}

// Where a phone number may start: a digit, or `+` or `(` before one.
const PHONE_START = /[0-9]|[+(](?=[0-9])/g;
// A phone number's characters after its first.
const PHONE_REST = /[0-9 \-.()]*/y;
const DIGITS = /[0-9]*/y;
const NOT_DIGITS = /[^0-9]/g;
// yyyy-mm-dd with a month and a day in range, not the start of a longer number.
const ISO_DATE = /[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])(?![0-9])/y;
const DIGITS_AND_DOTS = /^[0-9.]*$/;

/**
 * Phone numbers: runs of digits, spaces, dashes, dots, parentheses and a
 * leading `+` with 7 to 15 digits, not glued to a word, not an ISO date or
 * a dotted version. Rust walks every char; only at a possible start does
 * its walk do more than copy, so this one jumps from start to start (with
 * regexes of one character class or of bounded length: no backtracking
 * blow-up), and reads a neighbour as a whole code point.
 */
function maskPhones(text: string, mask: string): [string, number] {
  const parts: string[] = [];
  let copied = 0;
  let count = 0;
  PHONE_START.lastIndex = 0;
  for (let found = PHONE_START.exec(text); found !== null; found = PHONE_START.exec(text)) {
    const i = found.index;
    const previous = codePointBefore(text, i);
    // Glued to a word: `order-20240115`, `id_4155550123`.
    if (alphanumeric(previous) || previous === DASH || previous === UNDERSCORE) {
      // The digits right after a digit follow a digit: none of them starts
      // a number either. After `+` or `(`, the digit does.
      DIGITS.lastIndex = i + 1;
      if (isDigit(text.charCodeAt(i))) DIGITS.exec(text);
      PHONE_START.lastIndex = DIGITS.lastIndex;
      continue;
    }
    // An ISO date (2024-01-15) has eight digits but is no phone number.
    ISO_DATE.lastIndex = i;
    if (ISO_DATE.test(text)) {
      PHONE_START.lastIndex = i + 10;
      continue;
    }
    PHONE_REST.lastIndex = i + 1;
    PHONE_REST.exec(text);
    let j = PHONE_REST.lastIndex;
    // Do not swallow trailing separators.
    while (j > i && !isDigit(text.charCodeAt(j - 1))) j -= 1;
    const run = text.slice(i, j);
    const digits = run.replace(NOT_DIGITS, "").length;
    // Glued to a word after it: `12345678-ab12`. E.164 numbers have at most 15 digits.
    const c = text.charCodeAt(j);
    const glued =
      alphanumeric(text.codePointAt(j)) || ((c === DASH || c === UNDERSCORE) && alphanumeric(text.codePointAt(j + 1)));
    if (digits >= 7 && digits <= 15 && !glued && !isVersion(run)) {
      parts.push(text.slice(copied, i), mask);
      copied = j;
      count += 1;
    }
    // Else every later start inside this run has fewer digits and the
    // same end: none of them is a phone number either.
    PHONE_START.lastIndex = Math.max(j, i + 1);
  }
  if (count === 0) return [text, 0];
  parts.push(text.slice(copied));
  return [parts.join(""), count];
}

/** Whether a run of digits and dots alone is a version (`10.0.19045.3803`), not a dotted phone number. */
function isVersion(run: string): boolean {
  if (!DIGITS_AND_DOTS.test(run)) return false;
  const groups = run.split(".");
  return groups.length > 1 && groups.slice(1).some((g) => g.length < 2 || g.length > 4);
}

// --- Named fields ------------------------------------------------------

/** A body serde_json refuses: the Rust filter then scans every string. */
class Unreadable extends Error {}

/**
 * `body` with PII masked in `fields`: each field is read where it is and
 * rewritten in place (every copy of a repeated key, and both a top-level
 * key equal to the whole path and the dotted path), as the Rust SDK's
 * `edit_field_text` does. A body serde_json would not read has every
 * string value scanned instead: PII never passes because its event was odd.
 */
export function redactFields(body: string, fields: readonly string[], mask: string): Redacted {
  let patched = body;
  let masked = 0;
  const edit = (text: string) => {
    const redacted = redactStrings(text, mask);
    if (redacted === null) return null;
    masked += redacted[1];
    return redacted[0];
  };
  for (const field of fields) {
    const out: string[] = [];
    try {
      if (rewrite(patched, field, field, edit, out)) patched = out.join("");
    } catch (e) {
      if (e instanceof Unreadable) return redactStrings(body, mask);
      throw e;
    }
  }
  return masked > 0 ? [patched, masked] : null;
}

/**
 * Writes `object` into `out` with every copy of the field at `rest` passed
 * through `edit` (`whole`, the full path, is looked for as a key at the top
 * level only); whether anything changed.
 */
function rewrite(
  object: string,
  whole: string | null,
  rest: string,
  edit: (text: string) => string | null,
  out: string[],
): boolean {
  const entries = objectEntries(object);
  const dot = rest.indexOf(".");
  const head = dot < 0 ? rest : rest.slice(0, dot);
  const tail = dot < 0 ? null : rest.slice(dot + 1);
  // A key equal to the whole path, which readers take over the dotted
  // path: both are edited, so a mask misses neither.
  const wholeFound = whole !== null && entries.some((e) => e.key === whole);
  let changed = false;
  let written = 0;
  for (const entry of entries) {
    let next: string | null;
    if (wholeFound && entry.key === whole) next = null;
    else if (entry.key === head) next = tail;
    else continue;
    out.push(object.slice(written, entry.start));
    written = entry.end;
    const raw = object.slice(entry.start, entry.end);
    if (next === null) {
      const text = edit(raw);
      out.push(text ?? raw);
      changed ||= text !== null;
    } else if (raw.charCodeAt(0) === OPEN_BRACE) {
      changed = rewrite(raw, null, next, edit, out) || changed;
    } else {
      // Not an object: it has no field to edit.
      out.push(raw);
    }
  }
  out.push(object.slice(written));
  return changed;
}

/** One entry of a JSON object: its key, and where its value's text lies. */
interface Entry {
  key: string;
  start: number;
  end: number;
}

/**
 * The entries of the JSON object `text`, in order, repeated keys included,
 * read as serde_json reads them into the Rust SDK's entries: keys must be
 * well-formed strings, values only well-formed JSON (a lone surrogate in a
 * nested string is let through, as serde_json's `RawValue` does), and
 * nothing but whitespace may follow. Throws Unreadable otherwise.
 */
function objectEntries(text: string): Entry[] {
  // JSON.parse reads as serde_json does but for lone surrogates, which it
  // takes: where a surrogate may be escaped, read every character here.
  if (SURROGATE_ESCAPE.test(text)) return checkedEntries(text);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new Unreadable("not JSON");
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new Unreadable("not an object");
  const entries: Entry[] = [];
  ENTRY_KEY.lastIndex = text.indexOf("{") + 1;
  for (let key = ENTRY_KEY.exec(text); key !== null; key = ENTRY_KEY.exec(text)) {
    const start = ENTRY_KEY.lastIndex;
    // The value's end: the first comma or close at its own depth.
    let [end, depth] = [start, 0];
    for (;;) {
      FLAT.lastIndex = end;
      FLAT.test(text);
      end = FLAT.lastIndex;
      const c = text.charCodeAt(end);
      if (c === OPEN_BRACE || c === OPEN_BRACKET) depth += 1;
      else if (depth === 0) break;
      else if (c !== COMMA) depth -= 1;
      end += 1;
    }
    const name = key[1].includes("\\") ? JSON.parse(key[1]) : key[1].slice(1, -1);
    entries.push({ key: name, start, end: start + text.slice(start, end).trimEnd().length });
    // After a comma, the next key; after the close, none (sticky: no match).
    ENTRY_KEY.lastIndex = end + 1;
    if (text.charCodeAt(end) !== COMMA) break;
  }
  return entries;
}

// Where a JSON text may hold an escaped surrogate (`\ud800`).
const SURROGATE_ESCAPE = /\\u[dD][89a-fA-F]/;
// In a valid object: a key and its colon, from just after `{` or `,`.
const ENTRY_KEY = /[ \t\n\r]*("[^"\\]*(?:\\[\s\S][^"\\]*)*")[ \t\n\r]*:[ \t\n\r]*/y;
// In a valid value: all but brackets and commas, strings whole.
const FLAT = /(?:[^"{}[\],]+|"[^"\\]*(?:\\[\s\S][^"\\]*)*")*/y;

/** objectEntries, reading every character (serde_json's rules). */
function checkedEntries(text: string): Entry[] {
  let i = skipSpace(text, 0);
  if (text.charCodeAt(i) !== OPEN_BRACE) throw new Unreadable("not an object");
  const entries: Entry[] = [];
  i = skipSpace(text, i + 1);
  if (text.charCodeAt(i) === CLOSE_BRACE) {
    i += 1;
  } else {
    for (;;) {
      if (text.charCodeAt(i) !== QUOTE) throw new Unreadable("a key must be a string");
      const keyEnd = skipString(text, i + 1);
      const key = stringValue(text.slice(i, keyEnd));
      if (key === null) throw new Unreadable("unreadable key");
      i = skipSpace(text, keyEnd);
      if (text.charCodeAt(i) !== COLON) throw new Unreadable("expected a colon");
      const start = skipSpace(text, i + 1);
      i = skipValue(text, start);
      entries.push({ key, start, end: i });
      i = skipSpace(text, i);
      const c = text.charCodeAt(i);
      if (c === CLOSE_BRACE) {
        i += 1;
        break;
      }
      if (c !== COMMA) throw new Unreadable("expected a comma or the end of the object");
      i = skipSpace(text, i + 1);
    }
  }
  if (skipSpace(text, i) !== text.length) throw new Unreadable("trailing characters");
  return entries;
}

/** Past JSON whitespace (serde_json's: space, tab, line feed, return). */
function skipSpace(text: string, i: number): number {
  for (let c = text.charCodeAt(i); c === SPACE || c === LF || c === TAB || c === CR; c = text.charCodeAt(++i));
  return i;
}

/** Past the rest of a string literal whose opening quote is before `i`. */
function skipString(text: string, i: number): number {
  for (;;) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) return i + 1;
    if (c === BACKSLASH) {
      const e = text.charCodeAt(i + 1);
      if (e === 0x75 /* u */) {
        if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) throw new Unreadable("bad \\u escape");
        i += 6;
      } else if (e === QUOTE || e === BACKSLASH || e === 0x2f || e === 0x62 || e === 0x66 || e === 0x6e || e === 0x72 || e === 0x74) {
        i += 2;
      } else {
        throw new Unreadable("bad escape");
      }
    } else if (c < SPACE || Number.isNaN(c)) {
      throw new Unreadable("control character or end of text in a string");
    } else {
      i += 1;
    }
  }
}

/** Past one JSON value at `i` (nested ones included, without recursion). */
function skipValue(text: string, i: number): number {
  const open: number[] = [];
  for (;;) {
    i = skipSpace(text, i);
    const c = text.charCodeAt(i);
    if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      i = skipSpace(text, i + 1);
      if (text.charCodeAt(i) === (c === OPEN_BRACE ? CLOSE_BRACE : CLOSE_BRACKET)) {
        i += 1;
      } else {
        open.push(c);
        if (c === OPEN_BRACE) i = skipKey(text, i);
        continue;
      }
    } else {
      i = skipScalar(text, i);
    }
    // After a value: close what it ends, or go on after a comma.
    for (;;) {
      if (open.length === 0) return i;
      const frame = open[open.length - 1];
      i = skipSpace(text, i);
      const d = text.charCodeAt(i);
      if (d === COMMA) {
        i += 1;
        if (frame === OPEN_BRACE) i = skipKey(text, skipSpace(text, i));
        break;
      }
      if (d !== (frame === OPEN_BRACE ? CLOSE_BRACE : CLOSE_BRACKET)) throw new Unreadable("expected a comma or a close");
      i += 1;
      open.pop();
    }
  }
}

/** Past `"key":` inside an object being skipped. */
function skipKey(text: string, i: number): number {
  if (text.charCodeAt(i) !== QUOTE) throw new Unreadable("a key must be a string");
  i = skipSpace(text, skipString(text, i + 1));
  if (text.charCodeAt(i) !== COLON) throw new Unreadable("expected a colon");
  return i + 1;
}

/** Past a string, number, true, false or null at `i`. */
function skipScalar(text: string, i: number): number {
  const c = text.charCodeAt(i);
  if (c === QUOTE) return skipString(text, i + 1);
  for (const word of ["null", "true", "false"]) {
    if (c === word.charCodeAt(0)) {
      if (!text.startsWith(word, i)) throw new Unreadable("bad literal");
      return i + word.length;
    }
  }
  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  if (c === DASH) i += 1;
  const first = text.charCodeAt(i);
  if (!isDigit(first)) throw new Unreadable("expected a value");
  i += 1;
  if (first === ZERO) {
    if (isDigit(text.charCodeAt(i))) throw new Unreadable("leading zero");
  } else {
    while (isDigit(text.charCodeAt(i))) i += 1;
  }
  if (text.charCodeAt(i) === DOT) {
    i += 1;
    if (!isDigit(text.charCodeAt(i))) throw new Unreadable("no digit after the point");
    while (isDigit(text.charCodeAt(i))) i += 1;
  }
  const e = text.charCodeAt(i);
  if (e === 0x65 || e === 0x45) {
    i += 1;
    const sign = text.charCodeAt(i);
    if (sign === PLUS || sign === DASH) i += 1;
    if (!isDigit(text.charCodeAt(i))) throw new Unreadable("no digit in the exponent");
    while (isDigit(text.charCodeAt(i))) i += 1;
  }
  return i;
}
