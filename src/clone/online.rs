//! Cloning a running cluster the way PostgreSQL documents a low-level base backup
//! (POSTGRES.md 7–14):
//!
//! 1. a placeholder `backup_label` in the target, so a half-made clone can never start;
//! 2. one held session on the source: a temporary physical slot that reserves WAL at once, then
//!    `pg_backup_start(fast)`; if pgclone dies, the server drops both with the session;
//! 3. the files, without WAL or `pg_control`; `pg_backup_stop(false)`;
//! 4. the WAL from the segment holding the start LSN to the one holding the byte before the stop
//!    LSN (each segment's header checked), plus the timeline history files;
//! 5. the real `backup_label`, configuration that no longer points at the source's archive,
//!    primary or port, and `pg_control` last: the mark of a finished clone.
//!
//! The source is only read; it keeps no slot and no backup once the session ends.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::exclude::Source;
use super::file::copy_contents;
use super::tree::{copy_tree, device_of, CloneReport};
use super::wal::{self, Lsn};
use super::{
    check_file_systems, check_target, give_to, make_target, undo_target, write_clone_config,
    write_file, CloneOptions, Step,
};
use crate::config::Config;
use crate::data_dir;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::pg_control;
use crate::run_as::RunAs;
use crate::server;
use crate::wire::{quote_literal, Session};

/// What a half-made clone's `backup_label` says: PostgreSQL refuses to start on it.
pub(crate) const PLACEHOLDER_LABEL: &str =
    "pgclone: this clone is incomplete and must not be started\n";

/// Clones the running cluster in `source` into `target` (absent or an empty directory).
pub fn clone_running_cluster(
    source: &Path,
    target: &Path,
    options: &CloneOptions,
) -> Result<CloneReport> {
    let source = std::path::absolute(source).doing("resolve", source)?;
    let major = data_dir::major_of(&source)?;
    let Some(pid) = server::live_postmaster(&source) else {
        return Err(Error::new(
            ErrorKind::SourceState,
            format!("source {} is not running", source.display()),
        )
        .hint("clone a stopped cluster offline, or start it first"));
    };
    let socket = source_socket(&source, pid)?;
    check_tablespaces(&source)?;
    let target_existed = check_target(target)?;
    check_file_systems(&source, target, options)?;
    let run_as = RunAs::for_current_user(Config::from_env()?.run_as.as_deref())?;

    let mut clone = OnlineClone {
        source: &source,
        target,
        major,
        options,
        owner: run_as.as_ref(),
        report: CloneReport::default(),
        step_started: Instant::now(),
    };
    let result = clone.run(&socket);
    if result.is_err() {
        undo_target(target, target_existed);
    }
    result.map(|()| clone.report)
}

struct OnlineClone<'a> {
    source: &'a Path,
    target: &'a Path,
    major: u32,
    options: &'a CloneOptions,
    owner: Option<&'a RunAs>,
    report: CloneReport,
    step_started: Instant,
}

impl OnlineClone<'_> {
    fn run(&mut self, socket: &Path) -> Result<()> {
        make_target(self.source, self.target, self.owner)?;
        write_file(
            &self.target.join("backup_label"),
            PLACEHOLDER_LABEL.as_bytes(),
            self.owner,
        )?;
        self.done(Step::Placeholder);

        let user = self.options.user.as_deref().unwrap_or(server::SUPERUSER);
        let mut session = Session::connect(socket, user, "postgres", "pgclone clone")?;
        let result = self.back_up(&mut session);
        if session.is_lost() {
            return Err(lost_session(result.err()));
        }
        result
    }

    /// Steps 2–5, on the held session.
    fn back_up(&mut self, session: &mut Session) -> Result<()> {
        let segment_size = self.prepare_session(session)?;
        let slot = format!("pgclone_{}", &data_dir::new_password()?[..16]);
        session.query(&format!(
            "select pg_create_physical_replication_slot({}, true, true)",
            quote_literal(&slot)
        ))?;
        self.done(Step::Slot);

        let label = quote_literal(&format!("pgclone clone to {}", self.target.display()));
        let start_sql = if self.major >= 15 {
            format!("select pg_backup_start({label}, true)")
        } else {
            format!("select pg_start_backup({label}, true, false)")
        };
        let start = parse_lsn(&session.query_value(&start_sql)?)?;
        self.report.start_lsn = Some(start);
        self.done(Step::BackupStart);

        let copied = copy_tree(
            self.source,
            self.target,
            Source::Running,
            self.owner,
            &self.options.progress,
            self.options.copy_threads(),
        )?;
        self.merge(copied);
        check_tablespaces(self.source).map_err(|e| {
            Error::new(
                ErrorKind::Unsupported,
                format!("the source changed during the copy: {e}"),
            )
        })?;
        self.done(Step::CopyFiles);

        let stop_sql = if self.major >= 15 {
            "select lsn, labelfile, spcmapfile from pg_backup_stop(false)"
        } else {
            "select lsn, labelfile, spcmapfile from pg_stop_backup(false, false)"
        };
        let row = session.query_row(stop_sql)?;
        let stop = parse_lsn(row[0].as_deref().unwrap_or_default())?;
        let (label_file, map_file) = (
            row[1].clone().unwrap_or_default(),
            row[2].clone().unwrap_or_default(),
        );
        self.report.stop_lsn = Some(stop);
        self.done(Step::BackupStop);

        self.copy_wal(session, &slot, &label_file, start, stop, segment_size)?;
        self.done(Step::CopyWal);

        // Byte for byte what pg_backup_stop returned; replaces the placeholder in one rename.
        write_file(
            &self.target.join("backup_label"),
            label_file.as_bytes(),
            self.owner,
        )?;
        if !map_file.is_empty() {
            write_file(
                &self.target.join("tablespace_map"),
                map_file.as_bytes(),
                self.owner,
            )?;
        }
        self.done(Step::Label);

        write_clone_config(self.target, self.options.standby, self.owner)?;
        self.done(Step::Config);

        self.copy_control_file()?;
        self.done(Step::ControlFile);
        Ok(()) // the caller drops the session: the temporary slot goes with it
    }

    /// Settings for a session that must outlive a long copy; checks the source can be cloned.
    /// Returns the WAL segment size.
    fn prepare_session(&self, session: &mut Session) -> Result<u64> {
        session.query("set statement_timeout = 0; set idle_in_transaction_session_timeout = 0")?;
        if self.major >= 14 {
            session.query("set idle_session_timeout = 0")?;
        }
        if session.query_value("select pg_is_in_recovery()::text")? == "true" {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "source {} is a standby; pgclone clones primaries only",
                    self.source.display()
                ),
            )
            .hint("clone its primary, or a stopped copy of the standby"));
        }
        if session.query_value("show wal_level")? == "minimal" {
            return Err(Error::new(
                ErrorKind::SourceState,
                format!(
                    "source {} runs with wal_level = minimal, which allows neither a backup nor a replication slot",
                    self.source.display()
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
    fn copy_wal(
        &mut self,
        session: &mut Session,
        slot: &str,
        label: &str,
        start: Lsn,
        stop: Lsn,
        segment_size: u64,
    ) -> Result<()> {
        let status = session.query_value(&format!(
            "select coalesce(wal_status, 'unknown') from pg_replication_slots where slot_name = {}",
            quote_literal(slot)
        ))?;
        if status == "lost" {
            return Err(Error::new(
                ErrorKind::Wal,
                "the source removed WAL this clone needs (its replication slot was invalidated, max_slot_wal_keep_size?)",
            )
            .hint("clone again, or raise max_slot_wal_keep_size on the source"));
        }
        let timeline = wal::label_timeline(label).ok_or_else(|| {
            Error::new(
                ErrorKind::Wal,
                format!("backup label has no START TIMELINE line:\n{label}"),
            )
        })?;
        let system_id = pg_control::system_identifier(self.source)?;
        let (from_dir, to_dir) = (self.source.join("pg_wal"), self.target.join("pg_wal"));
        let fs = (device_of(&from_dir)?, device_of(&to_dir)?);
        for segno in wal::backup_segments(start, stop, segment_size) {
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
            self.copy_file(&from, &to, fs)?;
            wal::check_segment(&to, segno, segment_size, system_id)?;
            self.report.wal_segments += 1;
        }
        for entry in std::fs::read_dir(&from_dir)
            .doing("list", &from_dir)?
            .flatten()
        {
            if entry.file_name().to_string_lossy().ends_with(".history") {
                self.copy_file(&entry.path(), &to_dir.join(entry.file_name()), fs)?;
            }
        }
        Ok(())
    }

    fn copy_control_file(&mut self) -> Result<()> {
        let (from, to) = (
            self.source.join("global/pg_control"),
            self.target.join("global/pg_control"),
        );
        let fs = (device_of(&from)?, device_of(self.target)?);
        self.copy_file(&from, &to, fs)
    }

    fn copy_file(&mut self, from: &Path, to: &Path, fs: (u64, u64)) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let source = std::fs::File::open(from).doing("open", from)?;
        let len = source.metadata().doing("stat", from)?.len();
        let target = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)
            .doing("create", to)?;
        let method = copy_contents(&source, &target, len, fs).doing("copy to", to)?;
        give_to(self.owner, to)?;
        let entry = self.report.by_method.entry(method).or_default();
        entry.0 += 1;
        entry.1 += len;
        self.report.files += 1;
        self.report.bytes += len;
        Ok(())
    }

    fn merge(&mut self, copied: CloneReport) {
        self.report.files += copied.files;
        self.report.bytes += copied.bytes;
        self.report.dirs += copied.dirs;
        self.report.excluded += copied.excluded;
        self.report.vanished += copied.vanished;
        for (method, (files, bytes)) in copied.by_method {
            let entry = self.report.by_method.entry(method).or_default();
            entry.0 += files;
            entry.1 += bytes;
        }
    }

    fn done(&mut self, step: Step) {
        let now = Instant::now();
        self.report.steps.push((step, now - self.step_started));
        self.report.elapsed += now - self.step_started;
        self.step_started = now;
        self.options.progress.done(step);
    }
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

/// Refuses sources with tablespaces: a clone would write into the source's tablespace
/// directories (POSTGRES.md 11).
fn check_tablespaces(source: &Path) -> Result<()> {
    let dir = source.join("pg_tblspc");
    let Some(first) = std::fs::read_dir(&dir)
        .ok()
        .and_then(|mut entries| entries.next())
    else {
        return Ok(());
    };
    let first = first.doing("list", &dir)?;
    Err(Error::new(
        ErrorKind::Unsupported,
        format!(
            "source {} has a tablespace ({}); a clone would write into the source's tablespace directory",
            source.display(),
            first.path().display()
        ),
    )
    .hint("move its tables to pg_default (ALTER TABLE ... SET TABLESPACE pg_default) and drop the tablespace"))
}

/// The source ended the backup session; by far the likeliest cause is that it invalidated the
/// clone's slot to free WAL, which terminates the session holding it.
fn lost_session(cause: Option<Error>) -> Error {
    let cause = cause.map(|e| e.to_string()).unwrap_or_default();
    Error::new(
        ErrorKind::Wal,
        format!(
            "the source ended pgclone's backup session ({cause}); it does so when it invalidates the \
             clone's replication slot to remove WAL the clone needs (max_slot_wal_keep_size), or when it shuts down"
        ),
    )
    .hint("raise max_slot_wal_keep_size on the source (-1: unlimited) and clone again")
}

fn parse_lsn(text: &str) -> Result<Lsn> {
    Lsn::parse(text)
        .ok_or_else(|| Error::new(ErrorKind::Query, format!("{text:?} is not a WAL position")))
}
