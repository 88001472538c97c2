//! Weir: an edge gateway that takes batches of events over HTTP(S) and
//! writes each event to Kafka, enriched and traced.
//!
//! `ARCHITECTURE.md` at the repository's root is the map. In short, the
//! layers, each depending only on those before it:
//!
//! 0. from `weir-core`: [`model`], the shared types (batch, event, part,
//!    refusal); [`config`], the configuration, checked at load; and the
//!    parsers of outside data (headers, body encodings, the upload);
//! 1. [`respond`]: every answer the node writes;
//! 2. [`ops`]: metrics, tracing, profiles;
//! 3. [`pipeline`]: decode, enrich, filter, Kafka;
//! 4. [`edge`]: listeners, TLS, authentication, limits, the body;
//! 5. [`node`]: a node's composition, routes and handlers.

pub mod edge;
pub mod node;
pub mod ops;
pub mod pipeline;
pub mod respond;

// The shared types, the configuration and the parsers of outside data live
// in `weir-core` (no I/O, no Kafka, no Wasm: fuzzed on their own); they keep
// their paths here.
pub use weir_core::{config, model};
