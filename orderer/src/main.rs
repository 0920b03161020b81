//! `medledger-orderer`: parses the command line and runs it (see `medledger_orderer::cli`).

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    medledger_common::config::init_logging();
    medledger_common::config::fail_stop_on_panic();
    match medledger_orderer::cli::run(medledger_orderer::cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
