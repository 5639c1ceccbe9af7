//! What the benchmarks and examples share: the fixture they load, a client, percentiles.
//! Examples include it with `mod common;`, benchmarks with
//! `#[path = "../examples/common/mod.rs"] mod common;`.
#![allow(dead_code)] // each program uses a part of it

use std::path::{Path, PathBuf};
use std::time::Duration;

/// SQL that creates `table` and fills it with about `megabytes` MB (~180 bytes a row with its
/// primary-key index entry).
pub fn fixture_sql(table: &str, megabytes: u64) -> String {
    format!(
        "create table {table}(id int primary key, payload text);
         insert into {table} select g, md5(g::text) || md5(g::text) || md5(g::text) from generate_series(1, {}) g;",
        megabytes * 1_000_000 / 180
    )
}

/// The data directory of the built golden `name` under the pgclone directory `root`, so that
/// the alternatives start from the very files pgclone clones.
pub fn golden_data_dir(root: &Path, name: &str) -> Option<PathBuf> {
    let prefix = format!("{name}-");
    std::fs::read_dir(root.join("golden"))
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .find(|dir| {
            dir.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .starts_with(&prefix)
                && dir.join("READY").exists()
        })
        .map(|dir| dir.join("data"))
}

/// A temporary directory in `dir` that the server's user can enter (pgclone runs PostgreSQL as
/// another user when the benchmark runs as root), removed on drop.
pub fn work_dir(dir: &Path, prefix: &str) -> std::io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::Builder::new().prefix(prefix).tempdir_in(dir)?;
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(work)
}

/// Runs `sql` (statements that return nothing) on a connection of its own, from sync code.
pub fn execute_blocking(url: &str, sql: &str) -> Result<(), Box<dyn std::error::Error>> {
    current_thread()?.block_on(async { connect(url).await?.batch_execute(sql).await })?;
    Ok(())
}

/// The text of the one value `query` returns, on a connection of its own, from sync code.
pub fn query_text_blocking(url: &str, query: &str) -> Result<String, Box<dyn std::error::Error>> {
    Ok(current_thread()?.block_on(async {
        let row = connect(url).await?.query_one(query, &[]).await?;
        Ok::<_, tokio_postgres::Error>(row.get::<_, String>(0))
    })?)
}

fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// A client on the current runtime, its connection driven by a spawned task.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The `q` quantile (0.5: the median) of `samples`, which it sorts, in milliseconds.
pub fn percentile_ms(samples: &mut [Duration], q: f64) -> f64 {
    samples.sort();
    samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0
}
