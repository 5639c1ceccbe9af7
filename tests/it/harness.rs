//! The test harness: golden builds across processes, failures, keeping, reaping.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pgclone::{Golden, TestDb};

use crate::support::{self, helper_result, process_runs, wait_for_report, wait_until_gone};

/// A migrations directory of its own, with one table.
fn migrations(root: &Path) -> PathBuf {
    let dir = root.join("migrations");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("0001_t.sql"),
        "create table t(x int); insert into t select generate_series(1, 7);",
    )
    .unwrap();
    dir
}

/// A helper process for `task` with `root` as its pgclone directory and the migrations of
/// [`migrations`] in `dir`.
fn helper_on(task: &str, root: &Path, dir: &Path) -> std::process::Command {
    let mut cmd = support::helper(task);
    cmd.env("PGCLONE_DIR", root)
        .env("PGCLONE_IT_MIGRATIONS", dir);
    cmd
}

/// The lines of `builds.log` (`<time> <name> <key> pid ...`) as (name, key).
fn build_log(root: &Path) -> Vec<(String, String)> {
    let log = std::fs::read_to_string(root.join("golden/builds.log")).unwrap_or_default();
    log.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            (fields[1].to_string(), fields[2].to_string())
        })
        .collect()
}

/// The keys of base builds: the `postgres` cluster with nothing in it, which every other golden
/// starts from.
fn base_keys(root: &Path) -> Vec<String> {
    let log = build_log(root).into_iter();
    log.filter(|(name, _)| name == "postgres")
        .map(|(_, key)| key)
        .collect()
}

/// Builds of the tests' own recipes (not the base).
fn builds(root: &Path) -> usize {
    build_log(root)
        .iter()
        .filter(|(name, _)| name != "postgres")
        .count()
}

/// The built goldens under `root` (directories with `READY`), by key, but the base.
fn goldens(root: &Path) -> Vec<String> {
    let base = base_keys(root);
    let mut keys: Vec<String> = std::fs::read_dir(root.join("golden"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("READY").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|key| !base.contains(key))
        .collect();
    keys.sort();
    keys
}

/// Makes the golden `key` look unused for eight days.
fn age(root: &Path, key: &str) {
    let ready = root.join("golden").join(key).join("READY");
    let eight_days_ago = std::time::SystemTime::now() - Duration::from_secs(8 * 24 * 3600);
    std::fs::File::options()
        .append(true)
        .open(ready)
        .unwrap()
        .set_modified(eight_days_ago)
        .unwrap();
}

fn acquire(root: &Path, dir: &Path) -> std::process::Command {
    let mut cmd = helper_on("acquire_golden", root, dir);
    cmd.stdout(Stdio::piped());
    cmd
}

/// `pgclone golden key`: the goldens a suite uses, listed without building any, are the ones a
/// real run of it builds.
#[test]
fn golden_keys_name_the_goldens_a_run_builds_and_build_none() {
    let root = support::unique_root("golden-keys");
    let mut list = support::helper("list_golden_keys");
    list.env("PGCLONE_DIR", &root);
    let listed = helper_result(list);
    assert!(!root.join("golden").exists(), "listing built nothing");
    let listed: HashSet<String> = listed.split_whitespace().map(str::to_string).collect();
    assert!(listed.len() >= 2, "the base and `items`: {listed:?}");

    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["args::", "--test-threads=2", "-q"])
        .env("PGCLONE_DIR", &root)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let built: HashSet<String> = std::fs::read_dir(root.join("golden"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("READY").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(built, listed);
}

/// Helper: the keys of the goldens of this binary's `args::` tests, space-separated.
pub fn list_golden_keys() -> String {
    let exe = std::env::current_exe().unwrap();
    let command = [
        exe.into_os_string(),
        "args::".into(),
        "--test-threads=2".into(),
    ];
    let keys = pgclone::golden_keys(&command).unwrap();
    let keys: Vec<String> = keys.into_iter().map(|k| k.key).collect();
    keys.join(" ")
}

/// What a CI cache does between runs: `PGCLONE_DIR/golden` archived, and restored into a fresh
/// directory on the next run (tar, as `actions/cache` and GitLab's cache use).
#[test]
fn goldens_restored_from_a_ci_cache_are_used_without_rebuilding() {
    let first = support::unique_root("cache-first");
    let dir = migrations(&first);
    let output = acquire(&first, &dir)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("RESULT OK 7"));
    assert!(String::from_utf8_lossy(&output.stderr).contains("building golden"));

    let archive = first.join("cache.tar");
    let tar = |args: &[&std::ffi::OsStr]| {
        let status = std::process::Command::new("tar")
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "tar {args:?}");
    };
    tar(&[
        "-C".as_ref(),
        first.as_os_str(),
        "-cf".as_ref(),
        archive.as_os_str(),
        "golden".as_ref(),
    ]);
    let next = support::unique_root("cache-next");
    tar(&[
        "-C".as_ref(),
        next.as_os_str(),
        "-xf".as_ref(),
        archive.as_os_str(),
    ]);

    let output = acquire(&next, &dir)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("RESULT OK 7"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("building golden"),
        "restored, not rebuilt: {stderr}"
    );
}

#[test]
fn eight_processes_build_one_golden_a_new_migration_rebuilds_and_an_unchanged_recipe_is_reused() {
    let root = support::unique_root("golden8");
    let dir = migrations(&root);
    let helpers: Vec<_> = (0..8)
        .map(|_| acquire(&root, &dir).spawn().unwrap())
        .collect();
    for helper in helpers {
        let output = helper.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains("RESULT OK 7"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(
        builds(&root),
        1,
        "exactly one of 8 processes built the golden"
    );
    assert_eq!(
        base_keys(&root).len(),
        1,
        "and one built the base it starts from (initdb once)"
    );
    let first = goldens(&root);
    assert_eq!(first.len(), 1, "{first:?}");

    assert_eq!(helper_result(acquire(&root, &dir)), "OK 7");
    assert_eq!(builds(&root), 1, "an unchanged recipe is reused");

    std::fs::write(dir.join("0002_more.sql"), "insert into t values (8);").unwrap();
    assert_eq!(helper_result(acquire(&root, &dir)), "OK 8");
    assert_eq!(builds(&root), 2, "a new migration rebuilds");
    let both = goldens(&root);
    assert_eq!(
        both.len(),
        2,
        "a golden used recently stays, whatever its name: {both:?}"
    );

    // Unused for a week: the next build removes it, with the files of the server a nextest
    // run shared.
    let shared = root.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let shared_files =
        ["lease", "start", "log"].map(|ext| shared.join(format!("{}.{ext}", first[0])));
    for file in &shared_files {
        std::fs::write(file, "").unwrap();
    }
    age(&root, &first[0]);
    let mut rebuild = acquire(&root, &dir);
    rebuild.env("PGCLONE_REBUILD", "1");
    assert_eq!(helper_result(rebuild), "OK 8");
    assert_eq!(
        builds(&root),
        3,
        "PGCLONE_REBUILD=1 rebuilds an unchanged recipe"
    );
    let last = goldens(&root);
    assert_eq!(
        last.len(),
        1,
        "the golden unused for a week is gone: {last:?}"
    );
    assert!(!last.contains(&first[0]));
    for file in &shared_files {
        assert!(!file.exists(), "{} is gone with its golden", file.display());
    }
}

#[test]
fn a_build_killed_during_initdb_never_breaks_the_process_waiting_for_it() {
    // initdb's `postgres --single` outlives a SIGKILLed builder for a while and keeps writing
    // where it was told to: the next build must happen elsewhere.
    for _ in 0..3 {
        let root = support::unique_root("killed-build");
        let dir = migrations(&root);
        let mut builder = acquire(&root, &dir).spawn().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !initdb_runs_under(&root) {
            assert!(std::time::Instant::now() < deadline, "initdb never ran");
            std::thread::sleep(Duration::from_millis(2));
        }
        let waiter = acquire(&root, &dir).spawn().unwrap();
        builder.kill().unwrap(); // SIGKILL, during initdb
        builder.wait().unwrap();
        let output = waiter.wait_with_output().unwrap();
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("RESULT OK 7"),
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Whether an `initdb` (or the `postgres --single` it runs) works on a directory under `root`.
fn initdb_runs_under(root: &Path) -> bool {
    let needle = root.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        std::fs::read(entry.path().join("cmdline")).is_ok_and(|cmdline| {
            let is_initdb = cmdline.split(|b| *b == 0).next().is_some_and(|program| {
                program.ends_with(b"initdb") || cmdline.windows(8).any(|w| w == b"--single")
            });
            is_initdb && cmdline.windows(needle.len()).any(|w| w == needle)
        })
    })
}

#[test]
fn recipes_with_the_same_name_are_two_goldens_and_never_remove_each_other() {
    let root = support::unique_root("samename");
    let (a, b) = (root.join("a"), root.join("b"));
    for (dir, rows) in [(&a, 3), (&b, 5)] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("0001_t.sql"),
            format!("create table t(x int); insert into t select generate_series(1, {rows});"),
        )
        .unwrap();
    }
    // Both recipes are named "concurrent"; processes use them at once, twice over.
    for _ in 0..2 {
        let helpers: Vec<_> = [&a, &b, &a, &b, &a, &b]
            .iter()
            .map(|dir| (dir.to_path_buf(), acquire(&root, dir).spawn().unwrap()))
            .collect();
        for (dir, helper) in helpers {
            let output = helper.wait_with_output().unwrap();
            let expected = if dir == a {
                "RESULT OK 3"
            } else {
                "RESULT OK 5"
            };
            assert!(
                String::from_utf8_lossy(&output.stdout).contains(expected),
                "{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    assert_eq!(builds(&root), 2, "one build per recipe");
    assert_eq!(goldens(&root).len(), 2);
}

/// Runs in a helper process: a TestDb of the golden "concurrent", the count of rows in `t`.
pub fn acquire_golden() -> String {
    let dir = std::env::var("PGCLONE_IT_MIGRATIONS").unwrap();
    support::block_on(async {
        match TestDb::start(&Golden::new("concurrent").migrations(dir)).await {
            Ok(db) => {
                let n = support::rows_in_t(&db).await;
                format!("OK {n}")
            }
            Err(e) => format!("ERR {e}"),
        }
    })
}

#[test]
fn a_failing_migration_names_its_file_line_and_statement_and_leaves_nothing_usable() {
    let root = support::unique_root("badmigration");
    let dir = root.join("migrations");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("0001_ok.sql"), "create table t(x int);").unwrap();
    std::fs::write(
        dir.join("0002_broken.sql"),
        "insert into t values (1);\n\ninsert into missing values (2);\n",
    )
    .unwrap();
    let result = helper_result(acquire(&root, &dir));
    assert!(result.starts_with("ERR "), "{result}");
    for expected in [
        "0002_broken.sql",
        "line 3",
        "insert into missing values (2);",
        "does not exist",
    ] {
        assert!(
            result.contains(expected),
            "missing {expected:?} in: {result}"
        );
    }
    assert!(
        goldens(&root).is_empty(),
        "a failed build leaves no golden, not even a partial one"
    );
    assert_eq!(builds(&root), 0);
    assert_eq!(support::servers_under(&root), Vec::<u32>::new());
}

fn postmaster_pid(data_dir: &Path) -> u32 {
    let pid_file = std::fs::read_to_string(data_dir.join("postmaster.pid")).unwrap();
    pid_file.lines().next().unwrap().parse().unwrap()
}

#[test]
fn a_sigkilled_test_process_leaves_no_server_and_the_next_run_no_clone_directory() {
    let root = support::unique_root("killed-tests");
    let dir = migrations(&root);
    let mut helper = helper_on("hold_testdbs", &root, &dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let report = wait_for_report(&mut helper);
    let data_dirs: Vec<PathBuf> = report.split(' ').map(PathBuf::from).collect();
    let pids: Vec<u32> = data_dirs.iter().map(|d| postmaster_pid(d)).collect();
    assert_eq!(
        pids.len(),
        2,
        "a cluster-mode clone and a database-mode template server"
    );
    assert!(pids.iter().all(|pid| process_runs(*pid)));

    helper.kill().unwrap();
    helper.wait().unwrap();
    for pid in &pids {
        assert!(
            wait_until_gone(*pid, Duration::from_secs(2)),
            "postgres {pid} outlived its SIGKILLed test process"
        );
    }
    assert!(
        data_dirs.iter().all(|d| d.exists()),
        "nothing could clean up after SIGKILL"
    );

    let garbage = pgclone::gc::collect_garbage(Some(&root), false).unwrap(); // what the next run does first
    for data_dir in &data_dirs {
        let clone_dir = data_dir.parent().unwrap().to_path_buf();
        assert!(
            garbage.clones.contains(&clone_dir),
            "{clone_dir:?} reaped: {garbage:?}"
        );
    }
    assert_eq!(
        std::fs::read_dir(root.join("clones")).unwrap().count(),
        0,
        "zero clone directories remain"
    );
    assert_eq!(
        support::servers_under(&root),
        Vec::<u32>::new(),
        "zero servers remain"
    );
}

/// Runs in a helper process: holds a TestDb in each mode, reports their data directories, waits
/// to be killed.
pub fn hold_testdbs() -> String {
    // The runtime outlives the copies it made: their clients stay connected while the process waits.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (cluster, database) = rt.block_on(async {
        let cluster = TestDb::start(&counting_golden()).await.unwrap();
        let database = TestDb::builder(&counting_golden())
            .mode(pgclone::Mode::Database)
            .start()
            .await
            .unwrap();
        (cluster, database)
    });
    crate::helpers::report_and_wait_to_be_killed(&format!(
        "{} {}",
        cluster.data_dir().display(),
        database.data_dir().display()
    ));
}

fn counting_golden() -> Golden {
    Golden::new("concurrent").migrations(std::env::var("PGCLONE_IT_MIGRATIONS").unwrap())
}

#[test]
fn keep_failed_keeps_a_failing_tests_clone_and_the_printed_instructions_work() {
    let root = support::unique_root("keep-failed");
    let dir = migrations(&root);
    let output = helper_on("fail_a_test", &root, &dir)
        .env("PGCLONE_KEEP", "failed")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("RESULT FAILED AS INTENDED"),
        "{stderr}"
    );
    let line = |label: &str| {
        stderr
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} line in:\n{stderr}"))
            .trim()
            .to_string()
    };
    assert!(
        stderr.contains("kept this test's database (PGCLONE_KEEP=failed)"),
        "{stderr}"
    );
    let kept_dir = PathBuf::from(
        stderr
            .lines()
            .find_map(|l| l.split_once("PGCLONE_KEEP=failed) in "))
            .unwrap()
            .1
            .trim(),
    );
    assert!(kept_dir.join("keep").exists() && kept_dir.join("data/PG_VERSION").exists());

    // Follow the instructions: start it, connect, see the test's data.
    let start = line("start it:");
    // Its socket goes into a new private directory, never a shared one like /tmp where any
    // local user could connect as the trusted superuser.
    let socket_dir = PathBuf::from(
        start
            .split_once("-k ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no -k in {start}")),
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&socket_dir).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o700, "{}", socket_dir.display());
    let status = std::process::Command::new("sh")
        .args(["-c", &start])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{start}");
    let url = line("connect:")
        .trim_start_matches("psql ")
        .trim_matches('\'')
        .to_string();
    assert_eq!(
        support::query_text(&url, "select count(*)::text from t"),
        "8",
        "the failing test's row is there"
    );
    let stop = start.replacen(" start", " -m fast stop", 1);
    assert!(std::process::Command::new("sh")
        .args(["-c", &stop])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());

    let garbage = pgclone::gc::collect_garbage(Some(&root), true).unwrap();
    assert!(
        garbage.clones.contains(&kept_dir),
        "gc --kept removes it: {garbage:?}"
    );
    assert!(!socket_dir.exists(), "and its socket directory");
}

/// Runs in a helper process: a #[pgclone::test]-style test that writes a row and panics.
pub fn fail_a_test() -> String {
    let spec = pgclone::__private::TestSpec {
        golden: Some(counting_golden),
        mode: Some(pgclone::Mode::Cluster),
        ..support::spec("helpers::fail_a_test")
    };
    let outcome = std::panic::catch_unwind(|| {
        let test: fn(TestDb) -> _ = |db| async move {
            db.client()
                .execute("insert into t values (8)", &[])
                .await
                .unwrap();
            let fail = true; // (a bare panic! would make the block's type `!`)
            assert!(!fail, "deliberate failure");
        };
        pgclone::__private::run_async(spec, test)
    });
    if outcome.is_err() {
        "FAILED AS INTENDED".into()
    } else {
        "PASSED?".into()
    }
}

#[test]
fn the_pool_hands_out_fresh_copies_once_and_exit_leaves_nothing() {
    let root = support::unique_root("pool");
    let dir = migrations(&root);
    let mut cmd = helper_on("use_pool", &root, &dir);
    cmd.env("PGCLONE_POOL", "2").stdout(Stdio::piped());
    let mut helper = cmd.spawn().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(helper.stdout.take().unwrap()));
    let report = lines.find_map(|line| Some(line.ok()?.strip_prefix("RESULT ")?.to_string()));
    assert_eq!(report.as_deref(), Some("OK 10 distinct fresh copies"));
    std::thread::spawn(move || lines.for_each(drop)); // read what it prints while exiting
                                                      // Exit closes the pools: it must not wait for a notification nobody sends (it stalled
                                                      // 10 s). Generous bound: this catches a hang, it does not measure speed.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while helper.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "exit hangs on the pool"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        support::servers_under(&root),
        Vec::<u32>::new(),
        "no server outlives the process"
    );
    let left = |sub: &str| std::fs::read_dir(root.join(sub)).map_or(0, |d| d.count());
    assert_eq!(
        (left("clones"), left("trash")),
        (0, 0),
        "no clone directory outlives the process"
    );
}

#[test]
fn a_dead_template_server_is_replaced_and_the_next_database_works() {
    let root = support::unique_root("dead-template");
    let dir = migrations(&root);
    let mut cmd = helper_on("outlive_the_template_server", &root, &dir);
    cmd.env("PGCLONE_POOL", "0");
    assert_eq!(helper_result(cmd), "OK 7 after the template server died");
}

/// A template server leaves its cluster to the next process's (no copy to make, none to delete),
/// unless a test changed what the cluster's databases share (a role, here); a cluster left in
/// another boot (written with `fsync = off`: a host crash may have lost writes) is not used, nor
/// one of an earlier build of the golden, nor one that does not start.
#[test]
fn a_template_server_leaves_its_cluster_to_the_next_process_unless_a_test_changed_it() {
    let root = support::unique_root("warm");
    let dir = migrations(&root);
    // Each run reports its database's oid (a fresh copy of the golden hands out the same one
    // each time; a cluster used before hands out later ones), whether the role exists, and rows.
    let run_with = |env: Option<&str>| {
        let mut cmd = helper_on("use_a_template_server", &root, &dir);
        cmd.env("PGCLONE_POOL", "0");
        if let Some(name) = env {
            cmd.env(name, "1");
        }
        let result = helper_result(cmd);
        let fields: Vec<&str> = result.split(' ').collect();
        assert_eq!(fields[0], "OK", "{result}");
        assert_eq!(fields[2..], ["no-role", "7", "closed"], "{result}");
        fields[1].parse::<u64>().unwrap()
    };
    let run = |create_role: bool| run_with(create_role.then_some("PGCLONE_IT_CREATE_ROLE"));
    let fresh = run(false);
    let [key] = <[String; 1]>::try_from(goldens(&root)).unwrap();
    // Beside the goldens, not in their directories (which CI caches save).
    let warm = root.join("warm").join(&key);
    assert!(warm.join("data").is_dir(), "a process left its cluster");

    let used = run(true);
    assert!(
        used > fresh,
        "the next process started on the cluster left ({used} after {fresh})"
    );
    assert!(
        !warm.exists(),
        "a cluster with a role a test made is not left"
    );
    assert_eq!(
        run(false),
        fresh,
        "the next process started on a copy of the golden"
    );

    std::fs::write(warm.join("boot"), "an earlier boot\n").unwrap();
    assert_eq!(
        run(false),
        fresh,
        "a cluster left in another boot is not started"
    );
    std::fs::remove_file(warm.join("data/global/pg_control")).unwrap();
    assert_eq!(
        run(false),
        fresh,
        "a left cluster that does not start gives way to a copy"
    );
    assert!(warm.join("data/global/pg_control").is_file());
    assert_eq!(
        run_with(Some("PGCLONE_REBUILD")),
        fresh,
        "a cluster left by an earlier build of the golden is not started"
    );
    assert!(warm.join("data").is_dir());
    assert_eq!(support::servers_under(&root), Vec::<u32>::new());
    let clones = std::fs::read_dir(root.join("clones")).unwrap().count();
    assert_eq!(clones, 0, "no clone directory outlives its process");
}

/// A process's own template server takes as many connections as its tests may hold: 7 per test
/// at once, twice, never under 100; the tests at once as libtest counts them (its
/// `--test-threads`, else `RUST_TEST_THREADS`). Sized by the cores alone, 20 tests at once with
/// sqlx pools would meet "too many clients" on a two-core machine.
#[test]
fn a_template_servers_connections_follow_libtests_threads() {
    let root = support::unique_root("test-threads");
    let dir = migrations(&root);
    let max_connections = |threads_argument: Option<&str>, variable: Option<&str>| {
        let helper = helper_on("report_max_connections", &root, &dir);
        let mut cmd = Command::new(helper.get_program());
        // The helper's arguments, but its `--test-threads=1`.
        let args = helper
            .get_args()
            .filter(|arg| !arg.to_string_lossy().starts_with("--test-threads"));
        cmd.args(args)
            .args(threads_argument)
            .envs(helper.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .env_remove("RUST_TEST_THREADS")
            .env_remove("NEXTEST_RUN_ID")
            .env("PGCLONE_POOL", "0");
        if let Some(value) = variable {
            cmd.env("RUST_TEST_THREADS", value);
        }
        let result = helper_result(cmd);
        let fields: Vec<&str> = result.split(' ').collect();
        assert_eq!(fields[0], "OK", "{result}");
        fields[1].to_string()
    };
    assert_eq!(max_connections(Some("--test-threads=20"), Some("3")), "280");
    assert_eq!(max_connections(None, Some("30")), "420");
    assert_eq!(max_connections(Some("--test-threads=1"), None), "100");
}

/// Runs in a helper process: a database-mode copy of the counting golden, and the
/// `max_connections` of the server it is in.
pub fn report_max_connections() -> String {
    support::block_on(async {
        let db = TestDb::builder(&counting_golden())
            .mode(pgclone::Mode::Database)
            .start()
            .await
            .unwrap();
        let row = db
            .client()
            .query_one("select current_setting('max_connections')", &[])
            .await
            .unwrap();
        format!("OK {}", row.get::<_, String>(0))
    })
}

/// Runs in a helper process: a database-mode copy of the counting golden; with
/// `PGCLONE_IT_CREATE_ROLE`, the test also creates a role.
pub fn use_a_template_server() -> String {
    support::block_on(async {
        let golden = counting_golden();
        let db = TestDb::builder(&golden)
            .mode(pgclone::Mode::Database)
            .start()
            .await
            .unwrap();
        let value = |sql: &'static str| async {
            let row = db.client().query_one(sql, &[]).await.unwrap();
            row.get::<_, String>(0)
        };
        let oid = value("select oid::text from pg_database where datname = current_database()");
        let role = value("select case when exists (select from pg_roles where rolname = 'pgclone_it_role') then 'role' else 'no-role' end");
        let (oid, role) = (oid.await, role.await);
        if std::env::var_os("PGCLONE_IT_CREATE_ROLE").is_some() {
            db.client()
                .batch_execute("create role pgclone_it_role")
                .await
                .unwrap();
        }
        let rows = support::rows_in_t(&db).await;
        // The golden's database and the templates refuse connections: a test cannot change
        // what later copies (and the next process's server) start from.
        let mut closed = "closed";
        for dbname in ["concurrent", "template1"] {
            let connected = tokio_postgres::Config::new()
                .host(db.host())
                .port(db.port())
                .user(db.user())
                .dbname(dbname)
                .connect(tokio_postgres::NoTls)
                .await;
            let refused = connected
                .err()
                .and_then(|e| Some(e.as_db_error()?.message().to_string()));
            if !refused.is_some_and(|m| m.contains("not currently accepting connections")) {
                closed = "open";
            }
        }
        format!("OK {oid} {role} {rows} {closed}")
    })
}

/// Runs in a helper process: a database-mode copy, its template server killed, another copy.
pub fn outlive_the_template_server() -> String {
    support::block_on(async {
        let golden = counting_golden();
        let start = || {
            TestDb::builder(&golden)
                .mode(pgclone::Mode::Database)
                .start()
        };
        let first = start().await.unwrap();
        let pid_file = std::fs::read_to_string(first.data_dir().join("postmaster.pid")).unwrap();
        let pid: i32 = pid_file.lines().next().unwrap().trim().parse().unwrap();
        drop(first);
        // SAFETY: kill has no memory effects; the pid is the template's postmaster.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        while support::process_runs(pid as u32) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let second = start().await.unwrap();
        let rows = support::rows_in_t(&second).await;
        format!("OK {rows} after the template server died")
    })
}

/// Two tests of a process asking for a database at once get them side by side (a copy without
/// reflinks takes a while): each creation has a session of its own.
#[test]
fn two_databases_asked_for_at_once_are_created_side_by_side() {
    let root = support::unique_root("side-by-side");
    let dir = migrations(&root);
    let mut cmd = helper_on("create_side_by_side", &root, &dir);
    cmd.env("PGCLONE_POOL", "0");
    assert_eq!(helper_result(cmd), "OK 2 creating at once, 7 7");
}

/// Runs in a helper process: with `pg_database` locked (so that every `CREATE DATABASE` waits),
/// two database-mode copies asked for at once; reports how many creations waited together, then
/// the rows each copy has.
pub fn create_side_by_side() -> String {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let golden = counting_golden();
        let start = || {
            TestDb::builder(&golden)
                .mode(pgclone::Mode::Database)
                .start()
        };
        let first = start().await.unwrap();
        let client = first.client();
        client
            .batch_execute("begin; lock table pg_database in share mode")
            .await
            .unwrap();
        // Each creation waits for its lock on pg_database.
        let waiting =
            "select count(*) from pg_locks where relation = 'pg_database'::regclass and not granted";
        // Until both wait (or 5 s pass), then the lock goes and both go on.
        let watch = async {
            let mut together = 0;
            for _ in 0..500 {
                together = client.query_one(waiting, &[]).await.unwrap().get::<_, i64>(0);
                if together == 2 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            client.batch_execute("rollback").await.unwrap();
            together
        };
        let (a, b, together) = tokio::join!(start(), start(), watch);
        let (a, b) = (a.unwrap(), b.unwrap());
        let rows = (support::rows_in_t(&a).await, support::rows_in_t(&b).await);
        format!("OK {together} creating at once, {} {}", rows.0, rows.1)
    })
}

#[test]
fn a_kept_database_is_never_deleted_by_its_process_a_reaper_or_gc_without_kept() {
    let root = support::unique_root("keep-database");
    let dir = migrations(&root);
    let mut helper = support::KilledOnDrop(
        helper_on("keep_databases", &root, &dir)
            .env("PGCLONE_POOL", "0")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let report = wait_for_report(&mut helper.0);
    let kept: Vec<PathBuf> = report.split(' ').map(PathBuf::from).collect();
    let [dead, serving] = &kept[..] else {
        panic!("two kept template clones: {report}")
    };
    assert!(
        dead.join("keep").exists() && dead.join("data/PG_VERSION").exists(),
        "the kept clone whose template server died is still there, marked"
    );
    assert!(
        serving.join("keep").exists(),
        "marked when kept, not at exit"
    );

    // While its process serves it, not even gc --kept takes the template server's clone.
    let garbage = pgclone::gc::collect_garbage(Some(&root), true).unwrap();
    assert_eq!(
        garbage.clones,
        std::slice::from_ref(dead),
        "only the dead server's clone"
    );
    let pid = postmaster_pid(&serving.join("data"));
    assert!(process_runs(pid));

    helper.0.kill().unwrap();
    helper.0.wait().unwrap();
    assert!(wait_until_gone(pid, Duration::from_secs(2)));
    let garbage = pgclone::gc::collect_garbage(Some(&root), false).unwrap(); // the next run's reaper
    assert!(garbage.clones.is_empty(), "{garbage:?}");
    assert!(
        serving.join("data/PG_VERSION").exists(),
        "a killed process's kept database stays"
    );

    let garbage = pgclone::gc::collect_garbage(Some(&root), true).unwrap();
    assert_eq!(garbage.clones, std::slice::from_ref(serving));
}

/// Runs in a helper process: keeps a database-mode copy, kills its template server, takes a
/// copy from the new one and keeps that too; reports both kept clones and waits to be killed.
pub fn keep_databases() -> String {
    // The runtime outlives the copies it made: their clients stay connected while the process waits.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (dead, serving) = rt.block_on(async {
        let golden = counting_golden();
        let start = || {
            TestDb::builder(&golden)
                .mode(pgclone::Mode::Database)
                .start()
        };
        let first = start().await.unwrap();
        let pid = postmaster_pid(first.data_dir());
        let dead = first.keep();
        // SAFETY: kill has no memory effects; the pid is the template's postmaster.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
        assert!(wait_until_gone(pid, Duration::from_secs(5)));
        // Finds the template server dead and starts another: the kept clone must stay.
        let second = start().await.unwrap();
        let rows = support::rows_in_t(&second).await;
        assert_eq!(rows, 7);
        (dead, second.keep())
    });
    crate::helpers::report_and_wait_to_be_killed(&format!(
        "{} {}",
        dead.display(),
        serving.display()
    ));
}

/// Runs in a helper process: takes 5 copies in each mode from the pool, each used and dropped.
pub fn use_pool() -> String {
    support::block_on(async {
        let mut seen = std::collections::HashSet::new();
        for mode in [pgclone::Mode::Cluster, pgclone::Mode::Database] {
            for _ in 0..5 {
                let db = TestDb::builder(&counting_golden())
                    .mode(mode)
                    .start()
                    .await
                    .unwrap();
                let rows = support::rows_in_t(&db).await;
                assert_eq!(rows, 7, "a fresh copy, never one a test used");
                db.client()
                    .execute("insert into t values (100)", &[])
                    .await
                    .unwrap();
                assert!(
                    seen.insert(format!("{} {}", db.data_dir().display(), db.dbname())),
                    "handed out twice"
                );
                tokio::time::sleep(Duration::from_millis(100)).await; // let the pool refill
            }
        }
        format!("OK {} distinct fresh copies", seen.len())
    })
}

/// A golden's rows come frozen (the catalog rows its recipe wrote too) and its tables analyzed:
/// every clone plans its queries alike, and reading a clone's rows sets no hint bit (which would
/// copy a page it shares with the golden).
#[tokio::test]
async fn a_goldens_rows_come_frozen_and_its_tables_analyzed() {
    let golden = Golden::new("frozen").sql(
        "create schema app;
         create table app.items(i int primary key, label text);
         insert into app.items select i, 'item ' || i from generate_series(1, 500) i;",
    );
    let db = TestDb::builder(&golden).pool(0).start().await.unwrap();
    let value = |sql: &'static str| {
        let client = db.client();
        async move {
            let row = client.query_one(sql, &[]).await.unwrap();
            row.get::<_, String>(0)
        }
    };
    // Frozen: every row is older than its table's relfrozenxid, which VACUUM (FREEZE) moves past
    // them (without it, the table's is the transaction that made it and wrote its rows).
    let rows = "select ((select relfrozenxid::text::bigint from pg_class where oid = 'app.items'::regclass) \
        > (select max(xmin::text::bigint) from app.items))::text";
    assert_eq!(value(rows).await, "true", "rows of the recipe's table");
    let catalog = "select ((select relfrozenxid::text::bigint from pg_class where oid = 'pg_class'::regclass) \
        > (select xmin::text::bigint from pg_class where oid = 'app.items'::regclass))::text";
    assert_eq!(value(catalog).await, "true", "the recipe's row in pg_class");
    let analyzed =
        "select count(*)::text from pg_stats where schemaname = 'app' and tablename = 'items'";
    assert_eq!(value(analyzed).await, "2", "statistics of both columns");
}

/// A golden keeps the WAL segment its last checkpoint needs, not all the WAL its recipe wrote
/// (every clone would carry it, and copy it where reflinks are impossible). And pgclone's own
/// connections leave the clone's other databases alone: a first connection writes a database's
/// relation-cache file (160 kB), so probing `postgres` would cost every clone that much disk.
#[tokio::test]
async fn a_clone_carries_one_golden_wal_segment_and_touches_no_other_database() {
    let golden = Golden::new("wal_heavy").sql(
        "create table t(i int);
         do $$ begin
             for i in 1..8 loop insert into t values (i); perform pg_switch_wal(); end loop;
         end $$;",
    );
    let db = TestDb::builder(&golden).pool(0).start().await.unwrap();
    assert_eq!(support::rows_in_t(&db).await, 8);

    let segments: Vec<String> = std::fs::read_dir(db.data_dir().join("pg_wal"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|name| name.len() == 24)
        .collect();
    assert!(segments.len() <= 3, "the golden kept its WAL: {segments:?}");

    let postgres_oid: u32 = db
        .client()
        .query_one(
            "select oid from pg_database where datname = 'postgres'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let cache_file = db
        .data_dir()
        .join(format!("base/{postgres_oid}/pg_internal.init"));
    assert!(!cache_file.exists(), "{} was written", cache_file.display());
}

/// Runs in a helper process: two tests that name no mode, one taking a `TestDb` and one a sqlx
/// pool; reports `<TestDb's mode> <the pool's mode>` ("cluster"/"database").
pub fn report_modes() -> String {
    use std::sync::Mutex;
    static SEEN: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    fn mode(database: bool) -> &'static str {
        if database {
            "database"
        } else {
            "cluster"
        }
    }
    let spec = support::spec;
    let outcome = std::panic::catch_unwind(|| {
        let test_db: fn(TestDb) -> _ = |db| async move {
            let database = matches!(db.method(), pgclone::Method::CreateDatabase { .. });
            SEEN.lock().unwrap().push(mode(database));
        };
        pgclone::__private::run_async(spec("helpers::mode_of_a_test_db"), test_db);
        let pool: fn(sqlx::PgPool) -> _ = |pool| async move {
            // A database of its own in a shared server, or the server's only user database.
            let row: (i64,) = sqlx::query_as(
                "select count(*) from pg_database where not datistemplate and datname <> 'postgres'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            SEEN.lock().unwrap().push(mode(row.0 > 0));
        };
        pgclone::__private::run_async(spec("helpers::mode_of_a_pool"), pool);
    });
    match outcome {
        Ok(()) => SEEN.lock().unwrap().join(" "),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            format!("PANIC {}", message.replace('\n', " "))
        }
    }
}

/// Set by the helper entry point `entry_with_another_golden`: `share_template` then uses
/// [`another_golden`].
pub static ANOTHER_GOLDEN: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

fn another_golden() -> Golden {
    counting_golden().sql("create table another (x int)")
}

/// Runs in a helper process, as one test process of a nextest run: a database-mode test, named
/// as libtest knows this entry point (so that a keeper can run it again), that reports its pid,
/// its server's data directory and its database; with `PGCLONE_IT_HOLD` it then waits to be killed.
pub fn share_template() -> String {
    use std::sync::Mutex;
    static SEEN: Mutex<String> = Mutex::new(String::new());
    let another = ANOTHER_GOLDEN.load(std::sync::atomic::Ordering::SeqCst);
    let mut spec = match another {
        false => support::spec("it::helpers::entry"),
        true => support::spec("it::helpers::entry_with_another_golden"),
    };
    spec.mode = Some(pgclone::Mode::Database);
    spec.golden = Some(match another {
        false => counting_golden,
        true => another_golden,
    });
    let test: fn(TestDb) -> _ = |db| async move {
        let row = db
            .client()
            .query_one("select current_setting('data_directory')", &[])
            .await
            .unwrap();
        let data_dir: String = row.get(0);
        if std::env::var_os("PGCLONE_IT_KEEP").is_some() {
            let kept = db.keep();
            *SEEN.lock().unwrap() = format!("{} {data_dir} {}", std::process::id(), kept.display());
            return;
        }
        let seen = format!("{} {data_dir} {}", std::process::id(), db.dbname());
        if std::env::var_os("PGCLONE_IT_HOLD").is_some() {
            crate::helpers::report_and_wait_to_be_killed(&seen);
        }
        *SEEN.lock().unwrap() = seen;
    };
    pgclone::__private::run_async(spec, test);
    SEEN.lock().unwrap().clone()
}

/// Under nextest (a process per test), the database-mode tests of a run's processes get their
/// databases from one template server, which outlives gaps between them while the run goes on;
/// the databases of processes that are gone are left to the keeper, which drops them when it
/// stops: once the run is over and no process uses the server, it stops and its clone goes.
#[test]
fn a_nextest_runs_processes_share_one_template_server_until_the_run_ends() {
    let root = support::unique_root("shared-template");
    let dir = migrations(&root);
    let helper = |hold: bool| {
        let mut cmd = helper_on("share_template", &root, &dir);
        cmd.env("NEXTEST_RUN_ID", "a-run")
            .env("NEXTEST_TEST_THREADS", "20");
        if hold {
            cmd.env("PGCLONE_IT_HOLD", "1");
        }
        cmd
    };
    // The run's runner, as nextest is: the parent of the first test process, not in the run
    // itself, alive until this test closes its stdin.
    let holder = helper(true);
    let mut runner = Command::new("sh");
    runner
        .args(["-c", "NEXTEST_RUN_ID=a-run \"$@\"; read _", "sh"])
        .arg(holder.get_program())
        .args(holder.get_args())
        .envs(holder.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env_remove("NEXTEST_RUN_ID")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut runner = support::KilledOnDrop(runner.spawn().unwrap());
    let held = wait_for_report(&mut runner.0);
    let report = |line: &str| -> (u32, String, String) {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 3, "a report: {line}");
        (parts[0].parse().unwrap(), parts[1].into(), parts[2].into())
    };
    let (holder_pid, server_dir, held_db) = report(&held);
    // Killed with the test if it fails first: the runner's SIGKILL does not reach it.
    let _holder = KillOnDrop(holder_pid);

    let (_, dir_b, db_b) = report(&helper_result(helper(false)));
    assert_eq!(
        dir_b, server_dir,
        "the second process uses the first one's server"
    );
    assert_ne!(db_b, held_db, "a database each");
    assert_eq!(
        support::servers_under(&root).len(),
        1,
        "one server for the run"
    );

    // The server's address, as its keeper wrote it for the run's processes.
    let server_file = std::fs::read_dir(root.join("shared"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "server"))
        .expect("a .server file while the server runs");
    let text = std::fs::read_to_string(&server_file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let url = format!(
        "host={} port={} user=postgres dbname=postgres",
        lines[2], lines[3]
    );
    // Sized for the run: 20 processes at once, 7 connections each, twice.
    assert_eq!(
        support::query_text(&url, "select current_setting('max_connections')"),
        "280"
    );
    let test_databases = || {
        let left = support::query_text(
            &url,
            "select coalesce(string_agg(datname, ' ' order by datname), '') from pg_database where datname like 'concurrent\\_%'",
        );
        left.split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // The second process is gone, its database stays for the keeper to drop when it stops
    // (a few MB, far under the budget that would have it dropped while the run goes on): past
    // two of the keeper's sweeps, it is still there.
    std::thread::sleep(Duration::from_millis(500));
    let mut both = vec![held_db.clone(), db_b.clone()];
    both.sort();
    assert_eq!(test_databases(), both, "left for the keeper's stop");

    // No process holds the server now, but the run goes on: the next test process finds it.
    assert_eq!(unsafe { libc::kill(holder_pid as i32, libc::SIGKILL) }, 0);
    assert!(wait_until_gone(holder_pid, Duration::from_secs(5)));
    let (_, dir_c, db_c) = report(&helper_result(helper(false)));
    assert_eq!(
        dir_c, server_dir,
        "the server outlived the gap between processes"
    );
    assert!(test_databases().contains(&db_c), "{db_c} left too");

    // keep() cannot keep a database of the run's server: it says so and marks nothing.
    let kept = helper(false).env("PGCLONE_IT_KEEP", "1").output().unwrap();
    let (_, _, kept_dir) = report(&support::result_of(&kept));
    let stderr = String::from_utf8_lossy(&kept.stderr);
    assert!(
        stderr.contains("did not keep this test's database"),
        "{stderr}"
    );
    assert!(
        !Path::new(&kept_dir).join("keep").exists(),
        "the keeper's clone was marked kept"
    );

    // The run ends: nobody holds the server, nobody will; it stops and its clone goes. Its
    // cluster is left for the next server: only as the golden was, so every test's database
    // (the killed holder's too) was dropped first.
    drop(runner.0.stdin.take());
    let server_gone = || {
        let servers = support::servers_under(&root);
        let clones = std::fs::read_dir(root.join("clones")).unwrap().count();
        (servers.is_empty() && clones == 0 && !server_file.exists())
            .then_some(())
            .ok_or(format!("servers {servers:?}, {clones} clone directories"))
    };
    wait_for(server_gone, Duration::from_secs(10));
    let [key] = <[String; 1]>::try_from(goldens(&root)).unwrap();
    assert!(
        root.join("warm").join(key).join("data").is_dir(),
        "the keeper dropped the tests' databases and left its cluster"
    );
}

/// Under nextest, the first test process of a run starts the keepers of the goldens the previous
/// run of its test binary used, so that their tests find their servers running: here a run
/// that uses only one golden finds the other's server started too, and both go when it ends.
/// That process does not wait for them to serve before it exits.
#[test]
fn a_nextest_runs_first_process_starts_the_keepers_the_previous_run_needed() {
    let root = support::unique_root("keepers-ahead");
    let dir = migrations(&root);
    let run = |entries: &[&str], run_id: &str| nextest_run(&root, &dir, entries, run_id, "", &[]).0;
    let serving = || serving_servers(&root);
    let over = |runner| run_is_over(&root, runner);

    // A run of the first golden's test alone, to tell its key from the other's.
    over(run(&["helpers::entry"], "run-0"));
    let [first_key] = <[String; 1]>::try_from(goldens(&root)).unwrap();

    // The first run needs both goldens: a keeper each, started as their tests come.
    let first = run(
        &["helpers::entry", "helpers::entry_with_another_golden"],
        "run-1",
    );
    assert_eq!(serving().len(), 2, "a server per golden");
    over(first);
    let other_key = goldens(&root)
        .into_iter()
        .find(|key| *key != first_key)
        .unwrap();

    // The next run's only test needs the first golden; its process starts the other's keeper
    // too, and exits without waiting for it to serve: the keeper holds the lock that keeps a
    // second keeper from starting until it serves. Held back here by the other golden's lock
    // (a rebuild's), which it takes to copy the golden.
    let flock = |path: PathBuf, operation| {
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), operation) };
        (file, locked == 0)
    };
    let golden_lock = root.join("golden").join(format!("{other_key}.lock"));
    let (rebuild, locked) = flock(golden_lock, libc::LOCK_EX | libc::LOCK_NB);
    assert!(locked);
    let second = run(&["helpers::entry"], "run-2");
    let other_start = root.join("shared").join(format!("{other_key}.start"));
    let (_, free) = flock(other_start, libc::LOCK_EX | libc::LOCK_NB);
    assert!(!free, "the other golden's keeper holds its start lock");
    assert_eq!(
        serving().len(),
        1,
        "the other golden's keeper does not serve yet"
    );
    drop(rebuild);
    let both = || {
        let serving = serving().len();
        (serving == 2)
            .then_some(())
            .ok_or(format!("{serving} serving"))
    };
    wait_for(both, Duration::from_secs(15));
    assert_eq!(support::servers_under(&root).len(), 2);
    over(second);
}

/// Under nextest, a wrapper that nextest runs each test process through (a target runner, a
/// wrapper script) ends with its test: the run's server does not, and serves the next test.
#[test]
fn a_nextest_runs_server_outlives_the_wrappers_of_its_tests() {
    let root = support::unique_root("wrapped-tests");
    let dir = migrations(&root);
    // Each test process in a wrapper `sh` of its own, then a pause longer than a keeper takes
    // to see that its runner is gone and to stop.
    let wrapper = "sh -c '\"$@\"; true' wrapper";
    let entries = ["helpers::entry", "helpers::entry"];
    let (runner, reports) = nextest_run(&root, &dir, &entries, "a-run", wrapper, &[]);
    let servers: Vec<&str> = reports
        .iter()
        .map(|report| {
            report
                .split(' ')
                .nth(2)
                .expect("RESULT <pid> <server dir> <db>")
        })
        .collect();
    assert_eq!(
        servers[0], servers[1],
        "the second test process uses the first one's server"
    );
    let serving = serving_servers(&root);
    assert_eq!(serving.len(), 1, "one server for the run");
    // The keeper watches the runner, not the first test process's wrapper: its PGCLONE_KEEPER is
    // `<golden key> <runner's pid> <runner's start time>`.
    let text = std::fs::read_to_string(&serving[0]).unwrap();
    let keeper: u32 = text.split_whitespace().next().unwrap().parse().unwrap();
    let environ = std::fs::read(format!("/proc/{keeper}/environ")).unwrap();
    let asked = environ
        .split(|b| *b == 0)
        .find_map(|entry| entry.strip_prefix(b"PGCLONE_KEEPER="))
        .map(|value| String::from_utf8_lossy(value).into_owned())
        .expect("the keeper's PGCLONE_KEEPER");
    let watched = asked.split(' ').nth(1).unwrap_or_default();
    assert_eq!(watched, runner.0.id().to_string(), "PGCLONE_KEEPER={asked}");
    run_is_over(&root, runner);
}

/// A keeper started for a golden its test no longer uses (the recipe changed since the run that
/// recorded it, `ahead.rs`) says so and exits before anything is built.
#[test]
fn a_keeper_for_a_golden_its_test_no_longer_uses_builds_nothing() {
    let root = support::unique_root("stale-keeper");
    let dir = migrations(&root);
    let mut keeper = helper_on("share_template", &root, &dir);
    keeper
        .env("NEXTEST_RUN_ID", "a-run")
        .env("PGCLONE_KEEPER", "0123456789abcdef 1 1");
    let output = keeper.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("asked to serve golden 0123456789abcdef, but this test uses"),
        "{stderr}"
    );
    assert_eq!(build_log(&root), Vec::new(), "nothing was built");
}

/// A nextest run, as nextest makes it: a runner (`sh`, not in the run, with `env`) runs the
/// test processes `entries` of the helper `share_template` one after another, each through
/// `wrapper` (a command, or nothing) and half a second apart, then lives until its stdin closes.
/// Returns it and the processes' reports (`RESULT <pid> <server dir> <db>`).
fn nextest_run(
    root: &Path,
    dir: &Path,
    entries: &[&str],
    run_id: &str,
    wrapper: &str,
    env: &[(&str, &Path)],
) -> (support::KilledOnDrop, Vec<String>) {
    let helper = helper_on("share_template", root, dir);
    let script: String = entries
        .iter()
        .map(|entry| {
            format!("NEXTEST_RUN_ID={run_id} {wrapper} \"$0\" {entry} --exact --ignored --nocapture -q; sleep 0.5; ")
        })
        .collect();
    let mut runner = Command::new("sh");
    runner
        .args(["-c", &format!("{script}echo DONE; read _")])
        .arg(helper.get_program())
        .envs(helper.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .envs(env.iter().copied())
        .env_remove("NEXTEST_RUN_ID")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut runner = support::KilledOnDrop(runner.spawn().unwrap());
    let stdout = std::io::BufReader::new(runner.0.stdout.take().unwrap());
    // Up to the runner's DONE: a test process that fails without a report does not hang this.
    let reports: Vec<String> = std::io::BufRead::lines(stdout)
        .map_while(Result::ok)
        .take_while(|line| line != "DONE")
        .filter(|line| line.starts_with("RESULT "))
        .collect();
    assert_eq!(reports.len(), entries.len(), "a test process failed");
    (runner, reports)
}

/// The `.server` files under `root`: a shared server each.
fn serving_servers(root: &Path) -> Vec<PathBuf> {
    let files = std::fs::read_dir(root.join("shared")).unwrap().flatten();
    let files = files.map(|entry| entry.path());
    files
        .filter(|path| path.extension().is_some_and(|e| e == "server"))
        .collect()
}

/// Ends a run made by [`nextest_run`] and waits for its servers and their clones to go.
fn run_is_over(root: &Path, mut runner: support::KilledOnDrop) {
    drop(runner.0.stdin.take());
    let gone = || {
        let servers = support::servers_under(root);
        let clones = std::fs::read_dir(root.join("clones")).unwrap().count();
        let serving = serving_servers(root).len();
        (servers.is_empty() && clones == 0 && serving == 0)
            .then_some(())
            .ok_or(format!(
                "servers {servers:?}, {clones} clone directories, {serving} .server files"
            ))
    };
    wait_for(gone, Duration::from_secs(15));
}

/// Under nextest, a run's processes use the PostgreSQL binaries its first process found: the
/// others, and the keeper of the run's server, do not search again (nor run
/// `postgres --version`); the next run does.
#[test]
fn a_nextest_runs_processes_search_for_the_binaries_once() {
    use std::os::unix::fs::PermissionsExt;
    let root = support::unique_root("run-binaries");
    let dir = migrations(&root);
    // The real binaries, but a `postgres` that notes each `--version` asked of it.
    let real = pgclone::server::PgBinaries::find().unwrap();
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for entry in std::fs::read_dir(real.bin_dir()).unwrap().flatten() {
        if entry.file_name() != "postgres" {
            std::os::unix::fs::symlink(entry.path(), bin.join(entry.file_name())).unwrap();
        }
    }
    let probes = root.join("probes");
    let postgres = bin.join("postgres");
    std::fs::write(
        &postgres,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo probed >> '{}'; fi\nexec '{}' \"$@\"\n",
            probes.display(),
            real.program("postgres").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&postgres, std::fs::Permissions::from_mode(0o755)).unwrap();
    let probed = || {
        let text = std::fs::read_to_string(&probes).unwrap_or_default();
        text.lines().count()
    };
    let pg_bin = [("PGCLONE_PG_BIN", bin.as_path())];
    let entries = ["helpers::entry", "helpers::entry"];

    // Built first, apart: a build asks the version of the binaries again.
    let (runner, _) = nextest_run(&root, &dir, &entries[..1], "run-0", "", &pg_bin);
    run_is_over(&root, runner);
    let before = probed();

    let (runner, reports) = nextest_run(&root, &dir, &entries, "run-1", "", &pg_bin);
    assert_eq!(serving_servers(&root).len(), 1, "a keeper serves the run");
    assert_eq!(reports.len(), 2);
    assert_eq!(
        probed(),
        before + 1,
        "only the run's first process asks the binaries' version; its keeper and the second process use what it found"
    );
    run_is_over(&root, runner);
    let (runner, _) = nextest_run(&root, &dir, &entries[..1], "run-2", "", &pg_bin);
    assert_eq!(probed(), before + 2, "the next run asks again");
    run_is_over(&root, runner);
}

/// SIGKILLs a process when dropped (it may be gone already).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}

/// Polls `check` until it passes, or fails the test with its last complaint after `limit`.
fn wait_for(check: impl Fn() -> Result<(), String>, limit: Duration) {
    let started = std::time::Instant::now();
    loop {
        match check() {
            Ok(()) => return,
            Err(why) if started.elapsed() > limit => panic!("after {limit:?}: {why}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// `PGCLONE_MODE` sets the mode of tests that name none; without it, a `TestDb` test gets
/// cluster mode and a sqlx test database mode (under nextest too, where the run's processes
/// share the template server); a value that is not a mode fails the test.
#[test]
fn pgclone_mode_sets_the_mode_of_tests_that_name_none() {
    let run = |mode: Option<&str>| {
        let mut cmd = support::helper("report_modes");
        cmd.env_remove("NEXTEST_RUN_ID");
        match mode {
            Some(mode) => cmd.env("PGCLONE_MODE", mode),
            None => cmd.env_remove("PGCLONE_MODE"),
        };
        helper_result(cmd)
    };
    assert_eq!(run(None), "cluster database");
    let mut nextest = support::helper("report_modes");
    nextest
        .env("NEXTEST_RUN_ID", "a-run")
        .env_remove("PGCLONE_MODE");
    assert_eq!(helper_result(nextest), "cluster database");
    assert_eq!(run(Some("database")), "database database");
    assert_eq!(run(Some("cluster")), "cluster cluster");
    let bad = run(Some("both"));
    assert!(
        bad.starts_with("PANIC")
            && bad.contains("PGCLONE_MODE=\"both\" is not cluster or database"),
        "{bad}"
    );
}
