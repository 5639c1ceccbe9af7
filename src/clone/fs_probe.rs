//! What a directory's file system can do for clones: its type, whether FICLONE works, whether
//! `copy_file_range` shares extents there (checked with FIEMAP), and so which method pgclone
//! uses. `pgclone doctor` prints it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::clone::CopyMethod;
use crate::error::{IoContext, Result};

/// What [`probe_file_system`] found.
#[derive(Debug, Clone)]
pub struct FsCapabilities {
    /// The directory probed.
    pub dir: PathBuf,
    /// The file system's name (`xfs`, `ext4`, `btrfs`, `tmpfs`, ...).
    pub fs_type: String,
    /// FICLONE: `Ok` if a reflink worked, else why not.
    pub reflink: std::result::Result<(), String>,
    /// `copy_file_range`: `Ok(true)` if the copy shares extents with its source.
    pub copy_file_range: std::result::Result<bool, String>,
}

impl FsCapabilities {
    /// The method a clone in this directory uses.
    pub fn best_method(&self) -> CopyMethod {
        match (&self.reflink, &self.copy_file_range) {
            (Ok(()), _) => CopyMethod::Reflink,
            (_, Ok(_)) => CopyMethod::CopyFileRange,
            _ => CopyMethod::Copy,
        }
    }

    /// Whether clones here cost (almost) no space.
    pub fn shares_extents(&self) -> bool {
        self.reflink.is_ok() || self.copy_file_range == Ok(true)
    }
}

/// Probes the file system of `dir` with two small files that are removed afterwards.
pub fn probe_file_system(dir: &Path) -> Result<FsCapabilities> {
    let scratch = tempfile::Builder::new()
        .prefix(".pgclone-probe-")
        .tempdir_in(dir)
        .doing("probe", dir)?;
    let source_path = scratch.path().join("source");
    let mut source = File::create(&source_path).doing("create", &source_path)?;
    source
        .write_all(&vec![42u8; 1 << 20])
        .doing("write", &source_path)?;
    source.sync_all().doing("sync", &source_path)?;
    let source = File::open(&source_path).doing("open", &source_path)?;

    let reflinked = File::create(scratch.path().join("reflink")).doing("create", scratch.path())?;
    let reflink = crate::sys::reflink(&source, &reflinked).map_err(|e| e.to_string());

    let copied = File::create(scratch.path().join("copy")).doing("create", scratch.path())?;
    let copy_file_range = crate::sys::copy_range(&source, &mut 0, &copied, &mut 0, 1 << 20)
        .map_err(|e| e.to_string())
        .map(|_| shared_bytes(&copied).unwrap_or(0) > 0);

    Ok(FsCapabilities {
        dir: dir.to_path_buf(),
        fs_type: fs_type(dir),
        reflink,
        copy_file_range,
    })
}

/// How many bytes of `file` share extents with another file (FIEMAP's SHARED flag).
pub fn shared_bytes(file: &File) -> std::io::Result<u64> {
    crate::sys::shared_bytes(file)
}

fn fs_type(dir: &Path) -> String {
    crate::sys::file_system_name(dir)
}
