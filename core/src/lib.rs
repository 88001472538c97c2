//! Weir's core: the types every stage of a node shares, and every parser of
//! what a node is given by others: its configuration ([`config`]), a
//! request's headers ([`headers`]), its body ([`encoding`]), the upload in
//! it ([`decode`]) and what a filter returns ([`decode::replacement`]);
//! and the record value all of that becomes ([`record`]).
//!
//! Nothing here does I/O, talks to Kafka or runs Wasm: the gateway
//! (`weir-gateway`) composes these with its listeners, filters and
//! producer, and the fuzz targets (`fuzz/`) build this crate alone.

pub mod config;
pub mod decode;
pub mod encoding;
pub mod headers;
pub mod model;
pub mod record;
