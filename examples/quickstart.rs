//! The main job: build a golden cluster from `examples/migrations/`, hand out copies of it in
//! cluster mode and in database mode, fork one, and show what happened and how long each took.
//!
//! Run it with `cargo run --example quickstart` (twice: the second run reuses the cached golden).

use std::time::{Duration, Instant};

use pgclone::{Golden, Mode, TestDb};

fn app() -> Golden {
    Golden::new("quickstart")
        .migrations("examples/migrations")
        .sql("insert into plans values (3, 'team')")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let binaries = pgclone::server::PgBinaries::find()?;
    println!(
        "postgres      {} from {}",
        binaries.version(),
        binaries.bin_dir().display()
    );
    let root = pgclone::gc::pgclone_dir()?;
    let fs = pgclone::clone::probe_file_system(&root)?;
    println!(
        "pgclone dir   {} ({}, {})",
        root.display(),
        fs.fs_type,
        if fs.shares_extents() {
            "copy-on-write"
        } else {
            "no reflinks: clones copy"
        }
    );

    // The first TestDb builds the golden (or finds it cached from an earlier run).
    let (db, took) = timed(TestDb::start(&app())).await;
    let db = db?;
    println!(
        "\ncluster mode  {:>8.1} ms  first copy, golden included ({})",
        ms(took),
        db.method()
    );
    let (db2, took) = timed(TestDb::start(&app())).await;
    let db2 = db2?;
    println!(
        "cluster mode  {:>8.1} ms  next copy ({}): {}",
        ms(took),
        db2.method(),
        db2.data_dir().display()
    );
    let (n, took) = timed(db2.client().query_one("select count(*) from users", &[])).await;
    println!(
        "first query   {:>8.1} ms  {} users in the fixture",
        ms(took),
        n?.get::<_, i64>(0)
    );

    let (database, took) = timed(TestDb::builder(&app()).mode(Mode::Database).start()).await;
    let database = database?;
    println!(
        "database mode {:>8.1} ms  first database, template server included",
        ms(took)
    );
    let (database2, took) = timed(TestDb::builder(&app()).mode(Mode::Database).start()).await;
    let database2 = database2?;
    println!(
        "database mode {:>8.1} ms  next database {} ({})",
        ms(took),
        database2.dbname(),
        database2.method()
    );

    db2.client()
        .execute("insert into plans values (4, 'before fork')", &[])
        .await?;
    let (fork, took) = timed(db2.fork()).await;
    let fork = fork?;
    db2.client()
        .execute("insert into plans values (5, 'after fork')", &[])
        .await?;
    let in_fork: i64 = fork
        .client()
        .query_one("select count(*) from plans where id >= 4", &[])
        .await?
        .get(0);
    println!("fork          {:>8.1} ms  online clone through backup recovery; sees {in_fork} of the 2 later rows", ms(took));
    println!("\nconnect       psql '{}'", db2.connection_string());

    let started = Instant::now();
    drop((db, db2, fork, database, database2));
    println!(
        "teardown      {:>8.1} ms  5 copies (files removed in the background)",
        ms(started.elapsed())
    );
    Ok(())
}

async fn timed<T>(work: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let value = work.await;
    (value, started.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
