//! Reading the spool back, oldest first, for replay: one segment (or the
//! new part of the active one) in memory at a time, never the whole spool.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use super::error::{IoContext, SpoolError};
use super::frame::{self, Decoded};
use super::store::Spool;

/// A record read back from the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledRecord {
    pub seq: u64,
    pub tenant: String,
    pub payload: Vec<u8>,
}

/// A cursor over the spool's pending, durable records in sequence order.
/// It returns each record once; `Ok(None)` means caught up (call again
/// later: records appended since are returned then). Records acknowledged
/// before the cursor reaches them are skipped.
#[derive(Debug)]
pub struct Reader {
    spool: Arc<Spool>,
    /// The lowest number still to return.
    next: u64,
    /// The segment being read (its first number) and how far.
    segment: Option<u64>,
    pos: u64,
    path: PathBuf,
    buf: Vec<u8>,
    at: usize,
}

impl Spool {
    /// A reader from the oldest pending record.
    pub fn reader(self: &Arc<Self>) -> Reader {
        Reader {
            spool: self.clone(),
            next: 0,
            segment: None,
            pos: 0,
            path: PathBuf::new(),
            buf: Vec::new(),
            at: 0,
        }
    }
}

/// Where the reader goes next.
enum Step {
    /// Read `[pos, limit)` of the current segment.
    Read { limit: u64 },
    /// Caught up with what is durable.
    End,
}

impl Reader {
    /// The next pending record, if one is durable.
    pub fn next_record(&mut self) -> Result<Option<SpooledRecord>, SpoolError> {
        loop {
            while self.at < self.buf.len() {
                let offset = self.pos - (self.buf.len() - self.at) as u64;
                match frame::decode(&self.buf[self.at..]) {
                    Decoded::Frame(f) => {
                        self.at += f.len;
                        if f.seq < self.next || !self.pending(f.seq) {
                            continue;
                        }
                        self.next = f.seq + 1;
                        return Ok(Some(SpooledRecord {
                            seq: f.seq,
                            tenant: f.tenant.to_owned(),
                            payload: f.payload.to_vec(),
                        }));
                    }
                    // Damaged since it was opened (it was checked then):
                    // the rest of this read is skipped, never retried.
                    Decoded::Incomplete | Decoded::Bad(_) => {
                        tracing::warn!(file = %self.path.display(), offset,
                            "spool: damaged record met while reading, rest of the segment skipped");
                        self.spool.lock().note_corrupt();
                        self.at = self.buf.len();
                    }
                }
            }
            match self.step() {
                Step::End => return Ok(None),
                Step::Read { limit } => self.fill(limit)?,
            }
        }
    }

    fn pending(&self, seq: u64) -> bool {
        let st = self.spool.lock();
        seq < st.durable_next && st.index.is_pending(seq)
    }

    /// Picks what to read: more of the current segment, else the next one.
    fn step(&mut self) -> Step {
        let st = self.spool.lock();
        loop {
            let current = self
                .segment
                .and_then(|first| st.segments.get_key_value(&first));
            let Some((&first, seg)) = current else {
                // Not started, or the segment is gone (all acknowledged).
                let from = self.segment.map_or(0, |f| f.saturating_add(1));
                let Some((&first, seg)) = st.segments.range(from..).next() else {
                    return Step::End;
                };
                self.segment = Some(first);
                self.path = seg.path.clone();
                self.pos = 0;
                continue;
            };
            let active = first == st.active.first;
            let limit = if active {
                st.active.synced_len
            } else {
                seg.len
            };
            if self.pos < limit {
                return Step::Read { limit };
            }
            if active {
                return Step::End;
            }
            match st.segments.range(first + 1..).next() {
                Some((&next, seg)) => {
                    self.segment = Some(next);
                    self.path = seg.path.clone();
                    self.pos = 0;
                }
                None => return Step::End,
            }
        }
    }

    /// Reads `[pos, limit)` of the current segment into the buffer.
    fn fill(&mut self, limit: u64) -> Result<(), SpoolError> {
        let path = self.path.clone();
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Deleted after its last acknowledgement: nothing to read.
                self.buf.clear();
                self.at = 0;
                self.pos = limit;
                return Ok(());
            }
            Err(e) => return Err(SpoolError::io("open", &path, e)),
        };
        file.seek(SeekFrom::Start(self.pos)).on("seek", &path)?;
        self.buf.clear();
        let want = limit - self.pos;
        let read = file
            .take(want)
            .read_to_end(&mut self.buf)
            .on("read", &path)?;
        if (read as u64) < want {
            tracing::warn!(file = %path.display(), want, read, "spool: segment shorter than written");
        }
        self.at = 0;
        self.pos = limit;
        Ok(())
    }
}
