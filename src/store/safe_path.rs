//! Paths root may act on: no other user can redirect them.
//!
//! When pgclone runs as root, a directory it deletes in, chowns or writes into must not be one
//! that another user can change: that user could swap a component for a symlink between our
//! check and our use, and turn root's delete or chown against any file on the machine. A path is
//! *trusted* when every component is a real directory (never a symlink), owned by root or by
//! this process's user, and writable by nobody else. A world-writable directory with the sticky
//! bit (`/tmp`) may be an ancestor: there, others cannot rename or remove what we own.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, ErrorKind, IoContext, Result};

const STICKY: u32 = 0o1000;
const WRITABLE_BY_OTHERS: u32 = 0o022;

/// Creates `path` (and missing ancestors, mode `mode`) without following a symlink, then checks
/// it is trusted (see the module docs); returns it in canonical form. `what` names it in errors.
pub(crate) fn create_trusted_dir(path: &Path, mode: u32, what: &str) -> Result<PathBuf> {
    let path = std::path::absolute(path).doing(&format!("resolve {what}"), path)?;
    let existing = path
        .ancestors()
        .find(|dir| dir.exists())
        .unwrap_or(Path::new("/"));
    if !existing.is_dir() {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "cannot create {what} {}: {} is not a directory",
                path.display(),
                existing.display()
            ),
        ));
    }
    check_links(existing, what)?;
    let mut dir = existing.canonicalize().doing("resolve", existing)?;
    check_chain(&dir, what)?;
    for component in path
        .strip_prefix(existing)
        .unwrap_or(Path::new(""))
        .components()
    {
        let Component::Normal(name) = component else {
            return Err(untrusted(what, &path, "it contains `..`".into()));
        };
        dir.push(name);
        match std::fs::DirBuilder::new().mode(mode).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {} // checked below
            Err(e) => return Err(Error::io(&format!("create {what}"), &dir, e)),
        }
        check_component(&dir, what)?;
    }
    check_private(&dir, what)?;
    Ok(dir)
}

/// Fails unless every existing component of `path` is trusted; a final component that exists
/// must not be a symlink. Used for targets outside the pgclone directory, which root fills.
pub(crate) fn check_target_path(path: &Path, what: &str) -> Result<()> {
    let path = std::path::absolute(path).doing(&format!("resolve {what}"), path)?;
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        if meta.file_type().is_symlink() {
            return Err(untrusted(what, &path, "it is a symlink".into())
                .hint("name the real directory, not a link to it"));
        }
        let parent = path.parent().unwrap_or(Path::new("/"));
        let parent_meta = std::fs::metadata(parent).doing("stat", parent)?;
        // In a sticky shared directory, another user's entry can be swapped under us.
        if parent_meta.mode() & STICKY != 0 && !is_ours(meta.uid()) {
            return Err(untrusted(
                what,
                &path,
                format!("it belongs to uid {} in a shared directory", meta.uid()),
            ));
        }
    }
    let existing = path
        .ancestors()
        .skip(1)
        .find(|dir| dir.exists())
        .unwrap_or(Path::new("/"));
    check_links(existing, what)?;
    let canonical = existing.canonicalize().doing("resolve", existing)?;
    check_chain(&canonical, what)
}

/// A symlink on the way, as given, must be ours: another user's link could point anywhere.
fn check_links(path: &Path, what: &str) -> Result<()> {
    for ancestor in path.ancestors() {
        let Ok(meta) = std::fs::symlink_metadata(ancestor) else {
            continue;
        };
        if meta.file_type().is_symlink() && !is_ours(meta.uid()) {
            return Err(untrusted(
                what,
                ancestor,
                format!("it is a symlink that belongs to uid {}", meta.uid()),
            ));
        }
    }
    Ok(())
}

/// Fails if `path` itself is a symlink.
pub(crate) fn check_not_symlink(path: &Path, what: &str) -> Result<()> {
    let meta = std::fs::symlink_metadata(path).doing("stat", path)?;
    if meta.file_type().is_symlink() {
        return Err(untrusted(what, path, "it is a symlink".into()));
    }
    Ok(())
}

/// Every component of canonical `dir`, from `/` down, is trusted.
fn check_chain(dir: &Path, what: &str) -> Result<()> {
    let mut ancestors: Vec<&Path> = dir.ancestors().collect();
    ancestors.reverse();
    for ancestor in ancestors {
        check_component(ancestor, what)?;
    }
    Ok(())
}

fn check_component(dir: &Path, what: &str) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir).doing("stat", dir)?;
    if !meta.is_dir() && !meta.file_type().is_symlink() {
        return Err(Error::new(
            ErrorKind::Io,
            format!("{what}: {} is not a directory", dir.display()),
        ));
    }
    let problem = if meta.file_type().is_symlink() {
        Some("it is a symlink".to_string())
    } else if !is_ours(meta.uid()) {
        Some(format!("it belongs to uid {}", meta.uid()))
    } else if meta.mode() & WRITABLE_BY_OTHERS != 0 && meta.mode() & STICKY == 0 {
        Some(format!(
            "other users may write in it (mode {:o})",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(untrusted(what, dir, problem)),
        None => Ok(()),
    }
}

/// The directory itself: no other user may write in it, sticky or not.
fn check_private(dir: &Path, what: &str) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir).doing("stat", dir)?;
    if meta.mode() & WRITABLE_BY_OTHERS != 0 {
        return Err(untrusted(
            what,
            dir,
            format!(
                "other users may write in it (mode {:o})",
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Owned by this process's user or by root.
fn is_ours(uid: u32) -> bool {
    uid == 0 || uid == rustix::process::geteuid().as_raw()
}

fn untrusted(what: &str, path: &Path, problem: String) -> Error {
    Error::new(
        ErrorKind::Untrusted,
        format!(
            "{what}: {} cannot be trusted: {problem}; another user could redirect what pgclone deletes or writes there",
            path.display()
        ),
    )
    .hint("use a directory that only you (or root) own and can write, on a path of such directories")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_symlinked_or_shared_directory_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let real = base.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = create_trusted_dir(&link.join("root"), 0o755, "the pgclone directory");
        // The link is followed only through canonicalization of what exists: the result is
        // the real path, never the link.
        assert_eq!(err.unwrap(), real.canonicalize().unwrap().join("root"));

        let shared = base.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err =
            create_trusted_dir(&shared.join("root"), 0o755, "the pgclone directory").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Untrusted);
        assert!(err.to_string().contains("mode 777"), "{err}");

        let sticky = base.path().join("sticky");
        std::fs::create_dir(&sticky).unwrap();
        std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
        create_trusted_dir(&sticky.join("root"), 0o755, "the pgclone directory").unwrap();
        let err = create_trusted_dir(&sticky, 0o755, "the pgclone directory").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Untrusted);
    }

    #[test]
    fn a_symlinked_target_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let real = base.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = check_target_path(&link, "the clone's target").unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        check_target_path(&real, "the clone's target").unwrap();
        check_target_path(&base.path().join("new"), "the clone's target").unwrap();
    }
}
