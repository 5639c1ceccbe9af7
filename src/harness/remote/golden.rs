//! Goldens on a server given by `PGCLONE_URL`: a template database per recipe, named by its
//! key (`pgclone_golden_<key>`), built once by whichever process of whichever machine comes
//! first, under an exclusive advisory lock on the key; every run that uses it holds a shared
//! one, so it is never dropped under a run.
//!
//! A build fills a database of its own (`pgclone_build_<random>`, registered to its run, so a
//! killed build is dropped like a killed test's database), then renames it to the template's
//! name and closes it to connections (nobody may be connected to a template being copied),
//! then records it. A template without its row is an interrupted build's and is rebuilt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{RemoteServer, GOLDEN_UNUSED_FOR, LOCK_GOLDEN};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::harness::golden::recipe::{self, BuiltWith, Recipe};
use crate::harness::golden::{apply, blocking, Golden};
use crate::postgres::session::Session;
use crate::postgres::wire::{quote_ident, quote_literal};

/// Below this size a copy writes its pages through WAL (`STRATEGY WAL_LOG`, no checkpoint);
/// above it the files are copied after a checkpoint (`FILE_COPY`). Measured on PostgreSQL 15
/// with fsync on: 15 MB, 0.17 s against 0.21 s; 385 MB, 1.8–5.4 s against 1.0 s.
const WAL_LOG_BELOW: i64 = 64 * 1024 * 1024;

/// A golden on the server, ready to be copied.
#[derive(Debug)]
pub(crate) struct RemoteGolden {
    /// The template database.
    pub template: String,
    /// The recipe's settings, given to each copy with `ALTER DATABASE ... SET`.
    pub settings: Vec<(String, String)>,
    /// `CREATE DATABASE`'s strategy (`None` before PostgreSQL 15, which has one).
    pub strategy: Option<&'static str>,
}

/// The golden for `golden`'s recipe on `server`: found in this process's memory, on the
/// server, or built now.
pub(crate) async fn ensure_built(
    golden: &Golden,
    config: &Config,
    server: &Arc<RemoteServer>,
) -> Result<Arc<RemoteGolden>> {
    let base = config.recipe_base()?;
    let recipe = recipe::resolve(golden, BuiltWith::Server(server.version_num), &base)?;
    type Cells = Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Arc<RemoteGolden>>>>>;
    static BUILT: OnceLock<Cells> = OnceLock::new();
    let cell = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(format!("{:?}\0{}", server.params, recipe.key))
        .or_default()
        .clone();
    let built = cell
        .get_or_try_init(|| Box::pin(build_or_reuse(golden, recipe, server.clone())))
        .await?;
    Ok(built.clone())
}

async fn build_or_reuse(
    golden: &Golden,
    recipe: Recipe,
    server: Arc<RemoteServer>,
) -> Result<Arc<RemoteGolden>> {
    let template = format!("pgclone_golden_{}", recipe.key);
    let lock_key = i32::from_str_radix(&recipe.key[..7], 16).unwrap_or(0);
    let s = server.clone();
    let t = template.clone();
    let mut size = blocking(move || s.use_golden(&t, lock_key)).await?;
    if size.is_none() {
        let (s, t, name) = (server.clone(), template.clone(), golden.name().to_string());
        // A session of its own waits for the lock: the admin session serves other tests.
        let builder = blocking(move || {
            let mut session = super::open_session(&s.params(super::REGISTRY_DB))?;
            lock_golden(&mut session, lock_key, &name)?;
            let built = is_registered(&mut session, &t)?;
            Ok((session, built))
        })
        .await?;
        let (session, built) = builder;
        if !built {
            build(
                golden,
                recipe.steps,
                &server,
                session,
                &template,
                lock_key,
                &recipe.key,
            )
            .await?;
        } else {
            drop(session); // built by the process we waited for; its drop frees the lock
        }
        let (s, t) = (server.clone(), template.clone());
        size = blocking(move || s.use_golden(&t, lock_key)).await?;
    }
    let size = size.ok_or_else(|| {
        Error::new(
            ErrorKind::Golden,
            format!(
                "golden {:?}: its template {template} went away right after it was built",
                golden.name()
            ),
        )
        .hint("another run dropped it; run the tests again")
    })?;
    let strategy = match server.major() {
        13 | 14 => None,
        _ if size < WAL_LOG_BELOW => Some("wal_log"),
        _ => Some("file_copy"),
    };
    Ok(Arc::new(RemoteGolden {
        template,
        settings: golden.settings().to_vec(),
        strategy,
    }))
}

/// Waits for the exclusive lock of a golden's key, saying so after a second.
fn lock_golden(session: &mut Session, lock_key: i32, name: &str) -> Result<()> {
    let started = Instant::now();
    let mut said = false;
    loop {
        let taken = session.query_value(&format!(
            "select pg_try_advisory_lock({LOCK_GOLDEN}, {lock_key})::text"
        ))?;
        if taken == "true" {
            return Ok(());
        }
        if !said && started.elapsed() > Duration::from_secs(1) {
            said = true;
            eprintln!("pgclone: waiting for another run to build golden {name:?} on the server");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_registered(session: &mut Session, template: &str) -> Result<bool> {
    let count = session.query_value(&format!(
        "select count(*)::text from goldens g join pg_database d on d.datname = g.template
         where g.template = {}",
        quote_literal(template)
    ))?;
    Ok(count != "0")
}

/// Builds the template under the exclusive lock `session` holds (its drop frees the lock).
async fn build(
    golden: &Golden,
    steps: Vec<recipe::Step>,
    server: &Arc<RemoteServer>,
    session: Session,
    template: &str,
    lock_key: i32,
    key: &str,
) -> Result<()> {
    let started = Instant::now();
    let name = golden.name().to_string();
    eprintln!("pgclone: building golden {name:?} on the server as {template}");
    let random = crate::postgres::data_dir::new_password()?;
    let building = format!("pgclone_build_{}", &random[..12]);
    let (s, b, t) = (server.clone(), building.clone(), template.to_string());
    let session = Arc::new(Mutex::new(session));
    let sess = session.clone();
    blocking(move || {
        s.register(&b)?;
        let mut session = sess.lock().unwrap();
        // A template without its row: a build that died after its rename. We hold the lock.
        session.query(&format!("drop database if exists {}", quote_ident(&t)))?;
        session.query(&format!("create database {}", quote_ident(&b)))?;
        Ok(())
    })
    .await
    .map_err(|e| golden_error(&name, e))?;

    let applied = apply(&server.params(&building), &name, steps).await;
    let (s, b, t, k) = (
        server.clone(),
        building.clone(),
        template.to_string(),
        key.to_string(),
    );
    let finished = match applied {
        Ok(()) => {
            blocking(move || {
                let mut session = session.lock().unwrap();
                finish(&mut session, &b, &t, &k, lock_key)?;
                drop(session);
                s.admin_query(&format!(
                    "delete from databases where name = {}",
                    quote_literal(&b)
                ))
            })
            .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = finished {
        let s = server.clone();
        let _ = blocking(move || s.drop_registered(&building)).await;
        return Err(e);
    }
    eprintln!(
        "pgclone: built golden {name:?} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Turns the finished build into the template: no session may be in it, then renamed, closed
/// to connections, recorded.
fn finish(
    session: &mut Session,
    building: &str,
    template: &str,
    key: &str,
    lock_key: i32,
) -> Result<()> {
    let started = Instant::now();
    let rename = format!(
        "alter database {} rename to {}",
        quote_ident(building),
        quote_ident(template)
    );
    loop {
        match session.query(&rename) {
            // The build's clients are still closing.
            Err(e)
                if e.sqlstate() == Some("55006") && started.elapsed() < Duration::from_secs(30) =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => break result.map(drop)?,
        }
    }
    let template_ident = quote_ident(template);
    session.query(&format!(
        "alter database {template_ident} allow_connections false"
    ))?;
    session.query(&format!(
        "insert into goldens (template, recipe, lock_key, size)
         values ({t}, {k}, {lock_key}, pg_database_size({t}))
         on conflict (template) do update set size = excluded.size, built_at = now(), last_used = now()",
        t = quote_literal(template),
        k = quote_literal(key)
    ))?;
    Ok(())
}

fn golden_error(name: &str, e: Error) -> Error {
    Error::new(
        ErrorKind::Golden,
        format!("golden {name:?}: prepare its build on the server"),
    )
    .with_source(e)
}

impl RemoteServer {
    /// Holds a shared lock on the golden `template` for this run (once) and marks it used;
    /// its size if it is built, `None` (and no lock) if it is not.
    fn use_golden(&self, template: &str, lock_key: i32) -> Result<Option<i64>> {
        let mut admin = self.admin.lock().unwrap();
        let first = !admin.goldens.contains(template);
        if first {
            admin.session.query(&format!(
                "select pg_advisory_lock_shared({LOCK_GOLDEN}, {lock_key})"
            ))?;
        }
        let rows = admin.session.query(&format!(
            "update goldens g set last_used = now() from pg_database d
             where g.template = {t} and d.datname = g.template returning g.size::text",
            t = quote_literal(template)
        ))?;
        let size = rows
            .first()
            .and_then(|row| row[0].as_deref())
            .and_then(|s| s.parse().ok());
        match (size, first) {
            (Some(_), true) => {
                admin.goldens.insert(template.to_string());
            }
            (None, true) => {
                admin.session.query(&format!(
                    "select pg_advisory_unlock_shared({LOCK_GOLDEN}, {lock_key})"
                ))?;
            }
            _ => {}
        }
        Ok(size)
    }

    fn admin_query(&self, sql: &str) -> Result<()> {
        self.query(sql).map(drop)
    }
}

/// Drops goldens that no run used for [`GOLDEN_UNUSED_FOR`] and that no run holds now.
pub(super) fn drop_unused(server: &RemoteServer) {
    let old = server.query(&format!(
        "select template, lock_key::text from goldens where last_used < now() - interval '{GOLDEN_UNUSED_FOR}'"
    ));
    for row in old.unwrap_or_default() {
        let (Some(template), Some(lock_key)) = (&row[0], &row[1]) else {
            continue;
        };
        let Ok(taken) = server.query(&format!(
            "select pg_try_advisory_lock({LOCK_GOLDEN}, {lock_key})::text"
        )) else {
            continue;
        };
        if taken.first().and_then(|row| row[0].as_deref()) != Some("true") {
            continue; // a run uses it
        }
        // Checked again under the lock: a run may have used it meanwhile.
        let _ = server.query(&format!(
            "select 1 from goldens where template = {t} and last_used < now() - interval '{GOLDEN_UNUSED_FOR}'",
            t = quote_literal(template)
        ))
        .and_then(|rows| match rows.is_empty() {
            true => Ok(()),
            false => server
                .query(&format!("drop database if exists {}", quote_ident(template)))
                .and_then(|_| server.query(&format!("delete from goldens where template = {}", quote_literal(template))))
                .map(drop),
        });
        let _ = server.query(&format!(
            "select pg_advisory_unlock({LOCK_GOLDEN}, {lock_key})"
        ));
    }
}
