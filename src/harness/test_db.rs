//! `TestDb`: a test's own copy of a golden, and the guard that removes it.
//!
//! Cluster mode: an offline clone of the golden in `<root>/clones/<id>/`, started on its own
//! socket. Database mode: a database created from the golden one in this process's template
//! server. Dropping the guard tears it down (also when the test panics); `PGCLONE_KEEP` keeps it.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::clone::{clone_running, CloneOptions, CopyMethod};
use crate::config::{Config, Keep};
use crate::error::{Error, ErrorKind, Result};
use crate::harness::golden::{self, blocking, BuiltGolden, Golden};
use crate::harness::remote::{self, Created, RemoteServer};
use crate::harness::shared::{self, RunTest};
use crate::harness::template::{self, TemplateServer};
use crate::harness::{library, pool};
use crate::postgres::libpq::{ConnectParams, Secret};
use crate::postgres::server::{Server, SUPERUSER};
use crate::postgres::socket_dir::SocketDir;
use crate::postgres::url::{connection_url, redacted, Endpoint};
use crate::store::root;

/// How a test gets its database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// A whole cluster per test: a copy-on-write clone of the golden, on its own server.
    #[default]
    Cluster,
    /// A database per test, created from the golden database in a server shared by the
    /// process's tests.
    Database,
}

/// How a test's copy was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Cluster mode: how the golden's files were copied.
    Clone(CopyMethod),
    /// Database mode: `CREATE DATABASE ... STRATEGY FILE_COPY`, with `file_copy_method = clone`
    /// on PostgreSQL 18.
    CreateDatabase {
        /// Whether `file_copy_method = clone` was asked for (the file system decides whether it
        /// shares extents or copies).
        clone: bool,
    },
    /// Database mode on the server of `PGCLONE_URL`, for a golden under 64 MB:
    /// `CREATE DATABASE ... STRATEGY WAL_LOG` (no checkpoint; faster for small databases).
    CreateDatabaseWalLog,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::Clone(method) => write!(f, "{method}"),
            Method::CreateDatabase { clone: true } => {
                f.write_str("CREATE DATABASE STRATEGY FILE_COPY (file_copy_method = clone)")
            }
            Method::CreateDatabase { clone: false } => {
                f.write_str("CREATE DATABASE STRATEGY FILE_COPY")
            }
            Method::CreateDatabaseWalLog => f.write_str("CREATE DATABASE STRATEGY WAL_LOG"),
        }
    }
}

/// A test's own PostgreSQL database, copied from a [`Golden`], with a connected client.
///
/// Dropping it stops the clone's server and removes its files (cluster mode) or drops the
/// database (database mode), also when the test panics; the files go in the background, so
/// teardown does not wait for the file system. [`close`](TestDb::close) reports teardown
/// errors; [`keep`](TestDb::keep) opts out. With `PGCLONE_KEEP=failed`, a failing test's copy is
/// kept and pgclone prints how to connect to it.
///
/// A guard (ARCHITECTURE.md): `Drop` tears down (or keeps, as `PGCLONE_KEEP` says), ignoring
/// errors; `close` tears down and reports them; `keep` opts out and never deletes; `Debug` shows
/// where it lives (database, socket URL, data directory) and no secret.
pub struct TestDb {
    /// `None` only for a copy the harness made for another argument type (`TestArg`), whose
    /// test never sees the `TestDb`.
    client: Option<tokio_postgres::Client>,
    /// The server, role, password and database the copy is reached with.
    params: ConnectParams,
    /// Empty on a server given by `PGCLONE_URL`.
    data_dir: PathBuf,
    method: Method,
    /// `None` on a server given by `PGCLONE_URL`.
    golden: Option<Arc<BuiltGolden>>,
    owned: Option<Owned>,
    harness: Option<HarnessSlot>,
    /// `PGCLONE_KEEP` as read when it was made: what `Drop` does outside the harness.
    keep_policy: Keep,
}

/// What tearing a `TestDb` down releases.
#[derive(Debug)]
pub(crate) enum Owned {
    Cluster {
        dir: PathBuf,
        server: Server,
        dbname: String,
        golden: Arc<BuiltGolden>,
    },
    Database {
        template: Arc<TemplateServer>,
        dbname: String,
    },
    /// A database on the server of `PGCLONE_URL`.
    Remote {
        server: Arc<RemoteServer>,
        created: Created,
    },
}

/// Where the `#[pgclone::test]` harness collects a dropped `TestDb`'s resources, so that it can
/// decide after the test (passed, failed) whether to keep them.
pub(crate) type HarnessSlot = Arc<Mutex<Option<Owned>>>;

/// Options for a [`TestDb`].
#[derive(Debug)]
pub struct TestDbBuilder<'a> {
    golden: &'a Golden,
    /// The mode asked for; `None`: `default_mode`, or database mode on a `PGCLONE_URL` server.
    mode: Option<Mode>,
    default_mode: Mode,
    harness: Option<HarnessSlot>,
    pool: Option<usize>,
    /// The configuration its caller already read (the harness: once per test).
    config: Option<Config>,
    /// Whether to connect the client (the harness: not for a test that takes another argument).
    client: bool,
    /// libtest's name of the test (the harness): under nextest, a keeper re-runs it to serve a
    /// template server the run's processes share.
    test_name: Option<&'static str>,
}

impl TestDb {
    /// A clone of `golden` in cluster mode.
    pub async fn start(golden: &Golden) -> Result<TestDb> {
        TestDb::builder(golden).start().await
    }

    /// Options: the mode.
    pub fn builder(golden: &Golden) -> TestDbBuilder<'_> {
        TestDbBuilder {
            golden,
            mode: None,
            default_mode: Mode::Cluster,
            harness: None,
            pool: None,
            config: None,
            client: true,
            test_name: None,
        }
    }

    /// The client connected to [`dbname`](TestDb::dbname) in this copy.
    pub fn client(&self) -> &tokio_postgres::Client {
        self.client
            .as_ref()
            .expect("pgclone: this TestDb was made for another argument type, without a client")
    }

    /// A new client connected to this copy (its connection runs on the current tokio runtime).
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        connect(&self.connection_string()).await
    }

    /// A libpq URL of this copy that psql, tokio-postgres, sqlx and diesel accept. On a server
    /// given by `PGCLONE_URL` it carries the password (so never print it; `Debug` does not).
    pub fn connection_string(&self) -> String {
        self.params.url()
    }

    /// The database to use.
    pub fn dbname(&self) -> &str {
        &self.params.dbname
    }

    /// The host: the server's Unix socket directory, or the host name of `PGCLONE_URL`.
    pub fn host(&self) -> String {
        self.params.host_text()
    }

    /// The port (with a Unix socket, part of the socket's name).
    pub fn port(&self) -> u16 {
        self.params.port
    }

    /// The role the client connects as: the superuser of a local copy, `PGCLONE_URL`'s role.
    pub fn user(&self) -> &str {
        &self.params.user
    }

    /// The password, where the server asks for one (on a server given by `PGCLONE_URL`).
    #[cfg_attr(not(any(feature = "sqlx", feature = "sqlx-0_8")), allow(dead_code))]
    pub(crate) fn password(&self) -> Option<&str> {
        self.params.password.as_ref().map(|p| p.expose())
    }

    /// The data directory serving this copy (database mode: the shared template server's;
    /// empty on a server given by `PGCLONE_URL`, whose files pgclone does not see).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// How the copy was made.
    pub fn method(&self) -> Method {
        self.method
    }

    /// A new, independent `TestDb` holding this one's state at this moment: an online clone of
    /// this running cluster, started through backup recovery. Cluster mode only.
    pub async fn fork(&self) -> Result<TestDb> {
        let golden = match (&self.golden, self.method) {
            (Some(golden), Method::Clone(_)) => golden.clone(),
            (None, _) => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    "fork() needs cluster mode with local PostgreSQL binaries, and PGCLONE_URL gives database mode on its server",
                )
                .hint("unset PGCLONE_URL for this test (it then uses local binaries), or copy the data another way"))
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    "fork() needs cluster mode: a database cannot be copied while the test is connected to it",
                )
                .hint("use Mode::Cluster (the default) for tests that fork"))
            }
        };
        let source = self.data_dir.clone();
        let forked_golden = golden.clone();
        let (server, dir, method) = blocking(move || {
            let options = CloneOptions::new()
                .allow_copy(true)
                .no_sync(true)
                .user(SUPERUSER);
            let owner = golden.env.run_as.clone();
            golden.start_clone(|data| clone_running(&source, data, &options, owner, None))
        })
        .await?;
        let mut forked =
            TestDb::from_cluster(forked_golden, dir, server, Method::Clone(method), true).await?;
        forked.keep_policy = self.keep_policy;
        Ok(forked)
    }

    /// Opts out of teardown: stops the server cleanly (cluster mode) and leaves the copy on
    /// disk, marked kept at once so that only `pgclone gc --kept` removes it; returns where it
    /// is. In database mode that is the whole clone of the template server, whose server stops
    /// cleanly at exit. Never deletes anything; what goes wrong is printed on stderr.
    pub fn keep(mut self) -> PathBuf {
        let owned = self.owned.take();
        let dir = match &owned {
            Some(Owned::Cluster { dir, .. }) => dir.clone(),
            Some(Owned::Database { template, .. }) => template.dir.clone(),
            Some(Owned::Remote { .. }) | None => self.data_dir.clone(),
        };
        if let Some(owned) = owned {
            keep(owned, "kept by keep()");
        }
        dir
    }

    /// Tears down now and reports what failed (`Drop` has to ignore errors).
    pub async fn close(mut self) -> Result<()> {
        let owned = self.owned.take();
        // Our own client goes first: a database cannot be dropped while a session is in it.
        drop(self);
        match owned {
            Some(owned) => blocking(move || tear_down(owned, false)).await,
            None => Ok(()),
        }
    }

    async fn from_cluster(
        golden: Arc<BuiltGolden>,
        dir: PathBuf,
        server: Server,
        method: Method,
        client: bool,
    ) -> Result<TestDb> {
        let dbname = golden.dbname.clone();
        let params = local_params(server.socket_dir(), server.port(), &dbname);
        let data_dir = dir.join("data");
        let owned = Owned::Cluster {
            dir,
            server,
            dbname,
            golden: golden.clone(),
        };
        TestDb::connected(Some(golden), owned, params, data_dir, method, client).await
    }

    /// Connects the client (if `client`); if that fails, tears the copy down and reports why.
    /// The harness, if any, is attached by the builder afterwards.
    async fn connected(
        golden: Option<Arc<BuiltGolden>>,
        owned: Owned,
        params: ConnectParams,
        data_dir: PathBuf,
        method: Method,
        client: bool,
    ) -> Result<TestDb> {
        let client = if client {
            match connect_params(&params).await {
                Ok(client) => Some(client),
                Err(e) => {
                    let _ = blocking(move || tear_down(owned, false)).await;
                    return Err(e);
                }
            }
        } else {
            None
        };
        Ok(TestDb {
            client,
            params,
            data_dir,
            method,
            golden,
            owned: Some(owned),
            harness: None,
            keep_policy: Keep::Never,
        })
    }
}

impl TestDbBuilder<'_> {
    /// Cluster mode (the default) or database mode. With `PGCLONE_URL` set, the default is
    /// database mode on that server, and cluster mode an error (it needs local binaries).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = Some(mode);
        self
    }

    /// The mode when none was asked for (the harness: the argument type's).
    pub(crate) fn default_mode(mut self, mode: Mode) -> Self {
        self.default_mode = mode;
        self
    }

    pub(crate) fn harness(mut self, slot: HarnessSlot) -> Self {
        self.harness = Some(slot);
        self
    }

    /// Makes the copy without connecting its client: for a test whose argument connects its
    /// own way, which then never calls [`TestDb::client`].
    pub(crate) fn without_client(mut self) -> Self {
        self.client = false;
        self
    }

    pub(crate) fn test_name(mut self, name: &'static str) -> Self {
        self.test_name = Some(name);
        self
    }

    /// Uses `config` instead of reading the environment again.
    pub(crate) fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// How many ready copies to keep in the background for this golden and mode (default:
    /// `PGCLONE_POOL`, else none). With a pool, acquiring takes a copy made in advance:
    /// microseconds instead of a clone and a start. It pays only where tests leave cores idle.
    pub fn pool(mut self, size: usize) -> Self {
        self.pool = Some(size);
        self
    }

    /// Builds the golden if needed (once, whatever the number of tests and processes asking),
    /// then makes this test's copy, or takes one the pool made.
    pub async fn start(mut self) -> Result<TestDb> {
        let config = match self.config.take() {
            Some(config) => config,
            None => Config::from_env()?,
        };
        if let Some(url) = config.url.clone() {
            let mut db = self.start_remote(&config, &url).await?;
            db.harness = self.harness.clone();
            db.keep_policy = config.keep;
            return Ok(db);
        }
        let mode = self.mode.unwrap_or(self.default_mode);
        // A keeper serves the golden it was started for, built already: a test whose recipe
        // changed since it was recorded (`ahead.rs`) stops before anything is built.
        let expected = config.keeper.as_deref().map(shared::keeper_golden);
        let prepared = golden::prepare(&config)?;
        let recipe = prepared.recipes.resolve(self.golden)?;
        // A test of the binary's library gets its database from the library's server.
        let library = match (mode, self.test_name) {
            (Mode::Database, Some(_)) => {
                library::library_for(&recipe.key, &prepared, &config, expected).await?
            }
            _ => None,
        };
        let (golden, template) = match library {
            Some(found) => found,
            None => {
                let golden =
                    golden::ensure_resolved(self.golden, recipe, &prepared, &config, expected)
                        .await?;
                let template = golden.dbname.clone();
                (golden, template)
            }
        };
        if let Some(key) = &config.keeper {
            // A keeper (harness/shared.rs) goes this far only: it serves the golden instead.
            let (golden, key, threads) = (golden.clone(), key.clone(), config.test_threads);
            blocking(move || -> Result<()> { shared::keep_serving(&golden, &key, threads) })
                .await?;
        }
        // A process per test (nextest): its database comes from the server the run shares.
        let shared_by = self
            .test_name
            .zip(config.run_id.clone())
            .filter(|_| config.keep == Keep::Never)
            .map(|(test, run)| RunTest {
                test: test.to_string(),
                run,
            });
        let size = self.pool.or(config.pool).unwrap_or(0);
        let pooled = if size > 0 {
            pool::take(&golden, &template, mode, size)
        } else {
            None
        };
        let mut db = match pooled {
            // A pooled copy comes connected; its client ends on the pool's runtime.
            Some(mut db) if !self.client => {
                db.client = None;
                db
            }
            Some(db) => db,
            None => {
                // Not while goldens are rebuilt: the previous run's are about to be replaced.
                let start_ahead = !config.rebuild;
                TestDb::fresh(golden, template, mode, self.client, shared_by, start_ahead).await?
            }
        };
        db.harness = self.harness;
        db.keep_policy = config.keep;
        Ok(db)
    }

    /// Database mode on the server of `PGCLONE_URL`: the golden a template database there,
    /// this test's copy a database made from it.
    async fn start_remote(&self, config: &Config, url: &Secret) -> Result<TestDb> {
        if self.mode == Some(Mode::Cluster) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "cluster mode needs local PostgreSQL binaries, and PGCLONE_URL gives database mode on its server",
            )
            .hint("ask for no mode or mode = \"database\" (PGCLONE_MODE=database) with PGCLONE_URL, or unset PGCLONE_URL to run this test on local binaries"));
        }
        let (c, u) = (config.clone(), url.clone());
        let server = blocking(move || remote::server(&c, &u)).await?;
        let golden = remote::ensure_built(self.golden, config, &server).await?;
        let (s, g) = (server.clone(), golden.clone());
        let created = blocking(move || s.create_database(&g)).await?;
        let params = server.params(&created.name);
        let method = match golden.strategy {
            Some("wal_log") => Method::CreateDatabaseWalLog,
            _ => Method::CreateDatabase { clone: false },
        };
        let owned = Owned::Remote { server, created };
        TestDb::connected(None, owned, params, PathBuf::new(), method, self.client).await
    }
}

impl TestDb {
    /// A new copy of `golden` in `mode` (in database mode, of its database `template`),
    /// connected on the current runtime if `client`.
    pub(crate) async fn fresh(
        golden: Arc<BuiltGolden>,
        template: String,
        mode: Mode,
        client: bool,
        shared_by: Option<RunTest>,
        start_ahead: bool,
    ) -> Result<TestDb> {
        match mode {
            Mode::Cluster => {
                let g = golden.clone();
                let (server, dir, method) =
                    blocking(move || g.start_clone(|data| g.copy_to(data))).await?;
                TestDb::from_cluster(golden, dir, server, Method::Clone(method), client).await
            }
            Mode::Database => {
                let (template, dbname) =
                    template::create_database(&golden, template, shared_by, start_ahead).await?;
                let owned = Owned::Database {
                    template: template.clone(),
                    dbname: dbname.clone(),
                };
                let method = Method::CreateDatabase {
                    clone: crate::postgres::features::has_file_copy_method_clone(template.major),
                };
                let params = local_params(&template.socket_dir, template.port, &dbname);
                let data_dir = template.dir.join("data");
                TestDb::connected(Some(golden), owned, params, data_dir, method, client).await
            }
        }
    }

    /// A pool's leftover at exit: a cluster is stopped and removed now (a few ms); a database
    /// is left to its template server, whose directory goes as a whole at exit, so that exit
    /// never waits for a DROP DATABASE.
    pub(crate) fn forget_at_exit(mut self) {
        match self.owned.take() {
            Some(owned @ Owned::Cluster { .. }) => {
                let _ = tear_down(owned, false);
            }
            Some(Owned::Database { .. }) | None => {}
            Some(owned @ Owned::Remote { .. }) => {
                let _ = tear_down(owned, false);
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(owned) = self.owned.take() else {
            return;
        };
        if let Some(slot) = &self.harness {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(owned);
            return; // the harness decides once it knows whether the test passed
        }
        finish(owned, std::thread::panicking(), self.keep_policy);
    }
}

impl fmt::Debug for TestDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDb")
            .field("dbname", &self.params.dbname)
            .field("connection_string", &redacted(&self.connection_string()))
            .field("data_dir", &self.data_dir)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

/// Tears down, or keeps if `policy` (`PGCLONE_KEEP`) says so for a test that `failed`.
pub(crate) fn finish(owned: Owned, failed: bool, policy: Keep) {
    match policy {
        Keep::Always => keep(owned, "PGCLONE_KEEP=always"),
        Keep::Failed if failed => keep(owned, "PGCLONE_KEEP=failed"),
        _ => {
            let _ = tear_down(owned, true);
        }
    }
}

/// Stops the clone's server and removes its files (in the background if `background`), or
/// drops the database.
fn tear_down(owned: Owned, background: bool) -> Result<()> {
    match owned {
        Owned::Cluster { dir, server, .. } => {
            let stopped = server.stop_immediately();
            let removed = if background {
                root::discard(&dir)
            } else {
                root::remove_clone_dir(&dir)
            };
            stopped.and(removed)
        }
        // The run's shared server: its keeper drops the database once this process is gone.
        Owned::Database { template, .. } if background && template.is_shared() => Ok(()),
        Owned::Database { template, dbname } if background => {
            template.drop_database_later(dbname);
            Ok(())
        }
        Owned::Database { template, dbname } => template.drop_database(&dbname),
        // Synchronous: the process may exit right after the last test, and a database left
        // behind would wait for the next run's reaping.
        Owned::Remote { server, created } => server.drop_database(created),
    }
}

/// Keeps a copy and tells the user how to reach it again: the printed command starts its
/// server on a new private socket directory (never a shared one such as `/tmp`, where any local
/// user could connect as the trusted superuser).
fn keep(owned: Owned, why: &str) {
    let (dir, dbname, golden, socket_dir, marked) = match owned {
        Owned::Remote { server, created } => return keep_remote(&server, created, why),
        Owned::Cluster {
            dir,
            server,
            dbname,
            golden,
        } => {
            let _ = server.stop();
            let socket_dir = SocketDir::create_for_kept(
                &golden.env.socket_parent,
                golden.env.run_as.as_ref(),
                &dir,
            );
            let marked = root::mark_kept(&dir, socket_dir.as_deref().ok());
            (dir, dbname, golden, socket_dir, marked)
        }
        Owned::Database { template, dbname } => {
            // The whole clone, marked now (so that no reaper takes it if this process is
            // killed); its server keeps serving the process's tests and stops cleanly at exit.
            let socket_dir = template.keep();
            if let (true, Err(e)) = (template.is_shared(), &socket_dir) {
                // The run's server is its keeper's: nothing here is kept, nothing marked.
                let _ = writeln!(
                    std::io::stderr(),
                    "pgclone: did not keep this test's database {dbname} ({why}): {e}"
                );
                return;
            }
            let marked = root::mark_kept(&template.dir, socket_dir.as_deref().ok());
            (
                template.dir.clone(),
                dbname,
                template.golden.clone(),
                socket_dir,
                marked,
            )
        }
    };
    // Called from `Drop`: stderr that cannot be written must not panic.
    let say = |text: String| {
        let _ = writeln!(std::io::stderr(), "{text}");
    };
    if let Err(e) = marked {
        say(format!(
            "pgclone: left this test's database ({why}) in {}, but could not mark it kept, so it \
             is removed once this process is gone: {e}",
            dir.display()
        ));
    }
    let socket_dir = match socket_dir {
        Ok(socket_dir) => socket_dir,
        Err(e) => {
            say(format!("pgclone: kept this test's database ({why}) in {}, but found no private socket directory to restart it with: {e}", dir.display()));
            return;
        }
    };
    let data = dir.join("data");
    let port = portpicker::pick_unused_port().unwrap_or(5432);
    let pg_ctl = golden.env.binaries.program("pg_ctl");
    let start = format!(
        "{} -D {} -l {} -o \"-k {} -p {port}\" start",
        pg_ctl.display(),
        data.display(),
        dir.join("postgres.log").display(),
        socket_dir.display()
    );
    let start = match &golden.env.run_as {
        Some(user) => format!("su {} -s /bin/sh -c '{start}'", user.name()),
        None => start,
    };
    let url = connection_url(
        Endpoint::Socket(&socket_dir),
        port,
        SUPERUSER,
        None,
        &dbname,
    );
    say(format!(
        "pgclone: kept this test's database ({why}) in {}\n  start it:   {start}\n  connect:    psql '{url}'\n  remove it:  pgclone gc --kept --dir {}",
        dir.display(),
        golden.root.path().display()
    ));
}

/// Keeps a database on the server of `PGCLONE_URL` (marked kept in pgclone's registry there,
/// so that no run drops it) and says how to reach and drop it.
fn keep_remote(server: &RemoteServer, created: Created, why: &str) {
    let params = server.params(&created.name);
    let name = created.name.clone();
    let say = match server.keep_database(created) {
        Ok(()) => format!(
            "pgclone: kept this test's database ({why}) on the server of PGCLONE_URL\n  connect:    psql '{}' (the password of PGCLONE_URL)\n  remove it:  psql '{}' -c 'drop database {name}'",
            redacted(&params.url()),
            redacted(&server.params(remote::REGISTRY_DB).url()),
        ),
        Err(e) => format!("pgclone: could not keep this test's database {name} ({why}) on the server of PGCLONE_URL: {e}"),
    };
    let _ = writeln!(std::io::stderr(), "{say}");
}

/// How a local copy is reached: the server's socket, as the superuser, without a password.
fn local_params(socket_dir: &Path, port: u16, dbname: &str) -> ConnectParams {
    ConnectParams::socket(socket_dir, port, SUPERUSER, dbname, "pgclone test")
}

/// Connects a client as `params` says; its connection runs on the current tokio runtime.
pub(crate) async fn connect_params(params: &ConnectParams) -> Result<tokio_postgres::Client> {
    let (client, connection) = params
        .tokio_config(std::time::Duration::from_secs(10))
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| Error::query(format!("connect to {params}"), e))?;
    tokio::spawn(connection);
    Ok(client)
}

/// Connects a client; its connection runs on the current tokio runtime.
pub(crate) async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| Error::query(format!("connect to {}", redacted(url)), e))?;
    tokio::spawn(connection);
    Ok(client)
}
