//! Advisory file locks (flock) between processes: one golden build at a time, and no golden
//! removed while another process clones it.
//!
//! A wait for a lock has no time limit: its holder is a live process (the kernel drops a lock
//! when its holder dies) building a golden, which runs the user's migrations and hooks for as
//! long as they take. A wait that lasts says so, and names the process it waits for.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;

use crate::error::{Error, ErrorKind, IoContext, Result};

/// A held lock, released on drop (or when the process dies, however it dies).
#[derive(Debug)]
pub(crate) struct FileLock {
    file: File,
}

impl FileLock {
    /// Waits for the exclusive lock on `path` (created if needed). After `patience`, tells
    /// `waiting` once and prints which process holds the lock, so a long wait is explained.
    pub fn exclusive(path: &Path, patience: Duration, waiting: impl FnOnce()) -> Result<FileLock> {
        Self::acquire(
            path,
            FlockOperation::NonBlockingLockExclusive,
            FlockOperation::LockExclusive,
            patience,
            waiting,
        )
    }

    /// The exclusive lock on `path` if nobody holds it now (`None` if somebody does).
    pub fn try_exclusive(path: &Path) -> Result<Option<FileLock>> {
        Self::try_lock(path, FlockOperation::NonBlockingLockExclusive)
    }

    /// A shared lock on `path` if nobody holds it exclusively now (`None` if somebody does).
    pub fn try_shared(path: &Path) -> Result<Option<FileLock>> {
        Self::try_lock(path, FlockOperation::NonBlockingLockShared)
    }

    /// Another handle on the lock, for a child process to hold: the lock lasts until both this
    /// and every copy of that handle are closed (flock locks belong to the open file, which
    /// they share).
    pub fn handle_for_child(&self) -> Result<File> {
        self.file
            .try_clone()
            .map_err(|e| Error::new(ErrorKind::Io, "share a lock with a child").with_source(e))
    }

    fn try_lock(path: &Path, op: FlockOperation) -> Result<Option<FileLock>> {
        let file = open(path)?;
        Ok(rustix::fs::flock(&file, op)
            .is_ok()
            .then_some(FileLock { file }))
    }

    /// Waits for a shared lock on `path` (created if needed).
    pub fn shared(path: &Path, patience: Duration, waiting: impl FnOnce()) -> Result<FileLock> {
        Self::acquire(
            path,
            FlockOperation::NonBlockingLockShared,
            FlockOperation::LockShared,
            patience,
            waiting,
        )
    }

    fn acquire(
        path: &Path,
        try_op: FlockOperation,
        op: FlockOperation,
        patience: Duration,
        waiting: impl FnOnce(),
    ) -> Result<FileLock> {
        let file = open(path)?;
        let deadline = Instant::now() + patience;
        // Poll briefly before blocking, so only a wait worth mentioning is mentioned.
        while Instant::now() < deadline {
            if rustix::fs::flock(&file, try_op).is_ok() {
                return Ok(FileLock { file });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        waiting();
        for (pid, program) in holders(&file) {
            eprintln!(
                "pgclone: {} is held by process {pid} ({program})",
                path.display()
            );
        }
        rustix::fs::flock(&file, op)
            .map_err(std::io::Error::from)
            .doing("lock", path)?;
        Ok(FileLock { file })
    }
}

/// The processes holding a lock on `file` (pid, program name), as the system lists them (see
/// [`crate::sys::lock_holders`]). Empty where it says nothing.
fn holders(file: &File) -> Vec<(u32, String)> {
    crate::sys::lock_holders(file)
        .into_iter()
        .map(|pid| (pid, crate::sys::program_name(pid).unwrap_or_default()))
        .collect()
}

/// Opens (creating it private: another user able to open it could hold it) a lock file.
fn open(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .doing("open lock file", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_process_holding_a_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("golden.lock");
        let _held = FileLock::exclusive(&path, Duration::ZERO, || {}).unwrap();
        let holders = holders(&open(&path).unwrap());
        assert!(
            holders.iter().any(|(pid, _)| *pid == std::process::id()),
            "{holders:?}"
        );
    }
}
