//! The data directory a template server leaves for the next one: `<root>/golden/<key>/warm/`.
//!
//! Starting a template server from a copy of its golden costs a copy of each of its ~1,000
//! files (a reflink each, or every byte without reflinks) and, at exit, their deletion. Instead,
//! a template server that stops with its cluster as it found it parks its data directory in its
//! golden's directory, and the next process's template server for that golden takes it (by
//! rename: one process wins, the others copy) and starts on it. A parked directory lives and dies
//! with its golden: a rebuild or a removal takes it along.
//!
//! Parked only when the next server can start from it as from the golden: stopped cleanly, every
//! database made for a test dropped, and the cluster-wide state (roles, tablespaces, settings
//! written by `ALTER SYSTEM`, slots, prepared transactions, the list of databases, the objects
//! in the admin database) as it was when the server started. Taken only in the boot that parked
//! it: template servers run with `fsync = off`, so after a host crash it may have lost writes.
//!
//! Layout: `warm/` belongs to the process's user (like a clone directory), and holds `data/`
//! (the server's user's, as in a clone) and `boot` (the boot it was parked in). Beside it,
//! `warm.state` keeps the golden's cluster-wide state, so that a server need not ask for it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::clone::CloneReport;
use crate::error::{IoContext, Result};
use crate::harness::golden::BuiltGolden;
use crate::harness::shared::drop_test_databases;
use crate::postgres::options::ServerOptions;
use crate::postgres::server::Server;
use crate::postgres::session::Session;

const WARM: &str = "warm";
const BOOT: &str = "boot";
/// The golden's cluster-wide state, as [`cluster_state`] gives it.
const STATE: &str = "warm.state";

/// Which build of the golden a template server started from (its data directory's inode: a
/// rebuild makes a new one before the old one goes, so the two never share a number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Build(u64);

impl Build {
    pub fn of(golden: &BuiltGolden) -> Option<Build> {
        std::fs::metadata(&golden.data_dir)
            .ok()
            .map(|m| Build(m.ino()))
    }
}

/// Starts a template server of `golden` (with `options`) on the cluster an earlier one left, if
/// there is one from this boot, or else on a copy of the golden: the server and its clone
/// directory. A left cluster that does not start is removed, and a copy started instead.
pub(crate) fn start(golden: &BuiltGolden, options: ServerOptions) -> Result<(Server, PathBuf)> {
    let mut took = false;
    let started = golden.start_clone_with(options.clone(), |data| {
        {
            let _no_rebuild = golden.lock_shared()?;
            took = take(golden, data);
        }
        match took {
            true => Ok(CloneReport::default()),
            false => golden.copy_to(data),
        }
    });
    match started {
        Ok((server, dir, _)) => Ok((server, dir)),
        Err(e) if took => {
            eprintln!(
                "pgclone: the cluster an earlier process left for golden {:?} did not start ({e}); starting a copy of the golden",
                golden.dbname
            );
            let (server, dir, _) = golden.start_clone_with(options, |data| golden.copy_to(data))?;
            Ok((server, dir))
        }
        Err(e) => Err(e),
    }
}

/// Moves the cluster left for `golden` into `data` (the empty data directory of a new clone
/// directory of this process), if there is one from this boot.
fn take(golden: &BuiltGolden, data: &Path) -> bool {
    let Some(taken) = data.parent().map(|clone_dir| clone_dir.join("taken")) else {
        return false;
    };
    // Into this process's clone directory first: from there nobody else can take it, and the
    // reaper knows whose it is.
    if std::fs::rename(golden.dir().join(WARM), &taken).is_err() {
        return false; // none parked, or another process took it
    }
    let this_boot = std::fs::read_to_string(taken.join(BOOT)).ok() == crate::sys::boot_id();
    // `data` is empty: a rename may replace it.
    let took = this_boot && std::fs::rename(taken.join("data"), data).is_ok();
    let _ = std::fs::remove_dir_all(&taken); // the boot record, or a directory from another boot
    took
}

/// The cluster-wide state a parked directory must have as its server found it, as a digest
/// (computed by the server: no role's password reaches this process). `session` is a
/// superuser's, in the admin database. A clone's `port` line in `postgresql.auto.conf` differs
/// from copy to copy of the golden and is left out (the server's `-p` overrides it anyway).
pub(crate) fn cluster_state(session: &mut Session) -> Result<String> {
    session.query_value(CLUSTER_STATE)
}

const CLUSTER_STATE: &str = "select encode(sha256(convert_to(concat_ws(E'\\n', \
    (select string_agg(r::text, ',' order by r::text) from pg_authid r), \
    (select string_agg(m::text, ',' order by m::text) from pg_auth_members m), \
    (select string_agg(s::text, ',' order by s::text) from pg_db_role_setting s), \
    (select string_agg(t::text, ',' order by t::text) from pg_tablespace t), \
    (select string_agg(concat_ws(' ', datname, datdba, datistemplate, datallowconn, datconnlimit, datacl), ',' order by datname) from pg_database), \
    (select string_agg(slot_name::text, ',' order by slot_name) from pg_replication_slots), \
    (select string_agg(gid, ',' order by gid) from pg_prepared_xacts), \
    (select string_agg(name || '=' || coalesce(setting, ''), ',' order by seqno) from pg_file_settings where sourcefile like '%postgresql.auto.conf' and name <> 'port'), \
    (select count(*) || ' ' || max(oid::int8) from pg_class)), 'UTF8')), 'hex')";

/// How a template server found its cluster: the build it came from, and its state then.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub build: Build,
    pub state: String,
}

impl Found {
    /// `None` when either cannot be read: such a server is never parked. The state is the
    /// golden's (a server on a copy of it, or on a cluster left as it was): computed by the first
    /// server of the golden, then read from the golden's `warm.state`.
    pub fn now(golden: &BuiltGolden, session: &mut Session) -> Option<Found> {
        let build = Build::of(golden)?;
        let saved = golden.dir().join(STATE);
        if let Some(state) = std::fs::read_to_string(&saved)
            .ok()
            .filter(|s| !s.is_empty())
        {
            return Some(Found { build, state });
        }
        let state = cluster_state(session).ok()?;
        if let Ok(Some(_no_rebuild)) = golden.try_lock_shared() {
            if Build::of(golden) == Some(build) {
                // Written aside and renamed: a reader never sees half of it.
                let aside = saved.with_extension("tmp");
                let _ =
                    std::fs::write(&aside, &state).and_then(|()| std::fs::rename(&aside, &saved));
            }
        }
        Some(Found { build, state })
    }
}

/// Stops a template server of this process whose clone nobody keeps, and parks its data
/// directory for the next one when it is as `found`; then removes the rest of `dir` (its clone
/// directory). `session`: a superuser's, in the admin database, to drop what tests left (the one
/// that drops tests' databases, so that no drop is under way meanwhile).
pub(crate) fn stop_and_park(
    golden: &BuiltGolden,
    server: Server,
    dir: &Path,
    session: &mut Session,
    found: Option<&Found>,
) -> Result<()> {
    let as_found = found.is_some_and(|found| {
        drop_test_databases(session, &golden.dbname, true).is_ok()
            && cluster_state(session).is_ok_and(|state| state == found.state)
    });
    let stopped = match as_found {
        true => server.stop(),
        false => server.stop_immediately(),
    };
    if as_found && stopped.is_ok() {
        if let Some(found) = found {
            park(golden, dir, found.build);
        }
    }
    let removed = std::fs::remove_dir_all(dir).doing("remove clone directory", dir);
    stopped.and(removed)
}

/// Moves `<dir>/data` to the golden's `warm/`, unless one is parked there already, the golden
/// was rebuilt since `build`, or a rebuild holds it now.
fn park(golden: &BuiltGolden, dir: &Path, build: Build) {
    let Some(boot) = crate::sys::boot_id() else {
        return;
    };
    let Ok(Some(_no_rebuild)) = golden.try_lock_shared() else {
        return;
    };
    if Build::of(golden) != Some(build) {
        return; // rebuilt meanwhile: what this server ran on is the old golden
    }
    let parking = dir.join("parking");
    // If this fails (most often: another process parked first), the caller removes it all.
    let _ = std::fs::create_dir(&parking)
        .and_then(|()| std::fs::write(parking.join(BOOT), boot))
        .and_then(|()| std::fs::rename(dir.join("data"), parking.join("data")))
        .and_then(|()| std::fs::rename(&parking, golden.dir().join(WARM)));
}
