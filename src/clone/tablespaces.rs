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
    /// `PG_<major>_`: the start of the one subdirectory of the location that is this cluster's
    /// (others, of other clusters or of an older major kept by pg_upgrade, are left out, as
    /// pg_basebackup leaves them out).
    pub version_dir_prefix: String,
    /// Whether the copy's directory existed (empty) before the clone: a failed clone empties
    /// it then, instead of removing it.
    pub target_existed: bool,
}

impl Tablespace {
    /// The source's link as [`links`] lists it.
    pub fn link(&self) -> (OsString, PathBuf) {
        (self.oid.clone(), self.source.clone())
    }
}

/// The source's tablespaces, each with the directory its copy goes to.
pub(crate) fn plan(
    source: &Path,
    target: &Path,
    mapping: &[(PathBuf, PathBuf)],
) -> Result<Vec<Tablespace>> {
    let version_dir_prefix = format!("PG_{}_", crate::postgres::data_dir::major_of(source)?);
    let mut found = Vec::new();
    for (old, new) in mapping {
        if !old.is_absolute() || !new.is_absolute() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "tablespace mapping {}={}: both paths must be absolute",
                    old.display(),
                    new.display()
                ),
            ));
        }
    }
    for (oid, location) in links(source)? {
        let copy = match mapping.iter().find(|(old, _)| *old == location) {
            Some((_, new)) => new.clone(),
            None => default_location(target).join(&oid),
        };
        // tablespace_map escapes these; a path without them is written as it is.
        if copy
            .to_str()
            .is_none_or(|text| text.contains(['\n', '\r', '\\']))
        {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("tablespace copy {copy:?} has a line break, a backslash or is not UTF-8"),
            )
            .hint("map the tablespace to a plain path with --tablespace-mapping OLD=NEW"));
        }
        found.push(Tablespace {
            oid,
            source: location,
            target: copy,
            version_dir_prefix: version_dir_prefix.clone(),
            target_existed: false, // the plan checks it
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
        if !location.is_absolute() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{} links to a relative path ({}); PostgreSQL makes absolute ones",
                    path.display(),
                    location.display()
                ),
            ));
        }
        links.push((entry.file_name(), location));
    }
    links.sort();
    Ok(links)
}

/// `tablespace_map` as `pg_backup_stop` returned it, each line `<oid> <path>` pointing at the
/// clone's copy instead. Recovery makes the clone's links from it. A tablespace the plan does
/// not know (created during the backup) is an error: its link would be the source's.
pub(crate) fn remap(map: &str, tablespaces: &[Tablespace]) -> Result<String> {
    let mut remapped = String::new();
    for line in map.lines().filter(|line| !line.is_empty()) {
        let oid = line.split(' ').next().unwrap_or_default();
        match tablespaces.iter().find(|t| t.oid == *oid) {
            Some(t) => remapped.push_str(&format!("{oid} {}\n", t.target.display())),
            None => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("tablespace {oid} appeared during the backup"),
                )
                .hint("clone again once no tablespace is being created or dropped"))
            }
        }
    }
    Ok(remapped)
}

/// Fails unless no copy lies inside (or holds) a source tablespace, another copy, the data
/// directory or the target: a copy inside a source's tablespace would write into the source.
pub(crate) fn check_apart(tablespaces: &[Tablespace], source: &Path, target: &Path) -> Result<()> {
    let nested = |a: &Path, b: &Path| a.starts_with(b) || b.starts_with(a);
    for (i, t) in tablespaces.iter().enumerate() {
        let others = tablespaces
            .iter()
            .flat_map(|o| [o.source.as_path()])
            .chain(
                tablespaces
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, o)| o.target.as_path()),
            )
            .chain([source, target]);
        for other in others {
            if nested(&t.target, other) {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    format!(
                        "tablespace copy {} and {} lie inside one another",
                        t.target.display(),
                        other.display()
                    ),
                )
                .hint("give each tablespace a directory of its own, apart from the source and the target"));
            }
        }
        if nested(&t.source, target) {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "the target {} and the source's tablespace {} lie inside one another",
                    target.display(),
                    t.source.display()
                ),
            ));
        }
    }
    Ok(())
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
            version_dir_prefix: "PG_15_".into(),
            target_existed: false,
        }];
        assert_eq!(
            remap("16384 /srv/ts\n", &tablespaces).unwrap(),
            "16384 /srv/clone-tablespaces/16384\n"
        );
        assert!(remap("16384 /srv/ts\n99 /other\n", &tablespaces).is_err());
        assert_eq!(
            default_location(Path::new("/srv/clone")),
            Path::new("/srv/clone-tablespaces")
        );
    }
}
