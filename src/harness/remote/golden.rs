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

/// The name of a golden's template database, before its recipe key.
const TEMPLATE_PREFIX: &str = "pgclone_golden_";

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
    let template = format!("{TEMPLATE_PREFIX}{}", recipe.key);
    let lock_key = lock_key_of(&recipe.key);
    let name = golden.name().to_string();
    let settings = golden.raw_settings();
    let mut steps = Some(recipe.steps);
    // A session of its own for the exclusive lock: the admin session serves other tests.
    let mut builder: Option<Arc<Mutex<Session>>> = None;
    let (started, mut said) = (Instant::now(), false);
    // Never a blocking wait for a lock: a build takes as long as the migrations do, and a
    // process waiting on a lock cannot serve its other tests (or its own build) meanwhile.
    let size = loop {
        let (s, t) = (server.clone(), template.clone());
        if let Some(size) = blocking(move || s.use_golden(&t, lock_key)).await? {
            break size;
        }
        // Not built, or another run builds or drops it (it holds the exclusive lock).
        let session = match &builder {
            Some(session) => session.clone(),
            None => {
                let params = server.params(super::REGISTRY_DB);
                let session = blocking(move || super::open_session(&params)).await?;
                builder.insert(Arc::new(Mutex::new(session))).clone()
            }
        };
        let (b, t) = (session.clone(), template.clone());
        let must_build = blocking(move || {
            let mut session = b.lock().unwrap();
            let sql = format!("select pg_try_advisory_lock({LOCK_GOLDEN}, {lock_key})::text");
            match session.query_value(&sql)?.as_str() {
                "true" => Ok(Some(!is_registered(&mut session, &t)?)),
                _ => Ok(None),
            }
        })
        .await?;
        match must_build {
            Some(must_build) => {
                let built = match (must_build, steps.take()) {
                    (true, Some(steps)) => {
                        build(
                            &name,
                            steps,
                            &settings,
                            &server,
                            &session,
                            &template,
                            &recipe.key,
                        )
                        .await
                    }
                    _ => Ok(()),
                };
                let b = session.clone();
                let sql = format!("select pg_advisory_unlock({LOCK_GOLDEN}, {lock_key})");
                blocking(move || b.lock().unwrap().query(&sql).map(drop)).await?;
                built?;
            }
            None => {
                if !said && started.elapsed() > Duration::from_secs(1) {
                    said = true;
                    eprintln!(
                        "pgclone: waiting for another run to build golden {name:?} on the server"
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let strategy = match server.major() {
        13 | 14 => None,
        _ if size < WAL_LOG_BELOW => Some("wal_log"),
        _ => Some("file_copy"),
    };
    Ok(Arc::new(RemoteGolden {
        template,
        settings,
        strategy,
    }))
}

/// The second key of a golden's advisory lock: from its recipe key (hex).
fn lock_key_of(key: &str) -> i32 {
    i32::from_str_radix(&key[..7], 16).unwrap_or(0)
}

fn is_registered(session: &mut Session, template: &str) -> Result<bool> {
    let count = session.query_value(&format!(
        "select count(*)::text from goldens g join pg_database d on d.datname = g.template
         where g.template = {}",
        quote_literal(template)
    ))?;
    Ok(count != "0")
}

/// Builds the template under the exclusive lock `session` holds.
async fn build(
    name: &str,
    steps: Vec<recipe::Step>,
    settings: &[(String, String)],
    server: &Arc<RemoteServer>,
    session: &Arc<Mutex<Session>>,
    template: &str,
    key: &str,
) -> Result<()> {
    let started = Instant::now();
    eprintln!("pgclone: building golden {name:?} on the server as {template}");
    let random = crate::postgres::data_dir::new_password()?;
    let building = format!("pgclone_build_{}", &random[..12]);
    let (s, b, t, sess) = (
        server.clone(),
        building.clone(),
        template.to_string(),
        session.clone(),
    );
    let settings = settings.to_vec();
    let prepared = blocking(move || {
        s.register(&b)?;
        let mut session = sess.lock().unwrap();
        // A template without its row: a build that died after its rename. We hold the lock.
        session.query(&format!("drop database if exists {}", quote_ident(&t)))?;
        session.query(&format!("create database {}", quote_ident(&b)))?;
        // The migrations run with the settings, as on a local golden.
        super::set_database_settings(&mut session, &b, &settings)
    })
    .await
    .map_err(|e| {
        Error::new(
            ErrorKind::Golden,
            format!("golden {name:?}: prepare its build on the server"),
        )
        .with_source(e)
    });
    let applied = match prepared {
        Ok(()) => apply(&server.params(&building), name, steps).await,
        Err(e) => Err(e),
    };
    let (s, b, t, k, sess) = (
        server.clone(),
        building.clone(),
        template.to_string(),
        key.to_string(),
        session.clone(),
    );
    let finished = match applied {
        Ok(()) => {
            blocking(move || {
                finish(&mut sess.lock().unwrap(), &b, &t, &k)?;
                s.forget(&b)
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

/// Turns the finished build into the template: recorded first (a row without its database is
/// rebuilt), renamed once no session is left in it, closed to connections.
fn finish(session: &mut Session, building: &str, template: &str, key: &str) -> Result<()> {
    let t = quote_literal(template);
    session.query(&format!(
        "insert into goldens (template, recipe, lock_key, size)
         values ({t}, {k}, {lock_key}, 0)
         on conflict (template) do update set built_at = now(), last_used = now()",
        k = quote_literal(key),
        lock_key = lock_key_of(key)
    ))?;
    let rename = format!(
        "alter database {} rename to {}",
        quote_ident(building),
        quote_ident(template)
    );
    // The build's clients are still closing.
    super::retry_while_busy(|| session.query(&rename))?;
    let ident = quote_ident(template);
    session.query(&format!("alter database {ident} allow_connections false"))?;
    session.query(&format!(
        "update goldens set size = pg_database_size({t}) where template = {t}"
    ))?;
    Ok(())
}

impl RemoteServer {
    /// Holds a shared lock on the golden `template` for this run (once) and marks it used;
    /// its size if it is built, `None` (and no lock) if it is not.
    fn use_golden(&self, template: &str, lock_key: i32) -> Result<Option<i64>> {
        let mut admin = self.admin.lock().unwrap();
        let first = !admin.goldens.contains(template);
        if first {
            // Only tried: another run building or dropping it holds the exclusive lock.
            let sql =
                format!("select pg_try_advisory_lock_shared({LOCK_GOLDEN}, {lock_key})::text");
            if admin.session.query_value(&sql)? != "true" {
                return Ok(None);
            }
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
}

/// Drops goldens that no run used for [`GOLDEN_UNUSED_FOR`], and templates without a row (a
/// build that died between its rename and its record), each only while no run holds it.
pub(super) fn drop_unused(server: &RemoteServer) {
    let unused = format!("last_used < now() - interval '{GOLDEN_UNUSED_FOR}'");
    let old = server.query(&format!("select template from goldens where {unused}"));
    let orphans = server.query(
        "select datname from pg_database d
         where datname like 'pgclone\\_golden\\_%' and pg_get_userbyid(datdba) = current_user
           and not exists (select 1 from goldens where template = d.datname)",
    );
    for (rows, still) in [
        (
            old,
            format!("exists (select 1 from goldens where template = $T and {unused})"),
        ),
        (
            orphans,
            "not exists (select 1 from goldens where template = $T)".to_string(),
        ),
    ] {
        for row in rows.unwrap_or_default() {
            if let Some(template) = &row[0] {
                let still = still.replace("$T", &quote_literal(template));
                let _ = drop_golden(server, template, &still);
            }
        }
    }
}

/// Drops the golden `template` if `still` (SQL) holds once its exclusive lock is ours.
fn drop_golden(server: &RemoteServer, template: &str, still: &str) -> Result<()> {
    let Some(key) = template
        .strip_prefix(TEMPLATE_PREFIX)
        .filter(|k| k.len() >= 7)
    else {
        return Ok(());
    };
    let lock_key = lock_key_of(key);
    let sql = format!("select pg_try_advisory_lock({LOCK_GOLDEN}, {lock_key})::text");
    if server.query_value(&sql)? != "true" {
        return Ok(()); // a run uses it, or builds it
    }
    // Checked again under the lock: a run may have used it meanwhile.
    let dropped = server
        .query_value(&format!("select {still}::text"))
        .and_then(|still| match still.as_str() {
            "true" => server
                .query(&format!(
                    "drop database if exists {}",
                    quote_ident(template)
                ))
                .and_then(|_| {
                    server.query(&format!(
                        "delete from goldens where template = {}",
                        quote_literal(template)
                    ))
                })
                .map(drop),
            _ => Ok(()),
        });
    let unlocked = server.query(&format!(
        "select pg_advisory_unlock({LOCK_GOLDEN}, {lock_key})"
    ));
    dropped.and(unlocked.map(drop))
}
