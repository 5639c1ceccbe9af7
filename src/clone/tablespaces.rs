//! Tablespaces: each one the source has (a link `pg_tblspc/<oid>` to a directory elsewhere) is
//! copied to a directory of the clone's own, `<target>-tablespaces/<oid>` unless a mapping
//! (`OLD=NEW`, as pg_basebackup's `--tablespace-mapping`) names another, and the clone's link
//! points there. A clone never links to, and so never writes into, the source's tablespaces.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, IoContext, Result};

/// One tablespace of the source and where the clone's copy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tablespace {
    /// Its oid: the link's name in `pg_tblspc`.
    pub oid: OsString,
    /// The source's directory (where the link points).
    pub source: PathBuf,
    /// The clone's directory.
    pub target: PathBuf,
}

/// The source's tablespaces, each with the directory its copy goes to.
pub(crate) fn plan(
    source: &Path,
    target: &Path,
    mapping: &[(PathBuf, PathBuf)],
) -> Result<Vec<Tablespace>> {
    let mut found = Vec::new();
    for (oid, location) in links(source)? {
        let copy = match mapping.iter().find(|(old, _)| *old == location) {
            Some((_, new)) => new.clone(),
            None => default_location(target).join(&oid),
        };
        if copy.to_string_lossy().contains(['\n', '\r']) {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("tablespace directory {copy:?} has a line break"),
            ));
        }
        found.push(Tablespace {
            oid,
            source: location,
            target: copy,
        });
    }
    for (old, _) in mapping {
        if !found.iter().any(|t| t.source == *old) {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "--tablespace-mapping names {}, which is none of the source's tablespaces",
                    old.display()
                ),
            )
            .hint("give the tablespace's location as the source knows it (SELECT pg_tablespace_location(oid) FROM pg_tablespace)"));
        }
    }
    Ok(found)
}

/// `<target>-tablespaces`: where the copies go unless mapped.
pub(crate) fn default_location(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push("-tablespaces");
    PathBuf::from(name)
}

/// The links of `<source>/pg_tblspc`: (oid, the directory it points to), sorted.
pub(crate) fn links(source: &Path) -> Result<Vec<(OsString, PathBuf)>> {
    let dir = source.join("pg_tblspc");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut links = Vec::new();
    for entry in entries {
        let entry = entry.doing("list", &dir)?;
        let path = entry.path();
        // A directory here (in-place tablespaces, for PostgreSQL's own tests) is copied with
        // the data directory.
        if !entry.file_type().doing("stat", &path)?.is_symlink() {
            continue;
        }
        let location = std::fs::read_link(&path).doing("read the link", &path)?;
        links.push((entry.file_name(), location));
    }
    links.sort();
    Ok(links)
}

/// `tablespace_map` as `pg_backup_stop` returned it, each line `<oid> <path>` pointing at the
/// clone's copy instead. Recovery makes the clone's links from it.
pub(crate) fn remap(map: &str, tablespaces: &[Tablespace]) -> String {
    let mut remapped = String::new();
    for line in map.lines() {
        let oid = line.split(' ').next().unwrap_or_default();
        match tablespaces.iter().find(|t| t.oid == *oid) {
            Some(t) => remapped.push_str(&format!("{oid} {}\n", t.target.display())),
            None => {
                remapped.push_str(line);
                remapped.push('\n');
            }
        }
    }
    remapped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_points_at_the_copies() {
        let tablespaces = [Tablespace {
            oid: "16384".into(),
            source: "/srv/ts".into(),
            target: "/srv/clone-tablespaces/16384".into(),
        }];
        assert_eq!(
            remap("16384 /srv/ts\n99 /other\n", &tablespaces),
            "16384 /srv/clone-tablespaces/16384\n99 /other\n"
        );
        assert_eq!(
            default_location(Path::new("/srv/clone")),
            Path::new("/srv/clone-tablespaces")
        );
    }
}
