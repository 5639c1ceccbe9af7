//! What the library's and the CLI's integration tests share (each includes it with `#[path]`):
//! test roots, CI's reflink requirement, facts about processes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where tests put their own pgclone roots: `PGCLONE_DIR` (CI points it at XFS or ext4), else
/// cargo's per-target temporary directory.
pub fn base_dir() -> PathBuf {
    let base = std::env::var_os("PGCLONE_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pgclone"));
    std::fs::create_dir_all(&base).unwrap();
    base
}

/// A fresh directory `<base>/<prefix>-XXXXXX` for one test (world-readable, so that the server's
/// user can reach what the test makes in it).
pub fn test_root(prefix: &str) -> TestRoot {
    let dir = tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir_in(base_dir())
        .unwrap()
        .keep();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    TestRoot(dir)
}

/// A test's own root: removed when the test passes, kept (to look at) when it fails.
pub struct TestRoot(PathBuf);

impl std::ops::Deref for TestRoot {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TestRoot {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TestRoot {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Whether CI requires reflinks where this run's tests clone (`PGCLONE_TEST_REQUIRE_REFLINK=1`).
pub fn reflink_required() -> bool {
    std::env::var("PGCLONE_TEST_REQUIRE_REFLINK").is_ok_and(|v| v == "1")
}

/// Whether a process runs (a zombie, waiting for its reaper, does not count).
pub fn process_runs(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits up to `limit` for a process to stop running; true if it did.
pub fn wait_until_gone(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while process_runs(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Every file under `dir`, with its bytes, sorted: to see that nothing changed.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    files.sort();
    files
}
