//! pgclone: a real, isolated PostgreSQL database for every test, copied from a golden cluster
//! that is built once and cached.
//!
//! The API is grouped by audience:
//! - at the top, the test harness: [`Golden`] recipes, [`TestDb`] (a test's own copy, in
//!   [`Mode::Cluster`] or [`Mode::Database`]), and the [`test`] attribute;
//! - [`clone`]: copying a data directory, stopped or running (what `pgclone clone` does);
//! - [`server`]: running PostgreSQL yourself ([`server::TempCluster`], [`server::Server`]) and
//!   finding its binaries;
//! - [`gc`]: removing what killed processes left.
//!
//! ```no_run
//! use pgclone::{Golden, TestDb};
//!
//! # async fn f() -> pgclone::Result<()> {
//! let db = TestDb::start(&Golden::new("app").migrations("migrations")).await?;
//! let n: i64 = db.client().query_one("select count(*) from users", &[]).await.unwrap().get(0);
//! # Ok(()) }
//! ```
//!
//! Environment variables: `PGCLONE_PG_BIN`, `PGCLONE_PG_VERSION`, `PGCLONE_DIR`,
//! `PGCLONE_RUN_AS`, `PGCLONE_SOCKET_DIR`, `PGCLONE_KEEP`, `PGCLONE_POOL`, `PGCLONE_REBUILD`
//! (see README.md). ARCHITECTURE.md is the map of the code.

#![deny(missing_docs)]
pub mod clone;
mod config;
mod error;
mod exit;
mod harness;
mod postgres;
mod store;
mod sys;

pub use error::{Error, ErrorKind, Result};
pub use harness::args::TestArg;
pub use harness::golden::keys::{golden_keys, GoldenKey};
pub use harness::golden::{BoxError, Golden, SqlxMigrator};
pub use harness::test_db::{Method, Mode, TestDb, TestDbBuilder};

/// Running PostgreSQL yourself: a throwaway [`TempCluster`](server::TempCluster), a [`Server`](server::Server) on a data directory,
/// the binaries and what each major version has, and the user PostgreSQL runs as under root.
pub mod server {
    pub use crate::postgres::binaries::{PgBinaries, PgVersion};
    pub use crate::postgres::features;
    pub use crate::postgres::features::MIN_MAJOR;
    pub use crate::postgres::options::ServerOptions;
    pub use crate::postgres::run_as::RunAs;
    pub use crate::postgres::server::Server;
    pub use crate::postgres::socket_dir::MAX_SOCKET_PATH;
    pub use crate::postgres::temp_cluster::{TempCluster, TempClusterBuilder, Timings};

    /// The user PostgreSQL runs as when this process is root (`PGCLONE_RUN_AS`, default
    /// `postgres`, else `nobody`); `None` when this process is not root and runs PostgreSQL itself.
    pub fn run_as_user() -> crate::Result<Option<RunAs>> {
        RunAs::for_current_user(crate::config::Config::from_env()?.run_as.as_deref())
    }
}

/// Removing what killed processes left (clones, unfinished clones, socket directories) and
/// what users kept.
pub mod gc {
    pub use crate::store::gc::{
        collect_garbage, pgclone_dir, unfinished_clones, GcReport, UnfinishedClone,
    };
}

/// What `#[pgclone::test]` expands to. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::harness::golden::MigratorTarget;
    pub use crate::harness::library::{
        Argument, ArgumentKind, KnownArgument, Registered, UnknownArgument, TESTS,
    };
    pub use crate::harness::{
        run_async, run_sync, sqlx_migrator, AsyncTestFn, Fixture, Migrations, SyncTestFn,
        TestOutcome, TestSpec,
    };
    pub use linkme;
}

pub use pgclone_macros::test;

/// The README's examples, compiled and checked as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
