//! Opening a spool that may have crashed: every segment is read once,
//! oldest first; a torn tail of the newest segment is cut, damage anywhere
//! else is skipped, counted, logged, and its segment rewritten without it
//! (the original kept as `*.corrupt`). What comes out is exactly the
//! durable, unacknowledged records, in order, in the index.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::error::{IoContext, SpoolError};
use super::frame::{Item, Scanner};
use super::index::Index;
use super::progress::Progress;
use super::segment::{self, Segment};

/// What recovery found and did, for the start-up log line and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Unacknowledged records found, to be replayed.
    pub records: u64,
    /// Their bytes on disk.
    pub bytes: u64,
    /// Segment files found.
    pub segments: usize,
    /// Damaged stretches skipped (each one record or more).
    pub corrupt_records: u64,
    /// Bytes of a torn tail cut from the newest segment.
    pub torn_bytes: u64,
    /// Damaged segments' originals, kept aside.
    pub set_aside: Vec<PathBuf>,
}

/// The spool as found on disk.
pub(super) struct Recovered {
    pub index: Index,
    pub segments: BTreeMap<u64, Segment>,
    pub report: Recovery,
}

/// Reads every segment under `dir` against the durable `progress`.
pub(super) fn recover(dir: &Path, progress: &Progress) -> Result<Recovered, SpoolError> {
    let files = segment::list(dir)?;
    let mut walk = Walk {
        progress,
        index: Index::starting_at(progress.watermark),
        last_seq: None,
        report: Recovery::default(),
    };
    let mut segments = BTreeMap::new();
    for (i, (first, path)) in files.iter().enumerate() {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            // Removed under us: tolerated like any missing segment.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(SpoolError::io("read", path, e)),
        };
        let bounds = Bounds {
            first: *first,
            next: files.get(i + 1).map(|(next, _)| *next),
            newest: i + 1 == files.len(),
        };
        let segment = walk.segment(path, &bytes, bounds)?;
        segments.insert(*first, segment);
    }
    // Never hand out a number the progress or a segment already names.
    let after = walk.last_seq.map_or(0, |s| s.saturating_add(1));
    if let Err(gap) = walk.index.skip_to(after.max(progress.end())) {
        tracing::warn!(gap, "spool: progress names numbers far beyond the records");
    }
    walk.report.segments = segments.len();
    walk.report.records = walk.index.pending_records();
    walk.report.bytes = walk.index.pending_bytes();
    Ok(Recovered {
        index: walk.index,
        segments,
        report: walk.report,
    })
}

/// Where one segment sits among the others.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    /// The first number its name allows.
    first: u64,
    /// The next segment's first number: its records stay below.
    next: Option<u64>,
    /// The newest segment: a bad tail there is a torn write, not damage.
    newest: bool,
}

/// Recovery's state across segments.
struct Walk<'a> {
    progress: &'a Progress,
    index: Index,
    last_seq: Option<u64>,
    report: Recovery,
}

impl Walk<'_> {
    fn segment(&mut self, path: &Path, bytes: &[u8], at: Bounds) -> Result<Segment, SpoolError> {
        if let Some(last) = self.last_seq {
            if at.first > last.saturating_add(1) && !self.progress.acked(last + 1) {
                tracing::warn!(file = %path.display(), from = last + 1, to = at.first - 1,
                    "spool: records missing before this segment (a segment lost?)");
            }
        }
        let mut good: Vec<Range<usize>> = Vec::new();
        let (mut damaged, mut cut, mut pending) = (false, None, 0);
        for item in Scanner::new(bytes) {
            let (offset, why) = match item {
                Item::Record { at: offset, frame } => {
                    let seq = frame.seq;
                    let in_order = seq >= at.first
                        && at.next.is_none_or(|next| seq < next)
                        && self.last_seq.is_none_or(|last| seq > last);
                    let why = if !in_order {
                        "sequence number out of order"
                    } else if self.progress.acked(seq) {
                        self.keep(seq, offset..offset + frame.len, &mut good);
                        continue;
                    } else if self.index.push(seq, frame.tenant, frame.len as u32).is_ok() {
                        pending += 1;
                        self.keep(seq, offset..offset + frame.len, &mut good);
                        continue;
                    } else {
                        "sequence number jumps too far"
                    };
                    (offset, why)
                }
                Item::Damage {
                    at: offset, why, ..
                } => (offset, why),
                Item::Tail { at: offset, why } if at.newest => {
                    cut = Some(offset);
                    tracing::warn!(file = %path.display(), offset, why,
                        bytes = bytes.len() - offset, "spool: cutting a torn tail");
                    break;
                }
                Item::Tail { at: offset, why } => (offset, why),
            };
            damaged = true;
            self.report.corrupt_records += 1;
            tracing::warn!(file = %path.display(), offset, why, "spool: skipping a damaged record");
        }
        let mut len = bytes.len() as u64;
        if let Some(offset) = cut {
            self.report.torn_bytes += len - offset as u64;
        }
        if damaged {
            let kept: Vec<u8> = good
                .iter()
                .flat_map(|r| &bytes[r.clone()])
                .copied()
                .collect();
            let aside = segment::set_aside(path, &kept)?;
            tracing::warn!(file = %path.display(), aside = %aside.display(),
                kept = kept.len(), "spool: damaged segment rewritten, original set aside");
            self.report.set_aside.push(aside);
            len = kept.len() as u64;
        } else if at.newest {
            // Cut the torn tail and make what is left durable: records
            // written but not yet fsync'd before the crash are kept only
            // once they are on disk for sure.
            let file = OpenOptions::new().write(true).open(path).on("open", path)?;
            if let Some(offset) = cut {
                file.set_len(offset as u64).on("truncate", path)?;
                len = offset as u64;
            }
            file.sync_all().on("fsync", path)?;
        }
        Ok(Segment {
            path: path.to_owned(),
            len,
            pending,
        })
    }

    fn keep(&mut self, seq: u64, range: Range<usize>, good: &mut Vec<Range<usize>>) {
        self.last_seq = Some(seq);
        good.push(range);
    }
}
