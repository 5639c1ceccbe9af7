//! The pgclone root directory (`PGCLONE_DIR`, else `<cargo target dir>/pgclone`) and the clone
//! directories in it.
//!
//! Layout: `<root>/clones/<id>/` holds `data/` (the cluster), `postgres.log` and `owner` (the pid
//! and start time of the process that owns it). A clone whose owner is gone (killed with SIGKILL,
//! say) is reaped by the first use of the root in the next process: its server is stopped and its
//! directory removed. A clone with a `keep` file is left alone.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::postgres::run_as::RunAs;
use crate::postgres::server;
use crate::store::safe_path;

const CLONES: &str = "clones";
/// Clone directories on their way out, deleted by a background thread (or the next run).
const TRASH: &str = "trash";
/// Records of clones made outside the root (the CLI's), while they are being made.
const UNFINISHED: &str = "unfinished";
/// Built goldens (`golden/<key>/`) and their locks.
const GOLDEN: &str = "golden";
/// The files of template servers shared by a run's processes (`harness/shared.rs`).
const SHARED: &str = "shared";
/// Clusters template servers left for the next process (`harness/warm.rs`).
const WARM: &str = "warm";
/// Which goldens each test command used, to start their servers ahead next time
/// (`harness/ahead.rs`).
const AHEAD: &str = "ahead";
pub(crate) const OWNER_FILE: &str = "owner";
/// Marks a clone the user asked to keep: never reaped automatically.
const KEEP_FILE: &str = "keep";
/// A clone directory without an owner record yet is being created; after this long it is debris.
const GRACE: Duration = Duration::from_secs(60);

/// The pgclone root directory, created and checked.
#[derive(Debug, Clone)]
pub(crate) struct Root {
    path: PathBuf,
}

impl Root {
    /// Opens (creating it if needed) the root at `explicit`, else `PGCLONE_DIR`, else the default.
    ///
    /// Records and clone directories in it decide what pgclone stops and deletes, so the root
    /// and its subdirectories must be trusted (`safe_path`): as root, every component of the path
    /// too. Nothing pgclone deletes can then be redirected by another user.
    pub fn open(explicit: Option<&Path>, config: &Config, run_as: Option<&RunAs>) -> Result<Root> {
        let path = match explicit.or(config.root.as_deref()) {
            Some(path) => std::path::absolute(path).doing("resolve PGCLONE_DIR", path)?,
            None => default_root(config),
        };
        // Verified once per process (every test acquiring a database opens the root).
        type Verified = Mutex<HashMap<(PathBuf, Option<u32>), PathBuf>>;
        static VERIFIED: OnceLock<Verified> = OnceLock::new();
        let key = (path.clone(), run_as.map(RunAs::uid));
        if let Some(path) = VERIFIED
            .get_or_init(Default::default)
            .lock()
            .unwrap()
            .get(&key)
        {
            return Ok(Root { path: path.clone() });
        }
        let unusable = |e: Error| {
            let kind = match e.kind() {
                ErrorKind::Untrusted => ErrorKind::Untrusted,
                _ => ErrorKind::RootDirUnusable,
            };
            e.with_kind(kind).hint(
                "set PGCLONE_DIR to a directory this process can create and write, and only it",
            )
        };
        let what = "the pgclone directory (PGCLONE_DIR)";
        let path = safe_path::create_trusted_dir(&path, 0o755, what).map_err(unusable)?;
        tempfile::tempfile_in(&path)
            .doing("write in the pgclone directory (PGCLONE_DIR)", &path)
            .map_err(unusable)?;
        for sub in [CLONES, TRASH, UNFINISHED, GOLDEN, SHARED, WARM, AHEAD] {
            // pgclone never makes a symlink here: one that is here was planted.
            let sub = path.join(sub);
            safe_path::create_trusted_dir(&sub, 0o755, what).map_err(unusable)?;
            safe_path::check_not_symlink(&sub, what).map_err(unusable)?;
        }
        if let Some(user) = run_as {
            user.check_can_reach(&path.join(CLONES), "the pgclone directory")?;
        }
        VERIFIED
            .get_or_init(Default::default)
            .lock()
            .unwrap()
            .insert(key, path.clone());
        Ok(Root { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<root>/golden`, where built goldens live.
    pub fn golden_dir(&self) -> PathBuf {
        self.path.join(GOLDEN)
    }

    /// `<root>/warm`, where template servers leave their clusters for the next process.
    pub fn warm_dir(&self) -> PathBuf {
        self.path.join(WARM)
    }

    /// `<root>/ahead`, where each test command's goldens are recorded.
    pub fn ahead_dir(&self) -> PathBuf {
        self.path.join(AHEAD)
    }

    /// `<root>/shared`, where the template servers a run's processes share are found.
    pub fn shared_dir(&self) -> PathBuf {
        self.path.join(SHARED)
    }

    /// Creates `<root>/clones/<id>/`, owned by this process: the directory itself belongs to
    /// this process's user (so records in it cannot be forged), its `data/` (mode 0700, empty)
    /// to `run_as`, who runs its server.
    pub fn new_clone_dir(&self, run_as: Option<&RunAs>) -> Result<PathBuf> {
        let clones = self.path.join(CLONES);
        let dir = tempfile::Builder::new()
            .prefix("")
            .rand_bytes(10)
            .permissions(std::fs::Permissions::from_mode(0o755))
            .tempdir_in(&clones)
            .doing("create a clone directory in", &clones)?;
        // Written aside and renamed, so a reaper never reads a half-written record.
        let record = dir.path().join(".owner.tmp");
        std::fs::write(&record, ProcessId::current()?.to_string()).doing("write", &record)?;
        let owner = dir.path().join(OWNER_FILE);
        std::fs::rename(&record, &owner).doing("write", &owner)?;
        let data = dir.path().join("data");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&data)
            .doing("create", &data)?;
        if let Some(user) = run_as {
            // Safe by path: the parent is ours, nobody else can swap `data` meanwhile.
            user.chown(&data)?;
        }
        Ok(dir.keep())
    }

    /// Reaps what dead processes left, the first time this process uses the root.
    pub fn reap_once_per_process(&self) {
        if first_use_in_process("clones", &self.path) {
            self.reap_stale_clones(false);
        }
    }

    /// Stops the servers of, and removes, clones whose owner process is gone (and, with
    /// `include_kept`, the ones users kept). Returns the directories removed.
    pub fn reap_stale_clones(&self, include_kept: bool) -> Vec<PathBuf> {
        // Only real directories: the root is trusted, so each was made by a pgclone process
        // of this user; a symlink is never followed.
        let dirs = [CLONES, TRASH]
            .iter()
            .filter_map(|sub| std::fs::read_dir(self.path.join(sub)).ok())
            .flat_map(|entries| entries.flatten())
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
            .map(|entry| entry.path());
        let mut reaped = Vec::new();
        for dir in dirs {
            // A kept clone is stopped and the user's: it goes when asked, whoever made it; but
            // not while a live owner still serves it (a database-mode template server, marked
            // kept at once, stopped at its process's exit).
            let remove = match dir.join(KEEP_FILE).exists() {
                true => include_kept && (owner_is_gone(&dir) || !serves(&dir)),
                false => owner_is_gone(&dir),
            };
            if !remove {
                continue;
            }
            if remove_clone_dir(&dir).is_ok() {
                reaped.push(dir);
            }
        }
        reaped
    }

    /// Records that this process is making a clone at `target` (outside the root); returns the
    /// record, to remove once the clone is finished or undone.
    pub fn record_unfinished(&self, target: &Path) -> Result<PathBuf> {
        let dir = self.path.join(UNFINISHED);
        let record = tempfile::Builder::new()
            .prefix("clone-")
            .tempfile_in(&dir)
            .doing("create a record in", &dir)?;
        let text = format!("{}\n{}\n", ProcessId::current()?, target.display());
        std::fs::write(record.path(), text).doing("write", record.path())?;
        record
            .keep()
            .map(|(_, path)| path)
            .map_err(|e| Error::io("keep", &dir, e.error))
    }

    /// The targets of clones whose maker died before finishing them, still there and not
    /// startable, that [`reap_unfinished_clones`](Self::reap_unfinished_clones) would remove.
    pub fn unfinished_targets(&self) -> Vec<PathBuf> {
        let records = self.unfinished_records();
        records
            .iter()
            .filter(|(_, owner, target)| {
                !owner.is_alive()
                    && !records
                        .iter()
                        .any(|(_, other, t)| t == target && other.is_alive())
                    && target.exists()
                    && is_unfinished_clone(target)
            })
            .map(|(_, _, target)| target.clone())
            .collect()
    }

    /// Removes the targets of clones whose maker died before finishing them: only targets that
    /// a clone cannot start from (placeholder `backup_label`, or no `pg_control` yet).
    pub fn reap_unfinished_clones(&self) -> Vec<PathBuf> {
        let records = self.unfinished_records();
        let mut reaped = Vec::new();
        for (record, owner, target) in &records {
            if owner.is_alive() {
                continue;
            }
            // Another, live process may be cloning into the same target now: not ours to touch
            // (the record stays, for a later gc).
            if records
                .iter()
                .any(|(_, other, t)| t == target && other.is_alive())
            {
                continue;
            }
            // The target was checked when recorded; check again: a path another user can
            // change now is left alone.
            if target.exists()
                && safe_path::check_target_path(target, "an unfinished clone").is_ok()
                && is_unfinished_clone(target)
                && std::fs::remove_dir_all(target).is_ok()
            {
                reaped.push(target.clone());
            }
            let _ = std::fs::remove_file(record);
        }
        reaped
    }

    /// The unfinished-clone records this user wrote: (record, its maker, the target).
    fn unfinished_records(&self) -> Vec<(PathBuf, ProcessId, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(self.path.join(UNFINISHED)) else {
            return Vec::new();
        };
        entries
            .flatten()
            // Only records this user wrote: another user's record must not steer our deletes.
            .filter(|entry| {
                entry
                    .metadata()
                    .is_ok_and(|m| m.uid() == rustix::process::geteuid().as_raw())
            })
            .filter_map(|entry| {
                let text = std::fs::read_to_string(entry.path()).ok()?;
                let mut lines = text.lines();
                let owner = ProcessId::parse(lines.next()?)?;
                Some((entry.path(), owner, PathBuf::from(lines.next()?)))
            })
            .collect()
    }
}

/// Removes a clone directory whose server is stopped (or a cluster parked in `<root>/warm/`)
/// without making the caller wait: it is renamed into `<root>/trash/` at once and deleted by a
/// background thread. What the thread has not deleted when the process exits is deleted at
/// exit, or reaped by the next run.
pub(crate) fn discard(dir: &Path) -> Result<()> {
    let Some(root) = dir.parent().and_then(Path::parent) else {
        return std::fs::remove_dir_all(dir).doing("remove clone directory", dir);
    };
    // A name of this process's own: two directories of one name never meet in the trash.
    static DISCARDED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = DISCARDED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.{n}", std::process::id()));
    let moved = root.join(TRASH).join(name);
    if std::fs::rename(dir, &moved).is_err() {
        return std::fs::remove_dir_all(dir).doing("remove clone directory", dir);
    }
    deleter().lock().unwrap().push(moved);
    Ok(())
}

/// Deletes what `discard` queued (a thread drains it; exit drains the rest).
fn deleter() -> &'static Mutex<Vec<PathBuf>> {
    static QUEUE: OnceLock<Mutex<Vec<PathBuf>>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        std::thread::Builder::new()
            .name("pgclone-deleter".into())
            .spawn(|| loop {
                // Held while deleting, so that exit can wait for a deletion under way.
                let busy = deleting().lock().unwrap_or_else(|e| e.into_inner());
                let next = deleter().lock().unwrap().pop();
                match next {
                    Some(dir) => {
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                    None => {
                        drop(busy);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                }
            })
            .expect("start the pgclone deleter thread");
        crate::exit::at_exit(empty_trash);
        Mutex::new(Vec::new())
    })
}

fn deleting() -> &'static Mutex<()> {
    static DELETING: Mutex<()> = Mutex::new(());
    &DELETING
}

/// At exit: waits for the deletion under way, then deletes every queued directory.
fn empty_trash() {
    let _busy = deleting().lock().unwrap_or_else(|e| e.into_inner());
    let queued = std::mem::take(&mut *deleter().lock().unwrap());
    for dir in queued {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// True the first time this process asks about (`what`, `path`): reaping is done once per
/// directory and kind of debris.
pub(crate) fn first_use_in_process(what: &'static str, path: &Path) -> bool {
    static SEEN: OnceLock<Mutex<HashSet<(&'static str, PathBuf)>>> = OnceLock::new();
    SEEN.get_or_init(Default::default)
        .lock()
        .unwrap()
        .insert((what, path.to_path_buf()))
}

/// A clone no server can start from, because its last steps never ran: the placeholder label,
/// or a copied `PG_VERSION` without `pg_control` (copied last). Anything else is left alone.
fn is_unfinished_clone(data_dir: &Path) -> bool {
    let label = std::fs::read_to_string(data_dir.join("backup_label")).unwrap_or_default();
    label == crate::clone::PLACEHOLDER_LABEL
        || (data_dir.join("PG_VERSION").is_file() && !data_dir.join("global/pg_control").exists())
}

/// Marks a clone directory as kept by the user: never reaped but by `gc --kept`. The marker
/// names the private socket directory made for restarting it by hand, if any, which goes with it.
pub(crate) fn mark_kept(dir: &Path, socket_dir: Option<&Path>) -> Result<()> {
    let marker = dir.join(KEEP_FILE);
    let text = socket_dir
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    std::fs::write(&marker, text).doing("write", &marker)
}

/// Stops the server a clone directory's data dir may still have, then removes the directory.
pub(crate) fn remove_clone_dir(dir: &Path) -> Result<()> {
    if let Ok(socket_dir) = std::fs::read_to_string(dir.join(KEEP_FILE)) {
        if !socket_dir.is_empty() {
            crate::postgres::socket_dir::remove_kept(Path::new(&socket_dir));
        }
    }
    let data_dir = dir.join("data");
    if let Some(pid) = server::live_postmaster(&data_dir) {
        server::stop_orphan(pid, &data_dir);
    }
    std::fs::remove_dir_all(dir).doing("remove clone directory", dir)
}

/// Whether a postmaster runs on the clone directory's data directory.
fn serves(dir: &Path) -> bool {
    server::live_postmaster(&dir.join("data")).is_some()
}

fn owner_is_gone(dir: &Path) -> bool {
    let record = std::fs::read_to_string(dir.join(OWNER_FILE)).ok();
    match record.as_deref().and_then(ProcessId::parse) {
        Some(owner) => !owner.is_alive(),
        // No readable record: being created, or debris once older than the grace period.
        None => std::fs::metadata(dir)
            .and_then(|m| m.modified())
            .is_ok_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() > GRACE),
    }
}

/// `<cargo target dir>/pgclone`: `CARGO_TARGET_DIR` when set, else the ancestor of this binary
/// that cargo marked with `CACHEDIR.TAG` (test, example and bench binaries run from inside it).
/// Elsewhere (an installed `pgclone` command): for root `/var/cache/pgclone`, for others their
/// cache directory, never a predictable name in a shared directory such as `/tmp`.
fn default_root(config: &Config) -> PathBuf {
    if let Some(dir) = &config.target_dir {
        if let Ok(dir) = std::path::absolute(dir) {
            return dir.join("pgclone");
        }
    }
    let exe = config.exe.clone().unwrap_or_default();
    if let Some(target) = exe
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
    {
        return target.join("pgclone");
    }
    let uid = rustix::process::getuid().as_raw();
    match &config.cache_home {
        _ if uid == 0 => PathBuf::from("/var/cache/pgclone"),
        Some(cache) => cache.join("pgclone"),
        // No home: a name in the temporary directory, refused if someone else made it first.
        None => config.tmp_dir.join(format!("pgclone-root-{uid}")),
    }
}

/// A process, told apart from a later one with the same pid by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessId {
    pid: u32,
    start_time: u64,
}

impl ProcessId {
    /// This process (read once: it does not change).
    pub fn current() -> Result<ProcessId> {
        static CURRENT: OnceLock<ProcessId> = OnceLock::new();
        if let Some(me) = CURRENT.get() {
            return Ok(*me);
        }
        let me = Self::of(std::process::id(), "this process")?;
        Ok(*CURRENT.get_or_init(|| me))
    }

    /// This process's parent.
    pub fn parent() -> Result<ProcessId> {
        let pid = rustix::process::getppid().map_or(0, |pid| pid.as_raw_nonzero().get() as u32);
        Self::of(pid, "this process's parent")
    }

    /// The runner of the nextest run `run` this process is a test process of: the nearest
    /// ancestor that is not in the run. nextest gives its test processes `NEXTEST_RUN_ID`, and
    /// so the wrappers it runs them through (a target runner, a wrapper script), which exit with
    /// each test; nextest itself does not have it. An ancestor whose environment cannot be read
    /// is taken as the runner.
    pub fn runner(run: &str) -> Result<ProcessId> {
        let in_run = |pid| {
            crate::sys::process_environment_var(pid, crate::config::RUN_ID_VARIABLE)
                .is_some_and(|value| value == run)
        };
        let mut pid = std::process::id();
        // Bounded: a loop in /proc is impossible, a very deep chain of wrappers unlikely.
        for _ in 0..16 {
            match crate::sys::process_parent(pid) {
                Some(parent) if parent > 1 && in_run(parent) => pid = parent,
                Some(parent) => return Self::of(parent, "this test run's runner"),
                None => break,
            }
        }
        Self::parent()
    }

    /// Process `pid`, which `what` names in the error if its start time cannot be read.
    fn of(pid: u32, what: &str) -> Result<ProcessId> {
        let start_time = crate::sys::process_start_time(pid).ok_or_else(|| {
            Error::new(
                ErrorKind::Io,
                format!("read the start time of {what} (pid {pid})"),
            )
            .hint("pgclone needs /proc to record which process owns a clone")
        })?;
        Ok(ProcessId { pid, start_time })
    }

    pub fn parse(text: &str) -> Option<ProcessId> {
        let mut words = text.split_whitespace();
        Some(ProcessId {
            pid: words.next()?.parse().ok()?,
            start_time: words.next()?.parse().ok()?,
        })
    }

    pub fn is_alive(&self) -> bool {
        crate::sys::process_start_time(self.pid) == Some(self.start_time)
    }
}

impl std::fmt::Display for ProcessId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.pid, self.start_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        let me = ProcessId::current().unwrap();
        assert!(me.is_alive());
        assert_eq!(ProcessId::parse(&me.to_string()), Some(me));
        let ghost = ProcessId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!ghost.is_alive());
    }
}
