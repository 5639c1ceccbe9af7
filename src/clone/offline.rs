//! Cloning a cleanly stopped cluster (POSTGRES.md 15): check it is shut down and no postmaster
//! owns it, copy the tree (WAL included: the checkpoint record lives there), check again.

use std::path::Path;
use std::time::Instant;

use super::exclude::Source;
use super::tree::{copy_tree, CloneReport};
use super::{
    check_file_systems, check_target, make_target, undo_target, write_clone_config, CloneOptions,
    Step,
};
use crate::config::Config;
use crate::data_dir;
use crate::error::{Error, ErrorKind, Result};
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
    check_file_systems(source, target, options)?;
    let run_as = RunAs::for_current_user(Config::from_env()?.run_as.as_deref())?;

    let started = Instant::now();
    let result = make_target(source, target, run_as.as_ref())
        .and_then(|()| {
            copy_tree(
                source,
                target,
                Source::Stopped,
                run_as.as_ref(),
                &options.progress,
                options.copy_threads(),
            )
        })
        .and_then(|mut report| {
            check_stopped(source).map_err(|e| {
                Error::new(
                    ErrorKind::SourceState,
                    format!("the source changed during the copy, so the clone may be torn: {e}"),
                )
            })?;
            report.steps.push((Step::CopyFiles, started.elapsed()));
            options.progress.done(Step::CopyFiles);
            let config_started = std::time::Instant::now();
            write_clone_config(target, options.standby, run_as.as_ref())?;
            report.steps.push((Step::Config, config_started.elapsed()));
            options.progress.done(Step::Config);
            report.elapsed = started.elapsed();
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
