//! The readiness probe, in just enough of the PostgreSQL wire protocol to ask "are you
//! accepting connections?" in well under a millisecond: the startup message, then "ready for
//! query" (or any answer but "the database system is starting up", SQLSTATE 57P03). Every
//! session that runs statements uses tokio-postgres (`session.rs`, the harness). Also SQL quoting.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// SQLSTATE `cannot_connect_now`: starting up, shutting down, or in recovery before consistency.
const CANNOT_CONNECT_NOW: &str = "57P03";
const PROTOCOL_3_0: u32 = 196_608;

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
    fn reads_error_fields_and_quotes() {
        let body = b"SFATAL\0C57P03\0Mthe database system is starting up\0\0";
        assert_eq!(
            error_fields(body),
            ("57P03".into(), "the database system is starting up".into())
        );
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
