//! Spawn → ready → first query on a small cluster, beside `pg_ctl -w start` on the same cluster.
//!
//! `cargo bench --bench startup [-- ITERATIONS]`. Target: p50 ≤ 60 ms on a 2-core machine
//! (`pg_ctl -w` polls every 100 ms). Honors PGCLONE_PG_BIN, PGCLONE_DIR, PGCLONE_RUN_AS.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../examples/common/mod.rs"]
mod common;

use pgclone::server::{Server, ServerOptions, TempCluster};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iterations: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(30);
    let cluster = TempCluster::start()?;
    let bins = cluster.binaries().clone();
    let dir = cluster.keep()?; // a cleanly stopped, small cluster to start again and again
    let data = dir.join("data");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "PostgreSQL {} in {}, {iterations} iterations",
        bins.version(),
        bins.bin_dir().display()
    );

    let mut ready = Vec::new();
    let mut first_query = Vec::new();
    for _ in 0..iterations {
        let started = Instant::now();
        let server = Server::start(&data, &ServerOptions::new().binaries(bins.clone()))?;
        ready.push(started.elapsed());
        let url = server.connection_string("postgres");
        rt.block_on(async {
            common::connect(&url)
                .await?
                .simple_query("select 1")
                .await?;
            Ok::<_, tokio_postgres::Error>(())
        })?;
        first_query.push(started.elapsed());
        server.stop()?;
    }
    report("pgclone: spawn -> ready", &mut ready);
    report("pgclone: spawn -> first query", &mut first_query);

    let socket_dir = tempfile::Builder::new()
        .prefix("pgclone-bench")
        .tempdir_in("/tmp")?;
    if let Some(user) = pgclone::server::run_as_user()? {
        std::os::unix::fs::chown(socket_dir.path(), Some(user.uid()), Some(user.gid()))?;
    }
    let options = format!("-k {} -c listen_addresses=''", socket_dir.path().display());
    let log = dir.join("pg_ctl.log");
    let start: &[&std::ffi::OsStr] = &[
        "start".as_ref(),
        "-w".as_ref(),
        "-o".as_ref(),
        options.as_ref(),
        "-l".as_ref(),
        log.as_ref(),
    ];
    let mut pg_ctl = Vec::new();
    for _ in 0..iterations.min(10) {
        let started = Instant::now();
        run_pg_ctl(&bins.program("pg_ctl"), &data, start)?;
        pg_ctl.push(started.elapsed());
        run_pg_ctl(
            &bins.program("pg_ctl"),
            &data,
            &[
                "stop".as_ref(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
            ],
        )?;
    }
    report("pg_ctl -w start (reference)", &mut pg_ctl);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Runs pg_ctl, as the run-as user when this process is root (pg_ctl refuses root).
fn run_pg_ctl(
    pg_ctl: &Path,
    data: &Path,
    args: &[&std::ffi::OsStr],
) -> Result<(), Box<dyn std::error::Error>> {
    let mut cmd = Command::new(pg_ctl);
    cmd.arg("-D").arg(data).args(args);
    if let Some(user) = pgclone::server::run_as_user()? {
        cmd.uid(user.uid()).gid(user.gid()).current_dir("/");
    }
    let status = cmd.stdout(std::process::Stdio::null()).status()?;
    if !status.success() {
        return Err(format!("pg_ctl {args:?} failed: {status}").into());
    }
    Ok(())
}

fn report(what: &str, samples: &mut [Duration]) {
    let mut at = |q: f64| common::percentile_ms(samples, q);
    println!(
        "{what:<32} p50 {:>7.1} ms   p95 {:>7.1} ms   (n={})",
        at(0.5),
        at(0.95),
        samples.len()
    );
}
