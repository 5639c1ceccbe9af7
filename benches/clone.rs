//! Clone and start time against fixture size and file count, beside `cp -a --reflink=auto` and
//! `pg_basebackup` of the same cluster, on each directory given (one per file system).
//!
//! `cargo bench --bench clone -- [--sizes 10,100,1000] [--tables 2000] DIR...`
//! (default DIR: the pgclone directory). Honors PGCLONE_PG_BIN and PGCLONE_RUN_AS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../examples/common/mod.rs"]
mod common;

use pgclone::{
    clone::{clone_cluster, probe_file_system, CloneOptions, CloneReport},
    server::{Server, ServerOptions, TempCluster},
};

struct Args {
    sizes_mb: Vec<u64>,
    tables: u32,
    dirs: Vec<PathBuf>,
}

fn parse_args() -> Args {
    let mut args = Args {
        sizes_mb: vec![10, 100, 1000],
        tables: 2000,
        dirs: Vec::new(),
    };
    let mut it = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--sizes" => {
                args.sizes_mb = it
                    .next()
                    .unwrap()
                    .split(',')
                    .map(|s| s.parse().unwrap())
                    .collect()
            }
            "--tables" => args.tables = it.next().unwrap().parse().unwrap(),
            dir => args.dirs.push(PathBuf::from(dir)),
        }
    }
    if args.dirs.is_empty() {
        args.dirs.push(pgclone::gc::pgclone_dir().unwrap());
    }
    args
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args();
    let bins = pgclone::server::PgBinaries::find()?;
    println!(
        "# PostgreSQL {} ({}); times in ms, median of 3",
        bins.version(),
        bins.bin_dir().display()
    );
    println!(
        "{:<6} {:<14} {:>6} {:>8} | {:>9} {:>9} {:>7} | {:>9} {:>9} | {:>9} {:>9}",
        "fs",
        "fixture",
        "files",
        "MB",
        "offline",
        "1 thread",
        "start",
        "online",
        "start",
        "cp -a",
        "basebkup"
    );
    for dir in &args.dirs {
        let fs = probe_file_system(dir)?;
        let mut fixtures: Vec<Fixture> =
            args.sizes_mb.iter().map(|mb| Fixture::Rows(*mb)).collect();
        fixtures.push(Fixture::Tables(args.tables));
        for fixture in fixtures {
            let row = measure(dir, &bins, &fixture)?;
            println!(
                "{:<6} {:<14} {:>6} {:>8.1} | {:>9.1} {:>9.1} {:>7.1} | {:>9.1} {:>9.1} | {:>9.1} {:>9}",
                fs.fs_type,
                fixture.to_string(),
                row.files,
                row.mb,
                row.offline,
                row.offline_one_thread,
                row.offline_start,
                row.online,
                row.online_start,
                row.cp,
                row.basebackup.map_or("n/a".to_string(), |ms| format!("{ms:.1}"))
            );
        }
    }
    println!(
        "# offline: pgclone clone of the stopped source (default threads; 1 thread beside it);"
    );
    println!("# online: of the running source (backup API);");
    println!("# start: to the first accepted connection (online: through backup recovery);");
    println!("# cp -a: cp -a --reflink=auto of the stopped source; basebkup: pg_basebackup -X stream -c fast");
    Ok(())
}

enum Fixture {
    /// One table of about this many MB.
    Rows(u64),
    /// This many small tables with an index each: many files.
    Tables(u32),
}

impl std::fmt::Display for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fixture::Rows(mb) => write!(f, "{mb} MB table"),
            Fixture::Tables(n) => write!(f, "{n} tables"),
        }
    }
}

struct Row {
    files: u64,
    mb: f64,
    offline: f64,
    offline_one_thread: f64,
    offline_start: f64,
    online: f64,
    online_start: f64,
    cp: f64,
    basebackup: Option<f64>,
}

fn measure(
    dir: &Path,
    bins: &pgclone::server::PgBinaries,
    fixture: &Fixture,
) -> Result<Row, Box<dyn std::error::Error>> {
    let work = common::work_dir(dir, "bench-clone-")?;
    let source = TempCluster::builder()
        .root(work.path())
        .with(|o| o.binaries(bins.clone()))
        .start()?;
    let sql = match fixture {
        Fixture::Rows(mb) => format!("{}\ncheckpoint;", common::fixture_sql("t", *mb)),
        Fixture::Tables(n) => format!(
            "do $$ begin for i in 1..{n} loop execute format('create table t%s(id int primary key, v text)', i); end loop; end $$;
             checkpoint;"
        ),
    };
    common::execute_blocking(&source.connection_string(), &sql)?;
    let data = source.data_dir();
    let target = work.path().join("target");
    let options = ServerOptions::new().binaries(bins.clone());

    let (mut online, mut online_start) = (Vec::new(), Vec::new());
    let mut report = CloneReport::default();
    for _ in 0..3 {
        let (clone_time, start_time, r) =
            clone_and_start(&data, &target, &options, &CloneOptions::new())?;
        online.push(clone_time);
        online_start.push(start_time);
        report = r;
    }
    let basebackup = basebackup_ms(&source, &target)?;

    let kept = source.keep()?;
    let data = kept.join("data");
    let (mut offline, mut offline_start, mut one_thread) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        let (clone_time, start_time, _) =
            clone_and_start(&data, &target, &options, &CloneOptions::new())?;
        offline.push(clone_time);
        offline_start.push(start_time);
        let (clone_time, _, _) =
            clone_and_start(&data, &target, &options, &CloneOptions::new().threads(1))?;
        one_thread.push(clone_time);
    }
    let mut cp = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let status = Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(&data)
            .arg(&target)
            .status()?;
        assert!(status.success());
        cp.push(started.elapsed());
        std::fs::remove_dir_all(&target)?;
    }
    Ok(Row {
        files: report.files,
        mb: report.bytes as f64 / 1e6,
        offline: median(offline),
        offline_one_thread: median(one_thread),
        offline_start: median(offline_start),
        online: median(online),
        online_start: median(online_start),
        cp: median(cp),
        basebackup,
    })
}

/// Clones, starts the clone, stops and removes it: (clone, start) durations.
fn clone_and_start(
    data: &Path,
    target: &Path,
    options: &ServerOptions,
    clone_options: &CloneOptions,
) -> pgclone::Result<(Duration, Duration, CloneReport)> {
    let started = Instant::now();
    let report = clone_cluster(data, target, clone_options)?;
    let cloned = started.elapsed();
    let server = Server::start(target, options)?;
    let start = server.ready_after();
    server.stop_immediately()?;
    std::fs::remove_dir_all(target).ok();
    let _ = std::fs::remove_file(target.with_extension("log"));
    Ok((cloned, start, report))
}

/// pg_basebackup of the running source, when the binaries have one of the same major.
fn basebackup_ms(
    source: &TempCluster,
    target: &Path,
) -> Result<Option<f64>, Box<dyn std::error::Error>> {
    let program = source.binaries().program("pg_basebackup");
    if !program.exists() {
        return Ok(None);
    }
    let started = Instant::now();
    let status = Command::new(program)
        .arg("-D")
        .arg(target)
        .args([
            "-X",
            "stream",
            "-c",
            "fast",
            "-U",
            "postgres",
            "-h",
            &source.host(),
            "-p",
            &source.port().to_string(),
        ])
        .status()?;
    let elapsed = started.elapsed();
    std::fs::remove_dir_all(target).ok();
    Ok(status.success().then_some(elapsed.as_secs_f64() * 1000.0))
}

fn median(mut samples: Vec<Duration>) -> f64 {
    common::percentile_ms(&mut samples, 0.5)
}
