//! The entry point of helper processes: this same test binary, started by other tests with
//! `PGCLONE_IT_HELPER=<task>` (see `support::helper`). Each task reports one `RESULT ...` line.

use std::io::Write;

use pgclone::server::{PgBinaries, TempCluster};

#[test]
#[ignore = "entry point of the helper processes that other tests start"]
fn entry() {
    let Ok(task) = std::env::var("PGCLONE_IT_HELPER") else {
        return; // run by hand without a task: nothing to do
    };
    let report = match task.as_str() {
        // Start a cluster, report its postmaster, then wait to be killed.
        "hold_cluster" => {
            let cluster = TempCluster::start().unwrap();
            report_and_wait_to_be_killed(&format!(
                "{} {}",
                cluster.server().pid(),
                cluster.dir().display()
            ));
        }
        // Start a cluster, query it, report the uid its server runs as.
        "start_and_query" => match TempCluster::start() {
            Ok(cluster) => {
                let one = crate::support::query_text(&cluster.connection_string(), "select '1'");
                format!(
                    "OK uid={} query={one}",
                    crate::support::uid_of(cluster.server().pid())
                )
            }
            Err(e) => format!("ERR {:?} {e}", e.kind()),
        },
        "find_binaries" => match PgBinaries::find() {
            Ok(b) => format!("OK {}", b.bin_dir().display()),
            Err(e) => format!("ERR {:?} {e}", e.kind()),
        },
        "clone_until_step" => crate::online_clone::clone_until_step(),
        "acquire_golden" => crate::harness::acquire_golden(),
        "hold_testdbs" => crate::harness::hold_testdbs(),
        "fail_a_test" => crate::harness::fail_a_test(),
        "report_modes" => crate::harness::report_modes(),
        "share_template" => crate::harness::share_template(),
        "use_pool" => crate::harness::use_pool(),
        "outlive_the_template_server" => crate::harness::outlive_the_template_server(),
        "create_side_by_side" => crate::harness::create_side_by_side(),
        "use_a_template_server" => crate::harness::use_a_template_server(),
        "report_max_connections" => crate::harness::report_max_connections(),
        "keep_databases" => crate::harness::keep_databases(),
        "keep_a_cluster_hold_another" => crate::lifecycle::keep_a_cluster_hold_another(),
        "list_golden_keys" => crate::harness::list_golden_keys(),
        "remote_isolation" => crate::remote::remote_isolation(),
        "remote_acquire" => crate::remote::remote_acquire(),
        "remote_hold_connections" => crate::remote::remote_hold_connections(),
        "remote_settings" => crate::remote::remote_settings(),
        "remote_hold" => crate::remote::remote_hold(),
        "remote_needs_local" => crate::remote::remote_needs_local(),
        "offline_clone_until_copying" => crate::offline_clone::offline_clone_until_copying(),
        other => panic!("unknown helper task {other}"),
    };
    self::report(&report);
}

/// The helper task `share_template` as a test of another name, with another golden (a keeper
/// started for that golden runs this entry point again, and finds the same golden).
#[test]
#[ignore = "entry point of the helper processes that other tests start"]
fn entry_with_another_golden() {
    crate::harness::ANOTHER_GOLDEN.store(true, std::sync::atomic::Ordering::SeqCst);
    entry();
}

/// Reports, then waits to be killed (the caller's SIGKILL is the point of the test).
pub fn report_and_wait_to_be_killed(line: &str) -> ! {
    report(line);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn report(line: &str) {
    // One line, newlines escaped, so the parent can find it among libtest's output.
    println!("RESULT {}", line.replace('\n', "\\n"));
    std::io::stdout().flush().unwrap();
}
