//! What can go wrong with the spool, typed so the caller can answer each
//! case (a full spool is a 503 with `Retry-After`, a disk fault a 503 with
//! the reason in `/readyz`), and worded to name the file and the fault.

use std::io;
use std::path::{Path, PathBuf};

/// An operation on the spool that did not happen. After any of these the
/// store is still usable: nothing was acknowledged that is not on disk.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool as a whole holds `max_bytes` already; nothing was written.
    #[error("spool full: {held} of {max} bytes held, a record of {need} bytes does not fit")]
    Full { held: u64, max: u64, need: u64 },
    /// This tenant's share is used up; nothing was written.
    #[error("spool share of tenant {tenant} full: {held} of {max} bytes held, a record of {need} bytes does not fit")]
    TenantFull {
        tenant: String,
        held: u64,
        max: u64,
        need: u64,
    },
    /// A record that can never fit a segment (or a tenant name over 64 KiB).
    #[error("record of {size} bytes is larger than a segment ({max} bytes)")]
    TooLarge { size: u64, max: u64 },
    /// Another open spool (this process or another) holds the directory.
    #[error("spool: {} is in use by another process or store", path.display())]
    InUse { path: PathBuf },
    /// A sequence number the spool never handed out (a caller's bug).
    #[error("spool: record {seq} was never written (next is {next})")]
    NotWritten { seq: u64, next: u64 },
    /// The file system refused (full disk, read-only, permission, I/O).
    #[error("spool: cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The disk faults an operator acts on differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFault {
    /// No space left (ENOSPC, EDQUOT).
    Full,
    /// The file system went read-only (EROFS).
    ReadOnly,
    /// Permission lost (EACCES, EPERM).
    Permission,
    /// Any other I/O error.
    Other,
}

impl SpoolError {
    /// An I/O error on `path` during `op`.
    pub(super) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        SpoolError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }

    /// Which disk fault this is, if it is one.
    pub fn disk_fault(&self) -> Option<DiskFault> {
        let SpoolError::Io { source, .. } = self else {
            return None;
        };
        Some(match source.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => DiskFault::Full,
            io::ErrorKind::ReadOnlyFilesystem => DiskFault::ReadOnly,
            io::ErrorKind::PermissionDenied => DiskFault::Permission,
            _ => DiskFault::Other,
        })
    }

    /// Whether trying again later may succeed (everything but a record too
    /// large to ever fit and a caller's bug).
    pub fn retryable(&self) -> bool {
        !matches!(
            self,
            SpoolError::TooLarge { .. } | SpoolError::NotWritten { .. }
        )
    }
}

/// Shorthand for `map_err` on an I/O result.
pub(super) trait IoContext<T> {
    fn on(self, op: &'static str, path: &Path) -> Result<T, SpoolError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn on(self, op: &'static str, path: &Path) -> Result<T, SpoolError> {
        self.map_err(|source| SpoolError::io(op, path, source))
    }
}
