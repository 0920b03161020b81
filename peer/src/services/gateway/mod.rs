//! Fabric's Gateway service: Evaluate, Endorse (collecting the endorsements the chaincode's
//! policy needs from other organisations' peers), Submit (to the BFT orderers, success on a
//! quorum), CommitStatus (waits for the commit) and ChaincodeEvents, with Fabric's gRPC codes and
//! `gateway.ErrorDetail` details.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use medledger_common::config::MessageLimits;
use medledger_common::msp::{Expiry, Identity};
use medledger_common::policy::{SignedData, verified_signers};
use medledger_common::protoutil::assemble_transaction;
use medledger_common::refusal::log_refusal;
use medledger_proto::common::{Envelope, Status as OrdererStatus};
use medledger_proto::gateway::gateway_server::Gateway;
use medledger_proto::gateway::{
    ChaincodeEventsRequest, ChaincodeEventsResponse, CommitStatusRequest, CommitStatusResponse,
    EndorseRequest, EndorseResponse, ErrorDetail, EvaluateRequest, EvaluateResponse,
    SignedChaincodeEventsRequest, SignedCommitStatusRequest, SubmitRequest, SubmitResponse,
};
use medledger_proto::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use medledger_proto::orderer::seek_position::Type as Seek;
use medledger_proto::protos::endorser_client::EndorserClient;
use medledger_proto::protos::{Endorsement, ProposalResponse, TxValidationCode};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel as GrpcChannel;
use tonic::{Code, Request, Response, Status};

use crate::channel::Channel;
use crate::channel::blocks::{chaincode_events, transactions};
use crate::comm::{ClientTls, ConnectionPool, RemotePeer};
use crate::endorsement::Endorser;

/// Per-call deadlines (Fabric's `peer.gateway.*Timeout`).
const ENDORSE_TIMEOUT: Duration = Duration::from_secs(30);
const BROADCAST_TIMEOUT: Duration = Duration::from_secs(30);

/// The Gateway service.
pub struct GatewayService {
    pub endorser: Arc<Endorser>,
    pub remote_peers: Vec<RemotePeer>,
    /// This peer's own address, for error details.
    pub address: String,
    conns: ConnectionPool,
}

fn detail(address: &str, msp_id: &str, message: impl Into<String>) -> ErrorDetail {
    ErrorDetail {
        address: address.to_owned(),
        msp_id: msp_id.to_owned(),
        message: message.into(),
    }
}

/// A gRPC status carrying `gateway.ErrorDetail`s in `grpc-status-details-bin`, as Fabric's
/// gateway sends them.
pub fn gateway_error(code: Code, message: impl Into<String>, details: Vec<ErrorDetail>) -> Status {
    let message = message.into();
    if details.is_empty() {
        return Status::new(code, message);
    }
    let rich = medledger_proto::google::rpc::Status {
        code: code as i32,
        message: message.clone(),
        details: details
            .iter()
            .map(|d| prost_types::Any {
                type_url: "type.googleapis.com/gateway.ErrorDetail".into(),
                value: d.encode_to_vec(),
            })
            .collect(),
    };
    Status::with_details(code, message, rich.encode_to_vec().into())
}

/// A status's message with its underlying causes (transport errors say little on their own).
fn status_text(s: &Status) -> String {
    let mut text = s.message().to_owned();
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    text
}

impl GatewayService {
    pub fn new(
        endorser: Arc<Endorser>,
        remote_peers: Vec<RemotePeer>,
        client_tls: Option<ClientTls>,
        limits: MessageLimits,
        address: String,
    ) -> Self {
        Self {
            endorser,
            remote_peers,
            address,
            conns: ConnectionPool::new(client_tls, limits),
        }
    }

    async fn connect(&self, address: &str, tls_roots: &[Vec<u8>]) -> Result<GrpcChannel, String> {
        self.conns.get(address, tls_roots).await
    }

    async fn channel(&self, id: &str) -> Option<Arc<Channel>> {
        self.endorser.channels.read().await.get(id).cloned()
    }

    /// Verifies a signed gateway request (commit status, events) against the channel's Readers.
    async fn authorize(
        &self,
        channel_id: &str,
        identity: &[u8],
        request: &[u8],
        signature: &[u8],
    ) -> Result<Arc<Channel>, Status> {
        let channel = self
            .channel(channel_id)
            .await
            .ok_or_else(|| Status::not_found(format!("channel '{channel_id}' not found")))?;
        let id = channel
            .config()
            .msps
            .deserialize(identity, Expiry::now())
            .map_err(|e| {
                Status::permission_denied(format!("identity is not valid on the channel: {e}"))
            })?;
        id.verify(request, signature)
            .map_err(|_| Status::permission_denied("request signature does not verify"))?;
        if !channel
            .config()
            .policy("/Channel/Application/Readers")
            .is_some_and(|p| p.satisfied_by(std::slice::from_ref(&id)))
        {
            return Err(Status::permission_denied(
                "identity does not satisfy the channel's Readers policy",
            ));
        }
        Ok(channel)
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ChaincodeEventsResponse, Status>> + Send>>;

mod endorse;
mod events;
mod submit;

#[tonic::async_trait]
impl Gateway for GatewayService {
    async fn evaluate(
        &self,
        request: Request<EvaluateRequest>,
    ) -> Result<Response<EvaluateResponse>, Status> {
        self.evaluate_proposal(request).await
    }

    async fn endorse(
        &self,
        request: Request<EndorseRequest>,
    ) -> Result<Response<EndorseResponse>, Status> {
        self.endorse_proposal(request).await
    }

    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitResponse>, Status> {
        self.submit_transaction(request).await
    }

    async fn commit_status(
        &self,
        request: Request<SignedCommitStatusRequest>,
    ) -> Result<Response<CommitStatusResponse>, Status> {
        self.commit_status_of(request).await
    }

    type ChaincodeEventsStream = EventStream;

    async fn chaincode_events(
        &self,
        request: Request<SignedChaincodeEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        self.event_stream(request).await
    }
}
