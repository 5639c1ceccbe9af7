//! The DBA's clone, measured: an online clone of a ~1 GB cluster under write load, end to end to a
//! started clone (first accepted connection), beside `pg_basebackup -X stream` and the hand-made
//! way (`cp -a --reflink=auto` between `pg_backup_start` and `pg_backup_stop`, the WAL from
//! `pg_receivewal`). Then the source's biggest table is fragmented the way a kept reflink copy
//! fragments it (random updates after a snapshot shared its extents) and the clones are timed again.
//!
//! `cargo bench --bench clone_under_load -- [--scale 68] [--runs 3] [--rate 200]
//! [--fragment-seconds 60] DIR...` (default DIR: the pgclone directory; one per file system).
//!
//! The source runs with fsync, synchronous_commit and full_page_writes on, under `pgbench` at
//! `--rate` transactions a second (TPC-B-like) for every timed clone. Every method takes a fast
//! checkpoint, and every clone starts with the same options. The binaries (PGCLONE_PG_BIN) must
//! have `pg_basebackup`, `pg_receivewal` and `pgbench` of the server's major: Debian's
//! `/usr/lib/postgresql/15/bin` has them all. Needs `filefrag` (e2fsprogs) to count extents.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../examples/common/mod.rs"]
mod common;

use pgclone::{
    clone::{clone_cluster, probe_file_system, CloneOptions},
    server::{PgBinaries, Server, ServerOptions, TempCluster},
};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

struct Args {
    scale: u32,
    runs: usize,
    rate: u32,
    fragment_seconds: u32,
    dirs: Vec<PathBuf>,
}

fn parse_args() -> Args {
    let mut args = Args {
        scale: 68,
        runs: 3,
        rate: 200,
        fragment_seconds: 60,
        dirs: Vec::new(),
    };
    let mut it = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(arg) = it.next() {
        let mut number = || it.next().and_then(|v| v.parse().ok()).expect("a number");
        match arg.as_str() {
            "--scale" => args.scale = number(),
            "--runs" => args.runs = number() as usize,
            "--rate" => args.rate = number(),
            "--fragment-seconds" => args.fragment_seconds = number(),
            dir => args.dirs.push(PathBuf::from(dir)),
        }
    }
    if args.dirs.is_empty() {
        args.dirs.push(pgclone::gc::pgclone_dir().unwrap());
    }
    args
}

#[derive(Clone, Copy, PartialEq)]
enum Method {
    Pgclone,
    Basebackup,
    CpAndReceivewal,
}

impl Method {
    const ALL: [Method; 3] = [Method::Pgclone, Method::Basebackup, Method::CpAndReceivewal];

    fn name(self) -> &'static str {
        match self {
            Method::Pgclone => "pgclone clone (online)",
            Method::Basebackup => "pg_basebackup -X stream",
            Method::CpAndReceivewal => "cp --reflink + pg_receivewal",
        }
    }
}

/// One timed clone: until the copy is complete, then until the clone accepts connections.
struct Sample {
    copy: Duration,
    start: Duration,
}

fn main() -> BenchResult<()> {
    let args = parse_args();
    let bins = PgBinaries::find()?;
    for tool in ["pg_basebackup", "pg_receivewal", "pgbench"] {
        if !bins.program(tool).exists() {
            return Err(format!(
                "{} has no {tool}: point PGCLONE_PG_BIN at binaries that have it (Debian's /usr/lib/postgresql/15/bin)",
                bins.bin_dir().display()
            )
            .into());
        }
    }
    println!(
        "# PostgreSQL {} ({}); pgbench scale {}, load {} tps; median of {} runs, seconds",
        bins.version(),
        bins.bin_dir().display(),
        args.scale,
        args.rate,
        args.runs
    );
    for dir in &args.dirs {
        bench_dir(dir, &bins, &args)?;
    }
    Ok(())
}

fn bench_dir(dir: &Path, bins: &PgBinaries, args: &Args) -> BenchResult<()> {
    let fs = probe_file_system(dir)?;
    let work = common::work_dir(dir, "bench-clone-load-")?;
    // A source as production runs it: durable, so the checkpoint and the WAL cost what they cost.
    let source = TempCluster::builder()
        .root(work.path())
        .with(|o| {
            o.binaries(bins.clone())
                .setting("fsync", "on")
                .setting("synchronous_commit", "on")
                .setting("full_page_writes", "on")
                .setting("max_wal_size", "2GB")
        })
        .start()?;
    let url = source.connection_string();
    let started = Instant::now();
    run(Command::new(bins.program("pgbench"))
        .args(["-i", "-q", "-s", &args.scale.to_string()])
        .arg(&url)
        .stdout(Stdio::null())
        .stderr(Stdio::null()))?;
    common::execute_blocking(&url, "checkpoint")?;
    eprintln!(
        "{}: source initialised in {:.0} s",
        fs.fs_type,
        started.elapsed().as_secs_f64()
    );

    println!(
        "\n## {} ({}), source {:.2} GB",
        fs.fs_type,
        dir.display(),
        du_bytes(&source.data_dir())? as f64 / 1e9
    );
    let owner = Owner::of(&source.data_dir())?;
    let extents_before = table_extents(&source, "pgbench_accounts")?;
    let fresh = time_methods(&source, bins, &owner, work.path(), args)?;

    // Fragment the biggest table as a clone kept beside the source does: once a snapshot shares
    // its extents, every page the source writes moves to a new extent of its own.
    let snapshot = work.path().join("snapshot");
    run(Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(source.data_dir())
        .arg(&snapshot))?;
    run(Command::new(bins.program("pgbench"))
        .args(["-n", "-b", "simple-update", "-c", "2", "-j", "2", "-T"])
        .arg(args.fragment_seconds.to_string())
        .arg(&url)
        .stdout(Stdio::null()))?;
    common::execute_blocking(&url, "checkpoint")?;
    std::fs::remove_dir_all(&snapshot)?;
    let extents_after = table_extents(&source, "pgbench_accounts")?;
    let fragmented = time_methods(&source, bins, &owner, work.path(), args)?;

    println!(
        "| method | copy | start | total | total, fragmented source |\n| --- | --- | --- | --- | --- |"
    );
    for (i, method) in Method::ALL.iter().enumerate() {
        let (copy, start, total) = medians(&fresh[i]);
        let (_, _, total_fragmented) = medians(&fragmented[i]);
        println!(
            "| {} | {copy:.2} | {start:.2} | **{total:.2}** | {total_fragmented:.2} |",
            method.name()
        );
    }
    println!(
        "pgbench_accounts extents: {extents_before} before, {extents_after} after {} s of updates following a reflink snapshot",
        args.fragment_seconds
    );
    source.close()?;
    Ok(())
}

/// Times every method `args.runs` times, round robin, under the rate-limited load.
fn time_methods(
    source: &TempCluster,
    bins: &PgBinaries,
    owner: &Owner,
    work: &Path,
    args: &Args,
) -> BenchResult<Vec<Vec<Sample>>> {
    let _load = Load::start(bins, &source.connection_string(), args.rate)?;
    std::thread::sleep(Duration::from_secs(2));
    let target = work.join("target");
    let options = ServerOptions::new().binaries(bins.clone());
    let mut samples: Vec<Vec<Sample>> = Method::ALL.iter().map(|_| Vec::new()).collect();
    for _ in 0..args.runs {
        for (i, method) in Method::ALL.iter().enumerate() {
            let started = Instant::now();
            match method {
                Method::Pgclone => {
                    clone_cluster(&source.data_dir(), &target, &CloneOptions::new())?;
                }
                Method::Basebackup => {
                    // pg_basebackup runs as the owner and fills an empty directory of theirs.
                    std::fs::create_dir(&target)?;
                    std::fs::set_permissions(
                        &target,
                        std::os::unix::fs::PermissionsExt::from_mode(0o700),
                    )?;
                    owner.chown(&target)?;
                    owner.run(
                        Command::new(bins.program("pg_basebackup"))
                            .arg("-D")
                            .arg(&target)
                            .args(["-X", "stream", "-c", "fast", "-d"])
                            .arg(source.connection_string()),
                    )?;
                }
                Method::CpAndReceivewal => cp_and_receivewal(source, bins, owner, &target)?,
            }
            let copy = started.elapsed();
            let server = Server::start(&target, &options)?;
            samples[i].push(Sample {
                copy,
                start: server.ready_after(),
            });
            server.stop_immediately()?;
            std::fs::remove_dir_all(&target)?;
            let _ = std::fs::remove_file(target.with_extension("log"));
        }
    }
    Ok(samples)
}

/// The hand-made online clone: stream the WAL with `pg_receivewal`, copy the data directory
/// between `pg_backup_start` and `pg_backup_stop`, write the backup label, put the streamed WAL
/// in place of the copied (possibly torn) one.
fn cp_and_receivewal(
    source: &TempCluster,
    bins: &PgBinaries,
    owner: &Owner,
    target: &Path,
) -> BenchResult<()> {
    let wal = target.with_extension("wal");
    std::fs::create_dir(&wal)?;
    owner.chown(&wal)?;
    let mut receiver = owner.spawn(
        Command::new(bins.program("pg_receivewal"))
            .arg("-D")
            .arg(&wal)
            .args(["--no-loop", "-d"])
            .arg(source.connection_string()),
    )?;
    let result = (|| -> BenchResult<()> {
        while std::fs::read_dir(&wal)?.next().is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (label, stop_segment) = rt.block_on(async {
            let client = common::connect(&source.connection_string()).await?;
            client
                .execute("select pg_backup_start('cp and pg_receivewal', true)", &[])
                .await?;
            let copied = Command::new("cp")
                .args(["-a", "--reflink=auto"])
                .arg(source.data_dir())
                .arg(target)
                .status();
            let row = client
                .query_one(
                    "select labelfile, pg_walfile_name(lsn) from pg_backup_stop(false)",
                    &[],
                )
                .await?;
            client.execute("select pg_switch_wal()", &[]).await?;
            assert!(copied.is_ok_and(|status| status.success()), "cp -a failed");
            Ok::<_, tokio_postgres::Error>((row.get::<_, String>(0), row.get::<_, String>(1)))
        })?;
        std::fs::write(target.join("backup_label"), label)?;
        owner.chown(&target.join("backup_label"))?;
        for stale in ["postmaster.pid", "postmaster.opts"] {
            let _ = std::fs::remove_file(target.join(stale));
        }
        while !wal.join(&stop_segment).exists() {
            std::thread::sleep(Duration::from_millis(1));
        }
        for entry in std::fs::read_dir(target.join("pg_wal"))? {
            let path = entry?.path();
            if path.is_file() {
                std::fs::remove_file(path)?;
            }
        }
        for entry in std::fs::read_dir(&wal)? {
            let path = entry?.path();
            if path.extension().is_none() {
                let copy = target.join("pg_wal").join(path.file_name().unwrap());
                std::fs::copy(&path, &copy)?;
                owner.chown(&copy)?;
            }
        }
        Ok(())
    })();
    let _ = receiver.kill();
    let _ = receiver.wait();
    std::fs::remove_dir_all(&wal)?;
    result
}

/// A rate-limited pgbench against the source for as long as the value lives.
struct Load(Child);

impl Load {
    fn start(bins: &PgBinaries, url: &str, rate: u32) -> BenchResult<Load> {
        Ok(Load(
            Command::new(bins.program("pgbench"))
                .args(["-n", "-c", "1", "-T", "86400", "-R"])
                .arg(rate.to_string())
                .arg(url)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        ))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The owner of the source's files: tools that write a data directory run as this user, so
/// the server (run as the same user when the bench runs as root) can read what they wrote.
struct Owner {
    uid: u32,
    gid: u32,
}

impl Owner {
    fn of(data_dir: &Path) -> BenchResult<Owner> {
        let meta = std::fs::metadata(data_dir)?;
        Ok(Owner {
            uid: meta.uid(),
            gid: meta.gid(),
        })
    }

    fn command(&self, command: &mut Command) -> Command {
        if rustix::process::geteuid().as_raw() == self.uid {
            let mut same = Command::new(command.get_program());
            same.args(command.get_args());
            return same;
        }
        let mut setpriv = Command::new("setpriv");
        setpriv
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg(command.get_program())
            .args(command.get_args());
        setpriv
    }

    fn run(&self, command: &mut Command) -> BenchResult<()> {
        run(self.command(command).stdout(Stdio::null()))
    }

    fn spawn(&self, command: &mut Command) -> BenchResult<Child> {
        Ok(self
            .command(command)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?)
    }

    fn chown(&self, path: &Path) -> BenchResult<()> {
        Ok(std::os::unix::fs::chown(
            path,
            Some(self.uid),
            Some(self.gid),
        )?)
    }
}

/// The extents of a table's files (every 1 GB segment), as `filefrag` counts them.
fn table_extents(source: &TempCluster, table: &str) -> BenchResult<u64> {
    let relative: String = common::query_text_blocking(
        &source.connection_string(),
        &format!("select pg_relation_filepath('{table}')"),
    )?;
    let first = source.data_dir().join(relative);
    let mut extents = 0;
    for segment in 0.. {
        let path = if segment == 0 {
            first.clone()
        } else {
            PathBuf::from(format!("{}.{segment}", first.display()))
        };
        if !path.exists() {
            break;
        }
        let out = Command::new("filefrag").arg(&path).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "<path>: 12345 extents found"
        let count = text
            .rsplit(": ")
            .next()
            .and_then(|tail| tail.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| format!("unexpected filefrag output: {text}"))?;
        extents += count;
    }
    Ok(extents)
}

fn du_bytes(dir: &Path) -> BenchResult<u64> {
    let out = Command::new("du").args(["-sb"]).arg(dir).output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

fn run(command: &mut Command) -> BenchResult<()> {
    let status = command.status()?;
    if !status.success() {
        return Err(format!("{command:?} failed: {status}").into());
    }
    Ok(())
}

/// Medians of copy, start and their sum, in seconds.
fn medians(samples: &[Sample]) -> (f64, f64, f64) {
    let median = |mut values: Vec<Duration>| common::percentile_ms(&mut values, 0.5) / 1000.0;
    (
        median(samples.iter().map(|s| s.copy).collect()),
        median(samples.iter().map(|s| s.start).collect()),
        median(samples.iter().map(|s| s.copy + s.start).collect()),
    )
}
