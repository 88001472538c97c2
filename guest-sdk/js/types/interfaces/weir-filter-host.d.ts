/** @module Interface weir:filter/host@0.1.0 **/
/**
 * A log line, tagged with the filter, tenant and request by the host,
 * which keeps its first 1 KiB, and a call's first 100 lines. (A call
 * that hands the host more than its output limit, at least 64 KiB, at
 * once fails.)
 */
export function log(level: Level, message: string): void;
/**
 * Adds `delta` to the filter's counter `name`: on a node the metric
 * `weir_filter_guest_counter_total{tenant, filter, name}` (the first 16
 * names of a filter per tenant; more share `other`; the counts of a
 * call that gives no verdicts are dropped), and shown by `weir filter test`. A call keeps
 * 64 names of 128 bytes at most; further names add to `other`.
 */
export function count(name: string, delta: bigint): void;
/**
 * # Variants
 * 
 * ## `"trace"`
 * 
 * ## `"debug"`
 * 
 * ## `"info"`
 * 
 * ## `"warn"`
 * 
 * ## `"error"`
 */
export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';
