//! Weir: an edge gateway that takes batches of events over HTTP(S) and
//! writes each event to Kafka, enriched and traced.
//!
//! `ARCHITECTURE.md` at the repository's root is the map. In short, the
//! layers, each depending only on those before it:
//!
//! 1. [`model`]: the shared types (batch, event, part, refusal); and
//!    [`respond`], every answer the node writes;
//! 2. [`config`]: the configuration, checked at load;
//! 3. [`ops`]: metrics, tracing, profiles;
//! 4. [`pipeline`]: decode, enrich, filter, Kafka;
//! 5. [`edge`]: listeners, TLS, authentication, limits, the body;
//! 6. [`node`]: a node's composition, routes and handlers.

pub mod config;
pub mod edge;
pub mod model;
pub mod node;
pub mod ops;
pub mod pipeline;
pub mod respond;
