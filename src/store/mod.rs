//! The on-disk store: the pgclone directory and what lives in it (clone directories with their
//! owners, goldens, records of unfinished clones), the locks between processes, garbage
//! collection, and the rules that keep root from following a path another user controls.

pub(crate) mod gc;
pub(crate) mod lock;
pub(crate) mod root;
pub(crate) mod safe_path;

use std::io::Write;
use std::path::Path;

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
