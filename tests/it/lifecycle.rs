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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let refused = rt.block_on(tokio_postgres::connect(&wrong, tokio_postgres::NoTls));
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
