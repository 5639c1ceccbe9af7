//! The `pgclone` command: clone a running or stopped cluster by hand, diagnose the setup,
//! serve a copy of a golden to tools, collect what killed processes left behind.

mod serve;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pgclone::{
    clone::{CloneEvent, CloneOptions, CloneReport},
    server::{Server, ServerOptions},
};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "pgclone",
    version,
    about = "Copy-on-write clones of PostgreSQL clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Clone the cluster in SRC into DST: through the backup API if it runs, as it is if stopped.
    Clone {
        /// The source data directory.
        src: PathBuf,
        /// The new data directory (must not exist, or be empty).
        dst: PathBuf,
        /// Start the clone (through backup recovery) and leave it running.
        #[arg(long)]
        start: bool,
        /// Make the clone a read-only standby (standby.signal).
        #[arg(long)]
        standby: bool,
        /// Allow DST on another file system than SRC (every byte is copied, none shared).
        #[arg(long)]
        allow_copy: bool,
        /// The database user that runs the backup API on a running source (default: as libpq,
        /// the OS user, and postgres for root).
        #[arg(long)]
        user: Option<String>,
        /// Copy the tablespace at OLD (its location on the source) to NEW instead of
        /// `DST-tablespaces/<oid>` (repeatable; as pg_basebackup's option).
        #[arg(long = "tablespace-mapping", value_name = "OLD=NEW", value_parser = parse_mapping)]
        tablespace_mapping: Vec<(PathBuf, PathBuf)>,
        /// The source's checkpoint at the start of an online clone: `spread` (paced by its
        /// checkpoint_completion_target; no I/O spike on a busy server) or `fast` (immediate).
        #[arg(long, value_enum, default_value = "spread")]
        checkpoint: Checkpoint,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// The pgclone directory where unfinished clones are recorded for `gc`.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Show the PostgreSQL binaries, the user that runs them, and what DIR's file system can do;
    /// given SRC and DST, what `clone SRC DST` would do (method, file systems, connection).
    Doctor {
        /// DIR: the directory clones would go to (default: the pgclone directory); or SRC DST.
        #[arg(num_args = 0..=2)]
        paths: Vec<PathBuf>,
        /// With SRC DST: as `clone --allow-copy`.
        #[arg(long)]
        allow_copy: bool,
        /// With SRC DST: as `clone --user`.
        #[arg(long)]
        user: Option<String>,
    },
    /// Start a copy of a golden built from migrations and SQL files, print its DATABASE_URL, and
    /// keep it until Ctrl-C: for `cargo sqlx prepare`, sqlx's `query!` at build time, IDEs.
    /// Goldens are cached in PGCLONE_DIR (default: the pgclone directory), as for tests.
    Serve {
        /// A migrations directory (repeatable; default: ./migrations when it exists).
        #[arg(long)]
        migrations: Vec<PathBuf>,
        /// How the migrations are written and recorded.
        #[arg(long, value_enum, default_value = "sqlx")]
        format: serve::Format,
        /// A SQL file run after the migrations, e.g. a fixture (repeatable, in order).
        #[arg(long = "sql-file")]
        sql_files: Vec<PathBuf>,
    },
    /// Goldens a test suite uses.
    Golden {
        #[command(subcommand)]
        command: GoldenCommand,
    },
    /// Remove what killed processes left: clones of dead owners, unfinished clones, sockets.
    Gc {
        /// Also remove the clones kept on purpose (PGCLONE_KEEP, keep()).
        #[arg(long)]
        kept: bool,
        /// The pgclone directory (default: PGCLONE_DIR, else the default root).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// `OLD=NEW`, two absolute paths (an `=` in a path is written `\=`, as pg_basebackup has it).
fn parse_mapping(text: &str) -> Result<(PathBuf, PathBuf), String> {
    let mut split = None;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '=' if !escaped => {
                split = Some(i);
                break;
            }
            _ => escaped = false,
        }
    }
    let i = split.ok_or("write it as OLD=NEW")?;
    let unescape = |part: &str| PathBuf::from(part.replace("\\=", "="));
    let (old, new) = (unescape(&text[..i]), unescape(&text[i + 1..]));
    if !old.is_absolute() || !new.is_absolute() {
        return Err("both OLD and NEW must be absolute paths".into());
    }
    Ok((old, new))
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Checkpoint {
    Spread,
    Fast,
}

#[derive(Subcommand)]
enum GoldenCommand {
    /// Print one key for the goldens the tests use, for a CI cache of PGCLONE_DIR/golden
    /// (e.g. actions/cache's `key`): runs the tests (default: `cargo test --workspace
    /// --no-fail-fast`) with each
    /// #[pgclone::test] recording its golden instead of running. Nothing is built.
    Key {
        /// Print each golden's key and database name instead (their directories in
        /// PGCLONE_DIR/golden).
        #[arg(long)]
        list: bool,
        /// The command that runs the tests (after `--`).
        #[arg(last = true)]
        command: Vec<std::ffi::OsString>,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Clone {
            src,
            dst,
            start,
            standby,
            allow_copy,
            user,
            checkpoint,
            tablespace_mapping,
            json,
            dir,
        } => clone(
            &src,
            &dst,
            start,
            matches!(checkpoint, Checkpoint::Spread),
            user.into_iter().fold(
                tablespace_mapping.into_iter().fold(
                    CloneOptions::new()
                        .standby(standby)
                        .allow_copy(allow_copy)
                        .spread_checkpoint(matches!(checkpoint, Checkpoint::Spread)),
                    |options, (old, new)| options.tablespace_mapping(old, new),
                ),
                CloneOptions::user,
            ),
            json,
            dir,
        ),
        Command::Doctor {
            paths,
            allow_copy,
            user,
        } => match paths.as_slice() {
            [src, dst] => doctor_pair(
                src,
                dst,
                user.into_iter().fold(
                    CloneOptions::new().allow_copy(allow_copy),
                    CloneOptions::user,
                ),
            ),
            _ => doctor(paths.into_iter().next()),
        },
        Command::Serve {
            migrations,
            format,
            sql_files,
        } => serve::serve(serve::recipe(migrations, format, sql_files)),
        Command::Golden {
            command: GoldenCommand::Key { list, command },
        } => golden_key(list, command),
        Command::Gc { kept, dir } => gc(kept, dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // As shells report a process ended by SIGINT.
        Err(e) if e.kind() == pgclone::ErrorKind::Interrupted => ExitCode::from(130),
        Err(e) => {
            eprintln!("pgclone: {e}");
            ExitCode::FAILURE
        }
    }
}

fn golden_key(list: bool, mut command: Vec<std::ffi::OsString>) -> pgclone::Result<()> {
    if command.is_empty() {
        // Every test binary, even after one fails: a golden left out would make a stale key.
        command = ["cargo", "test", "--workspace", "--no-fail-fast"]
            .map(Into::into)
            .to_vec();
    }
    let keys = pgclone::golden_keys(&command)?;
    if list {
        for golden in &keys {
            println!("{} {}", golden.key, golden.name);
        }
        return Ok(());
    }
    // One key for the set: any change of any golden changes it.
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    for golden in &keys {
        hash.update(format!("{}\n", golden.key));
    }
    let digest = hash.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    println!("{hex}");
    Ok(())
}

/// The log of a server `clone --start` leaves running: inside the clone's data directory, so that
/// removing the clone (by hand or by `gc`) removes it. PostgreSQL ignores files it does not know
/// at the top of a data directory.
const SERVER_LOG: &str = "pgclone.log";

fn clone(
    src: &std::path::Path,
    dst: &std::path::Path,
    start: bool,
    spread_checkpoint: bool,
    options: CloneOptions,
    json: bool,
    dir: Option<PathBuf>,
) -> pgclone::Result<()> {
    // What an earlier, killed `pgclone clone` left: named, for `gc`.
    for target in pgclone::gc::unfinished_clones(dir.as_deref()).unwrap_or_default() {
        eprintln!(
            "pgclone: an earlier clone was killed before it finished and left {} (it cannot start); `pgclone gc` removes it",
            target.display()
        );
    }
    let _record = pgclone::gc::UnfinishedClone::begin(dir.as_deref(), dst)?;
    if spread_checkpoint && src.join("postmaster.pid").exists() {
        // Minutes of silence otherwise: say what it waits for, and how not to.
        eprintln!(
            "pgclone: the backup begins with a spread checkpoint on the running source, as long as \
             its checkpoint_timeout × checkpoint_completion_target (4.5 min by default); \
             --checkpoint fast begins at once, with an I/O burst"
        );
    }
    let options = if std::io::stderr().is_terminal() {
        options.on_progress(show_progress)
    } else {
        options
    };
    let options = options.stop_when(stop_on_signal());
    let report = pgclone::clone::clone_cluster(src, dst, &options).inspect_err(|e| {
        if e.kind() == pgclone::ErrorKind::Interrupted {
            eprintln!("pgclone: the partial clone in {} is removed", dst.display());
        }
    })?;
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
    let log = dst.join(SERVER_LOG);
    if !json {
        // The clone is complete: the report comes first, whatever starting it does.
        print_report(src, dst, &report);
    }
    let started = match start {
        true => match start_clone(dst, &log) {
            Ok(started) => Some(started),
            Err(e) => {
                if json {
                    println!("{:#}", report_json(src, dst, &report, None, &log));
                }
                return Err(e);
            }
        },
        false => None,
    };
    if json {
        println!(
            "{:#}",
            report_json(src, dst, &report, started.as_ref(), &log)
        );
        return Ok(());
    }
    if let Some(started) = started {
        println!(
            "started     pid {}, PostgreSQL {}, ready after {:.1} ms (backup recovery)",
            started.pid,
            started.version,
            ms(started.ready_after)
        );
        // As root, psql and pg_ctl run as the server's user: the copied pg_hba.conf may know only
        // it (peer), and pg_ctl refuses root. runuser (util-linux) is there where sudo may not be.
        let as_user = match pgclone::server::run_as_user()? {
            Some(user) => format!("runuser -u {} -- ", user.name()),
            None => String::new(),
        };
        println!(
            "connect     {as_user}psql -h {} -p {}",
            started.socket_dir.display(),
            started.port
        );
        println!("log         {}", log.display());
        println!(
            "stop        {as_user}{} stop -D {}   (or kill -INT {})",
            started.pg_ctl.display(),
            dst.display(),
            started.pid
        );
    }
    Ok(())
}

/// A flag set on Ctrl-C or SIGTERM (by a thread waiting for them), for the clone to stop at its
/// next file and remove what it made.
fn stop_on_signal() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::signal::unix::{signal, SignalKind};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            let (Ok(mut interrupt), Ok(mut terminate)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            for signals in 1.. {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                if signals > 1 {
                    // Asked twice: at once (gc removes what is left, and the next clone says so).
                    std::process::exit(130);
                }
                flag.store(true, Ordering::Relaxed);
                eprintln!("\npgclone: interrupted; stopping (again to quit at once)");
            }
        })
    });
    stop
}

/// A clone `clone --start` left running.
struct Started {
    pid: u32,
    socket_dir: PathBuf,
    port: u16,
    ready_after: std::time::Duration,
    version: String,
    /// The `pg_ctl` of the binaries that started it.
    pg_ctl: PathBuf,
}

/// Starts the finished clone in `dst` with binaries of its own major, detached; a failure says
/// that the clone itself is complete.
fn start_clone(dst: &std::path::Path, log: &std::path::Path) -> pgclone::Result<Started> {
    let version = std::fs::read_to_string(dst.join("PG_VERSION")).unwrap_or_default();
    let major: u32 = version.trim().parse().unwrap_or(0);
    let started = pgclone::server::PgBinaries::find_major(major).and_then(|binaries| {
        let version = binaries.version().to_string();
        let pg_ctl = binaries.program("pg_ctl");
        let options = ServerOptions::new()
            .binaries(binaries)
            .detached(true)
            .log_file(log);
        let server = Server::start(dst, &options)?;
        let (socket_dir, port, ready_after) = (
            server.socket_dir().to_path_buf(),
            server.port(),
            server.ready_after(),
        );
        Ok(Started {
            pid: server.detach(),
            socket_dir,
            port,
            ready_after,
            version,
            pg_ctl,
        })
    });
    started.inspect_err(|_| {
        eprintln!(
            "pgclone: the clone in {} is complete, but starting it failed (start it yourself with pg_ctl of PostgreSQL {major}, or remove it with rm -rf):",
            dst.display()
        );
    })
}

fn report_json(
    src: &std::path::Path,
    dst: &std::path::Path,
    report: &CloneReport,
    started: Option<&Started>,
    log: &std::path::Path,
) -> serde_json::Value {
    let steps: Vec<_> = report
        .steps
        .iter()
        .map(|(step, d)| json!({"step": step.to_string(), "ms": ms(*d)}))
        .collect();
    let mut out = json!({
        "source": src, "target": dst,
        "method": report.method().map(|m| m.to_string()),
        "files": report.files, "bytes": report.bytes, "bytes_shared": report.bytes_shared(),
        "dirs": report.dirs, "excluded": report.excluded, "wal_segments": report.wal_segments,
        "start_lsn": report.start_lsn.map(|l| l.to_string()), "stop_lsn": report.stop_lsn.map(|l| l.to_string()),
        "steps": steps, "ms": ms(report.elapsed), "from_standby": report.from_standby,
    });
    if let Some(started) = started {
        out["server"] = json!({
            "pid": started.pid, "socket_dir": started.socket_dir, "port": started.port,
            "ready_ms": ms(started.ready_after), "log": log, "version": started.version,
        });
    }
    out
}

fn print_report(src: &std::path::Path, dst: &std::path::Path, report: &CloneReport) {
    let method = report
        .method()
        .map_or("none".to_string(), |m| m.to_string());
    println!("cloned      {} -> {}", src.display(), dst.display());
    println!("method      {method}");
    println!(
        "files       {} ({}), {} shared, {} directories, {} left out",
        report.files,
        mib(report.bytes),
        mib(report.bytes_shared()),
        report.dirs,
        report.excluded
    );
    if let (Some(start), Some(stop)) = (report.start_lsn, report.stop_lsn) {
        println!(
            "backup      start LSN {start}, stop LSN {stop}, {} WAL segment(s)",
            report.wal_segments
        );
    }
    if report.from_standby && report.start_lsn.is_some() {
        println!("standby     the source is a standby: the clone is a cluster of its own (--standby keeps it one)");
    } else if report.from_standby {
        println!(
            "standby     the source is a stopped standby, and so is the clone (read-only); promote it: pg_ctl promote -D {}",
            dst.display()
        );
    }
    for (step, duration) in &report.steps {
        println!("  {:<18} {:>9.1} ms", step.to_string(), ms(*duration));
    }
    println!("total       {:.1} ms", ms(report.elapsed));
}

/// One status line on the terminal, rewritten in place.
fn show_progress(event: CloneEvent) {
    let line = match event {
        CloneEvent::Done(step) => format!("done: {step}"),
        CloneEvent::Copied { files, bytes } => format!("copying: {files} files, {}", mib(bytes)),
        _ => return,
    };
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K{line}");
    let _ = err.flush();
}

/// What `clone SRC DST` would do, and what would stop it.
fn doctor_pair(
    src: &std::path::Path,
    dst: &std::path::Path,
    options: CloneOptions,
) -> pgclone::Result<()> {
    let preview = pgclone::clone::preview_clone(src, dst, &options)?;
    let kind = match preview.running {
        Some(pid) => {
            format!("running (postmaster pid {pid}): an online clone through the backup API")
        }
        None => "stopped: an offline clone, copied as it is".to_string(),
    };
    println!(
        "source           {} (PostgreSQL {}), {kind}",
        preview.source.display(),
        preview.major
    );
    println!(
        "binaries         {}",
        match &preview.binaries {
            Ok(b) => format!(
                "PostgreSQL {} in {} (the source's major, for --start)",
                b.version(),
                b.bin_dir().display()
            ),
            Err(e) => format!("none of major {}: {e}", preview.major),
        }
    );
    println!(
        "file systems     {} -> {}",
        preview.source_fs, preview.target_fs
    );
    println!(
        "method           {}",
        preview
            .method
            .as_ref()
            .map_or_else(|e| format!("refused: {e}"), Clone::clone)
    );
    if let Some(connection) = &preview.connection {
        println!(
            "connection       {}",
            connection
                .as_ref()
                .map_or_else(|e| format!("fails: {e}"), Clone::clone)
        );
    }
    for note in &preview.notes {
        println!("note             {note}");
    }
    for refusal in &preview.refusals {
        println!("refused          {refusal}");
    }
    let blocked = !preview.refusals.is_empty()
        || preview.method.is_err()
        || preview.connection.as_ref().is_some_and(|c| c.is_err());
    println!(
        "verdict          {}",
        if blocked {
            "the clone would fail, as said above"
        } else {
            "the clone would work"
        }
    );
    if blocked {
        // For scripts: a clone that would fail is a failed check (exit 1), said above.
        std::process::exit(1);
    }
    Ok(())
}

fn doctor(dir: Option<PathBuf>) -> pgclone::Result<()> {
    let binaries = pgclone::server::PgBinaries::find()?;
    println!(
        "postgres         {} in {}",
        binaries.version(),
        binaries.bin_dir().display()
    );
    match pgclone::server::run_as_user()? {
        Some(user) => println!(
            "run as           {} (uid {}), because this process is root",
            user.name(),
            user.uid()
        ),
        None => println!("run as           this user"),
    }
    let dir = match dir {
        Some(dir) => dir,
        None => pgclone::gc::pgclone_dir()?,
    };
    let fs = pgclone::clone::probe_file_system(&dir)?;
    println!("directory        {} ({})", dir.display(), fs.fs_type);
    println!(
        "FICLONE          {}",
        fs.reflink.as_ref().map_or_else(
            |e| format!("no: {e}"),
            |()| "yes: reflinks share extents".into()
        )
    );
    println!(
        "copy_file_range  {}",
        match &fs.copy_file_range {
            Ok(true) => "yes, and it shares extents".to_string(),
            Ok(false) => "yes, but it copies the bytes".to_string(),
            Err(e) => format!("no: {e}"),
        }
    );
    let why = if fs.shares_extents() {
        format!(
            "{} shares extents: a clone costs no space and little time",
            fs.fs_type
        )
    } else {
        format!("{} cannot share extents: every clone copies every byte (XFS with reflink=1 or btrfs can)", fs.fs_type)
    };
    println!("cluster mode     {} ({why})", fs.best_method());
    let clone = pgclone::server::features::has_file_copy_method_clone(binaries.version().major());
    let database = match (clone, fs.copy_file_range == Ok(true)) {
        (true, true) => "CREATE DATABASE ... STRATEGY FILE_COPY with file_copy_method = clone: shares extents".to_string(),
        (true, false) => "CREATE DATABASE ... STRATEGY FILE_COPY with file_copy_method = clone: the kernel copies (no extents shared here)".to_string(),
        (false, _) => format!("CREATE DATABASE ... STRATEGY FILE_COPY: PostgreSQL {} copies files (file_copy_method = clone needs 18)", binaries.version().major()),
    };
    println!("database mode    {database}");
    Ok(())
}

fn gc(kept: bool, dir: Option<PathBuf>) -> pgclone::Result<()> {
    let report = pgclone::gc::collect_garbage(dir.as_deref(), kept)?;
    for clone in &report.clones {
        println!("removed clone      {}", clone.display());
    }
    for target in &report.unfinished {
        println!("removed unfinished {}", target.display());
    }
    println!(
        "{} clone(s), {} unfinished clone(s), {} socket director(ies) removed",
        report.clones.len(),
        report.unfinished.len(),
        report.socket_dirs
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tablespace_mappings_read_as_pg_basebackup_writes_them() {
        assert_eq!(
            parse_mapping("/srv/ts=/mnt/copy").unwrap(),
            (PathBuf::from("/srv/ts"), PathBuf::from("/mnt/copy"))
        );
        assert_eq!(
            parse_mapping(r"/srv/a\=b=/mnt/c").unwrap(),
            (PathBuf::from("/srv/a=b"), PathBuf::from("/mnt/c"))
        );
        assert!(parse_mapping("/srv/ts").is_err());
        assert!(parse_mapping("ts=/mnt/copy").is_err());
    }
}
