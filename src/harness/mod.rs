//! What `#[pgclone::test]` expands to calls: build a runtime, give the test its `TestDb`, run
//! it, and afterwards (passed or failed) tear the copy down or keep it (`PGCLONE_KEEP`).
//! Not a public API: the macro's expansion is its only caller.

pub(crate) mod golden;
pub(crate) mod pool;
pub(crate) mod template;
pub(crate) mod test_db;

use std::fmt::Debug;
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::config::Config;
use crate::harness::golden::Golden;
use crate::harness::test_db::{finish, HarnessSlot, Mode, TestDb};

/// How a test asked to be run.
#[derive(Debug, Clone, Copy)]
pub struct TestSpec {
    /// `module::path::test_name`, for messages.
    pub name: &'static str,
    /// The recipe (`None`: an empty cluster).
    pub golden: Option<fn() -> Golden>,
    /// `mode = "database"` or the default, cluster mode.
    pub mode: Mode,
    /// `flavor = "multi_thread"`; async tests default to a current-thread runtime.
    pub multi_thread: bool,
    /// `worker_threads = N` (multi-thread flavor only).
    pub worker_threads: Option<usize>,
    /// `#[should_panic]`: a panic is the test passing.
    pub should_panic: bool,
}

/// What a test function may return: `()` or `Result<(), E: Debug>`.
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

/// Runs an `async fn test(db: TestDb)`.
pub fn run_async<F, Fut>(spec: TestSpec, test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future,
    Fut::Output: TestOutcome,
{
    let runtime = runtime(spec.multi_thread, spec.worker_threads);
    run(spec, &runtime, |db| {
        runtime.block_on(test(db)).into_result()
    });
}

/// Runs a `fn test(db: TestDb)`. Its client's connection runs on a background runtime thread,
/// so the test may use it from blocking code through that runtime's handle.
pub fn run_sync<F, R>(spec: TestSpec, test: F)
where
    F: FnOnce(TestDb) -> R,
    R: TestOutcome,
{
    let runtime = runtime(true, Some(1));
    run(spec, &runtime, |db| {
        let _entered = runtime.enter();
        test(db).into_result()
    });
}

fn run(
    spec: TestSpec,
    runtime: &tokio::runtime::Runtime,
    body: impl FnOnce(TestDb) -> Result<(), String>,
) {
    let golden = spec.golden.map_or_else(Golden::empty, |recipe| recipe());
    // Read once per test: the builder and the teardown below take it from here.
    let config = Config::from_env();
    let keep = config
        .as_ref()
        .map(|config| config.keep)
        .unwrap_or_default();
    let slot = HarnessSlot::default();
    let db = config
        .and_then(|config| {
            runtime.block_on(
                TestDb::builder(&golden)
                    .mode(spec.mode)
                    .harness(Arc::clone(&slot))
                    .config(config)
                    .start(),
            )
        })
        .unwrap_or_else(|e| panic!("pgclone: no database for test {}: {e}", spec.name));
    let outcome = catch_unwind(AssertUnwindSafe(|| body(db)));
    let failed = match &outcome {
        Err(_) => !spec.should_panic,
        Ok(result) => result.is_err(),
    };
    let leftover = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(owned) = leftover {
        finish(owned, failed, keep);
    }
    match outcome {
        Err(panic) => resume_unwind(panic),
        Ok(Err(message)) => panic!("{message}"),
        Ok(Ok(())) => {}
    }
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
