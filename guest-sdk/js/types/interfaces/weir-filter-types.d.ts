/** @module Interface weir:filter/types@0.1.0 **/
/**
 * Location of a client IP, when the node has a GeoIP database.
 */
export interface Geo {
  /**
   * ISO 3166-1 alpha-2 code.
   */
  country?: string,
  /**
   * First subdivision, English name.
   */
  region?: string,
  /**
   * City, English name.
   */
  city?: string,
}
/**
 * An IP address (as in `wasi:sockets`).
 */
export type IpAddress = IpAddressIpv4 | IpAddressIpv6;
export interface IpAddressIpv4 {
  tag: 'ipv4',
  val: [number, number, number, number],
}
export interface IpAddressIpv6 {
  tag: 'ipv6',
  val: [number, number, number, number, number, number, number, number],
}
/**
 * A run of bytes in `batch.bytes`: `bytes[offset .. offset + len]`.
 */
export interface Span {
  offset: number,
  len: number,
}
/**
 * One event, enriched by the gateway. Its text lives in the batch's
 * `bytes` and its location in the batch's `geos`, so that handing a
 * batch to a filter costs a few copies, not a few per event.
 */
export interface Event {
  /**
   * Server-assigned UUIDv7, its 128 bits as (high 64, low 64).
   */
  backendId: [bigint, bigint],
  /**
   * The client's event id (UTF-8, unique within its batch).
   */
  id: Span,
  /**
   * The event's `ip` or the client address.
   */
  clientIp?: IpAddress,
  /**
   * Index into `batch.geos`.
   */
  geo?: number,
  /**
   * The event object as JSON (UTF-8), exactly as the client sent it
   * or as an earlier filter of the chain replaced it.
   */
  body: Span,
}
/**
 * One upload of one tenant: what its events share, and the events.
 */
export interface Batch {
  /**
   * The tenant (from the API key).
   */
  tenant: string,
  /**
   * `meta.category` of the upload.
   */
  category: string,
  /**
   * Upload time, milliseconds since the Unix epoch.
   */
  receivedAt: bigint,
  /**
   * The distinct locations of the batch's events.
   */
  geos: Array<Geo>,
  /**
   * Every event's id and body, back to back; `event.id` and
   * `event.body` are spans of it.
   */
  bytes: Uint8Array,
  events: Array<Event>,
}
/**
 * What happens to one event.
 */
export type Verdict = VerdictKeep | VerdictReplace | VerdictDrop;
/**
 * Pass the event on unchanged.
 */
export interface VerdictKeep {
  tag: 'keep',
}
/**
 * Pass this JSON object on instead of the event's body (within the
 * event limits: see above).
 */
export interface VerdictReplace {
  tag: 'replace',
  val: Uint8Array,
}
/**
 * Drop the event; the client sees part code `filtered` with this reason.
 */
export interface VerdictDrop {
  tag: 'drop',
  val: string,
}
