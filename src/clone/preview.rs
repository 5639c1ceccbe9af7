//! What a clone of `source` into `target` would do, found without making it (`pgclone doctor SRC
//! DST`): online or offline, the binaries that would start it, the file systems and the copy
//! method, how pgclone would connect to a running source (and whether it can), and what would
//! refuse it.

use std::path::{Path, PathBuf};

use super::online::source_params;
use super::tree::{device_of, existing_ancestor};
use super::{probe_file_system, CloneOptions};
use crate::config::Config;
use crate::error::{IoContext, Result};
use crate::postgres::binaries::PgBinaries;
use crate::postgres::{data_dir, server};

/// What [`preview_clone`] found. Each `Err` holds why, in words.
#[derive(Debug)]
#[non_exhaustive]
pub struct ClonePreview {
    /// The source's data directory, absolute.
    pub source: PathBuf,
    /// Its major version (`PG_VERSION`).
    pub major: u32,
    /// The postmaster serving it, if it runs (then the clone is online).
    pub running: Option<u32>,
    /// The binaries `--start` would use (the source's major).
    pub binaries: std::result::Result<PgBinaries, String>,
    /// The source's and the target's file systems (the target's nearest existing directory).
    pub source_fs: String,
    /// See `source_fs`.
    pub target_fs: String,
    /// How the files would be copied, or why they could not be.
    pub method: std::result::Result<String, String>,
    /// A running source: the role, socket and identity pgclone would connect with, and
    /// whether that worked (a failed try leaves an authentication error in the source's log).
    pub connection: Option<std::result::Result<String, String>>,
    /// Why the clone would be refused, if it would.
    pub refusals: Vec<String>,
    /// Other things worth knowing (a configuration outside the data directory, ...).
    pub notes: Vec<String>,
}

/// Looks at `source` and `target` as [`clone_cluster`](super::clone_cluster) would, changing
/// nothing but a scratch file in the target's file system (to probe it) and, for a running
/// source, one connection that runs `select 1`.
pub fn preview_clone(source: &Path, target: &Path, options: &CloneOptions) -> Result<ClonePreview> {
    let config = Config::from_env()?;
    let source = std::path::absolute(source).doing("resolve", source)?;
    let target = std::path::absolute(target).doing("resolve", target)?;
    let major = data_dir::major_of(&source)?;
    let running = server::live_postmaster(&source);
    let binaries = PgBinaries::find_major_with(major, &config).map_err(|e| e.to_string());
    let landing = existing_ancestor(&target);
    let same_fs = device_of(&source)? == device_of(&landing)?;
    // As root, probing writes scratch files there: only in a path no other user controls.
    let trusted = match rustix::process::geteuid().is_root() {
        true => crate::store::safe_path::check_target_path(&target, "the clone's target")
            .map_err(|e| e.to_string()),
        false => Ok(()),
    };
    let probe = match &trusted {
        Ok(()) => probe_file_system(&landing).map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    };
    let method = match (&probe, same_fs) {
        (_, false) if !options.allow_copy => Err(format!(
            "{} is on another file system than the source: refused without --allow-copy (every byte would be copied)",
            target.display()
        )),
        (_, false) => Ok("copy (another file system: every byte copied, none shared)".to_string()),
        (Ok(fs), true) => Ok(format!("{}", fs.best_method())),
        (Err(e), true) => Err(e.clone()),
    };
    let mut refusals = Vec::new();
    let mut notes = Vec::new();
    if std::fs::read_dir(&target).is_ok_and(|mut entries| entries.next().is_some()) {
        refusals.push(format!("{} exists and is not empty", target.display()));
    }
    match super::tablespaces::plan(&source, &target, &options.tablespace_mapping) {
        Ok(tablespaces) => notes.extend(tablespaces.iter().map(|t| {
            format!(
                "tablespace {} is copied to {}",
                t.source.display(),
                t.target.display()
            )
        })),
        Err(e) => refusals.push(e.to_string()),
    }
    if source.join("standby.signal").exists() {
        notes.push(match running {
            Some(_) => "the source is a standby: the clone becomes a cluster of its own (--standby keeps it a standby)".to_string(),
            None => "the source is a stopped standby: so is the clone (read-only); promote it with pg_ctl promote".to_string(),
        });
    }
    if !source.join("postgresql.conf").exists() {
        notes.push(match running {
            Some(_) => "the configuration lives outside the data directory (Debian, Ubuntu): the clone gets its own copy".to_string(),
            None => "no postgresql.conf in the data directory (Debian, Ubuntu): an offline clone cannot find the configuration; clone it while it runs".to_string(),
        });
    }
    let connection = running.map(|pid| {
        let params =
            source_params(&source, pid, options, Some(&config)).map_err(|e| e.to_string())?;
        let how = match params.peer_identity {
            Some((uid, _)) => format!("{params} with OS user {uid}'s identity (peer)"),
            None => format!("{params}"),
        };
        let password = if params.password.is_some() {
            ", with a password (PGPASSWORD or the password file)"
        } else {
            ""
        };
        match crate::postgres::session::Session::connect(&params)
            .and_then(|mut s| s.query("select 1"))
        {
            Ok(_) => Ok(format!("{how}{password}: connected")),
            Err(e) => Err(format!("{how}{password}: {e}")),
        }
    });
    Ok(ClonePreview {
        source_fs: crate::sys::file_system_name(&source),
        target_fs: probe
            .map(|fs| fs.fs_type)
            .unwrap_or_else(|_| crate::sys::file_system_name(&landing)),
        source,
        major,
        running,
        binaries,
        method,
        connection,
        refusals,
        notes,
    })
}
