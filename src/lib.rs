//! pgclone: a real, isolated PostgreSQL database for every test.
//!
//! This layer finds the PostgreSQL binaries ([`PgBinaries`]) and runs throwaway clusters
//! ([`TempCluster`]) safely: the server is a child of the test process that dies with it, its
//! output goes to a log file, it is ready when a real connection succeeds, and when the caller is
//! root it runs as an unprivileged user. See ARCHITECTURE.md for the map of the code.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = pgclone::TempCluster::start()?;
//! let (client, connection) =
//!     tokio_postgres::connect(&cluster.connection_string(), tokio_postgres::NoTls).await?;
//! tokio::spawn(connection);
//! let row = client.query_one("select version()", &[]).await?;
//! println!("{}", row.get::<_, String>(0));
//! # Ok(()) }
//! ```
//!
//! Environment variables: `PGCLONE_PG_BIN`, `PGCLONE_PG_VERSION`, `PGCLONE_DIR`,
//! `PGCLONE_RUN_AS`, `PGCLONE_SOCKET_DIR`, `PGCLONE_KEEP`, `PGCLONE_POOL`, `PGCLONE_REBUILD`
//! (see README.md).

#![deny(missing_docs)]
mod clone;
mod config;
mod error;
mod exit;
mod harness;
mod postgres;
mod store;

pub use clone::fs_probe::{probe_file_system, shared_bytes, FsCapabilities};
pub use clone::{
    clone_cluster, clone_running_cluster, clone_stopped_cluster, CloneEvent, CloneOptions,
    CloneReport, CopyMethod, Lsn, Step,
};
pub use error::{Error, ErrorKind, Result};
pub use harness::golden::{BoxError, Golden};
pub use harness::test_db::{Method, Mode, TestDb, TestDbBuilder};
pub use postgres::binaries::{PgBinaries, PgVersion};
pub use postgres::features as pg_features;
pub use postgres::features::MIN_MAJOR;
pub use postgres::options::ServerOptions;
pub use postgres::pg_control::{cluster_state, ClusterState};
pub use postgres::run_as::RunAs;
pub use postgres::server::Server;
pub use postgres::socket_dir::MAX_SOCKET_PATH;
pub use postgres::temp_cluster::{TempCluster, TempClusterBuilder, Timings};
pub use store::gc::{collect_garbage, pgclone_dir, GcReport, UnfinishedClone};

/// The user PostgreSQL runs as when this process is root (`PGCLONE_RUN_AS`, default `postgres`,
/// else `nobody`); `None` when this process is not root and runs PostgreSQL itself.
pub fn run_as_user() -> Result<Option<RunAs>> {
    RunAs::for_current_user(config::Config::from_env()?.run_as.as_deref())
}

/// What `#[pgclone::test]` expands to. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::harness::{run_async, run_sync, TestOutcome, TestSpec};
}

pub use pgclone_macros::test;

/// The README's examples, compiled and checked as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
