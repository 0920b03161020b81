//! A running orderer: configuration (`orderer.yaml`, `MEDLEDGER_ORDERER_*` overrides), one gRPC
//! server with TLS carrying Fabric's AtomicBroadcast (clients, peers) and our consensus service
//! (other consenters, mutual TLS), the event loop that drives the consensus core, and outbound
//! links to the other consenters.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use medledger_common::SigningIdentity;
use medledger_common::channelconfig::{ChannelConfig, ConfigInForce, check_seek};
use medledger_common::config::MessageLimits;
use medledger_common::msp::Expiry;
use medledger_common::protoutil::unpack_envelope;
use medledger_common::refusal::{log_refusal, next_message, next_or_refuse};
use medledger_common::tlsserver::{self, ClientRoots};
use medledger_proto::common::{Block, Envelope, HeaderType, Status as BlockStatus};
use medledger_proto::medledger::consensus::consensus_client::ConsensusClient;
use medledger_proto::medledger::consensus::consensus_server::{Consensus, ConsensusServer};
use medledger_proto::medledger::consensus::{Ack, ConsensusMessage};
use medledger_proto::orderer::atomic_broadcast_server::{AtomicBroadcast, AtomicBroadcastServer};
use medledger_proto::orderer::{BroadcastResponse, DeliverResponse, deliver_response};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::byzantine::Misbehaviour;
use crate::consensus::{Config, DEFAULT_MAX_POOL_BYTES, Output, Replica, RequestError};
use crate::crypto::{ConsenterCrypto, core_settings};
use crate::store::BlockStore;

/// Errors starting an orderer. Only a fault of the orderer's YAML is a `Config` error; a bad
/// file it names, the block store or the network say so.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error(
        "genesis block {path}: {reason} (make it with `medledger-orderer genesis --configtx \
         configtx.yaml --output FILE`; genesisBlock in the orderer's YAML names it)"
    )]
    GenesisBlock { path: PathBuf, reason: String },
    #[error(
        "the block store holds another channel's genesis block (join with that channel's \
         block, or give this orderer an empty dataDir)"
    )]
    OtherChannel,
    #[error("block store: {0}")]
    Corrupt(String),
    #[error("TLS files: {0} (check tls.certFile, tls.keyFile and tls.clientRootCAs)")]
    Tls(String),
    #[error("the channel's consenter identities: {0}")]
    Consenters(String),
    #[error("storage: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
}

/// A failure to listen on `addr`, with what to try when the port is taken.
fn listen_error(addr: &str, e: &std::io::Error) -> NodeError {
    let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
        " (another process uses this port: stop it, or change the address in the orderer's YAML)"
    } else {
        ""
    };
    NodeError::Listen {
        addr: addr.to_owned(),
        reason: format!("{e}{hint}"),
    }
}

pub use medledger_common::config::TlsFiles;

fn default_tick() -> u64 {
    20
}

/// The orderer's configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrdererConfig {
    /// This orderer's consenter id in the channel configuration.
    pub consenter_id: u32,
    pub msp_id: String,
    pub msp_dir: PathBuf,
    pub listen_address: String,
    pub data_dir: PathBuf,
    pub genesis_block: PathBuf,
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Logical clock period of the consensus core.
    #[serde(default = "default_tick")]
    pub tick_ms: u64,
    /// Where `/healthz` and `/metrics` are served (none when unset).
    #[serde(default)]
    pub operations_address: Option<String>,
    /// Largest gRPC message received, on the orderer's server and its clients (Fabric's
    /// `General.MaxRecvMsgSize`, 100 MiB). AbsoluteMaxBytes still bounds what gets ordered.
    #[serde(default = "medledger_common::config::default_max_message_bytes")]
    pub max_recv_msg_size: usize,
    /// Largest gRPC message sent (Fabric's `General.MaxSendMsgSize`, 100 MiB).
    #[serde(default = "medledger_common::config::default_max_message_bytes")]
    pub max_send_msg_size: usize,
}

impl OrdererConfig {
    /// The message limits every server and client of this orderer applies.
    pub fn message_limits(&self) -> MessageLimits {
        MessageLimits {
            max_recv: self.max_recv_msg_size,
            max_send: self.max_send_msg_size,
        }
    }

    /// Reads YAML and applies `MEDLEDGER_ORDERER_<FIELD>` overrides of top-level fields.
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        use medledger_common::config::resolve;
        let mut cfg: Self = medledger_common::config::load_yaml(path, "MEDLEDGER_ORDERER_")
            .map_err(NodeError::Config)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut cfg.msp_dir, &mut cfg.data_dir, &mut cfg.genesis_block] {
            resolve(base, p);
        }
        if let Some(t) = &mut cfg.tls {
            t.resolve_paths(base);
        }
        Ok(cfg)
    }
}

enum Event {
    Consensus {
        from: u32,
        msg: ConsensusMessage,
    },
    Request {
        envelope: Vec<u8>,
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
}

/// A started orderer.
pub struct RunningOrderer {
    pub address: SocketAddr,
    pub operations_address: Option<SocketAddr>,
    pub store: Arc<BlockStore>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningOrderer {
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Reads a channel's genesis block and the configuration it carries.
pub fn read_genesis(path: &Path) -> Result<(Block, ChannelConfig), NodeError> {
    let bad = |reason: String| NodeError::GenesisBlock {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let block = Block::decode(bytes.as_slice()).map_err(|e| bad(e.to_string()))?;
    let channel = ChannelConfig::from_block(&block).map_err(|e| bad(e.to_string()))?;
    Ok((block, channel))
}

/// Joins the channel of a genesis block: stores block 0 if the store is empty; refuses another
/// channel's genesis.
pub fn join_channel(store: &BlockStore, genesis: &Block) -> Result<(), NodeError> {
    if store.height() == 0 {
        store.append(genesis)?;
        return Ok(());
    }
    let ours = store.block(0)?.and_then(|b| b.header);
    if ours != genesis.header {
        return Err(NodeError::OtherChannel);
    }
    Ok(())
}

/// The consensus core's settings: the channel's BFT options and batch settings, in ticks, and
/// the consenters `previous` (the configuration before the newest consenter change, made by the
/// block below `changed_until`) had.
fn consensus_config(
    cfg: &OrdererConfig,
    channel: &ChannelConfig,
    previous: Option<&ChannelConfig>,
    changed_until: u64,
) -> Config {
    let settings = core_settings(channel);
    let mut ids: Vec<u32> = channel.consenters.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    let former = previous
        .map(|p| {
            p.consenters
                .iter()
                .map(|c| c.id)
                .filter(|id| !ids.contains(id))
                .collect()
        })
        .unwrap_or_default();
    let mut config = Config {
        channel_id: channel.channel_id.clone(),
        self_id: cfg.consenter_id,
        consenters: ids,
        former,
        consenters_since: changed_until,
        tick: Duration::from_millis(cfg.tick_ms.max(1)),
        batch: settings.batch.clone(),
        heartbeat_ticks: 1,
        leader_timeout_ticks: 1,
        request_timeout_ticks: 1,
        view_change_timeout_ticks: 1,
        retransmit_ticks: 1,
        max_pool_requests: 1,
        max_pool_bytes: DEFAULT_MAX_POOL_BYTES,
    };
    config.apply(&settings);
    config
}

/// The configuration in force and its block's number: the newest configuration block, which the
/// last block's LAST_CONFIG names (the genesis configuration until another commits).
fn config_in_force(
    store: &BlockStore,
    genesis: ChannelConfig,
) -> Result<(ChannelConfig, u64), NodeError> {
    let corrupt = NodeError::Corrupt;
    let height = store.height();
    if height <= 1 {
        return Ok((genesis, 0));
    }
    let last = store
        .block(height - 1)?
        .ok_or_else(|| corrupt(format!("block {} is missing", height - 1)))?;
    let index = medledger_common::protoutil::signed_last_config(&last)
        .ok_or_else(|| corrupt("the last block names no configuration block".into()))?;
    if index == 0 {
        return Ok((genesis, 0));
    }
    let block = store
        .block(index)?
        .ok_or_else(|| corrupt(format!("configuration block {index} is missing")))?;
    let config = ChannelConfig::from_block(&block)
        .map_err(|e| corrupt(format!("configuration block {index}: {e}")))?;
    Ok((config, index))
}

/// The configuration in force before the newest change of the consenter set (none if the
/// genesis consenters still order), and the height right after the block that changed it:
/// each configuration block's predecessor is named by the LAST_CONFIG of the block before it.
fn config_before_consenter_change(
    store: &BlockStore,
    genesis: &ChannelConfig,
    current: &ChannelConfig,
    mut index: u64,
) -> Result<(Option<ChannelConfig>, u64), NodeError> {
    let corrupt = NodeError::Corrupt;
    while index > 0 {
        let changed_until = index.saturating_add(1);
        let before = store
            .block(index - 1)?
            .ok_or_else(|| corrupt(format!("block {} is missing", index - 1)))?;
        index = medledger_common::protoutil::signed_last_config(&before)
            .ok_or_else(|| corrupt(format!("block {} names no configuration block", index - 1)))?;
        let config = if index == 0 {
            genesis.clone()
        } else {
            let block = store
                .block(index)?
                .ok_or_else(|| corrupt(format!("configuration block {index} is missing")))?;
            ChannelConfig::from_block(&block)
                .map_err(|e| corrupt(format!("configuration block {index}: {e}")))?
        };
        if config.consenters != current.consenters {
            return Ok((Some(config), changed_until));
        }
    }
    Ok((None, 0))
}

/// The checks only Broadcast makes, before the consensus core checks the request (form,
/// signature, Writers — once): size, NOT_FOUND for another channel, and the creator's
/// certificate against the clock (the core ignores the clock so that replicas agree).
fn check_broadcast(
    channel: &ChannelConfig,
    env: &Envelope,
    max_bytes: usize,
) -> Result<(), (BlockStatus, String)> {
    let size = env.encoded_len();
    if size > max_bytes {
        return Err((
            BlockStatus::BadRequest,
            format!("message of {size} bytes exceeds the absolute maximum of {max_bytes}"),
        ));
    }
    let u = unpack_envelope(env).map_err(|e| (BlockStatus::BadRequest, e.to_string()))?;
    if u.channel_header.channel_id != channel.channel_id {
        return Err((
            BlockStatus::NotFound,
            format!("channel {:?} not found", u.channel_header.channel_id),
        ));
    }
    channel
        .msps
        .deserialize(&u.signature_header.creator, Expiry::now())
        .map_err(|e| (BlockStatus::Forbidden, format!("creator: {e}")))?;
    Ok(())
}

/// Orders one envelope from Broadcast: Broadcast's own checks, a configuration update turned
/// into the CONFIG transaction it leads to, then the consensus core's verdict. Returns the status,
/// its message, and whether it is a refusal worth logging.
async fn order(svc: &Services, env: Envelope) -> (BlockStatus, String, bool) {
    if let Err((s, info)) = check_broadcast(&svc.config.get(), &env, svc.max_bytes) {
        return (s, info, true);
    }
    let is_update = unpack_envelope(&env)
        .is_ok_and(|u| u.channel_header.r#type == HeaderType::ConfigUpdate as i32);
    let env = if is_update {
        match svc.crypto.config_transaction(&env) {
            Ok(config) => config,
            Err(e) => return request_verdict(Some(Err(e))),
        }
    } else {
        env
    };
    let (reply, wait) = oneshot::channel();
    let sent = svc
        .events
        .send(Event::Request {
            envelope: env.encode_to_vec(),
            reply,
        })
        .await;
    match sent {
        Ok(()) => request_verdict(wait.await.ok()),
        Err(_) => request_verdict(None),
    }
}

/// Fabric's Broadcast answer for the consensus core's verdict on a request (`None`: the core
/// is gone).
fn request_verdict(verdict: Option<Result<(), RequestError>>) -> (BlockStatus, String, bool) {
    match verdict {
        Some(Ok(())) => (BlockStatus::Success, String::new(), false),
        Some(Err(RequestError::Duplicate)) => (
            BlockStatus::ServiceUnavailable,
            "failed to submit request: request already exists".into(),
            // An answer, not a refusal: the gateway sends each transaction to every
            // consenter, which also share it among themselves.
            false,
        ),
        // Fabric's SmartBFT pool makes the client wait for room and then gives up ("timeout
        // submitting to request pool"); the core cannot wait, so it refuses at once with the
        // same status: the client backs off and retries.
        Some(Err(RequestError::Overloaded)) => (
            BlockStatus::ServiceUnavailable,
            "failed to submit request: request pool is full".into(),
            true,
        ),
        Some(Err(RequestError::NotConsenter)) => (
            BlockStatus::ServiceUnavailable,
            RequestError::NotConsenter.to_string(),
            true,
        ),
        Some(Err(RequestError::Malformed(why))) => (BlockStatus::BadRequest, why, true),
        Some(Err(RequestError::Forbidden(why))) => (BlockStatus::Forbidden, why, true),
        None => (
            BlockStatus::ServiceUnavailable,
            "the orderer is shutting down".into(),
            false,
        ),
    }
}

struct Services {
    /// The channel configuration in force, shared with the consensus core's crypto.
    config: Arc<ConfigInForce>,
    crypto: Arc<ConsenterCrypto>,
    store: Arc<BlockStore>,
    events: mpsc::Sender<Event>,
    /// The configuration before the newest consenter change: the consenters it removed are
    /// still recognised, to be sent the blocks that tell them so.
    previous: std::sync::RwLock<Option<Arc<ChannelConfig>>>,
    max_bytes: usize,
    misbehaviour: Misbehaviour,
}

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The gRPC services, sharing the node's state.
#[derive(Clone)]
struct Svc(Arc<Services>);

#[tonic::async_trait]
impl AtomicBroadcast for Svc {
    type BroadcastStream = Out<BroadcastResponse>;
    type DeliverStream = Out<DeliverResponse>;

    async fn broadcast(
        &self,
        r: Request<Streaming<Envelope>>,
    ) -> Result<Response<Self::BroadcastStream>, Status> {
        let remote = r.remote_addr();
        let mut inbound = r.into_inner();
        let svc = self.0.clone();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            while let Some(env) = next_or_refuse(
                &mut inbound,
                "orderer.AtomicBroadcast/Broadcast",
                remote,
                &tx,
            )
            .await
            {
                let (status, info, refused) = order(&svc, env).await;
                if refused {
                    log_refusal(
                        "orderer.AtomicBroadcast/Broadcast",
                        remote,
                        None,
                        &format_args!("{}: {info}", status.as_str_name()),
                    );
                }
                if tx
                    .send(Ok(BroadcastResponse {
                        status: status as i32,
                        info,
                    }))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn deliver(
        &self,
        r: Request<Streaming<Envelope>>,
    ) -> Result<Response<Self::DeliverStream>, Status> {
        let remote = r.remote_addr();
        let mut inbound = r.into_inner();
        let svc = self.0.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let status = |s: BlockStatus| DeliverResponse {
                r#type: Some(deliver_response::Type::Status(s as i32)),
            };
            while let Some(env) =
                next_or_refuse(&mut inbound, "orderer.AtomicBroadcast/Deliver", remote, &tx).await
            {
                let mut range = match check_seek(
                    &svc.config.get(),
                    &env,
                    svc.store.height(),
                    "/Channel/Readers",
                    15 * 60,
                ) {
                    Ok(r) => r,
                    Err(s) => {
                        // NOT_FOUND for a block not yet cut is a poll's answer, not a refusal.
                        if s != BlockStatus::NotFound {
                            log_refusal(
                                "orderer.AtomicBroadcast/Deliver",
                                remote,
                                None,
                                &s.as_str_name(),
                            );
                        }
                        let _ = tx.send(Ok(status(s))).await;
                        return;
                    }
                };
                let mut heights = svc.store.subscribe();
                let mut n = range.start;
                while n <= range.stop {
                    if n >= svc.store.height() {
                        if range.fail_if_not_ready {
                            let _ = tx.send(Ok(status(BlockStatus::NotFound))).await;
                            return;
                        }
                        tokio::select! {
                            r = heights.changed() => if r.is_err() { return },
                            _ = tx.closed() => return,
                        }
                        continue;
                    }
                    if !range.still_admitted(&svc.config.get(), "/Channel/Readers") {
                        log_refusal(
                            "orderer.AtomicBroadcast/Deliver",
                            remote,
                            None,
                            &"a configuration update no longer admits the requester",
                        );
                        let _ = tx.send(Ok(status(BlockStatus::Forbidden))).await;
                        return;
                    }
                    if range.session_expired(medledger_common::msp::unix_now()) {
                        log_refusal(
                            "orderer.AtomicBroadcast/Deliver",
                            remote,
                            None,
                            &"the requester's certificate expired during the stream",
                        );
                        let _ = tx.send(Ok(status(BlockStatus::Forbidden))).await;
                        return;
                    }
                    let Ok(Some(mut block)) = svc.store.block(n) else {
                        let _ = tx.send(Ok(status(BlockStatus::InternalServerError))).await;
                        return;
                    };
                    if range.headers_only {
                        block = medledger_common::protoutil::block_attestation(block);
                    }
                    let Some(block) = svc.misbehaviour.deliver(block, range.headers_only) else {
                        // Withholding: hold the stream open and silent, as a censor would.
                        tx.closed().await;
                        return;
                    };
                    if tx
                        .send(Ok(DeliverResponse {
                            r#type: Some(deliver_response::Type::Block(block)),
                        }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    n += 1;
                }
                if tx.send(Ok(status(BlockStatus::Success))).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl Consensus for Svc {
    async fn step(&self, r: Request<Streaming<ConsensusMessage>>) -> Result<Response<Ack>, Status> {
        let Some(cert) = r
            .peer_certs()
            .and_then(|c| c.first().map(|c| c.as_ref().to_vec()))
        else {
            tracing::warn!("consensus stream without a client certificate: refused");
            return Err(Status::permission_denied("not a consenter of this channel"));
        };
        let Some(from) = self.0.consenter_of(&cert) else {
            tracing::warn!("consensus stream from a client that is not a consenter: refused");
            return Err(Status::permission_denied("not a consenter of this channel"));
        };
        let mut sequence = self.0.config.get().sequence;
        let remote = r.remote_addr();
        let mut inbound = r.into_inner();
        while let Some(msg) =
            next_message(&mut inbound, "medledger.consensus.Consensus/Step", remote).await?
        {
            // The link is the only authentication of the messages that are not proofs: once a
            // configuration replaces or removes this certificate, the stream ends.
            let now = self.0.config.get().sequence;
            if now != sequence {
                if self.0.consenter_of(&cert) != Some(from) {
                    tracing::warn!(
                        consenter = from,
                        "consensus stream whose certificate the configuration no longer names: closed"
                    );
                    return Err(Status::permission_denied(
                        "the channel configuration no longer names this certificate",
                    ));
                }
                sequence = now;
            }
            if self
                .0
                .events
                .send(Event::Consensus { from, msg })
                .await
                .is_err()
            {
                break;
            }
        }
        Ok(Response::new(Ack {}))
    }
}

impl Services {
    /// Who is on the other end of a consensus stream, by the consenters' TLS client certificates
    /// in the configuration in force (a consenter added later is recognised from its block on),
    /// or one the newest change removed (by its certificate then: not the replaced certificate
    /// of one still in the set).
    fn consenter_of(&self, cert: &[u8]) -> Option<u32> {
        let current = self.config.get();
        consenter_by_tls_cert(&current, cert).or_else(|| {
            let previous = self.previous.read().unwrap_or_else(|e| e.into_inner());
            consenter_by_tls_cert(previous.as_ref()?, cert)
                .filter(|id| current.consenter(*id).is_none())
        })
    }
}

/// The id of the consenter whose TLS client certificate (DER) is `der`.
fn consenter_by_tls_cert(channel: &ChannelConfig, der: &[u8]) -> Option<u32> {
    channel
        .consenters
        .iter()
        .find(|c| pem_der(&c.client_tls_cert).is_some_and(|d| d == der))
        .map(|c| c.id)
}

/// The consensus links to the other consenters, following the configuration in force: a link
/// per consenter, opened when a configuration block adds one (or changes its endpoint) and
/// closed when one removes it.
struct Links {
    self_id: u32,
    /// The TLS roots configured locally; the channel's organisations' TLS CAs are added to them.
    roots: Vec<u8>,
    /// The consenters in force: what is sent to all goes to them only (removed ones still have a
    /// link, for the blocks that tell them of their removal).
    members: Vec<u32>,
    identity: (Vec<u8>, Vec<u8>),
    limits: MessageLimits,
    shutdown: watch::Receiver<bool>,
    /// By consenter id: its endpoint and the queue of its link task.
    open: BTreeMap<u32, (String, mpsc::Sender<ConsensusMessage>)>,
}

/// Messages queued for one consenter while its link is slow or down; beyond it they are dropped
/// (the protocol retransmits what matters).
const LINK_QUEUE: usize = 1024;

impl Links {
    /// Opens and closes links so that there is one per consenter of `channel` but us, and per
    /// consenter `previous` had that `channel` removed.
    fn follow(&mut self, channel: &ChannelConfig, previous: Option<&ChannelConfig>) {
        self.members = channel.consenters.iter().map(|c| c.id).collect();
        // A consenter of an organisation added later has a TLS certificate of that
        // organisation's TLS CA.
        let mut roots = self.roots.clone();
        for der in channel.tls_ca_ders() {
            roots.push(b'\n');
            roots.extend(::pem::encode(&::pem::Pem::new("CERTIFICATE", der)).into_bytes());
        }
        let removed = previous
            .into_iter()
            .flat_map(|p| &p.consenters)
            .filter(|c| channel.consenter(c.id).is_none());
        let wanted: BTreeMap<u32, String> = channel
            .consenters
            .iter()
            .chain(removed)
            .filter(|c| c.id != self.self_id)
            .map(|c| (c.id, format!("{}:{}", c.host, c.port)))
            .collect();
        // Dropping a link's queue ends its task.
        self.open
            .retain(|id, (endpoint, _)| wanted.get(id) == Some(endpoint));
        for (id, endpoint) in wanted {
            if self.open.contains_key(&id) {
                continue;
            }
            tracing::info!(consenter = id, %endpoint, "consensus link opened");
            let (tx, rx) = mpsc::channel(LINK_QUEUE);
            tokio::spawn(outbound_link(
                endpoint.clone(),
                roots.clone(),
                self.identity.clone(),
                self.limits,
                rx,
                self.shutdown.clone(),
            ));
            self.open.insert(id, (endpoint, tx));
        }
    }

    fn send(&self, to: Option<u32>, msg: &ConsensusMessage) {
        for (peer, (_, link)) in &self.open {
            let addressed = match to {
                Some(t) => t == *peer,
                None => self.members.contains(peer),
            };
            if addressed {
                let _ = link.try_send(msg.clone());
            }
        }
    }
}

/// Keeps a consensus stream open to one other consenter, reconnecting as needed. Messages that
/// cannot be sent are dropped: the protocol retransmits what matters.
async fn outbound_link(
    address: String,
    roots: Vec<u8>,
    identity: (Vec<u8>, Vec<u8>),
    limits: MessageLimits,
    mut queue: mpsc::Receiver<ConsensusMessage>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let host = address
            .rsplit_once(':')
            .map(|(h, _)| h.to_owned())
            .unwrap_or_default();
        let tls = tonic::transport::ClientTlsConfig::new()
            .domain_name(host)
            .ca_certificate(tonic::transport::Certificate::from_pem(&roots))
            .identity(tonic::transport::Identity::from_pem(
                &identity.0,
                &identity.1,
            ));
        let connect = async {
            let ep = tonic::transport::Endpoint::from_shared(format!("https://{address}"))
                .map_err(|e| e.to_string())?
                .connect_timeout(Duration::from_secs(2))
                .tls_config(tls)
                .map_err(|e| e.to_string())?;
            ep.connect().await.map_err(|e| e.to_string())
        };
        let channel = tokio::select! {
            c = connect => c,
            _ = shutdown.changed() => return,
        };
        if let Ok(ch) = channel {
            let (tx, rx) = mpsc::channel::<ConsensusMessage>(1024);
            let mut client = ConsensusClient::new(ch)
                .max_encoding_message_size(limits.max_send)
                .max_decoding_message_size(limits.max_recv);
            let call = tokio::spawn(async move { client.step(ReceiverStream::new(rx)).await });
            loop {
                tokio::select! {
                    m = queue.recv() => match m {
                        Some(m) => if tx.send(m).await.is_err() { break },
                        None => return,
                    },
                    _ = shutdown.changed() => return,
                }
                if call.is_finished() {
                    break;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(300)) => {},
            _ = shutdown.changed() => return,
        }
        // Drop what queued up while disconnected.
        while queue.try_recv().is_ok() {}
    }
}

fn pem_der(pem: &[u8]) -> Option<Vec<u8>> {
    ::pem::parse(pem).ok().map(|p| p.into_contents())
}

/// Starts an orderer for the channel of its genesis block.
pub async fn start(cfg: OrdererConfig) -> Result<RunningOrderer, NodeError> {
    start_byzantine(cfg, Misbehaviour::default()).await
}

/// Starts an orderer that commits the faults `misbehaviour` names: for tests of how the rest
/// of the network withstands it.
pub async fn start_byzantine(
    cfg: OrdererConfig,
    misbehaviour: Misbehaviour,
) -> Result<RunningOrderer, NodeError> {
    if misbehaviour != Misbehaviour::default() {
        tracing::warn!(?misbehaviour, "this orderer is Byzantine on purpose");
    }
    let (genesis, channel) = read_genesis(&cfg.genesis_block)?;
    let signer = SigningIdentity::load(&cfg.msp_dir, &cfg.msp_id).map_err(|e| NodeError::File {
        path: cfg.msp_dir.clone(),
        reason: e.to_string(),
    })?;
    let store = Arc::new(BlockStore::open(
        &cfg.data_dir.join("chains").join(&channel.channel_id),
    )?);
    join_channel(&store, &genesis)?;
    let genesis_config = channel.clone();
    let (channel, last_config) = config_in_force(&store, channel)?;
    let (previous, changed_until) =
        config_before_consenter_change(&store, &genesis_config, &channel, last_config)?;
    if channel.consenter(cfg.consenter_id).is_none() {
        tracing::warn!(
            consenter = cfg.consenter_id,
            height = store.height(),
            consenters = %channel
                .consenters
                .iter()
                .map(|c| c.id.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            "this orderer is not a consenter of the channel at its height: it catches up from the \
             consenters and orders once a configuration block names its consenterId (check \
             consenterId if no update adds it)"
        );
    }
    let config = Arc::new(ConfigInForce::new(channel.clone()));
    let crypto = Arc::new(
        ConsenterCrypto::sharing(cfg.consenter_id, signer, config.clone())
            .map_err(|e| NodeError::Consenters(e.to_string()))?,
    );
    let tls = cfg.tls.clone().ok_or_else(|| {
        NodeError::Config("orderers need TLS (mutual TLS between consenters)".into())
    })?;
    let material = tls.read().map_err(NodeError::Tls)?;
    let (cert, key, roots) = (
        material.cert_pem,
        material.key_pem,
        material.client_ca_bundle,
    );
    let ccfg = consensus_config(&cfg, &channel, previous.as_ref(), changed_until);
    let max_bytes = ccfg.batch.absolute_max_bytes;
    let restored = store.restore()?;
    if restored.last_config != last_config {
        return Err(NodeError::Corrupt(format!(
            "the write-ahead state names configuration block {}, the chain {last_config}",
            restored.last_config
        )));
    }
    let mut replica = Replica::new(ccfg, crypto.clone(), restored);

    let (events_tx, mut events) = mpsc::channel::<Event>(4096);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut links = Links {
        self_id: cfg.consenter_id,
        roots: roots.clone(),
        members: Vec::new(),
        identity: (cert.clone(), key.clone()),
        limits: cfg.message_limits(),
        shutdown: shutdown_rx.clone(),
        open: BTreeMap::new(),
    };
    links.follow(&channel, previous.as_ref());
    let mut faulty = misbehaviour.consensus_faults(cfg.consenter_id, crypto.clone());
    let services = Arc::new(Services {
        config: config.clone(),
        crypto,
        store: store.clone(),
        events: events_tx,
        previous: std::sync::RwLock::new(previous.map(Arc::new)),
        max_bytes,
        misbehaviour,
    });
    let (listener, address) = medledger_common::ops::bind(&cfg.listen_address)
        .await
        .map_err(|e| listen_error(&cfg.listen_address, &e))?;
    // Clients are trusted by the configured roots and by the TLS CAs of the channel's
    // organisations in force (an organisation added later is trusted from its block on).
    let client_roots = ClientRoots::new(&roots, tls.client_auth_required)
        .map_err(|e| NodeError::Tls(e.to_string()))?;
    {
        let client_roots = client_roots.clone();
        config.observe(Box::new(move |c| {
            client_roots.set_channel(&c.channel_id, c.tls_ca_ders())
        }));
    }
    let server_tls = tlsserver::server_config(&cert, &key, client_roots)
        .map_err(|e| NodeError::Tls(e.to_string()))?;
    let mut rx = shutdown_rx.clone();
    let server = tonic::transport::Server::builder()
        .add_service(
            AtomicBroadcastServer::new(Svc(services.clone()))
                .max_decoding_message_size(cfg.max_recv_msg_size)
                .max_encoding_message_size(cfg.max_send_msg_size),
        )
        .add_service(
            ConsensusServer::new(Svc(services.clone()))
                .max_decoding_message_size(cfg.max_recv_msg_size)
                .max_encoding_message_size(cfg.max_send_msg_size),
        )
        .serve_with_incoming_shutdown(tlsserver::incoming(listener, server_tls), async move {
            let _ = rx.changed().await;
        });
    tasks.push(tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "orderer gRPC server stopped");
        }
    }));

    let view = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let operations_address = match &cfg.operations_address {
        Some(a) => {
            let (l, addr) = medledger_common::ops::bind(a)
                .await
                .map_err(|e| listen_error(a, &e))?;
            let (st, v, ch) = (store.clone(), view.clone(), channel.channel_id.clone());
            let metrics = Arc::new(move || {
                let label = vec![("channel".to_owned(), ch.clone())];
                vec![
                    medledger_common::ops::Metric {
                        name: "ledger_blockchain_height".into(),
                        help: "Blocks in the channel's chain".into(),
                        kind: "gauge",
                        labels: label.clone(),
                        value: st.height() as f64,
                    },
                    medledger_common::ops::Metric {
                        name: "consensus_bft_view".into(),
                        help: "Current BFT view".into(),
                        kind: "gauge",
                        labels: label,
                        value: v.load(std::sync::atomic::Ordering::Relaxed) as f64,
                    },
                ]
            });
            let mut rx = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                let _ = medledger_common::ops::serve(l, metrics, async move {
                    let _ = rx.changed().await;
                })
                .await;
            }));
            Some(addr)
        }
        None => None,
    };
    let loop_view = view.clone();
    let loop_store = store.clone();
    let loop_config = config.clone();
    let loop_services = services.clone();
    let mut seen = config.get();
    let mut stop = shutdown_rx.clone();
    let tick = Duration::from_millis(cfg.tick_ms.max(1));
    let id = cfg.consenter_id;
    tasks.push(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut outputs = Vec::new();
            let mut replies = Vec::new();
            let mut handle = |ev: Event, outputs: &mut Vec<Output>, replica: &mut Replica| match ev {
                Event::Consensus { from, msg } => outputs.extend(replica.receive(from, msg)),
                Event::Request { envelope, reply } => {
                    let (r, out) = replica.submit(envelope);
                    outputs.extend(out);
                    replies.push((reply, r));
                }
            };
            tokio::select! {
                _ = stop.changed() => return,
                _ = ticker.tick() => outputs.extend(replica.tick()),
                ev = events.recv() => match ev {
                    None => return,
                    Some(ev) => handle(ev, &mut outputs, &mut replica),
                },
            }
            // Group commit: take what else is waiting, then write once.
            for _ in 0..256 {
                match events.try_recv() {
                    Ok(ev) => handle(ev, &mut outputs, &mut replica),
                    Err(_) => break,
                }
            }
            let mut ops = Vec::new();
            let mut blocks = Vec::new();
            let mut rest = Vec::new();
            for o in outputs {
                match o {
                    Output::Wal(op) => ops.push(op),
                    Output::Commit(b) => blocks.push(b),
                    other => rest.push(other),
                }
            }
            if !ops.is_empty() || !blocks.is_empty() {
                if let Err(e) = loop_store.write(&ops, &blocks) {
                    tracing::error!(orderer = id, error = %e, "cannot write blocks or consensus state: stopping");
                    return;
                }
                for b in &blocks {
                    tracing::debug!(orderer = id, block = b.header.as_ref().map(|h| h.number).unwrap_or_default(), "block committed");
                }
                let configs: Vec<&Block> = blocks
                    .iter()
                    .filter(|b| medledger_common::protoutil::is_config_block(b))
                    .collect();
                if !configs.is_empty() {
                    let mut previous =
                        loop_services.previous.write().unwrap_or_else(|e| e.into_inner());
                    // Block by block, as the core applied them: with two changes in one batch,
                    // the newest one's removals are the ones still answered.
                    for b in configs {
                        let Ok(next) = ChannelConfig::from_block(b) else { continue };
                        if next.consenters != seen.consenters {
                            *previous = Some(seen.clone());
                        }
                        seen = Arc::new(next);
                    }
                    links.follow(&loop_config.get(), previous.as_deref());
                }
            }
            loop_view.store(replica.view(), std::sync::atomic::Ordering::Relaxed);
            // Acknowledge clients only once their requests are durable.
            for (reply, r) in replies {
                let _ = reply.send(r);
            }
            for o in rest {
                match o {
                    Output::Send { to, msg } => {
                        let Some(msg) = faulty.outgoing(msg) else { continue };
                        links.send(to, &msg);
                    }
                    Output::ServeState { to, from_seq, until } => {
                        let end = loop_store.height().min(from_seq.saturating_add(20)).min(until);
                        // Served in order up to the first block that cannot be read: a gap
                        // would only make the laggard refuse the rest.
                        let mut blocks: Vec<Block> = Vec::new();
                        for n in from_seq..end {
                            match loop_store.block(n) {
                                Ok(Some(b)) => blocks.push(b),
                                Ok(None) => {
                                    tracing::error!(block = n, "stored block missing: not served");
                                    break;
                                }
                                Err(e) => {
                                    tracing::error!(block = n, error = %e, "stored block unreadable: not served");
                                    break;
                                }
                            }
                        }
                        let msg = replica.state_response_message(blocks);
                        links.send(Some(to), &msg);
                    }
                    Output::Wal(_) | Output::Commit(_) => {}
                }
            }
        }
    }));
    tracing::info!(consenter = cfg.consenter_id, %address, channel = %channel.channel_id, "orderer started");
    Ok(RunningOrderer {
        address,
        operations_address,
        store,
        shutdown,
        tasks,
    })
}
