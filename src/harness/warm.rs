//! The data directory a template server leaves for the next one: `<root>/golden/<key>/warm/`.
//!
//! Starting a template server from a copy of its golden costs a copy of each of its ~1,000
//! files (a reflink each, or every byte without reflinks) and, at exit, their deletion. Instead,
//! a template server that stops with its cluster as it found it parks its data directory in its
//! golden's directory, and the next process's template server for that golden takes it (by
//! rename: one process wins, the others copy) and starts on it. A parked directory lives and dies
//! with its golden: a rebuild or a removal takes it along.
//!
//! While the server runs, its databases other than the admin one and the tests' refuse
//! connections (`ALLOW_CONNECTIONS false`, undone before it stops): the golden's database and
//! the templates, whose contents a later copy would carry, stay as they were.
//!
//! Parked only when the next server can start from it as from the golden:
//! - stopped by a fast shutdown, and never restarted after a crash meanwhile (the checkpointer
//!   is the one it started with: a crash restarts every server process);
//! - every database made for a test dropped;
//! - the cluster-wide state as the golden's ([`CLUSTER_STATE`]: roles, settings, tablespaces,
//!   the databases and their options, slots, prepared transactions, subscriptions, `ALTER
//!   SYSTEM`, and the count and highest oid of each kind of object in the admin database).
//!
//! Taken only in the boot that parked it: template servers run with `fsync = off`, so after a
//! host crash it may have lost writes.
//!
//! Layout: `warm/` belongs to the process's user, mode 0755 (like a clone directory), and holds
//! `data/` (the server's user's, as in a clone) and `boot` (the boot it was parked in). Beside
//! it, `warm.state` keeps the golden's cluster-wide state, so that a server need not ask for it.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::clone::CloneReport;
use crate::error::{IoContext, Result};
use crate::harness::golden::BuiltGolden;
use crate::harness::shared::drop_test_databases;
use crate::postgres::options::ServerOptions;
use crate::postgres::server::Server;
use crate::postgres::session::Session;
use crate::postgres::wire::{quote_ident, quote_literal};

const WARM: &str = "warm";
const BOOT: &str = "boot";
/// The golden's cluster-wide state, as [`cluster_state`] gives it.
const STATE: &str = "warm.state";

/// Which build of the golden a template server started from: its `READY` record, which names
/// the run that built it (a run builds a golden once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Build(String);

impl Build {
    fn of(golden: &BuiltGolden) -> Option<Build> {
        std::fs::read_to_string(golden.dir().join("READY"))
            .ok()
            .map(Build)
    }
}

/// A template server started by [`start`], and the build of the golden its cluster is.
pub(crate) struct Started {
    pub server: Server,
    /// Its clone directory.
    pub dir: PathBuf,
    pub build: Option<Build>,
}

/// Starts a template server of `golden` (with `options`) on the cluster an earlier one left, if
/// there is one from this boot, or else on a copy of the golden. A left cluster that does not
/// start is removed, and a copy started instead.
pub(crate) fn start(golden: &BuiltGolden, options: ServerOptions) -> Result<Started> {
    let (mut took, mut build) = (false, None);
    let started = golden.start_clone_with(options.clone(), |data| {
        // One shared lock from reading the build to the copy: no rebuild in between.
        let _no_rebuild = golden.lock_shared()?;
        build = Build::of(golden);
        took = take(golden, data);
        match took {
            true => Ok(CloneReport::default()),
            false => golden.copy_to(data),
        }
    });
    match started {
        Ok((server, dir, _)) => Ok(Started { server, dir, build }),
        Err(e) if took => {
            eprintln!(
                "pgclone: the cluster an earlier process left for golden {:?} did not start ({e}); starting a copy of the golden",
                golden.dbname
            );
            let mut build = None;
            let (server, dir, _) = golden.start_clone_with(options, |data| {
                let _no_rebuild = golden.lock_shared()?;
                build = Build::of(golden);
                golden.copy_to(data)
            })?;
            Ok(Started { server, dir, build })
        }
        Err(e) => Err(e),
    }
}

/// Moves the cluster left for `golden` into `data` (the empty data directory of a new clone
/// directory of this process), if there is one from this boot. The caller holds the golden's
/// shared lock.
fn take(golden: &BuiltGolden, data: &Path) -> bool {
    let warm = golden.dir().join(WARM);
    // Only a directory of ours that nobody else can write: nobody put a link to another
    // cluster in it.
    let ours = std::fs::symlink_metadata(&warm).is_ok_and(|m| {
        m.is_dir() && m.uid() == rustix::process::geteuid().as_raw() && m.mode() & 0o022 == 0
    });
    let Some(taken) = data.parent().map(|clone_dir| clone_dir.join("taken")) else {
        return false;
    };
    // Into this process's clone directory first: from there nobody else can take it, and the
    // reaper knows whose it is.
    if !ours || std::fs::rename(&warm, &taken).is_err() {
        return false; // none parked, or another process took it
    }
    let this_boot = std::fs::read_to_string(taken.join(BOOT)).ok() == crate::sys::boot_id();
    // `data` is empty: a rename may replace it.
    let took = this_boot && std::fs::rename(taken.join("data"), data).is_ok();
    let _ = std::fs::remove_dir_all(&taken); // the boot record, or a cluster from another boot
    took
}

/// The cluster-wide state a parked cluster must have, as a digest computed by the server (no
/// role's password reaches this process). `session` is a superuser's, in the admin database.
/// A clone's `port` line in `postgresql.auto.conf` differs from copy to copy of the golden and
/// is left out (the server's `-p` overrides it anyway).
fn cluster_state(session: &mut Session, major: u32) -> Result<String> {
    let parameter_acl = match crate::postgres::features::has_parameter_acl(major) {
        true => "(select string_agg(a::text, ',' order by a::text) from pg_parameter_acl a)",
        false => "''",
    };
    session.query_value(&CLUSTER_STATE.replace("$parameter_acl", parameter_acl))
}

/// See [`cluster_state`]. Shared catalogs whole (but the counters that change by themselves),
/// then the objects of the admin database by count and highest oid.
const CLUSTER_STATE: &str = "select encode(sha256(convert_to(concat_ws(E'\\n', \
    (select string_agg(r::text, ',' order by r::text) from pg_authid r), \
    (select string_agg(m::text, ',' order by m::text) from pg_auth_members m), \
    (select string_agg(s::text, ',' order by s::text) from pg_db_role_setting s), \
    (select string_agg(t::text, ',' order by t::text) from pg_tablespace t), \
    (select string_agg(concat_ws(' ', datname, datdba, datistemplate, datallowconn, datconnlimit, dattablespace, datacl), ',' order by datname) from pg_database), \
    (select string_agg(d::text, ',' order by d::text) from pg_shdescription d), \
    (select string_agg(l::text, ',' order by l::text) from pg_shseclabel l), \
    (select string_agg(s.oid::text || ' ' || s.subname, ',' order by s.oid) from pg_subscription s), \
    (select string_agg(o::text, ',' order by o::text) from pg_replication_origin o), \
    $parameter_acl, \
    (select string_agg(slot_name::text, ',' order by slot_name) from pg_replication_slots), \
    (select string_agg(gid, ',' order by gid) from pg_prepared_xacts), \
    (select string_agg(name || '=' || coalesce(setting, ''), ',' order by seqno) from pg_file_settings where sourcefile like '%postgresql.auto.conf' and name <> 'port'), \
    (select count(*) || ' ' || max(oid::int8) from pg_class), \
    (select count(*) || ' ' || max(oid::int8) from pg_proc), \
    (select count(*) || ' ' || max(oid::int8) from pg_namespace), \
    (select count(*) || ' ' || max(oid::int8) from pg_type), \
    (select count(*) || ' ' || max(oid::int8) from pg_extension), \
    (select count(*) || ' ' || max(oid::int8) from pg_event_trigger), \
    (select count(*) || ' ' || max(oid::int8) from pg_publication), \
    (select count(*) || ' ' || max(oid::int8) from pg_largeobject_metadata), \
    (select count(*) from pg_description)), 'UTF8')), 'hex')";

/// The checkpointer's pid: every server process starts again after a crash.
const CHECKPOINTER: &str =
    "select pid::text from pg_stat_activity where backend_type = 'checkpointer'";

/// How a template server found its cluster, to tell at exit whether it may be parked.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    build: Build,
    state: String,
    checkpointer: String,
    major: u32,
    /// The databases that refuse connections while the server runs.
    closed: Vec<String>,
}

impl Found {
    /// Closes the databases no test may connect to; `None` (never parked) when something
    /// cannot be read. The state is the golden's (a server on a copy of it, or on a cluster
    /// left as it was): computed by the first server of the golden, then read from the golden's
    /// `warm.state`. `session`: a superuser's, in the admin database `admin`.
    pub fn now(
        golden: &BuiltGolden,
        build: Option<Build>,
        session: &mut Session,
        admin: &str,
    ) -> Option<Found> {
        let build = build?;
        let major = golden.env.binaries.version().major();
        let state = match saved_state(golden) {
            Some(state) => state,
            None => {
                let state = cluster_state(session, major).ok()?;
                save_state(golden, &build, &state);
                state
            }
        };
        let checkpointer = session.query_value(CHECKPOINTER).ok()?;
        let open = session
            .query(&format!(
                "select datname from pg_database where datallowconn and datname <> {}",
                quote_literal(admin)
            ))
            .ok()?;
        let mut closed = Vec::new();
        for name in open
            .into_iter()
            .filter_map(|row| row.into_iter().next().flatten())
        {
            let sql = format!(
                "alter database {} allow_connections false",
                quote_ident(&name)
            );
            session.query(&sql).ok()?;
            closed.push(name);
        }
        Some(Found {
            build,
            state,
            checkpointer,
            major,
            closed,
        })
    }

    /// Lets the databases closed at start take connections again; whether all do.
    pub fn reopen(&self, session: &mut Session) -> bool {
        self.closed.iter().all(|name| {
            let sql = format!(
                "alter database {} allow_connections true",
                quote_ident(name)
            );
            session.query(&sql).is_ok()
        })
    }
}

/// The saved state, if it was saved by this version of [`CLUSTER_STATE`].
fn saved_state(golden: &BuiltGolden) -> Option<String> {
    let text = std::fs::read_to_string(golden.dir().join(STATE)).ok()?;
    let (query, state) = text.split_once(' ')?;
    (query == query_version() && !state.is_empty()).then(|| state.to_string())
}

/// Saves the golden's state, unless it was rebuilt since `build` (or is being rebuilt).
fn save_state(golden: &BuiltGolden, build: &Build, state: &str) {
    let Ok(Some(_no_rebuild)) = golden.try_lock_shared() else {
        return;
    };
    if Build::of(golden).as_ref() != Some(build) {
        return;
    }
    let saved = golden.dir().join(STATE);
    // Written aside (a name of this process's own) and renamed: a reader never sees half of it.
    let aside = saved.with_extension(format!("{}.tmp", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&aside)
        .and_then(|mut file| write!(file, "{} {state}", query_version()))
        .and_then(|()| std::fs::rename(&aside, &saved));
    if written.is_err() {
        let _ = std::fs::remove_file(&aside);
    }
}

/// Tells the digests of one version of [`CLUSTER_STATE`] from another's.
fn query_version() -> String {
    let hash = Sha256::digest(CLUSTER_STATE.as_bytes());
    hash.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// Stops a template server of this process whose clone nobody keeps, and parks its data
/// directory for the next one when it is as `found` says it must be; then removes the rest of
/// `dir` (its clone directory). `session`: a superuser's, in the admin database, whose process
/// no longer makes or drops databases (the caller holds them).
pub(crate) fn stop_and_park(
    golden: &BuiltGolden,
    server: Server,
    dir: &Path,
    session: &mut Session,
    found: Option<&Found>,
) -> Result<()> {
    let as_found = found.is_some_and(|found| {
        found.reopen(session)
            && drop_test_databases(session, &golden.dbname, true).is_ok()
            && session.query_value(CHECKPOINTER).ok().as_ref() == Some(&found.checkpointer)
            && cluster_state(session, found.major).is_ok_and(|state| state == found.state)
    });
    let stopped = match as_found {
        true => server.stop_cleanly(),
        false => server.stop_immediately().map(|()| false),
    };
    if let (Ok(true), Some(found)) = (&stopped, found) {
        park(golden, dir, &found.build);
    }
    let removed = std::fs::remove_dir_all(dir).doing("remove clone directory", dir);
    stopped.map(drop).and(removed)
}

/// Moves `<dir>/data` to the golden's `warm/`, unless one is parked there already, the golden
/// was rebuilt since `build`, or a rebuild holds it now.
fn park(golden: &BuiltGolden, dir: &Path, build: &Build) {
    let Some(boot) = crate::sys::boot_id() else {
        return;
    };
    let Ok(Some(_no_rebuild)) = golden.try_lock_shared() else {
        return;
    };
    if Build::of(golden).as_ref() != Some(build) {
        return; // rebuilt meanwhile: what this server ran on is the old golden
    }
    let parking = dir.join("parking");
    // If this fails (most often: another process parked first), the caller removes it all.
    let _ = std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&parking)
        .and_then(|()| std::fs::write(parking.join(BOOT), boot))
        .and_then(|()| std::fs::rename(dir.join("data"), parking.join("data")))
        .and_then(|()| std::fs::rename(&parking, golden.dir().join(WARM)));
}
