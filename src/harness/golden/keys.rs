//! `pgclone golden key`: which goldens a test suite uses, without building any, for CI cache
//! keys. The suite runs with `PGCLONE_GOLDEN_KEYS=<file>`; each `#[pgclone::test]` then appends
//! its golden's key (and its base's) to the file instead of running.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;

use super::{build, Golden};
use crate::config::Config;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::harness::test_db::Mode;

/// A golden a suite uses: its key (the name of its directory, `<PGCLONE_DIR>/golden/<key>`) and
/// the database its recipe names (`(base)` for the base every golden starts from).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoldenKey {
    /// The recipe's key.
    pub key: String,
    /// The recipe's database name.
    pub name: String,
}

/// Runs `command` (a test run such as `cargo test --workspace`) with every `#[pgclone::test]`
/// recording its golden instead of running; returns the goldens, each once, sorted. Goldens
/// made outside the attribute (`TestDb::start` in a test of your own) are not seen.
pub fn golden_keys(command: &[OsString]) -> Result<Vec<GoldenKey>> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Error::new(ErrorKind::InvalidConfig, "no command to run the tests with"))?;
    let file = tempfile::NamedTempFile::new().doing("create", Path::new("a temporary file"))?;
    let status = crate::postgres::server::run_to_end(
        program,
        args,
        &Config::working_dir()?,
        &[("PGCLONE_GOLDEN_KEYS", file.path().as_os_str())],
    )?;
    let text = std::fs::read_to_string(file.path()).doing("read", file.path())?;
    let mut keys: Vec<GoldenKey> = text
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(key, name)| GoldenKey {
            key: key.to_string(),
            name: name.to_string(),
        })
        .collect();
    keys.sort();
    // A test with an empty recipe uses the base itself: one line per key.
    keys.dedup_by(|a, b| a.key == b.key);
    if !status.success() && keys.is_empty() {
        return Err(Error::new(
            ErrorKind::CommandFailed,
            format!(
                "`{}` failed ({status}) and recorded no golden",
                command_text(command)
            ),
        ));
    }
    Ok(keys)
}

fn command_text(command: &[OsString]) -> String {
    let words: Vec<_> = command.iter().map(|w| w.to_string_lossy()).collect();
    words.join(" ")
}

/// The harness's side: appends the keys of `golden` (and its base) to `file`, one line each.
pub(crate) fn record(golden: &Golden, mode: Mode, config: &Config, file: &Path) -> Result<()> {
    let recipes = build::Recipes::find(config)?;
    let [key, base] = build::keys_of(golden, &recipes)?;
    // A member of its binary's library has its database there: the library is the golden built.
    let library = match mode {
        Mode::Database => crate::harness::library::key_of(&key, config, &recipes),
        Mode::Cluster => None,
    };
    let lines = match library {
        Some(library) => format!("{library} (library)\n{base} (base)\n"),
        None => format!("{key} {}\n{base} (base)\n", golden.name()),
    };
    // One write per test, in append mode: lines of concurrent tests do not interleave.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .and_then(|mut f| f.write_all(lines.as_bytes()))
        .doing("append to", file)
}
