//! Opening channels (configured, previously joined, joined at run time through `cscc`) and
//! running each one's block puller and private data reconciler.

use super::attestations::DeliveryTimeouts;
use super::puller::{BlockPuller, OrdererLink, pull_blocks};
use crate::storage::ledger::TransientLimits;
use medledger_common::config::MessageLimits;
use medledger_common::tlsserver::ClientRoots;

use super::*;

pub(super) fn open_channel(
    cfg: &ChannelJoinConfig,
    data_dir: &Path,
    local_msp: &str,
    keys: Arc<CollectionKeys>,
    packages: &PackageStore,
) -> Result<Channel, NodeError> {
    let genesis = Block::decode(read(&cfg.genesis_block)?.as_slice())
        .map_err(|e| NodeError::Config(format!("genesis block: {e}")))?;
    let config = ChannelConfig::from_block(&genesis)
        .map_err(|e| NodeError::Config(format!("genesis block: {e}")))?;
    let err = |reason: String| NodeError::Channel {
        channel: config.channel_id.clone(),
        reason,
    };
    let ledger = Ledger::open_private(
        &data_dir.join("ledgers").join(&config.channel_id),
        &config.channel_id,
        keys,
    )
    .map_err(|e| err(e.to_string()))?;
    if ledger.height() == 0 {
        let channel = Channel::new(config.clone(), Arc::new(ledger), local_msp);
        let genesis = VerifiedBlock::genesis(genesis).map_err(|e| err(e.to_string()))?;
        commit_block(
            &channel,
            &PluginRegistry::default(),
            genesis,
            &PvtCandidates::new(),
        )
        .map_err(|e| err(e.to_string()))?;
        return open_channel_with(cfg, config, channel.ledger, local_msp, packages);
    }
    let stored = ledger
        .block(0)
        .map_err(|e| err(e.to_string()))?
        .and_then(|b| b.header);
    if stored != genesis.header {
        return Err(err(
            "the ledger on disk belongs to another genesis block".into()
        ));
    }
    // The configuration in force is the newest configuration block's, not the genesis block's.
    let last_config = ledger.last_config_block().map_err(|e| err(e.to_string()))?;
    let config = if last_config == 0 {
        config
    } else {
        let block = ledger
            .block(last_config)
            .map_err(|e| err(e.to_string()))?
            .ok_or_else(|| err(format!("configuration block {last_config} is missing")))?;
        ChannelConfig::from_block(&block)
            .map_err(|e| err(format!("configuration block {last_config}: {e}")))?
    };
    open_channel_with(cfg, config, Arc::new(ledger), local_msp, packages)
}

pub(super) fn open_channel_with(
    cfg: &ChannelJoinConfig,
    config: ChannelConfig,
    ledger: Arc<Ledger>,
    local_msp: &str,
    packages: &PackageStore,
) -> Result<Channel, NodeError> {
    let mut chaincodes = vec![lifecycle_definition(&config)];
    for cc in &cfg.chaincodes {
        let policy = parse_signature_policy(&cc.endorsement_policy).map_err(|e| {
            NodeError::Config(format!("chaincode {} endorsement policy: {e}", cc.name))
        })?;
        let json = match &cc.collections_config {
            Some(path) => String::from_utf8(read(path)?).map_err(|_| NodeError::File {
                path: path.clone(),
                reason: "not UTF-8".into(),
            })?,
            None => String::new(),
        };
        let collections = Collections::load(&json, &config)
            .map_err(|e| NodeError::Config(format!("chaincode {}: {e}", cc.name)))?;
        chaincodes.push(ChaincodeDefinition {
            name: cc.name.clone(),
            version: cc.version.clone(),
            sequence: 0,
            endpoint: Some(ChaincodeEndpoint {
                name: cc.name.clone(),
                version: cc.version.clone(),
                package_id: cc.package_id.clone(),
                connection: cc.connection.clone(),
            }),
            endorsement_policy: Policy::Signature(policy),
            endorsement_plugin: cc.endorsement_plugin.clone(),
            validation_plugin: cc.validation_plugin.clone(),
            collections,
        });
    }
    let channel = Channel::new(config, ledger, local_msp);
    channel.define(chaincodes);
    reload_definitions(&channel, packages)?;
    Ok(channel)
}

/// The channel id a genesis block file names (`None` if it does not read as one).
pub(super) fn genesis_channel_id(path: &Path) -> Option<String> {
    let block = Block::decode(std::fs::read(path).ok()?.as_slice()).ok()?;
    ChannelConfig::from_block(&block).ok().map(|c| c.channel_id)
}

/// Applies the definitions committed through `_lifecycle` to the channel.
pub(super) fn reload_definitions(
    channel: &Channel,
    packages: &PackageStore,
) -> Result<(), NodeError> {
    let defs = committed_definitions(
        &channel.ledger,
        &channel.config(),
        &channel.local_msp,
        packages,
    )
    .map_err(|reason| NodeError::Channel {
        channel: channel.id().to_owned(),
        reason,
    })?;
    // `_lifecycle` itself follows the configuration too: an organisation added by a
    // configuration block gets its implicit collection (its approvals) and a say in
    // LifecycleEndorsement.
    channel.define([lifecycle_definition(&channel.config())]);
    for d in &defs {
        tracing::info!(channel = %channel.id(), chaincode = %d.name, sequence = d.sequence, installed = d.endpoint.is_some(), "chaincode definition in force");
    }
    channel.define(defs);
    Ok(())
}

/// Opens channels and runs each one's block puller and private data reconciler: at start for
/// the configured and previously joined channels, and at run time for `channel join`.
pub(super) struct ChannelRunner {
    pub(super) data_dir: PathBuf,
    pub(super) msp_id: String,
    pub(super) keys: Arc<CollectionKeys>,
    pub(super) packages: Arc<PackageStore>,
    pub(super) channels: Channels,
    pub(super) plugins: PluginRegistry,
    pub(super) signer: SigningIdentity,
    pub(super) client_tls: Option<ClientTls>,
    /// The TLS clients the peer's server accepts: each channel's organisations join them.
    pub(super) client_roots: Option<Arc<ClientRoots>>,
    pub(super) private_data: Arc<PrivateDataClient>,
    pub(super) transient: TransientLimits,
    pub(super) reconcile_interval: Duration,
    pub(super) limits: MessageLimits,
    pub(super) delivery: DeliveryTimeouts,
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) tasks: Tasks,
}

impl ChannelRunner {
    pub(super) fn joined_dir(&self) -> PathBuf {
        self.data_dir.join("joined")
    }

    /// Opens a channel (creating its ledger from the genesis block if new) and starts its tasks.
    pub(super) async fn run(&self, cfg: &ChannelJoinConfig) -> Result<String, NodeError> {
        let ch = Arc::new(open_channel(
            cfg,
            &self.data_dir,
            &self.msp_id,
            self.keys.clone(),
            &self.packages,
        )?);
        let id = ch.id().to_owned();
        {
            let mut channels = self.channels.write().await;
            if channels.contains_key(&id) {
                return Err(NodeError::Channel {
                    channel: id,
                    reason: "the peer has already joined this channel".into(),
                });
            }
            channels.insert(id.clone(), ch.clone());
        }
        if let Some(roots) = &self.client_roots {
            let roots = roots.clone();
            ch.observe_config(Box::new(move |c| {
                roots.set_channel(&c.channel_id, c.tls_ca_ders())
            }));
        }
        let puller = tokio::spawn(pull_blocks(
            BlockPuller {
                link: Arc::new(OrdererLink {
                    channel: ch.clone(),
                    signer: self.signer.clone(),
                    client_tls: self.client_tls.clone(),
                    limits: self.limits,
                }),
                plugins: self.plugins.clone(),
                private_data: self.private_data.clone(),
                packages: self.packages.clone(),
                timeouts: self.delivery,
            },
            self.shutdown.clone(),
        ));
        ch.ledger.set_transient_limits(self.transient);
        let purger = tokio::spawn(transient_purge_loop(ch.clone(), self.shutdown.clone()));
        let reconciler = tokio::spawn(reconcile_loop(
            ch,
            self.private_data.clone(),
            self.reconcile_interval,
            self.shutdown.clone(),
        ));
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.push(puller);
        tasks.push(purger);
        tasks.push(reconciler);
        Ok(id)
    }

    /// The channels joined at run time, from their saved genesis blocks.
    pub(super) fn joined(&self) -> Vec<ChannelJoinConfig> {
        let mut out: Vec<ChannelJoinConfig> = std::fs::read_dir(self.joined_dir())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "block"))
            .map(|genesis_block| ChannelJoinConfig {
                genesis_block,
                chaincodes: vec![],
            })
            .collect();
        out.sort_by(|a, b| a.genesis_block.cmp(&b.genesis_block));
        out
    }
}

impl crate::endorsement::ChannelJoiner for ChannelRunner {
    fn join<'a>(
        &'a self,
        genesis: &'a [u8],
    ) -> futures::future::BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let block = Block::decode(genesis).map_err(|e| format!("genesis block: {e}"))?;
            if block.header.as_ref().map(|h| h.number) != Some(0) {
                return Err("a channel is joined with its genesis block (block 0)".into());
            }
            let config =
                ChannelConfig::from_block(&block).map_err(|e| format!("genesis block: {e}"))?;
            // No membership check against block 0: an organisation added by a later
            // configuration block joins with the genesis block too, as in Fabric. The ordering
            // service's Deliver decides, under the configuration in force, whether this peer may
            // read the channel.
            if self.channels.read().await.contains_key(&config.channel_id) {
                return Err(format!(
                    "the peer has already joined channel {}",
                    config.channel_id
                ));
            }
            let dir = self.joined_dir();
            let path = dir.join(format!("{}.block", config.channel_id));
            medledger_common::durable::write_file_durably(&path, genesis, None)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let id = self
                .run(&ChannelJoinConfig {
                    genesis_block: path,
                    chaincodes: vec![],
                })
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(channel = %id, "joined channel");
            Ok(id)
        })
    }
}

/// How often the transient store is purged by age, whether or not blocks arrive.
const TRANSIENT_PURGE_INTERVAL: Duration = Duration::from_secs(30);

/// Purges the channel's transient store on a timer, so that an idle channel drains it too.
pub(super) async fn transient_purge_loop(
    channel: Arc<Channel>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TRANSIENT_PURGE_INTERVAL) => {},
            _ = shutdown.changed() => return,
        }
        let ledger = channel.ledger.clone();
        match tokio::task::spawn_blocking(move || ledger.transient_purge_now()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                tracing::info!(channel = %channel.id(), count = n, "transient store purged")
            }
            Ok(Err(e)) => {
                tracing::warn!(channel = %channel.id(), error = %e, "transient store purge failed")
            }
            Err(e) => {
                tracing::warn!(channel = %channel.id(), error = %e, "transient store purge task failed")
            }
        }
    }
}
