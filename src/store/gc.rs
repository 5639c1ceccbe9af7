//! Garbage collection: what killed processes left behind, and what users kept.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::{IoContext, Result};
use crate::postgres::run_as::RunAs;
use crate::postgres::socket_dir;
use crate::store::root::Root;

/// What [`collect_garbage`] removed.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    /// Clone directories whose owner process is gone (or that were kept, when asked).
    pub clones: Vec<PathBuf>,
    /// Targets of clones whose maker died half way (`pgclone clone` killed).
    pub unfinished: Vec<PathBuf>,
    /// Stale socket directories.
    pub socket_dirs: usize,
}

/// Removes, under the pgclone directory `root` (default: `PGCLONE_DIR` or the default root),
/// the clones of dead processes (stopping their servers), unfinished clones, and stale socket
/// directories; with `include_kept`, also the clones users kept (`PGCLONE_KEEP`, `keep()`).
pub fn collect_garbage(root: Option<&Path>, include_kept: bool) -> Result<GcReport> {
    let config = Config::from_env()?;
    let run_as = RunAs::for_current_user(config.run_as.as_deref())?;
    let root = Root::open(root, &config, run_as.as_ref())?;
    let socket_parent = config.socket_dir.unwrap_or_else(socket_dir::default_parent);
    Ok(GcReport {
        clones: root.reap_stale_clones(include_kept),
        unfinished: root.reap_unfinished_clones(),
        socket_dirs: socket_dir::reap_stale(&socket_parent, run_as.as_ref()),
    })
}

/// The targets of clones whose `pgclone clone` was killed before it finished (recorded by
/// [`UnfinishedClone`] under the pgclone directory `root`), which [`collect_garbage`] removes.
pub fn unfinished_clones(root: Option<&Path>) -> Result<Vec<PathBuf>> {
    Ok(open_root(root, &Config::from_env()?)?.unfinished_targets())
}

/// The pgclone directory this process uses (`PGCLONE_DIR`, else `<cargo target dir>/pgclone`,
/// else `/var/cache/pgclone` for root and the user's cache directory for others), created if
/// needed.
pub fn pgclone_dir() -> Result<PathBuf> {
    Ok(open_root(None, &Config::from_env()?)?.path().to_path_buf())
}

/// The pgclone directory `root` (default: the one `config` names).
fn open_root(root: Option<&Path>, config: &Config) -> Result<Root> {
    let run_as = RunAs::for_current_user(config.run_as.as_deref())?;
    Root::open(root, config, run_as.as_ref())
}

/// A clone being made outside the pgclone directory, recorded in it until this value drops, so
/// that [`collect_garbage`] removes the target if this process dies before finishing it.
///
/// A guard (ARCHITECTURE.md): `Drop` removes the record, ignoring errors; [`close`](Self::close)
/// does the same and reports them; no `keep` (a record left behind asks gc to delete the target);
/// `Debug` shows the record and the target.
pub struct UnfinishedClone {
    record: PathBuf,
    target: PathBuf,
}

impl UnfinishedClone {
    /// Records the clone at `target` in the pgclone directory `root` (default as in
    /// [`collect_garbage`]).
    pub fn begin(root: Option<&Path>, target: &Path) -> Result<UnfinishedClone> {
        let root = open_root(root, &Config::from_env()?)?;
        let target = std::path::absolute(target).unwrap_or_else(|_| target.to_path_buf());
        Ok(UnfinishedClone {
            record: root.record_unfinished(&target)?,
            target,
        })
    }

    /// The clone is finished (or undone): removes the record as `Drop` does, reporting what
    /// failed.
    pub fn close(mut self) -> Result<()> {
        let record = std::mem::take(&mut self.record);
        std::fs::remove_file(&record).doing("remove the unfinished-clone record", &record)
    }
}

impl std::fmt::Debug for UnfinishedClone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnfinishedClone")
            .field("record", &self.record)
            .field("target", &self.target)
            .finish()
    }
}

impl Drop for UnfinishedClone {
    fn drop(&mut self) {
        if !self.record.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.record);
        }
    }
}
