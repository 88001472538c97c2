//! The spool itself: opening (recovery), appending, acknowledging, and
//! deleting segments whose records are all acknowledged.
//!
//! One mutex guards the in-memory state and the writes to the active
//! segment (a write is one `write_all` of whole frames, so files only ever
//! hold whole records, plus a torn tail after a crash). fsync runs outside
//! it (see `commit`), and the progress has its own mutex so that
//! acknowledgements are made durable in the order they were taken.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use super::error::{IoContext, SpoolError};
use super::failures::Failures;
use super::frame::{self, frame_len};
use super::index::Index;
use super::options::{SpoolOptions, SyncPolicy};
use super::progress::{Progress, ProgressFile};
use super::recover::{recover, Recovery};
use super::segment::{self, Segment};

/// A durable, append-only spool of records on local disk: records get
/// increasing sequence numbers, are read back oldest first
/// ([`super::Reader`]) and leave once acknowledged ([`Spool::ack`]).
/// Shared between threads behind an `Arc`; every call blocks on disk, so
/// async callers use `spawn_blocking`.
#[derive(Debug)]
pub struct Spool {
    pub(super) options: SpoolOptions,
    pub(super) state: Mutex<State>,
    /// Woken when a sync ends (group commit).
    pub(super) synced: Condvar,
    progress: Mutex<ProgressFile>,
    /// An exclusive lock on `<path>/lock` while open: two stores writing
    /// one directory would destroy each other's records.
    _lock: File,
}

/// The segment being appended to.
#[derive(Debug)]
pub(super) struct Active {
    /// Its key in `State::segments`.
    pub first: u64,
    /// Shared with a sync running outside the lock.
    pub file: Arc<File>,
    /// Bytes known to be on disk (fsync'd).
    pub synced_len: u64,
    /// A failed write left bytes past the segment's length that could not
    /// be cut yet: cut them before the next write.
    pub dirty: bool,
}

/// Everything the mutex guards.
#[derive(Debug)]
pub(super) struct State {
    pub index: Index,
    pub segments: BTreeMap<u64, Segment>,
    pub active: Active,
    /// Every sequence number below this is durable (per the sync policy).
    pub durable_next: u64,
    /// A sync is running: others wait for it rather than start their own.
    pub syncing: bool,
    pub failures: Failures,
    /// Bytes of all segment files (the `max_bytes` measure).
    pub disk_bytes: u64,
    pub corrupt_records: u64,
    pub syncs: u64,
    scratch: Vec<u8>,
}

/// A snapshot of the spool's figures, for metrics and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolStats {
    /// Records not yet acknowledged.
    pub records: u64,
    /// Their bytes on disk.
    pub bytes: u64,
    /// Bytes of all segment files (acknowledged records included until
    /// their segment goes).
    pub disk_bytes: u64,
    pub segments: usize,
    /// The oldest unacknowledged record's number.
    pub oldest_seq: Option<u64>,
    /// The number the next record gets.
    pub next_seq: u64,
    /// Damaged records skipped, at recovery and since.
    pub corrupt_records: u64,
    /// fsyncs done for appends (fewer than appends under load: group commit).
    pub syncs: u64,
}

impl Spool {
    /// Opens (or creates) the spool under `options.path`, recovering from
    /// whatever a crash left (see [`Recovery`]).
    pub fn open(options: SpoolOptions) -> Result<(Arc<Spool>, Recovery), SpoolError> {
        let dir = options.path.clone();
        std::fs::create_dir_all(&dir).on("create", &dir)?;
        let lock = lock_dir(&dir)?;
        let (progress_file, progress) = ProgressFile::load(&dir)?;
        let recovered = recover(&dir, &progress)?;
        let (index, mut segments) = (recovered.index, recovered.segments);
        // An empty newest segment is dropped rather than reused: its name
        // may be above the next number.
        if let Some(entry) = segments.last_entry() {
            if entry.get().len == 0 {
                let path = entry.remove().path;
                std::fs::remove_file(&path).on("remove", &path)?;
            }
        }
        let active = match segments.last_key_value() {
            Some((&first, seg)) if seg.len < options.segment_bytes => Active {
                first,
                file: Arc::new(segment::open_append(&seg.path)?),
                synced_len: seg.len,
                dirty: false,
            },
            _ => {
                let first = index.next_seq();
                let (path, file) = segment::create(&dir, first)?;
                segments.insert(
                    first,
                    Segment {
                        path,
                        len: 0,
                        pending: 0,
                    },
                );
                Active {
                    first,
                    file: Arc::new(file),
                    synced_len: 0,
                    dirty: false,
                }
            }
        };
        let state = State {
            durable_next: index.next_seq(),
            disk_bytes: segments.values().map(|s| s.len).sum(),
            index,
            segments,
            active,
            syncing: false,
            failures: Failures::default(),
            corrupt_records: recovered.report.corrupt_records,
            syncs: 0,
            scratch: Vec::new(),
        };
        let spool = Arc::new(Spool {
            options,
            state: Mutex::new(state),
            synced: Condvar::new(),
            progress: Mutex::new(progress_file),
            _lock: lock,
        });
        // Segments whose records were all acknowledged before the crash.
        spool.delete_finished();
        Ok((spool, recovered.report))
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends a record and returns its sequence number once it is durable
    /// per the sync policy (`Always`: fsync'd, sharing the fsync with
    /// concurrent appends). On an error nothing of it counts as held.
    pub fn append(&self, tenant: &str, payload: &[u8]) -> Result<u64, SpoolError> {
        let seq = self.write(tenant, payload)?;
        self.wait_durable(seq)?;
        Ok(seq)
    }

    /// Writes a record without waiting for it to be durable; pair with
    /// [`Spool::wait_durable`]. Refused, writing nothing, over a cap.
    pub fn write(&self, tenant: &str, payload: &[u8]) -> Result<u64, SpoolError> {
        let need = frame_len(tenant, payload) as u64;
        let max = self.options.segment_bytes.min(frame::MAX_BODY as u64);
        if need > max || tenant.len() > usize::from(u16::MAX) {
            return Err(SpoolError::TooLarge { size: need, max });
        }
        let mut st = self.lock();
        self.check_caps(&st, tenant, need)?;
        st.cut_dirty_tail()?;
        let len = st.active_len();
        if len > 0 && len + need > self.options.segment_bytes {
            self.roll(&mut st)?;
        }
        let seq = st.index.next_seq();
        let mut scratch = std::mem::take(&mut st.scratch);
        scratch.clear();
        frame::encode(&mut scratch, seq, tenant, payload);
        let written = (&*st.active.file).write_all(&scratch);
        st.scratch = scratch;
        if let Err(e) = written {
            let len = st.active_len();
            // Undo a partial write so the file holds whole records only.
            st.active.dirty = st.active.file.set_len(len).is_err();
            return Err(SpoolError::io("write", &st.active_path(), e));
        }
        // `seq` is the next number, so the index takes it.
        let _ = st.index.push(seq, tenant, need as u32);
        let first = st.active.first;
        if let Some(seg) = st.segments.get_mut(&first) {
            seg.len += need;
            seg.pending += 1;
        }
        st.disk_bytes += need;
        if self.options.sync == SyncPolicy::Never {
            // Written counts as durable: readable at once, never abandoned.
            st.durable_next = seq + 1;
            st.active.synced_len = st.active_len();
        }
        Ok(seq)
    }

    fn check_caps(&self, st: &State, tenant: &str, need: u64) -> Result<(), SpoolError> {
        let (held, max) = (st.disk_bytes, self.options.max_bytes);
        if held + need > max {
            return Err(SpoolError::Full { held, max, need });
        }
        let (held, max) = (st.index.tenant_bytes(tenant), self.options.tenant_max_bytes);
        if held + need > max {
            let tenant = tenant.to_owned();
            return Err(SpoolError::TenantFull {
                tenant,
                held,
                max,
                need,
            });
        }
        Ok(())
    }

    /// Closes the active segment (fsync'd first, so only the newest segment
    /// can ever have a torn tail) and starts the next one.
    fn roll(&self, st: &mut State) -> Result<(), SpoolError> {
        st.sync_active_locked()?;
        let first = st.index.next_seq();
        let (path, file) = segment::create(&self.options.path, first)?;
        st.segments.insert(
            first,
            Segment {
                path,
                len: 0,
                pending: 0,
            },
        );
        st.active = Active {
            first,
            file: Arc::new(file),
            synced_len: 0,
            dirty: false,
        };
        Ok(())
    }

    /// Acknowledges records (Kafka took them), in any order; unknown,
    /// repeated or not yet durable numbers are ignored. When this returns
    /// Ok the acknowledgement is durable (progress fsync'd), and segments
    /// left with no pending record are deleted (after, never before).
    /// Returns how many records were newly acknowledged.
    pub fn ack(&self, seqs: &[u64]) -> Result<u64, SpoolError> {
        Ok(self.ack_each(seqs)?.len() as u64)
    }

    /// As [`Spool::ack`], returning the numbers newly acknowledged (those
    /// not acknowledged before, by this call or an earlier one).
    pub fn ack_each(&self, seqs: &[u64]) -> Result<Vec<u64>, SpoolError> {
        let mut progress_file = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        let (acked, progress) = {
            let mut st = self.lock();
            let mut acked = Vec::new();
            for &seq in seqs {
                if seq >= st.durable_next || st.failures.contains(seq) {
                    continue;
                }
                if st.index.finish(seq).is_some() {
                    acked.push(seq);
                    if let Some((_, seg)) = st.segments.range_mut(..=seq).next_back() {
                        seg.pending = seg.pending.saturating_sub(1);
                    }
                }
            }
            let progress = Progress {
                watermark: st.index.low_watermark(),
                runs: st.index.done_runs(),
            };
            (acked, progress)
        };
        // Also when nothing new was acknowledged: an earlier store may have
        // failed, and the segments deleted below rely on it.
        progress_file.store(&progress)?;
        // Only now, with the progress durable, may segments go.
        self.delete_finished();
        Ok(acked)
    }

    /// Deletes every closed segment with no pending record. Called only
    /// once the progress that acknowledges those records is durable (at
    /// open it was read from disk; in `ack` it was just fsync'd).
    fn delete_finished(&self) {
        let finished: Vec<(u64, PathBuf)> = {
            let mut st = self.lock();
            let active = st.active.first;
            let firsts: Vec<u64> = st
                .segments
                .iter()
                .filter(|(&first, seg)| first != active && seg.pending == 0)
                .map(|(&first, _)| first)
                .collect();
            let mut out = Vec::new();
            for first in firsts {
                if let Some(seg) = st.segments.remove(&first) {
                    st.disk_bytes -= seg.len;
                    out.push((first, seg.path));
                }
            }
            out
        };
        for (_, path) in finished {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // Left behind: all its records are acknowledged, so the
                // next open skips and deletes it.
                Err(e) => tracing::warn!(file = %path.display(), error = %e,
                    "spool: cannot delete an acknowledged segment"),
            }
        }
    }

    /// The spool's figures now.
    pub fn stats(&self) -> SpoolStats {
        let st = self.lock();
        SpoolStats {
            records: st.index.pending_records(),
            bytes: st.index.pending_bytes(),
            disk_bytes: st.disk_bytes,
            segments: st.segments.len(),
            oldest_seq: st.index.oldest(),
            next_seq: st.index.next_seq(),
            corrupt_records: st.corrupt_records,
            syncs: st.syncs,
        }
    }

    /// The cap on the bytes of segment files (`max_bytes`).
    pub fn max_bytes(&self) -> u64 {
        self.options.max_bytes
    }

    /// Bytes of one tenant's unacknowledged records.
    pub fn tenant_bytes(&self, tenant: &str) -> u64 {
        self.lock().index.tenant_bytes(tenant)
    }

    /// Every tenant with unacknowledged records: name, bytes, records.
    pub fn tenants(&self) -> Vec<(String, u64, u64)> {
        let st = self.lock();
        st.index
            .tenants()
            .map(|(t, b, r)| (t.to_owned(), b, r))
            .collect()
    }

    /// The number the next record gets.
    #[cfg(test)]
    pub(super) fn next_seq_for_test(&self) -> u64 {
        self.lock().index.next_seq()
    }

    /// The active segment's durable length: what a crash keeps (tests cut
    /// files past it).
    #[cfg(test)]
    pub(super) fn durable_len(&self) -> (PathBuf, u64) {
        let st = self.lock();
        (st.active_path(), st.active.synced_len)
    }
}

/// Takes the directory's lock file, or says who has it.
fn lock_dir(dir: &std::path::Path) -> Result<File, SpoolError> {
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .on("create", &path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(SpoolError::InUse { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(SpoolError::io("lock", &path, e)),
    }
}

impl State {
    pub(super) fn active_len(&self) -> u64 {
        self.segments.get(&self.active.first).map_or(0, |s| s.len)
    }

    pub(super) fn active_path(&self) -> PathBuf {
        self.segments
            .get(&self.active.first)
            .map(|s| s.path.clone())
            .unwrap_or_default()
    }

    /// Cuts bytes a failed write left, before writing after them.
    fn cut_dirty_tail(&mut self) -> Result<(), SpoolError> {
        if self.active.dirty {
            let len = self.active_len();
            self.active
                .file
                .set_len(len)
                .on("truncate", &self.active_path())?;
            self.active.dirty = false;
        }
        Ok(())
    }

    /// Records a damaged record met by a reader.
    pub(super) fn note_corrupt(&mut self) {
        self.corrupt_records += 1;
    }
}
