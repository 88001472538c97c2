//! The durable record of what Kafka has taken: the lowest unacknowledged
//! sequence number plus the acknowledged runs above it.
//!
//! It lives in two slot files written in turn, each overwritten in place
//! and fsync'd; at open the valid slot with the highest generation wins. A
//! write torn by a crash leaves the other slot, one step older (a replay,
//! never a loss), and overwriting in place needs no new disk space, so
//! acknowledgements (and the segment deletions they allow) still work on a
//! full disk.
//!
//! Slot layout, little-endian: `magic "WSPP" | generation u64 | watermark
//! u64 | runs u32 | (start u64, count u64) * runs | crc32c u32` (the crc
//! covers everything before it). Bytes after it are left over from a longer
//! earlier write and ignored.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::error::{IoContext, SpoolError};
use super::segment::sync_dir;

const MAGIC: [u8; 4] = *b"WSPP";
const SLOTS: [&str; 2] = ["progress.0", "progress.1"];

/// What has been acknowledged, as last made durable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Progress {
    /// Every sequence number below this is acknowledged.
    pub watermark: u64,
    /// Acknowledged runs above the watermark: `(start, count)`, ascending.
    pub runs: Vec<(u64, u64)>,
}

impl Progress {
    /// Whether `seq` is acknowledged.
    pub(super) fn acked(&self, seq: u64) -> bool {
        if seq < self.watermark {
            return true;
        }
        let i = self.runs.partition_point(|&(start, _)| start <= seq);
        i > 0 && seq - self.runs[i - 1].0 < self.runs[i - 1].1
    }

    /// The first sequence number after everything this names.
    pub(super) fn end(&self) -> u64 {
        let last = self.runs.last().map_or(0, |&(s, c)| s.saturating_add(c));
        last.max(self.watermark)
    }
}

fn encode(generation: u64, progress: &Progress) -> Vec<u8> {
    let mut out = Vec::with_capacity(28 + 16 * progress.runs.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&progress.watermark.to_le_bytes());
    out.extend_from_slice(&(progress.runs.len() as u32).to_le_bytes());
    for (start, count) in &progress.runs {
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn u64_at(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}

fn decode(buf: &[u8]) -> Result<(u64, Progress), &'static str> {
    if buf.get(..4) != Some(&MAGIC[..]) {
        return Err("bad magic");
    }
    let generation = u64_at(buf, 4).ok_or("cut short")?;
    let watermark = u64_at(buf, 12).ok_or("cut short")?;
    let count = buf.get(20..24).ok_or("cut short")?;
    let count = u32::from_le_bytes([count[0], count[1], count[2], count[3]]) as usize;
    let end = count
        .checked_mul(16)
        .and_then(|n| n.checked_add(24))
        .filter(|&end| end + 4 <= buf.len())
        .ok_or("cut short")?;
    let stored = u32::from_le_bytes([buf[end], buf[end + 1], buf[end + 2], buf[end + 3]]);
    if crc32c::crc32c(&buf[..end]) != stored {
        return Err("checksum mismatch");
    }
    let runs = (0..count)
        .map(|i| (u64_at(buf, 24 + 16 * i), u64_at(buf, 32 + 16 * i)))
        .map(|(s, c)| Some((s?, c?)))
        .collect::<Option<Vec<_>>>()
        .ok_or("cut short")?;
    Ok((generation, Progress { watermark, runs }))
}

/// The two slot files and which one to write next.
#[derive(Debug)]
pub(super) struct ProgressFile {
    dir: PathBuf,
    generation: u64,
    /// The progress last made durable.
    stored: Progress,
}

impl ProgressFile {
    /// Reads the newest valid slot under `dir` (none: nothing acknowledged
    /// yet). A damaged slot is logged and passed over.
    pub(super) fn load(dir: &Path) -> Result<(ProgressFile, Progress), SpoolError> {
        let mut best: Option<(u64, Progress)> = None;
        for name in SLOTS {
            let path = dir.join(name);
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(SpoolError::io("read", &path, e)),
            };
            match decode(&bytes) {
                Ok((generation, progress)) => {
                    if best.as_ref().is_none_or(|(g, _)| generation > *g) {
                        best = Some((generation, progress));
                    }
                }
                Err(why) => tracing::warn!(
                    file = %path.display(), why,
                    "spool: progress slot unreadable, using the other one"
                ),
            }
        }
        let (generation, progress) = best.unwrap_or_default();
        let file = ProgressFile {
            dir: dir.to_owned(),
            generation,
            stored: progress.clone(),
        };
        Ok((file, progress))
    }

    /// Writes `progress` over the older slot and fsyncs it, unless it is
    /// durable already; when this returns Ok the progress survives a crash.
    /// (After a failed write the next call writes again.)
    pub(super) fn store(&mut self, progress: &Progress) -> Result<(), SpoolError> {
        if *progress == self.stored {
            return Ok(());
        }
        let generation = self.generation + 1;
        let path = self.dir.join(SLOTS[(generation % 2) as usize]);
        let existed = path.exists();
        let mut file: File = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .on("open", &path)?;
        file.seek(SeekFrom::Start(0)).on("seek", &path)?;
        file.write_all(&encode(generation, progress))
            .on("write", &path)?;
        file.sync_data().on("fsync", &path)?;
        if !existed {
            sync_dir(&self.dir)?;
        }
        self.generation = generation;
        self.stored = progress.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_valid_slot_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, progress) = ProgressFile::load(dir.path()).unwrap();
        assert_eq!(progress, Progress::default());
        let first = Progress {
            watermark: 5,
            runs: vec![(7, 2), (20, 1)],
        };
        file.store(&first).unwrap();
        let second = Progress {
            watermark: 9,
            runs: vec![],
        };
        file.store(&second).unwrap();
        assert_eq!(ProgressFile::load(dir.path()).unwrap().1, second);
        // A torn write of the newest slot falls back to the older one.
        let newest = dir.path().join(SLOTS[0]);
        let mut bytes = std::fs::read(&newest).unwrap();
        bytes[14] ^= 1;
        std::fs::write(&newest, bytes).unwrap();
        let (_, loaded) = ProgressFile::load(dir.path()).unwrap();
        assert_eq!(loaded, first);
        assert!(loaded.acked(4) && !loaded.acked(5) && loaded.acked(8) && !loaded.acked(9));
        assert!(loaded.acked(20) && !loaded.acked(21));
        assert_eq!(loaded.end(), 21);
    }
}
