//! Shared test helpers: private roots, helper processes, facts about processes.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

#[path = "../common/mod.rs"]
mod common;
pub use common::{
    base_dir, files_under, process_runs, reflink_required, wait_until_gone, TestRoot,
};

/// A fresh pgclone root of its own for one test (so its reaping is the first in this process).
/// What `#[pgclone::test]` with no arguments would hand the harness for the test `name`: no
/// golden, no mode, no migrations or fixtures, a current-thread runtime. Tests that call the
/// harness directly change what they need with `..spec(name)`.
pub fn spec(name: &'static str) -> pgclone::__private::TestSpec {
    pgclone::__private::TestSpec {
        name,
        golden: None,
        mode: None,
        migrations: pgclone::__private::Migrations::None,
        fixtures: &[],
        multi_thread: false,
        worker_threads: None,
        should_panic: false,
    }
}

pub fn unique_root(name: &str) -> TestRoot {
    common::test_root(&format!("it-{name}"))
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Runs this test binary again as a helper process: `helpers::entry` does what `task` says.
pub fn helper(task: &str) -> Command {
    helper_from(&std::env::current_exe().unwrap(), task)
}

pub fn helper_from(exe: &Path, task: &str) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args([
        "helpers::entry",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env("PGCLONE_IT_HELPER", task)
    // A helper is a process of its own, not one of a nextest run (unless a test says so).
    .env_remove("NEXTEST_RUN_ID")
    .stdin(Stdio::null());
    cmd
}

/// Runs a helper to completion and returns the line it reported (`RESULT ...`).
pub fn helper_result(mut cmd: Command) -> String {
    result_of(&cmd.output().unwrap())
}

/// The line a finished helper reported (`RESULT ...`).
pub fn result_of(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(str::to_string)
        .unwrap_or_else(|| {
            panic!(
                "helper reported nothing; stdout:\n{stdout}\nstderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

/// Reads a running helper's stdout until it reports; returns the report.
pub fn wait_for_report(child: &mut Child) -> String {
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        if let Some(report) = line.unwrap().strip_prefix("RESULT ") {
            return report.to_string();
        }
    }
    panic!("helper exited without reporting: {:?}", child.wait());
}

/// Runs `cmd` as `uid`/`gid` (when this process is root).
pub fn as_user(cmd: &mut Command, uid: u32, gid: u32) {
    cmd.uid(uid).gid(gid);
}

/// The pids of postgres processes whose command line names a path below `dir`.
pub fn servers_under(dir: &Path) -> Vec<u32> {
    let needle = dir.as_os_str().as_encoded_bytes();
    let matching: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.windows(needle.len()).any(|w| w == needle)
                    && c.starts_with(b"/")
                    && process_runs(*pid)
            })
        })
        .collect();
    // A child the postmaster has just forked shows the postmaster's command line until it
    // renames itself: count postmasters only.
    matching
        .iter()
        .copied()
        .filter(|pid| !parent_of(*pid).is_some_and(|parent| matching.contains(&parent)))
        .collect()
}

/// The parent of process `pid`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The real uid a process runs as.
pub fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Runs `future` to completion on a runtime of its own (a helper process, or a sync test).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// Runs `work` with a tokio-postgres client connected to `url`, on a runtime of its own.
fn with_client<T>(url: &str, work: impl AsyncFnOnce(&tokio_postgres::Client) -> T) -> T {
    block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let connection = tokio::spawn(connection);
        let value = work(&client).await;
        drop(client);
        let _ = connection.await;
        value
    })
}

/// Runs one query returning a single text value.
pub fn query_text(url: &str, sql: &str) -> String {
    with_client(url, async |client| {
        client.query_one(sql, &[]).await.unwrap().get(0)
    })
}

/// Runs statements that return nothing.
pub fn execute(url: &str, sql: &str) {
    with_client(url, async |client| client.batch_execute(sql).await.unwrap())
}

/// A helper process that is killed (SIGKILL) and reaped when this value drops, also when the
/// test fails before it kills the helper itself.
pub struct KilledOnDrop(pub Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How many rows table `t` (the one the tests' recipes fill) has in `db`, through its client.
pub async fn rows_in_t(db: &pgclone::TestDb) -> i64 {
    db.client()
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0)
}
