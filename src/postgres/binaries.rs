//! Finding the PostgreSQL server binaries (`initdb`, `postgres`) and their version.
//!
//! Order: `PGCLONE_PG_BIN` (used alone when set), then `pg_config --bindir`, then `PATH`, then the
//! usual package layouts. Among the installations found the newest major wins, unless
//! `PGCLONE_PG_VERSION` asks for one; on a tie the earlier in that order wins.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::postgres::features::{self, MIN_MAJOR};
use crate::postgres::server;

/// How long `postgres --version` or `pg_config` may take (milliseconds, normally).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Directories where distributions and package managers put the server binaries; `*` stands for
/// the version.
const PACKAGE_LAYOUTS: &[&str] = &[
    "/usr/lib/postgresql/*/bin",                       // Debian, Ubuntu
    "/usr/pgsql-*/bin",                                // PGDG RPMs (RHEL, Fedora, Rocky)
    "/opt/homebrew/opt/postgresql@*/bin",              // Homebrew on Apple silicon
    "/usr/local/opt/postgresql@*/bin",                 // Homebrew on Intel
    "/home/linuxbrew/.linuxbrew/opt/postgresql@*/bin", // Homebrew on Linux
    "/usr/local/pgsql/bin",                            // built from source
];

/// A PostgreSQL version as printed by `postgres --version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgVersion {
    major: u32,
    text: String,
}

impl PgVersion {
    /// Parses the output of `postgres --version`, e.g. `postgres (PostgreSQL) 15.18 (Debian ...)`.
    pub fn parse(version_output: &str) -> Option<PgVersion> {
        let text = version_output
            .split_whitespace()
            .skip_while(|word| *word != "(PostgreSQL)")
            .nth(1)?;
        let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
        Some(PgVersion {
            major: digits.parse().ok()?,
            text: text.to_string(),
        })
    }

    /// The major version (15 for 15.18).
    pub fn major(&self) -> u32 {
        self.major
    }
}

impl fmt::Display for PgVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A directory with PostgreSQL's server binaries, and their version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    bin_dir: PathBuf,
    version: PgVersion,
}

impl PgBinaries {
    /// Finds the binaries as the environment asks (see the module docs).
    pub fn find() -> Result<PgBinaries> {
        Self::find_with(&Config::from_env()?)
    }

    /// The binaries of major `major` (a clone's, to start it with), searched as [`find`](Self::find)
    /// does otherwise.
    /// `PGCLONE_PG_BIN` is used if it holds that major, else ignored.
    pub fn find_major(major: u32) -> Result<PgBinaries> {
        Self::find_major_with(major, &Config::from_env()?)
    }

    pub(crate) fn find_major_with(major: u32, config: &Config) -> Result<PgBinaries> {
        let mut config = config.clone();
        config.pg_version = Some(major);
        if let Some(dir) = &config.pg_bin {
            if PgBinaries::from_dir(dir).map_or(true, |b| b.version.major != major) {
                config.pg_bin = None;
            }
        }
        Self::find_with(&config)
    }

    /// Searches once per process for each thing the environment asks (every test acquiring a
    /// database asks again; `pg_config` and the directory scans need not run again).
    pub(crate) fn find_with(config: &Config) -> Result<PgBinaries> {
        type Found = Mutex<HashMap<(Option<PathBuf>, Option<u32>), PgBinaries>>;
        static FOUND: OnceLock<Found> = OnceLock::new();
        let key = (config.pg_bin.clone(), config.pg_version);
        if let Some(found) = FOUND
            .get_or_init(Default::default)
            .lock()
            .unwrap()
            .get(&key)
        {
            return Ok(found.clone());
        }
        let found = Self::search(config)?;
        FOUND
            .get_or_init(Default::default)
            .lock()
            .unwrap()
            .insert(key, found.clone());
        Ok(found)
    }

    fn search(config: &Config) -> Result<PgBinaries> {
        let wanted = config.pg_version;
        if let Some(dir) = &config.pg_bin {
            let found = PgBinaries::from_dir(dir)?;
            return match wanted {
                Some(major) if major != found.version.major => Err(Error::new(
                    ErrorKind::BinariesNotFound,
                    format!(
                        "PGCLONE_PG_BIN={} holds PostgreSQL {} but PGCLONE_PG_VERSION={major} asks for another major",
                        dir.display(),
                        found.version
                    ),
                )
                .hint("unset one of the two, or point PGCLONE_PG_BIN at the wanted version")),
                _ => Ok(found),
            };
        }

        let mut searched = Vec::new();
        let mut found: Vec<PgBinaries> = Vec::new();
        for (place, dir) in candidate_dirs(config) {
            let Some(dir) = dir else {
                searched.push(format!("{place}: nothing there"));
                continue;
            };
            match PgBinaries::from_dir(&dir) {
                Ok(bins) => {
                    let seen = found.iter().any(|f| same_dir(&f.bin_dir, &bins.bin_dir));
                    let again = if seen { " (found already)" } else { "" };
                    searched.push(format!(
                        "{} ({place}): PostgreSQL {}{again}",
                        dir.display(),
                        bins.version
                    ));
                    if !seen {
                        found.push(bins);
                    }
                }
                Err(e) => searched.push(format!("{} ({place}): {}", dir.display(), first_line(&e))),
            }
        }

        // The newest; of equals, the first found (`min_by_key` keeps the first).
        let best = found
            .into_iter()
            .filter(|b| wanted.is_none_or(|major| b.version.major == major))
            .min_by_key(|b| Reverse(b.version.major));
        best.ok_or_else(|| not_found_error(wanted, &searched))
    }

    /// Uses the binaries in `dir`, which must hold `postgres` and `initdb`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<PgBinaries> {
        let dir = dir.as_ref();
        for program in ["postgres", "initdb"] {
            if !is_executable(&dir.join(program)) {
                return Err(Error::new(
                    ErrorKind::BinariesNotFound,
                    format!("{} has no executable `{program}`", dir.display()),
                )
                .hint("point PGCLONE_PG_BIN at the directory with the PostgreSQL server binaries (e.g. /usr/lib/postgresql/16/bin)"));
            }
        }
        let version = version_of(&dir.join("postgres"))?;
        if !features::is_supported(version.major) {
            return Err(Error::new(
                ErrorKind::BinariesNotFound,
                format!(
                    "{} holds PostgreSQL {version}; pgclone needs {MIN_MAJOR} or newer",
                    dir.display()
                ),
            ));
        }
        Ok(PgBinaries {
            bin_dir: dir.to_path_buf(),
            version,
        })
    }

    /// The binaries in `dir` whose version another process of this run found to be `version`
    /// (as [`PgVersion`] prints it), without running `postgres --version` again; `None` if `dir`
    /// no longer holds them or `version` is not one.
    pub(crate) fn known(dir: &Path, version: &str) -> Option<PgBinaries> {
        let version = PgVersion::parse(&format!("postgres (PostgreSQL) {version}"))?;
        let present = ["postgres", "initdb"]
            .iter()
            .all(|program| is_executable(&dir.join(program)));
        present.then(|| PgBinaries {
            bin_dir: dir.to_path_buf(),
            version,
        })
    }

    /// The directory holding the binaries.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The version of `postgres` there.
    pub fn version(&self) -> &PgVersion {
        &self.version
    }

    /// The path of one program in the bin directory (`initdb`, `postgres`, ...).
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

/// Runs `postgres --version` once per binary per process (it is allowed as root), with a timeout.
/// The cache stays locked meanwhile: test threads starting together ask it once, not once each.
fn version_of(postgres: &Path) -> Result<PgVersion> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, PgVersion>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(v) = cache.get(postgres) {
        return Ok(v.clone());
    }
    let stdout = server::output_of(postgres, &["--version"], PROBE_TIMEOUT)
        .map_err(|e| e.with_kind(ErrorKind::BinariesNotFound))?;
    let version = PgVersion::parse(&stdout).ok_or_else(|| {
        Error::new(
            ErrorKind::BinariesNotFound,
            format!(
                "`{} --version` printed {:?}, not a PostgreSQL version",
                postgres.display(),
                stdout.trim()
            ),
        )
    })?;
    cache.insert(postgres.to_path_buf(), version.clone());
    Ok(version)
}

/// Every place searched, in order, with the directory it gave (`None`: nothing there).
fn candidate_dirs(config: &Config) -> Vec<(String, Option<PathBuf>)> {
    let mut places = Vec::new();
    // The first `pg_config` on PATH, as a shell would run it.
    let pg_config = config
        .path
        .iter()
        .map(|dir| dir.join("pg_config"))
        .find(|program| is_executable(program))
        .and_then(|program| server::output_of(&program, &["--bindir"], PROBE_TIMEOUT).ok())
        .map(|out| PathBuf::from(out.trim()));
    places.push(("pg_config --bindir".to_string(), pg_config));

    let on_path: Vec<PathBuf> = config
        .path
        .iter()
        .filter(|dir| dir.join("postgres").exists())
        .cloned()
        .collect();
    if on_path.is_empty() {
        places.push(("PATH".to_string(), None));
    }
    places.extend(
        on_path
            .into_iter()
            .map(|dir| ("PATH".to_string(), Some(dir))),
    );

    for pattern in PACKAGE_LAYOUTS {
        let expanded = expand_layout(pattern);
        if expanded.is_empty() {
            places.push((pattern.to_string(), None));
        }
        places.extend(
            expanded
                .into_iter()
                .map(|dir| (pattern.to_string(), Some(dir))),
        );
    }
    places
}

/// Expands the one `*` of a layout pattern against the file system, newest version first.
fn expand_layout(pattern: &str) -> Vec<PathBuf> {
    let Some((head, tail)) = pattern.split_once('*') else {
        return vec![PathBuf::from(pattern)]
            .into_iter()
            .filter(|p| p.exists())
            .collect();
    };
    let (parent, prefix) = head.rsplit_once('/').unwrap_or(("", head));
    let Ok(entries) = std::fs::read_dir(if parent.is_empty() { "/" } else { parent }) else {
        return Vec::new();
    };
    let mut dirs: Vec<(u32, PathBuf)> = entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let version = name.strip_prefix(prefix)?;
            let major = version.split('.').next()?.parse().unwrap_or(0);
            Some((major, PathBuf::from(format!("{parent}/{name}{tail}"))))
        })
        .filter(|(_, dir)| dir.exists())
        .collect();
    dirs.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    dirs.into_iter().map(|(_, dir)| dir).collect()
}

fn not_found_error(wanted: Option<u32>, searched: &[String]) -> Error {
    let what = match wanted {
        Some(major) => format!("PostgreSQL {major} (PGCLONE_PG_VERSION={major})"),
        None => "PostgreSQL server binaries (initdb, postgres)".to_string(),
    };
    let mut message = format!("could not find {what}; searched:");
    for line in searched {
        message.push_str("\n    ");
        message.push_str(line);
    }
    Error::new(ErrorKind::BinariesNotFound, message).hint(
        "install the server: `apt-get install postgresql` (Debian, Ubuntu), \
         `dnf install postgresql-server` (Fedora, RHEL), `brew install postgresql@17` (macOS); \
         or set PGCLONE_PG_BIN to the directory holding `postgres` and `initdb`",
    )
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn first_line(e: &Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        let debian =
            PgVersion::parse("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n").unwrap();
        assert_eq!((debian.major(), debian.to_string().as_str()), (15, "15.18"));
        assert_eq!(
            PgVersion::parse("postgres (PostgreSQL) 18beta1")
                .unwrap()
                .major(),
            18
        );
        assert_eq!(
            PgVersion::parse("postgres (PostgreSQL) 18.4")
                .unwrap()
                .major(),
            18
        );
        assert!(PgVersion::parse("something else 1.2").is_none());
    }
}
