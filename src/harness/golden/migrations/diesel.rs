//! diesel migrations ([`Golden::diesel_migrations`](crate::Golden::diesel_migrations)), as
//! diesel's migration harness reads and records them.
//!
//! Each subdirectory `<version>_<name>` holding `up.sql` is a migration (`down.sql` is its
//! revert, never run; files and names starting with `.` are skipped). The version is what comes
//! before the first `_`, with `-` removed (`2024-01-31-120000_users` is `20240131120000`);
//! migrations are applied in the order of those strings, each in a transaction unless its
//! `metadata.toml` says `run_in_transaction = false`. The runner's table,
//! `__diesel_schema_migrations`, gets a row per version in its migration's transaction: only
//! versions are compared.

use std::path::Path;

use super::{literal, Migration, Source};
use crate::error::Result;

/// The runner's table, as diesel creates it on PostgreSQL.
const TABLE: &str = "create table if not exists __diesel_schema_migrations (
    version varchar(50) primary key not null,
    run_on timestamp not null default current_timestamp
)";

const NAMING: &str = "a diesel migration is a directory <version>_<name> holding up.sql \
                      (and down.sql, metadata.toml), such as 2024-01-31-120000_create_users";

pub(super) fn read(source: &Source) -> Result<Vec<Migration>> {
    let mut found = Vec::new();
    for path in source.entries(source.dir)? {
        let dir_name = path.file_name().unwrap_or_default().to_string_lossy();
        if dir_name.starts_with('.') || !path.is_dir() {
            continue;
        }
        if !path.join("up.sql").is_file() {
            return Err(source
                .error(format!(
                    "diesel migration directory {} has no up.sql",
                    source.display(&path)
                ))
                .hint(format!(
                    "{NAMING}; diesel's runner refuses it too: add up.sql or move the directory"
                )));
        }
        let version = dir_name
            .split('_')
            .next()
            .unwrap_or_default()
            .replace('-', "");
        if version.len() > 50 {
            return Err(source
                .error(format!(
                    "diesel migration {}: its version {version:?} is longer than 50 characters",
                    source.display(&path)
                ))
                .hint(format!(
                    "{NAMING}; diesel's table holds versions of up to 50 characters"
                )));
        }
        found.push((version, path));
    }
    found.sort();
    let versions: Vec<_> = found.iter().map(|(v, p)| (v, p.as_path())).collect();
    source.refuse_repeated_versions("diesel", NAMING, &versions, |v| format!("{v:?}"))?;

    let mut steps = vec![Migration::alone(
        String::new(),
        "diesel's table __diesel_schema_migrations".to_string(),
        TABLE.to_string(),
    )];
    for (version, path) in found {
        let up = path.join("up.sql");
        let sql = source.read(&up)?;
        if sql.is_empty() {
            return Err(source
                .error(format!("diesel migration {} is empty", source.display(&up)))
                .hint("diesel's runner refuses an empty up.sql too: write the migration, or a comment"));
        }
        steps.push(Migration {
            name: source.name(&up),
            origin: format!("diesel migration {}", source.display(&up)),
            transaction: run_in_transaction(source, &path.join("metadata.toml"))?,
            record: format!(
                "insert into __diesel_schema_migrations (version) values ({})",
                literal(&version)
            ),
            after: String::new(),
            sql,
        });
    }
    Ok(steps)
}

/// `run_in_transaction` from a migration's `metadata.toml`, as diesel reads it: true when there
/// is no such file, false when the file does not set it. Only this top-level key is read.
fn run_in_transaction(source: &Source, file: &Path) -> Result<bool> {
    if !file.exists() {
        return Ok(true);
    }
    let text = source.read(file)?;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.starts_with('[') {
            break; // a table begins: the rest is not top-level
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim().trim_matches(['"', '\'']) != "run_in_transaction" {
            continue;
        }
        return match value.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(source
                .error(format!(
                    "{}: run_in_transaction = {other} is neither true nor false",
                    source.display(file)
                ))
                .hint("write run_in_transaction = true or run_in_transaction = false")),
        };
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn migration(root: &Path, dir: &str, up: &str, metadata: Option<&str>) {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        std::fs::write(root.join(dir).join("up.sql"), up).unwrap();
        std::fs::write(root.join(dir).join("down.sql"), "select 'down'").unwrap();
        if let Some(metadata) = metadata {
            std::fs::write(root.join(dir).join("metadata.toml"), metadata).unwrap();
        }
    }

    fn read_dir(dir: &Path) -> Result<Vec<Migration>> {
        read(&Source {
            golden: "app",
            dir,
            base: dir,
        })
    }

    #[test]
    fn versions_order_transactions_and_records() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        migration(
            root,
            "2024-01-31-120000_b",
            "select 2",
            Some("run_in_transaction = false # no\n"),
        );
        migration(root, "2024-01-01-000000_a", "select 1", None);
        migration(root, "2025_c", "select 3", Some("# nothing\n"));
        migration(
            root,
            "2026_d",
            "select 4",
            Some("run_in_transaction=true\n[x]\nrun_in_transaction = false\n"),
        );
        std::fs::create_dir(root.join(".hidden")).unwrap();
        std::fs::write(root.join("README.md"), "").unwrap();
        let steps = read_dir(root).unwrap();
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "",
                "2024-01-01-000000_a/up.sql",
                "2024-01-31-120000_b/up.sql",
                "2025_c/up.sql",
                "2026_d/up.sql"
            ]
        );
        let transactions: Vec<bool> = steps[1..].iter().map(|s| s.transaction).collect();
        assert_eq!(transactions, [true, false, false, true]);
        assert_eq!(
            steps[1].record,
            "insert into __diesel_schema_migrations (version) values (E'20240101000000')"
        );
    }

    #[test]
    fn bad_directories_are_errors_naming_them() {
        for (make, expected) in [
            (
                &(|root: &Path| std::fs::create_dir(root.join("1_x")).unwrap()) as &dyn Fn(&Path),
                "1_x has no up.sql",
            ),
            (
                &|root: &Path| migration(root, "1_x", "", None),
                "1_x/up.sql is empty",
            ),
            (
                &|root: &Path| migration(root, "1_x", "select", Some("run_in_transaction = no")),
                "neither true nor false",
            ),
            (
                &|root: &Path| {
                    migration(root, "1-0_x", "select", None);
                    migration(root, "10_y", "select", None);
                },
                "1-0_x and 10_y have the same version, \"10\"",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            make(dir.path());
            let err = read_dir(dir.path()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Golden);
            assert!(err.to_string().contains(expected), "{err}");
        }
    }
}
