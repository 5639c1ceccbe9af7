//! Advisory file locks (flock) between processes: one golden build at a time, and no golden
//! removed while another process clones it.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;

use crate::error::{IoContext, Result};

/// A held lock, released on drop (or when the process dies, however it dies).
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
}

impl FileLock {
    /// Waits for the exclusive lock on `path` (created if needed). After `patience`, tells
    /// `waiting` once, so a long wait is explained.
    pub fn exclusive(path: &Path, patience: Duration, waiting: impl FnOnce()) -> Result<FileLock> {
        Self::acquire(
            path,
            FlockOperation::NonBlockingLockExclusive,
            FlockOperation::LockExclusive,
            patience,
            waiting,
        )
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
                return Ok(FileLock { _file: file });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        waiting();
        rustix::fs::flock(&file, op)
            .map_err(std::io::Error::from)
            .doing("lock", path)?;
        Ok(FileLock { _file: file })
    }
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .doing("open lock file", path)
}
