//! How a spool is set up: where, how big, how durable.

use std::path::PathBuf;

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// An append returns only once its record is fsync'd; appenders that
    /// wait at the same time share one fsync (group commit). The default:
    /// the spool's promise is that an accepted event survives a crash.
    #[default]
    Always,
    /// An append returns once the record is written to the OS; a crash of
    /// the machine (not only of the process) may lose recent records. For
    /// benchmarks and disposable nodes.
    Never,
}

/// The spool's settings. `Default` gives safe values except `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolOptions {
    /// The directory of segment and progress files (created if missing).
    pub path: PathBuf,
    /// The most bytes of segment files on disk (the node's total).
    pub max_bytes: u64,
    /// The most bytes of unacknowledged records one tenant may hold.
    pub tenant_max_bytes: u64,
    /// A segment is closed and a new one started past this size; a record
    /// larger than this is refused. It also bounds a reader's memory.
    pub segment_bytes: u64,
    /// When an append counts as durable.
    pub sync: SyncPolicy,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            path: PathBuf::new(),
            max_bytes: 1 << 30,
            tenant_max_bytes: 256 << 20,
            segment_bytes: 16 << 20,
            sync: SyncPolicy::Always,
        }
    }
}
