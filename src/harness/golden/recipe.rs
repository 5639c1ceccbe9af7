//! Reading a recipe's files, and the cache key: a hash of everything that decides what the
//! golden holds. The steps built are exactly the bytes hashed.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::migrations;
use super::{Golden, Hook, Ingredient, UrlHook};
use crate::error::{Error, ErrorKind, Result};
use crate::postgres::binaries::PgBinaries;
use crate::postgres::data_dir::TEST_SETTINGS;
use crate::postgres::options::check_setting;
use crate::postgres::server::INITDB_ARGS;

/// Changed when the way goldens are built changes, so that older caches are not reused.
const FORMAT: &str = "pgclone golden 5";

/// One step of a build.
#[derive(Clone)]
pub(crate) enum Step {
    /// SQL and where it came from (`migration 0001_init.sql`), for error messages.
    Sql {
        origin: String,
        text: String,
    },
    SqlxMigrator(&'static dyn migrations::SqlxMigrator),
    Hook(Hook),
    UrlHook(UrlHook),
}

/// A recipe read from disk, with its cache key.
#[derive(Clone)]
pub(crate) struct Recipe {
    pub key: String,
    pub steps: Vec<Step>,
}

/// What the golden is built with, part of its key: local binaries, or a server given by URL.
pub(crate) enum BuiltWith<'a> {
    Binaries(&'a PgBinaries),
    /// A server's `server_version_num`.
    Server(u32),
}

/// Reads the recipe's files (relative paths from `base`) and hashes it with what builds it.
pub(crate) fn resolve(golden: &Golden, with: BuiltWith<'_>, base: &Path) -> Result<Recipe> {
    check_name(&golden.name)?;
    check_settings(golden)?;
    let mut hash = Hash::default();
    hash.add(FORMAT);
    hash.add(&golden.name);
    match with {
        BuiltWith::Binaries(bins) => {
            hash.add(&bins.version().to_string());
            hash.add(&bins.bin_dir().to_string_lossy());
        }
        BuiltWith::Server(version) => hash.add(&format!("server {version}")),
    }
    INITDB_ARGS.iter().for_each(|arg| hash.add(arg));
    for (name, value) in TEST_SETTINGS {
        hash.add(name);
        hash.add(value);
    }
    for (name, value) in &golden.settings {
        hash.add(name);
        hash.add(value);
    }

    let mut steps = Vec::new();
    let mut sql_count = 0;
    for ingredient in &golden.ingredients {
        match ingredient {
            Ingredient::Migrations(format, dir) => {
                let read = migrations::read(*format, &golden.name, &base.join(dir), base)?;
                read.key.iter().for_each(|part| hash.add(part));
                for migration in read.steps {
                    let sql = migration.statements().into_iter();
                    steps.extend(sql.map(|(origin, text)| Step::Sql { origin, text }));
                }
            }
            Ingredient::SqlFile(path) => {
                let file = base.join(path);
                let text = read(&golden.name, &file, base)?;
                hash.add(&text);
                steps.push(Step::Sql {
                    origin: format!("SQL file {}", display(&file, base)),
                    text,
                });
            }
            Ingredient::Sql(text) => {
                sql_count += 1;
                hash.add(text);
                steps.push(Step::Sql {
                    origin: format!("sql #{sql_count}"),
                    text: text.clone(),
                });
            }
            Ingredient::Fixture(path, text) => {
                hash.add("fixture");
                hash.add(path);
                hash.add(text);
                steps.push(Step::Sql {
                    origin: format!("fixture {path}"),
                    text: text.to_string(),
                });
            }
            Ingredient::SqlxMigrator(migrator) => {
                migrator.key().iter().for_each(|part| hash.add(part));
                steps.push(Step::SqlxMigrator(*migrator));
            }
            Ingredient::Setup(hook) => {
                hash.add("setup hook");
                steps.push(Step::Hook(hook.clone()));
            }
            Ingredient::SetupUrl(hook) => {
                hash.add("setup hook with a connection string");
                steps.push(Step::UrlHook(hook.clone()));
            }
        }
    }
    hash.add(golden.version.as_deref().unwrap_or(""));
    Ok(Recipe {
        key: hash.finish(),
        steps,
    })
}

pub(super) fn read(name: &str, file: &Path, base: &Path) -> Result<String> {
    std::fs::read_to_string(file).map_err(|e| {
        Error::new(
            ErrorKind::Golden,
            format!("golden {name:?}: cannot read {}", file.display()),
        )
        .with_source(e)
        .hint(format!(
            "relative paths are taken from the crate's directory ({})",
            base.display()
        ))
    })
}

pub(super) fn display(file: &Path, base: &Path) -> String {
    file.strip_prefix(base)
        .unwrap_or(file)
        .display()
        .to_string()
}

/// Golden names become database and directory names: keep them plain.
fn check_name(name: &str) -> Result<()> {
    let plain = !name.is_empty()
        && name.len() <= 48
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Golden,
        format!("golden name {name:?} is not a plain name"),
    )
    .hint("use letters, digits, '_' and '-', at most 48 characters (it names the database and a directory)"))
}

/// Settings become lines of postgresql.conf: refuse those that would add lines of their own.
fn check_settings(golden: &Golden) -> Result<()> {
    let what = format!("golden {:?}: setting", golden.name);
    for (name, value) in &golden.settings {
        check_setting(name, value, ErrorKind::Golden, &what)?;
    }
    Ok(())
}

/// SHA-256 over length-prefixed parts (so that "ab"+"c" and "a"+"bc" differ).
#[derive(Default)]
struct Hash(Sha256);

impl Hash {
    fn add(&mut self, part: &str) {
        self.0.update((part.len() as u64).to_le_bytes());
        self.0.update(part.as_bytes());
    }

    /// The first 64 bits, in hex: plenty to tell recipes of one name apart.
    fn finish(self) -> String {
        self.0.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("app_test-1").is_ok());
        for bad in ["", "a b", "x\"y", "../up", &"n".repeat(49)] {
            assert_eq!(
                check_name(bad).unwrap_err().kind(),
                ErrorKind::Golden,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn settings_that_would_add_lines_to_postgresql_conf_are_refused() {
        let good = Golden::new("app")
            .setting("work_mem", "64MB")
            .setting("my_ext.note", "it's fine");
        assert!(check_settings(&good).is_ok());
        for golden in [
            Golden::new("app").setting("work_mem", "1MB\nfsync = off"),
            Golden::new("app").setting("work_mem", "1MB\r"),
            Golden::new("app").setting("fsync = off\nwork_mem", "1MB"),
            Golden::new("app").setting("work mem", "1MB"),
        ] {
            let err = check_settings(&golden).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Golden, "{err}");
            assert!(err.to_string().contains("golden \"app\": setting"), "{err}");
        }
    }

    #[test]
    fn hash_parts_are_delimited() {
        let (mut a, mut b) = (Hash::default(), Hash::default());
        a.add("ab");
        a.add("c");
        b.add("a");
        b.add("bc");
        assert_ne!(a.finish(), b.finish());
    }
}
