//! Cloning a running cluster through the low-level backup API, started through backup recovery
//! (after PostgreSQL's own 010_pg_basebackup and 042_low_level_backup).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use pgclone::{
    clone::{clone_running_cluster, CloneEvent, CloneOptions, CopyMethod, Step},
    server::{Server, ServerOptions, TempCluster},
    ErrorKind,
};

use crate::support::{self, execute, query_text};

/// The source keeps no slot and no backup session once a clone is over (or its cloner died).
pub fn assert_source_clean(url: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let slots = query_text(url, "select count(*)::text from pg_replication_slots");
        let sessions = query_text(
            url,
            "select count(*)::text from pg_stat_activity where application_name = 'pgclone clone'",
        );
        if (slots.as_str(), sessions.as_str()) == ("0", "0") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "source still has {slots} slot(s) and {sessions} backup session(s)"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn source_with_data(root: &Path) -> TempCluster {
    let source = TempCluster::builder().root(root).start().unwrap();
    execute(
        &source.connection_string(),
        "create table kept as select g as id from generate_series(1, 1000) g;
         create unlogged table scratch as select g as id from generate_series(1, 10) g;",
    );
    source
}

#[test]
fn a_running_cluster_clones_and_starts_through_backup_recovery() {
    let root = support::unique_root("online");
    let source = source_with_data(&root);
    let url = source.connection_string();
    let target = root.join("clone/data");
    let steps = Arc::new(Mutex::new(Vec::new()));
    let seen = steps.clone();
    let during_copy = url.clone();
    let options = CloneOptions::new().on_progress(move |event| {
        if let CloneEvent::Done(step) = event {
            seen.lock().unwrap().push(step);
            if step == Step::BackupStart {
                // Written inside the copy window: only WAL replay can bring it to the clone.
                execute(
                    &during_copy,
                    "create table during_copy as select g from generate_series(1, 77) g",
                );
            }
        }
    });

    let report = clone_running_cluster(&source.data_dir(), &target, &options).unwrap();
    let all_steps = vec![
        Step::Placeholder,
        Step::Slot,
        Step::BackupStart,
        Step::CopyFiles,
        Step::BackupStop,
        Step::CopyWal,
        Step::Label,
        Step::Config,
        Step::ControlFile,
    ];
    assert_eq!(*steps.lock().unwrap(), all_steps);
    assert_eq!(
        report.steps.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        all_steps
    );
    let (start, stop) = (report.start_lsn.unwrap(), report.stop_lsn.unwrap());
    assert!(start < stop, "{start} < {stop}");
    assert!(report.wal_segments >= 1);
    if support::reflink_required() {
        assert_eq!(report.method(), Some(CopyMethod::Reflink), "{report:?}");
    }
    assert_source_clean(&url);

    let label = std::fs::read_to_string(target.join("backup_label")).unwrap();
    assert!(
        label.contains(&format!("START WAL LOCATION: {start}")),
        "{label}"
    );
    assert!(!target.join("postmaster.pid").exists());
    assert_eq!(
        std::fs::read_dir(target.join("pg_replslot"))
            .unwrap()
            .count(),
        0
    );
    let auto_conf = std::fs::read_to_string(target.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto_conf.contains("archive_mode = off") && auto_conf.contains("restore_command = ''"),
        "{auto_conf}"
    );

    let clone = Server::start(&target, &ServerOptions::new()).unwrap();
    let clone_url = clone.connection_string("postgres");
    assert_eq!(
        query_text(&clone_url, "select count(*)::text from kept"),
        "1000"
    );
    assert_eq!(
        query_text(&clone_url, "select count(*)::text from during_copy"),
        "77",
        "a table created during the copy is in the clone"
    );
    assert_eq!(
        query_text(&clone_url, "select count(*)::text from scratch"),
        "0",
        "unlogged tables start empty after an online clone"
    );
    assert_eq!(
        query_text(&clone_url, "select pg_is_in_recovery()::text"),
        "false"
    );
    let log = std::fs::read_to_string(clone.log_path()).unwrap();
    assert!(
        log.contains(&format!("redo starts at {start}")),
        "recovery starts at the backup's start, not at pg_control's later checkpoint:\n{log}"
    );

    execute(&clone_url, "insert into kept values (0)");
    assert_eq!(
        query_text(&url, "select count(*)::text from kept"),
        "1000",
        "the clone is independent of its source"
    );
}

#[test]
fn a_standby_clone_stays_read_only_and_its_stopped_copy_is_a_standby_too() {
    let root = support::unique_root("standby");
    let source = source_with_data(&root);
    let target = root.join("standby/data");
    clone_running_cluster(
        &source.data_dir(),
        &target,
        &CloneOptions::new().standby(true),
    )
    .unwrap();
    assert!(target.join("standby.signal").exists());
    let standby = Server::start(&target, &ServerOptions::new()).unwrap();
    let url = standby.connection_string("postgres");
    assert_eq!(query_text(&url, "select pg_is_in_recovery()::text"), "true");
    assert_eq!(query_text(&url, "select count(*)::text from kept"), "1000");

    // Stopped, its offline clone is a standby too, and the report says so.
    standby.stop().unwrap();
    let copy = root.join("of-stopped-standby");
    let report =
        pgclone::clone::clone_stopped_cluster(&target, &copy, &CloneOptions::new()).unwrap();
    assert!(report.from_standby);
    assert!(copy.join("standby.signal").exists());
}

/// The standby of `primary` in `dir`, streaming from it (a clone of it with `standby.signal`
/// and a `primary_conninfo`), started.
fn streaming_standby(primary: &TempCluster, dir: &Path) -> Server {
    clone_running_cluster(&primary.data_dir(), dir, &CloneOptions::new().standby(true)).unwrap();
    let conninfo = format!(
        "\nprimary_conninfo = 'host={} port={} user=postgres'\n",
        primary.server().socket_dir().display(),
        primary.port()
    );
    let auto = dir.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap();
    text.push_str(&conninfo);
    std::fs::write(&auto, text).unwrap();
    let standby = Server::start(dir, &ServerOptions::new()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while query_text(
        &primary.connection_string(),
        "select count(*)::text from pg_stat_replication where state = 'streaming'",
    ) != "1"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the standby never streamed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    standby
}

#[test]
fn a_streaming_standby_under_load_clones_online_into_a_consistent_cluster_of_its_own() {
    let root = support::unique_root("from-standby");
    // Full-page writes on, as on any production primary: a backup from a standby needs them.
    let primary = TempCluster::builder()
        .root(&root)
        .with(|o| o.setting("full_page_writes", "on"))
        .start()
        .unwrap();
    let url = primary.connection_string();
    execute(
        &url,
        "create extension amcheck;
         create table ledger(id bigserial primary key, amount int not null);
         create table totals(total bigint not null); insert into totals values (0);",
    );
    let standby_dir = root.join("standby");
    let standby = streaming_standby(&primary, &standby_dir);
    let standby_url = standby.connection_string("postgres");

    // Writes on the primary all along: each transaction keeps sum(ledger) = totals.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flag, load_url) = (stop.clone(), url.clone());
    let load = std::thread::spawn(move || {
        let mut n = 0;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            execute(
                &load_url,
                "begin; insert into ledger(amount) select 7 from generate_series(1, 50);
                 update totals set total = total + 350; commit;",
            );
            n += 1;
        }
        n
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let target = root.join("clone");
    let report = clone_running_cluster(&standby_dir, &target, &CloneOptions::new()).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(load.join().unwrap() > 0);
    assert!(report.from_standby);
    assert!(
        !target.join("standby.signal").exists(),
        "not a copy that waits for WAL"
    );

    let clone = Server::start(&target, &ServerOptions::new()).unwrap();
    let clone_url = clone.connection_string("postgres");
    assert_eq!(
        query_text(&clone_url, "select pg_is_in_recovery()::text"),
        "false",
        "a cluster of its own, writable"
    );
    assert_eq!(
        query_text(
            &clone_url,
            "select ((select coalesce(sum(amount), 0) from ledger) = (select total from totals))::text"
        ),
        "true",
        "each transaction is there whole or not at all"
    );
    assert_ne!(
        query_text(&clone_url, "select count(*)::text from ledger"),
        "0"
    );
    assert_eq!(
        query_text(
            &clone_url,
            "select bt_index_check('ledger_pkey'::regclass, true)::text"
        ),
        ""
    );
    execute(&clone_url, "insert into ledger(amount) values (1)");
    // The standby is still one, still streaming, and keeps no slot of pgclone's.
    assert_eq!(
        query_text(&standby_url, "select pg_is_in_recovery()::text"),
        "true"
    );
    assert_source_clean(&standby_url);
}

#[test]
fn bad_sources_and_targets_are_refused_and_the_source_keeps_no_slot_or_backup() {
    let root = support::unique_root("online-bad");
    let source = source_with_data(&root);
    let url = source.connection_string();

    // Non-empty target.
    let full = root.join("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("precious"), "mine").unwrap();
    let err = clone_running_cluster(&source.data_dir(), &full, &CloneOptions::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TargetNotEmpty, "{err}");
    assert_eq!(
        std::fs::read_to_string(full.join("precious")).unwrap(),
        "mine"
    );

    // Another file system without allow_copy.
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let err = clone_running_cluster(
        &source.data_dir(),
        &shm.path().join("data"),
        &CloneOptions::new(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CrossFilesystem, "{err}");

    // A source that is not running.
    let stopped = TempCluster::builder()
        .root(&root)
        .start()
        .unwrap()
        .keep()
        .unwrap()
        .join("data");
    let err = clone_running_cluster(&stopped, &root.join("t1"), &CloneOptions::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SourceState, "{err}");
    assert!(err.to_string().contains("is not running"), "{err}");
    assert!(!root.join("t1").exists());

    // A tablespace created during the copy.
    let location = root.join("tablespace");
    std::fs::create_dir_all(&location).unwrap();
    if let Some(user) = pgclone::server::run_as_user().unwrap() {
        std::os::unix::fs::chown(&location, Some(user.uid()), Some(user.gid())).unwrap();
    }
    let during = url.clone();
    let sql = format!(
        "create tablespace during_copy location '{}'",
        location.display()
    );
    let options = CloneOptions::new().on_progress(move |event| {
        if event == CloneEvent::Done(Step::BackupStart) {
            execute(&during, &sql);
        }
    });
    let err = clone_running_cluster(&source.data_dir(), &root.join("t2"), &options).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(
        err.to_string().contains("tablespace") && err.to_string().contains("write into the source"),
        "{err}"
    );
    assert!(!root.join("t2").exists());
    assert_source_clean(&url);

    // A mapping for a tablespace the source does not have.
    let options = CloneOptions::new().tablespace_mapping(root.join("nowhere"), root.join("t3ts"));
    let err = clone_running_cluster(&source.data_dir(), &root.join("t3"), &options).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(
        err.to_string().contains("none of the source's tablespaces"),
        "{err}"
    );
    assert!(!root.join("t3").exists() && !root.join("t3ts").exists());
    assert_eq!(
        query_text(&url, "select count(*)::text from kept"),
        "1000",
        "the source's data is unchanged"
    );
}

#[test]
fn wal_level_minimal_is_refused_clearly() {
    let root = support::unique_root("minimal");
    let source = TempCluster::builder()
        .root(&root)
        .with(|o| {
            o.setting("wal_level", "minimal")
                .setting("max_wal_senders", "0")
        })
        .start()
        .unwrap();
    let err = clone_running_cluster(&source.data_dir(), &root.join("t"), &CloneOptions::new())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SourceState, "{err}");
    assert!(
        err.to_string().contains("wal_level = minimal")
            && err.to_string().contains("wal_level = replica"),
        "{err}"
    );
    assert!(!root.join("t").exists());
}

#[test]
fn wal_the_source_removed_during_the_copy_is_a_clear_error() {
    let root = support::unique_root("lostwal");
    let source = TempCluster::builder()
        .root(&root)
        .with(|o| {
            o.setting("max_slot_wal_keep_size", "1MB")
                .setting("max_wal_size", "32MB")
                .setting("min_wal_size", "32MB")
        })
        .start()
        .unwrap();
    let url = source.connection_string();
    let during = url.clone();
    let options = CloneOptions::new().on_progress(move |event| {
        if event == CloneEvent::Done(Step::BackupStart) {
            // Enough WAL and checkpoints for the source to invalidate the slot and recycle segments.
            for _ in 0..4 {
                execute(&during, "create table if not exists filler(x text); insert into filler select repeat('x', 1000) from generate_series(1, 20000); checkpoint;");
            }
        }
    });
    let err = clone_running_cluster(&source.data_dir(), &root.join("t"), &options).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Wal, "{err}");
    assert!(
        err.to_string().contains("max_slot_wal_keep_size"),
        "says what to do: {err}"
    );
    assert!(!root.join("t").exists());
    assert_source_clean(&url);
}

/// Where the SIGKILL test's helper stops: each step of the procedure.
const KILL_STEPS: &[&str] = &[
    "Placeholder",
    "Slot",
    "BackupStart",
    "CopyFiles",
    "BackupStop",
    "CopyWal",
    "Label",
    "Config",
];

#[test]
fn a_cloner_killed_at_any_step_leaves_the_source_clean_and_the_target_unstartable() {
    let root = support::unique_root("killclone");
    let source = source_with_data(&root);
    let url = source.connection_string();
    for step in KILL_STEPS {
        let target = root.join(format!("target-{step}"));
        let mut helper = support::helper("clone_until_step")
            .env("PGCLONE_IT_SOURCE", source.data_dir())
            .env("PGCLONE_IT_TARGET", &target)
            .env("PGCLONE_IT_STEP", step)
            .env("PGCLONE_DIR", &root)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        assert_eq!(support::wait_for_report(&mut helper), format!("AT {step}"));
        helper.kill().unwrap();
        helper.wait().unwrap();

        assert_source_clean(&url);
        assert_eq!(query_text(&url, "select count(*)::text from kept"), "1000");
        // Before the real label, even a pg_control put in by hand does not make the half-made
        // clone startable: the placeholder label stops PostgreSQL. After it, pg_control (copied
        // last) is missing.
        let before_label = KILL_STEPS.iter().position(|s| s == step)
            < KILL_STEPS.iter().position(|s| *s == "Label");
        let control = target.join("global/pg_control");
        if before_label && target.join("global").exists() {
            std::fs::copy(source.data_dir().join("global/pg_control"), &control).unwrap();
            if let Some(user) = pgclone::server::run_as_user().unwrap() {
                std::os::unix::fs::chown(&control, Some(user.uid()), Some(user.gid())).unwrap();
            }
        }
        let started = Server::start(
            &target,
            &ServerOptions::new().start_timeout(std::time::Duration::from_secs(20)),
        );
        assert!(started.is_err(), "a clone killed after {step} started");
        let label = std::fs::read_to_string(target.join("backup_label")).unwrap_or_default();
        if before_label {
            assert!(
                label.starts_with("pgclone: this clone is incomplete"),
                "after {step}: {label}"
            );
            let err = started.unwrap_err().to_string();
            assert!(
                !target.join("global").exists() || err.contains("backup_label"),
                "after {step}: {err}"
            );
        }
        let garbage = pgclone::gc::collect_garbage(Some(&root), false).unwrap();
        assert_eq!(
            garbage.unfinished,
            vec![target.clone()],
            "gc removes the unfinished clone after {step}"
        );
        assert!(!target.exists());
    }
}

/// Runs in a helper process: clone until the named step is done, report, wait to be killed.
pub fn clone_until_step() -> String {
    let source = PathBuf::from(std::env::var("PGCLONE_IT_SOURCE").unwrap());
    let target = PathBuf::from(std::env::var("PGCLONE_IT_TARGET").unwrap());
    let stop_at = std::env::var("PGCLONE_IT_STEP").unwrap();
    let _record = pgclone::gc::UnfinishedClone::begin(None, &target).unwrap(); // as `pgclone clone` does
    let options = CloneOptions::new().on_progress(move |event| {
        if let CloneEvent::Done(step) = event {
            if format!("{step:?}") == stop_at {
                crate::helpers::report_and_wait_to_be_killed(&format!("AT {step:?}"));
            }
        }
    });
    match clone_running_cluster(&source, &target, &options) {
        Ok(_) => "DONE without stopping".to_string(),
        Err(e) => format!("ERR {e}"),
    }
}

#[test]
fn a_tablespace_created_after_the_walk_is_caught_before_the_clone_is_finished() {
    let root = support::unique_root("late-tablespace");
    let source = source_with_data(&root);
    let url = source.connection_string();
    let location = root.join("tablespace");
    std::fs::create_dir_all(&location).unwrap();
    if let Some(user) = pgclone::server::run_as_user().unwrap() {
        std::os::unix::fs::chown(&location, Some(user.uid()), Some(user.gid())).unwrap();
    }
    let created = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (during, flag) = (url.clone(), created.clone());
    let sql = format!("create tablespace late location '{}'", location.display());
    // The first progress report comes after the walk listed the files: the new tablespace's
    // link is not among them, so only the check after the copy can see it.
    let options = CloneOptions::new().threads(1).on_progress(move |event| {
        if matches!(event, CloneEvent::Copied { .. })
            && !flag.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            execute(&during, &sql);
        }
    });
    let err = clone_running_cluster(&source.data_dir(), &root.join("t"), &options).unwrap_err();
    assert!(created.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(
        err.to_string().contains("changed during the clone"),
        "{err}"
    );
    assert!(!root.join("t").exists());
    assert_source_clean(&url);
}

#[test]
fn a_pg_wal_symlink_becomes_a_directory_in_online_and_offline_clones() {
    let root = support::unique_root("walsymlink");
    let source = source_with_data(&root);
    let dir = source.keep().unwrap();
    let data = dir.join("data");
    let wal_elsewhere = dir.join("wal-elsewhere");
    std::fs::rename(data.join("pg_wal"), &wal_elsewhere).unwrap();
    std::os::unix::fs::symlink(&wal_elsewhere, data.join("pg_wal")).unwrap();

    let offline = root.join("offline");
    clone_cluster_checked(&data, &offline);
    let server = Server::start(&data, &ServerOptions::new()).unwrap();
    let online = root.join("online");
    clone_cluster_checked(&data, &online);
    assert_eq!(
        query_text(
            &server.connection_string("postgres"),
            "select count(*)::text from kept"
        ),
        "1000"
    );
}

fn clone_cluster_checked(source: &Path, target: &Path) {
    pgclone::clone::clone_cluster(source, target, &CloneOptions::new()).unwrap();
    let wal = std::fs::symlink_metadata(target.join("pg_wal")).unwrap();
    assert!(
        wal.is_dir(),
        "the clone's pg_wal is its own directory, not the source's"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        wal.permissions().mode() & 0o7777,
        std::fs::metadata(source.join("pg_wal"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        "with the mode of the source's WAL directory, not its link's"
    );
    let clone = Server::start(target, &ServerOptions::new()).unwrap();
    assert_eq!(
        query_text(
            &clone.connection_string("postgres"),
            "select count(*)::text from kept"
        ),
        "1000"
    );
}

#[test]
fn a_stopped_clone_removes_its_target_and_leaves_the_source_clean() {
    let root = support::unique_root("interrupted");
    let source = source_with_data(&root);
    let target = root.join("clone/data");
    // Stopped at the backup's start (as a Ctrl-C handler would set it): the copy that follows
    // sees it at its first file.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let options = CloneOptions::new()
        .on_progress(move |event| {
            if event == CloneEvent::Done(Step::BackupStart) {
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        })
        .stop_when(stop);
    let err = clone_running_cluster(&source.data_dir(), &target, &options).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Interrupted, "{err}");
    assert!(!target.exists(), "the partial target is removed");
    assert_source_clean(&source.connection_string());
}

/// A directory for a tablespace: empty, the server user's.
fn tablespace_dir(path: &Path) -> PathBuf {
    std::fs::create_dir_all(path).unwrap();
    if let Some(user) = pgclone::server::run_as_user().unwrap() {
        std::os::unix::fs::chown(path, Some(user.uid()), Some(user.gid())).unwrap();
    }
    path.to_path_buf()
}

/// Where the server at `url` keeps tablespace `ts`.
fn location_of_ts(url: &str) -> String {
    query_text(
        url,
        "select pg_tablespace_location(oid) from pg_tablespace where spcname = 'ts'",
    )
}

#[test]
fn tablespaces_are_copied_and_the_clone_writes_only_into_its_copies() {
    let root = support::unique_root("tablespaces");
    let source = source_with_data(&root);
    let url = source.connection_string();
    let location = tablespace_dir(&root.join("ts-source"));
    execute(
        &url,
        &format!("create tablespace ts location '{}'", location.display()),
    );
    execute(
        &url,
        "create table in_ts tablespace ts as select g as id from generate_series(1, 500) g; checkpoint",
    );

    // Another cluster's directory in the same location (pg_upgrade leaves the old major's).
    std::fs::create_dir_all(location.join("PG_9_201909212")).unwrap();
    std::fs::write(location.join("PG_9_201909212/not-ours"), "x").unwrap();

    // Online, to the default place beside the target.
    let target = root.join("online");
    clone_running_cluster(&source.data_dir(), &target, &CloneOptions::new()).unwrap();
    let copies = root.join("online-tablespaces");
    let oid = std::fs::read_dir(&copies)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let copied: Vec<String> = std::fs::read_dir(copies.join(&oid))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        copied.len() == 1 && copied[0].starts_with("PG_") && !copied[0].starts_with("PG_9_"),
        "only this cluster's version directory: {copied:?}"
    );
    let source_files = support::files_under(&location);
    let clone = Server::start(&target, &ServerOptions::new()).unwrap();
    let clone_url = clone.connection_string("postgres");
    assert_eq!(
        query_text(&clone_url, "select count(*)::text from in_ts"),
        "500"
    );
    assert_eq!(
        location_of_ts(&clone_url),
        copies.join(&oid).display().to_string()
    );
    execute(
        &clone_url,
        "insert into in_ts select g from generate_series(501, 2000) g;
         create table also_in_ts tablespace ts as select 1 as x; checkpoint",
    );
    assert_eq!(
        query_text(&clone_url, "select count(*)::text from in_ts"),
        "2000"
    );
    assert!(
        support::files_under(&location) == source_files,
        "the source's tablespace is unchanged"
    );
    assert_eq!(query_text(&url, "select count(*)::text from in_ts"), "500");
    clone.stop().unwrap(); // cleanly: the offline clone below starts from it
    assert_source_clean(&url);

    // Offline, mapped (as --tablespace-mapping), from a stopped copy of the source.
    let stopped = root.join("stopped");
    let mapped = root.join("mapped-ts");
    let options = CloneOptions::new().tablespace_mapping(copies.join(&oid), &mapped);
    pgclone::clone::clone_stopped_cluster(&target, &stopped, &options).unwrap();
    let clone = Server::start(&stopped, &ServerOptions::new()).unwrap();
    let clone_url = clone.connection_string("postgres");
    assert_eq!(
        query_text(&clone_url, "select count(*)::text from in_ts"),
        "2000"
    );
    assert_eq!(location_of_ts(&clone_url), mapped.display().to_string());
}
