//! The on-disk store: the pgclone directory and what lives in it (clone directories with their
//! owners, goldens, records of unfinished clones), the locks between processes, garbage
//! collection, and the rules that keep root from following a path another user controls.

pub(crate) mod gc;
pub(crate) mod lock;
pub(crate) mod root;
pub(crate) mod safe_path;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};

/// Writes `text` to `path` (mode 0600) through a file of a random name beside it, renamed into
/// place: a reader sees the old file or the whole new one, never half of it.
pub(crate) fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir).doing("create a file in", dir)?;
    file.write_all(text.as_bytes())
        .doing("write", file.path())?;
    file.persist(path)
        .map_err(|e| e.error)
        .doing("write", path)?;
    Ok(())
}

/// A record's file name: the SHA-256, in hex, of `parts` (each followed by a NUL byte, so that
/// no two lists of parts give the same bytes).
pub(crate) fn record_name<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part);
        hash.update([0]);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Removes the files in `dir` whose names `wanted` accepts and that were last written more than
/// `age` ago (records of runs long over, and files a process died while writing).
pub(crate) fn remove_older_than(dir: &Path, age: Duration, wanted: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !wanted(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() > age);
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
