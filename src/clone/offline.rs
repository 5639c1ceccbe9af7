//! Cloning a cleanly stopped cluster (POSTGRES.md 15): check it is shut down and no postmaster
//! owns it, copy the tree (WAL included: the checkpoint record lives there), check again.

use std::path::Path;

use super::exclude::Source;
use super::tree::{copy_tree, device_of, existing_ancestor, CloneReport};
use super::CloneOptions;
use crate::config::Config;
use crate::data_dir;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::pg_control::cluster_state;
use crate::run_as::RunAs;
use crate::server;

/// Clones the stopped cluster in `source` into `target` (absent or an empty directory). The
/// source is only read. On failure the target is left as it was found.
pub fn clone_stopped_cluster(
    source: &Path,
    target: &Path,
    options: &CloneOptions,
) -> Result<CloneReport> {
    data_dir::major_of(source)?;
    check_stopped(source)?;
    let target_existed = check_target(target)?;
    let same_fs = device_of(source)? == device_of(&existing_ancestor(target))?;
    if !same_fs && !options.allow_copy {
        return Err(Error::new(
            ErrorKind::CrossFilesystem,
            format!(
                "target {} is on another file system than source {}: every byte would be copied, not shared",
                target.display(),
                source.display()
            ),
        )
        .hint("put the target beside the source, or allow copying (`--allow-copy`)"));
    }
    let run_as = RunAs::for_current_user(Config::from_env()?.run_as.as_deref())?;

    let result = make_target(source, target, run_as.as_ref())
        .and_then(|()| copy_tree(source, target, Source::Stopped, run_as.as_ref()))
        .and_then(|report| {
            check_stopped(source).map_err(|e| {
                Error::new(
                    ErrorKind::SourceState,
                    format!("the source changed during the copy, so the clone may be torn: {e}"),
                )
            })?;
            Ok(report)
        });
    if result.is_err() {
        undo_target(target, target_existed);
    }
    result
}

/// Fails unless the source was shut down cleanly and no postmaster serves it.
fn check_stopped(source: &Path) -> Result<()> {
    if let Some(pid) = server::live_postmaster(source) {
        return Err(Error::new(
            ErrorKind::SourceState,
            format!(
                "source {} is running (postmaster pid {pid})",
                source.display()
            ),
        )
        .hint("clone it while it runs (an online clone), or stop it first"));
    }
    let state = cluster_state(source)?;
    if !state.is_shut_down() {
        return Err(Error::new(
            ErrorKind::SourceState,
            format!(
                "source {} was not shut down cleanly (pg_control says: {})",
                source.display(),
                state.describe()
            ),
        )
        .hint("start it and stop it cleanly (pg_ctl stop -m fast), then clone it"));
    }
    Ok(())
}

/// Fails if the target holds anything; returns whether it exists.
pub(crate) fn check_target(target: &Path) -> Result<bool> {
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

fn make_target(source: &Path, target: &Path, owner: Option<&RunAs>) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !target.exists() {
        std::fs::create_dir_all(target).doing("create", target)?;
    }
    let mode = std::fs::metadata(source).doing("stat", source)?.mode() & 0o7777;
    std::fs::set_permissions(target, std::fs::Permissions::from_mode(mode))
        .doing("chmod", target)?;
    match owner {
        Some(user) => user.chown(target),
        None => Ok(()),
    }
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
