//! `medledger-peer`: parses the command line and runs it (see `medledger_peer::node::cli`).

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    medledger_common::config::init_logging();
    medledger_common::config::fail_stop_on_panic();
    match medledger_peer::node::cli::run(medledger_peer::node::cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
