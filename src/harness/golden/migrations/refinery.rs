//! refinery migrations ([`Golden::refinery_migrations`](crate::Golden::refinery_migrations)),
//! as refinery's runner reads and records them.
//!
//! Files named `V<version>__<name>.sql` (or `U<version>__<name>.sql`, unversioned: allowed out
//! of order) anywhere under the directory, subdirectories included; the version an `i32`, the
//! name letters, digits and `_`. Other files are not migrations. Applied in order of versions,
//! each in a transaction (as refinery's async runner does). The runner's table,
//! `refinery_schema_history`, gets a row per migration in its transaction: the version, the
//! name, when (RFC 3339, UTC) and the checksum the runner compares: SipHash-1-3 with zero keys
//! over the name's bytes, `0xFF`, the version as 4 little-endian bytes, the file's bytes and
//! `0xFF`, written as a decimal `u64`.

use std::hash::Hasher;
use std::path::{Path, PathBuf};

use siphasher::sip::SipHasher13;

use super::{literal, Migration, Source};
use crate::error::Result;

/// The runner's table, as refinery creates it.
const TABLE: &str = "create table if not exists refinery_schema_history (
    version int4 primary key,
    name varchar(255),
    applied_on varchar(255),
    checksum varchar(255)
)";

/// The transaction's start as refinery writes times: RFC 3339 in UTC.
const APPLIED_ON: &str = r#"to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#;

const NAMING: &str = "refinery migrations are named V<version>__<name>.sql (or U<version>__<name>.sql), \
                      with an integer version and a name of letters, digits and _, such as V1__create_users.sql";

pub(super) fn read(source: &Source) -> Result<Vec<Migration>> {
    let mut files = Vec::new();
    walk(source, source.dir, &mut files)?;
    let mut found = Vec::new();
    for path in files {
        let file_name = path.file_name().unwrap_or_default().to_string_lossy();
        let Some((version, name, extension)) = parse_name(&file_name) else {
            continue;
        };
        if extension == "rs" {
            return Err(source
                .error(format!(
                    "refinery migration {} is written in Rust",
                    source.display(&path)
                ))
                .hint("pgclone runs SQL migrations only: write it in SQL, or build that part of the golden with Golden::setup"));
        }
        let version: i32 = version.parse().map_err(|_| {
            source
                .error(format!(
                    "refinery migration {}: {version:?} is not an integer version",
                    source.display(&path)
                ))
                .hint(format!(
                    "{NAMING}: rename the file (refinery's runner refuses it too)"
                ))
        })?;
        found.push((version, name.to_string(), path));
    }
    found.sort_by_key(|(version, _, _)| *version);
    let versions: Vec<_> = found.iter().map(|(v, _, p)| (*v, p.as_path())).collect();
    source.refuse_repeated_versions("refinery", NAMING, &versions, |v| v.to_string())?;

    let mut steps = vec![Migration::alone(
        String::new(),
        "refinery's table refinery_schema_history".to_string(),
        TABLE.to_string(),
    )];
    for (version, name, path) in found {
        let sql = source.read(&path)?;
        steps.push(Migration {
            name: source.name(&path),
            origin: format!("refinery migration {}", source.display(&path)),
            transaction: true,
            record: format!(
                "insert into refinery_schema_history (version, name, applied_on, checksum) \
                 values ({version}, {}, {APPLIED_ON}, '{}')",
                literal(&name),
                checksum(&name, version, &sql)
            ),
            after: String::new(),
            sql,
        });
    }
    Ok(steps)
}

/// Every file under `dir`, subdirectories included (not those behind a symbolic link).
fn walk(source: &Source, dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for path in source.entries(dir)? {
        let real_dir = path.symlink_metadata().is_ok_and(|m| m.is_dir());
        if real_dir {
            walk(source, &path, files)?;
        } else if !path.is_dir() {
            files.push(path);
        }
    }
    Ok(())
}

/// `V<digits>[.<digits>]__<word characters>.sql` (or `.rs`, or `U` for `V`): the version as
/// written, the name and the extension.
fn parse_name(file_name: &str) -> Option<(&str, &str, &str)> {
    let (stem, extension) = file_name.rsplit_once('.')?;
    let rest = stem.strip_prefix('V').or_else(|| stem.strip_prefix('U'))?;
    let (version, name) = rest.split_once("__")?;
    let (whole, fraction) = version.split_once('.').unwrap_or((version, "1"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let word = !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_');
    (matches!(extension, "sql" | "rs") && digits(whole) && digits(fraction) && word)
        .then_some((version, name, extension))
}

/// The checksum refinery compares, as it writes it.
fn checksum(name: &str, version: i32, sql: &str) -> String {
    let mut hasher = SipHasher13::new();
    hasher.write(name.as_bytes());
    hasher.write_u8(0xff);
    hasher.write(&version.to_le_bytes());
    hasher.write(sql.as_bytes());
    hasher.write_u8(0xff);
    hasher.finish().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn names() {
        assert_eq!(parse_name("V1__init.sql"), Some(("1", "init", "sql")));
        assert_eq!(
            parse_name("U20__add_users.sql"),
            Some(("20", "add_users", "sql"))
        );
        assert_eq!(parse_name("V1___x.sql"), Some(("1", "_x", "sql")));
        assert_eq!(parse_name("V1.2__x.sql"), Some(("1.2", "x", "sql")));
        assert_eq!(parse_name("V3__x.rs"), Some(("3", "x", "rs")));
        for other in [
            "V1_x.sql",
            "v1__x.sql",
            "V__x.sql",
            "V1__.sql",
            "V1__a-b.sql",
            "V1__a.b.sql",
            "V1__x.txt",
            "Vx__y.sql",
            "V1.__x.sql",
            "README",
        ] {
            assert_eq!(parse_name(other), None, "{other}");
        }
    }

    /// refinery hashes `name`, `version` and `sql` with std's `Hash` impls: the bytes above.
    #[test]
    fn checksum_is_siphash13_of_std_hash_of_name_version_sql() {
        use std::hash::Hash;
        let mut hasher = SipHasher13::new_with_keys(0, 0);
        "init".hash(&mut hasher);
        7i32.hash(&mut hasher);
        "create table t();".hash(&mut hasher);
        assert_eq!(
            checksum("init", 7, "create table t();"),
            hasher.finish().to_string()
        );
        assert_ne!(
            checksum("init", 8, "create table t();"),
            checksum("init", 7, "create table t();")
        );
    }

    /// The values of an independent SipHash (checked on the reference vector of SipHash-2-4,
    /// key 00..0f, message 00..0e: a129ca6149be45e5), with one compression and three
    /// finalization rounds.
    #[test]
    fn siphash13_agrees_with_an_independent_implementation() {
        let mut hasher = SipHasher13::new_with_keys(0x0706050403020100, 0x0f0e0d0c0b0a0908);
        hasher.write(&(0u8..15).collect::<Vec<u8>>());
        assert_eq!(hasher.finish(), 0xd320d86d2a519956);
        assert_eq!(
            checksum("init", 7, "create table t();"),
            "5538270362264632634"
        );
    }

    #[test]
    fn recursive_in_order_of_versions_and_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        std::fs::write(root.join("V10__ten.sql"), "select 10").unwrap();
        std::fs::write(root.join("b/c/U2__two.sql"), "select 2").unwrap();
        std::fs::write(root.join("b/V1__one.sql"), "select 1").unwrap();
        std::fs::write(root.join("notes.txt"), "").unwrap();
        let source = Source {
            golden: "app",
            dir: root,
            base: root,
        };
        let steps = read(&source).unwrap();
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["", "b/V1__one.sql", "b/c/U2__two.sql", "V10__ten.sql"]
        );
        assert!(
            steps[1].record.contains("values (1, E'one', to_char("),
            "{}",
            steps[1].record
        );

        std::fs::write(root.join("b/V2__again.sql"), "select 2").unwrap();
        let err = read(&source).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Golden);
        assert!(
            err.to_string()
                .contains("V2__again.sql and b/c/U2__two.sql have the same version, 2"),
            "{err}"
        );
        std::fs::remove_file(root.join("b/V2__again.sql")).unwrap();
        std::fs::write(root.join("V1.5__x.sql"), "").unwrap();
        let err = read(&source).unwrap_err().to_string();
        assert!(
            err.contains("V1.5__x.sql: \"1.5\" is not an integer version"),
            "{err}"
        );
    }
}
