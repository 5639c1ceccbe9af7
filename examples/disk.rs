//! What N live clones cost: disk (the file system's own free-space count, and FIEMAP's shared
//! extents) and memory (PSS of each clone's processes), with every clone's server running.
//!
//! ```sh
//! PGCLONE_DIR=/mnt/xfs/pgclone cargo run --release --example disk -- 100 400
//! ```
//! (100 clones of a ~400 MB golden.) Target (README, "Targets"): on a reflink file system, 100
//! live clones of a 400 MB golden cost at most 10% of the golden's size in extra disk.

use std::path::Path;

use pgclone::{Golden, TestDb};

mod common;

type Error = Box<dyn std::error::Error>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>().expect("numbers: CLONES MEGABYTES"));
    let clones = args.next().unwrap_or(100) as usize;
    let megabytes = args.next().unwrap_or(400);
    let golden =
        Golden::new(format!("disk{megabytes}mb")).sql(common::fixture_sql("fixture", megabytes));
    let first = TestDb::builder(&golden).pool(0).start().await?; // builds the golden
    let root = pgclone::gc::pgclone_dir()?;
    let fs = pgclone::clone::probe_file_system(&root)?;
    let golden_bytes = tree_bytes(first.data_dir())?.0;
    drop(first);
    std::thread::sleep(std::time::Duration::from_millis(500)); // let the background delete finish

    let per_file = empty_file_cost(&root)?;
    let (free_before, inodes_before) = free_space(&root)?;
    let mut held = Vec::new();
    for _ in 0..clones {
        held.push(TestDb::builder(&golden).pool(0).start().await?);
    }
    let (free_after, inodes_after) = free_space(&root)?;
    let (mut total, mut shared) = (0, 0);
    for db in &held {
        let clone_dir = db
            .data_dir()
            .parent()
            .expect("a clone's data directory has a parent");
        let (bytes, shared_bytes) = tree_bytes(clone_dir)?;
        total += bytes;
        shared += shared_bytes;
    }
    let inodes = inodes_before.saturating_sub(inodes_after) / clones as u64;
    let written = (total - shared) / clones as u64;
    let pss: Vec<u64> = held.iter().map(|db| clone_pss(db.data_dir())).collect();
    let extra = free_before.saturating_sub(free_after);

    println!(
        "# PostgreSQL {}, {} ({})",
        pgclone::server::PgBinaries::find()?.version(),
        root.display(),
        fs.fs_type
    );
    println!("golden data directory       {:>10.1} MB", mb(golden_bytes));
    println!("live clones                 {clones:>10} (every server running)");
    println!("their files, added up       {:>10.1} MB", mb(total));
    println!(
        "  sharing extents (FIEMAP)  {:>10.1} MB ({:.1}%)",
        mb(shared),
        100.0 * shared as f64 / total.max(1) as f64
    );
    println!(
        "extra disk actually used    {:>10.1} MB = {:.1}% of one golden, {:.2} MB a clone",
        mb(extra),
        100.0 * extra as f64 / golden_bytes as f64,
        mb(extra) / clones as f64
    );
    println!("  of which, a clone's share:");
    println!(
        "    written by its server     {:>10.2} MB (extents it no longer shares)",
        mb(written)
    );
    println!(
        "    its files themselves      {:>10.2} MB ({inodes} new inodes; an empty file costs {per_file} bytes here)",
        mb(inodes * per_file)
    );
    println!(
        "    the rest                  {:>10.2} MB (directory blocks, copy-on-write staging, extent maps)",
        (mb(extra) / clones as f64 - mb(written) - mb(inodes * per_file)).max(0.0)
    );
    println!(
        "memory (PSS) a clone        {:>10.1} MB median, {:.1} MB in all",
        mb(median(pss.clone())),
        mb(pss.iter().sum())
    );
    Ok(())
}

/// Bytes of all files below `dir`, and how many of them share extents (FIEMAP).
fn tree_bytes(dir: &Path) -> Result<(u64, u64), Error> {
    let (mut bytes, mut shared) = (0, 0);
    for entry in std::fs::read_dir(dir)?.flatten() {
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let (b, s) = tree_bytes(&entry.path())?;
            bytes += b;
            shared += s;
        } else if meta.is_file() {
            bytes += meta.len();
            if let Ok(file) = std::fs::File::open(entry.path()) {
                shared += pgclone::clone::shared_bytes(&file).unwrap_or(0);
            }
        }
    }
    Ok((bytes, shared))
}

/// Free bytes and free inodes of the file system holding `dir`.
fn free_space(dir: &Path) -> Result<(u64, u64), Error> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok((stat.f_bfree * stat.f_frsize, stat.f_ffree))
}

/// What one more empty file costs this file system (its inode and directory entry), measured by
/// making 2,000 of them.
fn empty_file_cost(root: &Path) -> Result<u64, Error> {
    let scratch = tempfile::tempdir_in(root)?;
    let before = free_space(root)?.0;
    for i in 0..2000 {
        std::fs::File::create(scratch.path().join(i.to_string()))?;
    }
    Ok(before.saturating_sub(free_space(root)?.0) / 2000)
}

/// The proportional set size of the postmaster serving `data_dir` and its children.
fn clone_pss(data_dir: &Path) -> u64 {
    let Some(postmaster) = std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|t| t.lines().next()?.trim().parse::<u32>().ok())
    else {
        return 0;
    };
    let mut pids = vec![postmaster];
    if let Ok(children) =
        std::fs::read_to_string(format!("/proc/{postmaster}/task/{postmaster}/children"))
    {
        pids.extend(
            children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|rollup| {
            let line = rollup.lines().find(|l| l.starts_with("Pss:"))?;
            line.split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
                .map(|kb| kb * 1024)
        })
        .sum()
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort();
    values[values.len() / 2]
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}
