//! The one error type of pgclone.
//!
//! Every message says what pgclone was doing, names the path or command involved, ends with the
//! cause and, where the user can act, says what to do. A server that failed to start adds the tail
//! of its log. `Debug` prints the same text as `Display`, so `fn main() -> pgclone::Result<()>` and
//! `unwrap()` show a readable message.
//!
//! The cause convention: the error that caused this one (I/O, tokio-postgres, a server's
//! ErrorResponse, another pgclone error) is kept whole as [`source()`](std::error::Error::source),
//! so programs can inspect it ([`Error::sqlstate`], downcasts), and `Display` prints it exactly
//! once: `<message>: <cause>`, then indented notes and the hint. So a call site passes the cause
//! with `with_source` (or `io`, `query`) and never formats it into its message; a report that
//! also walks `source()` (anyhow's `{:#}`) repeats it, so print pgclone's errors with `{}`.

use std::fmt;
use std::io;
use std::path::Path;

/// `Result` with pgclone's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, for callers that want to react to it; the message says the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No usable PostgreSQL installation was found, or the one named is incomplete.
    BinariesNotFound,
    /// A directory is not a PostgreSQL data directory.
    NotACluster,
    /// The binaries are of another major version than the data directory.
    VersionMismatch,
    /// An environment variable or option has a value pgclone cannot use.
    InvalidConfig,
    /// The pgclone root directory (`PGCLONE_DIR`) cannot be created or written.
    RootDirUnusable,
    /// A Unix socket path would exceed the operating system's limit.
    SocketPathTooLong,
    /// The user that should run PostgreSQL (`PGCLONE_RUN_AS`) does not exist or cannot be used.
    RunAsUser,
    /// A PostgreSQL program (`initdb`, `postgres`) failed.
    CommandFailed,
    /// The server exited or did not become ready in time.
    ServerStart,
    /// The server did not stop.
    ServerStop,
    /// A query pgclone ran on a server failed, or the connection did; [`Error::sqlstate`] has the
    /// server's SQLSTATE, if it sent one.
    Query,
    /// WAL needed by a clone is missing, recycled or of another cluster.
    Wal,
    /// The source cluster is not in the state the operation needs (running vs stopped).
    SourceState,
    /// The clone's target exists and is not empty.
    TargetNotEmpty,
    /// The target is on another file system than the source, and copying was not allowed.
    CrossFilesystem,
    /// Something pgclone does not handle (yet), such as tablespaces.
    Unsupported,
    /// A golden's recipe is wrong (a missing file) or building it failed (a migration: its
    /// SQLSTATE is [`Error::sqlstate`]).
    Golden,
    /// A file system operation failed.
    Io,
    /// A path pgclone would delete, chown or write in as root could be changed by another user.
    Untrusted,
    /// The caller stopped the operation (a clone interrupted by Ctrl-C); what it made is gone.
    Interrupted,
}

/// The cause of an [`Error`], kept for [`source()`](std::error::Error::source).
type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from pgclone: a kind and a message that names what failed and why. Its cause, if
/// another error, is [`source()`](std::error::Error::source), printed once by `Display`.
pub struct Error {
    kind: ErrorKind,
    /// What pgclone was doing, naming the path or command; without the cause.
    message: String,
    source: Option<Cause>,
    /// Lines printed after the cause, indented: context (`in: <statement>`) and `hint: <advice>`.
    notes: Vec<String>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            source: None,
            notes: Vec::new(),
        }
    }

    /// A failed file system operation: `doing` is what pgclone was doing ("create directory").
    pub(crate) fn io(doing: &str, path: &Path, source: io::Error) -> Error {
        Error::new(ErrorKind::Io, format!("{doing} {}", path.display())).with_source(source)
    }

    /// A failed query or connection: `doing` names it ("connect to <url>", with any password
    /// [redacted](crate::postgres::url::redacted)). A server's SQLSTATE stays reachable.
    pub(crate) fn query(doing: impl Into<String>, source: tokio_postgres::Error) -> Error {
        Error::new(ErrorKind::Query, doing).with_source(source)
    }

    /// The same error caused by `source`, which `Display` prints after the message (once: the
    /// message must not hold it too) and `source()` returns.
    pub(crate) fn with_source(mut self, source: impl Into<Cause>) -> Error {
        self.source = Some(source.into());
        self
    }

    /// The same error with a sentence of advice appended.
    pub(crate) fn hint(self, advice: impl fmt::Display) -> Error {
        self.note(format_args!("hint: {advice}"))
    }

    /// The same error with a line of context printed after the cause (`in: <statement>`).
    pub(crate) fn note(mut self, line: impl fmt::Display) -> Error {
        self.notes.push(line.to_string());
        self
    }

    /// The same error under another kind (e.g. an I/O failure that means the root is unusable).
    pub(crate) fn with_kind(mut self, kind: ErrorKind) -> Error {
        self.kind = kind;
        self
    }

    /// What went wrong, to match on.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The SQLSTATE (`"22012"`, `"3D000"`) of the PostgreSQL server's error that caused this one,
    /// through tokio-postgres or pgclone's own connections; `None` if no server reported one.
    pub fn sqlstate(&self) -> Option<&str> {
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            if let Some(code) = sqlstate_of(error) {
                return Some(code);
            }
            cause = error.source();
        }
        None
    }
}

/// The SQLSTATE an error carries itself (not its causes).
fn sqlstate_of<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a str> {
    if let Some(e) = error.downcast_ref::<tokio_postgres::Error>() {
        return e.as_db_error().map(|db| db.code().code());
    }
    if let Some(db) = error.downcast_ref::<tokio_postgres::error::DbError>() {
        return Some(db.code().code());
    }
    None
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            f.write_str(": ")?;
            // A server's error reads as its message and SQLSTATE, not tokio-postgres's "db error:
            // ERROR: ...".
            match source
                .downcast_ref::<tokio_postgres::Error>()
                .and_then(tokio_postgres::Error::as_db_error)
            {
                Some(db) => {
                    write!(f, "{} (SQLSTATE {})", db.message(), db.code().code())?;
                    if let Some(detail) = db.detail() {
                        write!(f, "\n  detail: {detail}")?;
                    }
                }
                None => write!(f, "{source}")?,
            }
        }
        for note in &self.notes {
            write!(f, "\n  {note}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| &**e as &(dyn std::error::Error + 'static))
    }
}

/// Adds the path to an `io::Result`, turning it into a pgclone [`Result`].
pub(crate) trait IoContext<T> {
    fn doing(self, doing: &str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn doing(self, doing: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(doing, path, e))
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::harness::test_db::connect;
    use crate::postgres::libpq::ConnectParams;
    use crate::postgres::server::SUPERUSER;
    use crate::postgres::session::Session;
    use crate::postgres::temp_cluster::TempCluster;
    use crate::postgres::url::{connection_url, Endpoint};

    fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work)
    }

    #[test]
    fn the_cause_is_the_source_and_printed_once() {
        let cause = io::Error::new(io::ErrorKind::PermissionDenied, "no entry");
        let err = Error::io("create directory", Path::new("/x"), cause).hint("fix it");
        assert_eq!(
            err.to_string(),
            "create directory /x: no entry\n  hint: fix it"
        );
        assert_eq!(format!("{err:?}"), err.to_string());
        assert_eq!(err.source().unwrap().to_string(), "no entry");
        assert_eq!(err.sqlstate(), None);

        let outer = Error::new(ErrorKind::Golden, "build golden").with_source(err);
        assert_eq!(
            outer.to_string(),
            "build golden: create directory /x: no entry\n  hint: fix it"
        );
        let inner = outer.source().unwrap().downcast_ref::<Error>().unwrap();
        assert!(inner
            .source()
            .unwrap()
            .downcast_ref::<io::Error>()
            .is_some());
    }

    #[test]
    fn server_errors_keep_their_sqlstate() {
        let cluster = TempCluster::builder()
            .with(|o| o.tcp(true))
            .start()
            .unwrap();

        // Through tokio-postgres.
        let url = cluster.connection_string();
        let err = block_on(async {
            let client = connect(&url).await.unwrap();
            let e = client.batch_execute("select 1/0").await.unwrap_err();
            Error::query("run `select 1/0`", e)
        });
        assert_eq!(err.sqlstate(), Some("22012"));
        assert_eq!(err.kind(), ErrorKind::Query);
        let source = err.source().expect("the cause is kept");
        assert!(source.downcast_ref::<tokio_postgres::Error>().is_some());
        let shown = err.to_string();
        assert_eq!(shown, "run `select 1/0`: division by zero (SQLSTATE 22012)");
        let wrapped = Error::new(ErrorKind::Golden, "golden \"app\"").with_source(err);
        assert_eq!(wrapped.sqlstate(), Some("22012"), "found down the chain");
        assert_eq!(wrapped.to_string().matches("division by zero").count(), 1);

        // Through pgclone's sessions (the backup API, template servers).
        let params = |dbname| {
            ConnectParams::socket_file(
                &cluster.server().socket_path(),
                SUPERUSER,
                dbname,
                "pgclone test",
            )
        };
        let mut session = Session::connect(&params("postgres")).unwrap();
        let err = session.query("select 1/0").unwrap_err();
        assert_eq!(err.sqlstate(), Some("22012"), "{err}");
        assert!(err.source().is_some());
        assert_eq!(
            err.to_string().matches("division by zero").count(),
            1,
            "{err}"
        );
        assert_eq!(err.to_string().matches("22012").count(), 1, "{err}");
        drop(session);
        let err = Session::connect(&params("no_such_db")).err().unwrap();
        assert_eq!(err.sqlstate(), Some("3D000"), "{err}");

        // A wrong password: the server's refusal, and no password in the message.
        let wrong = connection_url(
            Endpoint::Tcp,
            cluster.port(),
            SUPERUSER,
            Some("wrong-secret"),
            "postgres",
        );
        let err = block_on(connect(&wrong)).err().unwrap();
        assert_eq!(err.sqlstate(), Some("28P01"), "{err}");
        assert!(!err.to_string().contains("wrong-secret"), "{err}");
        assert!(err.to_string().contains("<redacted>"), "{err}");
        cluster.close().unwrap();
    }

    #[test]
    fn no_password_in_a_connection_failure() {
        let port = portpicker::pick_unused_port().unwrap();
        let url = connection_url(Endpoint::Tcp, port, "me", Some("hunter2"), "app");
        let err = block_on(connect(&url)).err().unwrap();
        let shown = err.to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.starts_with(&format!(
                "connect to postgresql://me:<redacted>@127.0.0.1:{port}/app: "
            )),
            "{shown}"
        );
        assert!(err.source().is_some());
        assert_eq!(err.sqlstate(), None);
    }
}
