//! `examples/bookshelf`'s test suite under `#[pgclone::test]` against the very same suite under
//! `#[sqlx::test]`, side by side: the wall time of the whole suite with a ~10 MB and a ~400 MB
//! fixture, under `cargo test` and `cargo nextest run`.
//!
//! ```sh
//! PGCLONE_PG_BIN=/usr/lib/postgresql/15/bin PGCLONE_DIR=/mnt/xfs/bench \
//!     cargo run --release --example sqlx_suite [-- [--rounds N] [MB ...]]
//! ```
//!
//! - Two copies of `examples/bookshelf` (of the commit checked out: `git archive HEAD`, pgclone
//!   too) in a temporary directory: `pgclone` as it is, `sqlx` with
//!   each `#[pgclone::test` line turned into `#[sqlx::test` (nothing else in the test file
//!   differs). Both get a third fixture, `archive`, of about N MB, loaded by every test that
//!   loads `members` and `books`.
//! - sqlx::test's server is a `TempCluster` of this process: pgclone's test settings (fsync off,
//!   ...), the same binaries, the same file system as `PGCLONE_DIR`.
//! - pgclone runs cold (a fresh pgclone directory: the goldens are built during the run), then
//!   warm (goldens cached), in its default mode (database mode for these sqlx-typed tests: in
//!   the process's template server under cargo test, in the run's shared one under nextest) and
//!   with `PGCLONE_MODE=cluster`.
//! - The timed rounds take turns: each runs sqlx::test and warm pgclone back to back (sqlx::test
//!   first in every other round), then cluster mode; the table gives each one's median. Before
//!   each timed run, untimed, `sync` writes back what the runs before it left in the page cache.
//! - Only the run is timed: each copy's tests are built first (`--no-run`), with the same
//!   environment, and a timed run that compiles anything fails the benchmark.
//!
//! Writes `docs/bench/sqlx_suite.md` (the table) and `docs/bench/sqlx_suite.svg` (the plot).

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgclone::server::TempCluster;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Bytes per row of `archive` with its primary-key index (measured: the size is printed).
const BYTES_PER_ROW: u64 = 213;

#[derive(Clone, Copy, PartialEq)]
enum Runner {
    CargoTest,
    Nextest,
}

impl Runner {
    fn name(self) -> &'static str {
        match self {
            Runner::CargoTest => "cargo test",
            Runner::Nextest => "cargo nextest run",
        }
    }

    /// The cargo arguments that run (or, with `--no-run`, only build) the suite.
    fn args(self) -> &'static [&'static str] {
        match self {
            Runner::CargoTest => &["test", "--test", "library"],
            Runner::Nextest => &["nextest", "run", "--test", "library"],
        }
    }
}

/// One row of the table: seconds, each the median of the rounds (cold: one run).
struct Row {
    megabytes: u64,
    runner: Runner,
    sqlx: f64,
    cold: f64,
    warm: f64,
    cluster: f64,
}

/// Everything a suite run needs to know.
struct Bench {
    tmp: PathBuf,
    target: PathBuf,
    /// sqlx::test's server, for `DATABASE_URL`; given to both variants (pgclone ignores it) so
    /// that both build and run with the same environment and nothing recompiles in a timed run.
    database_url: String,
}

fn main() {
    let (rounds, sizes) = parse_args();
    let tmp = tempfile::Builder::new()
        .prefix("pgclone-sqlx-suite-")
        .tempdir()
        .expect("temp dir");
    // PostgreSQL runs as another user when we are root: it must reach what lies under here.
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let base = match std::env::var_os("PGCLONE_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => tmp.path().join("pgclone"),
    };
    fs::create_dir_all(&base).expect("create the pgclone directory");
    // One target directory for both copies and all runs, so sqlx and pgclone compile once.
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("sqlx-suite"),
        None => tmp.path().join("target"),
    };

    let (source, commit) = snapshot(tmp.path());
    let pgclone_copy = copy_variant(&source, tmp.path(), "pgclone");
    let sqlx_copy = copy_variant(&source, tmp.path(), "sqlx");

    // sqlx::test keeps up to 20 connections per test process besides 5 per test, and nextest
    // runs a process per test: leave room.
    let server = TempCluster::builder()
        .root(base.join("sqlx-server"))
        .with(|options| options.setting("max_connections", "300"))
        .start()
        .expect("start sqlx::test's server");
    // sqlx reads a socket directory from `host=`; no TLS on a Unix socket.
    let url = |db: &str| {
        format!(
            "postgresql://postgres@localhost:{}/{db}?host={}&sslmode=disable",
            server.port(),
            server.host()
        )
    };
    let bench = Bench {
        tmp: tmp.path().to_path_buf(),
        target,
        database_url: url("postgres"),
    };

    let fs_probe = pgclone::clone::probe_file_system(&base).expect("probe PGCLONE_DIR");
    let machine = format!(
        "pgclone {commit}; {} cores, {} GB RAM; PGCLONE_DIR {} on {} (reflinks: {}); PostgreSQL {} ({}), \
         sqlx::test's server on the same file system with pgclone's test settings",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem_total_gb(),
        base.display(),
        fs_probe.fs_type,
        if fs_probe.reflink.is_ok() {
            "yes"
        } else {
            "no"
        },
        server.binaries().version(),
        server.binaries().bin_dir().display(),
    );
    println!("# {machine}");

    let mut rows = Vec::new();
    let mut fixtures = Vec::new();
    for &megabytes in &sizes {
        let rows_in_archive = megabytes * 1_000_000 / BYTES_PER_ROW;
        let sql = archive_sql(rows_in_archive);
        for copy in [&pgclone_copy, &sqlx_copy] {
            fs::write(copy.join("tests/fixtures/archive.sql"), &sql).expect("write archive.sql");
        }
        let measured = archive_size(&url, &sql);
        println!(
            "## archive fixture: {rows_in_archive} rows, pg_total_relation_size {:.0} MB",
            measured as f64 / 1e6
        );
        fixtures.push((megabytes, rows_in_archive, measured));
        for runner in [Runner::CargoTest, Runner::Nextest] {
            for copy in [&pgclone_copy, &sqlx_copy] {
                bench.build(copy, runner);
            }
        }
        for runner in [Runner::CargoTest, Runner::Nextest] {
            let (sqlx, cold, warm, cluster) =
                bench.runs(&sqlx_copy, &pgclone_copy, &base, runner, megabytes, rounds);
            let row = Row {
                megabytes,
                runner,
                sqlx,
                cold,
                warm,
                cluster,
            };
            println!(
                "{megabytes} MB, {}: sqlx::test {:.2} s, pgclone cold {:.2} s, warm {:.2} s ({:.3}x), cluster warm {:.2} s",
                runner.name(),
                row.sqlx,
                row.cold,
                row.warm,
                row.warm / row.sqlx,
                row.cluster
            );
            rows.push(row);
        }
    }
    server.close().expect("stop sqlx::test's server");
    let _ = fs::remove_dir_all(base.join("sqlx-server"));

    let markdown = markdown(&machine, rounds, &fixtures, &rows);
    println!("\n{markdown}");
    let out = Path::new(REPO).join("docs/bench");
    fs::create_dir_all(&out).expect("create docs/bench");
    fs::write(Path::new(REPO).join("docs/bench/sqlx_suite.md"), markdown).expect("write the table");
    fs::write(
        Path::new(REPO).join("docs/bench/sqlx_suite.svg"),
        svg(&rows),
    )
    .expect("write the plot");
    println!("wrote docs/bench/sqlx_suite.md and docs/bench/sqlx_suite.svg");
}

/// `[--rounds N] [MB ...]`: how many timed runs to take the median of (sqlx and warm pgclone),
/// and the fixture sizes (default 10 and 400).
fn parse_args() -> (usize, Vec<u64>) {
    let mut rounds = 1;
    let mut sizes = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--rounds" {
            rounds = args
                .next()
                .and_then(|n| n.parse().ok())
                .expect("--rounds N");
        } else {
            sizes.push(arg.parse().expect("a fixture size in MB"));
        }
    }
    if sizes.is_empty() {
        sizes = vec![10, 400];
    }
    (rounds.max(1), sizes)
}

/// Copies `examples/bookshelf` to `<tmp>/<variant>` as a crate of its own, then gives the copy
/// its variant's test attribute and dependency, and the `archive` fixture in every test that
/// loads `members` and `books` (in both variants alike).
fn copy_variant(source: &Path, tmp: &Path, variant: &str) -> PathBuf {
    let dir = tmp.join(variant);
    copy_dir(&source.join("examples/bookshelf"), &dir);
    // The workspace's lock file: the same dependency versions as the repository, no resolution.
    fs::copy(source.join("Cargo.lock"), dir.join("Cargo.lock")).expect("copy the lock");

    let manifest = dir.join("Cargo.toml");
    let text = fs::read_to_string(&manifest).expect("read Cargo.toml");
    let dev_dependency = r#"pgclone = { path = "../..", features = ["sqlx"] }"#;
    assert!(
        text.contains(dev_dependency),
        "bookshelf's pgclone line changed"
    );
    let replacement = match variant {
        "pgclone" => format!(
            r#"pgclone = {{ path = "{}", features = ["sqlx"] }}"#,
            source.display()
        ),
        // `#[sqlx::test]` comes with sqlx's `macros` and `migrate`, which bookshelf enables.
        _ => String::new(),
    };
    // An empty [workspace]: the copy is no member of pgclone's workspace.
    let text = text.replace(dev_dependency, &replacement) + "\n[workspace]\n";
    fs::write(&manifest, text).expect("write Cargo.toml");

    let tests = dir.join("tests/library.rs");
    let mut text = fs::read_to_string(&tests).expect("read library.rs");
    // Each edit with the number of places it must change, so that a change to bookshelf's
    // tests stops the benchmark instead of silently measuring something else.
    for (from, to, expected) in [
        (
            r#"fixtures("members", "books")"#,
            r#"fixtures("members", "books", "archive")"#,
            5,
        ),
        (
            r#"scripts("members", "books")"#,
            r#"scripts("members", "books", "archive")"#,
            1,
        ),
    ] {
        assert_eq!(text.matches(from).count(), expected, "library.rs: {from}");
        text = text.replace(from, to);
    }
    if variant == "sqlx" {
        // Only the attribute lines: the comments stay as they are.
        text = text
            .lines()
            .map(|line| match line.strip_prefix("#[pgclone::test") {
                Some(rest) => format!("#[sqlx::test{rest}\n"),
                None => format!("{line}\n"),
            })
            .collect();
        assert!(
            !text.lines().any(|line| line.starts_with("#[pgclone::test")),
            "an attribute left"
        );
    }
    fs::write(&tests, text).expect("write library.rs");
    dir
}

/// The repository's committed tree (`git archive HEAD`) in `<tmp>/pgclone-src`, and its commit.
/// Not the working tree: edits made while the benchmark runs would recompile pgclone in a timed
/// run (or break it), and a committed tree says exactly what was measured.
fn snapshot(tmp: &Path) -> (PathBuf, String) {
    let dest = tmp.join("pgclone-src");
    fs::create_dir_all(&dest).expect("create the snapshot dir");
    let status = Command::new("sh")
        .arg("-c")
        .arg(r#"git -C "$1" archive HEAD | tar -x -C "$2""#)
        .args(["sh", REPO])
        .arg(&dest)
        .status()
        .expect("run git archive");
    assert!(status.success(), "git archive HEAD failed");
    let commit = Command::new("git")
        .args(["-C", REPO, "rev-parse", "--short", "HEAD"])
        .output()
        .expect("run git rev-parse");
    let commit = String::from_utf8_lossy(&commit.stdout).trim().to_string();
    (dest, commit)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create dir");
    for entry in fs::read_dir(from).expect("read dir").flatten() {
        let path = entry.path();
        let dest = to.join(entry.file_name());
        if path.is_dir() {
            copy_dir(&path, &dest);
        } else {
            fs::copy(&path, &dest).expect("copy file");
        }
    }
}

/// The `archive` fixture: `rows` rows of ~210 bytes with their index entries. No test reads it;
/// it only makes each test's database as big as a real application's.
fn archive_sql(rows: u64) -> String {
    format!(
        "-- About {} MB for examples/sqlx_suite.rs; no test reads it.\n\
         create table archive (id bigint primary key, title text, body text);\n\
         insert into archive\n\
         select g, 'Volume ' || g, repeat(md5(g::text), 4) from generate_series(1, {rows}) g;\n",
        rows * BYTES_PER_ROW / 1_000_000
    )
}

/// Loads the fixture once into a scratch database of sqlx::test's server and returns
/// `pg_total_relation_size('archive')`.
fn archive_size(url: &dyn Fn(&str) -> String, sql: &str) -> u64 {
    let psql = |db: &str, sql: &str| {
        let output = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-tA",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &url(db),
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    psql("postgres", "create database archive_size");
    psql("archive_size", sql);
    let size = psql("archive_size", "select pg_total_relation_size('archive')");
    psql("postgres", "drop database archive_size");
    size.parse().expect("a size")
}

impl Bench {
    /// The command that builds or runs `copy`'s suite with `runner`, in the environment every
    /// build and run of either variant shares.
    fn command(&self, copy: &Path, runner: Runner) -> Command {
        // `cargo` as a user runs it (rustup's proxy, not `env!("CARGO")`): a dependency's own
        // `rust-toolchain` file (atoi's names 1.57) must not pick the compiler.
        let mut cmd = Command::new("cargo");
        cmd.args(runner.args())
            .current_dir(copy)
            .env("CARGO_TARGET_DIR", &self.target)
            .env("DATABASE_URL", &self.database_url);
        for name in [
            "PGCLONE_MODE",
            "PGCLONE_POOL",
            "PGCLONE_KEEP",
            "PGCLONE_REBUILD",
            "PGCLONE_DIR",
        ] {
            cmd.env_remove(name);
        }
        cmd
    }

    fn build(&self, copy: &Path, runner: Runner) {
        let mut cmd = self.command(copy, runner);
        cmd.arg("--no-run");
        let variant = copy.file_name().unwrap().to_string_lossy();
        let label = format!("build-{variant}-{}", runner.args()[0]);
        eprintln!("building {} ({})", copy.display(), runner.name());
        self.run_logged(cmd, &label);
    }

    /// Runs `cmd` with its output in a log file, and fails the benchmark if it fails. Returns
    /// the wall time and the output.
    fn run_logged(&self, mut cmd: Command, label: &str) -> (Duration, String) {
        let log = self.tmp.join(format!("{label}.log"));
        let file = fs::File::create(&log).expect("create log");
        cmd.stdout(file.try_clone().expect("log")).stderr(file);
        cmd.stdin(Stdio::null());
        let started = Instant::now();
        let status = cmd.status().expect("run cargo");
        let took = started.elapsed();
        let output = fs::read_to_string(&log).unwrap_or_default();
        assert!(status.success(), "{label} failed ({status}):\n{output}");
        (took, output)
    }

    /// One timed run of the suite: `env` on top of the shared environment. What earlier runs
    /// left for the kernel to write back is written first, untimed: otherwise a run pays for the
    /// gigabytes the one before it wrote (sqlx::test's, at 400 MB), which measures the order of
    /// the runs, not the tools.
    fn timed(&self, copy: &Path, runner: Runner, env: &[(&str, &Path)], label: &str) -> f64 {
        let synced = Command::new("sync").status().expect("run sync");
        assert!(synced.success(), "sync failed");
        let mut cmd = self.command(copy, runner);
        for (name, value) in env {
            cmd.env(name, value);
        }
        let (took, output) = self.run_logged(cmd, label);
        assert!(
            !output.contains("Compiling "),
            "{label} compiled something: the build and the run environment differ\n{output}"
        );
        eprintln!("  {label}: {:.2} s", took.as_secs_f64());
        took.as_secs_f64()
    }

    /// sqlx::test's runs, and pgclone's: cold, warm and cluster-mode warm, in a pgclone directory
    /// of their own that starts empty. The rounds take turns: each round runs both tools back to
    /// back, sqlx::test first in every other round, so that a disk slowing down or speeding up
    /// during the benchmark (this virtual machine's does) weighs on both alike.
    fn runs(
        &self,
        sqlx_copy: &Path,
        pgclone_copy: &Path,
        base: &Path,
        runner: Runner,
        megabytes: u64,
        rounds: usize,
    ) -> (f64, f64, f64, f64) {
        let tag = tag(megabytes, runner);
        let dir = base.join(&tag);
        if dir.exists() {
            fs::remove_dir_all(&dir).expect("remove an old pgclone directory");
        }
        fs::create_dir_all(&dir).expect("create the pgclone directory");
        let pgclone_dir = [("PGCLONE_DIR", dir.as_path())];
        let cluster = [
            ("PGCLONE_DIR", dir.as_path()),
            ("PGCLONE_MODE", Path::new("cluster")),
        ];
        let cold = self.timed(
            pgclone_copy,
            runner,
            &pgclone_dir,
            &format!("pgclone-{tag}-cold"),
        );
        let (mut sqlx, mut warm, mut in_cluster_mode) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..rounds {
            let run_sqlx = || self.timed(sqlx_copy, runner, &[], &format!("sqlx-{tag}-{r}"));
            let run_pgclone = || {
                let label = format!("pgclone-{tag}-{r}");
                self.timed(pgclone_copy, runner, &pgclone_dir, &label)
            };
            if r % 2 == 0 {
                sqlx.push(run_sqlx());
                warm.push(run_pgclone());
            } else {
                warm.push(run_pgclone());
                sqlx.push(run_sqlx());
            }
            // Goldens do not depend on the mode: this is warm too.
            let label = format!("cluster-{tag}-{r}");
            in_cluster_mode.push(self.timed(pgclone_copy, runner, &cluster, &label));
        }
        // The goldens of the next size are other goldens; these only take disk space.
        if let Err(err) = fs::remove_dir_all(&dir) {
            eprintln!("could not remove {}: {err}", dir.display());
        }
        (median(sqlx), cold, median(warm), median(in_cluster_mode))
    }
}

fn tag(megabytes: u64, runner: Runner) -> String {
    let runner = match runner {
        Runner::CargoTest => "cargo-test",
        Runner::Nextest => "nextest",
    };
    format!("{megabytes}mb-{runner}")
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn mem_total_gb() -> u64 {
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (kb as f64 / 1_048_576.0).round() as u64
}

fn markdown(machine: &str, rounds: usize, fixtures: &[(u64, u64, u64)], rows: &[Row]) -> String {
    // The command that made this table, with the variables that choose what it measured.
    let mut command = String::new();
    for name in ["PGCLONE_PG_BIN", "PGCLONE_DIR"] {
        if let Some(value) = std::env::var_os(name).filter(|v| !v.is_empty()) {
            let _ = write!(command, "{name}={} ", value.to_string_lossy());
        }
    }
    command.push_str("cargo run --release --example sqlx_suite --");
    for arg in std::env::args().skip(1) {
        let _ = write!(command, " {arg}");
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# `examples/bookshelf`: `#[pgclone::test]` against `#[sqlx::test]`\n\n\
         `{command}`\n\n\
         The 11 tests of `examples/bookshelf/tests/library.rs`, \
         and the same file with the attribute renamed to `#[sqlx::test]`. Wall time of \
         `cargo test --test library` and `cargo nextest run --test library` with the tests already \
         built (debug profile); {}.\n",
        if rounds == 1 {
            "one run each".to_string()
        } else {
            format!(
                "median of {rounds} runs (cold: one run); the rounds take turns, each running \
                 both tools back to back, sqlx::test first in every other round; before each \
                 run, untimed, `sync` writes back what earlier runs left in the page cache"
            )
        }
    );
    let _ = writeln!(md, "Machine: {machine}.\n");
    for (megabytes, rows, size) in fixtures {
        let _ = writeln!(
            md,
            "- {megabytes} MB fixture: `archive`, {rows} rows, `pg_total_relation_size` {:.0} MB, \
             loaded by the 6 tests that load `members` and `books` (besides those two fixtures and \
             the migrations).",
            *size as f64 / 1e6
        );
    }
    let _ = writeln!(
        md,
        "\n- sqlx::test: per test, `CREATE DATABASE` on the benchmark's server, then the \
         migrations and the fixtures.\n\
         - pgclone cold: an empty `PGCLONE_DIR`, the goldens are built during the run; warm: \
         goldens cached, in the default mode (database mode: the process's template server \
         under cargo test, the run's shared one under nextest); the last column with \
         `PGCLONE_MODE=cluster`, warm.\n"
    );
    let _ = writeln!(
        md,
        "| fixture | runner | sqlx::test s | pgclone cold s | cold / sqlx | pgclone warm s | warm / sqlx | cluster mode warm s |"
    );
    let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- | --- | --- |");
    for row in rows {
        let _ = writeln!(
            md,
            "| {} MB | {} | {:.2} | {:.2} | {:.2}x | {:.2} | {:.3}x | {:.2} |",
            row.megabytes,
            row.runner.name(),
            row.sqlx,
            row.cold,
            row.cold / row.sqlx,
            row.warm,
            row.warm / row.sqlx,
            row.cluster
        );
    }
    let _ = writeln!(md, "\n![suite wall time](sqlx_suite.svg)");
    md
}

/// Grouped bars, one group per (fixture, runner), on a log scale: sqlx::test at 400 MB is
/// orders of magnitude above the rest, which a linear axis would flatten to nothing.
fn svg(rows: &[Row]) -> String {
    const SERIES: [(&str, &str); 4] = [
        ("sqlx::test", "#d62728"),
        ("pgclone cold", "#ff7f0e"),
        ("pgclone warm (database mode)", "#1f77b4"),
        ("pgclone warm (cluster mode)", "#2ca02c"),
    ];
    let (width, height) = (960.0, 460.0);
    let (left, right, top, bottom) = (70.0, 20.0, 60.0, 70.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let values: Vec<[f64; 4]> = rows
        .iter()
        .map(|r| [r.sqlx, r.cold, r.warm, r.cluster])
        .collect();
    let all = values.iter().flatten().copied();
    let lo = all
        .clone()
        .fold(f64::MAX, f64::min)
        .max(1e-3)
        .log10()
        .floor();
    let hi = all
        .fold(0.0, f64::max)
        .max(1e-3)
        .log10()
        .ceil()
        .max(lo + 1.0);
    let y = |v: f64| top + plot_h * (1.0 - (v.max(1e-3).log10() - lo) / (hi - lo));

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="15">examples/bookshelf suite wall time: #[pgclone::test] vs #[sqlx::test]</text>"#,
        width / 2.0
    );
    // Axis: a labelled grid line at 1, 2 and 5 times each power of ten.
    let mut exp = lo;
    while exp <= hi {
        for step in [1.0, 2.0, 5.0] {
            let v = step * 10f64.powf(exp);
            if v > 10f64.powf(hi) * 1.01 {
                break;
            }
            let _ = writeln!(
                s,
                r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="{}"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                left + plot_w,
                if step == 1.0 { "#bbb" } else { "#eee" },
                left - 6.0,
                y(v) + 4.0,
                (v * 1000.0).round() / 1000.0,
                y = y(v)
            );
        }
        exp += 1.0;
    }
    let _ = writeln!(
        s,
        r#"<line x1="{left}" x2="{left}" y1="{top}" y2="{}" stroke="black"/><line x1="{left}" x2="{}" y1="{}" y2="{}" stroke="black"/>"#,
        top + plot_h,
        left + plot_w,
        top + plot_h,
        top + plot_h
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {}) rotate(-90)" text-anchor="middle">suite wall time, seconds (log scale)</text>"#,
        top + plot_h / 2.0
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">fixture size, test runner</text>"#,
        left + plot_w / 2.0,
        height - 12.0
    );
    // The bars, with their values above them.
    let group_w = plot_w / rows.len().max(1) as f64;
    let bar_w = group_w * 0.8 / SERIES.len() as f64;
    for (g, (row, vals)) in rows.iter().zip(&values).enumerate() {
        let x0 = left + g as f64 * group_w + group_w * 0.1;
        for (k, (&v, (_, color))) in vals.iter().zip(SERIES).enumerate() {
            let x = x0 + k as f64 * bar_w;
            let top_y = y(v);
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{top_y:.1}" width="{:.1}" height="{:.1}" fill="{color}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                bar_w - 2.0,
                top + plot_h - top_y,
                x + bar_w / 2.0 - 1.0,
                top_y - 3.0,
                format_seconds(v)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{} MB, {}</text>"#,
            x0 + group_w * 0.4,
            top + plot_h + 18.0,
            row.megabytes,
            row.runner.name()
        );
    }
    // Legend, in one line under the title.
    for (k, (name, color)) in SERIES.iter().enumerate() {
        let x = left + k as f64 * 220.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="34" width="12" height="12" fill="{color}"/><text x="{}" y="44">{name}</text>"#,
            x + 16.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn format_seconds(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
