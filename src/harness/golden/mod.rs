//! Golden clusters: a recipe (migrations, SQL, a Rust setup hook, settings) built once per recipe
//! and PostgreSQL version, cached on disk in `<root>/golden/<key>/` (the key: a hash of the recipe's content), and cloned per test.

mod apply;
mod build;
pub(crate) mod keys;
mod migrations;
pub(crate) mod recipe;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use crate::postgres::data_dir::config_string;
use migrations::Format;
pub use migrations::{SqlxMigrator, Target as MigratorTarget};

pub(crate) use apply::apply;
pub(crate) use build::{
    blocking, check_serves, ensure_library_built, ensure_resolved, prepare, BuiltGolden, Prepared,
    Recipes, UNUSED_FOR,
};

/// Errors a setup hook may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type Hook = Arc<
    dyn Fn(tokio_postgres::Client) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>
        + Send
        + Sync,
>;

/// A setup hook given the golden database's connection string instead of a client.
type UrlHook =
    Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>> + Send + Sync>;

/// One part of a recipe, applied in the order the recipe lists them.
#[derive(Clone)]
enum Ingredient {
    Migrations(Format, PathBuf),
    SqlFile(PathBuf),
    Sql(String),
    /// SQL the test named as a fixture (`fixtures("users")`), by its path.
    Fixture(&'static str, &'static str),
    SqlxMigrator(&'static dyn SqlxMigrator),
    Setup(Hook),
    SetupUrl(UrlHook),
}

/// The recipe of a golden cluster: what goes into the database `name` before any test clones it.
///
/// Built once (per recipe and PostgreSQL version) under a file lock, whatever the number of test
/// threads and processes asking; cached on disk across runs; rebuilt when anything in the recipe
/// changes: the name, the binaries, the settings, a migration file's name or bytes, the SQL, a SQL
/// file's bytes, or the [`version`](Golden::version) string (the one way to say a setup hook
/// changed).
///
/// ```no_run
/// use pgclone::Golden;
///
/// fn app() -> Golden {
///     Golden::new("app")
///         .migrations("migrations")              // *.sql, in lexical order
///         .sql_file("tests/fixtures/seed.sql")
///         .sql("insert into plans values (1, 'free')")
/// }
/// ```
#[derive(Clone)]
pub struct Golden {
    name: String,
    ingredients: Vec<Ingredient>,
    version: Option<String>,
    /// Names and values as written into `postgresql.conf` (quoted), checked by the recipe.
    settings: Vec<(String, String)>,
}

impl Golden {
    /// A recipe for the database `name` (the one that holds the fixture, and that tests connect
    /// to). Letters, digits, `_` and `-`, at most 48 characters.
    pub fn new(name: impl Into<String>) -> Golden {
        Golden {
            name: name.into(),
            ingredients: Vec::new(),
            version: None,
            settings: Vec::new(),
        }
    }

    /// An empty cluster: the `postgres` database and nothing in it.
    pub fn empty() -> Golden {
        Golden::new("postgres")
    }

    /// Applies every `*.sql` file of `dir`, in lexical order of their names, each in one
    /// transaction. A relative path is taken from `CARGO_MANIFEST_DIR` (the crate being tested).
    pub fn migrations(self, dir: impl Into<PathBuf>) -> Self {
        self.migrations_in(Format::Plain, dir)
    }

    /// Applies sqlx migrations as sqlx's `Migrator` does, so that it finds nothing to do on a
    /// copy. The files of `dir` named `<version>_<description>.sql` or `.up.sql` (never
    /// `.down.sql`; names without `_` or not ending in `.sql` are not migrations), in numeric
    /// order of their `i64` versions, each in a transaction unless it starts with
    /// `-- no-transaction`. Each gets its row in `_sqlx_migrations` (created with sqlx's DDL):
    /// version, description (`_` read as a space), success, execution time, and the SHA-384 of
    /// the file's bytes, the checksum the runner compares. A version that is not an integer and
    /// two migrations of one version are refused, naming the files. A `sqlx.toml` is not read:
    /// its `ignored-chars` or table name would not match. Relative paths as for
    /// [`migrations`](Golden::migrations).
    pub fn sqlx_migrations(self, dir: impl Into<PathBuf>) -> Self {
        self.migrations_in(Format::Sqlx, dir)
    }

    /// Applies diesel migrations as diesel's migration harness does, so that
    /// `run_pending_migrations` finds nothing to do on a copy. Each subdirectory
    /// `<version>_<name>` of `dir` holding `up.sql` (`down.sql` never runs), in order of the
    /// version strings (the part before the first `_`, without `-`), each in a transaction unless
    /// its `metadata.toml` says `run_in_transaction = false` (a `metadata.toml` without the key
    /// means false, as in diesel; only that key is read). Each version gets its row in
    /// `__diesel_schema_migrations` (created with diesel's DDL). A subdirectory without `up.sql`,
    /// an empty `up.sql` and two migrations of one version are refused, naming them. Relative
    /// paths as for [`migrations`](Golden::migrations).
    pub fn diesel_migrations(self, dir: impl Into<PathBuf>) -> Self {
        self.migrations_in(Format::Diesel, dir)
    }

    /// Applies refinery migrations as refinery's async runner does, so that it finds nothing to
    /// do on a copy. The files named `V<version>__<name>.sql` or `U<version>__<name>.sql` (the
    /// name letters, digits and `_`) under `dir`, subdirectories included, in order of their
    /// `i32` versions, each in a transaction. Each gets its row in `refinery_schema_history`
    /// (created with refinery's DDL): version, name, when it was applied (RFC 3339, UTC) and the
    /// checksum the runner compares (SipHash-1-3 of the name, version and SQL). A version that is
    /// not an integer, two migrations of one version and Rust migrations (`.rs`) are refused,
    /// naming the files. Relative paths as for [`migrations`](Golden::migrations).
    pub fn refinery_migrations(self, dir: impl Into<PathBuf>) -> Self {
        self.migrations_in(Format::Refinery, dir)
    }

    fn migrations_in(mut self, format: Format, dir: impl Into<PathBuf>) -> Self {
        self.ingredients
            .push(Ingredient::Migrations(format, dir.into()));
        self
    }

    /// Runs a sqlx `Migrator` (`static MIGRATOR: Migrator = sqlx::migrate!();`) with sqlx itself,
    /// so that the golden holds exactly what the application's runner writes. Its migrations
    /// (versions, SQL, checksums) are part of the cache key. Needs feature `sqlx` (sqlx 0.9) or
    /// `sqlx-0_8` (sqlx 0.8), whichever the `Migrator` comes from.
    pub fn sqlx_migrator(self, migrator: &'static impl SqlxMigrator) -> Self {
        self.sqlx_migrator_dyn(migrator)
    }

    pub(crate) fn sqlx_migrator_dyn(mut self, migrator: &'static dyn SqlxMigrator) -> Self {
        self.ingredients.push(Ingredient::SqlxMigrator(migrator));
        self
    }

    /// A test's fixture: SQL read at compile time from `path`, run as one query after the rest
    /// of the recipe, as `#[sqlx::test(fixtures(...))]` runs it.
    pub(crate) fn fixture(mut self, path: &'static str, sql: &'static str) -> Self {
        self.ingredients.push(Ingredient::Fixture(path, sql));
        self
    }

    /// Applies one SQL file (relative paths as for [`migrations`](Golden::migrations)).
    pub fn sql_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ingredients.push(Ingredient::SqlFile(path.into()));
        self
    }

    /// Runs SQL (one or more statements).
    pub fn sql(mut self, sql: impl Into<String>) -> Self {
        self.ingredients.push(Ingredient::Sql(sql.into()));
        self
    }

    /// Runs Rust code on a client connected to the golden database, in recipe order. pgclone
    /// cannot see inside a closure: change [`version`](Golden::version) when the hook changes.
    pub fn setup<F, Fut, E>(mut self, hook: F) -> Self
    where
        F: Fn(tokio_postgres::Client) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let hook = Arc::new(hook);
        self.ingredients
            .push(Ingredient::Setup(Arc::new(move |client| {
                let run = hook(client);
                Box::pin(async move { run.await.map_err(Into::into) })
            })));
        self
    }

    /// Like [`setup`](Golden::setup), given the golden database's connection string, for code
    /// that makes its own connection: another client library, or a tool's migrator such as
    /// sea-orm's (`Migrator::up(&Database::connect(url).await?, None)`). Bump
    /// [`version`](Golden::version) when it changes.
    pub fn setup_url<F, Fut, E>(mut self, hook: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let hook = Arc::new(hook);
        self.ingredients
            .push(Ingredient::SetupUrl(Arc::new(move |url| {
                let run = hook(url);
                Box::pin(async move { run.await.map_err(Into::into) })
            })));
        self
    }

    /// A version string that is part of the cache key: bump it when a setup hook changes.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// A server setting for the golden and every clone of it, written into `postgresql.conf`.
    /// The value is taken as written, as by [`ServerOptions::setting`](crate::server::ServerOptions::setting):
    /// pgclone quotes it (`"a, b"` and `"it's"` need no quotes of yours; `""` is empty). The
    /// build refuses ([`ErrorKind::Golden`](crate::ErrorKind::Golden)) a `name` that is not a
    /// parameter's name and a value with a line break, which would add lines to the file.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings
            .push((name.into(), config_string(&value.into())));
        self
    }

    /// The database the fixture lives in.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The settings as the recipe gave them (unquoted), for a server given by `PGCLONE_URL`.
    pub(crate) fn raw_settings(&self) -> Vec<(String, String)> {
        let raw = |quoted: &str| {
            let inner = &quoted[1..quoted.len() - 1];
            inner.replace("''", "'").replace("\\\\", "\\")
        };
        self.settings
            .iter()
            .map(|(name, value)| (name.clone(), raw(value)))
            .collect()
    }
}

impl std::fmt::Debug for Golden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Golden")
            .field("name", &self.name)
            .field("ingredients", &self.ingredients.len())
            .field("version", &self.version)
            .field("settings", &self.settings)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_values_are_quoted_for_postgresql_conf() {
        assert_eq!(config_string("64MB"), "'64MB'");
        assert_eq!(config_string(""), "''");
        assert_eq!(config_string(r"it's C:\x"), r"'it''s C:\\x'");
        let golden = Golden::new("app").setting("search_path", "a, b");
        assert_eq!(golden.settings, [("search_path".into(), "'a, b'".into())]);
        for value in [r"it's C:\x", r"\'", "''", r"'\", ""] {
            let golden = Golden::new("app").setting("x.y", value);
            assert_eq!(
                golden.raw_settings(),
                [("x.y".to_string(), value.to_string())]
            );
        }
    }
}
