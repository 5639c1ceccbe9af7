//! Copying a data directory's tree: directories, modes and owners kept, exclusions applied, each
//! file copied the cheapest way the file systems allow.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::exclude::{self, Source};
use super::file::{copy_contents, CopyMethod};
use super::wal::Lsn;
use super::{Progress, Step};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::run_as::RunAs;

/// What a clone copied, and how.
#[derive(Debug, Clone, Default)]
pub struct CloneReport {
    /// Files copied.
    pub files: u64,
    /// Bytes in them.
    pub bytes: u64,
    /// Directories created.
    pub dirs: u64,
    /// Entries left out (pid files, temporary files, slot and runtime state, ...).
    pub excluded: u64,
    /// Files of a running source that were dropped before they could be copied.
    pub vanished: u64,
    /// WAL segments copied for a running source's backup.
    pub wal_segments: u64,
    /// WAL position where the backup started (running source only).
    pub start_lsn: Option<Lsn>,
    /// WAL position where the backup stopped (running source only).
    pub stop_lsn: Option<Lsn>,
    /// How long each step took, in order.
    pub steps: Vec<(Step, Duration)>,
    /// Files and bytes per copy method.
    pub by_method: BTreeMap<CopyMethod, (u64, u64)>,
    /// How long the copy took.
    pub elapsed: Duration,
}

impl CloneReport {
    /// The method that did the copy: the weakest one any file needed (`None`: no data files).
    pub fn method(&self) -> Option<CopyMethod> {
        self.by_method.keys().max().copied()
    }

    /// Bytes that share extents with the source (copied by reflink).
    pub fn bytes_shared(&self) -> u64 {
        self.by_method
            .get(&CopyMethod::Reflink)
            .map_or(0, |(_, bytes)| *bytes)
    }
}

/// Copies the tree below `source` into the (existing, empty) directory `target`.
pub(crate) fn copy_tree(
    source: &Path,
    target: &Path,
    kind: Source,
    owner: Option<&RunAs>,
    progress: &Progress,
) -> Result<CloneReport> {
    let started = Instant::now();
    let fs = (device_of(source)?, device_of(target)?);
    let mut walk = Walk {
        kind,
        owner,
        fs,
        progress,
        report: CloneReport::default(),
    };
    walk.copy_dir(source, target, Path::new(""))?;
    walk.report.elapsed = started.elapsed();
    Ok(walk.report)
}

struct Walk<'a> {
    kind: Source,
    owner: Option<&'a RunAs>,
    fs: (u64, u64),
    progress: &'a Progress,
    report: CloneReport,
}

/// Progress is reported every this many files.
const PROGRESS_EVERY: u64 = 256;

impl Walk<'_> {
    fn copy_dir(&mut self, source: &Path, target: &Path, rel: &Path) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(source)
            .doing("list", source)?
            .collect::<std::io::Result<_>>()
            .doing("list", source)?;
        entries.sort_by_key(|e| e.file_name());
        let names: Vec<String> = entries
            .iter()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        let init_forks = exclude::init_forks(names.iter().map(String::as_str));

        for entry in entries {
            let name = entry.file_name();
            let (from, to, rel_child) = (entry.path(), target.join(&name), rel.join(&name));
            let file_type = entry.file_type().doing("stat", &from)?;
            if exclude::is_excluded(rel, &name, file_type.is_dir(), self.kind, &init_forks) {
                self.report.excluded += 1;
                continue;
            }
            if file_type.is_symlink() {
                self.copy_symlinked(&from, &to, &rel_child)?;
            } else if file_type.is_dir() {
                self.make_dir(&from, &to)?;
                self.copy_dir(&from, &to, &rel_child)?;
            } else if file_type.is_file() {
                self.copy_file(&from, &to)?;
            }
            // Sockets and fifos have no place in a data directory: leave them out.
        }
        Ok(())
    }

    /// `pg_wal` may be a symlink (`initdb -X`): the clone gets a real directory with its
    /// contents. A tablespace link would make the clone write into the source's tablespace.
    fn copy_symlinked(&mut self, from: &Path, to: &Path, rel: &Path) -> Result<()> {
        if rel == Path::new("pg_wal") {
            self.make_dir(from, to)?;
            return self.copy_dir(from, to, rel);
        }
        let target = std::fs::read_link(from).unwrap_or_default();
        let what = if rel.starts_with("pg_tblspc") {
            "a tablespace"
        } else {
            "a symbolic link"
        };
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "{} is {what} (-> {}); cloning it would let the clone write into the source's files",
                from.display(),
                target.display()
            ),
        )
        .hint("clone a cluster without tablespaces (move their tables to pg_default: ALTER TABLE ... SET TABLESPACE pg_default)"))
    }

    fn make_dir(&mut self, from: &Path, to: &Path) -> Result<()> {
        let mode = std::fs::metadata(from).doing("stat", from)?.mode() & 0o7777;
        std::fs::DirBuilder::new()
            .mode(mode)
            .create(to)
            .doing("create directory", to)?;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)).doing("chmod", to)?;
        self.give_to_owner(to)?;
        self.report.dirs += 1;
        Ok(())
    }

    fn copy_file(&mut self, from: &Path, to: &Path) -> Result<()> {
        let source = match File::open(from) {
            // A running cluster drops relations while we copy: WAL replay accounts for that.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.kind == Source::Running => {
                self.report.vanished += 1;
                return Ok(());
            }
            opened => opened.doing("open", from)?,
        };
        let meta = source.metadata().doing("stat", from)?;
        let target = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)
            .doing("create", to)?;
        let method = copy_contents(&source, &target, meta.len(), self.fs).doing("copy to", to)?;
        target
            .set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .doing("chmod", to)?;
        self.give_to_owner(to)?;
        let entry = self.report.by_method.entry(method).or_default();
        entry.0 += 1;
        entry.1 += meta.len();
        self.report.files += 1;
        self.report.bytes += meta.len();
        if self.report.files % PROGRESS_EVERY == 0 {
            self.progress.copied(self.report.files, self.report.bytes);
        }
        Ok(())
    }

    fn give_to_owner(&self, path: &Path) -> Result<()> {
        match self.owner {
            Some(user) => user.chown(path),
            None => Ok(()),
        }
    }
}

pub(crate) fn device_of(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path).doing("stat", path)?.dev())
}

/// The nearest existing ancestor of `path` (to learn the file system a new directory lands on).
pub(crate) fn existing_ancestor(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}
