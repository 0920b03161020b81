//! `byzantine-orderer`: a `medledger-orderer` that commits the faults named in
//! `MEDLEDGER_BYZANTINE` (see `medledger_orderer::byzantine::Misbehaviour::parse`), for process
//! tests of how the rest of the network withstands one bad orderer. Test-only: the production
//! binary cannot be made faulty.

use medledger_orderer::byzantine::Misbehaviour;
use medledger_orderer::node::{OrdererConfig, start_byzantine};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    medledger_common::config::init_logging();
    medledger_common::config::fail_stop_on_panic();
    let config = std::env::args()
        .skip_while(|a| a != "--config")
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: byzantine-orderer --config orderer.yaml"))?;
    let faults = Misbehaviour::parse(&std::env::var("MEDLEDGER_BYZANTINE").unwrap_or_default())
        .map_err(anyhow::Error::msg)?;
    let orderer = start_byzantine(OrdererConfig::load(config.as_ref())?, faults).await?;
    println!("byzantine orderer listening on {}", orderer.address);
    let _ = tokio::signal::ctrl_c().await;
    orderer.stop().await;
    Ok(())
}
