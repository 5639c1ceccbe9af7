//! The `pgclone` command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pgclone",
    version,
    about = "Clone PostgreSQL clusters for tests, and diagnose the setup"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the PostgreSQL binaries found and the user that will run them.
    Doctor,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Doctor => doctor(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgclone: {e}");
            ExitCode::FAILURE
        }
    }
}

fn doctor() -> pgclone::Result<()> {
    let binaries = pgclone::PgBinaries::find()?;
    println!(
        "postgres:  {} in {}",
        binaries.version(),
        binaries.bin_dir().display()
    );
    match pgclone::run_as_user()? {
        Some(user) => println!(
            "run as:    {} (uid {}), because this process is root",
            user.name(),
            user.uid()
        ),
        None => println!("run as:    this user"),
    }
    Ok(())
}
