//! Cloning data directories, file by file, copy-on-write where the file system allows: a
//! stopped cluster as it is (offline), a running one through the low-level backup API (online).

mod exclude;
mod file;
mod offline;
mod online;
mod tree;
mod wal;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

pub use file::CopyMethod;
pub use offline::clone_stopped_cluster;
pub use online::clone_running_cluster;
pub(crate) use online::PLACEHOLDER_LABEL;
pub use tree::CloneReport;
pub use wal::Lsn;

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::run_as::RunAs;
use crate::server;
use tree::{device_of, existing_ancestor};

/// Clones the cluster in `source` into `target`: online if a postmaster serves it, else offline.
pub fn clone_cluster(source: &Path, target: &Path, options: &CloneOptions) -> Result<CloneReport> {
    if server::live_postmaster(source).is_some() {
        clone_running_cluster(source, target, options)
    } else {
        clone_stopped_cluster(source, target, options)
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
}

impl CloneOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Allow a target on another file system than the source, where every byte is copied.
    pub fn allow_copy(mut self, allow: bool) -> Self {
        self.allow_copy = allow;
        self
    }

    /// Make the clone start as a standby (`standby.signal`): read-only, replaying the WAL it
    /// has, never promoted by pgclone.
    pub fn standby(mut self, standby: bool) -> Self {
        self.standby = standby;
        self
    }

    /// The database user to run the backup API as on a running source (default `postgres`);
    /// it needs trust or peer authentication on the Unix socket.
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

    pub(crate) fn copy_threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(4)))
    }

    /// Called after each step and every few hundred files copied (progress bars, tests).
    pub fn on_progress(mut self, callback: impl Fn(CloneEvent) + Send + Sync + 'static) -> Self {
        self.progress = Progress(Some(Arc::new(callback)));
        self
    }
}

impl fmt::Debug for CloneOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloneOptions")
            .field("allow_copy", &self.allow_copy)
            .field("standby", &self.standby)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The steps of a clone, in order (an offline clone has only `CopyFiles`).
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
    Copied { files: u64, bytes: u64 },
}

/// The optional progress callback.
#[derive(Clone, Default)]
pub(crate) struct Progress(Option<Arc<dyn Fn(CloneEvent) + Send + Sync>>);

impl Progress {
    pub fn done(&self, step: Step) {
        if let Some(callback) = &self.0 {
            callback(CloneEvent::Done(step));
        }
    }

    pub fn copied(&self, files: u64, bytes: u64) {
        if let Some(callback) = &self.0 {
            callback(CloneEvent::Copied { files, bytes });
        }
    }
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

/// Creates the target (if needed) with the source's mode, owned by the server's user.
fn make_target(source: &Path, target: &Path, owner: Option<&RunAs>) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !target.exists() {
        std::fs::create_dir_all(target).doing("create", target)?;
    }
    let mode = std::fs::metadata(source).doing("stat", source)?.mode() & 0o7777;
    std::fs::set_permissions(target, std::fs::Permissions::from_mode(mode))
        .doing("chmod", target)?;
    give_to(owner, target)
}

fn give_to(owner: Option<&RunAs>, path: &Path) -> Result<()> {
    match owner {
        Some(user) => user.chown(path),
        None => Ok(()),
    }
}

/// Points a clone's configuration away from its source: it must not archive into the source's
/// archive, follow its primary, restore from its archive, or take its port (POSTGRES.md 12).
/// `standby` makes it start as a read-only standby.
fn write_clone_config(target: &Path, standby: bool, owner: Option<&RunAs>) -> Result<()> {
    let port = portpicker::pick_unused_port().unwrap_or(5432);
    let settings = [
        ("archive_mode", "off".to_string()),
        ("archive_command", "''".to_string()),
        ("primary_conninfo", "''".to_string()),
        ("primary_slot_name", "''".to_string()),
        ("restore_command", "''".to_string()),
        // Relative to the clone's own data directory: never the source's pid file (Debian sets
        // one in /var/run/postgresql), and valid on every version ('' is a path before 15).
        ("external_pid_file", "'postmaster.external.pid'".to_string()),
        ("port", port.to_string()),
    ];
    let path = target.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    text.push_str("# pgclone: this clone must not reach its source's archive, primary or port\n");
    for (name, value) in settings {
        text.push_str(&format!("{name} = {value}\n"));
    }
    write_file(&path, text.as_bytes(), owner)?;
    if standby {
        write_file(&target.join("standby.signal"), b"", owner)?;
    }
    Ok(())
}

/// Writes a whole file (mode 0600) through a temporary name and a rename, so it is never half
/// there.
fn write_file(path: &Path, contents: &[u8], owner: Option<&RunAs>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".pgclone-tmp");
    let temporary = std::path::PathBuf::from(temporary);
    std::fs::write(&temporary, contents).doing("write", &temporary)?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
        .doing("chmod", &temporary)?;
    give_to(owner, &temporary)?;
    std::fs::rename(&temporary, path).doing("write", path)
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
