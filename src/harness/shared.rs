//! Template servers shared by the processes of a nextest run.
//!
//! nextest runs each test in a process of its own. A template server per process would clone and
//! start a server for a single database, so in a run (`NEXTEST_RUN_ID`) the database-mode tests
//! of one golden share one template server, which a *keeper* process runs:
//!
//! - `<root>/shared/<key>.lease`: every process using the server holds a shared `flock` on it
//!   for its whole life (the kernel drops it however the process ends).
//! - `<root>/shared/<key>.start`: held exclusively while a process checks for a keeper and, if
//!   there is none, starts one and waits until it serves. The keeper holds it too (its stdin is
//!   a handle on it) until it serves, so a process that starts one without waiting for it (the
//!   keepers started ahead) may exit meanwhile without letting another process start a second.
//! - `<root>/shared/<key>.server`: written by the keeper once its server accepts connections
//!   (the keeper's process id, its clone directory, socket directory and port); removed before
//!   the server stops.
//!
//! The keeper is the test binary itself, run again for the test that needed it, with
//! `PGCLONE_KEEPER=<golden key> <runner>` set: the harness goes as far as the golden, then serves
//! it instead of running the test. It clones the golden into a clone directory of its own (reaped
//! like any other if the keeper is killed; the server dies with the keeper).
//!
//! The *runner* is nextest itself: the nearest ancestor of the test process that started the
//! keeper that is not in the run ([`ProcessId::runner`]; a wrapper between them is). The run is
//! over when the runner is gone; until then a golden's tests may come at any time (nextest
//! runs them in name order, mixed with other goldens' tests). So the keeper stops once nobody holds
//! the lease and either the runner is gone or nobody has held it for [`IDLE_LIMIT`]: it takes the
//! lease exclusively (a process arriving then waits, then starts a new keeper), stops its server
//! and removes the clone, having dropped the databases made for tests first. A test process never
//! drops its database (a test's database is named after its process): the keeper drops those
//! whose process is gone when it stops, or sooner once they pass [`LEFTOVER_BUDGET`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::harness::golden::BuiltGolden;
use crate::harness::{template, warm};
use crate::postgres::binaries::PgBinaries;
use crate::postgres::libpq::ConnectParams;
use crate::postgres::options::ServerOptions;
use crate::postgres::server::{self, SUPERUSER};
use crate::postgres::session::{drop_database_sql, Session};
use crate::postgres::wire::quote_literal;
use crate::store::lock::FileLock;
use crate::store::root::{self, ProcessId, Root};

/// How long a keeper of a run still going waits, with no process holding the lease, before it
/// stops its server: the golden's tests are likely over.
pub(crate) const IDLE_LIMIT: Duration = Duration::from_secs(30);
/// How often a keeper looks at the lease and its server.
const POLL: Duration = Duration::from_millis(50);
/// How often it looks at the databases of processes that are gone.
const SWEEP_EVERY: u32 = 4;
/// How much the databases of processes that are gone may hold (`pg_database_size`, which
/// counts extents shared with the template as the database's own) before the keeper drops them
/// while the run goes on; below it, they go when the keeper stops, after the run. A `DROP
/// DATABASE` makes the server checkpoint and interrupt every session: work the run's tests
/// would wait for (bookshelf under nextest, XFS, PG 18: 0.93 s -> 0.88 s, median of 14 runs).
const LEFTOVER_BUDGET: u64 = 1 << 30;

/// The shared server's `max_connections`, for a run of `test_threads` processes at once
/// (`NEXTEST_TEST_THREADS`; a test process runs one test). Unknown (a nextest that does not
/// say): 400, enough for dozens at once.
fn max_connections(test_threads: Option<u32>) -> u32 {
    test_threads.map_or(400, template::max_connections)
}

/// A test process of a nextest run: its test (libtest's name, which a keeper runs again) and the
/// run (`NEXTEST_RUN_ID`).
#[derive(Debug, Clone)]
pub(crate) struct RunTest {
    pub test: String,
    pub run: String,
}

/// The run's server for a golden, as this process uses it.
#[derive(Debug)]
pub(crate) struct SharedServer {
    pub address: Address,
    /// This process's lease: held as long as the process uses the server (never read: holding
    /// it is the point).
    _lease: FileLock,
}

/// What a `.server` file says: the keeper, its clone directory, and where its server listens.
#[derive(Debug)]
pub(crate) struct Address {
    pub keeper: ProcessId,
    pub dir: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
}

/// The files that coordinate the keeper of one golden and its users.
struct Files {
    lease: PathBuf,
    start: PathBuf,
    server: PathBuf,
    /// The keeper's errors.
    log: PathBuf,
}

impl Files {
    fn of(golden: &BuiltGolden) -> Files {
        Files::at(&golden.root, &golden.key())
    }

    fn at(root: &Root, key: &str) -> Files {
        let dir = root.shared_dir();
        Files {
            lease: dir.join(format!("{key}.lease")),
            start: dir.join(format!("{key}.start")),
            server: dir.join(format!("{key}.server")),
            log: dir.join(format!("{key}.log")),
        }
    }
}

/// Removes the files of golden `key`'s shared server, as the golden is removed (unused for a
/// week: no run shares its server).
pub(crate) fn remove_files(root: &Root, key: &str) {
    let files = Files::at(root, key);
    for path in [files.server, files.log, files.start, files.lease] {
        let _ = std::fs::remove_file(path);
    }
}

/// The PostgreSQL binaries to use. In a nextest run, the ones its first process found: it
/// records them in `<root>/shared/run-<hash>.binaries` (`<hash>`: SHA-256 of the run and of what
/// the search reads from the environment), and the run's other processes (one per test) use
/// them without searching again, which takes 60–100 ms a process for Debian's packages
/// (`pg_config` and `postgres --version`). A record whose binaries are gone is replaced;
/// records older than a day are removed.
pub(crate) fn binaries(config: &Config, root: &Root) -> Result<PgBinaries> {
    let Some(run) = &config.run_id else {
        return PgBinaries::find_with(config);
    };
    // What the search reads from the environment.
    let pg_version = config.pg_version.map(|v| v.to_string()).unwrap_or_default();
    let pg_bin = config.pg_bin.clone().unwrap_or_default();
    let parts = [
        run.as_bytes(),
        pg_version.as_bytes(),
        pg_bin.as_os_str().as_encoded_bytes(),
    ];
    let path = config
        .path
        .iter()
        .map(|dir| dir.as_os_str().as_encoded_bytes());
    let name = crate::store::record_name(parts.into_iter().chain(path));
    let record = root.shared_dir().join(format!("run-{name}.binaries"));
    let recorded = std::fs::read_to_string(&record).ok().and_then(|text| {
        let (dir, version) = text.split_once('\n')?;
        PgBinaries::known(Path::new(dir), version.trim_end())
    });
    if let Some(binaries) = recorded {
        return Ok(binaries);
    }
    let found = PgBinaries::find_with(config)?;
    if let Some(dir) = found.bin_dir().to_str().filter(|dir| !dir.contains('\n')) {
        let _ = crate::store::write_atomically(&record, &format!("{dir}\n{}\n", found.version()));
        // Records of runs over a day ago, and files a process died while writing.
        let binaries_record = |name: &str| {
            name.starts_with("run-") && name.ends_with(".binaries") || name.starts_with(".tmp")
        };
        let day = Duration::from_secs(24 * 3600);
        crate::store::remove_older_than(&root.shared_dir(), day, binaries_record);
    }
    Ok(found)
}

/// The shared server of `golden`, started by a new keeper (the test binary re-run for `test`)
/// if none serves. Holds this process's lease from now on.
pub(crate) fn server_for(golden: &Arc<BuiltGolden>, test: &RunTest) -> Result<SharedServer> {
    let files = Files::of(golden);
    let patience = Duration::from_secs(10);
    // Shared first: a keeper stopping now holds it exclusively, and its server is not ours.
    let lease = FileLock::shared(&files.lease, patience, || {
        eprintln!("pgclone: waiting for the shared template server of this run to stop")
    })?;
    let start = FileLock::exclusive(&files.start, patience, || {
        eprintln!("pgclone: waiting for another test process to start the shared template server")
    })?;
    let with_lease = |address| SharedServer {
        address,
        _lease: lease,
    };
    if let Some(address) = read_server_file(&files.server) {
        return Ok(with_lease(address));
    }
    // The runner (nextest), whose end is the end of the run.
    let runner = ProcessId::runner(&test.run)?;
    let keeper = spawn_keeper(golden, &test.test, &runner, &start)?;
    wait_for_keeper(keeper, &files, server::DEFAULT_START_TIMEOUT).map(with_lease)
}

/// Starts a keeper of `golden` for the run of `runner`, unless one serves, is starting or is
/// stopping; does not wait for it to serve (it holds the start lock until it does).
pub(crate) fn start_keeper(golden: &BuiltGolden, test: &str, runner: &ProcessId) -> Result<()> {
    let files = Files::of(golden);
    let (Some(_lease), Some(start)) = (
        FileLock::try_shared(&files.lease)?,
        FileLock::try_exclusive(&files.start)?,
    ) else {
        return Ok(()); // a keeper stops, or another process starts one
    };
    if read_server_file(&files.server).is_none() {
        spawn_keeper(golden, test, runner, &start)?;
    }
    Ok(())
}

/// A new keeper of `golden`, which runs `test` again. It holds the start lock (`start`, which
/// the caller holds) until it serves: the caller may exit before.
fn spawn_keeper(
    golden: &BuiltGolden,
    test: &str,
    runner: &ProcessId,
    start: &FileLock,
) -> Result<server::Keeper> {
    let files = Files::of(golden);
    let log = std::fs::File::create(&files.log).doing("create", &files.log)?;
    server::spawn_keeper(
        &Config::working_dir()?,
        test,
        &format!("{} {runner}", golden.key()),
        log,
        start.handle_for_child()?,
    )
}

/// The `.server` file's address, if its keeper is alive.
fn read_server_file(path: &Path) -> Option<Address> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let address = Address {
        keeper: ProcessId::parse(lines.next()?)?,
        dir: PathBuf::from(lines.next()?),
        socket_dir: PathBuf::from(lines.next()?),
        port: lines.next()?.parse().ok()?,
    };
    address.keeper.is_alive().then_some(address)
}

fn wait_for_keeper(
    mut keeper: server::Keeper,
    files: &Files,
    timeout: Duration,
) -> Result<Address> {
    let started = Instant::now();
    let log = || {
        let text = std::fs::read_to_string(&files.log).unwrap_or_default();
        let last: Vec<&str> = text.lines().rev().take(5).collect();
        last.into_iter().rev().collect::<Vec<_>>().join("\n")
    };
    loop {
        if let Some(address) = read_server_file(&files.server) {
            // Not waited for: it outlives this process, and init reaps it.
            drop(keeper);
            return Ok(address);
        }
        if let Some(status) = keeper.exited() {
            return Err(Error::new(
                ErrorKind::ServerStart,
                format!(
                    "the keeper of the shared template server exited ({status}) before serving: {}",
                    log()
                ),
            ));
        }
        if started.elapsed() > timeout {
            keeper.abandon();
            return Err(Error::new(
                ErrorKind::ServerStart,
                format!(
                    "the keeper of the shared template server did not serve within {} s",
                    timeout.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A database name that says which process made it, so that the keeper can drop it once that
/// process is gone: `<prefix>_<pid>_<start time>_<random>`.
pub(crate) fn database_name(prefix: &str) -> Result<String> {
    let prefix: String = prefix.chars().take(24).collect();
    let owner = ProcessId::current()?.to_string().replace(' ', "_");
    let random = &crate::postgres::data_dir::new_password()?[..8];
    Ok(format!("{prefix}_{owner}_{random}"))
}

/// The process that made the database named by [`database_name`].
fn maker_of(name: &str) -> Option<ProcessId> {
    let mut parts = name.rsplit('_');
    let _random = parts.next()?;
    let start = parts.next()?;
    let pid = parts.next()?;
    ProcessId::parse(&format!("{pid} {start}"))
}

/// The keeper: serves `golden` until nobody uses it, then exits the process. `asked` is
/// `PGCLONE_KEEPER`: the golden's key (it must be `golden`'s) and the runner; `test_threads`:
/// `NEXTEST_TEST_THREADS`. Never returns.
pub(crate) fn keep_serving(golden: &Arc<BuiltGolden>, asked: &str, test_threads: Option<u32>) -> ! {
    let code = match serve(golden, asked, test_threads) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("pgclone keeper: {e}");
            1
        }
    };
    std::process::exit(code)
}

/// The golden a keeper was asked to serve (`asked` is `PGCLONE_KEEPER`: its key, then the
/// runner), which its test's recipe must still give.
pub(crate) fn keeper_golden(asked: &str) -> &str {
    asked.split(' ').next().unwrap_or_default()
}

/// Serves `golden`, whose key `check_serves` checked against the keeper's (`keeper_golden`).
fn serve(golden: &Arc<BuiltGolden>, asked: &str, test_threads: Option<u32>) -> Result<()> {
    let (_key, runner) = asked.split_once(' ').unwrap_or((asked, ""));
    // Unknown: as good as gone (the server then lasts while processes hold the lease).
    let runner = ProcessId::parse(runner);
    let run_is_over = || !runner.is_some_and(|runner| runner.is_alive());
    let files = Files::of(golden);
    let connections = max_connections(test_threads).to_string();
    let options = ServerOptions::new().setting("max_connections", connections);
    let warm::Started {
        mut server,
        dir,
        build,
    } = warm::start(golden, options)?;
    let serving = (|| {
        let admin = template::admin_database(golden);
        let mut sweeper = Session::connect(&ConnectParams::socket(
            server.socket_dir(),
            server.port(),
            SUPERUSER,
            admin,
            "pgclone keeper",
        ))?;
        let at_start = warm::AtStart::record_and_close(golden, build, &mut sweeper, admin);
        write_server_file(&files.server, &dir, server.socket_dir(), server.port())?;
        server::keeper_serves()?;
        let mut idle_since: Option<Instant> = None;
        for round in 1u32.. {
            std::thread::sleep(POLL);
            if server.has_exited() {
                return Err(Error::new(
                    ErrorKind::ServerStart,
                    "the shared template server exited",
                ));
            }
            match FileLock::try_exclusive(&files.lease)? {
                // Nobody uses it, and nobody will: stop, holding the lease so nobody starts to.
                Some(lease)
                    if run_is_over() || idle_since.is_some_and(|t| t.elapsed() >= IDLE_LIMIT) =>
                {
                    remove_server_file(&files.server);
                    let stopped =
                        warm::stop_and_park(golden, server, &dir, &mut sweeper, at_start.as_ref());
                    drop(lease);
                    return stopped;
                }
                Some(_) => {
                    idle_since.get_or_insert_with(Instant::now);
                }
                None => idle_since = None,
            }
            if round % SWEEP_EVERY == 0 {
                // Not worth stopping the run's server for: the next sweep tries again.
                if let Err(e) = drop_leftovers_over_budget(&mut sweeper, &golden.templates) {
                    eprintln!("pgclone keeper: {e}");
                }
            }
        }
        unreachable!("the loop returns")
    })();
    // After an error (the stop removed it before the lease went): another keeper may serve by now.
    if serving.is_err() {
        remove_server_file(&files.server);
        let _ = root::remove_clone_dir(&dir);
    }
    serving
}

/// Removes the `.server` file if it is this keeper's.
fn remove_server_file(path: &Path) {
    let mine = ProcessId::current().ok().map(|me| me.to_string());
    let text = std::fs::read_to_string(path).unwrap_or_default();
    if mine.is_some_and(|me| text.lines().next() == Some(me.as_str())) {
        let _ = std::fs::remove_file(path);
    }
}

fn write_server_file(path: &Path, dir: &Path, socket_dir: &Path, port: u16) -> Result<()> {
    let text = format!(
        "{}\n{}\n{}\n{port}\n",
        ProcessId::current()?,
        dir.display(),
        socket_dir.display()
    );
    crate::store::write_atomically(path, &text)
}

/// Drops the databases made for tests from the golden's `templates`: those whose making process
/// is gone, or, with `all`, every one.
pub(crate) fn drop_test_databases(
    session: &mut Session,
    templates: &[String],
    all: bool,
) -> Result<()> {
    for name in test_databases(session, templates, all)? {
        drop_database(session, &name);
    }
    Ok(())
}

/// Drops the databases of processes that are gone once together they hold more than
/// [`LEFTOVER_BUDGET`].
fn drop_leftovers_over_budget(session: &mut Session, templates: &[String]) -> Result<()> {
    let gone = test_databases(session, templates, false)?;
    if gone.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = gone.iter().map(|name| quote_literal(name)).collect();
    let held = session.query_value(&format!(
        "select coalesce(sum(pg_database_size(datname)), 0)::text from pg_database where datname in ({})",
        names.join(", ")
    ))?;
    if held.parse::<u64>().is_ok_and(over_budget) {
        for name in gone {
            drop_database(session, &name);
        }
    }
    Ok(())
}

/// Whether leftovers holding `bytes` are to be dropped while the run goes on.
fn over_budget(bytes: u64) -> bool {
    bytes > LEFTOVER_BUDGET
}

/// The databases made from `templates` for tests (named by [`database_name`]) whose making
/// process is gone, or, with `all`, every one.
fn test_databases(session: &mut Session, templates: &[String], all: bool) -> Result<Vec<String>> {
    let list = |names: Vec<String>| names.join(", ");
    let patterns = templates.iter().map(|template| {
        let prefix: String = template.chars().take(24).collect();
        quote_literal(&format!("{}\\_%", prefix.replace('_', "\\_")))
    });
    let rows = session.query(&format!(
        "select datname from pg_database where datname like any (array[{}]) and datname <> all (array[{}])",
        list(patterns.collect()),
        list(templates.iter().map(|t| quote_literal(t)).collect()),
    ))?;
    Ok(rows
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .filter(|name| maker_of(name).is_some_and(|maker| all || !maker.is_alive()))
        .collect())
}

/// Drops a test's database. A failure is left for the next sweep, or the server's end.
fn drop_database(session: &mut Session, name: &str) {
    let _ = session.query(&drop_database_sql(name));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_name_says_which_process_made_it() {
        let name = database_name("bookshelf_with_a_long_golden_name").unwrap();
        assert!(name.len() <= 63, "{name}");
        assert!(name.starts_with("bookshelf_with_a_long_go_"), "{name}");
        assert_eq!(maker_of(&name), Some(ProcessId::current().unwrap()));
        assert_eq!(maker_of("bookshelf"), None);
    }

    #[test]
    fn the_shared_servers_connections_follow_the_runs_parallelism() {
        assert_eq!(
            max_connections(Some(2)),
            100,
            "PostgreSQL's default at least"
        );
        assert_eq!(max_connections(Some(20)), 280);
        assert_eq!(max_connections(None), 400, "a nextest that does not say");
    }

    #[test]
    fn leftovers_wait_for_the_keepers_stop_until_they_pass_a_gibibyte() {
        assert!(!over_budget(0));
        assert!(
            !over_budget(100 * (8 << 20)),
            "a hundred copies of an 8 MB database"
        );
        assert!(
            over_budget(3 * (400 << 20)),
            "three copies of a 400 MB fixture"
        );
    }
}
