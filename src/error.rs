//! The one error type of pgclone.
//!
//! Every message says what pgclone was doing, names the path or command involved, ends with the
//! cause and, where the user can act, says what to do. A server that failed to start adds the tail
//! of its log. `Debug` prints the same text as `Display`, so `fn main() -> pgclone::Result<()>` and
//! `unwrap()` show a readable message.

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
    /// A query pgclone ran on a server failed, or the connection did.
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
    /// A golden's recipe is wrong (a missing file) or building it failed (a migration).
    Golden,
    /// A file system operation failed.
    Io,
    /// A path pgclone would delete, chown or write in as root could be changed by another user.
    Untrusted,
}

/// An error from pgclone: a kind and a message that names what failed and why.
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<io::Error>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// A failed file system operation: `doing` is what pgclone was doing ("create directory").
    pub(crate) fn io(doing: &str, path: &Path, source: io::Error) -> Error {
        Error {
            kind: ErrorKind::Io,
            message: format!("{doing} {}: {source}", path.display()),
            source: Some(source),
        }
    }

    /// The same error with a sentence of advice appended.
    pub(crate) fn hint(mut self, advice: impl fmt::Display) -> Error {
        self.message = format!("{}\n  hint: {advice}", self.message);
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
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
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
