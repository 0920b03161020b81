//! The `medledger-orderer` command line: `start`, `genesis` (our configtxgen), `channel join`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use prost::Message;

use crate::genesis::{GenesisError, from_configtx};
use crate::node::{NodeError, OrdererConfig, join_channel, read_genesis, start};
use crate::store::BlockStore;

/// Errors the CLI reports.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Genesis(#[from] GenesisError),
    #[error("{0}")]
    Io(String),
    #[error(
        "no orderer configuration at {0} (pass --config with the orderer's YAML file, or set \
         MEDLEDGER_ORDERER_CONFIG)"
    )]
    NoConfig(PathBuf),
}

/// The orderer's YAML at `path`; a missing file is named as such, not as a configuration fault.
fn load_config(path: &std::path::Path) -> Result<OrdererConfig, CliError> {
    if !path.exists() {
        return Err(CliError::NoConfig(path.to_path_buf()));
    }
    Ok(OrdererConfig::load(path)?)
}

#[derive(Parser, Debug)]
#[command(
    name = "medledger-orderer",
    about = "MedLedger BFT ordering service node"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the orderer.
    #[command(
        after_help = "Example:\n  medledger-orderer start --config network/orderers/orderer1/orderer.yaml"
    )]
    Start {
        #[arg(long, env = "MEDLEDGER_ORDERER_CONFIG", default_value = "orderer.yaml")]
        config: PathBuf,
    },
    /// Make a channel's genesis block from a configtx.yaml.
    #[command(
        after_help = "Example:\n  medledger-orderer genesis --configtx network/configtx.yaml --output network/channel-artifacts/medchannel.block"
    )]
    Genesis {
        #[arg(long)]
        configtx: PathBuf,
        #[arg(long)]
        output: PathBuf,
    },
    /// Channel operations.
    #[command(subcommand)]
    Channel(ChannelCommand),
}

#[derive(Subcommand, Debug)]
enum ChannelCommand {
    /// Join this orderer to the channel of a genesis block (stores block 0).
    #[command(
        after_help = "Example:\n  medledger-orderer channel join --config orderer.yaml --genesis-block medchannel.block"
    )]
    Join {
        #[arg(long, default_value = "orderer.yaml")]
        config: PathBuf,
        #[arg(long)]
        genesis_block: PathBuf,
    },
}

/// Runs one CLI invocation.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Start { config } => {
            let orderer = start(load_config(&config)?).await?;
            println!("orderer listening on {}", orderer.address);
            let _ = tokio::signal::ctrl_c().await;
            orderer.stop().await;
            Ok(())
        }
        Command::Genesis { configtx, output } => {
            let block = from_configtx(&configtx)?;
            if let Some(p) = output.parent() {
                std::fs::create_dir_all(p)
                    .map_err(|e| CliError::Io(format!("{}: {e}", p.display())))?;
            }
            std::fs::write(&output, block.encode_to_vec())
                .map_err(|e| CliError::Io(format!("{}: {e}", output.display())))?;
            println!("genesis block written to {}", output.display());
            Ok(())
        }
        Command::Channel(ChannelCommand::Join {
            config,
            genesis_block,
        }) => {
            let cfg = load_config(&config)?;
            let (block, channel) = read_genesis(&genesis_block)?;
            let store = BlockStore::open(&cfg.data_dir.join("chains").join(&channel.channel_id))
                .map_err(NodeError::from)?;
            join_channel(&store, &block)?;
            println!("joined channel {}", channel.channel_id);
            Ok(())
        }
    }
}
