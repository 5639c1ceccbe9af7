//! A source whose configuration lives outside its data directory, as Debian and Ubuntu lay
//! clusters out (`/etc/postgresql/<major>/<name>/postgresql.conf`, `pg_hba.conf`, `conf.d/`,
//! with `data_directory` pointing at `/var/lib/postgresql/<major>/<name>`). The clone gets
//! copies of those files in its own data directory, and settings that point at them and at
//! itself, so that it starts from its own directory and never reads or writes the source's.

use std::path::{Path, PathBuf};

use super::write_file;
use crate::error::{IoContext, Result};
use crate::postgres::data_dir::{append_settings_to, config_string};
use crate::postgres::session::Session;

/// Where the running source reads its configuration from.
#[derive(Debug, Clone)]
pub(crate) struct SourceConfig {
    pub config_file: PathBuf,
    pub hba_file: PathBuf,
    pub ident_file: PathBuf,
    pub data_directory: PathBuf,
}

impl SourceConfig {
    /// Asks the source.
    pub fn read(session: &mut Session) -> Result<SourceConfig> {
        let row = session.query_row(
            "select current_setting('config_file'), current_setting('hba_file'),
                    current_setting('ident_file'), current_setting('data_directory')",
        )?;
        let path = |i: usize| PathBuf::from(row[i].clone().unwrap_or_default());
        Ok(SourceConfig {
            config_file: path(0),
            hba_file: path(1),
            ident_file: path(2),
            data_directory: path(3),
        })
    }

    /// Whether a file the server reads lives outside its data directory (copied with it
    /// otherwise).
    pub fn is_external(&self) -> bool {
        [&self.config_file, &self.hba_file, &self.ident_file]
            .iter()
            .any(|file| !file.starts_with(&self.data_directory))
    }
}

/// Gives the clone in `target` its own copies of the source's external configuration: the
/// configuration file (with the `conf.d` directory beside it, which Debian includes), the
/// client authentication and ident files; then appends settings pointing at them and at the
/// clone itself. Runs with the server user's file-system identity (the copy's).
pub(crate) fn copy_external(source: &SourceConfig, target: &Path, major: u32) -> Result<()> {
    let conf = target.join("postgresql.conf");
    if !source.config_file.starts_with(&source.data_directory) {
        let text = std::fs::read(&source.config_file).doing("read", &source.config_file)?;
        write_file(&conf, &text)?;
        if let Some(dir) = source.config_file.parent() {
            copy_dir(&dir.join("conf.d"), &target.join("conf.d"))?;
        }
    }
    let mut settings = vec![("data_directory", quoted(target))];
    // Written to postgresql.auto.conf, which is read last: an ALTER SYSTEM there would win.
    let mut late = Vec::new();
    for (name, file, copy) in [
        ("hba_file", &source.hba_file, "pg_hba.conf"),
        ("ident_file", &source.ident_file, "pg_ident.conf"),
    ] {
        if !file.starts_with(&source.data_directory) {
            let text = std::fs::read(file).doing("read", file)?;
            write_file(&target.join(copy), &text)?;
            settings.push((name, quoted(&target.join(copy))));
        }
    }
    // The source's certificate and key stay where they are (Debian's are readable through a
    // group the server's user has only when started by the system); a clone is reached on its
    // private socket. Copy them and set ssl = on to rehearse TLS.
    late.push(("ssl", "off".to_string()));
    if crate::postgres::features::has_stats_temp_directory(major) {
        // Debian points it at /var/run/postgresql/<major>-<name>.pg_stat_tmp, the source's.
        late.push(("stats_temp_directory", "'pg_stat_tmp'".to_string()));
    }
    const COMMENT: &str = "pgclone: this clone's own files and settings, not its source's";
    append_settings_to(
        &conf,
        COMMENT,
        settings.iter().map(|(n, v)| (*n, v.as_str())),
    )?;
    let auto = target.join("postgresql.auto.conf");
    append_settings_to(&auto, COMMENT, late.iter().map(|(n, v)| (*n, v.as_str())))
}

/// Copies the regular files of `from` (and its subdirectories) into `to`, if `from` exists.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(from) else {
        return Ok(());
    };
    std::fs::create_dir_all(to).doing("create", to)?;
    for entry in entries.flatten() {
        let (path, kind) = (
            entry.path(),
            entry.file_type().doing("read", &entry.path())?,
        );
        if kind.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()))?;
        } else if kind.is_file() {
            let text = std::fs::read(&path).doing("read", &path)?;
            write_file(&to.join(entry.file_name()), &text)?;
        }
    }
    Ok(())
}

/// A path as a quoted configuration-file string.
fn quoted(path: &Path) -> String {
    config_string(&path.to_string_lossy())
}
