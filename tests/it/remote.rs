//! Database mode on a server given by `PGCLONE_URL`, against a server each test starts itself:
//! over TCP, SCRAM authentication, as a role that has CREATEDB and nothing more. The tests run
//! pgclone in helper processes (the URL is read from the environment).

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use pgclone::server::TempCluster;
use pgclone::{Golden, Method, Mode, TestDb};

use crate::support::{
    self, execute, helper, helper_result, query_text, result_of, KilledOnDrop, TestRoot,
};

/// A password with characters a URL must percent-encode.
const PASSWORD: &str = "s3:cr/et@x";
const PASSWORD_IN_URL: &str = "s3%3Acr%2Fet%40x";

/// A server reached over TCP with SCRAM, with a CREATEDB-only role `app`.
struct UrlServer {
    cluster: TempCluster,
    _root: TestRoot,
    migrations: PathBuf,
}

impl UrlServer {
    fn start(name: &str, max_connections: u32) -> UrlServer {
        let root = support::unique_root(name);
        let cluster = TempCluster::builder()
            .root(root.join("server"))
            .with(|options| {
                options
                    .tcp(true)
                    .setting("max_connections", max_connections.to_string())
            })
            .start()
            .unwrap();
        execute(
            &cluster.connection_string(),
            &format!("create role app login createdb password '{PASSWORD}'"),
        );
        let migrations = root.join("migrations");
        std::fs::create_dir_all(&migrations).unwrap();
        std::fs::write(
            migrations.join("0001_init.sql"),
            "create table t(x int); insert into t select generate_series(1, 7);",
        )
        .unwrap();
        UrlServer {
            cluster,
            _root: root,
            migrations,
        }
    }

    /// `PGCLONE_URL` for role `app`.
    fn url(&self) -> String {
        format!(
            "postgresql://app:{PASSWORD_IN_URL}@127.0.0.1:{}/postgres",
            self.cluster.port()
        )
    }

    /// A helper process running `task` against this server.
    fn helper(&self, task: &str) -> Command {
        let mut cmd = helper(task);
        cmd.env("PGCLONE_URL", self.url())
            .env("PGCLONE_IT_MIGRATIONS", &self.migrations)
            // Nothing local is needed: a directory that cannot exist proves it.
            .env("PGCLONE_PG_BIN", "/nonexistent/pgclone-no-binaries")
            .env_remove("NEXTEST_RUN_ID");
        cmd
    }

    /// Runs `sql` as the superuser and returns the first column of the first row.
    fn value(&self, dbname: &str, sql: &str) -> String {
        query_text(&self.cluster.connection_string_for(dbname), sql)
    }

    fn test_databases(&self) -> Vec<String> {
        self.names("select coalesce(string_agg(datname, ' ' order by datname), '') from pg_database where datname like 'pgclone\\_test\\_%' or datname like 'pgclone\\_build\\_%'")
    }

    fn goldens(&self) -> Vec<String> {
        self.names("select coalesce(string_agg(datname, ' ' order by datname), '') from pg_database where datname like 'pgclone\\_golden\\_%'")
    }

    fn names(&self, sql: &str) -> Vec<String> {
        self.value("postgres", sql)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }
}

fn counting_golden() -> Golden {
    Golden::new("counting").migrations(std::env::var("PGCLONE_IT_MIGRATIONS").unwrap())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

/// Helper: 16 tests at once in one process, each writing into its own copy.
pub fn remote_isolation() -> String {
    runtime().block_on(async {
        let tasks = (0..16).map(|i| {
            tokio::spawn(async move {
                // The local-case API, unchanged: database mode on the server of PGCLONE_URL.
                let db = TestDb::start(&counting_golden()).await.unwrap();
                let client = db.connect().await.unwrap(); // through connection_string()
                client
                    .execute("insert into t values ($1)", &[&(100 + i)])
                    .await
                    .unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let n = support::rows_in_t(&db).await;
                let facts = format!("{} {} {}", db.host(), db.user(), db.method());
                let name = db.dbname().to_string();
                drop(client);
                db.close().await.unwrap();
                (n, name, facts)
            })
        });
        let mut names = HashSet::new();
        let mut report = Vec::new();
        for task in tasks {
            let (n, name, facts) = task.await.unwrap();
            names.insert(name);
            report.push(format!("{n}"));
            report.push(facts);
        }
        report.sort();
        report.dedup();
        // Every connection slot this process took is free again (none taken twice and left).
        let db = TestDb::start(&counting_golden()).await.unwrap();
        let slots: i64 = db
            .client()
            .query_one(
                "select count(*) from pg_locks where locktype = 'advisory' and classid = 1885823747",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        format!(
            "OK {} distinct; {}; {slots} slot held by the last",
            names.len(),
            report.join("; ")
        )
    })
}

/// Helper: one test's copy; reports the rows it sees.
pub fn remote_acquire() -> String {
    runtime().block_on(async {
        match TestDb::start(&counting_golden()).await {
            Ok(db) => {
                let n = support::rows_in_t(&db).await;
                format!("OK {n}")
            }
            Err(e) => format!("ERR {:?} {e} {e:?}", e.kind()),
        }
    })
}

/// Helper: holds a copy with five connections open for a while (a test with a pool).
pub fn remote_hold_connections() -> String {
    runtime().block_on(async {
        let db = match TestDb::start(&counting_golden()).await {
            Ok(db) => db,
            Err(e) => return format!("ERR {e}"),
        };
        let mut clients = Vec::new();
        for _ in 0..4 {
            match db.connect().await {
                Ok(client) => clients.push(client),
                Err(e) => return format!("ERR {e}"),
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        for client in &clients {
            client
                .execute("insert into t values (0)", &[])
                .await
                .unwrap();
        }
        "OK".to_string()
    })
}

/// Helper: a golden with a list setting; what a test's database says of it.
pub fn remote_settings() -> String {
    let golden = Golden::new("settings")
        .sql("create schema app; create table app.t2(x int); insert into app.t2 values (1)")
        .setting("search_path", "app, public");
    runtime().block_on(async {
        let db = TestDb::start(&golden).await.unwrap();
        let row = db
            .client()
            .query_one(
                "select count(*)::text, current_setting('search_path') from t2",
                &[],
            )
            .await
            .unwrap();
        format!("{} | {}", row.get::<_, String>(0), row.get::<_, String>(1))
    })
}

/// Helper: holds a copy until killed; reports its database's name.
pub fn remote_hold() -> String {
    let db = runtime()
        .block_on(TestDb::start(&counting_golden()))
        .unwrap();
    crate::helpers::report_and_wait_to_be_killed(db.dbname());
}

/// Helper: what a test that needs local binaries gets.
pub fn remote_needs_local() -> String {
    runtime().block_on(async {
        let cluster = TestDb::builder(&counting_golden())
            .mode(Mode::Cluster)
            .start()
            .await
            .err()
            .map(|e| format!("{:?} {e}", e.kind()));
        let db = TestDb::start(&counting_golden()).await.unwrap();
        let fork = db.fork().await.err().map(|e| format!("{:?} {e}", e.kind()));
        format!("{cluster:?} | {fork:?} | {db:?}")
    })
}

fn run_helpers(server: &UrlServer, task: &str, n: usize) -> Vec<std::process::Output> {
    let children: Vec<_> = (0..n)
        .map(|_| {
            server
                .helper(task)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|child| child.wait_with_output().unwrap())
        .collect()
}

#[test]
fn sixteen_concurrent_tests_each_get_an_isolated_database_and_none_is_left() {
    let server = UrlServer::start("url-isolation", 100);
    let report = helper_result(server.helper("remote_isolation"));
    assert_eq!(
        report,
        format!(
            "OK 16 distinct; 127.0.0.1 app {}; 8; 1 slot held by the last",
            Method::CreateDatabaseWalLog
        ),
        "each saw the golden's 7 rows and its own one, on the server of PGCLONE_URL"
    );
    assert_eq!(server.test_databases(), Vec::<String>::new());
    assert_eq!(server.goldens().len(), 1);
    assert_eq!(
        server.value("pgclone", "select count(*)::text from databases"),
        "0"
    );
    // Nothing of it was made as a superuser: the golden belongs to the CREATEDB role.
    let owner = server.value(
        "postgres",
        "select pg_get_userbyid(datdba)::text from pg_database where datname like 'pgclone\\_golden\\_%'",
    );
    assert_eq!(owner, "app");
}

#[test]
fn eight_processes_build_the_golden_once_and_a_recipe_change_replaces_it_when_unused() {
    let server = UrlServer::start("url-golden", 100);
    let outputs = run_helpers(&server, "remote_acquire", 8);
    let mut builds = 0;
    for output in &outputs {
        assert_eq!(result_of(output), "OK 7");
        builds += String::from_utf8_lossy(&output.stderr)
            .matches("building golden")
            .count();
    }
    assert_eq!(builds, 1, "exactly one of 8 processes built the golden");
    let first = server.goldens();
    assert_eq!(first.len(), 1);
    assert_eq!(server.test_databases(), Vec::<String>::new());

    // A new migration: a new template; the old one stays while it was used recently...
    std::fs::write(
        server.migrations.join("0002_more.sql"),
        "insert into t values (8);",
    )
    .unwrap();
    assert_eq!(helper_result(server.helper("remote_acquire")), "OK 8");
    assert_eq!(server.goldens().len(), 2);
    // ... and goes once unused for a day (by any run).
    execute(
        &server.cluster.connection_string_for("pgclone"),
        &format!(
            "update goldens set last_used = now() - interval '2 days' where template = '{}'",
            first[0]
        ),
    );
    assert_eq!(helper_result(server.helper("remote_acquire")), "OK 8");
    let now = server.goldens();
    assert_eq!(now.len(), 1);
    assert_ne!(now, first);
}

#[test]
fn a_killed_test_process_database_is_dropped_by_the_next_run() {
    let server = UrlServer::start("url-killed", 100);
    let mut child = server.helper("remote_hold");
    child.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = KilledOnDrop(child.spawn().unwrap());
    let name = support::wait_for_report(&mut child.0);
    assert_eq!(server.test_databases(), vec![name.clone()]);
    drop(child); // SIGKILL: its session ends with it, and with it its run's lock

    // A live run's database is never touched: a second holder stays across the next run.
    // A template a build left without its record (killed between rename and record): dropped.
    execute(
        &server.cluster.connection_string(),
        "create database pgclone_golden_0123456789abcdef owner app",
    );

    let mut live = server.helper("remote_hold");
    live.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut live = KilledOnDrop(live.spawn().unwrap());
    let live_name = support::wait_for_report(&mut live.0);
    assert_eq!(helper_result(server.helper("remote_acquire")), "OK 7");
    assert_eq!(
        server.test_databases(),
        vec![live_name],
        "{name} was reaped"
    );
    assert_eq!(
        server.value("pgclone", "select count(*)::text from databases"),
        "1"
    );
}

#[test]
fn a_suite_wider_than_max_connections_waits_for_slots_instead_of_failing() {
    // 16 processes at once, each holding five connections: 96 with their sessions, against
    // 47 the server accepts.
    let server = UrlServer::start("url-budget", 50);
    let outputs = run_helpers(&server, "remote_hold_connections", 16);
    for output in &outputs {
        assert_eq!(
            result_of(output),
            "OK",
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(server.test_databases(), Vec::<String>::new());
}

#[test]
fn a_goldens_settings_hold_in_each_test_database_as_postgresql_conf_reads_them() {
    let server = UrlServer::start("url-settings", 100);
    assert_eq!(
        helper_result(server.helper("remote_settings")),
        "1 | app, public"
    );
}

#[test]
fn cluster_mode_and_fork_say_they_need_local_binaries() {
    let server = UrlServer::start("url-local-only", 100);
    let report = helper_result(server.helper("remote_needs_local"));
    assert!(
        report.contains("Some(\"Unsupported cluster mode needs local PostgreSQL binaries"),
        "{report}"
    );
    assert!(
        report.contains(
            "| Some(\"Unsupported fork() needs cluster mode with local PostgreSQL binaries"
        ),
        "{report}"
    );
    assert!(
        !report.contains(PASSWORD) && !report.contains(PASSWORD_IN_URL),
        "Debug shows no password: {report}"
    );
}

#[test]
fn bad_servers_and_roles_get_clear_errors_without_the_password() {
    let server = UrlServer::start("url-errors", 100);
    execute(
        &server.cluster.connection_string(),
        &format!("create role plain login password '{PASSWORD}'"),
    );
    let port = server.cluster.port();
    let closed = portpicker::pick_unused_port().unwrap();
    let cases = [
        (
            format!("postgresql://app:wrong{PASSWORD_IN_URL}@127.0.0.1:{port}/postgres"),
            "password was refused",
        ),
        (
            format!("postgresql://app:{PASSWORD_IN_URL}@127.0.0.1:{closed}/postgres"),
            "is the server running",
        ),
        (
            format!("postgresql://plain:{PASSWORD_IN_URL}@127.0.0.1:{port}/postgres"),
            "may not create databases",
        ),
        (
            format!(
                "postgresql://plain:{PASSWORD_IN_URL}@127.0.0.1:{port}/postgres?sslmode=require"
            ),
            "sslmode=require",
        ),
        (
            format!("postgresql://app:{PASSWORD_IN_URL}@127.0.0.1:{port}/postgres?nonsense=1"),
            "not a connection string",
        ),
        (
            format!("postgresql://app:pa@ss@127.0.0.1:{port}/postgres"),
            "more than one `@`",
        ),
    ];
    for (url, expected) in cases {
        let mut cmd = server.helper("remote_acquire");
        cmd.env("PGCLONE_URL", &url);
        let report = helper_result(cmd);
        assert!(report.starts_with("ERR "), "{url}: {report}");
        assert!(report.contains(expected), "{url}: {report}");
        assert!(
            !report.contains("s3:cr") && !report.contains("s3%3Acr") && !report.contains("ss@"),
            "the password is not shown: {report}"
        );
    }
}

/// A PostgreSQL 12 server (older than pgclone supports) from the binaries in
/// `PGCLONE_TEST_PG12_BIN`, over TCP with SCRAM and a CREATEDB role `app`; stopped on drop.
struct OldServer {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl OldServer {
    fn start(bin: PathBuf, dir: &std::path::Path) -> OldServer {
        let as_postgres = crate::support::is_root();
        std::fs::create_dir_all(dir).unwrap();
        if let Some(user) = pgclone::server::run_as_user().unwrap() {
            std::os::unix::fs::chown(dir, Some(user.uid()), Some(user.gid())).unwrap();
        }
        let server = OldServer {
            bin,
            data: dir.join("data"),
            port: portpicker::pick_unused_port().unwrap(),
            as_postgres,
        };
        let initdb = server.bin.join("initdb");
        server.run(&[
            initdb.to_str().unwrap(),
            "-D",
            server.data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        ]);
        let options = format!(
            "-k {} -p {} -c listen_addresses=127.0.0.1 -c password_encryption=scram-sha-256",
            dir.display(),
            server.port
        );
        let pg_ctl = server.bin.join("pg_ctl");
        let log = dir.join("log");
        server.run(&[
            pg_ctl.to_str().unwrap(),
            "-D",
            server.data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-o",
            &options,
            "-w",
            "start",
        ]);
        let url = format!(
            "postgresql://postgres@{}:{}/postgres",
            dir.display().to_string().replace('/', "%2F"),
            server.port
        );
        execute(
            &url,
            &format!("create role app login createdb password '{PASSWORD}'"),
        );
        server
    }

    fn run(&self, args: &[&str]) {
        let mut cmd = match self.as_postgres {
            true => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", "postgres", "--"]);
                cmd
            }
            false => Command::new(args[0]),
        };
        let args = if self.as_postgres { args } else { &args[1..] };
        let output = cmd.args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for OldServer {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.data.to_str().unwrap().to_string();
        let args = [
            pg_ctl.to_str().unwrap(),
            "-D",
            &data,
            "-m",
            "immediate",
            "stop",
        ];
        let mut cmd = match self.as_postgres {
            true => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", "postgres", "--"]).args(args);
                cmd
            }
            false => {
                let mut cmd = Command::new(args[0]);
                cmd.args(&args[1..]);
                cmd
            }
        };
        let _ = cmd.output();
    }
}

#[test]
fn a_server_older_than_13_is_refused_clearly() {
    // CI provides PostgreSQL 12 (and says so with PGCLONE_TEST_REQUIRE_ROOT=1): never skipped there.
    let Ok(bin) = std::env::var("PGCLONE_TEST_PG12_BIN") else {
        assert_ne!(
            std::env::var("PGCLONE_TEST_REQUIRE_ROOT").as_deref(),
            Ok("1"),
            "CI must set PGCLONE_TEST_PG12_BIN"
        );
        return;
    };
    let root = support::unique_root("url-pg12");
    let old = OldServer::start(PathBuf::from(bin), &root.join("pg12"));
    let mut cmd = helper("remote_acquire");
    cmd.env(
        "PGCLONE_URL",
        format!(
            "postgresql://app:{PASSWORD_IN_URL}@127.0.0.1:{}/postgres",
            old.port
        ),
    )
    .env("PGCLONE_IT_MIGRATIONS", root.join("none"))
    .env("PGCLONE_PG_BIN", "/nonexistent/pgclone-no-binaries");
    let report = helper_result(cmd);
    assert!(
        report.starts_with("ERR Unsupported")
            && report.contains("PostgreSQL 12.")
            && report.contains("older than 13"),
        "{report}"
    );
    assert!(report.contains("13 or newer"), "the fix: {report}");
    drop(old);
}
