//! Migration formats. A format reads a directory into [`Migration`]s in the order its runner
//! applies them: the SQL, whether the runner wraps it in a transaction, and the bookkeeping the
//! runner writes with it (its table's DDL comes first, as a step of its own). A golden built
//! from them holds what the runner would have left, so the application's own runner finds
//! nothing to do on a copy. With the steps come the parts of the cache key: every byte that
//! decides what the golden holds (file names, contents, the format).

mod diesel;
mod plain;
mod refinery;
mod sqlx;
mod sqlx_migrator;

pub use sqlx_migrator::SqlxMigrator;
pub use sqlx_migrator::Target;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};

use super::recipe;
use crate::error::{Error, ErrorKind, Result};

/// How a directory of migrations is read, and which runner's bookkeeping goes with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Format {
    /// `*.sql` in lexical order, no bookkeeping.
    Plain,
    /// sqlx's `<version>_<description>.sql`, recorded in `_sqlx_migrations`.
    Sqlx,
    /// diesel's `<version>_<name>/up.sql`, recorded in `__diesel_schema_migrations`.
    Diesel,
    /// refinery's `V<version>__<name>.sql`, recorded in `refinery_schema_history`.
    Refinery,
}

/// What a format read from a directory.
#[derive(Clone)]
pub(super) struct Migrations {
    pub steps: Vec<Migration>,
    /// The parts of the cache key, in order.
    pub key: Vec<String>,
}

/// One step: a migration (or the bookkeeping table's DDL) and its bookkeeping.
#[derive(Debug, Clone)]
pub(super) struct Migration {
    /// The file, relative to the migrations directory (`1_init.sql`, `2024_init/up.sql`);
    /// empty for the bookkeeping table. Part of the cache key.
    pub name: String,
    /// Where it came from (`sqlx migration migrations/1_init.sql`), for error messages.
    pub origin: String,
    pub sql: String,
    /// Whether `sql` and `record` run between `begin` and `commit`. Without it `sql` is sent
    /// alone, as one simple-protocol query (which PostgreSQL runs as one implicit transaction
    /// when it holds several statements, and outside any when it holds one).
    pub transaction: bool,
    /// Bookkeeping run after `sql`, in its transaction when there is one; empty for none.
    pub record: String,
    /// Bookkeeping run after the transaction; empty for none.
    pub after: String,
}

impl Migration {
    /// SQL run alone, without bookkeeping.
    fn alone(name: String, origin: String, sql: String) -> Migration {
        Migration {
            name,
            origin,
            sql,
            transaction: false,
            record: String::new(),
            after: String::new(),
        }
    }

    /// The SQL texts to send, one simple-protocol query each, in order, with their origins.
    pub fn statements(self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let bookkeeping = format!("{}: bookkeeping", self.origin);
        if self.transaction {
            out.push((self.origin.clone(), "begin".to_string()));
        }
        out.push((self.origin.clone(), self.sql));
        if !self.record.is_empty() {
            out.push((bookkeeping.clone(), self.record));
        }
        if self.transaction {
            out.push((self.origin, "commit".to_string()));
        }
        if !self.after.is_empty() {
            out.push((bookkeeping, self.after));
        }
        out
    }
}

/// Reads the migrations of `dir` (already joined to `base`) in `format`, for the golden `golden`.
/// Read again only when a file changed (by name, size or modification time): a binary's library
/// resolves every test's recipe, most of them over one directory. The key is one digest of the
/// parts, so that each recipe over them hashes a line, not every migration again.
pub(super) fn read(format: Format, golden: &str, dir: &Path, base: &Path) -> Result<Migrations> {
    type Cache = Mutex<HashMap<(Format, PathBuf), (Vec<FileStamp>, Migrations)>>;
    static READ: OnceLock<Cache> = OnceLock::new();
    let cache = READ.get_or_init(Default::default);
    let stamps = stamps(dir);
    if let Some((read_with, read)) = cache.lock().unwrap().get(&(format, dir.to_path_buf())) {
        if stamps.as_ref() == Some(read_with) {
            return Ok(read.clone());
        }
    }
    let source = Source { golden, dir, base };
    let mut read = match format {
        Format::Plain => plain::read(&source),
        Format::Sqlx => sqlx::read(&source).map(|steps| keyed("sqlx", steps)),
        Format::Diesel => diesel::read(&source).map(|steps| keyed("diesel", steps)),
        Format::Refinery => refinery::read(&source).map(|steps| keyed("refinery", steps)),
    }?;
    read.key = vec![digest(&read.key)];
    if let Some(stamps) = stamps {
        let entry = (stamps, read.clone());
        cache
            .lock()
            .unwrap()
            .insert((format, dir.to_path_buf()), entry);
    }
    Ok(read)
}

/// A file under a migrations directory as last seen: its path, size and modification time.
type FileStamp = (PathBuf, u64, Option<std::time::SystemTime>);

/// Every file under `dir`, subdirectories included, sorted; `None` if a directory cannot be read.
fn stamps(dir: &Path) -> Option<Vec<FileStamp>> {
    let mut stamps = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).ok()? {
            let entry = entry.ok()?;
            let meta = std::fs::metadata(entry.path()).ok()?;
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                stamps.push((entry.path(), meta.len(), meta.modified().ok()));
            }
        }
    }
    stamps.sort();
    Some(stamps)
}

/// SHA-256 of length-prefixed parts, in hex.
fn digest(parts: &[String]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The key of a format with bookkeeping: its name, then every part of every step.
fn keyed(format: &str, steps: Vec<Migration>) -> Migrations {
    let mut key = vec![format!("{format} migrations")];
    for step in &steps {
        key.push(step.name.clone());
        key.push(
            if step.transaction {
                "transaction"
            } else {
                "no transaction"
            }
            .to_string(),
        );
        key.extend([step.sql.clone(), step.record.clone(), step.after.clone()]);
    }
    Migrations { steps, key }
}

/// A migrations directory being read.
struct Source<'a> {
    golden: &'a str,
    dir: &'a Path,
    base: &'a Path,
}

impl Source<'_> {
    /// The entries of `dir` (a directory of this source), sorted by name.
    fn entries(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            self.error(format!(
                "cannot read migrations directory {}",
                dir.display()
            ))
            .with_source(e)
            .hint(self.relative_hint())
        })?;
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        Ok(paths)
    }

    /// A file's text (UTF-8, as the runners read it).
    fn read(&self, file: &Path) -> Result<String> {
        recipe::read(self.golden, file, self.base)
    }

    /// A file's path for messages: relative to the crate's directory when inside it.
    fn display(&self, file: &Path) -> String {
        recipe::display(file, self.base)
    }

    /// A file's path relative to the migrations directory, for the cache key.
    fn name(&self, file: &Path) -> String {
        file.strip_prefix(self.dir)
            .unwrap_or(file)
            .to_string_lossy()
            .into_owned()
    }

    /// Fails if two of `versions` (sorted) are the same, naming both files; `shown` writes a
    /// version as the tool's users know it.
    fn refuse_repeated_versions<V: PartialEq>(
        &self,
        tool: &str,
        naming: &str,
        versions: &[(V, &Path)],
        shown: impl Fn(&V) -> String,
    ) -> Result<()> {
        let Some(pair) = versions.windows(2).find(|pair| pair[0].0 == pair[1].0) else {
            return Ok(());
        };
        Err(self
            .error(format!(
                "{tool} migrations {} and {} have the same version, {}",
                self.display(pair[0].1),
                self.display(pair[1].1),
                shown(&pair[0].0)
            ))
            .hint(format!("give one of them a version of its own: {naming}")))
    }

    /// `golden "app": <what>`.
    fn error(&self, what: impl std::fmt::Display) -> Error {
        Error::new(
            ErrorKind::Golden,
            format!("golden {:?}: {what}", self.golden),
        )
    }

    fn relative_hint(&self) -> String {
        format!(
            "relative paths are taken from the crate's directory ({})",
            self.base.display()
        )
    }
}

/// `text` as an SQL string literal, whatever `standard_conforming_strings` says.
fn literal(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// Lowercase hexadecimal.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(literal(r"it's C:\x"), r"E'it''s C:\\x'");
    }

    #[test]
    fn a_transaction_holds_the_sql_and_its_record_and_the_rest_follows() {
        let step = Migration {
            name: "1_a.sql".into(),
            origin: "m".into(),
            sql: "create table a()".into(),
            transaction: true,
            record: "insert".into(),
            after: "update".into(),
        };
        let sent: Vec<String> = step.statements().into_iter().map(|(_, s)| s).collect();
        assert_eq!(
            sent,
            ["begin", "create table a()", "insert", "commit", "update"]
        );
        let alone = Migration::alone("x".into(), "m".into(), "select 1".into());
        assert_eq!(
            alone.statements(),
            [("m".to_string(), "select 1".to_string())]
        );
    }

    #[test]
    fn a_directory_read_again_sees_a_changed_or_added_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = || {
            let read = read(Format::Sqlx, "app", dir.path(), dir.path()).unwrap();
            (read.key, read.steps.len())
        };
        std::fs::write(dir.path().join("1_a.sql"), "create table a ()").unwrap();
        let first = key();
        assert_eq!(key(), first, "unchanged: the same key");
        std::fs::write(dir.path().join("1_a.sql"), "create table a (id int)").unwrap();
        let changed = key();
        assert_ne!(changed, first, "a changed file");
        std::fs::write(dir.path().join("2_b.sql"), "create table b ()").unwrap();
        let added = key();
        assert_ne!(added, changed, "an added file");
        assert_eq!(added.1, first.1 + 1, "one more step");
    }
}
