//! Segment files: names, listing, creation and the directory fsyncs that
//! make a new or renamed file's name durable.
//!
//! A segment is named after the first sequence number it was created for
//! (`00000000000000000042.seg`), so the names sort in record order and
//! every record in it has a sequence number at least that.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::{IoContext, SpoolError};

const SUFFIX: &str = ".seg";

/// What the spool knows of one segment file.
#[derive(Debug, Clone)]
pub(super) struct Segment {
    pub path: PathBuf,
    /// Bytes of whole records in the file.
    pub len: u64,
    /// Records in it not yet acknowledged.
    pub pending: u64,
}

/// The file name of the segment that starts at `first`.
pub(super) fn file_name(first: u64) -> String {
    format!("{first:020}{SUFFIX}")
}

/// The first sequence number a segment file name stands for.
pub(super) fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment files under `dir`, oldest first. Leftovers of an interrupted
/// rewrite (`*.rewrite`) are removed: their segment is still whole.
pub(super) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SpoolError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).on("list", dir)? {
        let entry = entry.on("list", dir)?;
        // Only regular files: a device or a link to one could be endless.
        if !entry.file_type().on("list", dir)?.is_file() {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".rewrite") {
            std::fs::remove_file(entry.path()).on("remove", &entry.path())?;
        } else if let Some(first) = parse_name(name) {
            found.push((first, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Makes the directory's entries (new, renamed, removed files) durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .on("fsync directory", dir)
}

/// Creates (or empties) the segment that starts at `first`, durably named,
/// open for appending.
pub(super) fn create(dir: &Path, first: u64) -> Result<(PathBuf, File), SpoolError> {
    let path = dir.join(file_name(first));
    // Append mode: after a failed write is cut off, the next write lands
    // at the new end, not at the old cursor (which would leave a hole).
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .on("create", &path)?;
    file.set_len(0).on("truncate", &path)?;
    sync_dir(dir)?;
    Ok((path, file))
}

/// Opens an existing segment for appending.
pub(super) fn open_append(path: &Path) -> Result<File, SpoolError> {
    OpenOptions::new().append(true).open(path).on("open", path)
}

/// Replaces a damaged segment by its good records and keeps the original
/// beside it as `<name>.corrupt` for inspection. Each step leaves either
/// the original or the cleaned file under the segment's name, so a crash
/// at any point loses nothing that was readable.
pub(super) fn set_aside(path: &Path, good: &[u8]) -> Result<PathBuf, SpoolError> {
    let rewrite = path.with_extension("seg.rewrite");
    let aside = path.with_extension("seg.corrupt");
    let mut file = File::create(&rewrite).on("create", &rewrite)?;
    file.write_all(good).on("write", &rewrite)?;
    file.sync_all().on("fsync", &rewrite)?;
    drop(file);
    // A hard link keeps the original under its own name until the rename
    // below replaces it atomically; copy where links are not supported.
    let _ = std::fs::remove_file(&aside);
    if std::fs::hard_link(path, &aside).is_err() {
        std::fs::copy(path, &aside).on("copy", path)?;
    }
    std::fs::rename(&rewrite, path).on("rename", &rewrite)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_record_order_and_parse_back() {
        assert_eq!(parse_name(&file_name(42)), Some(42));
        assert_eq!(parse_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert!(file_name(9) < file_name(10));
        assert_eq!(parse_name("42.seg"), None);
        assert_eq!(parse_name("0000000000000000004x.seg"), None);
        assert_eq!(parse_name(&format!("{}.corrupt", file_name(1))), None);
    }
}
