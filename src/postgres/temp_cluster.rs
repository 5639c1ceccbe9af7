//! A throwaway cluster: `initdb` into `<root>/clones/<id>/`, started, removed on drop.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::Result;
use crate::postgres::binaries::PgBinaries;
use crate::postgres::data_dir;
use crate::postgres::options::ServerOptions;
use crate::postgres::server::{Server, StartSpec, SUPERUSER};
use crate::postgres::url::{connection_url, Endpoint};
use crate::store::root::{self, Root};

/// How long each step of making a [`TempCluster`] took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Running `initdb`.
    pub initdb: Duration,
    /// From spawning `postgres` to the first successful connection.
    pub start: Duration,
}

/// A fresh, empty cluster that lives as long as this value: made with `initdb`, served by a
/// `postgres` child of this process, removed with its files on drop (also when a test panics).
///
/// The server dies with the process even on SIGKILL, and the next process that uses the same
/// pgclone directory removes what was left. Like `tempfile::TempDir`, [`close`](Self::close)
/// reports cleanup errors that `Drop` has to ignore, and [`keep`](Self::keep) opts out.
///
/// A guard (ARCHITECTURE.md): `Drop` stops the server and removes the directory, ignoring
/// errors; `close` does the same and reports them; `keep` opts out and never deletes; `Debug`
/// shows where it lives and redacts the password.
///
/// ```no_run
/// let cluster = pgclone::server::TempCluster::start()?;
/// println!("psql '{}'", cluster.connection_string());
/// # Ok::<(), pgclone::Error>(())
/// ```
pub struct TempCluster {
    dir: PathBuf,
    server: Option<Server>,
    binaries: PgBinaries,
    password: String,
    timings: Timings,
}

/// Options for a [`TempCluster`]: where it lives, and how its server runs.
#[derive(Debug, Clone, Default)]
pub struct TempClusterBuilder {
    root: Option<PathBuf>,
    options: ServerOptions,
}

impl TempCluster {
    /// Makes and starts a cluster with the defaults and the environment's settings.
    pub fn start() -> Result<TempCluster> {
        TempCluster::builder().start()
    }

    /// Options for a cluster.
    pub fn builder() -> TempClusterBuilder {
        TempClusterBuilder::default()
    }

    /// The libpq URL of the `postgres` database: over TCP (with the password) when TCP is on,
    /// else over the Unix socket.
    pub fn connection_string(&self) -> String {
        self.connection_string_for("postgres")
    }

    /// The libpq URL of database `dbname`.
    pub fn connection_string_for(&self, dbname: &str) -> String {
        let server = self.server();
        if server.listens_on_tcp() {
            connection_url(
                Endpoint::Tcp,
                server.port(),
                SUPERUSER,
                Some(&self.password),
                dbname,
            )
        } else {
            server.connection_string(dbname)
        }
    }

    /// The host clients use: the socket directory, or `127.0.0.1` when TCP is on.
    pub fn host(&self) -> String {
        let server = self.server();
        if server.listens_on_tcp() {
            "127.0.0.1".to_string()
        } else {
            server.socket_dir().to_string_lossy().into_owned()
        }
    }

    /// The port (with a Unix socket, part of the socket's file name).
    pub fn port(&self) -> u16 {
        self.server().port()
    }

    /// The superuser to connect as.
    pub fn user(&self) -> &str {
        SUPERUSER
    }

    /// The superuser's password (needed over TCP only; the Unix socket trusts local users).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The directory that holds everything of this cluster (data, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The binaries serving it.
    pub fn binaries(&self) -> &PgBinaries {
        &self.binaries
    }

    /// The running server.
    pub fn server(&self) -> &Server {
        self.server
            .as_ref()
            .expect("the server runs until the TempCluster is consumed")
    }

    /// How long initdb and startup took.
    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// Stops the server and removes the files, reporting what failed (`Drop` ignores errors).
    pub fn close(mut self) -> Result<()> {
        self.teardown()
    }

    /// Opts out of cleanup: stops the server cleanly, marks the directory so that nothing reaps
    /// it (only `pgclone gc --kept` removes it), and returns it. Start it again with
    /// `postgres -D <dir>/data`. It never deletes the files, not even when it fails (the server
    /// would not stop, the mark could not be written): they stay, unmarked, and the error says so.
    pub fn keep(mut self) -> Result<PathBuf> {
        // Taken first: whatever fails below, neither this method nor `Drop` removes it.
        let dir = std::mem::take(&mut self.dir);
        let stopped = match self.server.take() {
            Some(server) => server.stop(),
            None => Ok(()),
        };
        stopped
            .and_then(|()| root::mark_kept(&dir, None))
            .map_err(|e| {
                e.hint(format!(
                    "the files stay in {}, but unmarked: the first use of the pgclone directory \
                     after this process exits removes them",
                    dir.display()
                ))
            })?;
        Ok(dir)
    }

    fn teardown(&mut self) -> Result<()> {
        let stopped = match self.server.take() {
            Some(server) => server.stop_immediately(),
            None => Ok(()),
        };
        if self.dir.as_os_str().is_empty() {
            return stopped;
        }
        let removed = root::remove_clone_dir(&self.dir);
        self.dir = PathBuf::new();
        stopped.and(removed)
    }
}

/// Where the cluster lives and how to reach it; never the password (`Debug` output ends up in
/// logs and panic messages).
impl std::fmt::Debug for TempCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("TempCluster");
        out.field("dir", &self.dir)
            .field("data_dir", &self.data_dir());
        if let Some(server) = &self.server {
            out.field("pid", &server.pid())
                .field("socket_dir", &server.socket_dir())
                .field("port", &server.port())
                .field("tcp", &server.listens_on_tcp());
        }
        out.field("password", &"<redacted>")
            .field("binaries", &self.binaries.bin_dir())
            .field("timings", &self.timings)
            .finish()
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

impl TempClusterBuilder {
    /// Put the cluster under this pgclone directory (default: `PGCLONE_DIR`, else
    /// `<cargo target dir>/pgclone`).
    pub fn root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.root = Some(dir.into());
        self
    }

    /// How to run the server (binaries, socket directory, TCP, settings, timeout).
    pub fn server_options(mut self, options: ServerOptions) -> Self {
        self.options = options;
        self
    }

    /// Shorthand for changing one of the [`ServerOptions`].
    pub fn with(mut self, change: impl FnOnce(ServerOptions) -> ServerOptions) -> Self {
        self.options = change(self.options);
        self
    }

    /// Makes the cluster and starts it. On failure nothing is left behind.
    pub fn start(self) -> Result<TempCluster> {
        let config = Config::from_env()?;
        let env = self.options.resolve(&config)?;
        let run_as = env.run_as.as_ref();
        let root = Root::open(self.root.as_deref(), &config, run_as)?;
        root.reap_once_per_process();

        let password = data_dir::new_password()?;
        // From here on the value owns the directory: any early return removes it.
        let mut cluster = TempCluster {
            dir: root.new_clone_dir(run_as)?,
            server: None,
            binaries: env.binaries.clone(),
            password,
            timings: Timings::default(),
        };
        let data = cluster.data_dir();
        let log_path = cluster.dir.join("postgres.log");

        let started = Instant::now();
        data_dir::create(&env, &data, &log_path, &cluster.password, &[])?;
        cluster.timings.initdb = started.elapsed();

        let server = Server::start_with(&StartSpec {
            env: &env,
            options: &self.options,
            data_dir: &data,
            log_path: &log_path,
        })?;
        cluster.timings.start = server.ready_after();
        cluster.server = Some(server);
        Ok(cluster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_where_the_cluster_lives_but_not_its_password() {
        let cluster = TempCluster::builder()
            .with(|o| o.tcp(true))
            .start()
            .unwrap();
        let debug = format!("{cluster:?}");
        assert!(
            cluster.connection_string().contains(cluster.password()),
            "the password is real and in use"
        );
        assert!(!debug.contains(cluster.password()), "{debug}");
        for shown in [
            cluster.data_dir().display().to_string(),
            cluster.server().socket_dir().display().to_string(),
            format!("port: {}", cluster.port()),
            "<redacted>".to_string(),
        ] {
            assert!(debug.contains(&shown), "{shown} is missing from {debug}");
        }
        cluster.close().unwrap();
    }
}
