//! The `medledger-peer` command line: `node start`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::node::{NodeError, PeerConfig, start};
use crate::plugins::PluginRegistry;

#[derive(Parser, Debug)]
#[command(
    name = "medledger-peer",
    about = "MedLedger peer: ledger, endorser, Fabric Gateway and Deliver services"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Peer node operations.
    #[command(subcommand)]
    Node(NodeCommand),
}

#[derive(Subcommand, Debug)]
enum NodeCommand {
    /// Start the peer with a YAML configuration.
    #[command(
        after_help = "Example:\n  medledger-peer node start --config network/peers/peer0.hospital1/core.yaml\n\n\
        Any top-level scalar field can be overridden by MEDLEDGER_PEER_<FIELD>, e.g.\n  \
        MEDLEDGER_PEER_LISTENADDRESS=127.0.0.1:7051 medledger-peer node start --config core.yaml"
    )]
    Start {
        /// Path of the peer's core.yaml.
        #[arg(long, env = "MEDLEDGER_PEER_CONFIG", default_value = "core.yaml")]
        config: PathBuf,
    },
}

/// Runs one CLI invocation.
pub async fn run(cli: Cli) -> Result<(), NodeError> {
    match cli.command {
        Command::Node(NodeCommand::Start { config }) => {
            let cfg = PeerConfig::load(&config)?;
            let peer = start(cfg, PluginRegistry::default()).await?;
            println!("peer listening on {}", peer.address);
            let _ = tokio::signal::ctrl_c().await;
            peer.stop().await;
            Ok(())
        }
    }
}
