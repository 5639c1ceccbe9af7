//! pgclone beside what a test suite would use instead, on the same golden, in one run:
//! acquire → first query, p50 and p95, at several fixture sizes.
//!
//! ```sh
//! PGCLONE_DIR=/mnt/xfs/pgclone cargo run --release --example compare -- --sizes 10,100,1000 --csv compare.csv
//! ```
//!
//! Where it runs is `PGCLONE_DIR`'s file system; which PostgreSQL, `PGCLONE_PG_BIN`. `--csv` appends
//! `fs,fixture_mb,method,p50_ms,p95_ms` lines (`scripts/plot_compare.py` draws them). The slow
//! alternatives run fewer times (`--slow-iterations`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pgclone::{
    clone::{clone_cluster, CloneOptions},
    server::{features as pg_features, PgBinaries, Server, ServerOptions, TempCluster},
    Golden, Mode, TestDb,
};

mod common;
use common::{connect, fixture_sql, percentile_ms};

type Error = Box<dyn std::error::Error>;

struct Args {
    sizes_mb: Vec<u64>,
    iterations: usize,
    slow_iterations: usize,
    csv: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut args = Args {
        sizes_mb: vec![10, 100, 1000],
        iterations: 10,
        slow_iterations: 3,
        csv: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().expect("a value after the option");
        match arg.as_str() {
            "--sizes" => args.sizes_mb = value().split(',').map(|s| s.parse().unwrap()).collect(),
            "--iterations" => args.iterations = value().parse().unwrap(),
            "--slow-iterations" => args.slow_iterations = value().parse().unwrap(),
            "--csv" => args.csv = Some(PathBuf::from(value())),
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let args = parse_args();
    let bins = PgBinaries::find()?;
    let root = pgclone::gc::pgclone_dir()?;
    let fs = pgclone::clone::probe_file_system(&root)?.fs_type;
    println!(
        "# PostgreSQL {}, PGCLONE_DIR {} ({fs}); acquire -> first query, ms",
        bins.version(),
        root.display()
    );
    println!(
        "{:>8}  {:<44} {:>10} {:>10} {:>4}",
        "fixture", "method", "p50", "p95", "n"
    );
    let mut p50s = Vec::new();
    for &mb in &args.sizes_mb {
        let golden = Golden::new(format!("compare{mb}mb")).sql(fixture_sql("fixture", mb));
        TestDb::builder(&golden).pool(0).start().await?; // build it first: not measured
        let mut rows = Vec::new();
        for (mode, pool, name) in [
            (Mode::Cluster, 0, "pgclone cluster mode"),
            (Mode::Database, 0, "pgclone database mode"),
            (Mode::Cluster, 2, "pgclone cluster mode, pooled"),
            (Mode::Database, 2, "pgclone database mode, pooled"),
        ] {
            TestDb::builder(&golden)
                .mode(mode)
                .pool(pool)
                .start()
                .await?; // warm up
            let mut samples = Vec::new();
            for _ in 0..args.iterations {
                if pool > 0 {
                    tokio::time::sleep(Duration::from_millis(150)).await; // the test's own work
                }
                let started = Instant::now();
                let db = TestDb::builder(&golden)
                    .mode(mode)
                    .pool(pool)
                    .start()
                    .await?;
                db.client().simple_query("select 1").await?;
                samples.push(started.elapsed());
            }
            rows.push((name.to_string(), samples));
        }
        let alternatives = Alternatives::new(&bins, &root, &golden, mb).await?;
        rows.extend(alternatives.run(&args).await?);
        for (name, mut samples) in rows {
            let (p50, p95) = (
                percentile_ms(&mut samples, 0.5),
                percentile_ms(&mut samples, 0.95),
            );
            println!(
                "{:>6}MB  {name:<44} {p50:>10.1} {p95:>10.1} {:>4}",
                mb,
                samples.len()
            );
            p50s.push((mb, name.clone(), p50));
            if let Some(csv) = &args.csv {
                use std::io::Write;
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(csv)?;
                writeln!(file, "{fs},{mb},\"{name}\",{p50:.2},{p95:.2}")?;
            }
        }
    }
    print_targets(&p50s);
    Ok(())
}

/// The targets these p50s speak to (README, "Targets"), and what bounds those not met (measured;
/// README "Performance" has the details).
fn print_targets(p50s: &[(u64, String, f64)]) {
    let p50 = |mb: u64, name: &str| {
        p50s.iter()
            .find(|(m, n, _)| *m == mb && n == name)
            .map(|(_, _, ms)| *ms)
    };
    let modes = [
        ("cluster", "pgclone cluster mode"),
        ("database", "pgclone database mode"),
        ("pooled cluster", "pgclone cluster mode, pooled"),
    ];
    println!("# targets: >= 20x faster than WAL_LOG; 1 GB within 1.3x of 10 MB");
    let sizes: Vec<u64> = p50s.iter().map(|(mb, ..)| *mb).collect();
    for mb in sizes
        .iter()
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
    {
        let Some(wal_log) = p50(mb, "CREATE DATABASE STRATEGY WAL_LOG") else {
            continue;
        };
        let ratios: Vec<String> = modes
            .iter()
            .filter_map(|(short, name)| Some(format!("{short} {:.1}x", wal_log / p50(mb, name)?)))
            .collect();
        println!("{mb:>6}MB  vs WAL_LOG: {}", ratios.join(", "));
    }
    for (short, name) in &modes[..2] {
        if let (Some(small), Some(large)) = (p50(10, name), p50(1000, name)) {
            println!("1 GB vs 10 MB, {short} mode: {:.2}x", large / small);
        }
    }
    println!(
        "# bounds: cluster mode = PostgreSQL's start (~20 ms) + one reflink per file (~1,300 files, \
         ~25 ms); database mode = CREATE DATABASE's two checkpoints + PostgreSQL 18 cloning in \
         1 MB copy_file_range calls (~12 us per MB: the 1 GB fixture takes ~870 calls)"
    );
}

/// The alternatives, on a stopped copy of the same golden (and a server running it).
struct Alternatives {
    bins: PgBinaries,
    dbname: String,
    fixture: String,
    golden_data: PathBuf,
    work: tempfile::TempDir,
}

impl Alternatives {
    async fn new(
        bins: &PgBinaries,
        root: &Path,
        golden: &Golden,
        mb: u64,
    ) -> Result<Alternatives, Error> {
        let golden_data =
            common::golden_data_dir(root, golden.name()).ok_or("the golden's directory")?;
        let work = common::work_dir(root, "compare-")?;
        if let Some(user) = pgclone::server::run_as_user()? {
            std::os::unix::fs::chown(work.path(), Some(user.uid()), Some(user.gid()))?;
        }
        Ok(Alternatives {
            bins: bins.clone(),
            dbname: golden.name().to_string(),
            fixture: fixture_sql("fixture", mb),
            golden_data,
            work,
        })
    }

    async fn run(&self, args: &Args) -> Result<Vec<(String, Vec<Duration>)>, Error> {
        let mut rows = Vec::new();
        let (fast, slow) = (args.iterations, args.slow_iterations);

        // Every test runs initdb, starts, and loads the fixture (pgtemp style, plus the fixture).
        let mut samples = Vec::new();
        for _ in 0..slow {
            let started = Instant::now();
            let cluster = TempCluster::builder()
                .with(|o| o.binaries(self.bins.clone()))
                .start()?;
            let client = connect(&cluster.connection_string()).await?;
            client
                .batch_execute(&format!("create database {}", self.dbname))
                .await?;
            let client = connect(&cluster.connection_string_for(&self.dbname)).await?;
            client.batch_execute(&self.fixture).await?;
            client.simple_query("select 1").await?;
            samples.push(started.elapsed());
        }
        rows.push((
            "initdb + start + load the fixture per test".to_string(),
            samples,
        ));

        // A server running a copy of the golden, for the CREATE DATABASE strategies and pg_restore.
        let template_data = self.work.path().join("template");
        clone_cluster(
            &self.golden_data,
            &template_data,
            &CloneOptions::new().allow_copy(true),
        )?;
        let server = Server::start(
            &template_data,
            &ServerOptions::new().binaries(self.bins.clone()),
        )?;
        let admin = connect(&server.connection_string("postgres")).await?;
        let major = self.bins.version().major();
        let mut strategies = vec![("CREATE DATABASE STRATEGY WAL_LOG", "wal_log", None)];
        if pg_features::has_file_copy_method_clone(major) {
            strategies.push((
                "CREATE DATABASE STRATEGY FILE_COPY, copying",
                "file_copy",
                Some("copy"),
            ));
        } else if pg_features::has_create_database_strategy(major) {
            strategies.push((
                "CREATE DATABASE STRATEGY FILE_COPY (copies)",
                "file_copy",
                None,
            ));
        }
        for (name, strategy, method) in strategies {
            if let Some(method) = method {
                admin
                    .batch_execute(&format!("set file_copy_method = {method}"))
                    .await?;
            }
            let mut samples = Vec::new();
            for i in 0..slow.max(fast / 2) {
                let db = format!("t_{strategy}_{i}");
                let started = Instant::now();
                admin
                    .batch_execute(&format!(
                        "create database {db} template {} strategy {strategy}",
                        self.dbname
                    ))
                    .await?;
                connect(&server.connection_string(&db))
                    .await?
                    .simple_query("select 1")
                    .await?;
                samples.push(started.elapsed());
                admin
                    .batch_execute(&format!("drop database {db} with (force)"))
                    .await?;
            }
            rows.push((name.to_string(), samples));
        }

        // pg_dump once, pg_restore per test, where the binaries have both.
        let (dump, restore) = (
            self.bins.program("pg_dump"),
            self.bins.program("pg_restore"),
        );
        if dump.exists() && restore.exists() {
            let file = self.work.path().join("golden.dump");
            let host = server.socket_dir().to_string_lossy().into_owned();
            let port = server.port().to_string();
            let dumped = Command::new(&dump)
                .args(["-Fc", "-h", &host, "-p", &port, "-U", "postgres", "-f"])
                .arg(&file)
                .arg(&self.dbname)
                .status()?;
            if dumped.success() {
                let mut samples = Vec::new();
                for i in 0..slow {
                    let db = format!("t_restore_{i}");
                    let started = Instant::now();
                    admin
                        .batch_execute(&format!("create database {db}"))
                        .await?;
                    let restored = Command::new(&restore)
                        .args(["-h", &host, "-p", &port, "-U", "postgres", "-d", &db])
                        .arg(&file)
                        .status()?;
                    assert!(restored.success(), "pg_restore");
                    connect(&server.connection_string(&db))
                        .await?
                        .simple_query("select 1")
                        .await?;
                    samples.push(started.elapsed());
                    admin
                        .batch_execute(&format!("drop database {db} with (force)"))
                        .await?;
                }
                rows.push(("pg_dump once, pg_restore per test".to_string(), samples));
            }
        }
        server.stop_immediately()?;

        // A plain copy of the whole cluster per test (cp -a, no reflinks), started.
        let mut samples = Vec::new();
        for i in 0..slow {
            let copy = self.work.path().join(format!("copy{i}"));
            let started = Instant::now();
            let status = Command::new("cp")
                .args(["-a", "--reflink=never"])
                .arg(&self.golden_data)
                .arg(&copy)
                .status()?;
            assert!(status.success(), "cp -a");
            let server = Server::start(&copy, &ServerOptions::new().binaries(self.bins.clone()))?;
            connect(&server.connection_string(&self.dbname))
                .await?
                .simple_query("select 1")
                .await?;
            samples.push(started.elapsed());
            server.stop_immediately()?;
            std::fs::remove_dir_all(&copy)?;
        }
        rows.push(("cp -a of the cluster, started".to_string(), samples));
        Ok(rows)
    }
}
