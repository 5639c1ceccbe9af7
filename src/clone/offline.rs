//! Cloning a cleanly stopped cluster (docs/postgres-facts.md 15): check it is shut down and no
//! postmaster owns it, copy the tree (WAL included: the checkpoint record lives there) without
//! `pg_control`, check that the source's `pg_control` did not change meanwhile, then copy it.

use std::path::Path;
use std::time::Instant;

use super::exclude::Source;
use super::tree::{copy_tree, CloneReport};
use super::{finish_with_control_file, write_clone_config, CloneOptions, Plan, Step};
use crate::config::Config;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::postgres::pg_control::cluster_state;
use crate::postgres::run_as::RunAs;
use crate::postgres::server;

/// Clones the stopped cluster in `source` into `target` (absent or an empty directory). The
/// source is only read. On failure the target is left as it was found.
pub fn clone_stopped_cluster(
    source: &Path,
    target: &Path,
    options: &CloneOptions,
) -> Result<CloneReport> {
    let owner = RunAs::for_current_user(Config::from_env()?.run_as.as_deref())?;
    clone_stopped(source, target, options, owner)
}

/// [`clone_stopped_cluster`], copying as `owner` (the server's user when this process is root),
/// which the caller resolved from its configuration.
pub(crate) fn clone_stopped(
    source: &Path,
    target: &Path,
    options: &CloneOptions,
    owner: Option<RunAs>,
) -> Result<CloneReport> {
    let plan = Plan::new(source, target, options, owner)?;
    check_stopped(&plan.source)?;
    let control_path = plan.source.join("global/pg_control");
    let control = std::fs::read(&control_path).doing("read", &control_path)?;

    plan.run(|| {
        let started = Instant::now();
        let mut report = copy_tree(
            &plan.source,
            &plan.target,
            &plan.tablespaces,
            Source::Stopped,
            plan.owner.as_ref(),
            &options.progress,
            options.copy_threads(),
        )?;
        report.from_standby = plan.source.join("standby.signal").exists();
        // Started (and maybe stopped again) during the copy: the files may be torn.
        let torn = |how: &str| {
            Error::new(
                ErrorKind::SourceState,
                format!(
                    "source {} changed during the copy{how}, so the clone would be torn",
                    plan.source.display()
                ),
            )
        };
        let changed = match check_stopped(&plan.source) {
            Err(e) => Some(torn("").with_source(e)),
            Ok(()) => {
                let now = std::fs::read(&control_path).ok();
                (now.as_deref() != Some(control.as_slice()))
                    .then(|| torn(" (its pg_control changed)"))
            }
        };
        if let Some(error) = changed {
            return Err(error.hint("stop the source for the whole copy, or clone it while it runs"));
        }
        step(&mut report, options, Step::CopyFiles, started);

        let started = Instant::now();
        write_clone_config(&plan.target, options.standby)?;
        step(&mut report, options, Step::Config, started);

        let started = Instant::now();
        let (method, bytes) = finish_with_control_file(
            &plan.source,
            &plan.target,
            &plan.tablespace_copies(),
            !options.no_sync,
        )?;
        report.count(method, bytes);
        step(&mut report, options, Step::ControlFile, started);
        Ok(report)
    })
}

fn step(report: &mut CloneReport, options: &CloneOptions, step: Step, started: Instant) {
    report.steps.push((step, started.elapsed()));
    report.elapsed += started.elapsed();
    options.progress.done(step);
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
