//! Starting ahead, under nextest: which keepers a run starts before its tests ask for them.
//!
//! In a nextest run the first test of each golden waits for a keeper to start the run's
//! template server of that golden (`shared.rs`): about 0.2 s, five times for a suite with five
//! fixture sets. A run usually needs the goldens the previous run of the same test binary needed,
//! so each run records them, and the first test process of the next run, once its own golden's
//! server serves, starts the keepers of the others side by side, while the run's tests go on
//! (`template.rs`). A recorded
//! golden that no test of the new run uses (a filtered run) costs a keeper that starts a server
//! and stops it once the run is over; one whose test's recipe changed since costs a keeper that
//! finds so and exits, building nothing.
//!
//! Under `cargo test` (one process) this is not done: measured on this project's 2-core machine,
//! starting a process's template servers ahead saved nothing, as the servers' starts already
//! kept both cores busy.
//!
//! A run is nextest's (`NEXTEST_RUN_ID`). Its record is
//! `<root>/ahead/<SHA-256 of the test binary's path and of the PostgreSQL binaries' directory>`:
//! the run and its runner (nextest, [`ProcessId::runner`]) on the first line; while that
//! runner lives, another run of the same binary adds to the record and starts nothing. Then a
//! line per golden in the order the run first used them,
//! `<key> <a test that used it> <golden's database>` (the test is what a keeper runs again). Keys
//! are checked before use; a golden that is gone or not built is skipped; a record untouched for
//! [`UNUSED_FOR`] is removed. `<root>/ahead/.lock` is held while a record is read and written.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::error::Result;
use crate::harness::golden::{BuiltGolden, UNUSED_FOR};
use crate::harness::shared::RunTest;
use crate::store::lock::FileLock;
use crate::store::root::{ProcessId, Root};
use crate::store::{record_name, remove_older_than, write_atomically};

/// A golden to start a server of ahead, and a test that uses it.
pub(crate) struct Ahead {
    pub golden: BuiltGolden,
    pub test: String,
}

/// Notes that `test`, a test of a nextest run, used `golden`. The run's first
/// note returns the goldens the previous run of this test binary used besides this one, for the
/// caller to start their keepers; later ones return nothing. Costs a file's read and write.
pub(crate) fn note_used(golden: &BuiltGolden, test: &RunTest) -> Vec<Ahead> {
    static NOTED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let newly = NOTED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(golden.data_dir.clone());
    if !newly {
        return Vec::new();
    }
    note(golden, &test.test, &test.run).unwrap_or_default()
}

fn note(golden: &BuiltGolden, test: &str, run: &str) -> Result<Vec<Ahead>> {
    // The record's first line: the run, and the runner (nextest) that holds it while it goes.
    let header = format!("{run} {}", ProcessId::runner(run)?);
    let path = record_path(&golden.root, golden.env.binaries.bin_dir());
    // One lock for all records, never removed: notes are rare (once per golden and process).
    let lock = golden.root.ahead_dir().join(".lock");
    let _lock = FileLock::exclusive(&lock, Duration::from_secs(5), || {})?;
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let mut lines = old.lines();
    let key = golden.key();
    let line = format!("{key} {test} {}\n", golden.dbname.replace('\n', " "));
    let recorded = lines.next().unwrap_or_default();
    let this_run = recorded.split(' ').next() == Some(run);
    // Another run of this binary going on at the same time (its runner alive) keeps the record:
    // this one adds to it and starts nothing, rather than the two overwriting each other.
    let other_run_going = !this_run
        && recorded
            .split_once(' ')
            .and_then(|(_, runner)| ProcessId::parse(runner))
            .is_some_and(|runner| runner.is_alive());
    if this_run || other_run_going {
        // A later test: add the golden, if another process did not.
        if !lines.any(|l| l.split(' ').next() == Some(&key)) {
            write_atomically(&path, &(old + &line))?;
        }
        return Ok(Vec::new());
    }
    // The run's first note: the previous run's goldens are this one's to start.
    write_atomically(&path, &format!("{header}\n{line}"))?;
    // Records of test binaries not run for a while, and files left half-written; the lock stays.
    remove_older_than(&golden.root.ahead_dir(), UNUSED_FOR, |name| name != ".lock");
    Ok(lines
        .filter_map(|line| {
            let mut fields = line.splitn(3, ' ');
            let (key, test, dbname) = (fields.next()?, fields.next()?, fields.next()?);
            if key == golden.key() || !is_key(key) {
                return None;
            }
            let golden = BuiltGolden::ready(&golden.root, &golden.env, key, dbname)?;
            let test = test.to_string();
            Some(Ahead { golden, test })
        })
        .collect())
}

/// `<root>/ahead/<SHA-256 of this test binary's path and bin_dir>`.
fn record_path(root: &Root, bin_dir: &Path) -> PathBuf {
    let exe = std::fs::read_link(crate::sys::own_executable()).unwrap_or_default();
    let parts = [exe.as_os_str(), bin_dir.as_os_str()];
    root.ahead_dir()
        .join(record_name(parts.map(|part| part.as_encoded_bytes())))
}

/// Whether `key` looks like a golden's key (hex digits): nothing else may name a directory.
fn is_key(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_hexdigit())
}
