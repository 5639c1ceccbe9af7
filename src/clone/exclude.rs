//! What a clone of a data directory leaves out, as `pg_basebackup` does (docs/postgres-facts.md
//! 1–4).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::Path;

use crate::postgres::features;

/// Files never copied from the top level of the data directory.
const EXCLUDED_TOP_FILES: &[&str] = &[
    "postmaster.pid", // a clone holding it refuses to start, and pg_ctl on it signals the source
    "postmaster.opts",
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "backup_label", // the clone gets its own (online) or none (offline)
    "tablespace_map",
    "backup_manifest",
    "pgclone.log", // the log of a clone started by `pgclone clone --start`: its own, not ours
];

/// Directories kept, but empty: their contents are rebuilt at startup or belong to the source.
pub(crate) const EMPTIED_DIRS: &[&str] = &[
    "pg_stat_tmp",
    "pg_replslot", // copied slots would come alive in the clone and pin WAL forever
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];

/// Whether a clone of a running cluster (unlogged relations then start empty) or of a stopped one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Running,
    Stopped,
}

/// WAL directories kept (empty) in an online clone: its WAL is copied apart, by range.
const WAL_SUBDIRS: &[&str] = &["pg_wal/archive_status", features::WAL_SUMMARIES_DIR];

/// Whether `name` (an entry of directory `rel_dir`, relative to the data directory) is left out.
/// `init_forks` holds the relfilenodes of unlogged relations in that directory.
pub(crate) fn is_excluded(
    rel_dir: &Path,
    name: &OsStr,
    is_dir: bool,
    source: Source,
    init_forks: &HashSet<String>,
) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    // pg_control is copied last, by the clone itself: the mark of a finished clone
    // (docs/postgres-facts.md 9).
    if rel_dir == Path::new("global") && name == "pg_control" {
        return true;
    }
    if source == Source::Running {
        // WAL comes from the backup's range (docs/postgres-facts.md 10).
        let wal_file = rel_dir == Path::new("pg_wal") && !is_dir;
        let wal_subdir = WAL_SUBDIRS.iter().any(|dir| rel_dir == Path::new(dir));
        if wal_file || wal_subdir {
            return true;
        }
    }
    if rel_dir.as_os_str().is_empty() && EXCLUDED_TOP_FILES.contains(&name) {
        return true;
    }
    // A running standby's clone is a cluster of its own unless asked to stay a standby (then
    // the clone writes its own signal): never a copy that silently waits for WAL.
    if source == Source::Running
        && rel_dir.as_os_str().is_empty()
        && matches!(name, "standby.signal" | "recovery.signal")
    {
        return true;
    }
    if EMPTIED_DIRS.iter().any(|dir| rel_dir == Path::new(dir)) {
        return true;
    }
    if name.starts_with("pgsql_tmp")
        || name.starts_with("pg_internal.init")
        || is_temp_relation(name)
    {
        return true;
    }
    source == Source::Running && is_unlogged_main_fork(name, init_forks)
}

/// The relfilenodes with an init fork (`<node>_init`) among a directory's entry names.
pub(crate) fn init_forks<'a>(names: impl Iterator<Item = &'a str>) -> HashSet<String> {
    names
        .filter_map(|n| n.strip_suffix("_init"))
        .filter(|n| all_digits(n))
        .map(str::to_string)
        .collect()
}

/// `t<backend>_<relnode>` with an optional fork or segment suffix: a temporary relation.
fn is_temp_relation(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else {
        return false;
    };
    let Some((backend, node)) = rest.split_once('_') else {
        return false;
    };
    all_digits(backend) && all_digits(relnode_of(node))
}

/// Any fork but the init fork of an unlogged relation: its data is reset from the init fork.
fn is_unlogged_main_fork(name: &str, init_forks: &HashSet<String>) -> bool {
    let node = relnode_of(name);
    let fork = name
        .split('.')
        .next()
        .unwrap_or(name)
        .split_once('_')
        .map(|(_, fork)| fork);
    all_digits(node) && init_forks.contains(node) && fork != Some("init")
}

/// The relfilenode part of `<node>`, `<node>.<segment>`, `<node>_<fork>[.<segment>]`.
fn relnode_of(name: &str) -> &str {
    name.split(['.', '_']).next().unwrap_or(name)
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excluded(dir: &str, name: &str, source: Source, forks: &[&str]) -> bool {
        let forks = forks.iter().map(|s| s.to_string()).collect();
        let is_dir = !name.contains('.') && name.starts_with("pg_") && dir.is_empty();
        is_excluded(Path::new(dir), OsStr::new(name), is_dir, source, &forks)
    }

    #[test]
    fn pid_files_and_temp_files_are_out() {
        for (dir, name) in [
            ("", "postmaster.pid"),
            ("", "postmaster.opts"),
            ("base/5", "pg_internal.init"),
            ("global", "pg_internal.init.123"),
            ("base", "pgsql_tmp"),
            ("base/5", "t3_16384"),
            ("base/5", "t3_16384_fsm"),
            ("pg_replslot", "myslot"),
            ("pg_subtrans", "0000"),
        ] {
            assert!(excluded(dir, name, Source::Stopped, &[]), "{dir}/{name}");
        }
        for (dir, name) in [
            ("", "PG_VERSION"),
            ("base/5", "16384"),
            ("", "pg_subtrans"),
            ("", "pg_replslot"),
            ("base/5", "t3x_1"),
            ("pg_wal", "000000010000000000000001"),
        ] {
            assert!(!excluded(dir, name, Source::Stopped, &[]), "{dir}/{name}");
        }
    }

    #[test]
    fn online_clones_leave_wal_and_pg_control_to_their_own_steps() {
        assert!(
            excluded("global", "pg_control", Source::Stopped, &[]),
            "always copied last"
        );
        for (dir, name) in [
            ("pg_wal", "000000010000000000000001"),
            ("pg_wal/archive_status", "x.ready"),
        ] {
            assert!(excluded(dir, name, Source::Running, &[]), "{dir}/{name}");
            assert!(!excluded(dir, name, Source::Stopped, &[]), "{dir}/{name}");
        }
        assert!(!excluded("", "pg_wal", Source::Running, &[]));
        let forks = HashSet::new();
        assert!(!is_excluded(
            Path::new("pg_wal"),
            OsStr::new("archive_status"),
            true,
            Source::Running,
            &forks
        ));
    }

    #[test]
    fn unlogged_forks_are_out_of_online_clones_only_and_init_forks_always_in() {
        let forks = ["16390"];
        for name in ["16390", "16390.1", "16390_fsm", "16390_vm"] {
            assert!(excluded("base/5", name, Source::Running, &forks), "{name}");
            assert!(!excluded("base/5", name, Source::Stopped, &forks), "{name}");
        }
        assert!(!excluded("base/5", "16390_init", Source::Running, &forks));
        assert!(!excluded("base/5", "16390_init.1", Source::Running, &forks));
        assert!(!excluded("base/5", "163901", Source::Running, &forks));
        assert_eq!(
            init_forks(["1_init", "2", "x_init"].into_iter()),
            HashSet::from(["1".to_string()])
        );
    }
}
