//! Just enough of the PostgreSQL wire protocol for pgclone's own needs, synchronous and
//! dependency-free, so it works the same from sync and async callers.
//!
//! - [`probe`]: is the server accepting connections? A real connection attempt: the startup
//!   message, then "ready for query" (or any answer but "the database system is starting up",
//!   SQLSTATE 57P03). Costs well under a millisecond when the server is up.
//! - [`Session`]: a held connection running simple queries, for the backup API on a source
//!   cluster. Unix socket only, with trust or peer authentication.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result, ServerError};

/// SQLSTATE `cannot_connect_now`: starting up, shutting down, or in recovery before consistency.
const CANNOT_CONNECT_NOW: &str = "57P03";
const PROTOCOL_3_0: u32 = 196_608;
/// How long a query on a held session may take (a fast checkpoint of a big cluster is slow).
const QUERY_TIMEOUT: Duration = Duration::from_secs(600);

/// What one connection attempt found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The server accepted a connection.
    Ready,
    /// No server yet, or it is not accepting connections yet.
    NotYet(String),
}

/// Tries one connection to the server listening on `socket` (the `.s.PGSQL.<port>` file).
pub(crate) fn probe(socket: &Path, user: &str, database: &str) -> Probe {
    match try_connect(socket, user, database) {
        Ok(probe) => probe,
        Err(e) => Probe::NotYet(e.to_string()),
    }
}

fn try_connect(socket: &Path, user: &str, database: &str) -> io::Result<Probe> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(&startup_message(&[("user", user), ("database", database)]))?;
    loop {
        let (tag, body) = read_message(&mut stream)?;
        match tag {
            // Authentication request: 0 is "ok", anything else asks for a password.
            b'R' if body.get(..4) == Some(&[0, 0, 0, 0]) => continue,
            b'R' => return Ok(Probe::Ready),
            b'Z' => {
                let _ = stream.write_all(&TERMINATE);
                return Ok(Probe::Ready);
            }
            // Any other error (no such role or database, authentication) comes from a server
            // that accepts connections: a cluster pgclone did not make may not know our user.
            b'E' => {
                let (code, message) = error_fields(&body);
                return Ok(if code == CANNOT_CONNECT_NOW {
                    Probe::NotYet(message)
                } else {
                    Probe::Ready
                });
            }
            // ParameterStatus, BackendKeyData, notices: keep reading.
            _ => continue,
        }
    }
}

/// A connection that runs simple queries and returns their rows as text.
pub(crate) struct Session {
    stream: UnixStream,
    /// Names the server, for error messages.
    socket: String,
    /// The server closed the connection (terminated the backend, shut down).
    lost: bool,
}

/// One row of text values (`None` is SQL NULL).
pub(crate) type Row = Vec<Option<String>>;

impl Session {
    /// Connects over the Unix socket `socket`. Fails clearly if the server wants a password.
    pub fn connect(
        socket: &Path,
        user: &str,
        database: &str,
        application_name: &str,
    ) -> Result<Session> {
        let name = socket.display().to_string();
        let failed = |e: io::Error| {
            Error::new(ErrorKind::Query, format!("connect to {name} as {user}")).with_source(e)
        };
        let mut stream = UnixStream::connect(socket).map_err(failed)?;
        stream
            .set_read_timeout(Some(QUERY_TIMEOUT))
            .map_err(failed)?;
        stream
            .set_write_timeout(Some(QUERY_TIMEOUT))
            .map_err(failed)?;
        let params = [
            ("user", user),
            ("database", database),
            ("application_name", application_name),
        ];
        stream
            .write_all(&startup_message(&params))
            .map_err(failed)?;
        let mut session = Session {
            stream,
            socket: name.clone(),
            lost: false,
        };
        loop {
            let (tag, body) = session.read().map_err(failed)?;
            match tag {
                b'R' if body.get(..4) == Some(&[0, 0, 0, 0]) => {}
                b'R' => {
                    return Err(Error::new(
                        ErrorKind::Query,
                        format!("connect to {} as {user}: the server asks for a password", session.socket),
                    )
                    .hint("pgclone connects over the Unix socket with trust or peer authentication: allow one for this user in pg_hba.conf (`local all <user> trust`), or run as that OS user"))
                }
                b'E' => return Err(session.server_error(&body, "connect")),
                b'Z' => return Ok(session),
                _ => {}
            }
        }
    }

    /// Runs one statement (or several separated by `;`) and returns the rows of the last result.
    pub fn query(&mut self, sql: &str) -> Result<Vec<Row>> {
        match self.try_query(sql) {
            // Unless the server said why (a FATAL error), the cause is an end of file.
            Err(e) if self.lost && e.sqlstate().is_none() => Err(Error::new(
                ErrorKind::Query,
                format!(
                    "run `{sql}` on {}: the server closed the connection",
                    self.socket
                ),
            )),
            result => result,
        }
    }

    /// Whether the server closed this session.
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    fn try_query(&mut self, sql: &str) -> Result<Vec<Row>> {
        let failed = |e: io::Error, socket: &str| {
            Error::new(ErrorKind::Query, format!("run `{sql}` on {socket}")).with_source(e)
        };
        let mut message = vec![b'Q'];
        message.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
        message.extend_from_slice(sql.as_bytes());
        message.push(0);
        self.stream
            .write_all(&message)
            .map_err(|e| failed(e, &self.socket))?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, body) = match self.read() {
                Ok(message) => message,
                // A FATAL error comes just before the server closes the connection.
                Err(e) => return Err(error.unwrap_or_else(|| failed(e, &self.socket))),
            };
            match tag {
                b'T' => rows.clear(), // a new result set starts
                b'D' => rows.push(parse_data_row(&body)),
                b'E' => error = Some(self.server_error(&body, sql)),
                b'Z' => return error.map_or(Ok(rows), Err),
                _ => {} // CommandComplete, notices, ...
            }
        }
    }

    /// Runs a query that returns exactly one row.
    pub fn query_row(&mut self, sql: &str) -> Result<Row> {
        let mut rows = self.query(sql)?;
        match rows.len() {
            1 => Ok(rows.remove(0)),
            n => Err(Error::new(
                ErrorKind::Query,
                format!("`{sql}` returned {n} rows, not one"),
            )),
        }
    }

    /// Runs a query that returns one non-NULL value.
    pub fn query_value(&mut self, sql: &str) -> Result<String> {
        self.query_row(sql)?
            .into_iter()
            .next()
            .flatten()
            .ok_or_else(|| Error::new(ErrorKind::Query, format!("`{sql}` returned NULL")))
    }

    fn read(&mut self) -> io::Result<(u8, Vec<u8>)> {
        let result = read_message(&mut self.stream);
        if let Err(e) = &result {
            use io::ErrorKind::{BrokenPipe, ConnectionReset, UnexpectedEof};
            self.lost |= matches!(e.kind(), UnexpectedEof | ConnectionReset | BrokenPipe);
        }
        result
    }

    /// An ErrorResponse as the cause of an error, keeping its SQLSTATE.
    fn server_error(&self, body: &[u8], doing: &str) -> Error {
        let (sqlstate, message) = error_fields(body);
        Error::new(
            ErrorKind::Query,
            format!("run `{doing}` on {}", self.socket),
        )
        .with_source(ServerError { sqlstate, message })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.stream.write_all(&TERMINATE);
    }
}

/// A SQL identifier: `"my ""db"""`.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQL string literal: `'it''s'`.
pub(crate) fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

const TERMINATE: [u8; 5] = [b'X', 0, 0, 0, 4];

fn startup_message(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
    for (key, value) in params {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    message
}

fn read_message(stream: &mut UnixStream) -> io::Result<(u8, Vec<u8>)> {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header)?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if !(4..=1 << 30).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a PostgreSQL server",
        ));
    }
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body)?;
    Ok((header[0], body))
}

/// A DataRow body: a count, then per column a length (-1 for NULL) and the bytes.
fn parse_data_row(body: &[u8]) -> Row {
    let mut row = Vec::new();
    let count = u16::from_be_bytes([body[0], body[1]]);
    let mut at = 2;
    for _ in 0..count {
        let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
        at += 4;
        if len < 0 {
            row.push(None);
        } else {
            let len = len as usize;
            row.push(Some(
                String::from_utf8_lossy(&body[at..at + len]).into_owned(),
            ));
            at += len;
        }
    }
    row
}

/// The SQLSTATE and message of an ErrorResponse body.
fn error_fields(body: &[u8]) -> (String, String) {
    let (mut code, mut message) = (String::new(), String::new());
    for field in body.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let text = String::from_utf8_lossy(&field[1..]).into_owned();
        match field[0] {
            b'C' => code = text,
            b'M' => message = text,
            _ => {}
        }
    }
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_message_is_length_prefixed_and_terminated() {
        let msg = startup_message(&[("user", "postgres"), ("database", "db")]);
        assert_eq!(
            u32::from_be_bytes(msg[..4].try_into().unwrap()) as usize,
            msg.len()
        );
        assert_eq!(&msg[4..8], &PROTOCOL_3_0.to_be_bytes());
        assert!(msg.ends_with(b"db\0\0"));
    }

    #[test]
    fn reads_error_fields_and_data_rows() {
        let body = b"SFATAL\0C57P03\0Mthe database system is starting up\0\0";
        assert_eq!(
            error_fields(body),
            ("57P03".into(), "the database system is starting up".into())
        );
        let row = [
            &[0u8, 2][..],
            &3i32.to_be_bytes(),
            b"abc",
            &(-1i32).to_be_bytes(),
        ]
        .concat();
        assert_eq!(parse_data_row(&row), vec![Some("abc".to_string()), None]);
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn no_socket_is_not_yet() {
        assert!(matches!(
            probe(Path::new("/nonexistent/.s.PGSQL.5432"), "u", "d"),
            Probe::NotYet(_)
        ));
    }
}
