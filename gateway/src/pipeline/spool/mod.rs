//! The spool: a durable, append-only store on the node's disk for records
//! Kafka cannot take yet (issue 17), replayed oldest first once it can.
//! This module is the store alone; the producer plugs into it.
//!
//! - Records are opaque bytes with a tenant ([`Spool::append`]), framed
//!   with their length and a CRC32C (`frame`) in segment files of
//!   bounded size (`segment`), each with an increasing sequence number.
//! - An append is acknowledged once fsync'd (by default), concurrent
//!   appends sharing one fsync (`commit`).
//! - A [`Reader`] streams pending records oldest first, one segment in
//!   memory at most.
//! - [`Spool::ack`] takes acknowledgements in any order, makes them durable
//!   in a progress record (`progress`) and only then deletes segments
//!   whose records are all acknowledged.
//! - Opening recovers from a crash (`recover`): a torn tail is cut, a
//!   damaged record skipped, counted and its segment set aside, a missing
//!   segment tolerated.
//! - [`SpoolRecord`] is the Kafka record a spooled event stands for, with
//!   its encoding (the store itself keeps opaque bytes).
//! - Caps on total bytes and on each tenant's bytes refuse an append, with
//!   a typed [`SpoolError`], before anything is written.

mod commit;
mod error;
mod failures;
mod frame;
mod index;
mod options;
mod progress;
mod reader;
mod record;
mod recover;
mod segment;
mod store;

pub use error::{DiskFault, SpoolError};
pub use frame::frame_len;
pub use options::{SpoolOptions, SyncPolicy};
pub use reader::{Reader, SpooledRecord};
pub use record::{RecordError, SpoolRecord};
pub use recover::Recovery;
pub use store::{Spool, SpoolStats};

#[cfg(test)]
mod tests;
