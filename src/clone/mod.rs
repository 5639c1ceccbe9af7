//! Cloning data directories, file by file, copy-on-write where the file system allows: a
//! stopped cluster as it is (offline), a running one through the low-level backup API (online).
//!
//! Both kinds share a `Plan`: checked paths, a target made by the caller and handed to the
//! server's user, the copy done with that user's file-system identity, `pg_control` copied last,
//! and the target put back as it was on any failure.

mod config_files;
mod exclude;
mod file;
pub(crate) mod fs_probe;
mod offline;
mod online;
mod preview;
mod tablespaces;
mod tree;
mod wal;

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use crate::postgres::pg_control::{cluster_state, ClusterState};
pub use file::CopyMethod;
pub use fs_probe::{probe_file_system, shared_bytes, FsCapabilities};
pub(crate) use offline::clone_stopped;
pub use offline::clone_stopped_cluster;
pub(crate) use online::clone_running;
pub use online::clone_running_cluster;
pub(crate) use online::PLACEHOLDER_LABEL;
pub use preview::{preview_clone, ClonePreview};
pub use tree::CloneReport;
pub use wal::Lsn;

use crate::config::Config;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::postgres::run_as::{with_identity, RunAs};
use crate::postgres::server;
use tree::{device_of, existing_ancestor};

/// Clones the cluster in `source` into `target`: online if a postmaster serves it, else offline.
pub fn clone_cluster(source: &Path, target: &Path, options: &CloneOptions) -> Result<CloneReport> {
    let source = std::path::absolute(source).doing("resolve", source)?;
    let config = Config::from_env()?;
    let owner = RunAs::for_current_user(config.run_as.as_deref())?;
    if server::live_postmaster(&source).is_some() {
        clone_running(&source, target, options, owner, Some(&config))
    } else {
        clone_stopped(&source, target, options, owner)
    }
}

/// How a clone may be made.
#[derive(Clone, Default)]
pub struct CloneOptions {
    pub(crate) allow_copy: bool,
    pub(crate) standby: bool,
    pub(crate) user: Option<String>,
    pub(crate) progress: Progress,
    pub(crate) threads: Option<usize>,
    pub(crate) no_sync: bool,
    pub(crate) spread_checkpoint: bool,
    pub(crate) tablespace_mapping: Vec<(PathBuf, PathBuf)>,
}

impl CloneOptions {
    /// The defaults: same file system only, a stopped or running source, the current user.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allow a target on another file system than the source, where every byte is copied.
    pub fn allow_copy(mut self, allow: bool) -> Self {
        self.allow_copy = allow;
        self
    }

    /// How a running source's backup starts: with an immediate checkpoint (the default, fast
    /// for a test cluster) or, with `spread`, one paced by the source's
    /// `checkpoint_completion_target`: slower to start, no I/O spike on a busy server.
    pub fn spread_checkpoint(mut self, spread: bool) -> Self {
        self.spread_checkpoint = spread;
        self
    }

    /// Copies the source's tablespace in `old` (its location, as `pg_tablespace_location`
    /// gives it) to `new` instead of `<target>-tablespaces/<oid>` (pg_basebackup's
    /// `--tablespace-mapping`). Both absolute; `new` absent or empty.
    pub fn tablespace_mapping(mut self, old: impl Into<PathBuf>, new: impl Into<PathBuf>) -> Self {
        self.tablespace_mapping.push((old.into(), new.into()));
        self
    }

    /// Make the clone start as a standby (`standby.signal`): read-only, replaying the WAL it
    /// has, never promoted by pgclone.
    pub fn standby(mut self, standby: bool) -> Self {
        self.standby = standby;
        self
    }

    /// The database user to run the backup API as on a running source (default: `postgres`
    /// when pgclone runs as root, else the current OS user, as libpq does); it needs trust or
    /// peer authentication on the Unix socket.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// How many threads copy files (default: the available cores, at most 4). Cloning is one
    /// system call per file, so many small files go faster in parallel (see `benches/clone.rs`).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads.max(1));
        self
    }

    /// Skip flushing the clone to disk before its last step. By default it is flushed, so that
    /// after a host crash a clone is either whole or has no `pg_control`; disposable test clones
    /// skip it.
    pub fn no_sync(mut self, no_sync: bool) -> Self {
        self.no_sync = no_sync;
        self
    }

    /// Called after each step and every few hundred files copied (progress bars, tests).
    pub fn on_progress(mut self, callback: impl Fn(CloneEvent) + Send + Sync + 'static) -> Self {
        self.progress.callback = Some(Arc::new(callback));
        self
    }

    /// Stops the clone (an [`ErrorKind::Interrupted`] error) once `stop` is set, such as by a
    /// Ctrl-C handler: checked before each file, so within one file's copy. The target is then
    /// removed (or emptied, if it existed) and a running source keeps no slot and no backup, as
    /// after any failure.
    pub fn stop_when(mut self, stop: Arc<AtomicBool>) -> Self {
        self.progress.stop = Some(stop);
        self
    }

    pub(crate) fn copy_threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(4)))
    }
}

impl fmt::Debug for CloneOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloneOptions")
            .field("allow_copy", &self.allow_copy)
            .field("standby", &self.standby)
            .field("user", &self.user)
            .field("threads", &self.threads)
            .field("no_sync", &self.no_sync)
            .finish_non_exhaustive()
    }
}

/// The steps of a clone, in order. An offline clone has `CopyFiles`, `Config`, `ControlFile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// The target holds a placeholder `backup_label` that makes it unstartable until done.
    Placeholder,
    /// A temporary physical replication slot holds the source's WAL.
    Slot,
    /// `pg_backup_start` returned.
    BackupStart,
    /// The data files are copied.
    CopyFiles,
    /// `pg_backup_stop` returned.
    BackupStop,
    /// The backup's WAL is copied and checked.
    CopyWal,
    /// The real `backup_label` replaced the placeholder.
    Label,
    /// The clone's configuration no longer points at the source's archive, primary or port.
    Config,
    /// `pg_control` is copied: the clone is complete.
    ControlFile,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Placeholder => "placeholder label",
            Step::Slot => "replication slot",
            Step::BackupStart => "pg_backup_start",
            Step::CopyFiles => "copy files",
            Step::BackupStop => "pg_backup_stop",
            Step::CopyWal => "copy WAL",
            Step::Label => "backup_label",
            Step::Config => "configuration",
            Step::ControlFile => "pg_control",
        })
    }
}

/// What a progress callback hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloneEvent {
    /// A step finished.
    Done(Step),
    /// Files and bytes copied so far.
    Copied {
        /// Files copied so far.
        files: u64,
        /// Bytes copied so far.
        bytes: u64,
    },
}

/// What the caller follows of a clone (the optional progress callback) and may stop it with
/// (a flag it sets, such as on Ctrl-C).
#[derive(Clone, Default)]
pub(crate) struct Progress {
    callback: Option<Arc<dyn Fn(CloneEvent) + Send + Sync>>,
    stop: Option<Arc<AtomicBool>>,
}

impl Progress {
    pub fn done(&self, step: Step) {
        if let Some(callback) = &self.callback {
            callback(CloneEvent::Done(step));
        }
    }

    pub fn copied(&self, files: u64, bytes: u64) {
        if let Some(callback) = &self.callback {
            callback(CloneEvent::Copied { files, bytes });
        }
    }

    /// An `Interrupted` error once the caller asked to stop: checked before each file.
    pub fn check_stop(&self) -> Result<()> {
        match &self.stop {
            Some(stop) if stop.load(Ordering::Relaxed) => Err(Error::new(
                ErrorKind::Interrupted,
                "the clone was interrupted",
            )),
            _ => Ok(()),
        }
    }
}

/// A clone's paths, checked: absolute, not inside each other, the target absent or empty, on
/// the source's file system (unless copying is allowed), the source owned by the user who copies.
struct Plan {
    source: PathBuf,
    target: PathBuf,
    target_existed: bool,
    /// The source's tablespaces and where their copies go.
    tablespaces: Vec<tablespaces::Tablespace>,
    /// When pgclone runs as root: the user whose file-system identity the copy takes.
    owner: Option<RunAs>,
}

impl Plan {
    fn new(
        source: &Path,
        target: &Path,
        options: &CloneOptions,
        owner: Option<RunAs>,
    ) -> Result<Plan> {
        let source = std::path::absolute(source).doing("resolve", source)?;
        let target = std::path::absolute(target).doing("resolve", target)?;
        crate::postgres::data_dir::major_of(&source)?;
        if owner.is_some() {
            // Root creates, chmods and chowns the target by path: no other user may be able to
            // swap it (or a directory above it) for a symlink.
            crate::store::safe_path::check_target_path(&target, "the clone's target")?;
        }
        check_not_nested(&source, &target)?;
        let target_existed = check_target(&target)?;
        check_file_systems(&source, &target, options)?;
        let mut planned = tablespaces::plan(&source, &target, &options.tablespace_mapping)?;
        tablespaces::check_apart(&planned, &source, &target)?;
        for tablespace in &mut planned {
            let copy = &tablespace.target;
            if owner.is_some() {
                crate::store::safe_path::check_target_path(copy, "a tablespace's copy")?;
            }
            tablespace.target_existed = check_target(copy)?;
            check_file_systems(&tablespace.source, copy, options)?;
        }
        if let Some(user) = &owner {
            let source_uid = std::fs::metadata(&source).doing("stat", &source)?.uid();
            if source_uid != user.uid() {
                return Err(Error::new(
                    ErrorKind::RunAsUser,
                    format!(
                        "source {} belongs to uid {source_uid}, but pgclone, running as root, copies as user `{}` \
                         (uid {}) so that it never follows paths another user controls",
                        source.display(),
                        user.name(),
                        user.uid()
                    ),
                )
                .hint("set PGCLONE_RUN_AS to the user that owns the source cluster"));
            }
        }
        Ok(Plan {
            source,
            target,
            target_existed,
            tablespaces: planned,
            owner,
        })
    }

    /// Creates the target (as the caller, then hands it to the copying user), runs `copy` with
    /// that user's file-system identity, and puts the target back as it was if anything fails.
    fn run<T: Send>(&self, copy: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let result = self
            .make_target()
            .and_then(|()| with_identity(self.owner.as_ref(), copy));
        if result.is_err() {
            undo_target(&self.target, self.target_existed);
            for tablespace in &self.tablespaces {
                undo_target(&tablespace.target, tablespace.target_existed);
            }
            // The default parent of the copies, if now empty.
            let _ = std::fs::remove_dir(tablespaces::default_location(&self.target));
        }
        result
    }

    /// The tablespace copies' directories (flushed with the target).
    fn tablespace_copies(&self) -> Vec<PathBuf> {
        self.tablespaces.iter().map(|t| t.target.clone()).collect()
    }

    fn make_target(&self) -> Result<()> {
        make_owned_dir(
            &self.source,
            &self.target,
            self.target_existed,
            self.owner.as_ref(),
        )?;
        for tablespace in &self.tablespaces {
            make_owned_dir(
                &tablespace.source,
                &tablespace.target,
                tablespace.target_existed,
                self.owner.as_ref(),
            )?;
        }
        Ok(())
    }
}

/// Creates `dir` (unless it `existed`) with the mode of `like`, and hands it to `owner`.
fn make_owned_dir(like: &Path, dir: &Path, existed: bool, owner: Option<&RunAs>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !existed {
        std::fs::create_dir_all(dir).doing("create", dir)?;
    }
    let mode = std::fs::metadata(like).doing("stat", like)?.mode() & 0o7777;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).doing("chmod", dir)?;
    match owner {
        Some(user) => user.chown(dir),
        None => Ok(()),
    }
}

/// Refuses a target inside the source (the copy would copy itself into the source) or a source
/// inside the target.
fn check_not_nested(source: &Path, target: &Path) -> Result<()> {
    let source = source.canonicalize().doing("resolve", source)?;
    let existing = existing_ancestor(target);
    let rest = target.strip_prefix(&existing).unwrap_or(Path::new(""));
    let target = existing
        .canonicalize()
        .doing("resolve", &existing)?
        .join(rest);
    if target.starts_with(&source) || source.starts_with(&target) {
        return Err(Error::new(
            ErrorKind::TargetNotEmpty,
            format!(
                "target {} and source {} are inside one another",
                target.display(),
                source.display()
            ),
        )
        .hint("clone into a directory outside the source"));
    }
    Ok(())
}

/// Fails if the target holds anything; returns whether it exists.
fn check_target(target: &Path) -> Result<bool> {
    match std::fs::read_dir(target).map(|mut entries| entries.next().is_none()) {
        Ok(false) => Err(Error::new(
            ErrorKind::TargetNotEmpty,
            format!("target {} is not empty", target.display()),
        )
        .hint("clone into a new or empty directory")),
        Ok(true) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("read target directory", target, e)),
    }
}

/// Fails if the target is on another file system than the source and copying is not allowed.
fn check_file_systems(source: &Path, target: &Path, options: &CloneOptions) -> Result<()> {
    let same_fs = device_of(source)? == device_of(&existing_ancestor(target))?;
    if same_fs || options.allow_copy {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::CrossFilesystem,
        format!(
            "target {} is on another file system than source {}: every byte would be copied, not shared",
            target.display(),
            source.display()
        ),
    )
    .hint("put the target beside the source, or allow copying (`--allow-copy`)"))
}

/// Points a clone's configuration away from its source: it must not archive into the source's
/// archive, follow its primary, restore from its archive, wait for its standbys, or take its port
/// or pid file (docs/postgres-facts.md 12). `standby` makes it start as a read-only standby.
fn write_clone_config(target: &Path, standby: bool) -> Result<()> {
    let port = portpicker::pick_unused_port().ok_or_else(|| {
        Error::new(
            ErrorKind::Io,
            "no free TCP port to give the clone (it must not take its source's)",
        )
    })?;
    let settings = [
        ("archive_mode", "off".to_string()),
        ("archive_command", "''".to_string()),
        ("primary_conninfo", "''".to_string()),
        ("primary_slot_name", "''".to_string()),
        ("restore_command", "''".to_string()),
        ("archive_cleanup_command", "''".to_string()),
        ("recovery_end_command", "''".to_string()),
        ("synchronous_standby_names", "''".to_string()),
        // Relative to the clone's own data directory: never the source's pid file (Debian sets
        // one in /var/run/postgresql), and valid on every version ('' is a path before 15).
        ("external_pid_file", "'postmaster.external.pid'".to_string()),
        ("port", port.to_string()),
    ];
    crate::postgres::data_dir::append_settings_to(
        &target.join("postgresql.auto.conf"),
        "pgclone: this clone must not reach its source's archive, primary, standbys or port",
        settings.iter().map(|(name, value)| (*name, value.as_str())),
    )?;
    if standby {
        write_file(&target.join("standby.signal"), b"")?;
    }
    Ok(())
}

/// Writes a whole file (mode 0600) through a fresh temporary name and a rename, so it is never
/// half there and never written through a symlink.
fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".pgclone-tmp");
    let temporary = PathBuf::from(temporary);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut file| file.write_all(contents))
        .doing("write", &temporary)?;
    std::fs::rename(&temporary, path).doing("write", path)
}

/// Flushes what was copied, then copies `global/pg_control` and flushes it: after a host crash
/// a clone is whole or has no `pg_control` (docs/postgres-facts.md 9). `sync: false` skips the
/// flushes.
/// A standby's `pg_control`, copied before its backup stops (its `minRecoveryPoint` then lies
/// within the WAL the clone gets), kept under this name until it is put in place last.
const EARLY_CONTROL_FILE: &str = "global/pg_control.pgclone-early";

/// Copies the source's `pg_control` to [`EARLY_CONTROL_FILE`] in the target. The server
/// rewrites the file at each restartpoint: the copy counts once it equals the file read again.
fn copy_control_file_early(source: &Path, target: &Path) -> Result<(CopyMethod, u64)> {
    let (from, to) = (
        source.join("global/pg_control"),
        target.join(EARLY_CONTROL_FILE),
    );
    for _ in 0..100 {
        let _ = std::fs::remove_file(&to);
        let copied = tree::copy_file(&from, &to, (device_of(source)?, device_of(target)?))?;
        let now = std::fs::read(&from).doing("read", &from)?;
        if std::fs::read(&to).doing("read", &to)? == now {
            return Ok(copied);
        }
    }
    Err(Error::new(
        ErrorKind::SourceState,
        format!("{} kept changing while it was copied", from.display()),
    ))
}

/// Flushes the file systems of the target and of the tablespace copies (`also`): before
/// `pg_control` marks the clone finished, everything else must be on disk.
fn sync_file_systems(target: &Path, also: &[PathBuf]) -> Result<()> {
    let mut done = Vec::new();
    for dir in std::iter::once(target).chain(also.iter().map(PathBuf::as_path)) {
        let device = device_of(dir)?;
        if !done.contains(&device) {
            let file = std::fs::File::open(dir).doing("open", dir)?;
            crate::sys::sync_file_system(&file).doing("sync", dir)?;
            done.push(device);
        }
    }
    Ok(())
}

/// Flushes what was copied, then puts the early copy of `pg_control` in place (a rename) and
/// flushes it: the same last step as [`finish_with_control_file`].
fn finish_with_early_control_file(target: &Path, also: &[PathBuf], sync: bool) -> Result<()> {
    if sync {
        sync_file_systems(target, also)?;
    }
    let to = target.join("global/pg_control");
    std::fs::rename(target.join(EARLY_CONTROL_FILE), &to).doing("put in place", &to)?;
    if sync {
        for path in [to.as_path(), to.parent().unwrap_or(target)] {
            std::fs::File::open(path)
                .and_then(|f| f.sync_all())
                .doing("sync", path)?;
        }
    }
    Ok(())
}

fn finish_with_control_file(
    source: &Path,
    target: &Path,
    also: &[PathBuf],
    sync: bool,
) -> Result<(CopyMethod, u64)> {
    if sync {
        sync_file_systems(target, also)?;
    }
    let (from, to) = (
        source.join("global/pg_control"),
        target.join("global/pg_control"),
    );
    let copied = tree::copy_file(&from, &to, (device_of(source)?, device_of(target)?))?;
    if sync {
        for path in [to.as_path(), to.parent().unwrap_or(target)] {
            std::fs::File::open(path)
                .and_then(|f| f.sync_all())
                .doing("sync", path)?;
        }
    }
    Ok(copied)
}

/// Puts the target back as it was: removed, or emptied if it existed.
fn undo_target(target: &Path, existed: bool) {
    if !existed {
        let _ = std::fs::remove_dir_all(target);
        return;
    }
    if let Ok(entries) = std::fs::read_dir(target) {
        for entry in entries.flatten() {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}
