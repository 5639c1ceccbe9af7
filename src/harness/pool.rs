//! Pre-warmed copies: a background thread keeps a few fresh copies of a golden ready (started
//! clones in cluster mode, created databases in database mode), already connected, so that a
//! test takes one in microseconds. Each copy is handed out once; the pool refills behind it; at
//! exit the ones never handed out are torn down.
//!
//! The clients' connections run on the pool's own runtime, which lives as long as the process, so
//! they work from any test's runtime.
//!
//! Off unless asked for (`PGCLONE_POOL=n`, `TestDbBuilder::pool`): the copies it makes are the
//! copies the tests would make, only earlier, plus a few never used, so it pays only where tests
//! leave cores idle (waiting on I/O or timers). Measured on `tests/app` (ten tests doing real
//! work, 2 cores, XFS): 2 ready copies made the suite 5-7% slower in both modes; under nextest a
//! process runs one test and the copies are wasted; on ext4 every copy copies every byte.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use crate::harness::golden::BuiltGolden;
use crate::harness::test_db::{Mode, TestDb};

struct Pool {
    golden: Arc<BuiltGolden>,
    /// The golden's database its copies are of (a library has several).
    template: String,
    mode: Mode,
    size: usize,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    ready: VecDeque<TestDb>,
    closing: bool,
    /// The filler is making a copy (exit waits for it).
    busy: bool,
}

type Pools = Mutex<HashMap<(PathBuf, String, Mode), Arc<Pool>>>;

fn pools() -> &'static Pools {
    static POOLS: OnceLock<Pools> = OnceLock::new();
    POOLS.get_or_init(|| {
        crate::exit::at_exit(close_all);
        Default::default()
    })
}

/// The runtime the pooled clients' connections run on.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pgclone-pool")
            .enable_all()
            .build()
            .expect("build the pgclone pool's runtime")
    })
}

/// A ready copy of `golden`'s database `template` in `mode`, if the pool (started on first use,
/// `size` copies) has one.
pub(crate) fn take(
    golden: &Arc<BuiltGolden>,
    template: &str,
    mode: Mode,
    size: usize,
) -> Option<TestDb> {
    let pool = pools()
        .lock()
        .unwrap()
        .entry((golden.data_dir.clone(), template.to_string(), mode))
        .or_insert_with(|| Pool::start(golden.clone(), template.to_string(), mode, size))
        .clone();
    let taken = pool.state.lock().unwrap().ready.pop_front();
    pool.changed.notify_all();
    taken
}

impl Pool {
    fn start(golden: Arc<BuiltGolden>, template: String, mode: Mode, size: usize) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            golden,
            template,
            mode,
            size,
            state: Mutex::default(),
            changed: Condvar::new(),
        });
        eprintln!(
            "pgclone: keeping {size} ready {} of golden {:?} (pool: PGCLONE_POOL or TestDbBuilder::pool)",
            match mode {
                Mode::Cluster => "clusters",
                Mode::Database => "databases",
            },
            pool.template
        );
        let filler = pool.clone();
        let _ = std::thread::Builder::new()
            .name("pgclone-pool-filler".into())
            .spawn(move || filler.fill());
        pool
    }

    /// Keeps `size` copies ready until the process exits.
    fn fill(&self) {
        loop {
            {
                let mut state = self.state.lock().unwrap();
                while state.ready.len() >= self.size && !state.closing {
                    state = self.changed.wait(state).unwrap();
                }
                if state.closing {
                    return;
                }
                state.busy = true;
            }
            let made = runtime().block_on(async {
                let (golden, template) = (self.golden.clone(), self.template.clone());
                let db = TestDb::fresh(golden, template, self.mode, true, None, false).await?;
                // A new backend's first query loads its caches: do it now, not in the test.
                let _ = db.client().simple_query("select 1").await;
                Ok::<_, crate::error::Error>(db)
            });
            let mut state = self.state.lock().unwrap();
            state.busy = false;
            // Whatever happened, someone may wait for this copy (a closing pool, a test).
            self.changed.notify_all();
            match made {
                Ok(db) if !state.closing => state.ready.push_back(db),
                Ok(db) => {
                    drop(state);
                    db.forget_at_exit();
                    return;
                }
                Err(_) => {
                    // Tests acquiring directly will see the error; try again later, unless
                    // the process is closing.
                    let (state, _) = self
                        .changed
                        .wait_timeout_while(state, Duration::from_secs(1), |s| !s.closing)
                        .unwrap();
                    if state.closing {
                        return;
                    }
                }
            }
        }
    }

    /// At exit: stops the filler (waiting for the copy it is making, which its notification
    /// ends) and releases the copies never handed out without waiting for them (see
    /// [`TestDb::forget_at_exit`]).
    fn close(&self) {
        let mut state = self.state.lock().unwrap();
        state.closing = true;
        self.changed.notify_all();
        while state.busy {
            state = self.changed.wait(state).unwrap();
        }
        let ready: Vec<TestDb> = state.ready.drain(..).collect();
        drop(state);
        for db in ready {
            db.forget_at_exit();
        }
    }
}

fn close_all() {
    let all: Vec<Arc<Pool>> = pools().lock().unwrap().values().cloned().collect();
    for pool in all {
        pool.close();
    }
}
