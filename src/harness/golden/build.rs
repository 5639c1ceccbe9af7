//! Building a golden once, under a file lock, and finding it again.
//!
//! Layout: `<root>/golden/<key>/` holds `data/` (stopped cleanly, synced), `postgres.log` and
//! `READY` (written last: a directory without it is not a golden), and maybe `warm.state`
//! (`harness/warm.rs`). A golden is known by its key
//! (a hash of the recipe's content), never by the name a user chose: two recipes named alike
//! are two goldens. `<root>/golden/<key>.lock` is held exclusively while building or removing
//! it, and shared while cloning it, so no golden disappears under a process cloning it.
//! A build happens in a fresh clone directory of its own (owned by the building process, so a
//! killed build is reaped like any clone, and its orphans never write where a later build
//! does), moved into place when done. Goldens unused for [`UNUSED_FOR`] are removed by the
//! next build. `<root>/golden/builds.log` records every build.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use super::apply::apply;
use super::recipe::{self, BuiltWith, Step};
use super::Golden;
use crate::clone::{clone_stopped, CloneOptions, CloneReport, CopyMethod};
use crate::config::Config;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::harness::test_db::connect_params;
use crate::postgres::data_dir;
use crate::postgres::libpq::ConnectParams;
use crate::postgres::options::{Resolved, ServerOptions};
use crate::postgres::run_as::RunAs;
use crate::postgres::server::{Server, StartSpec, SUPERUSER};
use crate::postgres::wire::quote_ident;
use crate::store::lock::FileLock;
use crate::store::root::{self, ProcessId, Root};

/// A built golden, ready to be cloned.
#[derive(Debug)]
pub(crate) struct BuiltGolden {
    /// The database that holds the fixture (a library's: its first member's).
    pub dbname: String,
    /// The databases tests' databases are copies of: `dbname` alone, or a library's members.
    pub templates: Vec<String>,
    pub data_dir: PathBuf,
    pub root: Root,
    pub env: Resolved,
    lock_path: PathBuf,
}

impl BuiltGolden {
    /// A new clone directory, filled by `copy` (given its data directory), started with this
    /// golden's binaries and user: the server, the directory, and how the files were copied.
    /// The server is ready once the golden's database takes a connection (so the caller's first
    /// connection finds its relation cache built). On failure nothing is left.
    pub fn start_clone(
        &self,
        copy: impl FnOnce(&Path) -> Result<CloneReport>,
    ) -> Result<(Server, PathBuf, CopyMethod)> {
        self.start_clone_with(ServerOptions::new(), copy)
    }

    /// [`start_clone`](Self::start_clone) with these server options.
    pub fn start_clone_with(
        &self,
        options: ServerOptions,
        copy: impl FnOnce(&Path) -> Result<CloneReport>,
    ) -> Result<(Server, PathBuf, CopyMethod)> {
        let dir = self.root.new_clone_dir(self.env.run_as.as_ref())?;
        let data = dir.join("data");
        let started = copy(&data).and_then(|report| {
            let server = Server::start_with(&StartSpec {
                env: &self.env,
                options: &options.ready_database(&self.dbname),
                data_dir: &data,
                log_path: &dir.join("postgres.log"),
            })?;
            Ok((server, report.method().unwrap_or(CopyMethod::Copy)))
        });
        match started {
            Ok((server, method)) => Ok((server, dir, method)),
            Err(e) => {
                let _ = root::remove_clone_dir(&dir);
                Err(e)
            }
        }
    }

    /// The golden `key` under `root`, if it is built (a golden found by its key alone: its
    /// recipe is not checked). Its database is `dbname`, its binaries `env`'s.
    pub fn ready(root: &Root, env: &Resolved, key: &str, dbname: &str) -> Option<BuiltGolden> {
        let dir = root.golden_dir().join(key);
        let ready = dir.join("READY").is_file() && dir.join("data/global/pg_control").exists();
        let templates = match std::fs::read_to_string(dir.join(TEMPLATES)) {
            Ok(text) => text.lines().map(str::to_string).collect(),
            Err(_) => vec![dbname.to_string()],
        };
        ready.then(|| BuiltGolden {
            dbname: dbname.to_string(),
            templates,
            data_dir: dir.join("data"),
            root: root.clone(),
            env: env.clone(),
            lock_path: lock_path(&dir),
        })
    }

    /// `<root>/golden/<key>/`: the golden's directory.
    pub fn dir(&self) -> &Path {
        self.data_dir.parent().unwrap_or(&self.data_dir)
    }

    /// The golden's key: its directory's name under `<root>/golden`.
    pub fn key(&self) -> String {
        self.dir()
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The shared lock on the golden, which keeps a rebuild from replacing it while held.
    pub fn lock_shared(&self) -> Result<FileLock> {
        FileLock::shared(&self.lock_path, Duration::from_secs(1), || {
            eprintln!("pgclone: waiting for golden {:?} to be built", self.dbname)
        })
    }

    /// The shared lock, unless a rebuild holds the golden now.
    pub fn try_lock_shared(&self) -> Result<Option<FileLock>> {
        FileLock::try_shared(&self.lock_path)
    }

    /// Clones the golden into `target` (a shared lock keeps a rebuild from removing it meanwhile).
    pub fn copy_to(&self, target: &Path) -> Result<CloneReport> {
        let _shared = self.lock_shared()?;
        // Test clones are disposable: no flush (a host crash loses them anyway).
        let options = CloneOptions::new().allow_copy(true).no_sync(true);
        clone_stopped(&self.data_dir, target, &options, self.env.run_as.clone())
    }
}

/// The base every other golden starts from, found or built as `config` says.
async fn ensure_base(config: &Config) -> Result<Arc<BuiltGolden>> {
    let (prepared, base) = (prepare(config)?, Golden::empty());
    let recipe = prepared.recipes.resolve(&base)?;
    ensure_resolved(&base, recipe, &prepared, config, None).await
}

/// The golden for `golden`'s recipe (`recipe`, read already, with the store `prepared`): found
/// in this process's memory, on disk, or built now, as `config` (the caller's, read once) says.
/// `expected`: the key it must have (a keeper's, the golden it was started to serve), checked
/// before anything is built.
pub(crate) async fn ensure_resolved(
    golden: &Golden,
    recipe: recipe::Recipe,
    prepared: &Prepared,
    config: &Config,
    expected: Option<&str>,
) -> Result<Arc<BuiltGolden>> {
    check_serves(expected, &recipe.key)?;
    let plan = Plan {
        name: golden.name.clone(),
        key: recipe.key,
        databases: vec![(golden.name.clone(), recipe.steps)],
        settings: golden.settings.clone(),
        is_base: is_base(golden),
    };
    built_once(plan, prepared, config).await
}

/// The library of `members` (each a recipe's key and its database's name, with the recipe) under
/// `key`: found in this process's memory, on disk, or built now (`harness/library.rs`).
pub(crate) async fn ensure_library_built(
    key: String,
    members: Vec<(String, recipe::Recipe)>,
    prepared: &Prepared,
    config: &Config,
) -> Result<Arc<BuiltGolden>> {
    let plan = Plan {
        name: "library".to_string(),
        key,
        databases: members
            .into_iter()
            .map(|(database, recipe)| (database, recipe.steps))
            .collect(),
        settings: Vec::new(),
        is_base: false,
    };
    built_once(plan, prepared, config).await
}

/// A keeper (`expected`: the key it was started to serve) must not build another golden: a
/// test whose recipe changed since it was recorded (`ahead.rs`) stops before anything is built.
pub(crate) fn check_serves(expected: Option<&str>, key: &str) -> Result<()> {
    match expected.filter(|wanted| *wanted != key) {
        Some(wanted) => Err(Error::new(
            ErrorKind::InvalidConfig,
            format!("asked to serve golden {wanted}, but this test uses {key}"),
        )),
        None => Ok(()),
    }
}

/// What a process needs to find or build goldens: the store, and what reads recipes.
pub(crate) struct Prepared {
    pub root: Root,
    pub recipes: Recipes,
}

/// What reading a recipe needs: the binaries that build it, and where relative paths start.
pub(crate) struct Recipes {
    pub env: Resolved,
    pub base: PathBuf,
}

impl Recipes {
    /// Finds the binaries, as `config` says; opens nothing on disk.
    pub(crate) fn find(config: &Config) -> Result<Recipes> {
        let env = ServerOptions::new().resolve(config)?;
        let base = config.recipe_base()?;
        Ok(Recipes { env, base })
    }

    /// Reads `golden`'s files and computes its key.
    pub(crate) fn resolve(&self, golden: &Golden) -> Result<recipe::Recipe> {
        recipe::resolve(golden, BuiltWith::Binaries(&self.env.binaries), &self.base)
    }
}

/// Opens the store and finds the binaries, as `config` says.
pub(crate) fn prepare(config: &Config) -> Result<Prepared> {
    let run_as = RunAs::for_current_user(config.run_as.as_deref())?;
    let root = Root::open(None, config, run_as.as_ref())?;
    // Under nextest, the binaries the run's first process found (a search each costs).
    let binaries = crate::harness::shared::binaries(config, &root)?;
    let env = ServerOptions::new().binaries(binaries).resolve(config)?;
    let base = config.recipe_base()?;
    Ok(Prepared {
        root,
        recipes: Recipes { env, base },
    })
}

/// What a build puts into its new cluster.
struct Plan {
    /// The golden's name, for messages and `builds.log` (`library` for a library).
    name: String,
    key: String,
    /// Each database made, with the steps applied in it, in order. The first is the golden's
    /// `dbname`; each is a template tests' databases are copied from.
    databases: Vec<(String, Vec<Step>)>,
    settings: Vec<(String, String)>,
    /// `initdb`'s cluster with nothing in it, which every other build starts from.
    is_base: bool,
}

/// The golden `plan` describes, built at most once per process whatever the number of threads
/// asking.
async fn built_once(plan: Plan, prepared: &Prepared, config: &Config) -> Result<Arc<BuiltGolden>> {
    prepared.root.reap_once_per_process();
    type Cells = Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Arc<BuiltGolden>>>>>;
    static BUILT: OnceLock<Cells> = OnceLock::new();
    let cell = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(format!(
            "{}\0{}\0{}",
            prepared.root.path().display(),
            plan.name,
            plan.key
        ))
        .or_default()
        .clone();
    let built = cell
        .get_or_try_init(|| {
            let (root, env) = (prepared.root.clone(), prepared.recipes.env.clone());
            Box::pin(build_or_reuse(plan, root, env, config))
        })
        .await?;
    Ok(built.clone())
}

/// The keys of `golden` and of the base it starts from, as a build would compute them (the
/// binaries are found, nothing is built).
pub(crate) fn keys_of(golden: &Golden, recipes: &Recipes) -> Result<[String; 2]> {
    let key = |golden: &Golden| recipes.resolve(golden).map(|r| r.key);
    Ok([key(golden)?, key(&Golden::empty())?])
}

/// Whether `golden` is the starting point of every other golden: `initdb`'s cluster with the
/// test settings and nothing else, built once per binaries and cached like any golden.
fn is_base(golden: &Golden) -> bool {
    golden.name == "postgres"
        && golden.ingredients.is_empty()
        && golden.settings.is_empty()
        && golden.version.is_none()
}

/// A golden nobody cloned for this long is removed by the next build (of any recipe).
pub(crate) const UNUSED_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

async fn build_or_reuse(
    plan: Plan,
    root: Root,
    env: Resolved,
    config: &Config,
) -> Result<Arc<BuiltGolden>> {
    let dir = root.golden_dir().join(&plan.key);
    let run = match &config.run_id {
        Some(id) => format!("nextest run {id}"),
        None => format!("process {}", ProcessId::current()?),
    };
    let templates: Vec<String> = plan.databases.iter().map(|(db, _)| db.clone()).collect();
    let built = Arc::new(BuiltGolden {
        dbname: templates
            .first()
            .cloned()
            .unwrap_or_else(|| plan.name.clone()),
        templates,
        data_dir: dir.join("data"),
        root,
        env,
        lock_path: lock_path(&dir),
    });
    // Marked used before it is looked at: a removal of unused goldens that checks the mark
    // after taking the golden's lock then leaves it alone.
    mark_used(&dir);
    if is_ready(&dir, config.rebuild, &run) {
        return Ok(built);
    }

    let (lock_path, name) = (built.lock_path.clone(), plan.name.clone());
    let _lock = blocking(move || {
        FileLock::exclusive(&lock_path, Duration::from_secs(1), || {
            eprintln!("pgclone: waiting for another process to build golden {name:?}")
        })
    })
    .await?;
    if is_ready(&dir, config.rebuild, &run) {
        return Ok(built); // built by the process we waited for
    }
    // Other goldens start from a copy of the base instead of running initdb (a second or more
    // each): a suite's recipes (one per fixture set) cost one initdb, not one each.
    let base = match plan.is_base {
        true => None,
        false => Some(ensure_base(config).await?),
    };
    build(plan, &built, base, &dir, &run).await?;
    remove_unused_goldens(&built.root, &dir);
    Ok(built)
}

/// A library's list of its databases, a line each, in its directory.
const TEMPLATES: &str = "TEMPLATES";

/// `<root>/golden/<key>.lock` for the golden in `<root>/golden/<key>`.
fn lock_path(dir: &Path) -> PathBuf {
    dir.with_extension("lock")
}

/// Whether `dir` holds a finished golden usable now (with `PGCLONE_REBUILD`, only one built
/// in this run).
fn is_ready(dir: &Path, rebuild: bool, run: &str) -> bool {
    let Ok(ready) = std::fs::read_to_string(dir.join("READY")) else {
        return false;
    };
    dir.join("data/global/pg_control").exists() && (!rebuild || ready.lines().any(|l| l == run))
}

async fn build(
    plan: Plan,
    built: &BuiltGolden,
    base: Option<Arc<BuiltGolden>>,
    dir: &Path,
    run: &str,
) -> Result<()> {
    let started = Instant::now();
    let (name, env) = (plan.name.clone(), &built.env);
    eprintln!("pgclone: building golden {name:?} in {}", dir.display());
    // A new directory per attempt: what a killed build left (even a process still writing
    // into it) is never in the way, and the reaper removes it once its owner is gone.
    let building = built.root.new_clone_dir(env.run_as.as_ref())?;

    let (data, log) = (building.join("data"), building.join("postgres.log"));
    let result = async {
        let (env2, data2, log2, settings) = (env.clone(), data.clone(), log.clone(), plan.settings);
        match base {
            Some(base) => {
                blocking(move || {
                    base.copy_to(&data2)?;
                    data_dir::add_settings(&env2, &data2, &settings)
                })
                .await?
            }
            None => {
                let password = data_dir::new_password()?;
                blocking(move || data_dir::create(&env2, &data2, &log2, &password, &settings))
                    .await?
            }
        }
        let (env2, data2, log2) = (env.clone(), data.clone(), log.clone());
        let server = blocking(move || {
            Server::start_with(&StartSpec {
                env: &env2,
                options: &build_options(),
                data_dir: &data2,
                log_path: &log2,
            })
        })
        .await?;
        let applied = create_and_apply(&server, plan.databases).await;
        let stopped = blocking(move || server.stop()).await;
        applied.and(stopped)
    }
    .await;
    // A library names its databases; a recipe's golden has its one, `dbname`.
    let listed = match built.templates.len() {
        1 => Ok(()),
        _ => std::fs::write(building.join(TEMPLATES), built.templates.join("\n") + "\n")
            .doing("write", &building.join(TEMPLATES)),
    };
    let moved = result
        .and(listed)
        .and_then(|()| sync_file_system(&building)) // later reflinks need no write-back
        .and_then(|()| move_into_place(&building, dir, run));
    if let Err(e) = moved {
        let _ = root::remove_clone_dir(&building); // a failed build leaves nothing usable
        return Err(e);
    }
    record_build(dir, &name, started.elapsed());
    eprintln!(
        "pgclone: built golden {name:?} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// How the building server runs. Its checkpoints keep no spare WAL: the golden then holds one
/// WAL segment instead of up to `max_wal_size` of them (a 400 MB load left 500 MB), which every
/// clone would carry and, without reflinks, copy.
fn build_options() -> ServerOptions {
    ServerOptions::new()
        .setting("min_wal_size", "32MB")
        .setting("max_wal_size", "32MB")
}

/// Creates each database (unless it is `postgres`) on the building server and applies its
/// steps there, then checkpoints so that the golden's files hold everything.
async fn create_and_apply(server: &Server, databases: Vec<(String, Vec<Step>)>) -> Result<()> {
    let params = |db: &str| {
        ConnectParams::socket(
            server.socket_dir(),
            server.port(),
            SUPERUSER,
            db,
            "pgclone build",
        )
    };
    // One session in `postgres` for the whole build: it makes the databases and checkpoints.
    let admin = connect_params(&params("postgres")).await?;
    for (name, steps) in databases {
        if name != "postgres" {
            let sql = format!("create database {}", quote_ident(&name));
            admin.batch_execute(&sql).await.map_err(|e| {
                Error::new(ErrorKind::Golden, format!("golden {name:?}: {sql}")).with_source(e)
            })?;
        }
        apply(&params(&name), &name, steps).await?;
    }
    admin
        .batch_execute("checkpoint")
        .await
        .map_err(|e| Error::new(ErrorKind::Golden, "golden: checkpoint").with_source(e))
}

/// Moves a finished build to `dir` (replacing an older build of the same recipe: we hold its
/// exclusive lock, so nobody clones it now), then writes `READY`, which makes it a golden.
fn move_into_place(building: &Path, dir: &Path, run: &str) -> Result<()> {
    let _ = std::fs::remove_file(building.join(root::OWNER_FILE)); // a golden has no owner
    if dir.exists() {
        let old = dir.with_extension(format!("old-{}", std::process::id()));
        std::fs::rename(dir, &old).doing("move aside", dir)?;
        let _ = std::fs::remove_dir_all(&old);
    }
    std::fs::rename(building, dir).doing("move into place", dir)?;
    let ready = dir.join("READY");
    std::fs::write(dir.join("READY.tmp"), format!("{run}\n")).doing("write", &ready)?;
    std::fs::rename(dir.join("READY.tmp"), &ready).doing("write", &ready)
}

/// Records that `dir` was used now (the modification time of its `READY`).
fn mark_used(dir: &Path) {
    let ready = dir.join("READY");
    if let Ok(file) = std::fs::File::options().append(true).open(&ready) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// Removes the goldens (and the debris of builds that died) that nobody used for
/// [`UNUSED_FOR`], each only if its exclusive lock is free: no process is cloning it; and the
/// clusters template servers left for goldens that are gone.
pub(crate) fn remove_unused_goldens(root: &Root, current: &Path) -> Vec<PathBuf> {
    let golden_dir = root.golden_dir();
    let entries = std::fs::read_dir(root.warm_dir())
        .into_iter()
        .flatten()
        .flatten();
    for key in entries.map(|entry| entry.file_name()) {
        if !golden_dir.join(&key).exists() {
            crate::harness::warm::remove_parked(root, &key.to_string_lossy());
        }
    }
    let Ok(entries) = std::fs::read_dir(&golden_dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let old = |meta: std::fs::Metadata| {
            meta.modified()
                .is_ok_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() > UNUSED_FOR)
        };
        // A library marked failed that long ago: its members have changed since, most likely.
        if path.extension().is_some_and(|e| e == "failed") && entry.metadata().is_ok_and(old) {
            let _ = std::fs::remove_file(&path);
        }
        if !is_dir || path == current {
            continue;
        }
        let unused = || {
            std::fs::metadata(path.join("READY"))
                .or_else(|_| entry.metadata())
                .is_ok_and(old)
        };
        if !unused() {
            continue;
        }
        let Ok(Some(_lock)) = FileLock::try_exclusive(&lock_path(&path)) else {
            continue;
        };
        if !unused() {
            continue; // a process marked it used meanwhile
        }
        if std::fs::remove_dir_all(&path).is_ok() {
            let _ = std::fs::remove_file(lock_path(&path));
            if let Some(key) = path.file_name() {
                crate::harness::warm::remove_parked(root, &key.to_string_lossy());
                crate::harness::shared::remove_files(root, &key.to_string_lossy());
            }
            removed.push(path);
        }
    }
    removed
}

fn record_build(dir: &Path, name: &str, took: Duration) {
    let log = dir.parent().unwrap_or(dir).join("builds.log");
    let when = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let line = format!(
        "{when} {name} {} pid {} {} ms\n",
        dir.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        took.as_millis()
    );
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
    {
        let _ = file.write_all(line.as_bytes());
    }
}

fn sync_file_system(dir: &Path) -> Result<()> {
    let file = std::fs::File::open(dir).doing("open", dir)?;
    crate::sys::sync_file_system(&file).doing("sync the file system of", dir)
}

/// Runs blocking work (process spawning, file copies) off the async runtime's threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::new(ErrorKind::Io, "a pgclone worker thread failed").with_source(e))?
}
