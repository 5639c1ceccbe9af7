//! Does the default pool make a real-shaped suite faster or slower? Runs the app-shaped suite
//! (`tests/app`: migrations, a 20,000-order fixture, ten tests doing real work) in each mode,
//! with the default pool and with `PGCLONE_POOL=0`, alternating, several rounds, and prints the
//! median wall time of each (the whole test process: start, tests, exit).
//!
//! ```sh
//! PGCLONE_PG_BIN=... PGCLONE_DIR=/mnt/xfs/pgclone cargo run --release --example pool_suite [rounds]
//! ```

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(5, |n| n.parse().expect("rounds"));
    let suite = build_suite();
    // Build the golden once, so no round pays for it.
    run(&suite, "database::", None);
    run(&suite, "cluster::", None);
    println!("suite: tests/app (10 tests per mode), {rounds} rounds, alternating; median wall time of the test process");
    println!("| mode | default pool | PGCLONE_POOL=0 | default / off |");
    println!("| --- | --- | --- | --- |");
    for (mode, filter) in [("database", "database::"), ("cluster", "cluster::")] {
        let (mut pooled, mut unpooled) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            pooled.push(run(&suite, filter, None));
            unpooled.push(run(&suite, filter, Some("0")));
        }
        let (p, u) = (median(&mut pooled), median(&mut unpooled));
        println!(
            "| {mode} | {:.2} s | {:.2} s | {:.2}x |",
            p.as_secs_f64(),
            u.as_secs_f64(),
            p.as_secs_f64() / u.as_secs_f64()
        );
    }
}

/// Builds the suite and returns its test binary.
fn build_suite() -> PathBuf {
    let output = Command::new(env!("CARGO"))
        .args(["test", "--release", "--test", "app", "--no-run"])
        .stdout(Stdio::null())
        .output()
        .expect("run cargo");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // "Executable tests/app/main.rs (target/release/deps/app-0123abcd)"
    let path = stderr
        .lines()
        .find_map(|line| line.trim().strip_prefix("Executable tests/app/main.rs ("))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no test binary named in:\n{stderr}"));
    PathBuf::from(path)
}

/// Runs the suite's tests matching `filter` with `PGCLONE_POOL=pool` (or the default).
fn run(suite: &PathBuf, filter: &str, pool: Option<&str>) -> Duration {
    let mut cmd = Command::new(suite);
    cmd.arg(filter)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_MANIFEST_DIR", env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match pool {
        Some(size) => cmd.env("PGCLONE_POOL", size),
        None => cmd.env_remove("PGCLONE_POOL"),
    };
    let started = Instant::now();
    let status = cmd.status().expect("run the suite");
    let took = started.elapsed();
    assert!(
        status.success(),
        "the suite failed ({filter}, pool {pool:?})"
    );
    took
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}
