//! An ordering stand-in for peer tests (issue #4 allows one until the BFT service lands): a
//! single consenter speaking Fabric's AtomicBroadcast that cuts a block on a timer or a count,
//! signs it as consenter 1 in Fabric's BFT signature format, and delivers blocks.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use medledger_common::SigningIdentity;
use medledger_common::channelconfig::sign_block;
use medledger_common::protoutil::{block_header_hash, new_block, unpack_envelope};
use medledger_proto::common::{Block, Envelope, Metadata, Status as BlockStatus};
use medledger_proto::orderer::atomic_broadcast_server::{AtomicBroadcast, AtomicBroadcastServer};
use medledger_proto::orderer::{
    BroadcastResponse, DeliverResponse, SeekInfo, deliver_response, seek_position,
};
use prost::Message;
use tokio::sync::{Mutex, mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

struct State {
    blocks: Mutex<Vec<Block>>,
    queue: Mutex<Vec<Vec<u8>>>,
    height: watch::Sender<u64>,
    signer: SigningIdentity,
}

struct Service(Arc<State>);

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AtomicBroadcast for Service {
    type BroadcastStream = Out<BroadcastResponse>;
    type DeliverStream = Out<DeliverResponse>;

    async fn broadcast(
        &self,
        r: Request<Streaming<Envelope>>,
    ) -> Result<Response<Self::BroadcastStream>, Status> {
        let mut inbound = r.into_inner();
        let state = self.0.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok(Some(env)) = inbound.message().await {
                let status = if env.signature.is_empty() || unpack_envelope(&env).is_err() {
                    BlockStatus::BadRequest
                } else {
                    state.queue.lock().await.push(env.encode_to_vec());
                    BlockStatus::Success
                };
                if tx
                    .send(Ok(BroadcastResponse {
                        status: status as i32,
                        info: String::new(),
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
        let mut inbound = r.into_inner();
        let state = self.0.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let Ok(Some(env)) = inbound.message().await else {
                return;
            };
            let start = unpack_envelope(&env)
                .ok()
                .and_then(|u| SeekInfo::decode(u.payload.data.as_slice()).ok())
                .and_then(|s| match s.start?.r#type? {
                    seek_position::Type::Specified(s) => Some(s.number),
                    seek_position::Type::Oldest(_) => Some(0),
                    _ => None,
                })
                .unwrap_or(0);
            let mut heights = state.height.subscribe();
            let mut n = start;
            loop {
                let next = state.blocks.lock().await.get(n as usize).cloned();
                match next {
                    Some(b) => {
                        let resp = DeliverResponse {
                            r#type: Some(deliver_response::Type::Block(b)),
                        };
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                        n += 1;
                    }
                    None => {
                        tokio::select! {
                            r = heights.changed() => if r.is_err() { return },
                            _ = tx.closed() => return,
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// A running stand-in.
pub struct StandInOrderer {
    pub address: SocketAddr,
    stop: watch::Sender<bool>,
}

impl StandInOrderer {
    /// Serves on `listener` (bound before the genesis block was made, so it names this port),
    /// cutting a block every `batch_timeout` when transactions are waiting.
    pub async fn start(
        listener: tokio::net::TcpListener,
        genesis: Block,
        signer: SigningIdentity,
        tls: Option<(Vec<u8>, Vec<u8>)>,
        batch_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let address = listener.local_addr()?;
        let (height, _) = watch::channel(1u64);
        let state = Arc::new(State {
            blocks: Mutex::new(vec![genesis]),
            queue: Mutex::new(Vec::new()),
            height,
            signer,
        });
        let (stop, mut stop_rx) = watch::channel(false);
        let cutter = state.clone();
        let mut stop_cut = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(batch_timeout) => {},
                    _ = stop_cut.changed() => return,
                }
                let batch: Vec<Vec<u8>> = std::mem::take(&mut *cutter.queue.lock().await);
                if batch.is_empty() {
                    continue;
                }
                let mut blocks = cutter.blocks.lock().await;
                let prev = blocks
                    .last()
                    .and_then(|b| b.header.as_ref())
                    .map(block_header_hash)
                    .unwrap_or_default();
                let mut block = new_block(blocks.len() as u64, prev.to_vec(), batch);
                let value = b"standin".to_vec();
                let Ok(sig) = sign_block(&block, 1, &value, &cutter.signer) else {
                    continue;
                };
                if let Some(md) = block.metadata.as_mut() {
                    md.metadata[0] = Metadata {
                        value,
                        signatures: vec![sig],
                    }
                    .encode_to_vec();
                }
                blocks.push(block);
                cutter.height.send_replace(blocks.len() as u64);
            }
        });
        let mut builder = tonic::transport::Server::builder();
        if let Some((cert, key)) = tls {
            builder = builder.tls_config(
                tonic::transport::ServerTlsConfig::new()
                    .identity(tonic::transport::Identity::from_pem(cert, key)),
            )?;
        }
        let server = builder
            .add_service(AtomicBroadcastServer::new(Service(state)))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = stop_rx.changed().await;
            });
        tokio::spawn(server);
        Ok(Self { address, stop })
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}
