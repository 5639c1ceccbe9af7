//! Database mode on a server given by `PGCLONE_URL`: acquire → first query per test, against
//! what `#[sqlx::test]` does per test on the same server (create a database, then run the
//! migrations and fixtures in it), with a ~10 MB and a ~400 MB fixture.
//!
//! `cargo bench --bench url_acquire [-- ITERATIONS]`. The server is started here with local
//! binaries (`PGCLONE_PG_BIN`) and a service container's durability (fsync, full-page writes and
//! synchronous commit on), reached over TCP with SCRAM as a role with CREATEDB only. Target
//! (issue: any server): pgclone ≥ 10× faster than per-test migrations at 400 MB.

use std::time::{Duration, Instant};

use pgclone::server::TempCluster;
use pgclone::{Golden, TestDb};

#[path = "../examples/common/mod.rs"]
mod common;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iterations: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10);
    let server = TempCluster::builder()
        .with(|options| {
            options
                .tcp(true)
                .setting("fsync", "on")
                .setting("full_page_writes", "on")
                .setting("synchronous_commit", "on")
        })
        .start()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let admin = common::connect(&server.connection_string()).await?;
        admin
            .batch_execute("create role bench login createdb password 'bench'")
            .await?;
        Ok::<_, tokio_postgres::Error>(())
    })?;
    let url = format!(
        "postgresql://bench:bench@127.0.0.1:{}/postgres",
        server.port()
    );
    // Read by pgclone from here on; set before any other thread exists.
    std::env::set_var("PGCLONE_URL", &url);
    println!(
        "# PostgreSQL {} by URL (fsync on), {iterations} iterations, ms",
        server.binaries().version()
    );
    println!(
        "{:<8} {:<26} {:>10} {:>10}  how",
        "fixture", "", "p50", "p95"
    );
    for megabytes in [10, 400] {
        let sql = common::fixture_sql("fixture", megabytes);
        let recipe = Golden::new("bench").sql(sql.clone());
        runtime.block_on(async {
            TestDb::start(&recipe).await?; // builds the template: not measured
            let mut pgclone = Vec::new();
            let mut method = String::new();
            for _ in 0..iterations {
                let started = Instant::now();
                let db = TestDb::start(&recipe).await?;
                db.client().simple_query("select 1").await?;
                pgclone.push(started.elapsed());
                method = db.method().to_string();
                db.close().await?;
            }
            // sqlx::test's way: a fresh database, then the migrations and fixtures in it.
            let per_test = iterations.min(if megabytes > 100 { 3 } else { iterations });
            let mut migrations = Vec::new();
            let admin = common::connect(&url).await?;
            for i in 0..per_test {
                let name = format!("sqlx_style_{i}");
                let started = Instant::now();
                admin
                    .batch_execute(&format!("create database {name}"))
                    .await?;
                let client =
                    common::connect(&url.replace("/postgres", &format!("/{name}"))).await?;
                client.batch_execute(&sql).await?;
                client.simple_query("select 1").await?;
                migrations.push(started.elapsed());
                drop(client);
                tokio::time::sleep(Duration::from_millis(50)).await;
                admin
                    .batch_execute(&format!("drop database {name} with (force)"))
                    .await?;
            }
            let (a, b) = (
                common::percentile_ms(&mut pgclone, 0.5),
                common::percentile_ms(&mut migrations, 0.5),
            );
            println!(
                "{:<8} {:<26} {:>10.1} {:>10.1}  {method}",
                format!("{megabytes} MB"),
                "pgclone",
                a,
                common::percentile_ms(&mut pgclone, 0.95)
            );
            println!(
                "{:<8} {:<26} {:>10.1} {:>10.1}  {per_test} runs; pgclone is {:.1}× faster",
                format!("{megabytes} MB"),
                "per-test migrations",
                b,
                common::percentile_ms(&mut migrations, 0.95),
                b / a
            );
            Ok::<_, Box<dyn std::error::Error>>(())
        })?;
    }
    Ok(())
}
