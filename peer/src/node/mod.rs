//! A running peer: the gRPC server (Gateway, Endorser, Deliver) with
//! TLS, and one block puller per channel that takes blocks from the orderers and commits them.

use medledger_common::tlsserver::{self, ClientRoots};
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
use tokio::sync::{RwLock, watch};
use tokio_stream::wrappers::TcpListenerStream;

use crate::channel::collection::Collections;
use crate::channel::definition::{ChaincodeDefinition, ChaincodeEndpoint, ConnectionInfo};
use crate::channel::pvtdata::PvtCandidates;
use crate::channel::{Channel, Channels};
use crate::comm::RemotePeer;
use crate::comm::{ClientTls, dial};
use crate::endorsement::Endorser;
use crate::execution::chaincode::ChaincodeSupport;
use crate::execution::lifecycle::{
    LIFECYCLE, PackageStore, committed_definitions, lifecycle_definition,
};
use crate::execution::plugins::PluginRegistry;
use crate::services::deliver::DeliverService;
use crate::services::gateway::GatewayService;
use crate::services::privdata::{PrivateDataClient, PrivateDataService, reconcile_loop};
use crate::storage::ledger::Ledger;
use crate::storage::sealing::CollectionKeys;
use crate::validation::{VerifiedBlock, commit_block};
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
    /// A command-line argument that does not read.
    #[error("{0}")]
    Usage(String),
    /// The peer a command talks to could not be reached or refused the call.
    #[error("peer {address}: {reason}")]
    Peer { address: String, reason: String },
    /// A command that ran and failed, with the reason.
    #[error("{0}")]
    Failed(String),
}

fn read(path: &Path) -> Result<Vec<u8>, NodeError> {
    std::fs::read(path).map_err(|e| NodeError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

mod attestations;
mod channels;
pub mod cli;
mod config;
mod puller;

pub use attestations::DeliveryTimeouts;
use channels::{ChannelRunner, genesis_channel_id};
pub use config::*;
pub use medledger_common::config::TlsFiles;

struct EndorserService(Arc<Endorser>);

#[tonic::async_trait]
impl EndorserRpc for EndorserService {
    async fn process_proposal(
        &self,
        request: tonic::Request<SignedProposal>,
    ) -> Result<tonic::Response<ProposalResponse>, tonic::Status> {
        let remote = request.remote_addr();
        self.0
            .process(&request.into_inner())
            .await
            .map(tonic::Response::new)
            .map_err(|e| {
                medledger_common::refusal::log_refusal("protos.Endorser", remote, None, &e);
                tonic::Status::failed_precondition(e.to_string())
            })
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
    let client_roots = match (&cfg.tls, &tls) {
        (Some(files), Some(t)) => Some(
            ClientRoots::new(&t.client_ca_bundle, files.client_auth_required)
                .map_err(|e| NodeError::Config(format!("TLS: {e}")))?,
        ),
        _ => None,
    };
    cfg.check_transport()?;
    let limits = cfg.message_limits();
    let remote_peers = remote_peers(&cfg)?;
    let private_data = Arc::new(PrivateDataClient::new(
        remote_peers.clone(),
        client_tls.clone(),
        limits,
        signer.clone(),
        Duration::from_millis(cfg.private_data.pull_timeout_ms),
    ));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let tasks: Tasks = Arc::default();
    let mut plugins = plugins;
    if let Some(audit) = &cfg.audit {
        let source = crate::services::audit::balp::AuditSource {
            peer_id: cfg.id.clone(),
            msp_id: cfg.msp_id.clone(),
            subject: signer.certificate().subject.clone(),
            address: cfg.listen_address.clone(),
        };
        let feed = crate::services::audit::start(
            audit,
            source,
            &cfg.data_dir.join("audit"),
            shutdown_rx.clone(),
        )
        .map_err(|e| NodeError::Config(e.to_string()))?;
        plugins.register_audit("atna", feed.plugin);
        tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(feed.tasks);
    }
    let runner = Arc::new(ChannelRunner {
        data_dir: cfg.data_dir.clone(),
        msp_id: cfg.msp_id.clone(),
        keys,
        packages: packages.clone(),
        channels: channels.clone(),
        plugins: plugins.clone(),
        signer: signer.clone(),
        client_tls: client_tls.clone(),
        client_roots: client_roots.clone(),
        private_data: private_data.clone(),
        transient: cfg.private_data.transient_limits(),
        reconcile_interval: Duration::from_millis(cfg.private_data.reconcile_interval_ms.max(100)),
        limits,
        delivery: cfg.delivery_client.timeouts(),
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
        chaincodes: Arc::new(ChaincodeSupport::new(
            Duration::from_millis(cfg.chaincode_execute_timeout_ms),
            limits,
        )),
        signer: signer.clone(),
        plugins: plugins.clone(),
        private_data: private_data.clone(),
        packages: packages.clone(),
        local_msp: MspManager::new([local_msp]),
    });
    let (listener, address) = medledger_common::ops::bind(&cfg.listen_address)
        .await
        .map_err(|e| NodeError::Listen {
            addr: cfg.listen_address.clone(),
            reason: e.to_string(),
        })?;
    let gateway = GatewayService::new(
        endorser.clone(),
        remote_peers,
        client_tls.clone(),
        limits,
        address.to_string(),
    );
    let mut rx = shutdown_rx.clone();
    let (recv, send) = (limits.max_recv, limits.max_send);
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(
            GatewayServer::new(gateway)
                .max_decoding_message_size(recv)
                .max_encoding_message_size(send),
        )
        .add_service(
            EndorserServer::new(EndorserService(endorser.clone()))
                .max_decoding_message_size(recv)
                .max_encoding_message_size(send),
        )
        .add_service(
            DeliverServer::new(DeliverService {
                channels: channels.clone(),
            })
            .max_decoding_message_size(recv)
            .max_encoding_message_size(send),
        )
        .add_service(
            PrivateDataServer::new(PrivateDataService {
                channels: channels.clone(),
            })
            .max_decoding_message_size(recv)
            .max_encoding_message_size(send),
        );
    let stopped = async move {
        let _ = rx.changed().await;
    };
    // With TLS, the server's trusted clients follow the channels' configurations.
    let server: std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), tonic::transport::Error>> + Send>,
    > = match (tls.as_ref(), client_roots) {
        (Some(t), Some(roots)) => {
            let config = tlsserver::server_config(&t.cert_pem, &t.key_pem, roots)
                .map_err(|e| NodeError::Config(format!("TLS: {e}")))?;
            Box::pin(
                router.serve_with_incoming_shutdown(tlsserver::incoming(listener, config), stopped),
            )
        }
        _ => {
            Box::pin(router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopped))
        }
    };
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
        Some(a) => Some(serve_operations(a, channels.clone(), shutdown_rx.clone(), &tasks).await?),
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

/// The other organisations' peers of the configuration, with their TLS roots read.
fn remote_peers(cfg: &PeerConfig) -> Result<Vec<RemotePeer>, NodeError> {
    cfg.gateway_peers
        .iter()
        .map(|p| {
            Ok(RemotePeer {
                msp_id: p.msp_id.clone(),
                address: p.address.clone(),
                tls_root_pem: p.tls_root_cert_file.as_deref().map(read).transpose()?,
            })
        })
        .collect()
}

/// Serves `/healthz` and `/metrics` on `address` until shutdown; returns the bound address.
async fn serve_operations(
    address: &str,
    channels: Channels,
    mut shutdown: watch::Receiver<bool>,
    tasks: &Tasks,
) -> Result<SocketAddr, NodeError> {
    let (listener, bound) =
        medledger_common::ops::bind(address)
            .await
            .map_err(|e| NodeError::Listen {
                addr: address.to_owned(),
                reason: e.to_string(),
            })?;
    let metrics = channel_metrics(channels);
    let ops = tokio::spawn(async move {
        let _ = medledger_common::ops::serve(listener, metrics, async move {
            let _ = shutdown.changed().await;
        })
        .await;
    });
    tasks.lock().unwrap_or_else(|e| e.into_inner()).push(ops);
    Ok(bound)
}

/// Per-channel gauges; channels joined later are included, as the map is read at every scrape.
fn channel_metrics(
    channels: Channels,
) -> Arc<dyn Fn() -> Vec<medledger_common::ops::Metric> + Send + Sync> {
    Arc::new(move || {
        let joined: Vec<Arc<Channel>> = channels
            .try_read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        joined
            .iter()
            .flat_map(|c| {
                let (id, l) = (c.id().to_owned(), &c.ledger);
                let labels = vec![("channel".to_owned(), id)];
                let counted = |name: &str, help: &str, value: &std::sync::atomic::AtomicU64| {
                    medledger_common::ops::Metric {
                        name: name.into(),
                        help: help.into(),
                        kind: "counter",
                        labels: labels.clone(),
                        value: value.load(std::sync::atomic::Ordering::Relaxed) as f64,
                    }
                };
                [
                    counted(
                        "deliver_source_failures_total",
                        "Orderers given up as block source: stream failed or block did not verify",
                        &c.delivery.source_failures,
                    ),
                    counted(
                        "deliver_censorship_switches_total",
                        "Orderers given up as block source for withholding an attested block",
                        &c.delivery.censorship_switches,
                    ),
                    counted(
                        "deliver_invalid_attestations_total",
                        "Header attestations from orderers whose signatures did not verify",
                        &c.delivery.invalid_attestations,
                    ),
                    medledger_common::ops::Metric {
                        name: "channel_config_sequence".into(),
                        help: "Sequence of the channel configuration in force".into(),
                        kind: "gauge",
                        labels: labels.clone(),
                        value: c.config().sequence as f64,
                    },
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
    })
}
