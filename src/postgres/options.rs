//! Options for starting a server, shared by [`Server::start`](crate::Server::start) and
//! [`TempCluster`](crate::TempCluster), and their resolution against the environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::postgres::binaries::PgBinaries;
use crate::postgres::run_as::RunAs;
use crate::postgres::server::DEFAULT_START_TIMEOUT;
use crate::postgres::socket_dir;
use crate::store::root;

/// How to run a server. Each option overrides the matching environment variable.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub(crate) binaries: Option<PgBinaries>,
    pub(crate) socket_dir: Option<PathBuf>,
    pub(crate) tcp: bool,
    pub(crate) settings: Vec<(String, String)>,
    pub(crate) start_timeout: Duration,
    pub(crate) log_file: Option<PathBuf>,
    pub(crate) detached: bool,
    /// The database the readiness probe connects to: the first connection to a database builds
    /// and writes its relation-cache file, so probing the one the caller will use does that once.
    pub(crate) ready_database: Option<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            binaries: None,
            socket_dir: None,
            tcp: false,
            settings: Vec::new(),
            start_timeout: DEFAULT_START_TIMEOUT,
            log_file: None,
            detached: false,
            ready_database: None,
        }
    }
}

impl ServerOptions {
    /// The defaults: found binaries, a private socket directory, no TCP, pgclone's test settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Use these binaries (default: `PGCLONE_PG_BIN`, else the search in [`PgBinaries::find`]).
    pub fn binaries(mut self, binaries: PgBinaries) -> Self {
        self.binaries = Some(binaries);
        self
    }

    /// Make the private socket directory in this directory (default: `PGCLONE_SOCKET_DIR`, else
    /// `/tmp`). Socket paths are limited to 107 bytes.
    pub fn socket_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.socket_dir = Some(dir.into());
        self
    }

    /// Also listen on 127.0.0.1, on a free port, for clients that cannot use Unix sockets.
    pub fn tcp(mut self, on: bool) -> Self {
        self.tcp = on;
        self
    }

    /// A server setting, passed as `-c name=value`: the value as written, no quoting needed.
    /// Checked when the server starts ([`ErrorKind::InvalidConfig`]): `name` must be a
    /// parameter's name, and neither may hold a line break.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// How long the server may take to accept connections (default two minutes).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Where the server's output goes (default: `<data dir>.log` beside the data directory).
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_file = Some(path.into());
        self
    }

    /// Start a server that outlives this process: no parent-death signal, its own session.
    /// Call [`Server::detach`](crate::server::Server::detach) on it to keep it running past its value.
    pub fn detached(mut self, detached: bool) -> Self {
        self.detached = detached;
        self
    }

    /// Probe readiness by connecting to `dbname` (default `postgres`).
    pub(crate) fn ready_database(mut self, dbname: &str) -> Self {
        self.ready_database = Some(dbname.to_string());
        self
    }

    /// Resolves what the options leave open against the environment.
    pub(crate) fn resolve(&self, config: &Config) -> Result<Resolved> {
        for (name, value) in &self.settings {
            check_setting(name, value, ErrorKind::InvalidConfig, "server setting")?;
        }
        let binaries = match &self.binaries {
            Some(binaries) => binaries.clone(),
            None => PgBinaries::find_with(config)?,
        };
        let run_as = RunAs::for_current_user(config.run_as.as_deref())?;
        if let Some(user) = &run_as {
            user.check_can_reach(&binaries.program("postgres"), "the PostgreSQL binary")?;
        }
        let socket_parent = self
            .socket_dir
            .clone()
            .or_else(|| config.socket_dir.clone())
            .unwrap_or_else(socket_dir::default_parent);
        socket_dir::check_parent(&socket_parent)?;
        if root::first_use_in_process("sockets", &socket_parent) {
            socket_dir::reap_stale(&socket_parent, run_as.as_ref());
        }
        Ok(Resolved {
            binaries,
            run_as,
            socket_parent,
        })
    }
}

/// What a server needs once the environment is consulted.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub binaries: PgBinaries,
    pub run_as: Option<RunAs>,
    pub socket_parent: PathBuf,
}

/// Fails unless `name` is a parameter's name as `postgresql.conf` spells it (an identifier, or
/// two joined by a dot for an extension's setting) and `value` is one line. A line break would
/// start a setting of its own in a configuration file, and a name with `=` would set another
/// parameter on the command line. `what` names the setting in the error ("server setting").
pub(crate) fn check_setting(name: &str, value: &str, kind: ErrorKind, what: &str) -> Result<()> {
    let identifier = |part: &str| {
        part.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 || !parts.iter().all(|part| identifier(part)) {
        return Err(Error::new(
            kind,
            format!("{what} {name:?} is not a PostgreSQL parameter name"),
        )
        .hint("name it as postgresql.conf does: letters, digits and '_' (work_mem), an extension's with one '.' (my_ext.option)"));
    }
    if value.contains(['\n', '\r', '\0']) {
        return Err(Error::new(
            kind,
            format!("{what} {name:?}: the value holds a line break or a NUL byte, which no parameter takes and which would add lines to postgresql.conf"),
        )
        .hint("give the value on one line, without CR, LF or NUL"));
    }
    Ok(())
}

/// `<parent>/<name>.log` for a data directory `<parent>/<name>`.
pub(crate) fn default_log_file(data_dir: &Path) -> PathBuf {
    let mut name = data_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".log");
    data_dir.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_names_and_values_are_checked() {
        let check = |name: &str, value: &str| {
            check_setting(name, value, ErrorKind::InvalidConfig, "server setting")
        };
        for name in [
            "work_mem",
            "_x1",
            "my_ext.option",
            "auto_explain.log_min_duration",
        ] {
            assert!(
                check(name, "it's a value, with spaces # and more").is_ok(),
                "{name}"
            );
        }
        for name in [
            "", "work mem", "a=b", "1abc", "a.", ".a", "a.b.c", "x\ny", "é",
        ] {
            let err = check(name, "1").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{name:?}");
            assert!(err.to_string().contains("parameter name"), "{err}");
        }
        for value in ["1MB\nfsync = off", "a\rb", "a\0b"] {
            let err = check("work_mem", value).unwrap_err();
            assert!(err.to_string().contains("\"work_mem\""), "names it: {err}");
            assert!(
                err.to_string().contains("one line"),
                "says what to do: {err}"
            );
            assert!(
                !err.to_string().contains("fsync"),
                "the value stays out: {err}"
            );
        }
    }

    #[test]
    fn a_server_setting_with_a_line_break_is_refused_before_anything_starts() {
        let options = ServerOptions::new().setting("work_mem", "1MB\nfsync = off");
        let err = options.resolve(&Config::default()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    }
}
