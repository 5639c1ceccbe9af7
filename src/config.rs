//! The environment variables pgclone reads, read in this one place.
//!
//! | variable | meaning |
//! | --- | --- |
//! | `PGCLONE_PG_BIN` | directory with `postgres` and `initdb`; skips the search |
//! | `PGCLONE_PG_VERSION` | the major to use when several are installed (default: the newest) |
//! | `PGCLONE_DIR` | where clusters live (default: `<cargo target dir>/pgclone`) |
//! | `PGCLONE_RUN_AS` | the user that runs PostgreSQL when pgclone runs as root (default: `postgres`, else `nobody`) |
//! | `PGCLONE_SOCKET_DIR` | where the short private socket directories are made (default: `/tmp`) |
//! | `PGCLONE_KEEP` | `failed`: keep a failing test's clone; `always`: keep every clone (default: none) |
//! | `PGCLONE_MODE` | `cluster` or `database`: the mode of tests that did not name one |
//! | `PGCLONE_POOL` | ready copies kept per golden and mode (default 0: off) |
//! | `PGCLONE_URL` | a server to use instead of local binaries: database mode there (see `harness/remote/`) |
//! | `PGCLONE_MAX_CONNECTIONS` | with `PGCLONE_URL`: the connections pgclone's tests may use together (default: from the server's `max_connections`) |
//! | `PGCLONE_GOLDEN_KEYS` | a file: `#[pgclone::test]`s append their golden's key to it instead of running (`pgclone golden key`) |
//! | `PGCLONE_REBUILD` | anything but `0`: rebuild goldens once in this run even if cached |
//! | `CARGO_MANIFEST_DIR` | set by cargo: relative recipe paths are taken from it |
//! | `CARGO_TARGET_DIR` | set by users for cargo: the default `PGCLONE_DIR` is `<it>/pgclone` |
//! | `PGUSER`, `PGPASSWORD`, `PGPASSFILE` | libpq's: the user and password for a source cluster (see `postgres/libpq.rs`) |
//! | `XDG_CACHE_HOME`, `HOME` | the default `PGCLONE_DIR` outside cargo (not as root) |
//! | `NEXTEST_RUN_ID` | set by nextest: one run of many processes, for `PGCLONE_REBUILD` and shared template servers |
//! | `NEXTEST_TEST_THREADS` | set by nextest for its test processes: how many run at once, which sizes a shared template server's `max_connections` |
//! | `RUST_TEST_THREADS` | libtest's: how many tests a test process runs at once, unless its `--test-threads` argument says; sizes the process's own template servers' `max_connections` |
//! | `PGCLONE_KEEPER` | internal: set by pgclone on a test binary it runs as a shared template server's keeper (`harness/shared.rs`) |
//! | `PATH` | where the binary search looks for `pg_config` and `postgres`, as a shell would |
//! | `TMPDIR` | where the default root goes outside cargo (default: `/tmp`) |
//!
//! An empty value counts as unset. The rest of the process's surroundings that pgclone depends
//! on, its executable, its arguments (libtest's `--test-threads`) and its working directory, are
//! read here too.

use std::path::PathBuf;

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::harness::test_db::Mode;
use crate::postgres::libpq::Secret;

/// What the environment asks for; `Default` is "nothing set".
#[derive(Debug, Clone, Default)]
pub(crate) struct Config {
    pub pg_bin: Option<PathBuf>,
    pub pg_version: Option<u32>,
    pub root: Option<PathBuf>,
    pub run_as: Option<String>,
    pub socket_dir: Option<PathBuf>,
    pub keep: Keep,
    pub pool: Option<usize>,
    /// `PGCLONE_MODE`, for tests whose attribute names no mode.
    pub mode: Option<Mode>,
    pub rebuild: bool,
    pub manifest_dir: Option<PathBuf>,
    pub target_dir: Option<PathBuf>,
    pub run_id: Option<String>,
    /// `NEXTEST_TEST_THREADS`: how many test processes the run runs at once (unknown if unset
    /// or not a positive number).
    pub test_threads: Option<u32>,
    /// The directories of `PATH`, in order.
    pub path: Vec<PathBuf>,
    /// `TMPDIR`, else `/tmp` (as [`std::env::temp_dir`]).
    pub tmp_dir: PathBuf,
    /// This program's executable, if known (cargo's target directory holds test binaries).
    pub exe: Option<PathBuf>,
    /// The user's cache directory: `XDG_CACHE_HOME`, else `$HOME/.cache`.
    pub cache_home: Option<PathBuf>,
    /// `HOME`, where libpq's `~/.pgpass` is.
    pub home: Option<PathBuf>,
    /// libpq's `PGUSER`, `PGPASSWORD` (never shown) and `PGPASSFILE`.
    pub pg_user: Option<String>,
    pub pg_password: Option<Secret>,
    pub pg_passfile: Option<PathBuf>,
    /// `PGCLONE_URL` (it may hold a password).
    pub url: Option<Secret>,
    /// `PGCLONE_MAX_CONNECTIONS`.
    pub max_connections: Option<u32>,
    /// `PGCLONE_GOLDEN_KEYS`.
    pub golden_keys: Option<PathBuf>,
    /// `PGCLONE_KEEPER`: this process is the keeper of the shared template server of this golden key.
    pub keeper: Option<String>,
}

/// `PGCLONE_KEEP`: which clones outlive their test.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Keep {
    #[default]
    Never,
    Failed,
    Always,
}

impl Config {
    pub fn from_env() -> Result<Config> {
        let pg_version = match var("PGCLONE_PG_VERSION") {
            None => None,
            Some(text) => Some(text.trim().parse().map_err(|_| {
                Error::new(
                    ErrorKind::InvalidConfig,
                    format!("PGCLONE_PG_VERSION={text:?} is not a major version number"),
                )
                .hint("set it to a major such as 15 or 18, or unset it to use the newest installed")
            })?),
        };
        let keep = match var("PGCLONE_KEEP").as_deref() {
            None | Some("never") | Some("0") => Keep::Never,
            Some("failed") => Keep::Failed,
            Some("always") | Some("1") => Keep::Always,
            Some(other) => {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    format!("PGCLONE_KEEP={other:?} is not one of never, failed, always"),
                ))
            }
        };
        let pool = match var("PGCLONE_POOL") {
            None => None,
            Some(text) => Some(text.trim().parse().map_err(|_| {
                Error::new(
                    ErrorKind::InvalidConfig,
                    format!("PGCLONE_POOL={text:?} is not a number of copies"),
                )
                .hint("set it to 0 (no pool) or a small number such as 2")
            })?),
        };
        let mode = match var("PGCLONE_MODE").as_deref() {
            None => None,
            Some("cluster") => Some(Mode::Cluster),
            Some("database") => Some(Mode::Database),
            Some(other) => {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    format!("PGCLONE_MODE={other:?} is not cluster or database"),
                )
                .hint("set it to cluster (a server per test) or database (a database per test in a shared server), or unset it"))
            }
        };
        let max_connections = match var("PGCLONE_MAX_CONNECTIONS") {
            None => None,
            Some(text) => Some(text.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidConfig,
                    format!("PGCLONE_MAX_CONNECTIONS={text:?} is not a positive number of connections"),
                )
                .hint("set it to how many connections to PGCLONE_URL's server the tests may use together, such as 40")
            })?),
        };
        Ok(Config {
            url: var("PGCLONE_URL").map(Secret::new),
            golden_keys: var("PGCLONE_GOLDEN_KEYS").map(PathBuf::from),
            keeper: var("PGCLONE_KEEPER"),
            max_connections,
            keep,
            pool,
            mode,
            rebuild: var("PGCLONE_REBUILD").is_some_and(|v| v != "0"),
            manifest_dir: var("CARGO_MANIFEST_DIR").map(PathBuf::from),
            target_dir: var("CARGO_TARGET_DIR").map(PathBuf::from),
            run_id: var(RUN_ID_VARIABLE),
            test_threads: var("NEXTEST_TEST_THREADS")
                .and_then(|text| text.trim().parse().ok())
                .filter(|n| *n > 0),
            pg_bin: var("PGCLONE_PG_BIN").map(PathBuf::from),
            pg_version,
            root: var("PGCLONE_DIR").map(PathBuf::from),
            run_as: var("PGCLONE_RUN_AS"),
            socket_dir: var("PGCLONE_SOCKET_DIR").map(PathBuf::from),
            path: std::env::var_os("PATH")
                .map(|path| std::env::split_paths(&path).collect())
                .unwrap_or_default(),
            tmp_dir: std::env::temp_dir(),
            exe: std::env::current_exe().ok(),
            cache_home: var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".cache"))),
            home: var("HOME").map(PathBuf::from),
            pg_user: var("PGUSER"),
            pg_password: var("PGPASSWORD").map(Secret::new),
            pg_passfile: var("PGPASSFILE").map(PathBuf::from),
        })
    }

    /// The working directory.
    pub fn working_dir() -> Result<PathBuf> {
        std::env::current_dir().doing("find the current directory", std::path::Path::new("."))
    }

    /// Where relative recipe paths start: cargo's manifest directory (`CARGO_MANIFEST_DIR`),
    /// else the working directory.
    pub fn recipe_base(&self) -> Result<PathBuf> {
        match &self.manifest_dir {
            Some(dir) => Ok(dir.clone()),
            None => std::env::current_dir()
                .doing("find the current directory", std::path::Path::new(".")),
        }
    }
}

/// How many tests libtest runs at once in this process, as libtest decides it: its
/// `--test-threads` argument, else `RUST_TEST_THREADS`; `None` if neither says (libtest then
/// runs one per core). Read once: neither changes while the process runs.
pub(crate) fn libtest_threads() -> Option<u32> {
    static THREADS: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| threads_from(std::env::args().skip(1), var("RUST_TEST_THREADS")))
}

/// [`libtest_threads`] from the arguments (without the program's name) and the variable.
fn threads_from(mut args: impl Iterator<Item = String>, variable: Option<String>) -> Option<u32> {
    let mut argument = None;
    while let Some(arg) = args.next() {
        if let Some(value) = arg.strip_prefix("--test-threads=") {
            argument = Some(value.to_string());
        } else if arg == "--test-threads" {
            argument = args.next();
        }
    }
    argument
        .or(variable)
        .and_then(|text| text.trim().parse().ok())
        .filter(|n| *n > 0)
}

/// The variable nextest sets for each test process (and wrapper) of a run: the run's id. Also
/// looked for in ancestors' environments, to find the run's runner (`ProcessId::runner`).
pub(crate) const RUN_ID_VARIABLE: &str = "NEXTEST_RUN_ID";

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::threads_from;

    fn threads(args: &[&str], variable: Option<&str>) -> Option<u32> {
        let args = args.iter().map(|arg| arg.to_string());
        threads_from(args, variable.map(str::to_string))
    }

    #[test]
    fn libtest_threads_come_from_the_argument_before_the_variable() {
        assert_eq!(threads(&["--test-threads=8"], Some("3")), Some(8));
        assert_eq!(
            threads(&["a_filter", "--test-threads", "12", "-q"], None),
            Some(12)
        );
        assert_eq!(threads(&["--exact", "name"], Some("3")), Some(3));
        assert_eq!(threads(&[], None), None);
        // What libtest refuses is no answer here either: it falls back to a test per core.
        assert_eq!(threads(&["--test-threads=0"], None), None);
        assert_eq!(threads(&[], Some("many")), None);
        assert_eq!(threads(&["--test-threads"], None), None);
    }
}
