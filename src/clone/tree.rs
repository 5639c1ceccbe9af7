//! Copying a data directory's tree: directories, modes and owners kept, exclusions applied, each
//! file copied the cheapest way the file systems allow.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::exclude::{self, Source};
use super::file::{copy_contents, CopyMethod};
use super::tablespaces::Tablespace;
use super::wal::Lsn;
use super::{Progress, Step};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::postgres::run_as::RunAs;

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
    /// The source was a standby: online, the clone is a cluster of its own (a standby only
    /// with `CloneOptions::standby`); offline, the clone is a standby too, to promote by hand.
    pub from_standby: bool,
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

    /// Counts one file copied by `method`.
    pub(crate) fn count(&mut self, method: CopyMethod, bytes: u64) {
        let entry = self.by_method.entry(method).or_default();
        entry.0 += 1;
        entry.1 += bytes;
        self.files += 1;
        self.bytes += bytes;
    }

    /// Adds what another part of the copy did (files, directories, exclusions, methods).
    pub(crate) fn absorb(&mut self, other: CloneReport) {
        self.files += other.files;
        self.bytes += other.bytes;
        self.dirs += other.dirs;
        self.excluded += other.excluded;
        self.vanished += other.vanished;
        for (method, (files, bytes)) in other.by_method {
            let entry = self.by_method.entry(method).or_default();
            entry.0 += files;
            entry.1 += bytes;
        }
    }
}

/// Copies the tree below `source` into the (existing, empty) directory `target`: first the
/// walk (directories created, exclusions applied, files listed), then the files, on `threads`
/// threads (cloning is per-file system calls, so many small files go faster in parallel).
/// Call it with the file-system identity of the server's user (`run_as::with_identity`); the
/// copying threads take `owner`'s identity too, so every file is created as that user.
pub(crate) fn copy_tree(
    source: &Path,
    target: &Path,
    tablespaces: &[Tablespace],
    kind: Source,
    owner: Option<&RunAs>,
    progress: &Progress,
    threads: usize,
) -> Result<CloneReport> {
    let mut walk = Walk {
        kind,
        tablespaces,
        fs: (device_of(source)?, device_of(target)?),
        files: Vec::new(),
        report: CloneReport::default(),
    };
    walk.walk_dir(source, target, Path::new(""))?;
    let copier = FileCopier {
        kind,
        owner,
        progress,
        files_done: AtomicU64::new(0),
        bytes_done: AtomicU64::new(0),
    };
    let mut report = walk.report;
    report.absorb(copier.copy_all(&walk.files, threads)?);
    Ok(report)
}

/// The walk: creates the directories, lists the files to copy (each with the devices of its
/// source and target: a tablespace may be on another file system than the data directory).
struct Walk<'a> {
    kind: Source,
    tablespaces: &'a [Tablespace],
    /// The devices of the tree being walked (the data directory's, or a tablespace's).
    fs: (u64, u64),
    files: Vec<(PathBuf, PathBuf, (u64, u64))>,
    report: CloneReport,
}

impl Walk<'_> {
    fn walk_dir(&mut self, source: &Path, target: &Path, rel: &Path) -> Result<()> {
        let listed = std::fs::read_dir(source)
            .and_then(|entries| entries.collect::<std::io::Result<Vec<_>>>());
        let mut entries = match listed {
            // A running cluster drops databases while we walk: WAL replay accounts for that.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.kind == Source::Running => {
                self.report.vanished += 1;
                return Ok(());
            }
            listed => listed.doing("list", source)?,
        };
        entries.sort_by_key(|e| e.file_name());
        let names: Vec<String> = entries
            .iter()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        let init_forks = exclude::init_forks(names.iter().map(String::as_str));

        for entry in entries {
            let name = entry.file_name();
            let (from, to, rel_child) = (entry.path(), target.join(&name), rel.join(&name));
            let file_type = match entry.file_type() {
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound && self.kind == Source::Running =>
                {
                    continue
                }
                file_type => file_type.doing("stat", &from)?,
            };
            if exclude::is_excluded(rel, &name, file_type.is_dir(), self.kind, &init_forks) {
                self.report.excluded += 1;
                continue;
            }
            if file_type.is_symlink() {
                self.walk_symlinked(&from, &to, &rel_child)?;
            } else if file_type.is_dir() {
                self.make_dir(&from, &to)?;
                self.walk_dir(&from, &to, &rel_child)?;
            } else if file_type.is_file() {
                self.files.push((from, to, self.fs));
            }
            // Sockets and fifos have no place in a data directory: leave them out.
        }
        Ok(())
    }

    /// `pg_wal` may be a symlink (`initdb -X`): the clone gets a real directory with its
    /// contents. A tablespace's link gets a link to the tablespace's copy, which is walked
    /// then (its directory made by the plan). Any other link is refused.
    fn walk_symlinked(&mut self, from: &Path, to: &Path, rel: &Path) -> Result<()> {
        if rel == Path::new("pg_wal") {
            self.make_dir(from, to)?;
            return self.walk_dir(from, to, rel);
        }
        let name = rel.file_name().unwrap_or_default();
        let tablespace = self
            .tablespaces
            .iter()
            .find(|t| rel.parent() == Some(Path::new("pg_tblspc")) && t.oid == name);
        if let Some(tablespace) = tablespace {
            std::os::unix::fs::symlink(&tablespace.target, to).doing("link", to)?;
            let outer = self.fs;
            self.fs = (
                device_of(&tablespace.source)?,
                device_of(&tablespace.target)?,
            );
            let walked = self.walk_tablespace(tablespace, rel);
            self.fs = outer;
            return walked;
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
        .hint("a tablespace created during the copy is not cloned: clone again"))
    }

    /// A tablespace's location: its version directory for this cluster's major, and nothing
    /// else there.
    fn walk_tablespace(&mut self, tablespace: &Tablespace, rel: &Path) -> Result<()> {
        let entries = std::fs::read_dir(&tablespace.source).doing("list", &tablespace.source)?;
        for entry in entries {
            let entry = entry.doing("list", &tablespace.source)?;
            let name = entry.file_name();
            let ours = name
                .to_str()
                .is_some_and(|n| n.starts_with(&tablespace.version_dir_prefix));
            if !ours || !entry.file_type().doing("stat", &entry.path())?.is_dir() {
                self.report.excluded += 1;
                continue;
            }
            let to = tablespace.target.join(&name);
            self.make_dir(&entry.path(), &to)?;
            self.walk_dir(&entry.path(), &to, &rel.join(&name))?;
        }
        Ok(())
    }

    /// Creates `to` with the mode of the directory `from` (followed when it is the `pg_wal` link:
    /// a link's own mode is 0777).
    fn make_dir(&mut self, from: &Path, to: &Path) -> Result<()> {
        let mode = std::fs::metadata(from).doing("stat", from)?.mode() & 0o7777;
        std::fs::DirBuilder::new()
            .mode(mode & 0o777)
            .create(to)
            .doing("create directory", to)?;
        if umask_changes(mode) {
            std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
                .doing("chmod", to)?;
        }
        self.report.dirs += 1;
        Ok(())
    }
}

/// Progress is reported every this many files.
const PROGRESS_EVERY: u64 = 256;

/// Copies listed files, shared by the copying threads.
struct FileCopier<'a> {
    kind: Source,
    owner: Option<&'a RunAs>,
    progress: &'a Progress,
    files_done: AtomicU64,
    bytes_done: AtomicU64,
}

impl FileCopier<'_> {
    /// Copies all files, each thread taking the next one; the first error stops them all.
    fn copy_all(
        &self,
        files: &[(PathBuf, PathBuf, (u64, u64))],
        threads: usize,
    ) -> Result<CloneReport> {
        let next = AtomicUsize::new(0);
        let failed = Mutex::new(None);
        let work = || {
            let mut tally = CloneReport::default();
            if let Some(user) = self.owner {
                if let Err(e) = user.become_on_this_thread() {
                    failed.lock().unwrap().get_or_insert(e);
                    return tally;
                }
            }
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((from, to, fs)) = files.get(i) else {
                    break;
                };
                if let Err(e) = self.copy_one(from, to, *fs, &mut tally) {
                    failed.lock().unwrap().get_or_insert(e);
                    next.store(files.len(), Ordering::Relaxed); // stop the others
                    break;
                }
            }
            tally
        };
        let threads = threads.clamp(1, files.len().max(1));
        let mut total = CloneReport::default();
        if threads == 1 && self.owner.is_none() {
            total = work();
        } else {
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..threads).map(|_| scope.spawn(work)).collect();
                for worker in workers {
                    total.absorb(worker.join().expect("a copying thread panicked"));
                }
            });
        }
        match failed.into_inner().unwrap() {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    fn copy_one(
        &self,
        from: &Path,
        to: &Path,
        fs: (u64, u64),
        tally: &mut CloneReport,
    ) -> Result<()> {
        self.progress.check_stop()?;
        // O_NOFOLLOW: a symlink swapped in after the walk is an error, not a way out of the tree.
        let source = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(from)
        {
            // A running cluster drops relations while we copy: WAL replay accounts for that.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.kind == Source::Running => {
                tally.vanished += 1;
                return Ok(());
            }
            opened => opened.doing("open", from)?,
        };
        let meta = source.metadata().doing("stat", from)?;
        let method = copy_open_file(&source, meta.len(), meta.mode(), to, fs)?;
        tally.count(method, meta.len());
        let files = self.files_done.fetch_add(1, Ordering::Relaxed) + 1;
        let bytes = self.bytes_done.fetch_add(meta.len(), Ordering::Relaxed) + meta.len();
        if files % PROGRESS_EVERY == 0 {
            self.progress.copied(files, bytes);
        }
        Ok(())
    }
}

/// Copies one file (WAL, pg_control) the cheapest way; returns the method and the size. Call it
/// with the server user's file-system identity, as `copy_tree`.
pub(crate) fn copy_file(from: &Path, to: &Path, fs: (u64, u64)) -> Result<(CopyMethod, u64)> {
    let source = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)
        .doing("open", from)?;
    let meta = source.metadata().doing("stat", from)?;
    Ok((
        copy_open_file(&source, meta.len(), meta.mode(), to, fs)?,
        meta.len(),
    ))
}

/// Creates `to` (never through a symlink) with `mode` and copies `source` into it. Per-file
/// system calls are most of a reflink clone's time, so an empty file gets no copy call and the
/// mode is set at creation (a chmod follows only where creation would not give it).
fn copy_open_file(
    source: &File,
    len: u64,
    mode: u32,
    to: &Path,
    fs: (u64, u64),
) -> Result<CopyMethod> {
    let mode = mode & 0o7777;
    let target = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode & 0o777)
        .open(to)
        .doing("create", to)?;
    let method = if len == 0 {
        CopyMethod::Reflink // nothing to copy: as cheap as a reflink, whatever the file systems
    } else {
        copy_contents(source, &target, len, fs).doing("copy to", to)?
    };
    if umask_changes(mode) {
        target
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .doing("chmod", to)?;
    }
    Ok(method)
}

/// Whether creating a file or directory with `mode` leaves it with another mode (the umask
/// strips bits, or `mode` has setuid/setgid/sticky bits, which creation ignores).
fn umask_changes(mode: u32) -> bool {
    mode & 0o777 & !process_umask() != mode
}

/// The process's umask, read once (without changing it: see [`crate::sys::process_umask`]).
/// Unknown: assume it strips everything.
fn process_umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| crate::sys::process_umask().unwrap_or(0o7777))
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
