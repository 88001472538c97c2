//! Group commit: appenders that wait for durability at the same time share
//! one fsync. The first waiter to find no sync running becomes the leader:
//! it notes how far the file is written, fsyncs outside the lock, then
//! moves `durable_next` up and wakes everyone; those whose record it
//! covered return, the others (written during the sync) elect the next.
//!
//! A failed fsync leaves the unsynced pages in an unknown state (Linux may
//! drop them and report success on a later fsync), so the records written
//! since the last good sync are abandoned: cut from the file, their bytes
//! released, and their waiters told. Nothing is acknowledged that is not
//! on disk, and the spool stays usable.

use std::io;

use super::error::{IoContext, SpoolError};
use super::options::SyncPolicy;
use super::store::{Spool, State};

impl Spool {
    /// Returns once record `seq` is durable, running or joining a shared
    /// fsync; an error if its sync failed (the record is then not held).
    pub fn wait_durable(&self, seq: u64) -> Result<(), SpoolError> {
        let mut st = self.lock();
        loop {
            if let Some((_, _, kind, message)) = st.failures.find(seq) {
                let source = io::Error::new(*kind, message.clone());
                return Err(SpoolError::io("fsync", &st.active_path(), source));
            }
            if seq < st.durable_next {
                return Ok(());
            }
            // Else a sync could never cover it: no endless loop of fsyncs.
            let next = st.index.next_seq();
            if seq >= next {
                return Err(SpoolError::NotWritten { seq, next });
            }
            if st.syncing {
                st = self.synced.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Lead: sync what is written now, outside the lock.
            st.syncing = true;
            let (target, first, len) = (st.index.next_seq(), st.active.first, st.active_len());
            let file = st.active.file.clone();
            drop(st);
            let result = file.sync_data();
            st = self.lock();
            st.syncing = false;
            match result {
                Ok(()) => {
                    st.syncs += 1;
                    st.durable_next = st.durable_next.max(target);
                    if st.active.first == first {
                        st.active.synced_len = st.active.synced_len.max(len);
                    }
                }
                // After a roll the old segment was fsync'd by the roll.
                Err(e) if st.active.first == first => st.abandon_unsynced(e),
                Err(_) => {}
            }
            self.synced.notify_all();
        }
    }

    /// Makes every record written so far durable, whatever the policy.
    pub fn sync(&self) -> Result<(), SpoolError> {
        if self.options.sync == SyncPolicy::Never {
            let (file, path) = {
                let st = self.lock();
                (st.active.file.clone(), st.active_path())
            };
            return file.sync_data().on("fsync", &path);
        }
        let next = self.lock().index.next_seq();
        match next.checked_sub(1) {
            Some(last) => self.wait_durable(last),
            None => Ok(()),
        }
    }
}

impl State {
    /// fsyncs the active segment under the lock (at a roll, which is rare).
    pub(super) fn sync_active_locked(&mut self) -> Result<(), SpoolError> {
        let path = self.active_path();
        match self.active.file.sync_data() {
            Ok(()) => {
                self.syncs += 1;
                self.durable_next = self.index.next_seq();
                self.active.synced_len = self.active_len();
                Ok(())
            }
            Err(e) => {
                let error = SpoolError::io("fsync", &path, io::Error::new(e.kind(), e.to_string()));
                self.abandon_unsynced(e);
                Err(error)
            }
        }
    }

    /// Gives up the records written since the last good sync of the active
    /// segment: cut from the file, released from the index, failed for
    /// their waiters.
    fn abandon_unsynced(&mut self, error: io::Error) {
        let (lo, hi) = (self.durable_next, self.index.next_seq());
        let path = self.active_path();
        tracing::warn!(file = %path.display(), %error, records = hi - lo,
            "spool: fsync failed, records since the last good sync abandoned");
        for seq in lo..hi {
            self.index.finish(seq);
        }
        let synced = self.active.synced_len;
        let first = self.active.first;
        if let Some(seg) = self.segments.get_mut(&first) {
            self.disk_bytes -= seg.len.saturating_sub(synced);
            seg.len = synced;
            seg.pending = seg.pending.saturating_sub(hi - lo);
        }
        // Cut now, and again before the next write: cheap, and it does not
        // trust the outcome of a call on a file that just failed.
        let _ = self.active.file.set_len(synced);
        self.active.dirty = true;
        self.failures.add(lo, hi, &error);
        self.durable_next = hi;
    }
}
