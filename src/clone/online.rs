//! Cloning a running cluster the way PostgreSQL documents a low-level base backup
//! (docs/postgres-facts.md 7–14):
//!
//! 1. a placeholder `backup_label` in the target, so a half-made clone can never start;
//! 2. one held session on the source: a temporary physical slot that reserves WAL at once, then
//!    `pg_backup_start(fast)`; if pgclone dies, the server drops both with the session;
//! 3. the files, without WAL or `pg_control`; `pg_backup_stop(false)`;
//! 4. the WAL from the segment holding the start LSN to the one holding the byte before the stop
//!    LSN (each segment's header checked), the timeline history files, then a check that the
//!    slot still held all of it;
//! 5. the real `backup_label`, configuration that no longer points at the source, and
//!    `pg_control` last: the mark of a finished clone.
//!
//! The source is only read; it keeps no slot and no backup once the session ends.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::config_files::{copy_external, SourceConfig};
use super::exclude::Source;
use super::tablespaces;
use super::tree::{self, copy_tree, device_of, CloneReport};
use super::wal::{self, Lsn};
use super::{
    copy_control_file_early, finish_with_control_file, finish_with_early_control_file,
    write_clone_config, write_file, CloneOptions, Plan, Step,
};
use crate::config::Config;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::postgres::data_dir;
use crate::postgres::features;
use crate::postgres::libpq::{self, ConnectParams};
use crate::postgres::pg_control;
use crate::postgres::run_as::RunAs;
use crate::postgres::server;
use crate::postgres::session::Session;
use crate::postgres::wire::quote_literal;

/// What a half-made clone's `backup_label` says: PostgreSQL refuses to start on it.
pub(crate) const PLACEHOLDER_LABEL: &str =
    "pgclone: this clone is incomplete and must not be started\n";

/// Clones the running cluster in `source` into `target` (absent or an empty directory).
pub fn clone_running_cluster(
    source: &Path,
    target: &Path,
    options: &CloneOptions,
) -> Result<CloneReport> {
    let config = Config::from_env()?;
    let owner = RunAs::for_current_user(config.run_as.as_deref())?;
    clone_running(source, target, options, owner, Some(&config))
}

/// [`clone_running_cluster`], copying as `owner` (the server's user when this process is root),
/// which the caller resolved from its configuration. With `libpq`, the session on the source
/// follows libpq's conventions (`PGUSER`, `PGPASSWORD`, the password file); without, it is a
/// cluster of pgclone's own, reached as `options`' user with trust.
pub(crate) fn clone_running(
    source: &Path,
    target: &Path,
    options: &CloneOptions,
    owner: Option<RunAs>,
    libpq: Option<&Config>,
) -> Result<CloneReport> {
    let plan = Plan::new(source, target, options, owner)?;
    let major = data_dir::major_of(&plan.source)?;
    let Some(pid) = server::live_postmaster(&plan.source) else {
        return Err(Error::new(
            ErrorKind::SourceState,
            format!("source {} is not running", plan.source.display()),
        )
        .hint("clone a stopped cluster offline, or start it first"));
    };
    let params = source_params(&plan.source, pid, options, libpq)?;
    plan.run(|| {
        let mut clone = OnlineClone {
            plan: &plan,
            major,
            options,
            report: CloneReport::default(),
            step_started: Instant::now(),
        };
        let mut session = clone.start(&params)?;
        let result = clone.back_up(&mut session);
        if session.is_lost() {
            return Err(lost_session(result.err()));
        }
        result.map(|()| clone.report)
        // Dropping the session ends it: the temporary slot goes with it.
    })
}

/// How pgclone connects to the running source in `source` (postmaster `pid`): on its Unix
/// socket, as `options`' user, else as libpq would (with `libpq`); as root, with the owner's
/// identity for peer authentication.
pub(crate) fn source_params(
    source: &Path,
    pid: u32,
    options: &CloneOptions,
    libpq: Option<&Config>,
) -> Result<ConnectParams> {
    let socket = source_socket(source, pid)?;
    // Root reaches the source as its owner would: with the owner's identity on the socket (peer
    // authentication, a stock Debian cluster's `local all postgres peer`) and, unless told
    // otherwise, the owner's name as the role.
    let owner_identity = match libpq.is_some() && rustix::process::geteuid().is_root() {
        true => Some(source_owner(source)?),
        false => None,
    };
    let user = match (&options.user, libpq, &owner_identity) {
        (Some(user), _, _) => user.clone(),
        (None, Some(config), _) if config.pg_user.is_some() => libpq::default_user(config),
        (None, Some(_), Some((_, _, name))) => name.clone(),
        (None, Some(config), None) => libpq::default_user(config),
        (None, None, _) => server::SUPERUSER.to_string(),
    };
    let mut params = ConnectParams::socket_file(&socket, &user, "postgres", "pgclone clone");
    params.peer_identity = owner_identity.map(|(uid, gid, _)| (uid, gid));
    if let Some(config) = libpq {
        params = params.with_libpq_password(config);
    }
    Ok(params)
}

/// The uid, gid and name of the user that owns the data directory `source`.
fn source_owner(source: &Path) -> Result<(u32, u32, String)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(source).doing("read the owner of", source)?;
    let name = crate::sys::user_by_uid(meta.uid())
        .ok()
        .flatten()
        .map_or_else(|| server::SUPERUSER.to_string(), |user| user.name);
    Ok((meta.uid(), meta.gid(), name))
}

struct OnlineClone<'a> {
    plan: &'a Plan,
    major: u32,
    options: &'a CloneOptions,
    report: CloneReport,
    step_started: Instant,
}

impl OnlineClone<'_> {
    /// Step 1, and the session for the rest.
    fn start(&mut self, params: &ConnectParams) -> Result<Session> {
        write_file(
            &self.plan.target.join("backup_label"),
            PLACEHOLDER_LABEL.as_bytes(),
        )?;
        self.done(Step::Placeholder);
        Session::connect(params)
    }

    /// Steps 2–5, on the held session.
    fn back_up(&mut self, session: &mut Session) -> Result<()> {
        let (source, target) = (&self.plan.source, &self.plan.target);
        let segment_size = self.prepare_session(session)?;
        // A standby's backup (as pg_basebackup takes one from a standby): its pg_control is
        // copied before the backup stops, so that the WAL up to the stop point covers its
        // minRecoveryPoint; the standby's signal files stay out of the copy.
        self.report.from_standby =
            session.query_value("select pg_is_in_recovery()::text")? == "true";
        // Superuser-only settings: a role without them (pg_read_all_settings) clones a source
        // whose configuration is in its data directory, as before.
        let source_config = SourceConfig::read(session).ok();
        let slot = format!("pgclone_{}", &data_dir::new_password()?[..16]);
        session.query(&format!(
            "select pg_create_physical_replication_slot({}, true, true)",
            quote_literal(&slot)
        ))?;
        self.done(Step::Slot);

        let start_sql = features::backup_start_sql(self.major, !self.options.spread_checkpoint);
        let start = parse_lsn(&session.query_value(&start_sql)?)?;
        self.report.start_lsn = Some(start);
        self.done(Step::BackupStart);

        let copied = copy_tree(
            source,
            target,
            &self.plan.tablespaces,
            Source::Running,
            self.plan.owner.as_ref(),
            &self.options.progress,
            self.options.copy_threads(),
        )?;
        self.report.absorb(copied);
        self.check_tablespaces_unchanged()?;
        self.done(Step::CopyFiles);

        let early_control = match self.report.from_standby {
            true => Some(copy_control_file_early(source, target)?),
            false => None,
        };
        let row = session.query_row(features::backup_stop_sql(self.major))?;
        // Created before the stop, a tablespace's creation is in the clone's WAL: its replay
        // would link the clone to the source's directory.
        self.check_tablespaces_unchanged()?;
        let stop = parse_lsn(row[0].as_deref().unwrap_or_default())?;
        let (label_file, map_file) = (
            row[1].clone().unwrap_or_default(),
            row[2].clone().unwrap_or_default(),
        );
        self.report.stop_lsn = Some(stop);
        self.done(Step::BackupStop);

        self.copy_wal(&label_file, start, stop, segment_size)?;
        check_slot(session, &slot)?;
        self.done(Step::CopyWal);

        // Byte for byte what pg_backup_stop returned; replaces the placeholder in one rename.
        write_file(&target.join("backup_label"), label_file.as_bytes())?;
        if !map_file.is_empty() {
            // Recovery makes the clone's links from it: to the copies, never the source's.
            let map = tablespaces::remap(&map_file, &self.plan.tablespaces)?;
            write_file(&target.join("tablespace_map"), map.as_bytes())?;
        }
        self.done(Step::Label);

        if let Some(config) = source_config.filter(SourceConfig::is_external) {
            copy_external(&config, target, self.major)?;
        }
        write_clone_config(target, self.options.standby)?;
        self.done(Step::Config);

        let (method, bytes) = match early_control {
            Some(copied) => {
                finish_with_early_control_file(
                    target,
                    &self.plan.tablespace_copies(),
                    !self.options.no_sync,
                )?;
                copied
            }
            None => finish_with_control_file(
                source,
                target,
                &self.plan.tablespace_copies(),
                !self.options.no_sync,
            )?,
        };
        self.report.count(method, bytes);
        self.done(Step::ControlFile);
        Ok(())
    }

    /// Fails if the source's tablespaces are not the ones planned (one created or dropped since).
    fn check_tablespaces_unchanged(&self) -> Result<()> {
        let planned: Vec<_> = self.plan.tablespaces.iter().map(|t| t.link()).collect();
        if tablespaces::links(&self.plan.source)? != planned {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "the tablespaces of {} changed during the clone",
                    self.plan.source.display()
                ),
            )
            .hint("clone again once no tablespace is being created or dropped"));
        }
        Ok(())
    }

    /// Settings for a session that must outlive a long copy; checks the source can be cloned.
    /// Returns the WAL segment size.
    fn prepare_session(&self, session: &mut Session) -> Result<u64> {
        session.query("set statement_timeout = 0; set idle_in_transaction_session_timeout = 0")?;
        if features::has_idle_session_timeout(self.major) {
            session.query("set idle_session_timeout = 0")?;
        }
        if session.query_value("show wal_level")? == "minimal" {
            return Err(Error::new(
                ErrorKind::SourceState,
                format!(
                    "source {} runs with wal_level = minimal, which allows neither a backup nor a replication slot",
                    self.plan.source.display()
                ),
            )
            .hint("set wal_level = replica in its postgresql.conf and restart it, or stop it and clone it offline"));
        }
        let size = session
            .query_value("select setting from pg_settings where name = 'wal_segment_size'")?;
        size.parse().map_err(|_| {
            Error::new(
                ErrorKind::Query,
                format!("wal_segment_size is {size:?}, not a number of bytes"),
            )
        })
    }

    /// Copies the backup's WAL segments and the timeline history files, checking each segment.
    fn copy_wal(&mut self, label: &str, start: Lsn, stop: Lsn, segment_size: u64) -> Result<()> {
        let timeline = wal::label_timeline(label).ok_or_else(|| {
            Error::new(
                ErrorKind::Wal,
                format!("backup label has no START TIMELINE line:\n{label}"),
            )
        })?;
        let system_id = pg_control::system_identifier(&self.plan.source)?;
        let (from_dir, to_dir) = (
            self.plan.source.join("pg_wal"),
            self.plan.target.join("pg_wal"),
        );
        let fs = (device_of(&from_dir)?, device_of(&to_dir)?);
        for segno in wal::backup_segments(start, stop, segment_size) {
            self.options.progress.check_stop()?;
            let name = wal::segment_name(timeline, segno, segment_size);
            let (from, to) = (from_dir.join(&name), to_dir.join(&name));
            if !from.exists() {
                return Err(Error::new(
                    ErrorKind::Wal,
                    format!(
                        "WAL segment {name} (between {start} and {stop}) is missing from {}",
                        from_dir.display()
                    ),
                )
                .hint("the source removed it during the copy; clone again"));
            }
            let (method, bytes) = tree::copy_file(&from, &to, fs)?;
            self.report.count(method, bytes);
            wal::check_segment(&to, segno, segment_size, system_id)?;
            self.report.wal_segments += 1;
        }
        for entry in std::fs::read_dir(&from_dir)
            .doing("list", &from_dir)?
            .flatten()
        {
            if entry.file_name().to_string_lossy().ends_with(".history") {
                let (method, bytes) =
                    tree::copy_file(&entry.path(), &to_dir.join(entry.file_name()), fs)?;
                self.report.count(method, bytes);
            }
        }
        Ok(())
    }

    fn done(&mut self, step: Step) {
        let now = Instant::now();
        self.report.steps.push((step, now - self.step_started));
        self.report.elapsed += now - self.step_started;
        self.step_started = now;
        self.options.progress.done(step);
    }
}

/// After the WAL copy: the slot still held all of it (docs/postgres-facts.md 10).
fn check_slot(session: &mut Session, slot: &str) -> Result<()> {
    let status = session.query_value(&format!(
        "select coalesce(wal_status, 'unknown') from pg_replication_slots where slot_name = {}",
        quote_literal(slot)
    ))?;
    if status == "lost" {
        return Err(Error::new(
            ErrorKind::Wal,
            "the source removed WAL this clone needs (its replication slot was invalidated: max_slot_wal_keep_size)",
        )
        .hint("raise max_slot_wal_keep_size on the source (-1: unlimited) and clone again"));
    }
    Ok(())
}

/// The Unix socket of the postmaster serving `source`, from its `postmaster.pid`
/// (line 4: port, line 5: first socket directory).
fn source_socket(source: &Path, pid: u32) -> Result<PathBuf> {
    let pid_file = source.join("postmaster.pid");
    let text = std::fs::read_to_string(&pid_file).doing("read", &pid_file)?;
    let lines: Vec<&str> = text.lines().collect();
    let port = lines.get(3).map(|l| l.trim()).unwrap_or_default();
    let socket_dir = lines.get(4).map(|l| l.trim()).unwrap_or_default();
    if socket_dir.is_empty() || port.is_empty() {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "source {} (postmaster pid {pid}) listens on no Unix socket; pgclone connects through one",
                source.display()
            ),
        )
        .hint("set unix_socket_directories on the source"));
    }
    Ok(Path::new(socket_dir).join(format!(".s.PGSQL.{port}")))
}

/// The source ended the backup session; by far the likeliest cause is that it invalidated the
/// clone's slot to free WAL, which terminates the session holding it.
fn lost_session(cause: Option<Error>) -> Error {
    let error = Error::new(ErrorKind::Wal, "the source ended pgclone's backup session");
    match cause {
        Some(cause) => error.with_source(cause),
        None => error,
    }
    .note(
        "it does so when it invalidates the clone's replication slot to remove WAL the clone needs \
         (max_slot_wal_keep_size), or when it shuts down",
    )
    .hint("raise max_slot_wal_keep_size on the source (-1: unlimited) and clone again")
}

fn parse_lsn(text: &str) -> Result<Lsn> {
    Lsn::parse(text)
        .ok_or_else(|| Error::new(ErrorKind::Query, format!("{text:?} is not a WAL position")))
}
