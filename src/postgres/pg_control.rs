//! Reading the cluster state out of `global/pg_control`.
//!
//! `ControlFileData` starts with `system_identifier` (8 bytes), `pg_control_version` (4),
//! `catalog_version_no` (4) and `state` (4), in native byte order, in every supported version;
//! reading those 20 bytes needs no `pg_controldata` (which some distributions leave out).

use std::path::Path;

use crate::error::{IoContext, Result};

/// `DBState` from PostgreSQL's `pg_control.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// The server is starting.
    StartingUp,
    /// Stopped cleanly: a shutdown checkpoint is the last record.
    ShutDown,
    /// A standby stopped cleanly.
    ShutDownInRecovery,
    /// The server is stopping.
    ShuttingDown,
    /// Replaying WAL after a crash (or the server was killed while running).
    InCrashRecovery,
    /// Replaying WAL as a standby or from a backup.
    InArchiveRecovery,
    /// Running (or killed while running).
    InProduction,
    /// A value this version of pgclone does not know.
    Unknown(u32),
}

impl ClusterState {
    /// Whether the cluster was shut down cleanly (no recovery needed to start it).
    pub fn is_shut_down(self) -> bool {
        matches!(
            self,
            ClusterState::ShutDown | ClusterState::ShutDownInRecovery
        )
    }

    /// The words `pg_controldata` prints for the state.
    pub fn describe(self) -> String {
        match self {
            ClusterState::StartingUp => "starting up".into(),
            ClusterState::ShutDown => "shut down".into(),
            ClusterState::ShutDownInRecovery => "shut down in recovery".into(),
            ClusterState::ShuttingDown => "shutting down".into(),
            ClusterState::InCrashRecovery => "in crash recovery".into(),
            ClusterState::InArchiveRecovery => "in archive recovery".into(),
            ClusterState::InProduction => "in production".into(),
            ClusterState::Unknown(n) => format!("unknown state {n}"),
        }
    }
}

/// The system identifier recorded in `<data_dir>/global/pg_control` (the first 8 bytes).
pub(crate) fn system_identifier(data_dir: &Path) -> Result<u64> {
    let bytes = read(data_dir)?;
    Ok(u64::from_ne_bytes(bytes[..8].try_into().unwrap()))
}

fn read(data_dir: &Path) -> Result<Vec<u8>> {
    let path = data_dir.join("global/pg_control");
    let bytes = std::fs::read(&path).doing("read", &path)?;
    if bytes.len() < 20 {
        return Err(crate::error::Error::new(
            crate::error::ErrorKind::NotACluster,
            format!("{} is too short to be a pg_control file", path.display()),
        ));
    }
    Ok(bytes)
}

/// The state recorded in `<data_dir>/global/pg_control`.
pub fn cluster_state(data_dir: &Path) -> Result<ClusterState> {
    let bytes = read(data_dir)?;
    let Some(raw) = bytes.get(16..20) else {
        return Ok(ClusterState::Unknown(u32::MAX));
    };
    Ok(match u32::from_ne_bytes(raw.try_into().unwrap()) {
        0 => ClusterState::StartingUp,
        1 => ClusterState::ShutDown,
        2 => ClusterState::ShutDownInRecovery,
        3 => ClusterState::ShuttingDown,
        4 => ClusterState::InCrashRecovery,
        5 => ClusterState::InArchiveRecovery,
        6 => ClusterState::InProduction,
        n => ClusterState::Unknown(n),
    })
}
