//! What `#[pgclone::test]` expands to calls: build a runtime, make the test's copy and its
//! argument (`args/`: a `TestDb`, a sqlx pool, ...), run it, and afterwards (passed or failed)
//! close the argument, then tear the copy down or keep it (`PGCLONE_KEEP`).
//! Not a public API: the macro's expansion is its only caller.

pub(crate) mod ahead;
pub(crate) mod args;
pub(crate) mod golden;
pub(crate) mod library;
pub(crate) mod pool;
pub(crate) mod remote;
pub(crate) mod shared;
pub(crate) mod template;
pub(crate) mod test_db;
pub(crate) mod warm;

use std::fmt::Debug;
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::config::Config;
use crate::harness::args::TestArg;
use crate::harness::golden::{Golden, SqlxMigrator};
use crate::harness::test_db::{finish, HarnessSlot, Mode, Owned, TestDb};

/// How a test asked to be run.
#[derive(Debug, Clone, Copy)]
pub struct TestSpec {
    /// `module::path::test_name`, for messages.
    pub name: &'static str,
    /// The recipe (`None`: an empty cluster).
    pub golden: Option<fn() -> Golden>,
    /// `mode = ...`; `None`: `PGCLONE_MODE`, else the argument type's [`TestArg::MODE`].
    pub mode: Option<Mode>,
    /// `#[sqlx::test]`'s migration arguments.
    pub migrations: Migrations,
    /// `fixtures(...)`, in order, applied after the migrations (or the golden's recipe).
    pub fixtures: &'static [Fixture],
    /// `flavor = "multi_thread"`; async tests default to a current-thread runtime.
    pub multi_thread: bool,
    /// `worker_threads = N` (multi-thread flavor only).
    pub worker_threads: Option<usize>,
    /// `#[should_panic]`: a panic is the test passing.
    pub should_panic: bool,
}

/// The migrations a test asked for, as `#[sqlx::test]` reads its arguments.
#[derive(Debug, Clone, Copy)]
pub enum Migrations {
    /// `migrations = false`, a `golden`, or a test without an argument.
    None,
    /// No argument: this directory (the crate's `migrations/`) in sqlx's format, if it exists
    /// and the test takes a sqlx type ([`TestArg::SQLX`]).
    IfExists(&'static str),
    /// `migrations = "dir"`: this directory in sqlx's format.
    Dir(&'static str),
    /// `migrator = "path"`.
    Migrator(&'static dyn SqlxMigrator),
}

/// A fixture: its path as the test named it, and its SQL, read by the compiler.
#[derive(Debug, Clone, Copy)]
pub struct Fixture {
    /// `fixtures/users.sql`, relative to the test's source file.
    pub path: &'static str,
    /// The file's text.
    pub sql: &'static str,
}

/// `migrator = "path"` as the spec holds it; the bound says "not a Migrator" when it is not.
pub fn sqlx_migrator<M: SqlxMigrator>(migrator: &'static M) -> &'static dyn SqlxMigrator {
    migrator
}

impl std::fmt::Debug for dyn SqlxMigrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqlxMigrator")
    }
}

/// The recipe a test asked for: its golden (or an empty cluster), its migrations, then its
/// fixtures. Each distinct result is its own golden, keyed by content.
pub(crate) fn recipe(spec: &TestSpec, sqlx_argument: bool) -> Golden {
    let mut golden = spec.golden.map_or_else(Golden::empty, |recipe| recipe());
    golden = match spec.migrations {
        Migrations::None => golden,
        Migrations::IfExists(_) if !sqlx_argument => golden,
        Migrations::IfExists(dir) if !std::path::Path::new(dir).is_dir() => golden,
        Migrations::IfExists(dir) | Migrations::Dir(dir) => golden.sqlx_migrations(dir),
        Migrations::Migrator(migrator) => golden.sqlx_migrator_dyn(migrator),
    };
    spec.fixtures.iter().fold(golden, |golden, fixture| {
        golden.fixture(fixture.path, fixture.sql)
    })
}

/// libtest's name of a test: its path without the crate's name (`module_path!()` starts with it).
fn libtest_name(path: &'static str) -> &'static str {
    path.split_once("::").map_or(path, |(_, rest)| rest)
}

/// What a test function may return: `()` or `Result<(), E: Debug>`.
#[diagnostic::on_unimplemented(
    message = "a #[pgclone::test] function returns `()` or `Result<(), E>` with `E: Debug`, not `{Self}`"
)]
pub trait TestOutcome {
    /// `Err` with the message to fail the test with.
    fn into_result(self) -> Result<(), String>;
}

impl TestOutcome for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Debug> TestOutcome for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| format!("Error: {e:?}"))
    }
}

/// An async test function, as the macro hands it over: a fn pointer taking no argument, one
/// [`TestArg`], or two whose pair is one (sqlx's `PgPoolOptions, PgConnectOptions`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an async function #[pgclone::test] can run",
    note = "it takes no argument, one argument pgclone knows (see `pgclone::TestArg`), or sqlx's `PgPoolOptions, PgConnectOptions`, and returns `()` or `Result<(), E: Debug>`"
)]
pub trait AsyncTestFn {
    /// Runs it as the test `spec` describes.
    fn run_test(self, spec: TestSpec);
}

/// A sync test function: a fn pointer, with the arguments of [`AsyncTestFn`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a function #[pgclone::test] can run",
    note = "it takes no argument, one argument pgclone knows (see `pgclone::TestArg`), or sqlx's `PgPoolOptions, PgConnectOptions`, and returns `()` or `Result<(), E: Debug>`"
)]
pub trait SyncTestFn {
    /// Runs it as the test `spec` describes.
    fn run_test(self, spec: TestSpec);
}

impl<Fut> AsyncTestFn for fn() -> Fut
where
    Fut: Future,
    Fut::Output: TestOutcome,
{
    fn run_test(self, spec: TestSpec) {
        run_async_with(spec, |()| self());
    }
}

impl<A, Fut> AsyncTestFn for fn(A) -> Fut
where
    A: TestArg,
    Fut: Future,
    Fut::Output: TestOutcome,
{
    fn run_test(self, spec: TestSpec) {
        run_async_with(spec, self);
    }
}

impl<A, B, Fut> AsyncTestFn for fn(A, B) -> Fut
where
    (A, B): TestArg,
    Fut: Future,
    Fut::Output: TestOutcome,
{
    fn run_test(self, spec: TestSpec) {
        run_async_with(spec, |(a, b)| self(a, b));
    }
}

impl<R: TestOutcome> SyncTestFn for fn() -> R {
    fn run_test(self, spec: TestSpec) {
        run_sync_with(spec, |()| self());
    }
}

impl<A: TestArg, R: TestOutcome> SyncTestFn for fn(A) -> R {
    fn run_test(self, spec: TestSpec) {
        run_sync_with(spec, self);
    }
}

impl<A, B, R: TestOutcome> SyncTestFn for fn(A, B) -> R
where
    (A, B): TestArg,
{
    fn run_test(self, spec: TestSpec) {
        run_sync_with(spec, |(a, b)| self(a, b));
    }
}

/// Runs an async test function (`let f: fn(_) -> _ = test;`): on a runtime of its own, with
/// its argument made from a copy of the golden.
pub fn run_async<F: AsyncTestFn>(spec: TestSpec, test: F) {
    test.run_test(spec);
}

/// Runs a sync test function. Its argument's connections run on a background runtime thread,
/// so the test may use them from blocking code through that runtime's handle.
pub fn run_sync<F: SyncTestFn>(spec: TestSpec, test: F) {
    test.run_test(spec);
}

fn run_async_with<A: TestArg, Fut>(spec: TestSpec, test: impl FnOnce(A) -> Fut)
where
    Fut: Future,
    Fut::Output: TestOutcome,
{
    let runtime = runtime(spec.multi_thread, spec.worker_threads);
    run(spec, &runtime, |arg| {
        runtime.block_on(test(arg)).into_result()
    });
}

fn run_sync_with<A: TestArg, R: TestOutcome>(spec: TestSpec, test: impl FnOnce(A) -> R) {
    let runtime = runtime(true, Some(1));
    run(spec, &runtime, |arg| {
        let _entered = runtime.enter();
        test(arg).into_result()
    });
}

fn run<A: TestArg>(
    spec: TestSpec,
    runtime: &tokio::runtime::Runtime,
    body: impl FnOnce(A) -> Result<(), String>,
) {
    let golden = recipe(&spec, A::SQLX);
    // Read once per test: the builder and the teardown below take it from here.
    let config = Config::from_env();
    if let Ok(Config {
        golden_keys: Some(file),
        ..
    }) = &config
    {
        // `pgclone golden key`: say which golden this test uses, build nothing, run nothing.
        let config = config.as_ref().unwrap();
        let mode = spec.mode.or(config.mode).unwrap_or(A::MODE);
        if let Err(e) = golden::keys::record(&golden, mode, config, file) {
            panic!("pgclone: no golden key for test {}: {e}", spec.name);
        }
        return;
    }
    let keep = config
        .as_ref()
        .map(|config| config.keep)
        .unwrap_or_default();
    let asked = spec
        .mode
        .or(config.as_ref().ok().and_then(|config| config.mode));
    let slot = HarnessSlot::default();
    let made = config.and_then(|config| {
        runtime.block_on(async {
            let mut builder = TestDb::builder(&golden)
                .default_mode(A::MODE)
                .harness(Arc::clone(&slot))
                .test_name(libtest_name(spec.name))
                .config(config);
            if let Some(mode) = asked {
                builder = builder.mode(mode);
            }
            if !A::CLIENT {
                builder = builder.without_client();
            }
            A::make(builder.start().await?).await
        })
    });
    let (arg, held) = match made {
        Ok(made) => made,
        Err(e) => {
            // A copy made before its argument failed is back in the slot: the test failed.
            if let Some(owned) = take(&slot) {
                finish(owned, true, keep);
            }
            panic!("pgclone: no database for test {}: {e}", spec.name)
        }
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| body(arg)));
    // What the argument opened ends before the copy (a pool's sessions before DROP DATABASE);
    // the copy, dropped, lands in the slot.
    runtime.block_on(A::end(held));
    let failed = match &outcome {
        Err(_) => !spec.should_panic,
        Ok(result) => result.is_err(),
    };
    if let Some(owned) = take(&slot) {
        finish(owned, failed, keep);
    }
    match outcome {
        Err(panic) => resume_unwind(panic),
        Ok(Err(message)) => panic!("{message}"),
        Ok(Ok(())) => {}
    }
}

/// What a dropped `TestDb` left in the slot.
fn take(slot: &HarnessSlot) -> Option<Owned> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).take()
}

fn runtime(multi_thread: bool, workers: Option<usize>) -> tokio::runtime::Runtime {
    let mut builder = if multi_thread {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if let Some(workers) = workers {
            builder.worker_threads(workers);
        }
        builder
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder
        .enable_all()
        .build()
        .expect("build the test's tokio runtime")
}
