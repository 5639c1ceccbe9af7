//! The library: a test binary's sqlx-style recipes (migrations or a migrator, then fixtures; no
//! `golden = …`), built together into one golden cluster, each in a database of its own. A
//! process (or a nextest run) then starts one template server for them all, not one per recipe:
//! a server costs tens of milliseconds of CPU, on the suite's critical path.
//!
//! The macro registers every `#[pgclone::test]` in [`TESTS`] (gathered by the linker), so the
//! first test that runs knows its binary's other recipes. Members are the registered tests
//! without `golden = …`, whose argument pgclone knows, that run in database mode (their
//! attribute's mode, else `PGCLONE_MODE`, else their argument's): each distinct recipe once.
//! A binary with fewer than two has no library. The library's key is a hash of its members'
//! keys, so a change to any member's migrations or fixtures makes a new library, built once
//! and cached like any golden.
//!
//! A library whose build fails because a member's SQL does (a broken migration) is marked
//! failed under its key: its tests then use their own goldens, where the broken recipe reports
//! its error to its own tests only.

use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::error::{ErrorKind, Result};
use crate::harness::args::TestArg;
use crate::harness::golden::recipe::Recipe;
use crate::harness::golden::{self, BuiltGolden, Golden, Recipes};
use crate::harness::test_db::Mode;
use crate::harness::{recipe, TestSpec};

/// A `#[pgclone::test]`, as the macro registers it.
pub struct Registered {
    /// Its spec, as it runs with.
    pub spec: fn() -> TestSpec,
    /// What its argument type says (`None`: not a type pgclone knows; it fails to compile
    /// anyway under `cargo test`).
    pub argument: fn() -> Option<ArgumentKind>,
}

/// Every `#[pgclone::test]` of the binary.
#[linkme::distributed_slice]
pub static TESTS: [Registered];

/// What a test's argument type says about its recipe and mode ([`TestArg`]'s constants).
#[derive(Debug, Clone, Copy)]
pub struct ArgumentKind {
    sqlx: bool,
    mode: Mode,
}

/// A test's argument type, for [`KnownArgument`] and [`UnknownArgument`]: the macro calls
/// `(&&Argument::<T>::new()).kind()`, which takes the first where `T` is a [`TestArg`], else
/// the second, without an error of its own.
pub struct Argument<T>(PhantomData<T>);

impl<T> Argument<T> {
    /// The argument type `T`.
    pub const fn new() -> Self {
        Argument(PhantomData)
    }
}

impl<T> Default for Argument<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// See [`Argument`].
pub trait KnownArgument {
    /// The argument type's kind.
    fn kind(&self) -> Option<ArgumentKind>;
}

impl<T: TestArg> KnownArgument for &Argument<T> {
    fn kind(&self) -> Option<ArgumentKind> {
        Some(ArgumentKind {
            sqlx: T::SQLX,
            mode: T::MODE,
        })
    }
}

/// See [`Argument`].
pub trait UnknownArgument {
    /// `None`: not a type pgclone knows.
    fn kind(&self) -> Option<ArgumentKind>;
}

impl<T> UnknownArgument for Argument<T> {
    fn kind(&self) -> Option<ArgumentKind> {
        None
    }
}

/// The library the recipe `own` (a test's recipe's key) is a member of, built now if need be:
/// the library's golden and the member's database in it. `None` if the test is not a member,
/// its binary has no library, or the library failed to build. `expected`: the key a keeper
/// serves.
pub(crate) async fn library_for(
    own: &str,
    prepared: &golden::Prepared,
    config: &Config,
    expected: Option<&str>,
) -> Result<Option<(Arc<BuiltGolden>, String)>> {
    let Some(library) = library_of(own, config, &prepared.recipes) else {
        return Ok(None);
    };
    golden::check_serves(expected, &library.key)?;
    let failed = failed_marker(&prepared.root.golden_dir(), &library.key);
    if failed.exists() {
        return Ok(None);
    }
    let members = library
        .members
        .iter()
        .map(|(key, recipe)| (member_database(key), recipe.clone()))
        .collect();
    match golden::ensure_library_built(library.key.clone(), members, prepared, config).await {
        Ok(built) => Ok(Some((built, member_database(own)))),
        // A member's SQL failed: it fails again until a member changes (a new key).
        Err(e) if e.kind() == ErrorKind::Golden => {
            // Past libtest's capture: the tests that pass would hide it.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "pgclone: this test binary's library of goldens did not build; each test uses its own golden instead ({e})"
            );
            let _ = std::fs::write(&failed, e.to_string());
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The key of the library the recipe `own` is a member of, if any (`pgclone golden key`:
/// nothing is built, nothing opened on disk).
pub(crate) fn key_of(own: &str, config: &Config, recipes: &Recipes) -> Option<String> {
    library_of(own, config, recipes).map(|library| library.key.clone())
}

/// The binary's library, if the recipe `own` is one of its members.
fn library_of(own: &str, config: &Config, recipes: &Recipes) -> Option<Arc<Library>> {
    members(config, recipes).filter(|library| library.members.contains_key(own))
}

/// A library: its key and its members by key.
struct Library {
    key: String,
    members: BTreeMap<String, Recipe>,
}

/// The binary's library under `config` (computed once per process and configuration); `None`
/// with fewer than two members.
fn members(config: &Config, recipes: &Recipes) -> Option<Arc<Library>> {
    type Libraries = Mutex<HashMap<String, Option<Arc<Library>>>>;
    static LIBRARIES: OnceLock<Libraries> = OnceLock::new();
    let id = format!(
        "{:?}\0{}\0{}",
        config.mode,
        recipes.env.binaries.bin_dir().display(),
        recipes.base.display()
    );
    let mut libraries = LIBRARIES.get_or_init(Default::default).lock().unwrap();
    libraries
        .entry(id)
        .or_insert_with(|| {
            let members: BTreeMap<String, Recipe> = member_recipes(config)
                .iter()
                .filter_map(|golden| recipes.resolve(golden).ok())
                .map(|recipe| (recipe.key.clone(), recipe))
                .collect();
            (members.len() >= 2).then(|| {
                Arc::new(Library {
                    key: library_key(members.keys()),
                    members,
                })
            })
        })
        .clone()
}

/// The recipes of the registered tests that can be members.
fn member_recipes(config: &Config) -> Vec<Golden> {
    TESTS
        .iter()
        .filter_map(|registered| {
            let spec = (registered.spec)();
            let argument = (registered.argument)()?;
            let mode = spec.mode.or(config.mode).unwrap_or(argument.mode);
            // A `golden` function is the user's code: not called for other tests' sake.
            (spec.golden.is_none() && mode == Mode::Database).then(|| recipe(&spec, argument.sqlx))
        })
        .collect()
}

/// Changed when the way libraries are built changes.
const FORMAT: &str = "pgclone library 1";

fn library_key<'a>(members: impl Iterator<Item = &'a String>) -> String {
    let mut hash = Sha256::new();
    hash.update(FORMAT);
    for key in members {
        hash.update([0]);
        hash.update(key);
    }
    hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The database of the member `key` in its library.
fn member_database(key: &str) -> String {
    format!("golden_{key}")
}

/// `<root>/golden/<key>.failed`: the library `key` did not build (holds the error).
fn failed_marker(golden_dir: &Path, key: &str) -> PathBuf {
    golden_dir.join(format!("{key}.failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_librarys_key_follows_its_members() {
        let (a, b, c) = ("a".to_string(), "b".to_string(), "c".to_string());
        let ab = library_key([&a, &b].into_iter());
        assert_eq!(ab, library_key([&a, &b].into_iter()));
        assert_ne!(ab, library_key([&a, &c].into_iter()));
        assert_ne!(ab, library_key([&a, &b, &c].into_iter()));
        assert_eq!(ab.len(), 16);
    }

    #[test]
    fn a_members_database_name_leaves_room_for_a_test_databases_suffix() {
        let name = member_database("0123456789abcdef");
        assert!(name.len() <= 24, "{name}");
    }
}
