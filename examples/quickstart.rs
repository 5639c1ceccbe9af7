//! The main job: start a throwaway PostgreSQL cluster, run a query, show what happened, clean up.
//!
//! Run it with `cargo run --example quickstart`.

use std::time::Instant;

use pgclone::TempCluster;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total = Instant::now();
    let cluster = TempCluster::start()?;
    let binaries = cluster.binaries();
    println!(
        "postgres    {} from {}",
        binaries.version(),
        binaries.bin_dir().display()
    );
    println!("lives in    {}", cluster.dir().display());
    println!("socket      {}", cluster.server().socket_path().display());
    println!("connect     psql '{}'", cluster.connection_string());
    match pgclone::run_as_user()? {
        Some(user) => println!("runs as     {} (this process is root)", user.name()),
        None => println!("runs as     this user"),
    }

    let query = Instant::now();
    let (client, connection) =
        tokio_postgres::connect(&cluster.connection_string(), tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    let version: String = client.query_one("select version()", &[]).await?.get(0);
    let query_time = query.elapsed();
    println!("server says {version}");

    let timings = cluster.timings();
    println!("initdb      {:>7.1} ms", ms(timings.initdb));
    println!("start→ready {:>7.1} ms", ms(timings.start));
    println!("connect+query {:>5.1} ms", ms(query_time));

    drop(client);
    let _ = connection.await;
    let dir = cluster.dir().to_path_buf();
    let teardown = Instant::now();
    cluster.close()?;
    println!(
        "teardown    {:>7.1} ms ({} removed: {})",
        ms(teardown.elapsed()),
        dir.display(),
        !dir.exists()
    );
    println!("total       {:>7.1} ms", ms(total.elapsed()));
    Ok(())
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
