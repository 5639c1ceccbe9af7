//! Running PostgreSQL programs: `initdb` and short probes (`postgres --version`, `pg_config`) to
//! completion, `postgres` as a child of this process.
//!
//! This is the only module that spawns or signals processes. Its rules:
//! - Children die with this process, even on SIGKILL: each one asks the kernel (`PR_SET_PDEATHSIG`)
//!   for SIGQUIT when its parent goes away. The kernel sends that signal when the *thread* that
//!   forked the child exits, and `cargo test` runs each test on its own short-lived thread, so every
//!   child is forked by one spawner thread that lives as long as the process. SIGQUIT is an
//!   immediate shutdown: postgres stops its backends and frees its shared memory.
//! - `postgres` is spawned directly (no pg_ctl) with its output in a log file, never the test's
//!   stdout, and is ready when a real connection succeeds (no 100 ms polling).
//! - Nothing here waits forever: programs run to completion are killed after a timeout; stopping
//!   is fast shutdown, then immediate, then SIGKILL, each bounded.
//! - When the caller is root, children run as the unprivileged [`RunAs`] user.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::config::Config;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::postgres::binaries::PgBinaries;
use crate::postgres::data_dir;
use crate::postgres::features;
use crate::postgres::options::{default_log_file, Resolved, ServerOptions};
use crate::postgres::run_as::RunAs;
use crate::postgres::socket_dir::SocketDir;
use crate::postgres::url::{connection_url, Endpoint};
use crate::postgres::wire::{self, Probe};

/// The superuser name pgclone's clusters are created with.
pub const SUPERUSER: &str = "postgres";

/// How long a start counts as quick (probed often) before probing slows down.
const QUICK_START: Duration = Duration::from_millis(200);
/// How long a server may take to accept connections (recovery of a large clone included).
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(120);
/// The port a Unix-socket-only server uses: its socket directory is private, so it never collides.
const SOCKET_ONLY_PORT: u16 = 5432;
/// What every cluster pgclone makes is created with (part of a golden's cache key): UTF8 in the
/// C locale, no fsync, trust only on the local socket, passwords over TCP.
pub(crate) const INITDB_ARGS: &[&str] = &[
    "-U",
    SUPERUSER,
    "-E",
    "UTF8",
    "--locale=C",
    "--no-sync",
    "--auth-local=trust",
    "--auth-host=scram-sha-256",
];
/// How long initdb may take before it is considered hung.
const INITDB_TIMEOUT: Duration = Duration::from_secs(300);
/// How many free TCP ports to try when another process takes the one picked first.
const PORT_ATTEMPTS: usize = 5;

/// Runs `initdb` for `data_dir` to completion, its output appended to `log_path`.
pub(crate) fn initdb(
    bins: &PgBinaries,
    data_dir: &Path,
    pwfile: &Path,
    run_as: Option<&RunAs>,
    log_path: &Path,
) -> Result<()> {
    // initdb only notes SIGQUIT and carries on: it dies with us by SIGKILL.
    let mut cmd = command(
        &bins.program("initdb"),
        run_as,
        parent_of(data_dir),
        Some(Signal::KILL),
    );
    cmd.arg("-D")
        .arg(data_dir)
        .args(INITDB_ARGS)
        .arg(format!("--pwfile={}", pwfile.display()));
    cmd.args(features::initdb_args(bins.version().major()));
    let log_start = file_len(log_path);
    redirect_output(&mut cmd, log_path, run_as)?;
    let mut child = spawn(cmd, "initdb", run_as)?;
    let Some(status) = wait_for_exit(&mut child, INITDB_TIMEOUT)? else {
        kill_group(child.id());
        let _ = child.wait();
        return Err(Error::new(
            ErrorKind::CommandFailed,
            format!(
                "initdb -D {} did not finish within {INITDB_TIMEOUT:?}{}",
                data_dir.display(),
                log_tail(log_path, log_start)
            ),
        ));
    };
    if !status.success() {
        return Err(Error::new(
            ErrorKind::CommandFailed,
            format!(
                "initdb -D {} failed ({status}){}",
                data_dir.display(),
                log_tail(log_path, log_start)
            ),
        ));
    }
    Ok(())
}

/// Runs a user's command to its end (`pgclone golden key`'s test run) as this process's user, in
/// `cwd`, with `env` added. Its stdout goes to this process's stderr (stdout
/// is the caller's report); it dies with this process.
pub(crate) fn run_to_end(
    program: &std::ffi::OsStr,
    args: &[std::ffi::OsString],
    cwd: &Path,
    env: &[(&str, &std::ffi::OsStr)],
) -> Result<ExitStatus> {
    let mut cmd = command(Path::new(program), None, cwd, Some(Signal::KILL));
    cmd.args(args).stdout(std::io::stderr());
    for (name, value) in env {
        cmd.env(name, value);
    }
    let name = program.to_string_lossy().into_owned();
    let mut child = spawn(cmd, &name, None)?;
    child.wait().doing("wait for", Path::new(program))
}

/// Runs a short-lived program (`postgres --version`, `pg_config`) as this process's user and
/// returns what it printed on stdout. Like every child it is forked by the spawner thread, reads
/// nothing (stdin is null) and dies with this process; its stderr is discarded, and after
/// `timeout` it is killed with its process group.
pub(crate) fn output_of(program: &Path, args: &[&str], timeout: Duration) -> Result<String> {
    let name = program.file_name().unwrap_or_default().to_string_lossy();
    let what = format!("`{name} {}`", args.join(" "));
    // It needs no particular working directory: `/` is one every user may enter.
    let mut cmd = command(program, None, Path::new("/"), Some(Signal::KILL));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = spawn(cmd, &name, None)?;
    // Read on a thread, so that a program filling the pipe cannot stall the wait for its exit.
    let stdout = child.stdout.take().expect("stdout is piped");
    let (sender, output) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.take(1 << 20).read_to_end(&mut bytes);
        let _ = sender.send(bytes);
    });
    let Some(status) = wait_for_exit(&mut child, timeout)? else {
        kill_group(child.id());
        let _ = child.wait();
        return Err(Error::new(
            ErrorKind::CommandFailed,
            format!(
                "{what} ({}) did not finish within {timeout:?}",
                program.display()
            ),
        ));
    };
    // A process it left behind may hold the pipe open: do not wait for that one.
    let bytes = output
        .recv_timeout(Duration::from_secs(1))
        .unwrap_or_default();
    if !status.success() {
        return Err(Error::new(
            ErrorKind::CommandFailed,
            format!("{what} ({}) failed ({status})", program.display()),
        ));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Everything needed to start a server on an existing data directory.
#[derive(Debug, Clone)]
pub(crate) struct StartSpec<'a> {
    pub env: &'a Resolved,
    pub options: &'a ServerOptions,
    pub data_dir: &'a Path,
    pub log_path: &'a Path,
}

/// A running `postgres`, child of this process. Dropping it shuts the server down immediately
/// (it is disposable); call [`Server::stop`] for a clean shutdown.
///
/// A guard (ARCHITECTURE.md): `Drop` stops the server, ignoring errors; [`close`](Server::close)
/// does the same and reports them; [`keep`](Server::keep) lets it run on; `Debug` shows where it
/// lives (pid, data directory, socket, log) and no secret.
pub struct Server {
    child: Child,
    socket_dir: SocketDir,
    port: u16,
    tcp: bool,
    data_dir: PathBuf,
    log_path: PathBuf,
    ready_after: Duration,
    detached: bool,
}

impl Server {
    /// Starts `postgres` on an existing data directory, after checking that it is one and that
    /// its major version matches the binaries. Returns once a connection succeeds.
    pub fn start(data_dir: impl AsRef<Path>, options: &ServerOptions) -> Result<Server> {
        let data_dir =
            std::path::absolute(data_dir.as_ref()).doing("resolve", data_dir.as_ref())?;
        let env = options.resolve(&Config::from_env()?)?;
        data_dir::check(&data_dir, &env.binaries)?;
        if let Some(user) = &env.run_as {
            user.check_can_reach(&data_dir, "the data directory")?;
        }
        let log_path = options
            .log_file
            .clone()
            .unwrap_or_else(|| default_log_file(&data_dir));
        Server::start_with(&StartSpec {
            env: &env,
            options,
            data_dir: &data_dir,
            log_path: &log_path,
        })
    }

    pub(crate) fn start_with(spec: &StartSpec<'_>) -> Result<Server> {
        let tcp = spec.options.tcp;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let port = if tcp { free_port()? } else { SOCKET_ONLY_PORT };
            let log_start = file_len(spec.log_path);
            match Server::start_on_port(spec, port, log_start) {
                Err(e)
                    if tcp
                        && attempts < PORT_ATTEMPTS
                        && port_was_taken(spec.log_path, log_start) =>
                {
                    drop(e); // another process took the port between picking and binding: pick again
                }
                result => return result,
            }
        }
    }

    /// Starts on `port`; the server's output starts at `log_start` in its log.
    fn start_on_port(spec: &StartSpec<'_>, port: u16, log_start: u64) -> Result<Server> {
        let started = Instant::now();
        let (env, options) = (spec.env, spec.options);
        let socket_dir = SocketDir::create(&env.socket_parent, env.run_as.as_ref())?;
        let listen = if options.tcp { "127.0.0.1" } else { "" };
        // SIGQUIT is an immediate shutdown: postgres stops its backends and frees shared memory.
        let mut cmd = command(
            &env.binaries.program("postgres"),
            env.run_as.as_ref(),
            parent_of(spec.data_dir),
            (!options.detached).then_some(Signal::QUIT),
        );
        cmd.arg("-D")
            .arg(spec.data_dir)
            .arg("-k")
            .arg(socket_dir.path())
            .arg("-p")
            .arg(port.to_string())
            .arg("-c")
            .arg(format!("listen_addresses={listen}"));
        for (name, value) in &options.settings {
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        redirect_output(&mut cmd, spec.log_path, env.run_as.as_ref())?;
        let child = spawn(cmd, "postgres", env.run_as.as_ref())?;
        let mut server = Server {
            child,
            socket_dir,
            port,
            tcp: options.tcp,
            data_dir: spec.data_dir.to_path_buf(),
            log_path: spec.log_path.to_path_buf(),
            ready_after: Duration::ZERO,
            detached: false,
        };
        let ready_database = options.ready_database.as_deref().unwrap_or("postgres");
        server.wait_until_ready(ready_database, options.start_timeout, log_start)?;
        server.ready_after = started.elapsed();
        Ok(server)
    }

    /// Probes the socket until a connection succeeds; fails at once if the child exits.
    fn wait_until_ready(&mut self, dbname: &str, timeout: Duration, log_start: u64) -> Result<()> {
        let probing_since = Instant::now();
        let deadline = probing_since + timeout;
        let socket = self.socket_path();
        let mut pause = Duration::from_micros(500);
        loop {
            if let Some(status) = self.child.try_wait().doing("wait for", &self.data_dir)? {
                return Err(self.start_error(
                    &format!("postgres exited ({status}) before accepting connections"),
                    log_start,
                ));
            }
            match wire::probe(&socket, SUPERUSER, dbname) {
                Probe::Ready => return Ok(()),
                Probe::NotYet(_) if Instant::now() >= deadline => {
                    let _ = self.shutdown(Shutdown::Immediate);
                    return Err(self.start_error(
                        &format!("postgres did not accept connections within {timeout:?}"),
                        log_start,
                    ));
                }
                Probe::NotYet(_) => {
                    thread::sleep(pause);
                    // A clone is ready in tens of milliseconds: look every millisecond then. A
                    // long recovery is not worth a rejected connection every millisecond.
                    let most = if probing_since.elapsed() < QUICK_START {
                        Duration::from_millis(1)
                    } else {
                        Duration::from_millis(10)
                    };
                    pause = (pause * 2).min(most);
                }
            }
        }
    }

    fn start_error(&self, what: &str, log_start: u64) -> Error {
        Error::new(
            ErrorKind::ServerStart,
            format!(
                "start server for {}: {what}{}",
                self.data_dir.display(),
                log_tail(&self.log_path, log_start)
            ),
        )
    }

    /// The directory holding the Unix socket (what libpq calls the host).
    pub fn socket_dir(&self) -> &Path {
        self.socket_dir.path()
    }

    /// The Unix socket file itself.
    pub fn socket_path(&self) -> PathBuf {
        self.socket_dir
            .path()
            .join(format!(".s.PGSQL.{}", self.port))
    }

    /// A libpq URL of database `dbname` on this server over its Unix socket, as the superuser
    /// `postgres` (the one pgclone's clusters are made with).
    pub fn connection_string(&self, dbname: &str) -> String {
        connection_url(
            Endpoint::Socket(self.socket_dir()),
            self.port,
            SUPERUSER,
            None,
            dbname,
        )
    }

    /// The port: a free TCP port on 127.0.0.1 when TCP is on, else the socket's number.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server also listens on 127.0.0.1.
    pub fn listens_on_tcp(&self) -> bool {
        self.tcp
    }

    /// The data directory it serves.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where its output goes.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the server run on after this value and this process are gone; returns its pid.
    /// Meant for servers started with [`ServerOptions::detached`]: others die with this process
    /// anyway. Stop it later with `pg_ctl stop -D <data dir>`, or SIGINT to the pid. The same as
    /// [`keep`](Server::keep).
    pub fn detach(self) -> u32 {
        self.keep()
    }

    /// Opts out of teardown, as every guard's `keep` does: the server runs on after this value
    /// (and, if started [`detached`](ServerOptions::detached), after this process), its socket
    /// directory with it; returns its pid. Nothing is stopped or removed.
    pub fn keep(mut self) -> u32 {
        self.detached = true;
        self.socket_dir.keep();
        self.child.id()
    }

    /// The teardown `Drop` does (an immediate shutdown, escalating to SIGKILL), reporting what
    /// failed. The same as [`stop_immediately`](Server::stop_immediately); [`stop`](Server::stop)
    /// shuts down cleanly.
    pub fn close(self) -> Result<()> {
        self.stop_immediately()
    }

    /// Whether the server has exited (crashed, or was killed), reaping it if so.
    pub(crate) fn has_exited(&mut self) -> bool {
        !matches!(self.exited(), Ok(None))
    }

    /// From spawning `postgres` to the first successful connection.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// Clean (fast) shutdown: PostgreSQL writes a shutdown checkpoint, so the data directory is
    /// consistent afterwards. Escalates to immediate shutdown and SIGKILL if it takes too long.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown(Shutdown::Fast).map(drop)
    }

    /// [`stop`](Server::stop), and whether the fast shutdown itself stopped the server, cleanly
    /// (`false` if it had to escalate, or the server had exited already).
    pub fn stop_cleanly(mut self) -> Result<bool> {
        self.shutdown(Shutdown::Fast)
    }

    /// Immediate shutdown, for servers whose files are about to be thrown away.
    pub fn stop_immediately(mut self) -> Result<()> {
        self.shutdown(Shutdown::Immediate).map(drop)
    }

    /// Shuts the server down from the step `first` on, escalating while it runs; whether that
    /// first step stopped it with exit status 0.
    fn shutdown(&mut self, first: Shutdown) -> Result<bool> {
        let steps = [
            (Shutdown::Fast, Signal::INT, Duration::from_secs(30)),
            (Shutdown::Immediate, Signal::QUIT, Duration::from_secs(5)),
            (Shutdown::Kill, Signal::KILL, Duration::from_secs(5)),
        ];
        for (step, signal, patience) in steps.iter().filter(|(step, ..)| *step >= first) {
            if self.exited()?.is_some() {
                return Ok(false);
            }
            if *signal == Signal::KILL {
                kill_group(self.child.id()); // the backends too: they are in its process group
            } else {
                signal_process(self.child.id(), *signal);
            }
            if let Some(status) = wait_for_exit(&mut self.child, *patience)? {
                return Ok(*step == first && status.success());
            }
        }
        Err(Error::new(
            ErrorKind::ServerStop,
            format!(
                "postgres (pid {}) for {} is still running after SIGKILL",
                self.child.id(),
                self.data_dir.display()
            ),
        ))
    }

    fn exited(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .doing("wait for server of", &self.data_dir)
    }
}

/// Where the server lives; it holds no secret.
impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("pid", &self.child.id())
            .field("data_dir", &self.data_dir)
            .field("socket_dir", &self.socket_dir.path())
            .field("port", &self.port)
            .field("tcp", &self.tcp)
            .field("log_path", &self.log_path)
            .field("kept", &self.detached)
            .finish()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.detached {
            let _ = self.shutdown(Shutdown::Immediate);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Shutdown {
    Fast,
    Immediate,
    Kill,
}

/// The pid of a live postmaster serving `data_dir`, from its `postmaster.pid`.
pub(crate) fn live_postmaster(data_dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()?;
    // As PostgreSQL itself decides (a live pid in the lock file), plus "it is a postgres": a
    // reused pid is rare, and treating the cluster as running is the safe mistake.
    is_postgres(pid).then_some(pid)
}

/// Whether process `pid` runs a postgres binary.
fn is_postgres(pid: u32) -> bool {
    crate::sys::process_args(pid).is_some_and(|args| {
        args.first()
            .is_some_and(|program| program.as_encoded_bytes().ends_with(b"postgres"))
    })
}

/// Whether process `pid` is a postgres serving `data_dir` (before signalling one we did not
/// start): its working directory is the data directory (the postmaster changes into it), or,
/// where the system does not show that, its command line names it.
fn serves(pid: u32, data_dir: &Path) -> bool {
    if !is_postgres(pid) {
        return false;
    }
    match (crate::sys::process_cwd(pid), data_dir.canonicalize()) {
        (Ok(cwd), Ok(dir)) => cwd == dir,
        _ => crate::sys::process_args(pid)
            .is_some_and(|args| args.iter().any(|arg| arg == data_dir.as_os_str())),
    }
}

/// Asks a server this process does not own (left behind by a killed process) to stop: SIGQUIT,
/// then SIGKILL. Only signals `pid` if it is a postgres serving `data_dir`.
pub(crate) fn stop_orphan(pid: u32, data_dir: &Path) {
    for signal in [Signal::QUIT, Signal::KILL] {
        if !serves(pid, data_dir) {
            return;
        }
        match signal {
            Signal::KILL => kill_group(pid),
            _ => signal_process(pid, signal),
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while serves(pid, data_dir) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Starts the keeper of a shared template server (`harness/shared.rs`): this test binary (the
/// running one, not whatever its path names by now), run again for libtest's `test` with
/// `PGCLONE_KEEPER=<keeper>` (the golden's key and the run's runner). Detached (its own session,
/// no death signal, its errors in `log`): it outlives this process, and stops its server itself.
/// Its stdin is `start_lock` (a handle on the lock held while a keeper starts): it holds the
/// lock until it serves ([`keeper_serves`]), even if this process exits first.
pub(crate) fn spawn_keeper(
    cwd: &Path,
    test: &str,
    keeper: &str,
    log: File,
    start_lock: File,
) -> Result<Keeper> {
    let mut cmd = command(&crate::sys::own_executable(), None, cwd, None);
    // --nocapture: libtest would swallow what the keeper says about why it stopped.
    cmd.args([
        test,
        "--exact",
        "--include-ignored",
        "--test-threads=1",
        "--nocapture",
    ])
    .env("PGCLONE_KEEPER", keeper)
    .env("PGCLONE_POOL", "0")
    .stdin(start_lock)
    .stdout(Stdio::null())
    .stderr(log);
    spawn(cmd, "the shared template server's keeper", None).map(Keeper)
}

/// The keeper's side of [`spawn_keeper`]'s stdin: once it serves, it lets go of the start lock
/// by putting `/dev/null` in stdin's place.
pub(crate) fn keeper_serves() -> Result<()> {
    let null = Path::new("/dev/null");
    let null_file = File::open(null).doing("open", null)?;
    rustix::stdio::dup2_stdin(&null_file)
        .map_err(|e| Error::new(ErrorKind::Io, "put /dev/null in place of stdin").with_source(e))
}

/// A keeper this process started, until it serves.
#[derive(Debug)]
pub(crate) struct Keeper(Child);

impl Keeper {
    /// How it ended, if it did.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.0.try_wait().ok().flatten()
    }

    /// Gives up on it (it never served): killed and reaped.
    pub fn abandon(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A command for a PostgreSQL program: no stdin, its own process group, the run-as user's uid
/// and gid when the caller is root, and death with this process.
///
/// `death_signal: None` detaches the child instead: its own session, no death signal, so it
/// outlives this process (`pgclone clone --start`).
fn command(
    program: &Path,
    run_as: Option<&RunAs>,
    cwd: &Path,
    death_signal: Option<Signal>,
) -> Command {
    let mut cmd = Command::new(program);
    // The working directory must be one the run-as user may enter (not /root, say).
    cmd.current_dir(cwd).stdin(Stdio::null());
    if let Some(user) = run_as {
        cmd.uid(user.uid()).gid(user.gid());
    }
    let Some(death_signal) = death_signal else {
        // SAFETY: setsid is async-signal-safe and allocates nothing.
        unsafe {
            cmd.pre_exec(|| rustix::process::setsid().map(drop).map_err(Into::into));
        }
        return cmd;
    };
    cmd.process_group(0);
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs between fork and exec; arm_parent_death_signal allocates nothing
    // and only makes two async-signal-safe system calls. It runs after the uid change, which
    // would otherwise clear the death signal, and fails (so the child does not run) if this
    // process died before the signal was armed.
    unsafe {
        cmd.pre_exec(move || crate::sys::arm_parent_death_signal(death_signal, parent));
    }
    cmd
}

/// Forks `cmd` on the spawner thread (see the module docs for why).
fn spawn(cmd: Command, what: &str, run_as: Option<&RunAs>) -> Result<Child> {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("pgclone-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in incoming {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the pgclone spawner thread");
        requests
    });
    let program = PathBuf::from(cmd.get_program());
    let cwd = cmd
        .get_current_dir()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let (reply, answer) = mpsc::channel();
    spawner
        .send((cmd, reply))
        .expect("the pgclone spawner thread lives as long as the process");
    answer
        .recv()
        .expect("the pgclone spawner thread answers every request")
        .doing(&format!("start {what}"), &program)
        .map_err(|e| match run_as {
            // The cause may be the uid change or the working directory, not the program.
            Some(user) => e.hint(format!(
                "it runs as user `{}` in {}",
                user.name(),
                cwd.display()
            )),
            None => e,
        })
}

/// Sends the program's output to `log_path`, a file that belongs to the user who runs it (so
/// that it can be restarted by hand, as that user, with the same log). Never through a symlink.
fn redirect_output(cmd: &mut Command, log_path: &Path, run_as: Option<&RunAs>) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(log_path)
        .doing("open log file", log_path)?;
    // A hard link planted where the log goes would turn the chown below against its target.
    let links =
        std::os::unix::fs::MetadataExt::nlink(&log.metadata().doing("stat log file", log_path)?);
    if links != 1 {
        return Err(Error::new(
            ErrorKind::Untrusted,
            format!(
                "log file {} has {links} names (a hard link): pgclone will not write or chown it",
                log_path.display()
            ),
        )
        .hint("remove it; pgclone creates its log files itself"));
    }
    if let Some(user) = run_as {
        rustix::fs::fchown(
            &log,
            Some(rustix::fs::Uid::from_raw(user.uid())),
            Some(rustix::fs::Gid::from_raw(user.gid())),
        )
        .map_err(std::io::Error::from)
        .doing("chown log file", log_path)?;
    }
    let log2 = log.try_clone().doing("open log file", log_path)?;
    cmd.stdout(log).stderr(log2);
    Ok(())
}

fn signal_process(pid: u32, signal: Signal) {
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// SIGKILL to a child's whole process group (it leads its own group: `process_group(0)`).
fn kill_group(pid: u32) {
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process_group(pid, Signal::KILL);
    }
}

fn wait_for_exit(child: &mut Child, patience: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + patience;
    let mut pause = Duration::from_micros(200);
    loop {
        if let Some(status) = child
            .try_wait()
            .doing("wait for process", Path::new(&child.id().to_string()))?
        {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

fn free_port() -> Result<u16> {
    portpicker::pick_unused_port()
        .ok_or_else(|| Error::new(ErrorKind::ServerStart, "no free TCP port on 127.0.0.1"))
}

fn port_was_taken(log_path: &Path, log_start: u64) -> bool {
    read_from(log_path, log_start).contains("Address already in use")
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("/"))
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.seek(SeekFrom::Start(offset));
        let _ = file.take(1 << 20).read_to_string(&mut text);
    }
    text
}

/// The last lines a program wrote to its log since `offset`, formatted to end an error message.
pub(crate) fn log_tail(log_path: &Path, offset: u64) -> String {
    let text = read_from(log_path, offset);
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(20)..];
    if tail.is_empty() {
        return format!("\n  (nothing in the log {})", log_path.display());
    }
    format!(
        "\n  last lines of {}:\n    {}",
        log_path.display(),
        tail.join("\n    ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_of_captures_stdout_and_kills_what_overruns() {
        let echo = output_of(Path::new("/bin/echo"), &["hello"], Duration::from_secs(10));
        assert_eq!(echo.unwrap(), "hello\n");
        let started = Instant::now();
        let sleep = output_of(Path::new("/bin/sleep"), &["10"], Duration::from_millis(100));
        assert!(sleep.unwrap_err().to_string().contains("did not finish"));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(output_of(Path::new("/bin/false"), &[], Duration::from_secs(10)).is_err());
    }
}
