//! A server never outlives the process that started it, and the next run reaps what is left.

use std::process::Stdio;
use std::time::Duration;

use pgclone::server::TempCluster;

use crate::support::{self, process_runs, wait_for_report, wait_until_gone};

#[test]
fn server_dies_within_two_seconds_of_a_sigkilled_owner_and_the_next_run_reaps_its_files() {
    let root = support::unique_root("sigkill");
    let mut helper = support::helper("hold_cluster")
        .env("PGCLONE_DIR", &root)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let report = wait_for_report(&mut helper);
    let (pid, dir) = report.split_once(' ').unwrap();
    let pid: u32 = pid.parse().unwrap();
    assert!(process_runs(pid), "the helper's server runs");

    helper.kill().unwrap(); // SIGKILL: no destructor, no cleanup code runs
    helper.wait().unwrap();
    assert!(
        wait_until_gone(pid, Duration::from_secs(2)),
        "postgres {pid} outlived its SIGKILLed owner by 2 s"
    );

    let dir = std::path::PathBuf::from(dir);
    assert!(
        dir.exists(),
        "nothing could remove the files of a SIGKILLed process"
    );
    let next = TempCluster::builder().root(&root).start().unwrap();
    assert!(
        !dir.exists(),
        "the next use of the root reaps the dead owner's clone"
    );
    assert!(next.dir().exists());
}

#[test]
fn servers_started_on_short_lived_threads_keep_running() {
    // cargo test runs each test on its own thread; the parent-death signal must not fire when the
    // thread that asked for the server ends.
    let root = support::unique_root("thread");
    let root_path = root.to_path_buf();
    let cluster =
        std::thread::spawn(move || TempCluster::builder().root(root_path).start().unwrap())
            .join()
            .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(process_runs(cluster.server().pid()));
    assert_eq!(
        support::query_text(&cluster.connection_string(), "select 'alive'"),
        "alive"
    );
}
