//! Private, short directories for the servers' Unix sockets.
//!
//! Socket paths are limited to 107 bytes, and cargo target directories can be deep, so each
//! server gets its own `pgclone-sock-XXXXXXXX` directory under `/tmp` (or `PGCLONE_SOCKET_DIR`). Being
//! private (mode 0700), it cannot collide with another server, whatever the port.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::postgres::run_as::RunAs;

/// The longest socket path the kernel accepts (on Linux, 107: `sun_path` is 108 bytes with the
/// final NUL).
pub const MAX_SOCKET_PATH: usize = crate::sys::MAX_SOCKET_PATH;
const PREFIX: &str = "pgclone-sock-";
const RANDOM_CHARS: usize = 8;
/// The note in a kept clone's socket directory.
const KEPT_NOTE: &str = "KEPT";
/// The longest socket file name PostgreSQL puts in the directory.
const LONGEST_SOCKET_NAME: &str = "/.s.PGSQL.65535";
/// Socket directories younger than this are never reaped: their server may still be starting.
const GRACE: Duration = Duration::from_secs(60);

/// The default parent of socket directories.
pub(crate) fn default_parent() -> PathBuf {
    PathBuf::from("/tmp")
}

/// A socket directory, removed on drop.
#[derive(Debug)]
pub(crate) struct SocketDir {
    path: PathBuf,
    kept: bool,
}

impl SocketDir {
    pub fn create(parent: &Path, run_as: Option<&RunAs>) -> Result<SocketDir> {
        let dir = new_private_dir(parent)?;
        if let Some(user) = run_as {
            user.chown(dir.path())?;
        }
        Ok(SocketDir {
            path: dir.keep(),
            kept: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A private socket directory for a kept clone that the user starts by hand later. It holds
    /// a note naming the clone, so the stale-directory reaper leaves it alone (it removes only
    /// directories of nothing but sockets); removing the kept clone removes it.
    pub fn create_for_kept(parent: &Path, run_as: Option<&RunAs>, clone: &Path) -> Result<PathBuf> {
        let dir = new_private_dir(parent)?;
        let note = format!("socket directory of the kept clone {}\n", clone.display());
        // Written while the directory is still ours alone.
        crate::postgres::run_as::create_file_for(
            run_as,
            &dir.path().join(KEPT_NOTE),
            note.as_bytes(),
        )?;
        if let Some(user) = run_as {
            user.chown(dir.path())?;
        }
        Ok(dir.keep())
    }

    /// Leaves the directory in place on drop (its server outlives us).
    pub fn keep(&mut self) {
        self.kept = true;
    }
}

/// A new `pgclone-sock-XXXXXXXX` directory (mode 0700) in `parent`, still ours alone.
fn new_private_dir(parent: &Path) -> Result<tempfile::TempDir> {
    check_parent(parent)?;
    tempfile::Builder::new()
        .prefix(PREFIX)
        .rand_bytes(RANDOM_CHARS)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(parent)
        .doing("create a socket directory in", parent)
}

/// Fails if socket paths in directories made in `parent` would be too long for the kernel.
pub(crate) fn check_parent(parent: &Path) -> Result<()> {
    let longest =
        parent.as_os_str().len() + 1 + PREFIX.len() + RANDOM_CHARS + LONGEST_SOCKET_NAME.len();
    if longest > MAX_SOCKET_PATH {
        return Err(Error::new(
            ErrorKind::SocketPathTooLong,
            format!(
                "socket directory parent {} is too long: socket paths in it would take {longest} bytes, \
                 over the {MAX_SOCKET_PATH}-byte limit of Unix sockets",
                parent.display()
            ),
        )
        .hint("set PGCLONE_SOCKET_DIR to a short directory (the default is /tmp)"));
    }
    Ok(())
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Removes the socket directory of a kept clone (made by [`SocketDir::create_for_kept`]).
pub(crate) fn remove_kept(dir: &Path) {
    let is_ours = dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(PREFIX));
    let is_dir = std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir());
    if is_ours && is_dir && dir.join(KEPT_NOTE).is_file() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Removes socket directories in `parent` that a killed process left: older than a minute,
/// holding nothing but socket and lock files, and with no live postmaster named in their lock
/// file, and made by this user (for `run_as`, when root). Returns how many it removed.
pub(crate) fn reap_stale(parent: &Path, run_as: Option<&RunAs>) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let mut reaped = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let named_ours = name
            .to_str()
            .is_some_and(|n| n.starts_with(PREFIX) && n.len() == PREFIX.len() + RANDOM_CHARS);
        // A real directory (never a link) that this user or its server's user owns: another
        // user's look-alike in a shared /tmp is not ours to remove.
        let owned = std::fs::symlink_metadata(entry.path()).is_ok_and(|meta| {
            use std::os::unix::fs::MetadataExt;
            meta.is_dir()
                && (meta.uid() == rustix::process::geteuid().as_raw()
                    || run_as.is_some_and(|user| meta.uid() == user.uid()))
        });
        if named_ours
            && owned
            && is_stale(&entry.path())
            && std::fs::remove_dir_all(entry.path()).is_ok()
        {
            reaped += 1;
        }
    }
    reaped
}

fn is_stale(dir: &Path) -> bool {
    let old_enough = std::fs::metadata(dir)
        .and_then(|m| m.modified())
        .is_ok_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() > GRACE);
    if !old_enough {
        return false;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let entries: Vec<_> = entries.flatten().collect();
    if !entries
        .iter()
        .all(|e| e.file_name().to_string_lossy().starts_with(".s.PGSQL."))
    {
        return false; // not only sockets and locks: never ours to remove
    }
    // A lock file's first line is the postmaster's pid.
    !entries.iter().any(|entry| {
        let name = entry.file_name();
        name.to_string_lossy().ends_with(".lock")
            && std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok())
                .is_some_and(crate::sys::process_exists)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stale-looking socket directory: named like ours, a socket-named file, old enough.
    fn stale_dir(parent: &Path, name: &str) -> PathBuf {
        let dir = parent.join(format!("{PREFIX}{name}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(".s.PGSQL.5432.lock"), "999999999\n").unwrap();
        let old = SystemTime::now() - Duration::from_secs(600);
        std::fs::File::open(&dir)
            .unwrap()
            .set_modified(old)
            .unwrap();
        dir
    }

    #[test]
    fn only_stale_directories_of_this_user_are_reaped() {
        let parent = tempfile::tempdir().unwrap();
        let ours = stale_dir(parent.path(), "ours0000");
        let theirs = stale_dir(parent.path(), "theirs00");
        let link = parent.path().join(format!("{PREFIX}link0000"));
        std::os::unix::fs::symlink(&ours, &link).unwrap();
        if rustix::process::geteuid().is_root() {
            // Another user's look-alike (nobody's), in a shared directory.
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        }
        let reaped = reap_stale(parent.path(), None);
        assert!(!ours.exists(), "our stale directory goes");
        assert!(
            link.symlink_metadata().is_ok(),
            "a link is never followed nor removed"
        );
        if rustix::process::geteuid().is_root() {
            assert!(theirs.exists(), "another user's stays");
            assert_eq!(reaped, 1);
        }
    }
}
