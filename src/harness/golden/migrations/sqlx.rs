//! sqlx migrations ([`Golden::sqlx_migrations`](crate::Golden::sqlx_migrations)), as sqlx's
//! `Migrator` reads and records them.
//!
//! The directory's files (not its subdirectories) named `<version>_<description>.sql` or
//! `<version>_<description>.up.sql`: the version is what comes before the first `_`, an `i64`;
//! the description the rest without the suffix, `_` read as a space. A name without `_` or not
//! ending in `.sql` is not a migration; `.down.sql` files are reverts, never run. Applied in
//! numeric order of versions, each in a transaction unless the file starts with
//! `-- no-transaction`. The runner's table, `_sqlx_migrations`, gets a row per migration in its
//! transaction: the version, the description, success, the SHA-384 of the file's bytes (the
//! checksum the runner compares) and an execution time of -1, set once the transaction is over.

use sha2::{Digest, Sha384};

use super::{hex, literal, Migration, Source};
use crate::error::Result;

/// The runner's table, as sqlx creates it on PostgreSQL.
const TABLE: &str = "create table if not exists _sqlx_migrations (
    version bigint primary key,
    description text not null,
    installed_on timestamptz not null default now(),
    success boolean not null,
    checksum bytea not null,
    execution_time bigint not null
)";

/// How a file is named.
const NAMING: &str = "sqlx migrations are named <version>_<description>.sql (or .up.sql), \
                      with an integer version such as 20240131120000";

pub(super) fn read(source: &Source) -> Result<Vec<Migration>> {
    let mut found = Vec::new();
    for path in source.entries(source.dir)? {
        if !path.is_file() {
            continue;
        }
        let file_name = path.file_name().unwrap_or_default().to_string_lossy();
        let Some((version, rest)) = file_name.split_once('_') else {
            continue;
        };
        if !rest.ends_with(".sql") {
            continue;
        }
        let version: i64 = version.parse().map_err(|_| {
            source
                .error(format!(
                    "sqlx migration {}: {version:?} is not an integer version",
                    source.display(&path)
                ))
                .hint(format!(
                    "{NAMING}: rename the file (sqlx's runner refuses it too)"
                ))
        })?;
        let suffix = if rest.ends_with(".up.sql") {
            ".up.sql"
        } else if rest.ends_with(".down.sql") {
            continue; // a revert
        } else {
            ".sql"
        };
        let mut description = rest;
        while let Some(shorter) = description.strip_suffix(suffix) {
            description = shorter;
        }
        let description = description.replace('_', " ");
        found.push((version, description, path));
    }
    found.sort_by_key(|(version, _, _)| *version);
    let versions: Vec<_> = found.iter().map(|(v, _, p)| (*v, p.as_path())).collect();
    source.refuse_repeated_versions("sqlx", NAMING, &versions, |v| v.to_string())?;

    let mut steps = vec![Migration::alone(
        String::new(),
        "sqlx's table _sqlx_migrations".to_string(),
        TABLE.to_string(),
    )];
    for (version, description, path) in found {
        let sql = source.read(&path)?;
        let checksum = hex(&Sha384::digest(sql.as_bytes()));
        steps.push(Migration {
            name: source.name(&path),
            origin: format!("sqlx migration {}", source.display(&path)),
            transaction: !sql.starts_with("-- no-transaction"),
            record: format!(
                "insert into _sqlx_migrations (version, description, success, checksum, execution_time) \
                 values ({version}, {}, true, decode('{checksum}', 'hex'), -1)",
                literal(&description)
            ),
            // The time since the row's transaction began (`installed_on`), in nanoseconds.
            after: format!(
                "update _sqlx_migrations \
                 set execution_time = (extract(epoch from clock_timestamp() - installed_on) * 1000000000)::bigint \
                 where version = {version}"
            ),
            sql,
        });
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        std::fs::create_dir(dir.path().join("9_a_directory.sql")).unwrap();
        dir
    }

    fn read_dir(dir: &tempfile::TempDir) -> Result<Vec<Migration>> {
        read(&Source {
            golden: "app",
            dir: dir.path(),
            base: dir.path(),
        })
    }

    #[test]
    fn versions_in_numeric_order_descriptions_checksums_and_transactions() {
        let dir = dir(&[
            ("10_ten.sql", "abc"),
            ("2_two_words.up.sql", "-- no-transaction\nselect 2"),
            ("2_two_words.down.sql", "select 'down'"),
            ("README.md", ""),
            ("notes.sql", ""),
            ("1_one.sql.sql", " -- no-transaction"),
        ]);
        let steps = read_dir(&dir).unwrap();
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["", "1_one.sql.sql", "2_two_words.up.sql", "10_ten.sql"]
        );
        assert_eq!(steps[0].sql, TABLE);
        assert!(steps[1].transaction && !steps[2].transaction && steps[3].transaction);
        assert!(
            steps[1]
                .record
                .contains("values (1, E'one', true, decode('"),
            "{}",
            steps[1].record
        );
        assert!(
            steps[2].record.contains("(2, E'two words', true"),
            "{}",
            steps[2].record
        );
        // SHA-384("abc"), FIPS 180-2's example.
        assert!(steps[3].record.contains(
            "decode('cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7', 'hex')"
        ), "{}", steps[3].record);
    }

    #[test]
    fn a_version_that_is_not_an_integer_is_an_error_naming_the_file() {
        let dir = dir(&[("1_a.sql", ""), ("v2_b.sql", "")]);
        let err = read_dir(&dir).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Golden);
        let text = err.to_string();
        assert!(
            text.contains("sqlx migration v2_b.sql: \"v2\" is not an integer version"),
            "{text}"
        );
        assert!(text.contains("rename the file"), "{text}");
    }

    #[test]
    fn two_migrations_of_one_version_are_an_error_naming_both() {
        let dir = dir(&[("1_a.sql", ""), ("01_b.up.sql", ""), ("01_b.down.sql", "")]);
        let text = read_dir(&dir).unwrap_err().to_string();
        assert!(
            text.contains("01_b.up.sql and 1_a.sql have the same version, 1"),
            "{text}"
        );
    }
}
