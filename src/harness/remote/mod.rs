//! Database mode on a server given by `PGCLONE_URL` (a CI service container, a compose service,
//! a shared dev server): no local binaries, a role with CREATEDB, over TCP with a password.
//!
//! On that server pgclone keeps a registry database, [`REGISTRY_DB`], with two tables: the
//! goldens (template databases named by their recipe key, `golden.rs`) and the databases made
//! for tests and builds, each with the run that made it. A run is a process; it holds an
//! advisory lock on its run number for as long as its session lives, so a database whose run
//! holds no lock belongs to a dead process (even one killed with SIGKILL: the server ends its
//! session) and the next run drops it. All of pgclone's advisory locks are taken in the
//! registry database, so every process on every machine sees the same ones.
//!
//! A process has one session there (creating, dropping, holding locks), and a test holds one
//! of a fixed number of connection slots while its database lives, so that the suite stays
//! within the server's `max_connections` however many processes nextest starts.

mod golden;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub(crate) use golden::{ensure_built, RemoteGolden};

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::postgres::libpq::{ConnectParams, Secret};
use crate::postgres::session::{drop_database_sql, wait_until_unused, Session};
use crate::postgres::wire::{quote_ident, quote_literal};

/// The database holding the registry, made by the first run on a server.
pub(crate) const REGISTRY_DB: &str = "pgclone";

/// The first key of pgclone's advisory locks (two-key form), one per purpose.
const LOCK_RUN: i32 = 0x7067_6301;
const LOCK_GOLDEN: i32 = 0x7067_6302;
const LOCK_SLOT: i32 = 0x7067_6303;
const LOCK_SCHEMA: i32 = 0x7067_6304;

/// The connections a test may hold at once: its pool (sqlx's has up to 5) and its process's
/// session. A test holds a slot worth this many.
const CONNECTIONS_PER_TEST: u32 = 6;

/// A database older than this with no live run is dropped; a golden unused for this long (by
/// any run on any machine) too. A shared server collects a golden per migration change.
const GOLDEN_UNUSED_FOR: &str = "1 day";

/// The server of `PGCLONE_URL`, as this process uses it.
pub(crate) struct RemoteServer {
    /// Its address and credentials, in the registry database.
    params: ConnectParams,
    /// The process's session: holds its run lock, golden locks and slots.
    admin: Mutex<Admin>,
    /// `server_version_num`.
    pub version_num: u32,
    /// Tests that may hold a database at once.
    slots: u32,
    /// This process's run number (the second key of its run lock).
    run: i32,
}

struct Admin {
    session: Session,
    /// Slots this session holds (advisory locks stack within a session, so it must not take
    /// one twice).
    slots: HashSet<u32>,
    /// Goldens it holds a shared lock on (so that no run drops them while this one uses them).
    goldens: HashSet<String>,
}

/// A test's database: its name and the slot it holds.
#[derive(Debug)]
pub(crate) struct Created {
    pub name: String,
    slot: u32,
}

/// This process's session with the server `PGCLONE_URL` names, opened on first use.
pub(crate) fn server(config: &Config, url: &Secret) -> Result<Arc<RemoteServer>> {
    // By the URL as given: each test asks, and is answered without parsing it (or reading the
    // password file) again.
    static SERVERS: OnceLock<Mutex<HashMap<Secret, Arc<RemoteServer>>>> = OnceLock::new();
    let mut servers = SERVERS.get_or_init(Default::default).lock().unwrap();
    if let Some(server) = servers.get(url) {
        return Ok(server.clone());
    }
    let params = ConnectParams::parse(url, "PGCLONE_URL", "pgclone", config)?;
    let server = Arc::new(RemoteServer::connect(params, config)?);
    servers.insert(url.clone(), server.clone());
    Ok(server)
}

impl RemoteServer {
    fn connect(params: ConnectParams, config: &Config) -> Result<RemoteServer> {
        let registry = params.with_dbname(REGISTRY_DB);
        // The registry usually exists: straight there. Else through the URL's database (or,
        // when the URL named none and the role has no database of its name, `postgres`).
        let (mut first, exists) = match open_session(&registry) {
            Ok(session) => (session, true),
            Err(e) if e.sqlstate() == Some("3D000") => match open_session(&params) {
                Err(e) if e.sqlstate() == Some("3D000") && params.dbname == params.user => {
                    (open_session(&params.with_dbname("postgres"))?, false)
                }
                session => (session?, false),
            },
            Err(e) => return Err(e),
        };
        let version_num: u32 = first
            .query_value("select current_setting('server_version_num')")?
            .parse()
            .unwrap_or(0);
        if version_num < crate::postgres::features::MIN_MAJOR * 10_000 {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "the server of PGCLONE_URL ({params}) runs PostgreSQL {}, older than {}",
                    version_text(version_num),
                    crate::postgres::features::MIN_MAJOR
                ),
            )
            .hint("use a server of PostgreSQL 13 or newer"));
        }
        let can_create = first.query_value(
            "select (rolcreatedb or rolsuper)::text from pg_roles where rolname = current_user",
        )?;
        if can_create != "true" {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("role {:?} of PGCLONE_URL ({params}) may not create databases", params.user),
            )
            .hint(format!("give it the right as a superuser: ALTER ROLE {} CREATEDB (superuser is not needed)", quote_ident(&params.user))));
        }
        let mut session = match exists {
            true => first,
            false => {
                create_registry_database(&mut first, &params)?;
                drop(first);
                open_session(&registry)?
            }
        };
        let params = registry;
        session.query(&format!(
            "select pg_advisory_xact_lock({LOCK_SCHEMA}, 0);
             create table if not exists goldens (
                 template text primary key, recipe text not null, lock_key integer not null,
                 size bigint not null, built_at timestamptz not null default now(),
                 last_used timestamptz not null default now());
             create table if not exists databases (
                 name text primary key, run integer not null, kept boolean not null default false,
                 created_at timestamptz not null default now())"
        ))?;
        let run = loop {
            let run = random_i32()?;
            let taken = session.query_value(&format!(
                "select pg_try_advisory_lock({LOCK_RUN}, {run})::text"
            ))?;
            if taken == "true" {
                break run;
            }
        };
        let available: u32 = session
            .query_value(
                "select (current_setting('max_connections')::int
                   - current_setting('superuser_reserved_connections')::int
                   - coalesce(current_setting('reserved_connections', true)::int, 0))::text",
            )?
            .parse()
            .unwrap_or(CONNECTIONS_PER_TEST);
        // Unless told, leave a quarter of the connections to others.
        let budget = config.max_connections.unwrap_or(available * 3 / 4);
        let server = RemoteServer {
            params,
            admin: Mutex::new(Admin {
                session,
                slots: HashSet::new(),
                goldens: HashSet::new(),
            }),
            version_num,
            slots: (budget / CONNECTIONS_PER_TEST).max(1),
            run,
        };
        server.reap();
        Ok(server)
    }

    /// The server's major version.
    pub fn major(&self) -> u32 {
        self.version_num / 10_000
    }

    /// The server's address and credentials, in database `dbname`.
    pub fn params(&self, dbname: &str) -> ConnectParams {
        self.params.with_dbname(dbname)
    }

    /// A new database copied from `golden`'s template, once a connection slot is free.
    pub fn create_database(&self, golden: &RemoteGolden) -> Result<Created> {
        let slot = self.acquire_slot()?;
        let random = crate::postgres::data_dir::new_password()?;
        let created = Created {
            name: format!("pgclone_test_{}", &random[..12]),
            slot,
        };
        let made = self.register(&created.name).and_then(|()| {
            let strategy = match golden.strategy {
                Some(strategy) => format!(" strategy = {strategy}"),
                None => String::new(),
            };
            let name = quote_ident(&created.name);
            let template = quote_ident(&golden.template);
            self.run_retrying_busy(&format!(
                "create database {name} template {template}{strategy}"
            ))?;
            // A copy does not inherit per-database settings: each gets the golden's.
            let mut admin = self.admin.lock().unwrap();
            set_database_settings(&mut admin.session, &created.name, &golden.settings)
        });
        match made {
            Ok(()) => Ok(created),
            Err(e) => {
                let _ = self.drop_database(created);
                Err(e)
            }
        }
    }

    /// Drops a test's database (disconnecting what is left of its sessions), forgets it, and
    /// frees its slot.
    pub fn drop_database(&self, created: Created) -> Result<()> {
        let dropped = self.drop_registered(&created.name);
        let unlocked = self.release_slot(created.slot);
        dropped.and(unlocked)
    }

    /// Keeps a test's database: no run drops it (`pgclone` prints how to drop it by hand).
    pub fn keep_database(&self, created: Created) -> Result<()> {
        let marked = self.query(&format!(
            "update databases set kept = true where name = {}",
            quote_literal(&created.name)
        ));
        let unlocked = self.release_slot(created.slot);
        marked.map(drop).and(unlocked)
    }

    /// Frees a slot this session holds.
    fn release_slot(&self, slot: u32) -> Result<()> {
        let mut admin = self.admin.lock().unwrap();
        admin.slots.remove(&slot);
        let sql = format!("select pg_advisory_unlock({LOCK_SLOT}, {slot})");
        admin.session.query(&sql).map(drop)
    }

    /// Records `name` as this run's before it exists, so that a kill at any point leaves a row
    /// for the next run to act on.
    fn register(&self, name: &str) -> Result<()> {
        let sql = format!(
            "insert into databases (name, run) values ({}, {})",
            quote_literal(name),
            self.run
        );
        self.admin.lock().unwrap().session.query(&sql).map(drop)
    }

    /// Drops the database `name` if it exists, once its test's sessions have closed, then its
    /// row.
    fn drop_registered(&self, name: &str) -> Result<()> {
        // The admin session is released between polls: other tests create meanwhile.
        wait_until_unused(name, |sql| self.query_value(sql))?;
        self.query(&drop_database_sql(name))?;
        self.forget(name)
    }

    /// Removes `name`'s row from the registry (its database is gone, or is a golden now).
    fn forget(&self, name: &str) -> Result<()> {
        let sql = format!("delete from databases where name = {}", quote_literal(name));
        self.query(&sql).map(drop)
    }

    /// Runs `sql` on the admin session; "source database is being accessed by other users"
    /// (55006: a session still in the template, such as the build's, closing) is retried for a
    /// while instead of failing the test.
    fn run_retrying_busy(&self, sql: &str) -> Result<()> {
        retry_while_busy(|| self.query(sql))
    }

    /// One of the server's connection slots, waiting for a test of any process to free one.
    fn acquire_slot(&self) -> Result<u32> {
        let started = Instant::now();
        let mut said = false;
        loop {
            let mut admin = self.admin.lock().unwrap();
            let held: Vec<String> = admin.slots.iter().map(u32::to_string).collect();
            let held = held.join(", ");
            // Tries the slots in turn from a random one; stops at the first it takes. The CASE
            // skips the ones this session holds before trying their lock (a filter's terms may
            // be reordered; a lock taken twice in one session stacks and would outlive its test).
            let start = random_i32()? as u32 % self.slots;
            let rows = admin.session.query(&format!(
                "select s::text from (select (n + {start}) % {slots} as s
                   from generate_series(0, {last}) n) t
                 where case when s = any(array[{held}]::int[]) then false
                            else pg_try_advisory_lock({LOCK_SLOT}, s) end
                 limit 1",
                slots = self.slots,
                last = self.slots - 1
            ))?;
            if let Some(slot) = rows
                .first()
                .and_then(|row| row[0].as_deref())
                .and_then(|s| s.parse().ok())
            {
                admin.slots.insert(slot);
                return Ok(slot);
            }
            drop(admin);
            if !said && started.elapsed() > Duration::from_secs(10) {
                said = true;
                eprintln!(
                    "pgclone: waiting for a connection slot on {}: all {} are held by running tests \
                     (each counts for {CONNECTIONS_PER_TEST} connections); set PGCLONE_MAX_CONNECTIONS \
                     to the number pgclone may use, or raise the server's max_connections",
                    self.params, self.slots
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Drops what dead runs left (their databases, unfinished builds) and goldens no run used
    /// for [`GOLDEN_UNUSED_FOR`]. Best effort: a failure here must not fail a test.
    fn reap(&self) {
        let dead = self.query(&format!(
            "select name from databases d where not kept and not exists (
               select 1 from pg_locks l
               where l.locktype = 'advisory' and l.granted and l.objsubid = 2
                 and l.classid = {LOCK_RUN} and l.objid = d.run::oid
                 and l.database = (select oid from pg_database where datname = current_database()))"
        ));
        for row in dead.unwrap_or_default() {
            if let Some(name) = &row[0] {
                let _ = self.drop_registered(name);
            }
        }
        // Kept databases the user dropped by hand.
        let _ = self.query(
            "delete from databases d where kept
               and not exists (select 1 from pg_database where datname = d.name)",
        );
        golden::drop_unused(self);
    }

    /// Runs `sql` on the admin session.
    fn query(&self, sql: &str) -> Result<Vec<crate::postgres::session::Row>> {
        self.admin.lock().unwrap().session.query(sql)
    }

    /// Runs `sql`, which returns one value, on the admin session.
    fn query_value(&self, sql: &str) -> Result<String> {
        self.admin.lock().unwrap().session.query_value(sql)
    }
}

impl std::fmt::Debug for RemoteServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteServer")
            .field("server", &self.params.to_string())
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

/// Runs `attempt` again while it fails with "database is being accessed by other users" (55006:
/// a session still closing in a template or a database being renamed), for up to 30 s.
fn retry_while_busy<T>(mut attempt: impl FnMut() -> Result<T>) -> Result<()> {
    let started = Instant::now();
    loop {
        match attempt() {
            Err(e)
                if e.sqlstate() == Some("55006") && started.elapsed() < Duration::from_secs(30) =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result.map(drop),
        }
    }
}

/// Gives database `name` the recipe's settings (`ALTER DATABASE ... SET`), each read as
/// `postgresql.conf` would read it (`search_path = 'a, b'` is two schemas): set in a
/// transaction of its own, then stored `FROM CURRENT`. A setting the role may not set, or one
/// that needs a restart, is the server's error.
fn set_database_settings(
    session: &mut Session,
    name: &str,
    settings: &[(String, String)],
) -> Result<()> {
    for (setting, value) in settings {
        // One simple query is one transaction: `set_config(..., true)` ends with it.
        session.query(&format!(
            "select set_config({}, {}, true); alter database {} set {setting} from current",
            quote_literal(setting),
            quote_literal(value),
            quote_ident(name)
        )).map_err(|e| {
            Error::new(ErrorKind::Golden, format!("setting {setting} of the golden, on the server of PGCLONE_URL")).with_source(e)
                .hint("a server by URL takes the settings a database may have (ALTER DATABASE ... SET): not those that need a restart, nor a superuser's")
        })?;
    }
    Ok(())
}

/// Makes the registry database unless it exists (two runs starting at once: one makes it).
fn create_registry_database(session: &mut Session, params: &ConnectParams) -> Result<()> {
    let exists = session.query_value(&format!(
        "select count(*)::text from pg_database where datname = {}",
        quote_literal(REGISTRY_DB)
    ))?;
    if exists != "0" {
        return Ok(());
    }
    match session.query(&format!("create database {}", quote_ident(REGISTRY_DB))) {
        Err(e) if matches!(e.sqlstate(), Some("42P04" | "23505")) => Ok(()),
        Err(e) => Err(Error::new(
            ErrorKind::Query,
            format!("create pgclone's registry database {REGISTRY_DB:?} on {params}"),
        )
        .with_source(e)),
        Ok(_) => Ok(()),
    }
}

/// A session with the server, waiting a while when it has no connection to spare or is not up
/// yet (a compose service starting). Its statements never time out and it is never ended for
/// idling, whatever the server's defaults: it holds the run's lock, whose loss would let
/// another run drop this one's databases.
fn open_session(params: &ConnectParams) -> Result<Session> {
    let mut session = connect_session(params)?;
    session.query(
        "select set_config('statement_timeout', '0', false), set_config('lock_timeout', '0', false),
                set_config('idle_in_transaction_session_timeout', '0', false);
         select set_config('idle_session_timeout', '0', false)
           where current_setting('server_version_num')::int >= 140000",
    )?;
    Ok(session)
}

fn connect_session(params: &ConnectParams) -> Result<Session> {
    let started = Instant::now();
    loop {
        match Session::connect(params) {
            // Refused or unreachable: a server still starting gets a few seconds.
            Err(e) if e.sqlstate().is_none() && started.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(200));
            }
            // "too many clients", "the database system is starting up"
            Err(e)
                if matches!(e.sqlstate(), Some("53300" | "57P03"))
                    && started.elapsed() < Duration::from_secs(30) =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) if e.sqlstate() == Some("53300") => {
                return Err(e.hint("the server has no connection to spare: set PGCLONE_MAX_CONNECTIONS lower, run fewer tests at once, or raise the server's max_connections"));
            }
            Err(e) if e.sqlstate() == Some("28P01") => {
                return Err(e.hint("the password was refused: check the one in PGCLONE_URL (percent-encoded), or PGPASSWORD, or ~/.pgpass"));
            }
            Err(e) if e.sqlstate().is_none() => {
                return Err(
                    e.hint("is the server running, and are PGCLONE_URL's host and port right?")
                );
            }
            result => return result,
        }
    }
}

/// `150004` as `15.4`.
fn version_text(version_num: u32) -> String {
    format!("{}.{}", version_num / 10_000, version_num % 10_000)
}

/// A random positive `i32`.
fn random_i32() -> Result<i32> {
    let hex = crate::postgres::data_dir::new_password()?;
    Ok(i32::from_str_radix(&hex[..7], 16).unwrap_or(1).max(1))
}
