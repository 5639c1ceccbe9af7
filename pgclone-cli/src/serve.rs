//! `pgclone serve`: a copy of a golden, running until Ctrl-C, for tools that need a database
//! outside the tests: `cargo sqlx prepare` and sqlx's `query!` at build time, IDEs, psql.
//! The golden is built from migrations and SQL files as a test's would be, and cached.

use std::io::Write;
use std::path::PathBuf;

use pgclone::{Golden, Mode, TestDb};

/// How the migrations are written, as `Golden`'s readers take them.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    /// `<version>_<description>.sql`, recorded in `_sqlx_migrations`.
    Sqlx,
    /// `<version>_<name>/up.sql`, recorded in `__diesel_schema_migrations`.
    Diesel,
    /// `V<n>__<name>.sql`, recorded in `refinery_schema_history`.
    Refinery,
    /// Every `*.sql` in lexical order, nothing recorded.
    Plain,
}

/// The recipe: `migrations` (none given: `./migrations` when it exists, as `#[pgclone::test]`
/// and `#[sqlx::test]` take it) in `format`, then the SQL files in order.
pub fn recipe(migrations: Vec<PathBuf>, format: Format, sql_files: Vec<PathBuf>) -> Golden {
    let migrations = match migrations.is_empty() {
        true => Some(PathBuf::from("migrations"))
            .filter(|dir| dir.is_dir())
            .into_iter()
            .collect(),
        false => migrations,
    };
    // Relative paths are the command line's, from the working directory (a recipe would take
    // them from CARGO_MANIFEST_DIR, which `cargo run` sets to pgclone's own).
    let absolute = |path: PathBuf| std::path::absolute(&path).unwrap_or(path);
    // Named as the golden of a sqlx-style test is, so that the same recipe is the same golden.
    let golden = migrations
        .into_iter()
        .map(absolute)
        .fold(Golden::empty(), |golden, dir| match format {
            Format::Sqlx => golden.sqlx_migrations(dir),
            Format::Diesel => golden.diesel_migrations(dir),
            Format::Refinery => golden.refinery_migrations(dir),
            Format::Plain => golden.migrations(dir),
        });
    sql_files
        .into_iter()
        .map(absolute)
        .fold(golden, Golden::sql_file)
}

/// Starts the copy, prints `DATABASE_URL=...` on stdout (alone on its line, for `eval` or a
/// `.env` file), waits for Ctrl-C or SIGTERM, and removes the copy.
pub fn serve(golden: Golden) -> pgclone::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime (threads, epoll) for the copy's client");
    runtime.block_on(async {
        let db = TestDb::builder(&golden).mode(Mode::Cluster).start().await?;
        println!("DATABASE_URL={}", db.connection_string());
        let _ = std::io::stdout().flush();
        eprintln!(
            "pgclone: serving a copy of the golden in {} (psql -h {} -p {} -U {} {}); Ctrl-C stops and removes it",
            db.data_dir().display(),
            db.host(),
            db.port(),
            db.user(),
            db.dbname()
        );
        stopped().await;
        eprintln!("pgclone: stopping");
        db.close().await
    })
}

/// Ctrl-C or SIGTERM.
async fn stopped() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
