//! The environment variables pgclone reads, read in this one place.
//!
//! | variable | meaning |
//! | --- | --- |
//! | `PGCLONE_PG_BIN` | directory with `postgres` and `initdb`; skips the search |
//! | `PGCLONE_PG_VERSION` | the major to use when several are installed (default: the newest) |
//! | `PGCLONE_DIR` | where clusters live (default: `<cargo target dir>/pgclone`) |
//! | `PGCLONE_RUN_AS` | the user that runs PostgreSQL when pgclone runs as root (default: `postgres`, else `nobody`) |
//! | `PGCLONE_SOCKET_DIR` | where the short private socket directories are made (default: `/tmp`) |
//!
//! An empty value counts as unset.

use std::path::PathBuf;

use crate::error::{Error, ErrorKind, Result};

/// What the environment asks for; `Default` is "nothing set".
#[derive(Debug, Clone, Default)]
pub(crate) struct Config {
    pub pg_bin: Option<PathBuf>,
    pub pg_version: Option<u32>,
    pub root: Option<PathBuf>,
    pub run_as: Option<String>,
    pub socket_dir: Option<PathBuf>,
}

impl Config {
    pub fn from_env() -> Result<Config> {
        let pg_version = match var("PGCLONE_PG_VERSION") {
            None => None,
            Some(text) => Some(text.trim().parse().map_err(|_| {
                Error::new(
                    ErrorKind::InvalidConfig,
                    format!("PGCLONE_PG_VERSION={text:?} is not a major version number"),
                )
                .hint("set it to a major such as 15 or 18, or unset it to use the newest installed")
            })?),
        };
        Ok(Config {
            pg_bin: var("PGCLONE_PG_BIN").map(PathBuf::from),
            pg_version,
            root: var("PGCLONE_DIR").map(PathBuf::from),
            run_as: var("PGCLONE_RUN_AS"),
            socket_dir: var("PGCLONE_SOCKET_DIR").map(PathBuf::from),
        })
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}
