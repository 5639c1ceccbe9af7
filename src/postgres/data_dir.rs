//! Facts about a data directory on disk, and the settings pgclone writes into new ones.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::postgres::binaries::PgBinaries;
use crate::postgres::options::Resolved;
use crate::postgres::run_as::{create_file_for, with_identity};
use crate::postgres::server;

/// Settings for disposable test clusters, written into `postgresql.conf` by `initdb` time.
/// Durability is pointless for a clone that is thrown away (docs/postgres-facts.md 17).
pub const TEST_SETTINGS: &[(&str, &str)] = &[
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("shared_buffers", "16MB"),
    ("dynamic_shared_memory_type", "posix"),
    ("listen_addresses", "''"),
];

/// Where pgclone keeps the superuser's password (for TCP clients) inside a cluster it made.
pub const PASSWORD_FILE: &str = "pgclone.password";

/// Creates a cluster in `data_dir` (an empty directory of the server's user, in a directory of
/// ours) with `initdb`, the superuser `password`, the test settings and then `settings`.
pub(crate) fn create(
    env: &Resolved,
    data_dir: &Path,
    log_path: &Path,
    password: &str,
    settings: &[(String, String)],
) -> Result<()> {
    let run_as = env.run_as.as_ref();
    // Beside the data directory, in our own directory: initdb reads it as the server's user.
    let pwfile = data_dir.with_extension("pwfile");
    create_file_for(run_as, &pwfile, password.as_bytes())?;
    let created = server::initdb(&env.binaries, data_dir, &pwfile, run_as, log_path);
    std::fs::remove_file(&pwfile).doing("remove", &pwfile)?;
    created?;
    // Inside the data directory, which belongs to the server's user: written as that user.
    with_identity(run_as, || {
        add_password_and_settings(data_dir, password, settings)
    })
}

/// Appends `settings` to the `postgresql.conf` of `data_dir` (a copy of a cluster made by
/// [`create`], which has the test settings already), as the server's user.
pub(crate) fn add_settings(
    env: &Resolved,
    data_dir: &Path,
    settings: &[(String, String)],
) -> Result<()> {
    if settings.is_empty() {
        return Ok(());
    }
    with_identity(env.run_as.as_ref(), || {
        append_settings(
            data_dir,
            settings.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )
    })
}

/// Writes the password file and appends the settings; call it with the file-system identity of
/// the data directory's owner.
fn add_password_and_settings(
    data_dir: &Path,
    password: &str,
    settings: &[(String, String)],
) -> Result<()> {
    create_file_for(None, &data_dir.join(PASSWORD_FILE), password.as_bytes())?;
    let extra = settings.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    append_settings(data_dir, TEST_SETTINGS.iter().copied().chain(extra))
}

/// Fails unless `data_dir` is a PostgreSQL data directory whose major matches `bins`.
pub fn check(data_dir: &Path, bins: &PgBinaries) -> Result<()> {
    let major = major_of(data_dir)?;
    if major != bins.version().major() {
        return Err(Error::new(
            ErrorKind::VersionMismatch,
            format!(
                "data directory {} is PostgreSQL {major} (its PG_VERSION), but the binaries in {} are PostgreSQL {}",
                data_dir.display(),
                bins.bin_dir().display(),
                bins.version()
            ),
        )
        .hint(format!(
            "use PostgreSQL {major} binaries: set PGCLONE_PG_VERSION={major} or PGCLONE_PG_BIN to their directory"
        )));
    }
    Ok(())
}

/// The major version recorded in a data directory's `PG_VERSION`.
pub fn major_of(data_dir: &Path) -> Result<u32> {
    let not_a_cluster = |why: String| {
        Error::new(
            ErrorKind::NotACluster,
            format!("{} is not a PostgreSQL data directory: {why}", data_dir.display()),
        )
        .hint("point at the directory that holds PG_VERSION and global/pg_control (the one initdb made)")
    };
    if !data_dir.is_dir() {
        return Err(not_a_cluster("no such directory".into()));
    }
    let text = std::fs::read_to_string(data_dir.join("PG_VERSION"))
        .map_err(|e| not_a_cluster("cannot read PG_VERSION".into()).with_source(e))?;
    if !data_dir.join("global/pg_control").is_file() {
        return Err(not_a_cluster("no global/pg_control".into()));
    }
    text.trim().parse().map_err(|_| {
        not_a_cluster(format!(
            "PG_VERSION holds {:?}, not a major version",
            text.trim()
        ))
    })
}

/// Appends settings to the cluster's `postgresql.conf` (later lines win over earlier ones).
/// Call it with the file-system identity of the data directory's owner (`with_identity`).
pub fn append_settings<'a>(
    data_dir: &Path,
    settings: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<()> {
    append_settings_to(
        &data_dir.join("postgresql.conf"),
        "added by pgclone",
        settings,
    )
}

/// Appends settings, under `# <comment>`, to the configuration file `path` (`postgresql.conf`,
/// `postgresql.auto.conf`), made (mode 0600) if missing; never through a symlink. Call it with
/// the file-system identity of the data directory's owner.
pub(crate) fn append_settings_to<'a>(
    path: &Path,
    comment: &str,
    settings: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<()> {
    let mut text = format!("\n# {comment}\n");
    for (name, value) in settings {
        text.push_str(&format!("{name} = {value}\n"));
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .doing("append settings to", path)
}

/// `value` as a quoted string of a PostgreSQL configuration file: in quotes, with `'` doubled and
/// `\` escaped (the file's reader takes `\` as an escape). Every parameter type accepts a quoted
/// value. A line break would still end the line: callers refuse those.
pub(crate) fn config_string(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// A random password of 32 hex characters.
pub fn new_password() -> Result<String> {
    let mut bytes = [0u8; 16];
    let path = Path::new("/dev/urandom");
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .doing("read", path)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// The server's user plants symlinks where root writes after `initdb`: neither the
    /// password nor the settings may reach the files they point at (before, root wrote the
    /// password through the link and gave the file to that user).
    #[test]
    fn writes_into_the_servers_data_directory_never_follow_its_symlinks() {
        let run_as = crate::server::run_as_user().unwrap();
        let base = tempfile::tempdir().unwrap();
        let victim = base.path().join("victim.conf");
        std::fs::write(&victim, "precious\n").unwrap();
        let data = base.path().join("data");
        std::fs::create_dir(&data).unwrap();
        if let Some(user) = &run_as {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            user.chown(&data).unwrap();
        }
        for planted in [PASSWORD_FILE, "postgresql.conf"] {
            let written = with_identity(run_as.as_ref(), || {
                for name in [PASSWORD_FILE, "postgresql.conf"] {
                    let _ = std::fs::remove_file(data.join(name));
                }
                std::os::unix::fs::symlink(&victim, data.join(planted)).unwrap();
                add_password_and_settings(&data, "secret", &[])
            });
            assert!(written.is_err(), "{planted}");
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert_eq!(
            std::fs::metadata(&victim).unwrap().uid(),
            rustix::process::geteuid().as_raw()
        );
    }
}
