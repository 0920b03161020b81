//! `medledger-explorer`: parses the command line and runs the explorer (see `medledger_explorer`).

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    medledger_common::config::init_logging();
    medledger_common::config::fail_stop_on_panic();
    match medledger_explorer::run(medledger_explorer::Config::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
