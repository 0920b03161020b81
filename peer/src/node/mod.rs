//! A running peer: its configuration (`core.yaml`-like YAML, every field overridable by a
//! `MEDLEDGER_PEER_*` environment variable), the gRPC server (Gateway, Endorser, Deliver) with
//! TLS, and one block puller per channel that takes blocks from the orderers and commits them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use medledger_common::SigningIdentity;
use medledger_common::channelconfig::ChannelConfig;
use medledger_common::policy::{Policy, parse_signature_policy};
use medledger_common::protoutil::signed_envelope;
use medledger_proto::common::{Block, HeaderType};
use medledger_proto::gateway::gateway_server::GatewayServer;
use medledger_proto::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use medledger_proto::orderer::{
    SeekInfo, SeekPosition, SeekSpecified, deliver_response, seek_position,
};
use medledger_proto::protos::deliver_server::DeliverServer;
use medledger_proto::protos::endorser_server::{Endorser as EndorserRpc, EndorserServer};
use medledger_proto::protos::{ProposalResponse, SignedProposal};
use prost::Message;
use serde::Deserialize;
use tokio::sync::{RwLock, watch};
use tokio_stream::wrappers::TcpListenerStream;

use crate::chaincode::{ChaincodeEndpoint, ChaincodeSupport, ConnectionInfo};
use crate::channel::{ChaincodeDefinition, Channel};
use crate::collection::Collections;
use crate::comm::{ClientTls, dial};
use crate::committer::commit_block;
use crate::deliver::DeliverService;
use crate::endorser::{Channels, Endorser, MAX_PROPOSAL_BYTES};
use crate::gateway::{GatewayService, RemotePeer};
use crate::ledger::Ledger;
use crate::lifecycle::{LIFECYCLE, PackageStore, committed_definitions, lifecycle_definition};
use crate::plugins::PluginRegistry;
use crate::privdata::{
    MAX_PRIVATE_MESSAGE_BYTES, PrivateDataClient, PrivateDataService, PvtCandidates, reconcile_loop,
};
use crate::sealing::CollectionKeys;
use medledger_common::msp::{Msp, MspManager, load_msp_folder};
use medledger_proto::medledger::privdata::private_data_server::PrivateDataServer;

/// Errors starting a peer.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("channel {channel}: {reason}")]
    Channel { channel: String, reason: String },
}

fn read(path: &Path) -> Result<Vec<u8>, NodeError> {
    std::fs::read(path).map_err(|e| NodeError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

pub use medledger_common::config::TlsFiles;

/// Another organisation's peer for gateway endorsement.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerEndpointConfig {
    pub msp_id: String,
    pub address: String,
    #[serde(default)]
    pub tls_root_cert_file: Option<PathBuf>,
}

/// A chaincode defined on a channel (until the lifecycle chaincode manages definitions).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChaincodeConfig {
    pub name: String,
    #[serde(default = "default_version")]
    pub version: String,
    pub package_id: String,
    pub connection: ConnectionInfo,
    /// Fabric policy language, e.g. `AND('Hospital1MSP.peer','Hospital2MSP.peer')`.
    pub endorsement_policy: String,
    #[serde(default = "default_escc")]
    pub endorsement_plugin: String,
    #[serde(default = "default_vscc")]
    pub validation_plugin: String,
    /// Fabric's `collections_config.json` for the chaincode's private data collections.
    #[serde(default)]
    pub collections_config: Option<PathBuf>,
}

/// Private data settings (Fabric's `peer.gossip.pvtData` and transient store retention).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrivateDataConfig {
    /// How long a commit waits for missing private data from other members.
    #[serde(default = "default_pull_timeout")]
    pub pull_timeout_ms: u64,
    /// How often missing private data is looked for again.
    #[serde(default = "default_reconcile_interval")]
    pub reconcile_interval_ms: u64,
    /// Blocks a never-committed transaction's private data stays in the transient store.
    #[serde(default = "default_transient_retention")]
    pub transient_retention_blocks: u64,
    /// Where the per-collection AES-256-GCM keys are kept (default `<dataDir>/keys`).
    #[serde(default)]
    pub keys_dir: Option<PathBuf>,
}

impl Default for PrivateDataConfig {
    fn default() -> Self {
        Self {
            pull_timeout_ms: default_pull_timeout(),
            reconcile_interval_ms: default_reconcile_interval(),
            transient_retention_blocks: default_transient_retention(),
            keys_dir: None,
        }
    }
}

fn default_pull_timeout() -> u64 {
    3_000
}
fn default_reconcile_interval() -> u64 {
    10_000
}
fn default_transient_retention() -> u64 {
    1_000
}

fn default_version() -> String {
    "1.0".into()
}
fn default_escc() -> String {
    "escc".into()
}
fn default_vscc() -> String {
    "vscc".into()
}
fn default_timeout() -> u64 {
    30_000
}

/// A channel to join: its genesis block and its chaincodes.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelJoinConfig {
    pub genesis_block: PathBuf,
    #[serde(default)]
    pub chaincodes: Vec<ChaincodeConfig>,
}

/// The peer's configuration.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerConfig {
    pub id: String,
    pub msp_id: String,
    pub msp_dir: PathBuf,
    pub listen_address: String,
    pub data_dir: PathBuf,
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    #[serde(default)]
    pub gateway_peers: Vec<PeerEndpointConfig>,
    #[serde(default = "default_timeout")]
    pub chaincode_execute_timeout_ms: u64,
    #[serde(default)]
    pub channels: Vec<ChannelJoinConfig>,
    /// Where `/healthz` and `/metrics` are served (none when unset).
    #[serde(default)]
    pub operations_address: Option<String>,
    #[serde(default)]
    pub private_data: PrivateDataConfig,
}

impl PeerConfig {
    /// Reads YAML, then applies `MEDLEDGER_PEER_<FIELD>` environment overrides for scalar fields
    /// (`MEDLEDGER_PEER_LISTENADDRESS=127.0.0.1:7051`).
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let mut cfg: Self = medledger_common::config::load_yaml(path, "MEDLEDGER_PEER_")
            .map_err(NodeError::Config)?;
        cfg.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base: &Path) {
        use medledger_common::config::resolve;
        resolve(base, &mut self.msp_dir);
        resolve(base, &mut self.data_dir);
        if let Some(t) = &mut self.tls {
            t.resolve_paths(base);
        }
        for p in &mut self.gateway_peers {
            if let Some(f) = &mut p.tls_root_cert_file {
                resolve(base, f);
            }
        }
        for c in &mut self.channels {
            resolve(base, &mut c.genesis_block);
            for cc in &mut c.chaincodes {
                if let Some(f) = &mut cc.collections_config {
                    resolve(base, f);
                }
            }
        }
        if let Some(k) = &mut self.private_data.keys_dir {
            resolve(base, k);
        }
    }
}

struct EndorserService(Arc<Endorser>);

#[tonic::async_trait]
impl EndorserRpc for EndorserService {
    async fn process_proposal(
        &self,
        request: tonic::Request<SignedProposal>,
    ) -> Result<tonic::Response<ProposalResponse>, tonic::Status> {
        self.0
            .process(&request.into_inner())
            .await
            .map(tonic::Response::new)
            .map_err(|e| tonic::Status::failed_precondition(e.to_string()))
    }
}

type Tasks = Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>;

/// A started peer.
pub struct RunningPeer {
    pub address: SocketAddr,
    pub operations_address: Option<SocketAddr>,
    pub channels: Channels,
    shutdown: watch::Sender<bool>,
    tasks: Tasks,
}

impl RunningPeer {
    /// Stops serving and pulling blocks, and waits for the tasks to end.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let tasks: Vec<_> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }

    /// A joined channel.
    pub async fn channel(&self, id: &str) -> Option<Arc<Channel>> {
        self.channels.read().await.get(id).cloned()
    }
}

fn open_channel(
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
        let channel = Channel {
            config: config.clone(),
            ledger: Arc::new(ledger),
            chaincodes: Default::default(),
            local_msp: local_msp.to_owned(),
        };
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
    open_channel_with(cfg, config, Arc::new(ledger), local_msp, packages)
}

fn open_channel_with(
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
    let channel = Channel {
        config,
        ledger,
        chaincodes: Default::default(),
        local_msp: local_msp.to_owned(),
    };
    channel.define(chaincodes);
    reload_definitions(&channel, packages)?;
    Ok(channel)
}

/// The channel id a genesis block file names (`None` if it does not read as one).
fn genesis_channel_id(path: &Path) -> Option<String> {
    let block = Block::decode(std::fs::read(path).ok()?.as_slice()).ok()?;
    ChannelConfig::from_block(&block).ok().map(|c| c.channel_id)
}

/// Applies the definitions committed through `_lifecycle` to the channel.
fn reload_definitions(channel: &Channel, packages: &PackageStore) -> Result<(), NodeError> {
    let defs = committed_definitions(
        &channel.ledger,
        &channel.config,
        &channel.local_msp,
        packages,
    )
    .map_err(|reason| NodeError::Channel {
        channel: channel.id().to_owned(),
        reason,
    })?;
    for d in &defs {
        tracing::info!(channel = %channel.id(), chaincode = %d.name, sequence = d.sequence, installed = d.endpoint.is_some(), "chaincode definition in force");
    }
    channel.define(defs);
    Ok(())
}

/// Opens channels and runs each one's block puller and private data reconciler: at start for
/// the configured and previously joined channels, and at run time for `channel join`.
struct ChannelRunner {
    data_dir: PathBuf,
    msp_id: String,
    keys: Arc<CollectionKeys>,
    packages: Arc<PackageStore>,
    channels: Channels,
    plugins: PluginRegistry,
    signer: SigningIdentity,
    client_tls: Option<ClientTls>,
    private_data: Arc<PrivateDataClient>,
    transient_retention: u64,
    reconcile_interval: Duration,
    shutdown: watch::Receiver<bool>,
    tasks: Tasks,
}

impl ChannelRunner {
    fn joined_dir(&self) -> PathBuf {
        self.data_dir.join("joined")
    }

    /// Opens a channel (creating its ledger from the genesis block if new) and starts its tasks.
    async fn run(&self, cfg: &ChannelJoinConfig) -> Result<String, NodeError> {
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
        let puller = tokio::spawn(pull_blocks(
            BlockPuller {
                channel: ch.clone(),
                plugins: self.plugins.clone(),
                signer: self.signer.clone(),
                client_tls: self.client_tls.clone(),
                private_data: self.private_data.clone(),
                packages: self.packages.clone(),
                transient_retention: self.transient_retention,
            },
            self.shutdown.clone(),
        ));
        let reconciler = tokio::spawn(reconcile_loop(
            ch,
            self.private_data.clone(),
            self.reconcile_interval,
            self.shutdown.clone(),
        ));
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.push(puller);
        tasks.push(reconciler);
        Ok(id)
    }

    /// The channels joined at run time, from their saved genesis blocks.
    fn joined(&self) -> Vec<ChannelJoinConfig> {
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

impl crate::endorser::ChannelJoiner for ChannelRunner {
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
            if !config.application_orgs.contains(&self.msp_id) {
                return Err(format!(
                    "{} is not an application organisation of channel {}",
                    self.msp_id, config.channel_id
                ));
            }
            if self.channels.read().await.contains_key(&config.channel_id) {
                return Err(format!(
                    "the peer has already joined channel {}",
                    config.channel_id
                ));
            }
            let dir = self.joined_dir();
            let path = dir.join(format!("{}.block", config.channel_id));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            std::fs::write(&path, genesis).map_err(|e| e.to_string())?;
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

/// What the block puller of one channel works with.
struct BlockPuller {
    channel: Arc<Channel>,
    plugins: PluginRegistry,
    signer: SigningIdentity,
    client_tls: Option<ClientTls>,
    private_data: Arc<PrivateDataClient>,
    packages: Arc<PackageStore>,
    transient_retention: u64,
}

/// Takes blocks from the channel's orderers (rotating on failure) and commits them.
async fn pull_blocks(puller: BlockPuller, mut shutdown: watch::Receiver<bool>) {
    let BlockPuller {
        channel,
        plugins,
        signer,
        client_tls,
        private_data,
        packages,
        transient_retention,
    } = puller;
    let consenters = channel.config.consenters.clone();
    if consenters.is_empty() {
        tracing::error!(channel = %channel.id(), "the channel configuration names no consenters: no blocks can be pulled");
        return;
    }
    let roots = channel.orderer_tls_roots();
    let mut attempt = 0usize;
    while !*shutdown.borrow() {
        let c = &consenters[attempt % consenters.len()];
        attempt += 1;
        let address = format!("{}:{}", c.host, c.port);
        let run = async {
            let ch = dial(&address, &roots, client_tls.as_ref()).await?;
            let seek = SeekInfo {
                start: Some(SeekPosition {
                    r#type: Some(seek_position::Type::Specified(SeekSpecified {
                        number: channel.ledger.height(),
                    })),
                }),
                stop: Some(SeekPosition {
                    r#type: Some(seek_position::Type::Specified(SeekSpecified {
                        number: u64::MAX,
                    })),
                }),
                ..Default::default()
            };
            let env = signed_envelope(
                HeaderType::DeliverSeekInfo,
                channel.id(),
                seek.encode_to_vec(),
                &signer,
            )
            .map_err(|e| e.to_string())?;
            let mut stream = AtomicBroadcastClient::new(ch)
                .max_decoding_message_size(100 * 1024 * 1024)
                .deliver(tokio_stream::once(env))
                .await
                .map_err(|s| s.message().to_owned())?
                .into_inner();
            loop {
                let msg = stream.message().await.map_err(|s| s.message().to_owned())?;
                match msg.and_then(|m| m.r#type) {
                    Some(deliver_response::Type::Block(block)) => {
                        let number = block.header.as_ref().map(|h| h.number).unwrap_or_default();
                        if number < channel.ledger.height() {
                            continue;
                        }
                        let pvt = private_data.gather(&channel, &block).await;
                        let (ch, pl) = (channel.clone(), plugins.clone());
                        let committed = tokio::task::spawn_blocking(move || {
                            commit_block(&ch, &pl, block, &pvt)
                        })
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| format!("block {number}: {e}"))?;
                        if committed.namespaces.contains(LIFECYCLE) {
                            reload_definitions(&channel, &packages).map_err(|e| e.to_string())?;
                        }
                        if number % 100 == 0
                            && number > transient_retention
                            && let Err(e) = channel
                                .ledger
                                .transient_purge_below(number - transient_retention)
                        {
                            tracing::warn!(error = %e, "transient store purge failed");
                        }
                    }
                    Some(deliver_response::Type::Status(s)) => {
                        return Err::<(), String>(format!(
                            "orderer ended delivery with status {s}"
                        ));
                    }
                    None => return Err("orderer closed the delivery stream".to_owned()),
                }
            }
        };
        tokio::select! {
            r = run => if let Err(e) = r {
                tracing::warn!(channel = %channel.id(), orderer = %address, error = %e, "block delivery interrupted");
            },
            _ = shutdown.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(300)) => {},
            _ = shutdown.changed() => return,
        }
    }
}

/// Starts a peer: opens its ledgers, joins its channels, serves gRPC and pulls blocks.
pub async fn start(cfg: PeerConfig, plugins: PluginRegistry) -> Result<RunningPeer, NodeError> {
    let signer = SigningIdentity::load(&cfg.msp_dir, &cfg.msp_id).map_err(|e| NodeError::File {
        path: cfg.msp_dir.clone(),
        reason: e.to_string(),
    })?;
    let keys = Arc::new(CollectionKeys::new(
        &cfg.private_data
            .keys_dir
            .clone()
            .unwrap_or_else(|| cfg.data_dir.join("keys")),
    ));
    let packages = Arc::new(PackageStore::new(&cfg.data_dir.join("chaincodes")));
    let local_msp = load_msp_folder(&cfg.msp_dir, &cfg.msp_id)
        .and_then(|c| Msp::new(&c))
        .map_err(|e| NodeError::File {
            path: cfg.msp_dir.clone(),
            reason: e.to_string(),
        })?;
    let channels: Channels = Arc::new(RwLock::new(BTreeMap::new()));
    let tls = cfg
        .tls
        .as_ref()
        .map(TlsFiles::read)
        .transpose()
        .map_err(NodeError::Config)?;
    let client_tls = tls.as_ref().map(|t| ClientTls {
        cert_pem: t.cert_pem.clone(),
        key_pem: t.key_pem.clone(),
    });
    let mut remote_peers = Vec::new();
    for p in &cfg.gateway_peers {
        remote_peers.push(RemotePeer {
            msp_id: p.msp_id.clone(),
            address: p.address.clone(),
            tls_root_pem: p.tls_root_cert_file.as_deref().map(read).transpose()?,
        });
    }
    let private_data = Arc::new(PrivateDataClient::new(
        remote_peers.clone(),
        client_tls.clone(),
        signer.clone(),
        Duration::from_millis(cfg.private_data.pull_timeout_ms),
    ));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let tasks: Tasks = Arc::default();
    let runner = Arc::new(ChannelRunner {
        data_dir: cfg.data_dir.clone(),
        msp_id: cfg.msp_id.clone(),
        keys,
        packages: packages.clone(),
        channels: channels.clone(),
        plugins: plugins.clone(),
        signer: signer.clone(),
        client_tls: client_tls.clone(),
        private_data: private_data.clone(),
        transient_retention: cfg.private_data.transient_retention_blocks,
        reconcile_interval: Duration::from_millis(cfg.private_data.reconcile_interval_ms.max(100)),
        shutdown: shutdown_rx.clone(),
        tasks: tasks.clone(),
    });
    let configured: Vec<String> = cfg
        .channels
        .iter()
        .filter_map(|c| genesis_channel_id(&c.genesis_block))
        .collect();
    let mut to_open = cfg.channels.clone();
    // A channel joined at run time and later also configured is opened once.
    to_open.extend(runner.joined().into_iter().filter(|c| {
        genesis_channel_id(&c.genesis_block).is_none_or(|id| !configured.contains(&id))
    }));
    for c in &to_open {
        if let Err(e) = runner.run(c).await {
            let _ = shutdown.send(true);
            return Err(e);
        }
    }
    let endorser = Arc::new(Endorser {
        joiner: runner.clone(),
        channels: channels.clone(),
        chaincodes: Arc::new(ChaincodeSupport::new(Duration::from_millis(
            cfg.chaincode_execute_timeout_ms,
        ))),
        signer: signer.clone(),
        plugins: plugins.clone(),
        private_data: private_data.clone(),
        packages: packages.clone(),
        local_msp: MspManager::new([local_msp]),
    });
    let listener = tokio::net::TcpListener::bind(&cfg.listen_address)
        .await
        .map_err(|e| NodeError::Listen {
            addr: cfg.listen_address.clone(),
            reason: e.to_string(),
        })?;
    let address = listener.local_addr().map_err(|e| NodeError::Listen {
        addr: cfg.listen_address.clone(),
        reason: e.to_string(),
    })?;
    let gateway = GatewayService::new(
        endorser.clone(),
        remote_peers,
        client_tls.clone(),
        address.to_string(),
    );
    let mut builder = tonic::transport::Server::builder().tcp_nodelay(true);
    if let (Some(files), Some(t)) = (&cfg.tls, &tls) {
        let mut server_tls = tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(&t.cert_pem, &t.key_pem),
        );
        if !t.client_ca_bundle.is_empty() {
            server_tls = server_tls
                .client_ca_root(tonic::transport::Certificate::from_pem(&t.client_ca_bundle))
                .client_auth_optional(!files.client_auth_required);
        }
        builder = builder
            .tls_config(server_tls)
            .map_err(|e| NodeError::Config(format!("TLS: {e}")))?;
    }
    let mut rx = shutdown_rx.clone();
    let max = MAX_PROPOSAL_BYTES + 1024 * 1024;
    let server = builder
        .add_service(GatewayServer::new(gateway).max_decoding_message_size(max))
        .add_service(
            EndorserServer::new(EndorserService(endorser.clone())).max_decoding_message_size(max),
        )
        .add_service(
            DeliverServer::new(DeliverService {
                channels: channels.clone(),
            })
            .max_decoding_message_size(max),
        )
        .add_service(
            PrivateDataServer::new(PrivateDataService {
                channels: channels.clone(),
            })
            .max_decoding_message_size(MAX_PRIVATE_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PRIVATE_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            let _ = rx.changed().await;
        });
    let server_task = tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "peer gRPC server stopped");
        }
    });
    tasks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(server_task);
    let operations_address = match &cfg.operations_address {
        Some(a) => {
            let (l, addr) =
                medledger_common::ops::bind(a)
                    .await
                    .map_err(|e| NodeError::Listen {
                        addr: a.clone(),
                        reason: e.to_string(),
                    })?;
            // Channels joined later are included: the map is read at every scrape.
            let scraped = channels.clone();
            let metrics = Arc::new(move || {
                let ledgers: Vec<(String, Arc<Ledger>)> = scraped
                    .try_read()
                    .map(|m| {
                        m.values()
                            .map(|c| (c.id().to_owned(), c.ledger.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                ledgers
                    .iter()
                    .flat_map(|(id, l)| {
                        let labels = vec![("channel".to_owned(), id.clone())];
                        [
                            medledger_common::ops::Metric {
                                name: "ledger_blockchain_height".into(),
                                help: "Blocks committed on the channel".into(),
                                kind: "gauge",
                                labels: labels.clone(),
                                value: l.height() as f64,
                            },
                            medledger_common::ops::Metric {
                                name: "pvtdata_missing_writesets".into(),
                                help: "Private write sets this member still lacks (reconciliation pending)"
                                    .into(),
                                kind: "gauge",
                                labels,
                                value: l.pvt_missing(100_000).map(|m| m.len()).unwrap_or(0) as f64,
                            },
                        ]
                    })
                    .collect()
            });
            let mut rx = shutdown_rx.clone();
            let ops = tokio::spawn(async move {
                let _ = medledger_common::ops::serve(l, metrics, async move {
                    let _ = rx.changed().await;
                })
                .await;
            });
            tasks.lock().unwrap_or_else(|e| e.into_inner()).push(ops);
            Some(addr)
        }
        None => None,
    };
    tracing::info!(peer = %cfg.id, %address, "peer started");
    Ok(RunningPeer {
        address,
        operations_address,
        channels,
        shutdown,
        tasks,
    })
}
