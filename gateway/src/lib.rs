//! Weir: an edge gateway that takes batches of events over HTTP(S) and
//! writes each event to Kafka, enriched and traced.
//!
//! The path of one upload, one module per stage, in the order a request
//! travels:
//!
//! 1. [`server`]: TCP/TLS accept, HTTP/1.1 and h2, routing ([`tls`] for certificates)
//! 2. [`ingest`]: the handler that runs the stages below in order
//! 3. [`auth`]: the API key names the tenant; the tenant may post the category
//! 4. [`body`]: content type and encoding, size caps, decompression
//! 5. [`decode`]: JSON, `meta`, and the split into validated events
//! 6. [`limit`]: request and event rates, in-flight admission (used by `ingest`)
//! 7. [`enrich`]: backend id, client IP and [`geoip`] location
//! 8. [`filter`]: the tenant's Wasm filter chain
//! 9. [`produce`]: one Kafka record per event, awaiting acknowledgement
//! 10. [`respond`]: the per-event answer
//!
//! Shared types live in [`batch`]; [`config`] is the configuration,
//! [`trace`] the OpenTelemetry tracing, [`metrics`] the golden signals, [`otlp`]
//! their export to a collector, [`profile`] CPU profiles on demand, [`broker`] the embedded broker used
//! when no Kafka is configured, [`tail`] the operator's record reader.

pub mod auth;
pub mod batch;
pub mod body;
pub mod broker;
pub mod config;
pub mod decode;
pub mod enrich;
pub mod filter;
pub mod geoip;
pub mod health;
pub mod ingest;
pub mod limit;
pub mod metrics;
pub mod otlp;
pub mod produce;
pub mod profile;
pub mod reload;
pub mod respond;
pub mod server;
pub mod tail;
pub mod tls;
pub mod trace;
