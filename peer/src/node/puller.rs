//! A channel's block delivery, as Fabric 3's BFT deliverer does it: whole blocks from one orderer
//! (the block source), header attestations from the others; the source is replaced when it fails,
//! sends a block that does not verify, or withholds a block the others attest. A block's place in
//! the chain and its signature quorum are checked before any other work is done on it.

use std::sync::atomic::Ordering;

use medledger_common::config::MessageLimits;
use medledger_proto::orderer::DeliverResponse;
use medledger_proto::orderer::seek_info::SeekContentType;

use super::attestations::{AttestationMonitor, DeliveryTimeouts};
use super::channels::reload_definitions;
use super::*;
use crate::validation::VerifiedBlock;

/// What the block puller of one channel works with.
pub(super) struct BlockPuller {
    pub(super) link: Arc<OrdererLink>,
    pub(super) plugins: PluginRegistry,
    pub(super) private_data: Arc<PrivateDataClient>,
    pub(super) packages: Arc<PackageStore>,
    pub(super) timeouts: DeliveryTimeouts,
}

/// How a channel's puller reaches its orderers.
pub(super) struct OrdererLink {
    pub(super) channel: Arc<Channel>,
    pub(super) signer: SigningIdentity,
    pub(super) client_tls: Option<ClientTls>,
    pub(super) limits: MessageLimits,
}

impl OrdererLink {
    /// Opens a Deliver stream on the orderer at `address` from block `start` on.
    pub(super) async fn open(
        &self,
        address: &str,
        start: u64,
        content: SeekContentType,
    ) -> Result<tonic::Streaming<DeliverResponse>, String> {
        let ch = dial(
            address,
            &self.channel.orderer_tls_roots(),
            self.client_tls.as_ref(),
        )
        .await?;
        let specified = |number| SeekPosition {
            r#type: Some(seek_position::Type::Specified(SeekSpecified { number })),
        };
        let seek = SeekInfo {
            start: Some(specified(start)),
            stop: Some(specified(u64::MAX)),
            content_type: content as i32,
            ..Default::default()
        };
        let env = signed_envelope(
            HeaderType::DeliverSeekInfo,
            self.channel.id(),
            seek.encode_to_vec(),
            &self.signer,
        )
        .map_err(|e| e.to_string())?;
        Ok(AtomicBroadcastClient::new(ch)
            .max_decoding_message_size(self.limits.max_recv)
            .max_encoding_message_size(self.limits.max_send)
            .deliver(tokio_stream::once(env))
            .await
            .map_err(|s| s.message().to_owned())?
            .into_inner())
    }
}

/// The delay before the next connection attempt after `failures` consecutive failures.
pub(super) fn retry_delay(timeouts: &DeliveryTimeouts, failures: u32) -> Duration {
    timeouts
        .min_retry
        .saturating_mul(2u32.saturating_pow(failures.min(16)))
        .min(timeouts.max_retry)
}

/// Why a round with one block source ended.
enum RoundEnd {
    /// The stream failed or the orderer misbehaved.
    Failed(String),
    /// Another orderer attests a block the source has not delivered in time.
    Censored(super::attestations::Censorship),
    /// A configuration block changed the orderers to take blocks from.
    NewConsenters,
}

/// `host:port` of each consenter of the configuration in force.
fn orderer_endpoints(channel: &Channel) -> Vec<String> {
    channel
        .config()
        .consenters
        .iter()
        .map(|c| format!("{}:{}", c.host, c.port))
        .collect()
}

/// Takes blocks from the channel's orderers and commits them, until shutdown.
pub(super) async fn pull_blocks(puller: BlockPuller, mut shutdown: watch::Receiver<bool>) {
    let channel = puller.link.channel.clone();
    // Peers start on different orderers so that one orderer does not feed them all.
    let mut source = rand::random::<usize>();
    let mut failures = 0u32;
    while !*shutdown.borrow() {
        // The consenters of the configuration in force: a configuration block may change them.
        let endpoints = orderer_endpoints(&channel);
        if endpoints.is_empty() {
            tracing::error!(channel = %channel.id(), "the channel configuration names no consenters: no blocks can be pulled");
            return;
        }
        source %= endpoints.len();
        let address = endpoints[source].clone();
        let others = endpoints
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != source)
            .map(|(_, e)| e.clone())
            .collect();
        let monitor = AttestationMonitor::start(&puller.link, others, puller.timeouts);
        let height_before = channel.ledger.height();
        let end = tokio::select! {
            e = pull_from(&puller, &address, &endpoints) => Some(e),
            c = monitor.censorship(&channel) => Some(RoundEnd::Censored(c)),
            _ = shutdown.changed() => None,
        };
        monitor.stop().await;
        let Some(end) = end else { return };
        let stats = &channel.delivery;
        match end {
            RoundEnd::Failed(e) => {
                stats.source_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(channel = %channel.id(), orderer = %address, error = %e, "block delivery interrupted: trying the next orderer")
            }
            RoundEnd::NewConsenters => {
                tracing::info!(channel = %channel.id(), "the consenter set changed: reconnecting to the new one");
                failures = 0;
                continue;
            }
            RoundEnd::Censored(c) => {
                stats.censorship_switches.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(channel = %channel.id(), orderer = %address, block = c.block, attested_by = %c.attested_by,
                    "the block source withholds a block another orderer attests: switching to the next orderer")
            }
        }
        failures = if channel.ledger.height() > height_before {
            0
        } else {
            failures.saturating_add(1)
        };
        source = (source + 1) % endpoints.len();
        tokio::select! {
            _ = tokio::time::sleep(retry_delay(&puller.timeouts, failures)) => {},
            _ = shutdown.changed() => return,
        }
    }
}

/// Pulls whole blocks from one orderer and commits them; returns why it stopped.
async fn pull_from(puller: &BlockPuller, address: &str, endpoints: &[String]) -> RoundEnd {
    let channel = &puller.link.channel;
    let failed = |e: String| RoundEnd::Failed(e);
    let mut stream = match puller
        .link
        .open(address, channel.ledger.height(), SeekContentType::Block)
        .await
    {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    loop {
        let block = match stream.message().await {
            Err(s) => return failed(s.message().to_owned()),
            Ok(None) => return failed("orderer closed the delivery stream".to_owned()),
            Ok(Some(DeliverResponse {
                r#type: Some(deliver_response::Type::Block(b)),
            })) => b,
            Ok(Some(DeliverResponse {
                r#type: Some(deliver_response::Type::Status(s)),
            })) => return failed(format!("orderer ended delivery with status {s}")),
            Ok(Some(DeliverResponse { r#type: None })) => {
                return failed("orderer sent an empty delivery response".to_owned());
            }
        };
        match commit_pulled(puller, block).await {
            Err(e) => return failed(e),
            Ok(true) if orderer_endpoints(channel) != endpoints => return RoundEnd::NewConsenters,
            Ok(_) => {}
        }
    }
}

/// Verifies a pulled block, gathers its private data and commits it; says whether it put a new
/// configuration in force.
async fn commit_pulled(puller: &BlockPuller, block: Block) -> Result<bool, String> {
    let channel = puller.link.channel.clone();
    let ch = channel.clone();
    let verified = tokio::task::spawn_blocking(move || VerifiedBlock::check(&ch, block))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("orderer sent a block that does not verify: {e}"))?;
    let number = verified.number();
    let pvt = puller.private_data.gather(&channel, &verified).await;
    let (ch, plugins) = (channel.clone(), puller.plugins.clone());
    let committed =
        tokio::task::spawn_blocking(move || commit_block(&ch, &plugins, verified, &pvt))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("block {number}: {e}"))?;
    // Definitions resolve collection membership against the channel's organisations: a new
    // configuration may add or remove some.
    if committed.namespaces.contains(LIFECYCLE) || committed.config_changed {
        reload_definitions(&channel, &puller.packages).map_err(|e| e.to_string())?;
    }
    if number % 100 == 0
        && let Err(e) = channel.ledger.transient_purge_now()
    {
        tracing::warn!(error = %e, "transient store purge failed");
    }
    Ok(committed.config_changed)
}
