//! The spool's folder: segment files `<seq>.spool`, oldest first, and beside each the
//! progress of its drain, `<seq>.done` (the offset up to which it is written).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::frame;

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
