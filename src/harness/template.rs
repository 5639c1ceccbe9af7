//! Database mode: one template server per process and golden (a clone of the golden), and per
//! test `CREATE DATABASE <unique> TEMPLATE <golden db> STRATEGY FILE_COPY` — with
//! `file_copy_method = clone` on PostgreSQL 18, which shares extents where the file system can.
//!
//! The template database never has a connection (PostgreSQL refuses to copy one that has): the
//! sessions that create databases sit in another one, a session per creation under way (tests
//! asking at once get their copies side by side; several may read one template). The server dies
//! with the process; at a normal exit it is stopped, and its data directory parked for the next
//! process's server (`warm.rs`) or removed.
//!
//! Under nextest (a process per test) the server is instead the one the run's processes share
//! (`shared.rs`): this process only connects to it, and leaves it to its keeper.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::error::{Error, ErrorKind, Result};
use crate::harness::ahead;
use crate::harness::golden::BuiltGolden;
use crate::harness::shared::{self, RunTest, SharedServer};
use crate::harness::warm::{self, AtStart};
use crate::postgres::libpq::ConnectParams;
use crate::postgres::options::ServerOptions;
use crate::postgres::server::{Server, SUPERUSER};
use crate::postgres::session::{drop_database_sql, wait_until_unused, Session};
use crate::postgres::socket_dir::SocketDir;
use crate::postgres::wire::quote_ident;
use crate::store::root::{self, ProcessId};

/// A running clone of a golden that hands out databases.
pub(crate) struct TemplateServer {
    pub golden: Arc<BuiltGolden>,
    /// Its clone directory (`<root>/clones/<id>`).
    pub dir: PathBuf,
    server: Mutex<Option<Server>>,
    /// Idle sessions that create databases, in the admin database (a session in the template
    /// would make PostgreSQL refuse to copy it). Creations go side by side, a session each: a
    /// copy without reflinks takes a while, and several may read one template at once.
    creators: Mutex<Vec<Session>>,
    /// Held shared by each creation under way; taken for good at exit, once they are done.
    creating: RwLock<()>,
    /// Drops them, apart, so that a slow drop never delays a test's creation. `None` for the
    /// server a nextest run shares, where a process runs one test: its keeper drops the
    /// process's databases once it is gone (a creator drops only what is asked for at once).
    dropper: Option<Mutex<Session>>,
    pub socket_dir: PathBuf,
    pub port: u16,
    pub major: u32,
    /// A user asked to keep a database of it: keep the whole clone at exit, with this private
    /// socket directory to restart it on.
    kept: OnceLock<std::result::Result<PathBuf, Arc<Error>>>,
    /// The run's shared server, whose keeper owns it (`server` is then `None`).
    shared: Option<SharedServer>,
    /// This process's own server's cluster as it started, to park it at exit (`warm.rs`).
    at_start: Option<AtStart>,
}

type Templates = Mutex<HashMap<PathBuf, Arc<tokio::sync::OnceCell<Arc<TemplateServer>>>>>;

fn templates() -> &'static Templates {
    static TEMPLATES: OnceLock<Templates> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        crate::exit::at_exit(stop_all);
        Default::default()
    })
}

/// A new database copied from `golden`'s database `template`, in this process's template server
/// for it (started on first use, and started again if it died): the server and the database's
/// name.
/// `shared_by`: the test of a run of many processes (nextest), which uses the template server
/// the run shares. `start_ahead`: whether its run's first test may start the keepers of the
/// goldens the previous run used.
pub(crate) async fn create_database(
    golden: &Arc<BuiltGolden>,
    template_db: String,
    shared_by: Option<RunTest>,
    start_ahead: bool,
) -> Result<(Arc<TemplateServer>, String)> {
    let template = template_for(golden.clone(), shared_by.clone()).await?;
    // The other keepers after this test's own server: the two cores go to the server that tests
    // wait for first (measured on bookshelf under nextest: 1.30 s -> 1.20 s, median of 14).
    if let Some(test) = shared_by.clone().filter(|_| start_ahead) {
        let g = golden.clone();
        let note = move || {
            start_keepers_ahead(&g, &test);
            Ok(())
        };
        crate::harness::golden::blocking(note).await?;
    }
    let (t, db) = (template.clone(), template_db.clone());
    match crate::harness::golden::blocking(move || t.create_database(&db)).await {
        Ok(name) => Ok((template, name)),
        Err(e) if template.has_died() => {
            // Not this test's fault: forget the dead server and start a new one.
            eprintln!(
                "pgclone: the template server of golden {:?} died ({e}); starting a new one\n{}",
                golden.dbname,
                crate::postgres::server::log_tail(&template.dir.join("postgres.log"), 0)
            );
            templates().lock().unwrap().remove(&golden.data_dir);
            let template = template_for(golden.clone(), shared_by).await?;
            let t = template.clone();
            let name =
                crate::harness::golden::blocking(move || t.create_database(&template_db)).await?;
            Ok((template, name))
        }
        Err(e) => Err(e),
    }
}

/// This process's template server for `golden`, started (or, shared, found) on first use.
async fn template_for(
    golden: Arc<BuiltGolden>,
    shared_by: Option<RunTest>,
) -> Result<Arc<TemplateServer>> {
    let cell = templates()
        .lock()
        .unwrap()
        .entry(golden.data_dir.clone())
        .or_default()
        .clone();
    let template = cell
        .get_or_try_init(|| {
            crate::harness::golden::blocking(move || match shared_by {
                Some(test) => TemplateServer::shared(golden, &test),
                None => TemplateServer::start(golden),
            })
        })
        .await?;
    Ok(template.clone())
}

/// Under nextest: notes that `golden` serves the test `test` of its run and, at the run's first
/// test (once its own server serves), starts the keepers of the other goldens the previous run
/// of this test binary used (`ahead.rs`), side by side, so that their first tests find their
/// servers running. A failure there is left for the test that needs that server to meet and
/// report. This process does not wait for them: a keeper holds the lock that keeps a second
/// one from starting until it serves.
fn start_keepers_ahead(golden: &BuiltGolden, test_of_run: &RunTest) {
    let others = ahead::note_used(golden, test_of_run);
    if others.is_empty() {
        return;
    }
    let Ok(runner) = ProcessId::runner(&test_of_run.run) else {
        return;
    };
    for ahead::Ahead { golden, test } in others {
        let _ = shared::start_keeper(&golden, &test, &runner);
    }
}

impl TemplateServer {
    /// This process's own server: a clone of the golden, started now.
    fn start(golden: Arc<BuiltGolden>) -> Result<Arc<TemplateServer>> {
        // As many tests at once as libtest runs: what its `--test-threads` or `RUST_TEST_THREADS`
        // says, else a test per core.
        let tests_at_once = crate::config::libtest_threads()
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
        let connections = max_connections(tests_at_once).to_string();
        let options = ServerOptions::new().setting("max_connections", connections);
        let started = warm::start(&golden, options)?;
        let server = started.server;
        let (socket_dir, port) = (server.socket_dir().to_path_buf(), server.port());
        let own = (server, started.build);
        Self::connect(golden, started.dir, socket_dir, port, Some(own), None)
    }

    /// The server the run's processes share, or, if that fails, this process's own.
    fn shared(golden: Arc<BuiltGolden>, test: &RunTest) -> Result<Arc<TemplateServer>> {
        let connected = shared::server_for(&golden, test).and_then(|shared| {
            let at = &shared.address;
            let (dir, socket_dir, port) = (at.dir.clone(), at.socket_dir.clone(), at.port);
            Self::connect(golden.clone(), dir, socket_dir, port, None, Some(shared))
        });
        connected.or_else(|e| {
            eprintln!("pgclone: no template server shared with the other test processes ({e}); this process starts its own");
            Self::start(golden)
        })
    }

    fn connect(
        golden: Arc<BuiltGolden>,
        dir: PathBuf,
        socket_dir: PathBuf,
        port: u16,
        own: Option<(Server, Option<warm::GoldenBuild>)>,
        shared: Option<SharedServer>,
    ) -> Result<Arc<TemplateServer>> {
        let major = golden.env.binaries.version().major();
        let creator = creator_session(&golden, &socket_dir, port, major)?;
        let (server, at_start, dropper) = match own {
            Some((server, build)) => {
                let admin_db = admin_database(&golden);
                let params =
                    ConnectParams::socket(&socket_dir, port, SUPERUSER, admin_db, "pgclone drop");
                let mut dropper = Session::connect(&params)?;
                let at_start = AtStart::record_and_close(&golden, build, &mut dropper, admin_db);
                (Some(server), at_start, Some(Mutex::new(dropper)))
            }
            None => (None, None, None), // the keeper's to park
        };
        Ok(Arc::new(TemplateServer {
            socket_dir,
            port,
            major,
            golden,
            dir,
            server: Mutex::new(server),
            creators: Mutex::new(vec![creator]),
            creating: RwLock::new(()),
            dropper,
            kept: OnceLock::new(),
            shared,
            at_start,
        }))
    }

    /// Creates a database copied from the golden's database `template`; returns its name.
    pub fn create_database(&self, template: &str) -> Result<String> {
        let name = shared::database_name(template)?;
        let strategy = if crate::postgres::features::has_create_database_strategy(self.major) {
            " strategy = file_copy"
        } else {
            ""
        };
        let sql = format!(
            "create database {} template {}{strategy}",
            quote_ident(&name),
            quote_ident(template)
        );
        let _creating = self.creating.read().unwrap_or_else(|e| e.into_inner());
        self.with_creator(|creator| creator.query(&sql))?;
        Ok(name)
    }

    /// Runs `work` on an idle creator session, or on a new one if none is idle.
    fn with_creator<T>(&self, work: impl FnOnce(&mut Session) -> Result<T>) -> Result<T> {
        let idle = self.creators.lock().unwrap().pop();
        let mut creator = match idle {
            Some(creator) => creator,
            None => creator_session(&self.golden, &self.socket_dir, self.port, self.major)?,
        };
        let done = work(&mut creator);
        if !creator.is_lost() {
            self.creators.lock().unwrap().push(creator);
        }
        done
    }

    /// Drops a database this template server made, disconnecting its sessions.
    pub fn drop_database(&self, name: &str) -> Result<()> {
        match &self.dropper {
            Some(dropper) => drop_database_on(&mut dropper.lock().unwrap(), name),
            None => self.with_creator(|creator| drop_database_on(creator, name)),
        }
    }

    /// Drops the database on a background thread, so that a test's teardown does not wait for
    /// PostgreSQL (at exit the whole server goes).
    pub fn drop_database_later(self: &Arc<Self>, name: String) {
        let template = Arc::clone(self);
        let _ = std::thread::Builder::new()
            .name("pgclone-drop-database".into())
            .spawn(move || template.drop_database(&name));
    }

    /// Whether this is the server a nextest run's processes share (its keeper's, not ours).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Whether its server has exited (crashed, or was killed). A dead server's directory is
    /// removed here, unless a database of it was kept: nothing will use it again.
    fn has_died(&self) -> bool {
        if let Some(shared) = &self.shared {
            return !shared.address.keeper.is_alive();
        }
        let mut server = self.server.lock().unwrap();
        let died = server.as_mut().is_some_and(Server::has_exited);
        if died {
            server.take();
            // A kept one stays (marked when kept): only `gc --kept` removes it.
            if self.kept.get().is_none() {
                let _ = root::remove_clone_dir(&self.dir);
            }
        }
        died
    }

    /// Keeps the whole clone (its server stopped cleanly) when the process exits; returns the
    /// private socket directory made to restart it on. The caller marks the clone kept at once.
    pub fn keep(&self) -> Result<PathBuf> {
        if self.shared.is_some() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "a database in the template server this run's processes share goes with that server",
            )
            .hint("to keep a test's database, set PGCLONE_KEEP=failed or always (each process then has its own server), or use cluster mode"));
        }
        let env = &self.golden.env;
        self.kept
            .get_or_init(|| {
                // The user's now: all its databases take connections again (it is never parked).
                if let (Some(at_start), Some(dropper)) = (&self.at_start, &self.dropper) {
                    at_start.reopen(&mut dropper.lock().unwrap_or_else(|e| e.into_inner()));
                }
                SocketDir::create_for_kept(&env.socket_parent, env.run_as.as_ref(), &self.dir)
                    .map_err(Arc::new)
            })
            .clone()
            .map_err(|e| {
                let keep = format!("keep the template server's clone {}", self.dir.display());
                Error::new(e.kind(), keep).with_source(e)
            })
    }

    /// The socket directory made for a kept clone, if it was kept.
    fn kept_socket_dir(&self) -> Option<PathBuf> {
        self.kept.get().and_then(|kept| kept.as_ref().ok()).cloned()
    }
}

/// The connections a test holds on a template server at most: the session creating its
/// database, its client and a pool (sqlx's: up to 5).
const CONNECTIONS_PER_TEST: u32 = 7;

/// A template server's `max_connections` for `tests_at_once` tests at once: twice what they
/// hold (a test's sessions may linger for a moment after the next one started), and never fewer
/// than PostgreSQL's default, which tests opening connections of their own expect. Each slot
/// costs start-up time (about 20 ms of CPU per start and stop for 400 instead of 100).
pub(crate) fn max_connections(tests_at_once: u32) -> u32 {
    (2 * CONNECTIONS_PER_TEST * tests_at_once).max(100)
}

/// Drops `name` on `session` once its test's connection has closed.
fn drop_database_on(session: &mut Session, name: &str) -> Result<()> {
    wait_until_unused(name, |sql| session.query_value(sql))?;
    session.query(&drop_database_sql(name)).map(drop)
}

/// A new session for creating databases, in the admin database, set to clone files where the
/// server can.
fn creator_session(
    golden: &BuiltGolden,
    socket_dir: &std::path::Path,
    port: u16,
    major: u32,
) -> Result<Session> {
    let admin_db = admin_database(golden);
    let params = ConnectParams::socket(socket_dir, port, SUPERUSER, admin_db, "pgclone template");
    let mut session = Session::connect(&params)?;
    if crate::postgres::features::has_file_copy_method_clone(major) {
        session.query("set file_copy_method = clone")?;
    }
    Ok(session)
}

/// The database the admin sessions sit in: not the template's own (a session there would block
/// `CREATE DATABASE`).
pub(crate) fn admin_database(golden: &BuiltGolden) -> &'static str {
    if golden.dbname == "postgres" {
        "template1"
    } else {
        "postgres"
    }
}

/// At exit: stop every template server; park its data directory for the next process, or keep
/// its clone if a database in it was kept, or remove it.
fn stop_all() {
    let cells: Vec<_> = templates().lock().unwrap().values().cloned().collect();
    // One thread each: a suite with several fixture sets has a server per golden, and exit
    // waits for the slowest one rather than for their sum.
    std::thread::scope(|scope| {
        for template in cells.iter().filter_map(|cell| cell.get()) {
            scope.spawn(|| stop(template));
        }
    });
}

fn stop(template: &TemplateServer) {
    if template.shared.is_some() {
        return; // the keeper's: it stops once no process holds the lease
    }
    let server = template
        .server
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    // Waits for the creations and drops under way: none happens while the cluster's state is
    // checked, and it is parked without tests' databases.
    let _creating = template.creating.write().unwrap_or_else(|e| e.into_inner());
    let Some(dropper) = &template.dropper else {
        return; // only the shared server has none
    };
    let mut dropper = dropper.lock().unwrap_or_else(|e| e.into_inner());
    let at_start = template.at_start.as_ref();
    if template.kept.get().is_some() {
        let _ = server.map(Server::stop);
        let _ = root::mark_kept(&template.dir, template.kept_socket_dir().as_deref());
        return;
    }
    let Some(server) = server else {
        let _ = std::fs::remove_dir_all(&template.dir);
        return;
    };
    let _ = warm::stop_and_park(
        &template.golden,
        server,
        &template.dir,
        &mut dropper,
        at_start,
    );
}

impl std::fmt::Debug for TemplateServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateServer")
            .field("dir", &self.dir)
            .field("socket_dir", &self.socket_dir)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}
