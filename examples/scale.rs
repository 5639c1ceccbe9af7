//! A whole suite's wall time: N tests (default 200) on a ~400 MB golden, two at a time (as
//! `cargo test` on two cores), each getting its own database, running a few queries and a write.
//! pgclone's modes beside a `CREATE DATABASE … STRATEGY WAL_LOG` template per test and the
//! sqlx::test way (a new database, the migrations and the fixture load per test).
//!
//! ```sh
//! PGCLONE_DIR=/mnt/xfs/pgclone cargo run --release --example scale -- 200 400
//! ```
//! The per-test fixture load takes seconds a test, so it runs `--slow` tests (default 4) and the
//! total is extrapolated to N, which the output says.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgclone::{
    clone::{clone_cluster, CloneOptions},
    server::{Server, ServerOptions},
    Golden, Mode, TestDb,
};

mod common;
use common::{connect, fixture_sql};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Test =
    Arc<dyn Fn(usize) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send>> + Send + Sync>;

const CONCURRENCY: usize = 2;

/// What each test does with its database: index lookups, a write, and a check that it sees its
/// own write and not another test's (test i writes row i + 1).
async fn test_body(client: &tokio_postgres::Client, i: usize) -> Result<(), Error> {
    for k in 0..5 {
        client
            .query_opt(
                "select payload from fixture where id = $1",
                &[&((i * 7 + k) as i32 + 1)],
            )
            .await?;
    }
    let (mine, neighbour) = (i as i32 + 1, i as i32 + 2);
    client
        .execute(
            "update fixture set payload = 'changed' where id = $1",
            &[&mine],
        )
        .await?;
    let read = |id: i32| async move {
        client
            .query_one("select payload from fixture where id = $1", &[&id])
            .await
            .map(|row| row.get::<_, String>(0))
    };
    assert_eq!(read(mine).await?, "changed");
    assert_ne!(
        read(neighbour).await?,
        "changed",
        "another test's write is visible"
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<u64>().ok());
    let tests = args.next().unwrap_or(200) as usize;
    let megabytes = args.next().unwrap_or(400);
    let slow = args.next().unwrap_or(4) as usize;
    let sql = fixture_sql("fixture", megabytes);
    let golden = Golden::new(format!("scale{megabytes}mb")).sql(sql.clone());
    TestDb::builder(&golden).pool(0).start().await?; // build it first: not measured
    let root = pgclone::gc::pgclone_dir()?;
    let fs = pgclone::clone::probe_file_system(&root)?.fs_type;
    println!(
        "# {tests} tests, {CONCURRENCY} at a time, {megabytes} MB golden, PostgreSQL {}, {} ({fs})",
        pgclone::server::PgBinaries::find()?.version(),
        root.display()
    );

    let mut results = Vec::new();
    for (mode, pool, name) in [
        (Mode::Cluster, 0, "pgclone cluster mode"),
        (Mode::Database, 0, "pgclone database mode"),
        (Mode::Cluster, 2, "pgclone cluster mode, pool 2"),
        (Mode::Database, 2, "pgclone database mode, pool 2"),
    ] {
        let golden = golden.clone();
        let test: Test = Arc::new(move |i| {
            let golden = golden.clone();
            Box::pin(async move {
                let db = TestDb::builder(&golden)
                    .mode(mode)
                    .pool(pool)
                    .start()
                    .await?;
                test_body(db.client(), i).await
            })
        });
        results.push((name.to_string(), run_suite(tests, test).await?, tests));
    }

    // The alternatives run on a server holding a copy of the golden.
    let golden_data =
        common::golden_data_dir(&root, golden.name()).ok_or("the golden's directory")?;
    let work = tempfile::Builder::new()
        .prefix("scale-")
        .tempdir_in(&root)?;
    if let Some(user) = pgclone::server::run_as_user()? {
        std::os::unix::fs::chown(work.path(), Some(user.uid()), Some(user.gid()))?;
    }
    let data = work.path().join("template");
    clone_cluster(&golden_data, &data, &CloneOptions::new())?;
    let server = Arc::new(Server::start(
        &data,
        &ServerOptions::new().setting("max_connections", "300"),
    )?);
    let dbname = golden.name().to_string();

    let (s, d) = (server.clone(), dbname.clone());
    let wal_log: Test = Arc::new(move |i| {
        let (server, template) = (s.clone(), d.clone());
        Box::pin(async move {
            let admin = connect(&server.connection_string("postgres")).await?;
            let db = format!("wal_log_{i}");
            admin
                .batch_execute(&format!(
                    "create database {db} template {template} strategy wal_log"
                ))
                .await?;
            test_body(&connect(&server.connection_string(&db)).await?, i).await?;
            admin
                .batch_execute(&format!("drop database {db} with (force)"))
                .await?;
            Ok(())
        })
    });
    results.push((
        "CREATE DATABASE STRATEGY WAL_LOG per test".into(),
        run_suite(tests, wal_log).await?,
        tests,
    ));

    let (s, fixture) = (server.clone(), sql.clone());
    let sqlx_style: Test = Arc::new(move |i| {
        let (server, fixture) = (s.clone(), fixture.clone());
        Box::pin(async move {
            let admin = connect(&server.connection_string("postgres")).await?;
            let db = format!("sqlx_{i}");
            admin
                .batch_execute(&format!("create database {db}"))
                .await?;
            let client = connect(&server.connection_string(&db)).await?;
            client.batch_execute(&fixture).await?;
            test_body(&client, i).await?;
            drop(client);
            admin
                .batch_execute(&format!("drop database {db} with (force)"))
                .await?;
            Ok(())
        })
    });
    results.push((
        "new database + migrations + fixture per test (sqlx::test)".into(),
        run_suite(slow.min(tests), sqlx_style).await?,
        slow.min(tests),
    ));

    let baseline = results
        .iter()
        .find(|r| r.0.starts_with("CREATE DATABASE"))
        .map(|r| per_suite(r, tests))
        .unwrap_or(1.0);
    println!(
        "{:<58} {:>12} {:>10} {:>9}",
        "approach", "suite (s)", "per test", "vs WAL_LOG"
    );
    for result in &results {
        let total = per_suite(result, tests);
        let note = if result.2 < tests {
            format!("  (measured on {} tests)", result.2)
        } else {
            String::new()
        };
        println!(
            "{:<58} {:>12.1} {:>8.1}ms {:>8.1}x{note}",
            result.0,
            total,
            1000.0 * total / tests as f64,
            baseline / total
        );
    }
    Ok(())
}

/// The suite's wall time for `tests` tests at this concurrency, in seconds, extrapolated to all.
fn per_suite(result: &(String, Duration, usize), tests: usize) -> f64 {
    result.1.as_secs_f64() * tests as f64 / result.2 as f64
}

/// Runs `tests` tests, `CONCURRENCY` at a time; the wall time.
async fn run_suite(tests: usize, test: Test) -> Result<Duration, Error> {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (next, test) = (next.clone(), test.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= tests {
                        return Ok::<_, Error>(());
                    }
                    test(i).await?;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    Ok(started.elapsed())
}
