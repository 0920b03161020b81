//! `medledger-peer`: parses the command line and runs it (see `medledger_peer::cli`).

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    medledger_common::config::init_logging();
    match medledger_peer::cli::run(medledger_peer::cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
