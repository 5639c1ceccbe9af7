//! Start, use, stop and clean up a throwaway cluster.

use std::time::Duration;

use pgclone::{
    server::{Server, ServerOptions, TempCluster},
    ErrorKind,
};

use crate::support::{self, process_runs, query_text};

#[test]
fn starts_answers_queries_and_leaves_nothing_on_drop() {
    let root = support::unique_root("lifecycle");
    let cluster = TempCluster::builder().root(&root).start().unwrap();
    let (pid, dir, socket_dir) = (
        cluster.server().pid(),
        cluster.dir().to_path_buf(),
        cluster.server().socket_dir().to_path_buf(),
    );
    assert_eq!(
        support::servers_under(&root),
        vec![pid],
        "the server is seen running"
    );
    assert!(socket_dir.join(".s.PGSQL.5432").exists());
    let version = query_text(
        &cluster.connection_string(),
        "select current_setting('server_version_num')",
    );
    assert_eq!(
        version[..2].parse::<u32>().unwrap(),
        cluster.binaries().version().major()
    );
    let fsync = query_text(
        &cluster.connection_string(),
        "select current_setting('fsync')",
    );
    assert_eq!(fsync, "off", "test settings are applied");

    drop(cluster);
    assert!(!process_runs(pid), "the server stops with its guard");
    assert_eq!(support::servers_under(&root), Vec::<u32>::new());
    assert!(!dir.exists(), "the cluster's files are removed");
    assert!(!socket_dir.exists(), "the socket directory is removed");
}

#[test]
fn server_output_goes_to_the_log_file_not_the_test_output() {
    let root = support::unique_root("log");
    let cluster = TempCluster::builder().root(&root).start().unwrap();
    let log = cluster.server().log_path().to_path_buf();
    for fd in [1, 2] {
        let target =
            std::fs::read_link(format!("/proc/{}/fd/{fd}", cluster.server().pid())).unwrap();
        assert_eq!(target, log, "postgres fd {fd}");
    }
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("database system is ready to accept connections"));
}

#[test]
fn tcp_listens_on_loopback_and_requires_the_password() {
    let root = support::unique_root("tcp");
    let cluster = TempCluster::builder()
        .root(&root)
        .with(|o| o.tcp(true))
        .start()
        .unwrap();
    let url = cluster.connection_string();
    assert!(
        url.contains(&format!("@127.0.0.1:{}/", cluster.port())),
        "{url}"
    );
    assert_eq!(
        query_text(&url, "select inet_server_addr()::text"),
        "127.0.0.1/32"
    );

    let wrong = format!(
        "postgresql://postgres:wrong@127.0.0.1:{}/postgres",
        cluster.port()
    );
    let refused = support::block_on(tokio_postgres::connect(&wrong, tokio_postgres::NoTls));
    assert!(
        refused.is_err(),
        "TCP must not trust: only the local socket does"
    );
}

#[test]
fn a_server_that_exits_during_startup_fails_at_once_with_its_log() {
    let root = support::unique_root("badsetting");
    let err = TempCluster::builder()
        .root(&root)
        .with(|o| o.setting("shared_buffers", "lots"))
        .start()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ServerStart);
    let text = err.to_string();
    assert!(text.contains("exited"), "{text}");
    assert!(
        text.contains("shared_buffers"),
        "the log tail names the bad setting: {text}"
    );
    assert_eq!(support::servers_under(&root), Vec::<u32>::new());
    assert_eq!(
        std::fs::read_dir(root.join("clones")).unwrap().count(),
        0,
        "a failed start leaves nothing"
    );
}

#[test]
fn a_start_that_times_out_stops_the_server() {
    let root = support::unique_root("timeout");
    let err = TempCluster::builder()
        .root(&root)
        .with(|o| o.start_timeout(Duration::ZERO))
        .start()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ServerStart);
    assert!(
        err.to_string()
            .contains("did not accept connections within"),
        "{err}"
    );
    assert_eq!(
        support::servers_under(&root),
        Vec::<u32>::new(),
        "the server was stopped"
    );
    assert_eq!(std::fs::read_dir(root.join("clones")).unwrap().count(), 0);
}

#[test]
fn keep_stops_cleanly_and_the_cluster_starts_again() {
    let root = support::unique_root("keep");
    let cluster = TempCluster::builder().root(&root).start().unwrap();
    let pid = cluster.server().pid();
    let dir = cluster.keep().unwrap();
    assert!(!process_runs(pid));
    let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap();
    assert!(
        log.contains("database system is shut down"),
        "keep() is a clean shutdown:\n{log}"
    );

    let server = Server::start(dir.join("data"), &ServerOptions::new()).unwrap();
    assert!(server.log_path().ends_with("data.log"));
    let url = server.connection_string("postgres");
    assert_eq!(query_text(&url, "select 'again'"), "again");
    server.stop().unwrap();
    assert!(dir.exists(), "a kept cluster is the user's to remove");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn close_reports_success_and_removes_everything() {
    let root = support::unique_root("close");
    let cluster = TempCluster::builder().root(&root).start().unwrap();
    let dir = cluster.dir().to_path_buf();
    cluster.close().unwrap();
    assert!(!dir.exists());
}

#[test]
fn keep_never_deletes_not_even_when_it_fails() {
    let root = support::unique_root("keep-fails");
    let cluster = TempCluster::builder().root(&root).start().unwrap();
    let (pid, dir) = (cluster.server().pid(), cluster.dir().to_path_buf());
    // A directory where the `keep` mark goes: the mark cannot be written, even by root.
    std::fs::create_dir(dir.join("keep")).unwrap();
    let err = cluster.keep().unwrap_err();
    assert!(err.to_string().contains("the files stay in"), "{err}");
    assert!(!process_runs(pid), "the server was stopped");
    assert!(
        dir.join("data/PG_VERSION").exists(),
        "neither keep() nor Drop removed what it was asked to keep"
    );
}

#[test]
fn a_kept_cluster_outlives_its_killed_process_and_only_gc_kept_removes_it() {
    let root = support::unique_root("keep-gc");
    let mut helper = support::KilledOnDrop(
        support::helper("keep_a_cluster_hold_another")
            .env("PGCLONE_DIR", &root)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let report = support::wait_for_report(&mut helper.0);
    let (kept, held) = report.split_once(' ').unwrap();
    let (kept, held) = (
        std::path::PathBuf::from(kept),
        std::path::PathBuf::from(held),
    );
    helper.0.kill().unwrap();
    helper.0.wait().unwrap();

    let garbage = pgclone::gc::collect_garbage(Some(&root), false).unwrap();
    assert_eq!(
        garbage.clones,
        std::slice::from_ref(&held),
        "only the unkept one is debris"
    );
    assert!(!held.exists());
    assert!(
        kept.join("data/PG_VERSION").exists(),
        "gc without --kept leaves a kept cluster"
    );

    let garbage = pgclone::gc::collect_garbage(Some(&root), true).unwrap();
    assert_eq!(garbage.clones, std::slice::from_ref(&kept));
    assert!(!kept.exists());
}

/// Runs in a helper process: keeps one cluster, holds another, reports both directories and
/// waits to be killed.
pub fn keep_a_cluster_hold_another() -> String {
    let kept = TempCluster::start().unwrap().keep().unwrap();
    let held = TempCluster::start().unwrap();
    crate::helpers::report_and_wait_to_be_killed(&format!(
        "{} {}",
        kept.display(),
        held.dir().display()
    ));
}

#[test]
fn close_reports_what_drop_ignores() {
    let root = support::unique_root("close-fails");
    for close in [true, false] {
        let cluster = TempCluster::builder().root(&root).start().unwrap();
        let pid = cluster.server().pid();
        // Someone moved the directory away: there is nothing left to remove where it was.
        let moved = root.join(format!("moved-{close}"));
        std::fs::rename(cluster.dir(), &moved).unwrap();
        if close {
            let err = cluster.close().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Io, "{err}");
            assert!(err.to_string().contains("remove clone directory"), "{err}");
        } else {
            drop(cluster); // the same failure, ignored: no panic
        }
        assert!(!process_runs(pid), "the server was stopped all the same");
        std::fs::remove_dir_all(&moved).unwrap();
    }
}

#[test]
fn a_server_guard_closes_keeps_and_shows_where_it_lives() {
    let root = support::unique_root("server-guard");
    let dir = TempCluster::builder()
        .root(&root)
        .start()
        .unwrap()
        .keep()
        .unwrap();
    let server = Server::start(dir.join("data"), &ServerOptions::new()).unwrap();
    let debug = format!("{server:?}");
    for shown in [
        format!("pid: {}", server.pid()),
        dir.join("data").display().to_string(),
        server.socket_dir().display().to_string(),
        server.log_path().display().to_string(),
    ] {
        assert!(debug.contains(&shown), "{shown} is missing from {debug}");
    }
    let pid = server.pid();
    server.close().unwrap();
    assert!(!process_runs(pid));

    let server = Server::start(dir.join("data"), &ServerOptions::new()).unwrap();
    let (pid, socket_dir) = (server.pid(), server.socket_dir().to_path_buf());
    assert_eq!(server.keep(), pid);
    assert!(process_runs(pid), "keep() leaves the server running");
    assert!(socket_dir.exists(), "and its socket directory");
    // This test's own cleanup: SIGINT, a fast shutdown.
    // SAFETY: kill has no memory effects; the pid is the server this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGINT) }, 0);
    assert!(support::wait_until_gone(pid, Duration::from_secs(30)));
    let _ = std::fs::remove_dir_all(&socket_dir);
}

#[test]
fn an_unfinished_clone_record_goes_with_close_or_drop() {
    let root = support::unique_root("unfinished");
    let records = || std::fs::read_dir(root.join("unfinished")).unwrap().count();
    let target = root.join("target");
    let record = pgclone::gc::UnfinishedClone::begin(Some(&root), &target).unwrap();
    let debug = format!("{record:?}");
    assert!(debug.contains(&target.display().to_string()), "{debug}");
    assert_eq!(records(), 1);
    record.close().unwrap();
    assert_eq!(records(), 0);

    drop(pgclone::gc::UnfinishedClone::begin(Some(&root), &target).unwrap());
    assert_eq!(records(), 0);

    // Already gone (removed by hand): close says so, Drop would not.
    let record = pgclone::gc::UnfinishedClone::begin(Some(&root), &target).unwrap();
    for entry in std::fs::read_dir(root.join("unfinished")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    assert_eq!(record.close().unwrap_err().kind(), ErrorKind::Io);
}

#[test]
fn a_panicking_test_still_stops_its_server_and_removes_its_files() {
    let root = support::unique_root("panic");
    let (sender, receiver) = std::sync::mpsc::channel();
    let outcome = std::panic::catch_unwind(|| {
        let cluster = TempCluster::builder().root(&root).start().unwrap();
        sender
            .send((cluster.server().pid(), cluster.dir().to_path_buf()))
            .unwrap();
        panic!("the test fails while holding the cluster");
    });
    assert!(outcome.is_err());
    let (pid, dir) = receiver.recv().unwrap();
    assert!(!process_runs(pid), "the server stopped during unwinding");
    assert!(!dir.exists(), "the files were removed during unwinding");
}
