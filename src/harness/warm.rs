//! Parking: the data directory a template server leaves for the next one, in
//! `<root>/warm/<golden key>/`.
//!
//! Starting a template server from a copy of its golden costs a copy of each of its ~1,000
//! files (a reflink each, or every byte without reflinks) and, at exit, their deletion. Instead,
//! a template server that stops with its cluster as it found it *parks* its data directory, and
//! the next process's template server for that golden takes it (by rename: one process wins, the
//! others copy) and starts on it. Parked clusters are kept apart from the golden's directory,
//! which CI caches save: one is worth nothing on another machine. A parked cluster is a copy of
//! one build of its golden: after a rebuild it is removed when found, and the golden's removal
//! removes it.
//!
//! While the server runs, every database but the admin one and the tests' refuses connections
//! (`ALLOW_CONNECTIONS false`, undone before it stops): the golden's database and the templates,
//! which a later copy would carry, stay as they were.
//!
//! Parked only when the next server can start from it as from the golden:
//! - stopped by a fast shutdown, and never restarted after a crash meanwhile (the checkpointer
//!   is the one it started with: a crash restarts every server process);
//! - every database made for a test dropped;
//! - the cluster-wide state as the golden's ([`CLUSTER_STATE`]: roles, their settings and
//!   memberships, tablespaces, the databases and their options, comments and security labels on
//!   shared objects, subscriptions, replication origins and slots, prepared transactions, `ALTER
//!   SYSTEM`, and the number and highest oid of eight kinds of object in the admin database).
//!
//! Taken only in the boot that parked it: template servers run with `fsync = off`, so after a
//! host crash it may have lost writes.
//!
//! Layout: `<root>/warm/<key>/` belongs to the process's user, mode 0755 (like a clone
//! directory), and holds `data/` (the server's user's, as in a clone), `boot` (the boot it was
//! parked in) and `build` (the golden's build it is a copy of). The golden's own directory keeps
//! `warm.state`, its cluster-wide state, so that a server need not ask for it.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::clone::CloneReport;
use crate::error::{IoContext, Result};
use crate::harness::golden::BuiltGolden;
use crate::harness::shared::drop_test_databases;
use crate::postgres::options::ServerOptions;
use crate::postgres::server::{Server, SUPERUSER};
use crate::postgres::session::Session;
use crate::postgres::wire::{quote_ident, quote_literal};
use crate::store::root::Root;

const BOOT: &str = "boot";
const BUILD: &str = "build";
/// The golden's cluster-wide state, as [`cluster_state`] gives it.
const STATE: &str = "warm.state";

/// Which build of the golden a cluster is a copy of: the golden's `READY` record, which names
/// the run that built it (a run builds a golden once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GoldenBuild(String);

impl GoldenBuild {
    fn of(golden: &BuiltGolden) -> Option<GoldenBuild> {
        std::fs::read_to_string(golden.dir().join("READY"))
            .ok()
            .map(GoldenBuild)
    }
}

/// A template server started by [`start`].
pub(crate) struct Started {
    pub server: Server,
    /// Its clone directory.
    pub dir: PathBuf,
    /// The golden's build its cluster is a copy of (`None` if `READY` could not be read: such a
    /// cluster is never parked).
    pub build: Option<GoldenBuild>,
}

/// Starts a template server of `golden` (with `options`) on the cluster an earlier one parked,
/// if there is a usable one, or else on a copy of the golden. A parked cluster that does not
/// start is removed, and a copy started instead.
pub(crate) fn start(golden: &BuiltGolden, options: ServerOptions) -> Result<Started> {
    // Returns whether the parked cluster was taken too.
    let attempt = |may_take: bool| {
        let (mut took, mut build) = (false, None);
        let started = golden.start_clone_with(options.clone(), |data| {
            // One shared lock from reading the build to the copy: no rebuild in between.
            let _no_rebuild = golden.lock_shared()?;
            build = GoldenBuild::of(golden);
            took = may_take && take_parked(golden, build.as_ref(), data);
            match took {
                true => Ok(CloneReport::default()),
                false => golden.copy_to(data),
            }
        });
        let started = started.map(|(server, dir, _)| Started { server, dir, build });
        (started, took)
    };
    let started = match attempt(true) {
        (Err(e), true) => {
            eprintln!(
                "pgclone: the cluster an earlier process parked for golden {:?} did not start ({e}); starting a copy of the golden",
                golden.dbname
            );
            attempt(false).0
        }
        (started, _) => started,
    }?;
    connect_to_other_templates(golden, &started.server);
    Ok(started)
}

/// Connects once to each of a library's templates but the first (the server's readiness probe
/// connected to that one), side by side, before they are closed: a server starts without the
/// relation cache's init files, and a first connection writes its database's, which
/// `CREATE DATABASE` then copies into every test's database instead of each test's first
/// connection building its own.
fn connect_to_other_templates(golden: &BuiltGolden, server: &Server) {
    let socket = server.socket_path();
    std::thread::scope(|scope| {
        for template in golden.templates.iter().filter(|t| **t != golden.dbname) {
            let socket = &socket;
            scope.spawn(move || crate::postgres::wire::probe(socket, SUPERUSER, template));
        }
    });
}

/// Where a cluster of `golden`'s is parked: `<root>/warm/<key>`.
fn parked_dir(golden: &BuiltGolden) -> PathBuf {
    golden.root.warm_dir().join(golden.key())
}

/// Moves the cluster parked for `golden` into `data` (the empty data directory of a new clone
/// directory of this process), if there is one from this boot and of `build`, the golden's
/// build now (the caller holds the golden's shared lock). One that is not (or whose directory
/// is not as this process makes it) is removed.
fn take_parked(golden: &BuiltGolden, build: Option<&GoldenBuild>, data: &Path) -> bool {
    let parked = parked_dir(golden);
    let Ok(meta) = std::fs::symlink_metadata(&parked) else {
        return false; // none parked
    };
    // Only a directory of ours that nobody else can write: nobody put a link to another
    // cluster in it. One of ours that others could write is removed.
    let ours = meta.is_dir() && meta.uid() == rustix::process::geteuid().as_raw();
    if !ours || meta.mode() & 0o022 != 0 {
        if ours {
            let _ = crate::store::root::discard(&parked);
        }
        return false;
    }
    let Some(taken) = data.parent().map(|clone_dir| clone_dir.join("taken")) else {
        return false;
    };
    // Into this process's clone directory first: from there nobody else can take it, and the
    // reaper knows whose it is.
    if std::fs::rename(&parked, &taken).is_err() {
        return false; // another process took it
    }
    let read = |name| std::fs::read_to_string(taken.join(name)).ok();
    let usable = read(BOOT) == crate::sys::boot_id()
        && build.is_some_and(|build| read(BUILD).as_ref() == Some(&build.0));
    // `data` is empty: a rename may replace it.
    let took = usable && std::fs::rename(taken.join("data"), data).is_ok();
    let _ = std::fs::remove_dir_all(&taken); // the records, or a cluster of no use any more
    took
}

/// Removes the cluster parked for the golden `key` under `root` (renamed away first, so that
/// no process takes it meanwhile).
pub(crate) fn remove_parked(root: &Root, key: &str) {
    let parked = root.warm_dir().join(key);
    if parked.exists() {
        let _ = crate::store::root::discard(&parked);
    }
}

/// The cluster-wide state a parked cluster must have, as a digest computed by the server (no
/// role's password reaches this process). `session` is a superuser's, in the admin database.
/// A clone's `port` line in `postgresql.auto.conf` differs from copy to copy of the golden and
/// is left out (the server's `-p` overrides it anyway).
fn cluster_state(session: &mut Session, major: u32) -> Result<String> {
    // Filled in after `query_version` hashed the query: one version for every major.
    let parameter_acl = match crate::postgres::features::has_parameter_acl(major) {
        true => "(select string_agg(a::text, ',' order by a::text) from pg_parameter_acl a)",
        false => "''",
    };
    session.query_value(&CLUSTER_STATE.replace("$parameter_acl", parameter_acl))
}

/// See [`cluster_state`]. Shared catalogs row by row (but the counters that change by
/// themselves; subscriptions and slots by name), then eight kinds of object in the admin
/// database by count and highest oid. Each part is one line, empty when there is nothing.
const CLUSTER_STATE: &str = "select encode(sha256(convert_to(concat_ws(E'\\n', \
    coalesce((select string_agg(r::text, ',' order by r::text) from pg_authid r), ''), \
    coalesce((select string_agg(m::text, ',' order by m::text) from pg_auth_members m), ''), \
    coalesce((select string_agg(s::text, ',' order by s::text) from pg_db_role_setting s), ''), \
    coalesce((select string_agg(t::text, ',' order by t::text) from pg_tablespace t), ''), \
    coalesce((select string_agg(concat_ws(' ', datname, datdba, datistemplate, datallowconn, datconnlimit, dattablespace, datacl), ',' order by datname) from pg_database), ''), \
    coalesce((select string_agg(d::text, ',' order by d::text) from pg_shdescription d), ''), \
    coalesce((select string_agg(l::text, ',' order by l::text) from pg_shseclabel l), ''), \
    coalesce((select string_agg(s.oid::text || ' ' || s.subname, ',' order by s.oid) from pg_subscription s), ''), \
    coalesce((select string_agg(o::text, ',' order by o::text) from pg_replication_origin o), ''), \
    coalesce($parameter_acl, ''), \
    coalesce((select string_agg(slot_name::text, ',' order by slot_name) from pg_replication_slots), ''), \
    coalesce((select string_agg(gid, ',' order by gid) from pg_prepared_xacts), ''), \
    coalesce((select string_agg(name || '=' || coalesce(setting, ''), ',' order by seqno) from pg_file_settings where sourcefile like '%postgresql.auto.conf' and name <> 'port'), ''), \
    (select count(*) || ' ' || coalesce(max(oid::int8), 0) from pg_class), \
    (select count(*) || ' ' || coalesce(max(oid::int8), 0) from pg_proc), \
    (select count(*) || ' ' || coalesce(max(oid::int8), 0) from pg_namespace), \
    (select count(*) || ' ' || coalesce(max(oid::int8), 0) from pg_type), \
    (select count(*) || ' ' || coalesce(max(oid::int8), 0) from pg_extension), \
    (select count(*) || ' ' || coalesce(max(oid::int8), 0) from pg_event_trigger), \
    (select count(*) || ' ' || coalesce(max(oid::int8), 0) from pg_publication), \
    (select count(*) || ' ' || coalesce(max(oid::int8), 0) from pg_largeobject_metadata), \
    (select count(*) from pg_description)), 'UTF8')), 'hex')";

/// The checkpointer's pid: every server process starts again after a crash.
const CHECKPOINTER: &str =
    "select pid::text from pg_stat_activity where backend_type = 'checkpointer'";

/// What a template server's cluster was when the server started, to tell at exit whether it
/// may be parked, and the databases it closed.
#[derive(Debug, Clone)]
pub(crate) struct AtStart {
    build: GoldenBuild,
    state: String,
    checkpointer: String,
    /// The databases that refuse connections while the server runs.
    closed: Vec<String>,
}

impl AtStart {
    /// Records the cluster as the server starts, and closes every database but `admin` (where
    /// `session`, a superuser's, sits). `None` when something cannot be read or closed: such a
    /// cluster is never parked (what was closed is opened again). The state is the golden's (a
    /// server starts on a copy of it, or on a cluster parked as it was): computed by the first
    /// server of the golden, then read from the golden's `warm.state`.
    pub fn record_and_close(
        golden: &BuiltGolden,
        build: Option<GoldenBuild>,
        session: &mut Session,
        admin: &str,
    ) -> Option<AtStart> {
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
        let mut at_start = AtStart {
            build,
            state,
            checkpointer,
            closed: Vec::new(),
        };
        for name in open
            .into_iter()
            .filter_map(|row| row.into_iter().next().flatten())
        {
            let sql = format!(
                "alter database {} allow_connections false",
                quote_ident(&name)
            );
            if session.query(&sql).is_err() {
                at_start.reopen(session);
                return None;
            }
            at_start.closed.push(name);
        }
        Some(at_start)
    }

    /// Lets the databases closed at start take connections again (each is tried); whether all
    /// do.
    pub fn reopen(&self, session: &mut Session) -> bool {
        self.closed.iter().fold(true, |all, name| {
            let sql = format!(
                "alter database {} allow_connections true",
                quote_ident(name)
            );
            session.query(&sql).is_ok() && all
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
fn save_state(golden: &BuiltGolden, build: &GoldenBuild, state: &str) {
    let Ok(Some(_no_rebuild)) = golden.try_lock_shared() else {
        return;
    };
    if GoldenBuild::of(golden).as_ref() != Some(build) {
        return;
    }
    let saved = golden.dir().join(STATE);
    // Written aside (a name of this process's own) and renamed: a reader never sees half of it.
    let aside = golden
        .dir()
        .join(format!("{STATE}.{}.tmp", std::process::id()));
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

/// Stops a template server whose clone nobody keeps, and parks its data directory for the next
/// one when it is as `at_start` says it must be; then removes the rest of `dir` (its clone
/// directory). `session`: a superuser's, in the admin database; nobody makes or drops databases
/// meanwhile (the process's template server holds both its admin sessions; a keeper, the lease
/// no test process holds any more).
pub(crate) fn stop_and_park(
    golden: &BuiltGolden,
    server: Server,
    dir: &Path,
    session: &mut Session,
    at_start: Option<&AtStart>,
) -> Result<()> {
    let major = golden.env.binaries.version().major();
    let as_at_start = at_start.is_some_and(|at_start| {
        at_start.reopen(session)
            && drop_test_databases(session, &golden.templates, true).is_ok()
            && session.query_value(CHECKPOINTER).ok().as_ref() == Some(&at_start.checkpointer)
            && cluster_state(session, major).is_ok_and(|state| state == at_start.state)
    });
    let stopped = match as_at_start {
        true => server.stop_cleanly(),
        false => server.stop_immediately().map(|()| false),
    };
    if let (Ok(true), Some(at_start)) = (&stopped, at_start) {
        park(golden, dir, &at_start.build);
    }
    let removed = std::fs::remove_dir_all(dir).doing("remove clone directory", dir);
    stopped.map(drop).and(removed)
}

/// Moves `<dir>/data` to where the next process finds it, unless one is parked there already.
fn park(golden: &BuiltGolden, dir: &Path, build: &GoldenBuild) {
    let Some(boot) = crate::sys::boot_id() else {
        return;
    };
    let parking = dir.join("parking");
    // If this fails (most often: another process parked first), the caller removes it all.
    let _ = std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&parking)
        .and_then(|()| std::fs::write(parking.join(BOOT), boot))
        .and_then(|()| std::fs::write(parking.join(BUILD), &build.0))
        .and_then(|()| std::fs::rename(dir.join("data"), parking.join("data")))
        .and_then(|()| std::fs::rename(&parking, parked_dir(golden)));
}
