//! Online clones of a cluster under write load, with checkpoints during the copy, are
//! transactionally consistent and structurally sound (pgbench invariants, amcheck).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pgclone::{
    clone::{clone_running_cluster, CloneEvent, CloneOptions, Step},
    server::{PgBinaries, Server, ServerOptions, TempCluster},
};

use crate::online_clone::assert_source_clean;
use crate::support::{self, execute, query_text};

/// pgbench from the binaries in use, else Debian's client packages.
fn pgbench() -> PathBuf {
    let ours = PgBinaries::find().unwrap().program("pgbench");
    if ours.exists() {
        return ours;
    }
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/pgbench"))
        .find(|p| p.exists());
    debian.expect("this test needs pgbench (Debian: apt-get install postgresql-15)")
}

fn pgbench_command(source: &TempCluster) -> Command {
    let mut cmd = Command::new(pgbench());
    cmd.arg("-h")
        .arg(source.host())
        .arg("-p")
        .arg(source.port().to_string())
        .args(["-U", "postgres"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

#[test]
fn clones_taken_under_pgbench_load_with_checkpoints_are_consistent() {
    let root = support::unique_root("pgbench");
    let source = TempCluster::builder().root(&root).start().unwrap();
    let url = source.connection_string();
    execute(&url, "create extension amcheck");
    let init = pgbench_command(&source)
        .args(["-i", "-s", "2", "-q", "postgres"])
        .status()
        .unwrap();
    assert!(init.success(), "pgbench -i failed");

    let mut load = pgbench_command(&source)
        .args(["-n", "-c", "4", "-j", "2", "-T", "120", "postgres"])
        .spawn()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let checkpoints = {
        let (stop, url) = (stop.clone(), url.clone());
        std::thread::spawn(move || {
            let mut count = 0;
            while !stop.load(Ordering::Relaxed) {
                execute(&url, "checkpoint");
                count += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            count
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(500)); // let the load get going

    let mut last_history = 0u64;
    for i in 0..6 {
        let target = root.join(format!("clone-{i}"));
        // A checkpoint inside the copy window, on top of the ones running all along.
        let during = url.clone();
        let options = CloneOptions::new().on_progress(move |event| {
            if event == CloneEvent::Done(Step::BackupStart) {
                execute(&during, "checkpoint");
            }
        });
        clone_running_cluster(&source.data_dir(), &target, &options).unwrap();
        let clone = Server::start(&target, &ServerOptions::new()).unwrap();
        let clone_url = clone.connection_string("postgres");
        let sums = query_text(
            &clone_url,
            "select concat_ws(',', (select coalesce(sum(delta), 0) from pgbench_history),
                                   (select sum(abalance) from pgbench_accounts),
                                   (select sum(tbalance) from pgbench_tellers),
                                   (select sum(bbalance) from pgbench_branches))",
        );
        let sums: Vec<&str> = sums.split(',').collect();
        assert!(
            sums.iter().all(|s| *s == sums[0]),
            "clone {i}: history, account, teller and branch sums differ: {sums:?}"
        );
        let checked = query_text(
            &clone_url,
            "select count(bt_index_check(c.oid, true))::text from pg_index i
               join pg_class c on c.oid = i.indexrelid join pg_am a on a.oid = c.relam
              where a.amname = 'btree' and c.relnamespace = 'public'::regnamespace",
        );
        assert!(
            checked.parse::<u32>().unwrap() >= 3,
            "amcheck ran on the pgbench indexes"
        );
        last_history = query_text(&clone_url, "select count(*)::text from pgbench_history")
            .parse()
            .unwrap();
        clone.stop_immediately().unwrap();
        std::fs::remove_dir_all(&target).unwrap();
    }

    stop.store(true, Ordering::Relaxed);
    let checkpoint_count = checkpoints.join().unwrap();
    let _ = load.kill();
    let _ = load.wait();
    assert!(last_history > 0, "the clones saw the write load");
    assert!(
        checkpoint_count > 6,
        "checkpoints ran during the clones ({checkpoint_count})"
    );
    assert_source_clean(&url);
}
