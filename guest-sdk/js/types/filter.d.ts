// world weir:filter/filter@0.1.0
export type Batch = import('./interfaces/weir-filter-types.js').Batch;
export type Verdict = import('./interfaces/weir-filter-types.js').Verdict;
export type * as WeirFilterHost010 from './interfaces/weir-filter-host.js'; // import weir:filter/host@0.1.0
export type * as WeirFilterTypes010 from './interfaces/weir-filter-types.js'; // import weir:filter/types@0.1.0
/**
* Called with the tenant's `config` string from the node configuration,
* before `filter` (once at load, then snapshot; see above). It must
* depend on nothing but its config. An error refuses the filter at load
* time (the previous version, if any, stays).
*/
export function init(config: string): void;
/**
* One verdict per event of `batch.events`, in order.
*/
export function filter(batch: Batch): Array<Verdict>;
export type Result<T, E> = { tag: 'ok', val: T } | { tag: 'err', val: E };
