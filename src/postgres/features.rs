//! What differs between the PostgreSQL majors pgclone supports, answered in one place: the rest
//! of pgclone asks here instead of comparing version numbers itself (the tidy test keeps it so).
//! The facts behind each answer: `docs/postgres-facts.md`, 18.

/// The oldest major pgclone supports. The non-exclusive backup API exists since 9.6; 13 is the
/// oldest major whose differences this module knows.
pub const MIN_MAJOR: u32 = 13;

/// Whether pgclone works with PostgreSQL `major`.
pub fn is_supported(major: u32) -> bool {
    major >= MIN_MAJOR
}

/// What `initdb` of `major` is given on top of the arguments every version takes. From 14,
/// `--no-instructions` leaves out the advice on starting the server, which only fills the log.
pub fn initdb_args(major: u32) -> &'static [&'static str] {
    if major >= 14 {
        &["--no-instructions"]
    } else {
        &[]
    }
}

/// The query that starts a non-exclusive low-level backup, on the session that will stop it,
/// with an immediate checkpoint if `fast` (an I/O spike on a busy source) or a spread one (as
/// the source's `checkpoint_completion_target` paces it). Its label is fixed text: it ends up
/// in `backup_label`, where a path could only cause trouble. 15 renamed `pg_start_backup` to
/// `pg_backup_start` and dropped exclusive backups, and with them the third argument that 13
/// and 14 need (`false`).
pub fn backup_start_sql(major: u32, fast: bool) -> String {
    if major >= 15 {
        format!("select pg_backup_start('pgclone', {fast})")
    } else {
        format!("select pg_start_backup('pgclone', {fast}, false)")
    }
}

/// The query that stops the backup [`backup_start_sql`] started, on the same session: the stop
/// LSN, the `backup_label` contents and the tablespace map. It does not wait for the WAL to be
/// archived (a broken `archive_command` would hang the clone). Before 15 the function is
/// `pg_stop_backup`, whose first argument says the backup is not exclusive.
pub fn backup_stop_sql(major: u32) -> &'static str {
    if major >= 15 {
        "select lsn, labelfile, spcmapfile from pg_backup_stop(false)"
    } else {
        "select lsn, labelfile, spcmapfile from pg_stop_backup(false, false)"
    }
}

/// Whether the server has `stats_temp_directory` (statistics moved to shared memory in 15).
pub fn has_stats_temp_directory(major: u32) -> bool {
    major <= 14
}

/// Whether the `idle_session_timeout` setting exists (14+): a held backup session turns it off.
pub fn has_idle_session_timeout(major: u32) -> bool {
    major >= 14
}

/// Whether `CREATE DATABASE` takes a `STRATEGY` (15+). Before 15 it always copies the template's
/// files, which is what `STRATEGY FILE_COPY` asks for since.
pub fn has_create_database_strategy(major: u32) -> bool {
    major >= 15
}

/// Whether `file_copy_method = clone` exists (18+): `CREATE DATABASE ... STRATEGY FILE_COPY`
/// then copies with `copy_file_range`, which shares extents on XFS and btrfs.
pub fn has_file_copy_method_clone(major: u32) -> bool {
    major >= 18
}

/// `pg_parameter_acl` (`GRANT SET ON PARAMETER`): 15 and later.
pub fn has_parameter_acl(major: u32) -> bool {
    major >= 15
}

/// Where 17 and later keep WAL summaries (for incremental backups), relative to the data
/// directory. An online clone keeps the directory, empty.
pub const WAL_SUMMARIES_DIR: &str = "pg_wal/summaries";

/// Whether a data directory of `major` has [`WAL_SUMMARIES_DIR`] (17+).
pub fn has_wal_summaries(major: u32) -> bool {
    major >= 17
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backup_api_is_named_by_version() {
        for major in [13, 14] {
            assert!(
                backup_start_sql(major, true).contains("pg_start_backup('pgclone', true, false)")
            );
            assert!(backup_stop_sql(major).contains("pg_stop_backup(false, false)"));
        }
        for major in [15, 18] {
            assert!(backup_start_sql(major, false).contains("pg_backup_start('pgclone', false)"));
            assert!(backup_stop_sql(major).contains("pg_backup_stop(false)"));
        }
    }

    #[test]
    fn features_start_at_their_major() {
        assert!(!is_supported(12) && is_supported(13));
        assert!(initdb_args(13).is_empty() && initdb_args(14) == ["--no-instructions"]);
        assert!(!has_idle_session_timeout(13) && has_idle_session_timeout(14));
        assert!(!has_create_database_strategy(14) && has_create_database_strategy(15));
        assert!(!has_wal_summaries(16) && has_wal_summaries(17));
        assert!(!has_file_copy_method_clone(17) && has_file_copy_method_clone(18));
    }
}
