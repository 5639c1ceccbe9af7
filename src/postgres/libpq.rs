//! Where pgclone connects and with which credentials, by libpq's conventions, so that a source
//! that psql reaches is reached the same way: the user from `--user`, else `PGUSER`, else the OS
//! user; the password from the connection itself, else `PGPASSWORD`, else the password file
//! (`PGPASSFILE`, else `~/.pgpass`, read only when no other user can read it, as libpq does).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::postgres::url::{connection_url, Endpoint};

/// A password (or a URL holding one): never shown by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    /// A Unix socket directory (the socket is `<dir>/.s.PGSQL.<port>`).
    Socket(PathBuf),
    /// A host name or address, over TCP (for sources and servers given by URL).
    Tcp(String),
}

/// Everything needed to open a session.
#[derive(Debug, Clone)]
pub(crate) struct ConnectParams {
    pub host: Host,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    pub password: Option<Secret>,
    pub application_name: String,
    /// The OS identity (uid, gid) to connect to a Unix socket with, for peer authentication:
    /// root reaching a cluster as its owner would (`sudo -u postgres psql`).
    pub peer_identity: Option<(u32, u32)>,
}

impl ConnectParams {
    /// A server on a Unix socket directory, without a password (trust or peer).
    pub fn socket(dir: &Path, port: u16, user: &str, dbname: &str, application: &str) -> Self {
        ConnectParams {
            host: Host::Socket(dir.to_path_buf()),
            port,
            user: user.to_string(),
            dbname: dbname.to_string(),
            password: None,
            application_name: application.to_string(),
            peer_identity: None,
        }
    }

    /// The server listening on the socket file `socket` (`<dir>/.s.PGSQL.<port>`).
    pub fn socket_file(socket: &Path, user: &str, dbname: &str, application: &str) -> Self {
        let dir = socket.parent().unwrap_or(Path::new("/"));
        let port = socket
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_prefix(".s.PGSQL."))
            .and_then(|port| port.parse().ok())
            .unwrap_or(5432);
        ConnectParams::socket(dir, port, user, dbname, application)
    }

    /// With the password libpq would use when the connection has none: `PGPASSWORD`, else the
    /// password file's first matching line.
    pub fn with_libpq_password(mut self, config: &Config) -> Self {
        if self.password.is_none() {
            self.password = config.pg_password.clone().or_else(|| {
                let file = passfile(config)?;
                lookup_passfile(&file, &self.host, self.port, &self.dbname, &self.user)
            });
        }
        self
    }

    /// The server a libpq connection string names (a `postgresql://` URL or `key=value` pairs),
    /// such as `PGCLONE_URL`: its first host and port (default: the Unix socket in
    /// `/var/run/postgresql`, port 5432), the user (default as libpq: `PGUSER`, else the OS
    /// user), the database (default: the user's name) and the password (default: `PGPASSWORD`,
    /// else the password file). `what` names the variable in errors, which never show the text.
    pub fn parse(text: &Secret, what: &str, application: &str, config: &Config) -> Result<Self> {
        // `user:p@ss@host`: libpq's parsers split at the first `@`, so part of the password
        // would become the host, and show in every message that names the server.
        if let Some((_, rest)) = text.expose().split_once("://") {
            let authority = rest.split(['/', '?']).next().unwrap_or_default();
            if authority.matches('@').count() > 1 {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    format!("{what} has more than one `@` before its host"),
                )
                .hint(
                    "percent-encode an `@` in the password as %40 (and `:` as %3A, `/` as %2F)",
                ));
            }
        }
        let parsed: tokio_postgres::Config = text.expose().parse().map_err(|e| {
            Error::new(
                ErrorKind::InvalidConfig,
                format!("{what} is not a connection string pgclone can use"),
            )
            .with_source(e)
            .hint("write it as postgresql://user:password@host:port/database (percent-encode special characters in the password); pgclone takes host, port, user, password, dbname, application_name, connect_timeout and sslmode=disable|prefer, not TLS certificates or service files")
        })?;
        if parsed.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("{what} asks for sslmode=require, and pgclone connects without TLS"),
            )
            .hint("use sslmode=disable or prefer (a test server on a private network), or a server reachable without TLS"));
        }
        let host = match parsed.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(name)) => Host::Tcp(name.clone()),
            Some(tokio_postgres::config::Host::Unix(dir)) => Host::Socket(dir.clone()),
            None => Host::Socket(PathBuf::from("/var/run/postgresql")),
        };
        let user = match parsed.get_user() {
            Some(user) => user.to_string(),
            None => default_user(config),
        };
        let dbname = parsed.get_dbname().unwrap_or(&user).to_string();
        let password = parsed
            .get_password()
            .map(|bytes| Secret::new(String::from_utf8_lossy(bytes)));
        let params = ConnectParams {
            host,
            port: parsed.get_ports().first().copied().unwrap_or(5432),
            user,
            dbname,
            password,
            application_name: application.to_string(),
            peer_identity: None,
        };
        Ok(params.with_libpq_password(config))
    }

    /// The same server and credentials, database `dbname`.
    pub fn with_dbname(&self, dbname: &str) -> Self {
        ConnectParams {
            dbname: dbname.to_string(),
            ..self.clone()
        }
    }

    /// A libpq URL of it that any client accepts, with the password if it has one: for the
    /// test's own clients only, never for a message (use `Display` there).
    pub fn url(&self) -> String {
        let endpoint = match &self.host {
            Host::Socket(dir) => Endpoint::Socket(dir),
            Host::Tcp(name) => Endpoint::Host(name),
        };
        let password = self.password.as_ref().map(Secret::expose);
        connection_url(endpoint, self.port, &self.user, password, &self.dbname)
    }

    /// The host as libpq takes it: a socket directory or a host name.
    pub fn host_text(&self) -> String {
        match &self.host {
            Host::Socket(dir) => dir.to_string_lossy().into_owned(),
            Host::Tcp(name) => name.clone(),
        }
    }

    pub fn tokio_config(&self, connect_timeout: Duration) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        match &self.host {
            Host::Socket(dir) => config.host_path(dir),
            Host::Tcp(host) => config.host(host),
        };
        config
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name(&self.application_name)
            .connect_timeout(connect_timeout);
        if let Some(password) = &self.password {
            config.password(password.expose());
        }
        config
    }
}

/// `user@host:port/dbname`, for messages (never the password).
impl fmt::Display for ConnectParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            Host::Socket(dir) => dir.display().to_string(),
            Host::Tcp(host) => host.clone(),
        };
        write!(f, "{}@{host}:{}/{}", self.user, self.port, self.dbname)
    }
}

/// The database user libpq would pick: `PGUSER`, else the OS user (`postgres` for root, whose
/// role rarely exists).
pub(crate) fn default_user(config: &Config) -> String {
    if let Some(user) = &config.pg_user {
        return user.clone();
    }
    if rustix::process::geteuid().is_root() {
        return crate::postgres::server::SUPERUSER.to_string();
    }
    let uid = rustix::process::getuid().as_raw();
    match crate::sys::user_by_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => crate::postgres::server::SUPERUSER.to_string(),
    }
}

/// `PGPASSFILE`, else `~/.pgpass`.
fn passfile(config: &Config) -> Option<PathBuf> {
    config
        .pg_passfile
        .clone()
        .or_else(|| config.home.as_ref().map(|home| home.join(".pgpass")))
}

/// The password of the first line of `file` that matches, if the file is private (libpq
/// ignores a password file that its group or others can read, and so does pgclone).
fn lookup_passfile(
    file: &Path,
    host: &Host,
    port: u16,
    dbname: &str,
    user: &str,
) -> Option<Secret> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(file).ok()?;
    if !meta.is_file() || meta.permissions().mode() & 0o077 != 0 {
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let hosts: Vec<String> = match host {
        // A socket in a default directory also matches `localhost`, as in libpq.
        Host::Socket(dir) => {
            let dir = dir.display().to_string();
            let default =
                ["/var/run/postgresql", "/run/postgresql", "/tmp"].contains(&dir.as_str());
            let mut names = vec![dir];
            if default {
                names.push("localhost".into());
            }
            names
        }
        Host::Tcp(name) => vec![name.clone()],
    };
    let port = port.to_string();
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(passfile_fields)
        .find(|fields| {
            let matches = |field: &str, value: &str| field == "*" || field == value;
            hosts.iter().any(|h| matches(&fields[0], h))
                && matches(&fields[1], &port)
                && matches(&fields[2], dbname)
                && matches(&fields[3], user)
        })
        .map(|mut fields| Secret::new(fields.remove(4)))
}

/// The five fields of a password file line (`\:` and `\\` escaped), or `None` if it has fewer.
fn passfile_fields(line: &str) -> Option<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.push(chars.next().unwrap_or('\\')),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    (fields.len() == 5).then_some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_file_lines_match_as_in_libpq() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\n\
             db.example:5432:app:alice:first\n\
             *:5432:*:bob:se\\:cret\\\\x\n\
             localhost:5433:*:carol:local\n\
             short:line\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let tcp = |name: &str| Host::Tcp(name.into());
        let found = |host: &Host, port, db, user| {
            lookup_passfile(&file, host, port, db, user).map(|s| s.expose().to_string())
        };
        assert_eq!(
            found(&tcp("db.example"), 5432, "app", "alice").as_deref(),
            Some("first")
        );
        assert_eq!(found(&tcp("db.example"), 5432, "other", "alice"), None);
        assert_eq!(
            found(&tcp("anything"), 5432, "x", "bob").as_deref(),
            Some("se:cret\\x")
        );
        let default_socket = Host::Socket("/var/run/postgresql".into());
        assert_eq!(
            found(&default_socket, 5433, "x", "carol").as_deref(),
            Some("local")
        );
        assert_eq!(
            found(&Host::Socket("/tmp/private".into()), 5433, "x", "carol"),
            None
        );

        // Readable by others: ignored, as libpq ignores it.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(found(&tcp("db.example"), 5432, "app", "alice"), None);
    }

    #[test]
    fn secrets_are_not_shown() {
        let mut params = ConnectParams::socket(Path::new("/tmp/s"), 5432, "u", "d", "a");
        params.password = Some(Secret::new("hunter2"));
        assert!(!format!("{params:?} {params}").contains("hunter2"));
        assert_eq!(
            ConnectParams::socket_file(Path::new("/tmp/s/.s.PGSQL.6543"), "u", "d", "a").port,
            6543
        );
    }
}
