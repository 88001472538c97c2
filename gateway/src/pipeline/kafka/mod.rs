//! Kafka: the node's producer and the record contract with downstream
//! consumers (`proto/record.md`), plus the embedded broker for a node with
//! no cluster configured and the operator's `weir tail`.
//!
//! - [`record`]: a record's value, key and headers;
//! - [`topics`]: which topics exist (a missing one is answered at once);
//! - [`producer`]: records handed to librdkafka, and the wait for their acks;
//! - [`acks`]: Kafka's answers back to the waiting requests (the FFI lives here);
//! - [`client`]: the librdkafka client, replaced when it cannot recover;
//! - [`spooler`]: events Kafka cannot take now, to the node's spool;
//! - [`replay`]: the spool's records to Kafka once it takes them, in order.

mod acks;
pub mod broker;
mod client;
mod producer;
mod record;
mod replay;
mod spooler;
pub mod tail;
mod topics;

pub use acks::Held;
pub use producer::{client_config, Produced, Producer, ProducerError, SPOOLED_AT_HEADER};
pub use record::Origin;
pub use spooler::{SpoolCounters, Spooler};
