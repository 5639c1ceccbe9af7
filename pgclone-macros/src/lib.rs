//! Procedural macros of pgclone. Use them through the `pgclone` crate (`#[pgclone::test]`).
//!
//! This crate does no I/O and knows nothing about PostgreSQL: the attribute expands to one call
//! into the `pgclone` library.

#![deny(missing_docs)]

mod entry;

/// Runs a test with its own PostgreSQL database, a copy of a golden cluster.
///
/// ```ignore
/// #[pgclone::test(golden = app)]                 // cluster mode: a whole cluster per test
/// async fn signs_up(db: pgclone::TestDb) { /* db.client() ... */ }
///
/// #[pgclone::test(golden = app, mode = "database")]   // a database per test in a shared server
/// async fn cheap(db: pgclone::TestDb) -> Result<(), Box<dyn std::error::Error>> { Ok(()) }
///
/// #[pgclone::test]                               // no golden: an empty cluster
/// fn sync_test(db: pgclone::TestDb) { let _url = db.connection_string(); }
/// ```
///
/// Arguments, each at most once:
/// - `golden = <path to fn() -> Golden>` (none: an empty cluster);
/// - `mode = "cluster" | "database"` (default: `PGCLONE_MODE`, else database mode for a sqlx
///   argument and cluster mode for the others);
/// - `#[sqlx::test]`'s, with its meaning: `migrations = "dir"` (sqlx's format, relative to the
///   crate) or `migrations = false`, or `migrator = "path::TO_MIGRATOR"` (a sqlx `Migrator`);
///   with none of them (and no `golden`), a test taking a sqlx type gets the crate's
///   `./migrations` when it exists. `fixtures("a", "b")` (`fixtures/a.sql` beside the test's
///   source file), `fixtures("../x.sql")` (paths) or `fixtures(path = "dir", scripts("a"))`,
///   read by the compiler and run after the migrations (or the golden's recipe), in order;
/// - async tests only, the tokio runtime, with the rules of `#[tokio::test]`:
///   `flavor = "current_thread" | "multi_thread"` (default `"current_thread"`), and
///   `worker_threads = N` (N at least 1), which needs `flavor = "multi_thread"`.
///
/// Anything else, or an argument given twice, is a compile error pointing at it. A sync test runs
/// on a runtime of its own, so that its client works from blocking code.
/// The function takes its database as `db: pgclone::TestDb`, or as another type the library
/// accepts (`pgclone::TestArg`: a `tokio_postgres::Client`; with features, sqlx's `PgPool`,
/// `PgConnection`, `PoolConnection<Postgres>` or `PgPoolOptions, PgConnectOptions`, diesel's
/// `PgConnection`), or no argument at all; it returns `()` or `Result<(), E: Debug>`. A test
/// written for `#[sqlx::test]` with such an argument runs unchanged.
/// Other attributes (`#[should_panic]`, `#[ignore]`) keep working.
#[proc_macro_attribute]
pub fn test(
    args: proc_macro::TokenStream,
    item: proc_macro::TokenStream,
) -> proc_macro::TokenStream {
    entry::test(args.into(), item.into()).into()
}
