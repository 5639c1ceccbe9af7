//! A held connection for pgclone's own statements (the backup API on a source, a template
//! server's `CREATE DATABASE`/`DROP DATABASE`), through tokio-postgres: Unix sockets and TCP,
//! trust, peer, password, MD5 and SCRAM authentication, the server's errors with their SQLSTATE.
//!
//! The client runs on a thread of its own with a one-thread runtime, so a session works the same
//! from sync code and from inside an async test (where blocking on another runtime would
//! panic). Dropping the session ends the connection before `drop` returns: the server then ends
//! the backend, and with it a temporary slot or a backup the session held.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::postgres::libpq::ConnectParams;
use crate::postgres::wire::{quote_ident, quote_literal};

/// How long connecting may take before pgclone gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One row of text values (`None` is SQL NULL).
pub(crate) type Row = Vec<Option<String>>;

/// A statement, and where to send its rows (or error) and whether the server ended the session.
type Request = (String, mpsc::Sender<(Result<Vec<Row>>, bool)>);

/// A connection that runs simple queries and returns their rows as text.
pub(crate) struct Session {
    requests: Option<mpsc::Sender<Request>>,
    worker: Option<JoinHandle<()>>,
    /// Names the server (never the password), for messages.
    server: String,
    lost: bool,
}

impl Session {
    /// Connects as `params` says; an authentication the server asks for and pgclone has no
    /// password for is an error saying where libpq's conventions look for one.
    pub fn connect(params: &ConnectParams) -> Result<Session> {
        let server = params.to_string();
        let config = params.tokio_config(CONNECT_TIMEOUT);
        let (requests, incoming) = mpsc::channel::<Request>();
        let (connected, connection) = mpsc::channel::<Result<()>>();
        let name = server.clone();
        let user = params.user.clone();
        let peer = params.peer_identity;
        let worker = std::thread::Builder::new()
            .name("pgclone-session".into())
            .spawn(move || serve(config, peer, name, user, incoming, connected))
            .map_err(|e| Error::new(ErrorKind::Io, "start a session thread").with_source(e))?;
        let mut session = Session {
            requests: Some(requests),
            worker: Some(worker),
            server,
            lost: false,
        };
        match connection.recv() {
            Ok(Ok(())) => Ok(session),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                session.lost = true;
                Err(Error::new(
                    ErrorKind::Query,
                    format!("connect to {}: the session thread ended", session.server),
                ))
            }
        }
    }

    /// Runs one statement (or several separated by `;`) and returns the rows of the last result.
    pub fn query(&mut self, sql: &str) -> Result<Vec<Row>> {
        let (reply, answer) = mpsc::channel();
        let sent = self
            .requests
            .as_ref()
            .map(|requests| requests.send((sql.to_string(), reply)));
        let result = match sent {
            Some(Ok(())) => answer.recv().ok(),
            _ => None,
        };
        match result {
            Some((result, true)) => {
                self.lost = true;
                result
            }
            Some((Err(e), false)) if e.sqlstate().is_none() && self.closed() => {
                Err(self.closed_error(sql).with_source(e))
            }
            Some((result, false)) => result,
            None => Err(self.closed_error(sql)),
        }
    }

    /// The server went away under `sql`: the session is lost.
    fn closed_error(&mut self, sql: &str) -> Error {
        self.lost = true;
        Error::new(
            ErrorKind::Query,
            format!(
                "run `{sql}` on {}: the server closed the connection",
                self.server
            ),
        )
    }

    /// Whether the server closed this session.
    pub fn is_lost(&mut self) -> bool {
        self.lost || self.closed()
    }

    /// Asks the worker whether the connection is closed (an empty request).
    fn closed(&mut self) -> bool {
        let (reply, answer) = mpsc::channel();
        let asked = self
            .requests
            .as_ref()
            .is_some_and(|requests| requests.send((String::new(), reply)).is_ok());
        !asked || answer.recv().is_err()
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
}

impl Drop for Session {
    fn drop(&mut self) {
        // No more requests: the worker drops the client and its connection, then ends.
        drop(self.requests.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The worker: connects, reports, then runs each request until the session is dropped. An
/// empty request asks whether the connection is closed (answered by dropping the reply).
fn serve(
    config: tokio_postgres::Config,
    peer: Option<(u32, u32)>,
    server: String,
    user: String,
    requests: mpsc::Receiver<Request>,
    connected: mpsc::Sender<Result<()>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = connected.send(Err(
                Error::new(ErrorKind::Io, "start a session runtime").with_source(e)
            ));
            return;
        }
    };
    let connect = || {
        runtime.block_on(async {
            let (client, connection) = config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| connect_error(&server, &user, e))?;
            tokio::spawn(connection);
            Ok::<_, Error>(client)
        })
    };
    // The connection is made on this thread (a current-thread runtime): with the peer identity
    // switched for this thread only, the socket carries it.
    let client = match peer {
        None => connect(),
        Some((uid, gid)) => crate::sys::with_thread_effective_ids(uid, gid, connect)
            .map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("connect to {server} as OS user {uid} (peer authentication)"),
                )
                .with_source(e)
            })
            .and_then(|connected| connected),
    };
    let client = match client {
        Ok(client) => {
            let _ = connected.send(Ok(()));
            client
        }
        Err(e) => {
            let _ = connected.send(Err(e));
            return;
        }
    };
    for (sql, reply) in requests {
        if sql.is_empty() {
            if !client.is_closed() {
                let _ = reply.send((Ok(Vec::new()), false));
            }
            continue;
        }
        let result = runtime.block_on(client.simple_query(&sql));
        // A FATAL error (the backend terminated, the server shutting down) ends the session,
        // whether or not the connection has seen the end of its stream yet.
        let fatal = result.as_ref().err().is_some_and(|e| {
            e.as_db_error()
                .is_some_and(|db| matches!(db.severity(), "FATAL" | "PANIC"))
        });
        let result = result
            .map(rows)
            .map_err(|e| Error::query(format!("run `{sql}` on {server}"), e));
        let _ = reply.send((result, fatal));
    }
}

/// The rows of the last result set of a simple query.
fn rows(messages: Vec<tokio_postgres::SimpleQueryMessage>) -> Vec<Row> {
    let mut rows = Vec::new();
    for message in messages {
        match message {
            tokio_postgres::SimpleQueryMessage::RowDescription(_) => rows.clear(),
            tokio_postgres::SimpleQueryMessage::Row(row) => rows.push(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => {}
        }
    }
    rows
}

fn connect_error(server: &str, user: &str, e: tokio_postgres::Error) -> Error {
    // tokio-postgres says "invalid configuration", with "password missing" as its cause.
    let cause = std::error::Error::source(&e).map(ToString::to_string);
    let missing_password = cause.is_some_and(|cause| cause.contains("password missing"));
    let error = Error::query(format!("connect to {server} as {user}"), e);
    if missing_password {
        return error.hint(
            "the server asks for a password and none was found: set PGPASSWORD, or put it in ~/.pgpass (or the file PGPASSFILE names; mode 0600) \
             as host:port:database:user:password, or allow trust or peer authentication for this user in pg_hba.conf",
        );
    }
    error
}

/// Waits until no session is connected to database `name`, polling every 2 ms for at most
/// 200 ms: a test's connection is usually still closing when its database goes, and a
/// `DROP DATABASE … WITH (FORCE)` would wait for it in 100 ms steps. `query_value` runs each
/// poll (on its own, so that a caller may lend its session between polls).
pub(crate) fn wait_until_unused(
    name: &str,
    mut query_value: impl FnMut(&str) -> Result<String>,
) -> Result<()> {
    let sessions = format!(
        "select count(*)::text from pg_stat_activity where datname = {}",
        quote_literal(name)
    );
    for _ in 0..100 {
        if query_value(&sessions)? == "0" {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// `DROP DATABASE` of `name` if it exists, its sessions disconnected.
pub(crate) fn drop_database_sql(name: &str) -> String {
    format!("drop database if exists {} with (force)", quote_ident(name))
}
