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

/// Whether a proposal response writes public state, and which collections it writes.
fn writes_of(payload: &[u8]) -> (bool, Vec<String>) {
    use medledger_proto::kvrwset::{HashedRwSet, KvrwSet};
    use medledger_proto::protos::{ChaincodeAction, ProposalResponsePayload};
    use medledger_proto::rwset::TxReadWriteSet;
    let rwset = ProposalResponsePayload::decode(payload)
        .ok()
        .and_then(|p| ChaincodeAction::decode(p.extension.as_slice()).ok())
        .and_then(|a| TxReadWriteSet::decode(a.results.as_slice()).ok())
        .unwrap_or_default();
    let mut public = false;
    let mut collections = Vec::new();
    for ns in rwset.ns_rwset {
        let set = KvrwSet::decode(ns.rwset.as_slice()).unwrap_or_default();
        public |= !crate::validation::written_public_is_empty(&set);
        for c in ns.collection_hashed_rwset {
            let h = HashedRwSet::decode(c.hashed_rwset.as_slice()).unwrap_or_default();
            if !h.hashed_writes.is_empty() {
                collections.push(c.collection_name);
            }
        }
    }
    (public, collections)
}

fn chaincode_error(resp: &ProposalResponse) -> String {
    let r = resp.response.clone().unwrap_or_default();
    format!("chaincode response {}, {}", r.status, r.message)
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

    async fn remote_endorse(
        &self,
        peer: &RemotePeer,
        sp: &medledger_proto::protos::SignedProposal,
    ) -> Result<ProposalResponse, String> {
        let roots: Vec<Vec<u8>> = peer.tls_root_pem.iter().cloned().collect();
        let ch = self.connect(&peer.address, &roots).await?;
        let limits = self.conns.limits();
        let mut client = EndorserClient::new(ch)
            .max_decoding_message_size(limits.max_recv)
            .max_encoding_message_size(limits.max_send);
        tokio::time::timeout(ENDORSE_TIMEOUT, client.process_proposal(sp.clone()))
            .await
            .map_err(|_| "endorsement timeout expired".to_owned())?
            .map(Response::into_inner)
            .map_err(|s| status_text(&s))
    }

    fn signers(channel: &Channel, payload: &[u8], endorsements: &[Endorsement]) -> Vec<Identity> {
        let msgs: Vec<Vec<u8>> = endorsements
            .iter()
            .map(|e| [payload, &e.endorser].concat())
            .collect();
        let signed: Vec<SignedData> = endorsements
            .iter()
            .zip(&msgs)
            .map(|(e, m)| SignedData {
                data: m,
                identity: &e.endorser,
                signature: &e.signature,
            })
            .collect();
        verified_signers(&signed, &channel.config.msps, Expiry::now())
    }

    async fn broadcast(&self, channel: &Channel, env: &Envelope) -> Result<(), Status> {
        let roots = channel.orderer_tls_roots();
        let mut tasks = Vec::new();
        for c in &channel.config.consenters {
            let address = format!("{}:{}", c.host, c.port);
            let env = env.clone();
            let conn = self.connect(&address, &roots).await;
            let limits = self.conns.limits();
            tasks.push(tokio::spawn(async move {
                let ch = conn?;
                let mut client = AtomicBroadcastClient::new(ch)
                    .max_decoding_message_size(limits.max_recv)
                    .max_encoding_message_size(limits.max_send);
                let call = async {
                    let mut stream = client
                        .broadcast(tokio_stream::once(env))
                        .await
                        .map_err(|s| s.message().to_owned())?
                        .into_inner();
                    stream
                        .message()
                        .await
                        .map_err(|s| s.message().to_owned())?
                        .ok_or_else(|| "orderer closed the stream without an answer".to_owned())
                };
                let resp = tokio::time::timeout(BROADCAST_TIMEOUT, call)
                    .await
                    .map_err(|_| "broadcast timeout".to_owned())??;
                Ok::<_, String>((address, resp))
            }));
        }
        let quorum = channel.config.bft_quorum();
        let mut ok = 0;
        let mut details = Vec::new();
        for t in tasks {
            match t.await {
                Ok(Ok((_, r))) if r.status == OrdererStatus::Success as i32 => ok += 1,
                Ok(Ok((_, r)))
                    if r.status == OrdererStatus::ServiceUnavailable as i32
                        && r.info.contains("already exists") =>
                {
                    ok += 1
                }
                Ok(Ok((addr, r))) => {
                    let name = OrdererStatus::try_from(r.status)
                        .map(|s| s.as_str_name())
                        .unwrap_or("UNKNOWN");
                    if (400..500).contains(&r.status) {
                        return Err(Status::aborted(format!(
                            "received unsuccessful response from orderer: status={name}, info={}",
                            r.info
                        )));
                    }
                    details.push(detail(&addr, "", format!("status={name}, info={}", r.info)));
                }
                Ok(Err(e)) => details.push(detail("", "", e)),
                Err(e) => details.push(detail("", "", e.to_string())),
            }
        }
        if ok >= quorum {
            Ok(())
        } else {
            Err(gateway_error(
                Code::Unavailable,
                "insufficient number of orderers could successfully process transaction to satisfy quorum requirement",
                details,
            ))
        }
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
            .config
            .msps
            .deserialize(identity, Expiry::now())
            .map_err(|e| {
                Status::permission_denied(format!("identity is not valid on the channel: {e}"))
            })?;
        id.verify(request, signature)
            .map_err(|_| Status::permission_denied("request signature does not verify"))?;
        if !channel
            .config
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

#[tonic::async_trait]
impl Gateway for GatewayService {
    async fn evaluate(
        &self,
        request: Request<EvaluateRequest>,
    ) -> Result<Response<EvaluateResponse>, Status> {
        let remote = request.remote_addr();
        let req = request.into_inner();
        let sp = req.proposed_transaction.ok_or_else(|| {
            Status::invalid_argument("the proposed transaction must contain a signed proposal")
        })?;
        let checked = self.endorser.check(&sp).await.map_err(|e| {
            log_refusal("gateway.Gateway/Evaluate", remote, None, &e);
            gateway_error(
                Code::FailedPrecondition,
                format!("evaluate call to endorser returned error: {e}"),
                vec![],
            )
        })?;
        let resp = self.endorser.simulate_and_endorse(&sp, &checked).await;
        let r = resp.response.clone().unwrap_or_default();
        if r.status >= 400 {
            let msg = chaincode_error(&resp);
            let own = self.endorser.signer.mspid().to_owned();
            return Err(gateway_error(
                Code::Unknown,
                format!("evaluate call to endorser returned error: {msg}"),
                vec![detail(&self.address, &own, msg)],
            ));
        }
        Ok(Response::new(EvaluateResponse { result: Some(r) }))
    }

    async fn endorse(
        &self,
        request: Request<EndorseRequest>,
    ) -> Result<Response<EndorseResponse>, Status> {
        let remote = request.remote_addr();
        let req = request.into_inner();
        let sp = req.proposed_transaction.ok_or_else(|| {
            Status::invalid_argument("the proposed transaction must contain a signed proposal")
        })?;
        let own = self.endorser.signer.mspid().to_owned();
        let checked = self.endorser.check(&sp).await.map_err(|e| {
            log_refusal("gateway.Gateway/Endorse", remote, None, &e);
            gateway_error(
                Code::Aborted,
                "failed to endorse transaction, see attached details for more info",
                vec![detail(&self.address, &own, e.to_string())],
            )
        })?;
        let channel = checked.channel.clone();
        let Some(def) = channel.chaincode(&checked.proposal.chaincode_name) else {
            return Err(Status::failed_precondition(format!(
                "chaincode {} is not defined on channel {}",
                checked.proposal.chaincode_name,
                channel.id()
            )));
        };
        let local = self.endorser.simulate_and_endorse(&sp, &checked).await;
        let Some(local_endorsement) = local.endorsement.clone() else {
            return Err(gateway_error(
                Code::Aborted,
                "failed to endorse transaction, see attached details for more info",
                vec![detail(&self.address, &own, chaincode_error(&local))],
            ));
        };
        let mut endorsements = vec![local_endorsement];
        let mut endorsed_orgs = vec![own.clone()];
        let mut details = Vec::new();
        let wanted = &req.endorsing_organizations;
        let (writes_public, written) = writes_of(&local.payload);
        let (chaincode_policy, collection_policies) = def
            .collections
            .endorsement_policies(writes_public, written.iter().map(String::as_str));
        let satisfied = |e: &[Endorsement]| {
            let signers = Self::signers(&channel, &local.payload, e);
            (!chaincode_policy || def.endorsement_policy.satisfied_by(&signers))
                && collection_policies.iter().all(|p| p.satisfied_by(&signers))
        };
        for peer in &self.remote_peers {
            // Without named organisations, stop as soon as the policy holds.
            if wanted.is_empty() && satisfied(&endorsements) {
                break;
            }
            let eligible = channel.config.application_orgs.contains(&peer.msp_id)
                && !endorsed_orgs.contains(&peer.msp_id)
                && (wanted.is_empty() || wanted.contains(&peer.msp_id));
            if !eligible {
                continue;
            }
            match self.remote_endorse(peer, &sp).await {
                Ok(r) if r.endorsement.is_some() && r.payload == local.payload => {
                    endorsements.extend(r.endorsement);
                    endorsed_orgs.push(peer.msp_id.clone());
                }
                Ok(r) if r.endorsement.is_some() => {
                    details.push(detail(
                        &peer.address,
                        &peer.msp_id,
                        "ProposalResponsePayloads do not match",
                    ));
                }
                Ok(r) => details.push(detail(&peer.address, &peer.msp_id, chaincode_error(&r))),
                Err(e) => details.push(detail(&peer.address, &peer.msp_id, e)),
            }
        }
        if !satisfied(&endorsements) {
            return Err(gateway_error(
                Code::Aborted,
                "failed to collect enough transaction endorsements, see attached details for more info",
                details,
            ));
        }
        let env = assemble_transaction(&checked.proposal, &local.payload, &endorsements);
        Ok(Response::new(EndorseResponse {
            prepared_transaction: Some(env),
        }))
    }

    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitResponse>, Status> {
        let req = request.into_inner();
        let env = req
            .prepared_transaction
            .ok_or_else(|| Status::invalid_argument("a prepared transaction is required"))?;
        if env.signature.is_empty() {
            return Err(Status::invalid_argument(
                "prepared transaction must be signed",
            ));
        }
        let channel = self
            .channel(&req.channel_id)
            .await
            .ok_or_else(|| Status::not_found(format!("channel '{}' not found", req.channel_id)))?;
        self.broadcast(&channel, &env).await?;
        Ok(Response::new(SubmitResponse {}))
    }

    async fn commit_status(
        &self,
        request: Request<SignedCommitStatusRequest>,
    ) -> Result<Response<CommitStatusResponse>, Status> {
        let signed = request.into_inner();
        if signed.request.is_empty() {
            return Err(Status::invalid_argument(
                "a commit status request is required",
            ));
        }
        let req = CommitStatusRequest::decode(signed.request.as_slice()).map_err(|e| {
            Status::invalid_argument(format!("malformed commit status request: {e}"))
        })?;
        if req.transaction_id.is_empty() || req.channel_id.is_empty() || req.identity.is_empty() {
            return Err(Status::invalid_argument(
                "transaction id, channel id and identity are required",
            ));
        }
        let channel = self
            .authorize(
                &req.channel_id,
                &req.identity,
                &signed.request,
                &signed.signature,
            )
            .await?;
        let mut heights = channel.ledger.subscribe();
        loop {
            if let Some(loc) = channel
                .ledger
                .tx_location(&req.transaction_id)
                .map_err(|e| Status::aborted(e.to_string()))?
            {
                return Ok(Response::new(CommitStatusResponse {
                    result: loc.validation_code,
                    block_number: loc.block_num,
                }));
            }
            if heights.changed().await.is_err() {
                return Err(Status::unavailable("the ledger is closing"));
            }
        }
    }

    type ChaincodeEventsStream = EventStream;

    async fn chaincode_events(
        &self,
        request: Request<SignedChaincodeEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let signed = request.into_inner();
        let req = ChaincodeEventsRequest::decode(signed.request.as_slice()).map_err(|e| {
            Status::invalid_argument(format!("malformed chaincode events request: {e}"))
        })?;
        let channel = self
            .authorize(
                &req.channel_id,
                &req.identity,
                &signed.request,
                &signed.signature,
            )
            .await?;
        let ledger = channel.ledger.clone();
        let located = if req.after_transaction_id.is_empty() {
            None
        } else {
            ledger
                .tx_location(&req.after_transaction_id)
                .map_err(|e| Status::aborted(e.to_string()))?
                .map(|l| l.block_num)
        };
        let start = match located {
            Some(b) => b,
            None => match req.start_position.as_ref().and_then(|p| p.r#type.as_ref()) {
                None | Some(Seek::NextCommit(_)) => ledger.height(),
                Some(Seek::Specified(s)) => s.number,
                Some(other) => {
                    return Err(Status::invalid_argument(format!(
                        "invalid start position type: {other:?}"
                    )));
                }
            },
        };
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut heights = ledger.subscribe();
            let mut skipping = located.is_some();
            let mut n = start;
            loop {
                while n >= ledger.height() {
                    tokio::select! {
                        r = heights.changed() => if r.is_err() { return },
                        _ = tx.closed() => return,
                    }
                }
                let Ok(Some(block)) = ledger.block(n) else {
                    return;
                };
                let mut events = Vec::new();
                for (env, code) in transactions(&block) {
                    if code != TxValidationCode::Valid as i32 {
                        continue;
                    }
                    for e in chaincode_events(env) {
                        if skipping {
                            if e.tx_id == req.after_transaction_id {
                                skipping = false;
                            }
                            continue;
                        }
                        if e.chaincode_id == req.chaincode_id
                            && !e.event_name.is_empty()
                            && !e.tx_id.is_empty()
                        {
                            events.push(e);
                        }
                    }
                }
                if !events.is_empty()
                    && tx
                        .send(Ok(ChaincodeEventsResponse {
                            events,
                            block_number: n,
                        }))
                        .await
                        .is_err()
                {
                    return;
                }
                n += 1;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
