//! The pipeline: an admitted upload's stages, each a function from the
//! batch to the next state of the batch, in the order a batch travels:
//! [`decode`] (JSON, meta, split and validate), [`enrich`] (backend id,
//! client IP, [`geoip`]), [`filter`] (the tenant's Wasm chain), [`kafka`]
//! (one record per event, awaiting acknowledgement). The answer is written by
//! [`crate::respond`].

pub mod enrich;
pub mod filter;
pub mod geoip;
pub mod kafka;
pub mod spool;

pub use weir_core::decode;
