//! Acquire → first query, by mode, on a ~10 MB and a ~400 MB golden; and teardown (drop).
//!
//! `cargo bench --bench acquire [-- ITERATIONS]`. Where it runs is `PGCLONE_DIR`'s file system
//! (reflinks on XFS/btrfs); which PostgreSQL is `PGCLONE_PG_BIN`. Targets (README, "Targets"):
//! cluster mode p50 ≤ 100 ms and database mode (PG 18 clone) p50 ≤ 40 ms on the 400 MB fixture,
//! 1 GB vs 10 MB ≤ 1.3×, teardown ≤ 20 ms, pooled acquire p50 ≤ 2 ms.

use std::time::{Duration, Instant};

use pgclone::{Golden, Mode, TestDb};

#[path = "../examples/common/mod.rs"]
mod common;

fn golden(name: &str, megabytes: u64) -> Golden {
    Golden::new(name).sql(common::fixture_sql("fixture", megabytes))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iterations: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let bins = pgclone::server::PgBinaries::find()?;
    let dir = pgclone::gc::pgclone_dir()?;
    let fs = pgclone::clone::probe_file_system(&dir)?;
    println!(
        "# PostgreSQL {}, {} ({}), {iterations} iterations, ms",
        bins.version(),
        dir.display(),
        fs.fs_type
    );
    println!(
        "{:<10} {:<9} {:>10} {:>10} {:>10} {:>10}  method",
        "golden", "mode", "p50", "p95", "drop p50", "drop p95"
    );
    for (name, megabytes) in [("bench10mb", 10), ("bench400mb", 400)] {
        let recipe = golden(name, megabytes);
        TestDb::start(&recipe).await?; // build (or find) the golden first: not measured
        for (mode, pool) in [
            (Mode::Cluster, 0),
            (Mode::Database, 0),
            (Mode::Cluster, 2),
            (Mode::Database, 2),
        ] {
            TestDb::builder(&recipe)
                .mode(mode)
                .pool(pool)
                .start()
                .await?; // warm: template server, pool
            let (mut acquire, mut teardown, mut method) = (Vec::new(), Vec::new(), String::new());
            for _ in 0..iterations {
                if pool > 0 {
                    // A test's own work, during which the pool refills.
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
                let started = Instant::now();
                let db = TestDb::builder(&recipe)
                    .mode(mode)
                    .pool(pool)
                    .start()
                    .await?;
                db.client().simple_query("select 1").await?;
                acquire.push(started.elapsed());
                method = db.method().to_string();
                let started = Instant::now();
                drop(db);
                teardown.push(started.elapsed());
            }
            let mode_name =
                format!("{mode:?}{}", if pool > 0 { "+pool" } else { "" }).to_lowercase();
            println!(
                "{name:<10} {:<13} {:>10.1} {:>10.1} {:>10.1} {:>10.1}  {method}",
                mode_name,
                common::percentile_ms(&mut acquire, 0.5),
                common::percentile_ms(&mut acquire, 0.95),
                common::percentile_ms(&mut teardown, 0.5),
                common::percentile_ms(&mut teardown, 0.95)
            );
        }
    }
    Ok(())
}
