//! The `pgclone` command, end to end.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pgclone::server::TempCluster;

fn pgclone(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgclone"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[path = "../../tests/common/mod.rs"]
mod common;
use common::{files_under, process_runs, reflink_required, wait_until_gone};

/// A root of its own under PGCLONE_DIR (CI points it at XFS or ext4), removed if the test passes.
fn test_root(name: &str) -> common::TestRoot {
    common::test_root(&format!("cli-{name}"))
}

fn query(socket_dir: &str, port: u64, sql: &str) -> String {
    let url = format!(
        "postgresql://postgres@{}:{port}/postgres",
        socket_dir.replace('/', "%2F")
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let rows = client.simple_query(sql).await.unwrap();
        rows.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
                _ => None,
            })
            .unwrap_or_default()
    })
}

fn running_source(root: &Path) -> TempCluster {
    let source = TempCluster::builder().root(root).start().unwrap();
    let server = source.server();
    query(
        &server.socket_dir().display().to_string(),
        server.port() as u64,
        "create table t as select 42 as answer",
    );
    source
}

#[test]
fn clone_of_a_running_cluster_with_start_leaves_a_running_clone_and_reports_as_json() {
    let root = test_root("start");
    let source = running_source(&root);
    let target = root.join("clone");
    let data = source.data_dir();
    let output = pgclone(&[
        "clone",
        data.to_str().unwrap(),
        target.to_str().unwrap(),
        "--start",
        "--json",
        "--dir",
        root.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert!(report["files"].as_u64().unwrap() > 100, "{report}");
    assert!(
        report["start_lsn"].as_str().unwrap().contains('/'),
        "{report}"
    );
    assert!(report["wal_segments"].as_u64().unwrap() >= 1);
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps.first(), Some(&"placeholder label"));
    assert_eq!(steps.last(), Some(&"pg_control"));
    if reflink_required() {
        assert_eq!(report["method"], "reflink", "{report}");
        assert_eq!(report["bytes_shared"], report["bytes"], "{report}");
    }

    // The clone outlives the command that started it.
    let server = &report["server"];
    let pid = u32::try_from(server["pid"].as_u64().unwrap()).unwrap();
    assert!(process_runs(pid));
    let socket_dir = server["socket_dir"].as_str().unwrap();
    let port = server["port"].as_u64().unwrap();
    assert_eq!(query(socket_dir, port, "select answer::text from t"), "42");
    assert!(Path::new(server["log"].as_str().unwrap()).starts_with(&target));

    // Stopped as the command said: SIGINT (fast shutdown).
    Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(wait_until_gone(pid, std::time::Duration::from_secs(10)));
    assert_eq!(
        std::fs::read_dir(root.join("unfinished")).unwrap().count(),
        0,
        "finished clones leave no record"
    );
}

/// The started clone's log is inside the clone: removing the clone leaves nothing beside it.
#[test]
fn clone_with_start_keeps_the_server_log_inside_the_clone() {
    let root = test_root("log");
    let source = running_source(&root);
    let target = root.join("clone");
    let output = pgclone(&[
        "clone",
        source.data_dir().to_str().unwrap(),
        target.to_str().unwrap(),
        "--start",
        "--dir",
        root.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let line = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{text}"))
            .trim()
            .to_string()
    };
    let pid: u32 = line("started     pid ")
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let log = std::path::PathBuf::from(line("log "));
    let stop = line("stop ");

    // Stop it as the command says, then read the log.
    assert!(stop.contains(&format!("kill -INT {pid}")), "{stop}");
    Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(wait_until_gone(pid, std::time::Duration::from_secs(10)));
    assert!(
        log.starts_with(&target),
        "{} is outside the clone",
        log.display()
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("ready to accept connections"),
        "the server wrote its log there:\n{logged}"
    );

    std::fs::remove_dir_all(&target).unwrap();
    // (`clones` holds the source.)
    let left: Vec<_> = std::fs::read_dir(&*root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name != "clones" && name.to_string_lossy().starts_with("clone"))
        .collect();
    assert!(left.is_empty(), "the clone left {left:?} beside it");
}

#[test]
fn clone_of_a_stopped_cluster_prints_method_files_and_steps() {
    let root = test_root("stopped");
    let data = running_source(&root).keep().unwrap().join("data");
    let target = root.join("clone");
    let output = pgclone(&[
        "clone",
        data.to_str().unwrap(),
        target.to_str().unwrap(),
        "--dir",
        root.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for expected in [
        "cloned ",
        "method ",
        "files ",
        "shared",
        "copy files",
        "total ",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(
        !text.contains("start LSN"),
        "an offline clone has no backup:\n{text}"
    );
    assert!(target.join("global/pg_control").exists());
}

#[test]
fn bad_input_is_a_clear_error_and_a_failure_exit() {
    let root = test_root("bad");
    let source = running_source(&root);
    let data = source.data_dir();

    let full = root.join("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("x"), "").unwrap();
    let output = pgclone(&[
        "clone",
        data.to_str().unwrap(),
        full.to_str().unwrap(),
        "--dir",
        root.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("is not empty"),
        "{}",
        stderr(&output)
    );

    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let elsewhere = shm.path().join("clone");
    let output = pgclone(&[
        "clone",
        data.to_str().unwrap(),
        elsewhere.to_str().unwrap(),
        "--dir",
        root.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("--allow-copy"),
        "{}",
        stderr(&output)
    );
    assert!(!elsewhere.exists());

    let output = pgclone(&[
        "clone",
        "/nonexistent",
        root.join("t").to_str().unwrap(),
        "--dir",
        root.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("not a PostgreSQL data directory"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn doctor_names_binaries_file_system_and_methods() {
    let root = test_root("doctor");
    let output = pgclone(&["doctor", root.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for expected in [
        "postgres ",
        "directory ",
        "FICLONE ",
        "copy_file_range ",
        "cluster mode ",
        "database mode ",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    if reflink_required() {
        assert!(text.contains("cluster mode     reflink"), "{text}");
    }
}

#[test]
fn gc_removes_kept_clones_only_when_asked() {
    let root = test_root("gc");
    let kept = TempCluster::builder()
        .root(&root)
        .start()
        .unwrap()
        .keep()
        .unwrap();
    let output = pgclone(&["gc", "--dir", root.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(kept.exists(), "a kept clone survives a plain gc");
    let output = pgclone(&["gc", "--kept", "--dir", root.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("removed clone"),
        "{}",
        stdout(&output)
    );
    assert!(!kept.exists());
}

#[test]
fn relative_paths_work_and_a_running_source_is_cloned_online() {
    let root = test_root("relative");
    let source = running_source(&root);
    let relative_source = source.data_dir().strip_prefix(&root).unwrap().to_path_buf();
    let output = Command::new(env!("CARGO_BIN_EXE_pgclone"))
        .current_dir(&root)
        .args([
            "clone",
            relative_source.to_str().unwrap(),
            "clone",
            "--json",
            "--dir",
            root.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert!(
        report["start_lsn"].is_string(),
        "a running source given by a relative path is cloned online: {report}"
    );
    assert!(root.join("clone/global/pg_control").exists());
}

/// `pgclone serve`: the URL on stdout reaches a copy holding the migrations (recorded as sqlx
/// records them) and the SQL files; Ctrl-C stops the server and removes the copy.
#[test]
fn serve_prints_a_working_url_and_ctrl_c_removes_the_copy() {
    use std::io::{BufRead, BufReader};
    let root = test_root("serve");
    let project = tempfile::tempdir().unwrap();
    let migrations = project.path().join("migrations");
    std::fs::create_dir(&migrations).unwrap();
    std::fs::write(
        migrations.join("1_notes.sql"),
        "create table notes (body text)",
    )
    .unwrap();
    std::fs::write(
        project.path().join("seed.sql"),
        "insert into notes values ('hi')",
    )
    .unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_pgclone"))
        .args(["serve", "--sql-file", "seed.sql"]) // ./migrations by default
        .current_dir(project.path())
        .env("PGCLONE_DIR", &root)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("DATABASE_URL=")
        .unwrap_or_else(|| panic!("not a DATABASE_URL line: {line:?}"))
        .to_string();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (body, version) = rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let body: String = client
            .query_one("select body from notes", &[])
            .await
            .unwrap()
            .get(0);
        let version: i64 = client
            .query_one("select version from _sqlx_migrations", &[])
            .await
            .unwrap()
            .get(0);
        (body, version)
    });
    assert_eq!((body.as_str(), version), ("hi", 1));

    let clones = root.join("clones");
    let copies = || std::fs::read_dir(&clones).unwrap().count();
    assert_eq!(copies(), 1, "the served copy");
    let interrupt = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupt.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(copies(), 0, "Ctrl-C removed the copy");
}

/// A source whose pg_hba.conf asks for a SCRAM password on its socket: without one the clone
/// fails saying where libpq looks, leaving no target; with `PGPASSWORD`, or a private password
/// file named by `PGPASSFILE`, it is cloned online; the source keeps no slot and no session.
#[test]
fn a_source_asking_for_a_password_is_reached_through_pgpassword_or_a_password_file() {
    let root = test_root("password");
    let source = TempCluster::builder()
        .root(&root)
        .with(|o| o.tcp(true))
        .start()
        .unwrap();
    let server = source.server();
    let socket_dir = server.socket_dir().display().to_string();
    let port = server.port() as u64;
    let hba = source.data_dir().join("pg_hba.conf");
    std::fs::write(
        &hba,
        "local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    query(&socket_dir, port, "select pg_reload_conf()");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let without_password = format!(
        "postgresql://postgres@{}:{port}/postgres",
        socket_dir.replace('/', "%2F")
    );
    // The reload is asynchronous: wait until the socket asks for the password.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while rt
        .block_on(tokio_postgres::connect(
            &without_password,
            tokio_postgres::NoTls,
        ))
        .is_ok()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "pg_hba.conf not reloaded"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let home = tempfile::tempdir().unwrap();
    let clone_to = |target: &str, env: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pgclone"));
        command
            .args(["clone", source.data_dir().to_str().unwrap()])
            .arg(root.join(target))
            .args(["--json", "--dir", root.to_str().unwrap()])
            .env("HOME", home.path())
            .env_remove("PGPASSWORD")
            .env_remove("PGPASSFILE")
            .env_remove("PGUSER");
        for (name, value) in env {
            command.env(name, value);
        }
        command.output().unwrap()
    };

    let refused = clone_to("no-password", &[]);
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(
        message.contains("asks for a password")
            && message.contains("PGPASSWORD")
            && message.contains(".pgpass"),
        "{message}"
    );
    assert!(!root.join("no-password").exists(), "no target left");

    let with_variable = clone_to("by-variable", &[("PGPASSWORD", source.password())]);
    assert!(with_variable.status.success(), "{}", stderr(&with_variable));
    let report: serde_json::Value = serde_json::from_str(&stdout(&with_variable)).unwrap();
    assert!(report["start_lsn"].is_string(), "cloned online: {report}");

    let passfile = home.path().join("passwords");
    std::fs::write(
        &passfile,
        format!(
            "{socket_dir}:{port}:postgres:postgres:{}\n",
            source.password()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let with_file = clone_to("by-file", &[("PGPASSFILE", passfile.to_str().unwrap())]);
    assert!(with_file.status.success(), "{}", stderr(&with_file));
    assert!(root.join("by-file/global/pg_control").exists());

    let url = source.connection_string();
    let (slots, sessions) = rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let count = |sql: &'static str| {
            let client = &client;
            async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
        };
        (
            count("select count(*) from pg_replication_slots").await,
            count("select count(*) from pg_stat_activity where application_name = 'pgclone clone'")
                .await,
        )
    });
    assert_eq!((slots, sessions), (0, 0), "the source is left clean");
}

#[test]
fn golden_key_prints_one_key_for_the_goldens_a_test_command_records() {
    // A stand-in for a test run: what `#[pgclone::test]`s append in PGCLONE_GOLDEN_KEYS mode.
    let record = r#"printf '1111 app\n2222 (base)\n1111 app\n' >> "$PGCLONE_GOLDEN_KEYS""#;
    let listed = pgclone(&["golden", "key", "--list", "--", "sh", "-c", record]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert_eq!(stdout(&listed), "1111 app\n2222 (base)\n");

    let key = pgclone(&["golden", "key", "--", "sh", "-c", record]);
    let key = stdout(&key);
    assert_eq!(key.trim().len(), 16, "{key}");
    assert!(key.trim().chars().all(|c| c.is_ascii_hexdigit()));
    let other = pgclone(&[
        "golden",
        "key",
        "--",
        "sh",
        "-c",
        &record.replace("1111", "3333"),
    ]);
    assert_ne!(stdout(&other), key, "another golden, another key");

    let failed = pgclone(&["golden", "key", "--", "false"]);
    assert!(!failed.status.success());
    assert!(
        stderr(&failed).contains("`false` failed"),
        "{}",
        stderr(&failed)
    );
}

/// A stock Debian/Ubuntu cluster made by `pg_createcluster`, removed with `pg_dropcluster` when
/// this value drops.
struct DebianCluster {
    name: String,
    port: u16,
}

impl DebianCluster {
    fn create() -> DebianCluster {
        let cluster = DebianCluster {
            name: format!("pgclone{}", std::process::id()),
            port: portpicker::pick_unused_port().unwrap(),
        };
        let port = cluster.port.to_string();
        let status = Command::new("pg_createcluster")
            .args(["15", &cluster.name, "-p", &port, "--start"])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_createcluster");
        cluster
    }

    fn data_dir(&self) -> PathBuf {
        PathBuf::from(format!("/var/lib/postgresql/15/{}", self.name))
    }

    fn config_dir(&self) -> PathBuf {
        PathBuf::from(format!("/etc/postgresql/15/{}", self.name))
    }

    /// psql as the postgres user (peer authentication), one value.
    fn psql(socket_dir: &str, port: u16, sql: &str) -> String {
        let output = Command::new("runuser")
            .args(["-u", "postgres", "--", "psql", "-XAtq", "-h", socket_dir])
            .args(["-p", &port.to_string(), "-c", sql])
            .output()
            .unwrap();
        assert!(output.status.success(), "{sql}: {}", stderr(&output));
        stdout(&output).trim().to_string()
    }

    fn query(&self, sql: &str) -> String {
        Self::psql("/var/run/postgresql", self.port, sql)
    }
}

impl Drop for DebianCluster {
    fn drop(&mut self) {
        let _ = Command::new("pg_dropcluster")
            .args(["15", &self.name, "--stop"])
            .status();
    }
}

#[test]
fn root_clones_a_stock_debian_cluster_as_its_owner_and_the_clone_uses_its_own_config() {
    if !rustix::process::geteuid().is_root() {
        // pg_createcluster and peer authentication as another user need root; CI runs as root
        // and says so, so there this is never skipped.
        assert_ne!(
            std::env::var("PGCLONE_TEST_REQUIRE_ROOT").as_deref(),
            Ok("1")
        );
        return;
    }
    let source = DebianCluster::create();
    source.query("create table t as select generate_series(1, 42) as x");
    let config_before = files_under(&source.config_dir());

    let root = test_root("debian");
    let dst = root.join("clone");
    // What doctor says of the pair first: online, peer as the owner, the configuration outside.
    let doctor = Command::new(env!("CARGO_BIN_EXE_pgclone"))
        .args([
            "doctor",
            source.data_dir().to_str().unwrap(),
            dst.to_str().unwrap(),
        ])
        .arg("--allow-copy")
        .env_remove("PGCLONE_PG_BIN")
        .output()
        .unwrap();
    let said = stdout(&doctor);
    for expected in [
        "an online clone",
        "PostgreSQL 15.",
        "identity (peer): connected",
        "outside the data directory",
        "verdict          the clone would work",
    ] {
        assert!(
            said.contains(expected),
            "{expected:?} in:\n{said}{}",
            stderr(&doctor)
        );
    }
    // As a DBA would: no PGCLONE_PG_BIN, the binaries of the source's major are found.
    let output = Command::new(env!("CARGO_BIN_EXE_pgclone"))
        .args([
            "clone",
            source.data_dir().to_str().unwrap(),
            dst.to_str().unwrap(),
        ])
        // --allow-copy: CI's test directory may be on another file system (its XFS mount).
        .args(["--start", "--json", "--allow-copy"])
        .env_remove("PGCLONE_PG_BIN")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    let server = &report["server"];
    let (pid, socket_dir, port) = (
        server["pid"].as_u64().unwrap() as u32,
        server["socket_dir"].as_str().unwrap().to_string(),
        server["port"].as_u64().unwrap() as u16,
    );
    assert!(server["version"].as_str().unwrap().starts_with("15."));

    let facts = DebianCluster::psql(
        &socket_dir,
        port,
        "select (select count(*) from t) || ' ' || current_setting('config_file') || ' ' || current_setting('hba_file') \
         || ' ' || current_setting('data_directory') || ' ' || pg_is_in_recovery()",
    );
    let dst_text = dst.display();
    assert_eq!(
        facts,
        format!("42 {dst_text}/postgresql.conf {dst_text}/pg_hba.conf {dst_text} false")
    );
    // Writable, and not the source.
    DebianCluster::psql(&socket_dir, port, "insert into t values (43)");
    assert_eq!(source.query("select count(*) from t"), "42");

    // The source: no slot left, no backup running, its configuration untouched.
    assert_eq!(
        source.query("select count(*) from pg_replication_slots"),
        "0"
    );
    assert_eq!(
        source.query("select count(*) from pg_stat_activity where backend_type = 'walsender'"),
        "0"
    );
    assert!(files_under(&source.config_dir()) == config_before);

    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    assert!(wait_until_gone(pid, std::time::Duration::from_secs(20)));
}

/// Sends `signal` (`-STOP`, `-INT`, ...) to `pid`.
fn signal(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// `pgclone clone SOURCE DST ARGS`, held at its connection to the source: the source's
/// postmaster is stopped (SIGSTOP) before, and this returns once the clone wrote its first step,
/// the placeholder `backup_label`. The caller continues the postmaster (`-CONT`).
fn clone_held_at_connect(
    source: &TempCluster,
    dst: &Path,
    args: &[&str],
    stderr: std::process::Stdio,
) -> std::process::Child {
    signal("-STOP", source.server().pid());
    let child = Command::new(env!("CARGO_BIN_EXE_pgclone"))
        .args([
            "clone",
            source.data_dir().to_str().unwrap(),
            dst.to_str().unwrap(),
        ])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !dst.join("backup_label").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the clone never began"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child
}

#[test]
fn ctrl_c_during_a_clone_removes_the_partial_target_and_exits_130() {
    use std::io::BufRead;
    let root = test_root("interrupt");
    let source = running_source(&root);
    let server = source.server();
    let (socket_dir, port) = (
        server.socket_dir().display().to_string(),
        server.port() as u64,
    );
    let dst = root.join("clone");
    // Held at its connection: the signal surely comes before the copy.
    let mut child = clone_held_at_connect(
        &source,
        &dst,
        &["--checkpoint", "fast"],
        std::process::Stdio::piped(),
    );
    signal("-INT", child.id());
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let heard = lines
        .by_ref()
        .map(Result::unwrap)
        .find(|l| l.contains("interrupted"));
    assert!(heard.is_some(), "pgclone says it heard the signal");
    signal("-CONT", server.pid());
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.contains("partial clone") && l.contains("is removed")),
        "{rest:?}"
    );
    assert!(!dst.exists(), "the partial target is gone");
    assert_eq!(
        query(
            &socket_dir,
            port,
            "select count(*)::text from pg_replication_slots"
        ),
        "0"
    );
}

#[test]
fn after_a_killed_clone_the_next_call_names_what_is_left_and_gc_removes_it() {
    let root = test_root("killed-clone");
    let source = running_source(&root);
    let server = source.server();
    let dst = root.join("clone");
    let dir = root.join("pgclone");
    // Held at its connection, after the placeholder: then SIGKILL.
    let mut child = clone_held_at_connect(
        &source,
        &dst,
        &["--dir", dir.to_str().unwrap()],
        std::process::Stdio::null(),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    signal("-CONT", server.pid());

    let next = pgclone(&[
        "clone",
        "/nonexistent/source",
        root.join("other").to_str().unwrap(),
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert!(
        stderr(&next).contains(&format!("left {}", dst.display()))
            && stderr(&next).contains("pgclone gc"),
        "{}",
        stderr(&next)
    );
    let gc = pgclone(&["gc", "--dir", dir.to_str().unwrap()]);
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(!dst.exists(), "gc removed the unfinished clone");
}

#[test]
fn doctor_explains_a_pair_and_what_would_refuse_it() {
    let root = test_root("doctor-pair");
    let source = running_source(&root);
    let busy = root.join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("x"), "").unwrap();
    let output = pgclone(&[
        "doctor",
        source.data_dir().to_str().unwrap(),
        busy.to_str().unwrap(),
    ]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "a clone that would fail fails the check: {}",
        stderr(&output)
    );
    let said = stdout(&output);
    for expected in [
        "running (postmaster pid",
        "connection",
        "connected",
        "refused          ",
        "exists and is not empty",
        "verdict          the clone would fail",
    ] {
        assert!(said.contains(expected), "{expected:?} in:\n{said}");
    }
    let fresh = root.join("fresh");
    let output = pgclone(&[
        "doctor",
        source.data_dir().to_str().unwrap(),
        fresh.to_str().unwrap(),
    ]);
    assert!(
        stdout(&output).contains("verdict          the clone would work"),
        "{}",
        stdout(&output)
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!fresh.exists(), "doctor made nothing");
}
