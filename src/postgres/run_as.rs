//! Running PostgreSQL as an unprivileged user when pgclone itself runs as root.
//!
//! `initdb` and `postgres` refuse to run as root. In containers and CI the test process often *is*
//! root, so pgclone starts them with the uid and gid of `PGCLONE_RUN_AS` (default `postgres` if that
//! user exists, else `nobody`) and chowns what it creates for them. The caller keeps connecting as
//! usual: root may open any socket.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Error, ErrorKind, IoContext, Result};

/// The unprivileged user that runs PostgreSQL on root's behalf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

impl RunAs {
    /// The user to run PostgreSQL as, or `None` when the caller is not root (then PostgreSQL runs
    /// as the caller). `requested` is `PGCLONE_RUN_AS`.
    pub(crate) fn for_current_user(requested: Option<&str>) -> Result<Option<RunAs>> {
        if !rustix::process::geteuid().is_root() {
            return Ok(None);
        }
        let user = match requested {
            Some(name) => lookup(name)?.ok_or_else(|| {
                Error::new(
                    ErrorKind::RunAsUser,
                    format!("PGCLONE_RUN_AS={name}: no such user; PostgreSQL cannot run as root, so pgclone runs it as this user"),
                )
                .hint(format!(
                    "create it (`useradd --system --no-create-home {name}`) or set PGCLONE_RUN_AS to an existing unprivileged user"
                ))
            })?,
            None => match lookup("postgres")? {
                Some(user) => user,
                None => lookup("nobody")?.ok_or_else(|| {
                    Error::new(
                        ErrorKind::RunAsUser,
                        "running as root, and neither user `postgres` nor `nobody` exists to run PostgreSQL",
                    )
                    .hint("create one (`useradd --system postgres`) or set PGCLONE_RUN_AS to an unprivileged user")
                })?,
            },
        };
        if user.uid == 0 {
            return Err(Error::new(
                ErrorKind::RunAsUser,
                format!("PGCLONE_RUN_AS={}: that user is root (uid 0), and PostgreSQL refuses to run as root", user.name),
            )
            .hint("name an unprivileged user"));
        }
        Ok(Some(user))
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The user's id.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The user's primary group.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// Gives `path` to this user (not recursive).
    pub(crate) fn chown(&self, path: &Path) -> Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .doing(&format!("chown to {}", self.name), path)
    }

    /// Fails unless this user can reach `path` (search permission on every existing ancestor,
    /// and on `path` itself if it is a directory, with the primary group only, as the child gets
    /// no supplementary groups).
    pub(crate) fn check_can_reach(&self, path: &Path, what: &str) -> Result<()> {
        for dir in path.ancestors().filter(|dir| *dir != path || path.is_dir()) {
            let Ok(meta) = std::fs::metadata(dir) else {
                continue;
            };
            let bit = if meta.uid() == self.uid {
                0o100
            } else if meta.gid() == self.gid {
                0o010
            } else {
                0o001
            };
            if meta.mode() & bit == 0 {
                return Err(Error::new(
                    ErrorKind::RunAsUser,
                    format!(
                        "{what} {} is out of reach of user `{}` (which runs PostgreSQL because the caller is root): \
                         {} is mode {:o}, owned by uid {}",
                        path.display(),
                        self.name,
                        dir.display(),
                        meta.mode() & 0o7777,
                        meta.uid()
                    ),
                )
                .hint(format!(
                    "use a location that user can reach (e.g. PGCLONE_DIR=/var/tmp/pgclone), or `chmod o+x {}`",
                    dir.display()
                )));
            }
        }
        Ok(())
    }
}

/// Runs `work` with the file-system identity of `owner` (when pgclone runs as root), else as is.
///
/// The work runs on a thread of its own whose fsuid and fsgid are the user's and whose
/// supplementary groups are dropped: whatever it creates is the user's, and it can open only
/// what the user can. Root's privileges never touch paths that user controls, so a symlink the
/// user plants cannot make pgclone read or write a file elsewhere.
pub(crate) fn with_identity<T: Send>(
    owner: Option<&RunAs>,
    work: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    let Some(user) = owner else { return work() };
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            user.become_on_this_thread()?;
            work()
        });
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Creates the new file `path` (mode 0600, never through a symlink or over an existing file)
/// with `contents`, and gives it to `owner` when given. For directories no other user can
/// write in: inside another user's directory, call it under [`with_identity`] with `None`.
pub(crate) fn create_file_for(owner: Option<&RunAs>, path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)
        .doing("create", path)?;
    if let Some(user) = owner {
        rustix::fs::fchown(
            &file,
            Some(rustix::fs::Uid::from_raw(user.uid)),
            Some(rustix::fs::Gid::from_raw(user.gid)),
        )
        .map_err(std::io::Error::from)
        .doing(&format!("chown to {}", user.name), path)?;
    }
    file.write_all(contents).doing("write", path)
}

impl RunAs {
    /// Switches the calling thread's file-system identity to this user, for good (call it on a
    /// thread that ends with the work). Only this thread changes (see
    /// [`crate::sys::set_thread_fs_identity`]).
    pub(crate) fn become_on_this_thread(&self) -> Result<()> {
        if crate::sys::set_thread_fs_identity(self.uid, self.gid).is_err() {
            return Err(Error::new(
                ErrorKind::RunAsUser,
                format!(
                    "could not take the file-system identity of user `{}` (uid {})",
                    self.name, self.uid
                ),
            ));
        }
        Ok(())
    }
}

/// Looks a user up in the password database.
fn lookup(name: &str) -> Result<Option<RunAs>> {
    let c_name = CString::new(name).map_err(|_| {
        Error::new(
            ErrorKind::RunAsUser,
            format!("user name {name:?} contains a NUL byte"),
        )
    })?;
    let user = crate::sys::user_by_name(&c_name).map_err(|cause| {
        Error::new(ErrorKind::RunAsUser, format!("look up user {name:?}")).with_source(cause)
    })?;
    Ok(user.map(|user| RunAs {
        name: user.name,
        uid: user.uid,
        gid: user.gid,
    }))
}
