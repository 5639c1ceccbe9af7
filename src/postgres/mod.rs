//! Running PostgreSQL: finding its binaries, what each major version has, starting and stopping
//! servers (the only place that spawns processes), talking to them, and the data directories
//! pgclone makes for them.

pub(crate) mod binaries;
pub(crate) mod data_dir;
pub mod features;
pub(crate) mod libpq;
pub(crate) mod options;
pub(crate) mod pg_control;
pub(crate) mod run_as;
pub(crate) mod server;
pub(crate) mod session;
pub(crate) mod socket_dir;
pub(crate) mod temp_cluster;
pub(crate) mod url;
pub(crate) mod wire;
