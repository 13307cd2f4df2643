//! The spool's folder: segment files `<seq>.spool`, oldest first, and beside each the
//! progress of its drain, `<seq>.done` (the offset up to which it is written).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::frame;

/// The spool holds phone numbers and message text: its files are its user's alone, and so
/// is its folder, whatever the umask.
pub(super) const PRIVATE_FILE: u32 = 0o600;
pub(super) const PRIVATE_DIR: u32 = 0o700;

/// Writes a small file of the spool's (a segment's progress), readable by its user alone.
pub(super) fn write_private(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(PRIVATE_FILE)
        .open(path)?;
    f.write_all(text.as_bytes())
}

pub(super) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:012}.spool"))
}

pub(super) fn done_path(segment: &Path) -> PathBuf {
    segment.with_extension("done")
}

pub(super) fn open_segment(dir: &Path, seq: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(PRIVATE_FILE)
        .open(segment_path(dir, seq))?;
    // The new file's name must survive a crash too.
    File::open(dir)?.sync_all()?;
    Ok(file)
}

/// The segments in `dir`, by sequence number.
pub(super) fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out: Vec<(u64, PathBuf)> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            let seq = path
                .extension()
                .filter(|x| *x == "spool")
                .and(path.file_stem())
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())?;
            Some((seq, path))
        })
        .collect();
    out.sort();
    Ok(out)
}

pub(super) fn read_done(segment: &Path) -> u64 {
    fs::read_to_string(done_path(segment))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// What a segment holds.
pub(super) struct Scanned {
    /// The whole records: offset and payload.
    pub records: Vec<(u64, Vec<u8>)>,
    /// The length the whole records cover.
    pub good_len: u64,
    /// The file's length: anything after `good_len` is a torn write.
    pub file_len: u64,
}

pub(super) fn scan(path: &Path) -> io::Result<Scanned> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let (records, good_len) = frame::records(&data);
    Ok(Scanned {
        records,
        good_len: good_len as u64,
        file_len: data.len() as u64,
    })
}
