//! The endorser: checks a signed proposal (header rules, time window, creator valid in a channel
//! MSP, signature, not a replay, channel Writers), simulates the chaincode, and signs the result.

pub mod queries;

use std::sync::Arc;
use std::time::Duration;

use medledger_common::SigningIdentity;
use medledger_common::msp::{Expiry, Identity, MspManager, NodeRole};
use medledger_common::protoutil::{UnpackedProposal, unpack_proposal};
use medledger_proto::protos::{
    ChaincodeAction, ChaincodeId, ChannelInfo, ChannelQueryResponse, ProposalResponse,
    ProposalResponsePayload, SignedProposal,
};
use prost::Message;

use crate::channel::{Channel, Channels};
use crate::execution::chaincode::ChaincodeSupport;
use crate::execution::lifecycle::{self, LIFECYCLE, PackageStore};
use crate::execution::plugins::{AuditCall, AuditOutcome, AuditedRequest, PluginRegistry};
use crate::execution::response;
use crate::execution::simulator::{PrivateAccess, TxSimulator};

/// Fabric's `peer.authentication.timewindow`.
pub const TIME_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Largest proposal accepted.
pub const MAX_PROPOSAL_BYTES: usize = 10 * 1024 * 1024;

/// Why a proposal was refused before simulation.
#[derive(Debug, thiserror::Error)]
pub enum ProposalError {
    #[error("failed to unpack transaction proposal: {0}")]
    Malformed(String),
    #[error("channel '{0}' not found")]
    UnknownChannel(String),
    #[error("request unauthorized due to incorrect timestamp")]
    Timestamp,
    #[error("access denied: creator is not valid on channel {channel}: {reason}")]
    Creator { channel: String, reason: String },
    #[error("access denied: the proposal's signature does not verify")]
    Signature,
    #[error("duplicate transaction found [{0}]")]
    Duplicate(String),
    #[error("access denied: creator does not satisfy the channel's Writers policy")]
    Forbidden,
    #[error("proposal of {0} bytes is larger than the {MAX_PROPOSAL_BYTES} byte limit")]
    TooLarge(usize),
}

/// Sends a transaction's private write sets to peers of the collections' member organisations
/// before its endorsement returns (Fabric's PrivateDataDistributor); implemented by the private
/// data service, which sits above this layer.
pub trait Disseminator: Send + Sync {
    /// Fails unless every collection reached its requiredPeerCount peers.
    fn disseminate<'a>(
        &'a self,
        channel: &'a Channel,
        tx_id: &'a str,
        pvt: &'a medledger_proto::rwset::TxPvtReadWriteSet,
    ) -> futures::future::BoxFuture<'a, Result<(), String>>;
}

/// Joins the peer to a channel at run time (Fabric's `cscc` JoinChain), given its genesis block.
pub trait ChannelJoiner: Send + Sync {
    fn join<'a>(
        &'a self,
        genesis: &'a [u8],
    ) -> futures::future::BoxFuture<'a, Result<String, String>>;
}

/// A checked proposal: its layers, creator and channel.
pub struct CheckedProposal {
    pub proposal: UnpackedProposal,
    pub creator: Identity,
    pub channel: Arc<Channel>,
}

/// Endorses proposals for the peer's channels.
pub struct Endorser {
    pub channels: Channels,
    pub chaincodes: Arc<ChaincodeSupport>,
    pub signer: SigningIdentity,
    pub plugins: PluginRegistry,
    /// Sends private write sets to the collections' other members.
    pub private_data: Arc<dyn Disseminator>,
    /// Chaincode packages installed on this peer.
    pub packages: Arc<PackageStore>,
    /// This peer's own organisation (who may install chaincode and join channels).
    pub local_msp: MspManager,
    pub joiner: Arc<dyn ChannelJoiner>,
}

fn error_response(status: i32, message: String) -> ProposalResponse {
    ProposalResponse {
        response: Some(response(status, message, Vec::new())),
        ..Default::default()
    }
}

/// Size limit and structure: what every proposal passes first.
fn unpack(sp: &SignedProposal) -> Result<UnpackedProposal, ProposalError> {
    let size = sp.proposal_bytes.len() + sp.signature.len();
    if size > MAX_PROPOSAL_BYTES {
        return Err(ProposalError::TooLarge(size));
    }
    unpack_proposal(sp).map_err(|e| ProposalError::Malformed(e.to_string()))
}

/// Fabric's `peer.authentication.timewindow` around the proposal's timestamp.
fn check_time(proposal: &UnpackedProposal) -> Result<(), ProposalError> {
    let ts = proposal.channel_header.timestamp.unwrap_or_default();
    let now = medledger_common::msp::unix_now();
    if !medledger_common::protoutil::within_time_window(ts.seconds, now, TIME_WINDOW.as_secs()) {
        return Err(ProposalError::Timestamp);
    }
    Ok(())
}

impl Endorser {
    /// Runs the checks that come before simulation.
    pub async fn check(&self, sp: &SignedProposal) -> Result<CheckedProposal, ProposalError> {
        self.check_unpacked(sp, unpack(sp)?).await
    }

    async fn check_unpacked(
        &self,
        sp: &SignedProposal,
        proposal: UnpackedProposal,
    ) -> Result<CheckedProposal, ProposalError> {
        let channel = self
            .channels
            .read()
            .await
            .get(proposal.channel_id())
            .cloned()
            .ok_or_else(|| ProposalError::UnknownChannel(proposal.channel_id().to_owned()))?;
        check_time(&proposal)?;
        let config = channel.config();
        let creator = config
            .msps
            .deserialize(proposal.creator(), Expiry::now())
            .map_err(|e| ProposalError::Creator {
                channel: channel.id().to_owned(),
                reason: e.to_string(),
            })?;
        creator
            .verify(&sp.proposal_bytes, &sp.signature)
            .map_err(|_| ProposalError::Signature)?;
        if channel
            .ledger
            .tx_location(proposal.tx_id())
            .map_err(|e| ProposalError::Malformed(e.to_string()))?
            .is_some()
        {
            return Err(ProposalError::Duplicate(proposal.tx_id().to_owned()));
        }
        let writers = config.policy("/Channel/Application/Writers");
        if !writers.is_some_and(|p| p.satisfied_by(std::slice::from_ref(&creator))) {
            return Err(ProposalError::Forbidden);
        }
        Ok(CheckedProposal {
            proposal,
            creator,
            channel,
        })
    }

    /// Fabric's `ProcessProposal`: a refused proposal is an error; a chaincode failure is a
    /// response with status 500 and no endorsement. A proposal without a channel is addressed to
    /// the peer itself (`_lifecycle` InstallChaincode by an admin of the peer's organisation).
    pub async fn process(&self, sp: &SignedProposal) -> Result<ProposalResponse, ProposalError> {
        let proposal = unpack(sp)?;
        if proposal.channel_id().is_empty() {
            return self.process_for_peer(sp, &proposal).await;
        }
        let checked = match self.check_unpacked(sp, proposal).await {
            Ok(c) => c,
            Err(e) => {
                self.audit_refusal(AuditedRequest::ProcessProposal, sp, None, &e);
                return Err(e);
            }
        };
        let response = self.simulate_and_endorse(sp, &checked).await;
        self.audit_response(AuditedRequest::ProcessProposal, &checked, None, &response);
        Ok(response)
    }

    /// Tells the audit plugins of the chaincode how a checked proposal ended on this peer.
    pub fn audit_response(
        &self,
        request: AuditedRequest,
        c: &CheckedProposal,
        client_address: Option<std::net::SocketAddr>,
        response: &ProposalResponse,
    ) {
        let p = &c.proposal;
        let mut auditors = self.plugins.auditors(&p.chaincode_name).peekable();
        if auditors.peek().is_none() {
            return;
        }
        let r = response.response.as_ref();
        let status = r.map_or(500, |r| r.status);
        let outcome = match r {
            Some(r) if status < 400 => AuditOutcome::Success {
                payload: &r.payload,
            },
            _ => AuditOutcome::Failed {
                status,
                message: r.map_or("", |r| r.message.as_str()),
            },
        };
        let call = AuditCall {
            request,
            channel: c.channel.id(),
            tx_id: p.tx_id(),
            chaincode: &p.chaincode_name,
            args: &p.input.args,
            client_msp: &c.creator.mspid,
            client_subject: &c.creator.cert.subject,
            client_role: c.creator.attribute("role"),
            client_address,
            outcome,
        };
        for a in auditors {
            a.record(&call);
        }
    }

    /// Tells the audit plugins of the chaincode that a proposal was refused before it ran. The
    /// client is who the proposal claims to be (the refusal may be that the claim is false); a
    /// proposal too broken to name its chaincode is not audited (the refusal log has it).
    pub fn audit_refusal(
        &self,
        request: AuditedRequest,
        sp: &SignedProposal,
        client_address: Option<std::net::SocketAddr>,
        error: &ProposalError,
    ) {
        // Unpacking again costs: a peer without audit plugins skips it.
        if !self.plugins.has_auditors() {
            return;
        }
        let Ok(p) = unpack(sp) else {
            return;
        };
        let mut auditors = self.plugins.auditors(&p.chaincode_name).peekable();
        if auditors.peek().is_none() {
            return;
        }
        let creator = medledger_proto::msp::SerializedIdentity::decode(p.creator()).ok();
        let cert = creator
            .as_ref()
            .and_then(|c| medledger_common::cert::Certificate::from_pem(&c.id_bytes).ok());
        // A refusal goes into the trail under the identity it names only if that identity's key
        // signed it (a revoked or unauthorised member still did): anyone can name anyone, and
        // unattributable refusals would fill the bounded queue. Those are in the refusal log.
        let signed_by_named = cert.as_ref().is_some_and(|c| {
            medledger_common::crypto::verify(&c.public_key, &sp.proposal_bytes, &sp.signature)
                .is_ok()
        });
        if !signed_by_named {
            return;
        }
        let reason = error.to_string();
        let call = AuditCall {
            request,
            channel: p.channel_id(),
            tx_id: p.tx_id(),
            chaincode: &p.chaincode_name,
            args: &p.input.args,
            client_msp: creator.as_ref().map_or("", |c| c.mspid.as_str()),
            client_subject: cert.as_ref().map_or("", |c| c.subject.as_str()),
            client_role: cert
                .as_ref()
                .and_then(|c| c.attributes.get("role"))
                .map(String::as_str),
            client_address,
            outcome: AuditOutcome::Refused { reason: &reason },
        };
        for a in auditors {
            a.record(&call);
        }
    }

    /// Requests addressed to the peer itself: `_lifecycle` InstallChaincode and
    /// QueryInstalledChaincodes, `cscc` JoinChain (admins of the peer's organisation) and
    /// GetChannels (its members).
    async fn process_for_peer(
        &self,
        sp: &SignedProposal,
        proposal: &UnpackedProposal,
    ) -> Result<ProposalResponse, ProposalError> {
        check_time(proposal)?;
        let args = &proposal.input.args;
        let function = args.first().map(Vec::as_slice).unwrap_or_default();
        if queries::is_channel_query(&proposal.chaincode_name, function) {
            // Fabric's tools name the channel in the second argument, not the header.
            let name = String::from_utf8_lossy(args.get(1).map(Vec::as_slice).unwrap_or_default());
            let answer = match self.channels.read().await.get(name.as_ref()).cloned() {
                Some(channel) => queries::answer(&channel, sp, proposal),
                None => response(500, format!("Invalid chain ID, {name}"), Vec::new()),
            };
            return Ok(ProposalResponse {
                version: 1,
                response: Some(answer),
                ..Default::default()
            });
        }
        let creator = self
            .local_msp
            .deserialize(proposal.creator(), Expiry::now())
            .map_err(|e| ProposalError::Creator {
                channel: String::new(),
                reason: format!("not a member of this peer's organisation: {e}"),
            })?;
        creator
            .verify(&sp.proposal_bytes, &sp.signature)
            .map_err(|_| ProposalError::Signature)?;
        let response = match (proposal.chaincode_name.as_str(), function) {
            (LIFECYCLE, _) => lifecycle::install(&self.packages, &creator, args),
            ("cscc", b"JoinChain") if creator.role != NodeRole::Admin => response(
                500,
                "only an admin of the peer's organisation may join channels",
                Vec::new(),
            ),
            ("cscc", b"JoinChain") => {
                let genesis = args.get(1).map(Vec::as_slice).unwrap_or_default();
                match self.joiner.join(genesis).await {
                    Ok(_) => response(200, "", Vec::new()),
                    Err(e) => response(500, e, Vec::new()),
                }
            }
            ("cscc", b"GetChannels") => {
                let channels = self
                    .channels
                    .read()
                    .await
                    .keys()
                    .map(|id| ChannelInfo {
                        channel_id: id.clone(),
                    })
                    .collect();
                response(200, "", ChannelQueryResponse { channels }.encode_to_vec())
            }
            (name, _) => response(
                500,
                format!(
                    "{name} {:?} is not addressed to a peer without a channel",
                    String::from_utf8_lossy(function)
                ),
                Vec::new(),
            ),
        };
        Ok(ProposalResponse {
            version: 1,
            response: Some(response),
            ..Default::default()
        })
    }

    /// Simulates a checked proposal and endorses the result.
    pub async fn simulate_and_endorse(
        &self,
        sp: &SignedProposal,
        c: &CheckedProposal,
    ) -> ProposalResponse {
        let p = &c.proposal;
        let function = p.input.args.first().map(Vec::as_slice).unwrap_or_default();
        if queries::is_channel_query(&p.chaincode_name, function) {
            // Read-only and answered from the ledger: nothing to endorse.
            return ProposalResponse {
                version: 1,
                response: Some(queries::answer(&c.channel, sp, p)),
                ..Default::default()
            };
        }
        let Some(def) = c.channel.chaincode(&p.chaincode_name) else {
            return error_response(
                500,
                format!(
                    "make sure the chaincode {} has been successfully defined on channel {}",
                    p.chaincode_name,
                    c.channel.id()
                ),
            );
        };
        let mut sim = TxSimulator::new(c.channel.ledger.clone()).with_private(PrivateAccess {
            collections: def.collections.clone(),
            creator: c.creator.clone(),
            peer_msp: c.channel.local_msp.clone(),
        });
        let (response, event) = if def.name == LIFECYCLE {
            let r = lifecycle::execute(
                &mut sim,
                &c.channel.config(),
                &c.channel.local_msp,
                &c.creator,
                &p.input.args,
            );
            (r, None)
        } else {
            let Some(endpoint) = &def.endpoint else {
                return error_response(
                    500,
                    format!(
                        "chaincode {} is not installed on this peer: its organisation has not approved an installed package for sequence {}",
                        def.name, def.sequence
                    ),
                );
            };
            match self
                .chaincodes
                .execute(
                    endpoint,
                    c.channel.id(),
                    p.tx_id(),
                    sp,
                    p.input.clone(),
                    &mut sim,
                )
                .await
            {
                Ok(r) => r,
                Err(e) => return error_response(500, e.to_string()),
            }
        };
        if response.status >= 400 {
            return ProposalResponse {
                response: Some(response),
                ..Default::default()
            };
        }
        let results = sim.build();
        if let Some(pvt) = &results.private {
            // The private write sets wait in this peer's transient store (if it is a member)
            // and reach requiredPeerCount other members before the endorsement is returned.
            for ns in &pvt.ns_pvt_rwset {
                for coll in &ns.collection_pvt_rwset {
                    let member = def
                        .collections
                        .get(&coll.collection_name)
                        .is_some_and(|col| col.is_member_org(&c.channel.local_msp));
                    if !member {
                        continue;
                    }
                    if let Err(e) = c.channel.ledger.transient_put(
                        p.tx_id(),
                        &ns.namespace,
                        &coll.collection_name,
                        c.channel.ledger.height(),
                        &coll.rwset,
                    ) {
                        return error_response(500, format!("transient store: {e}"));
                    }
                }
            }
            if let Err(e) = self
                .private_data
                .disseminate(&c.channel, p.tx_id(), pvt)
                .await
            {
                return error_response(
                    500,
                    format!("failed to distribute private collection: {e}"),
                );
            }
        }
        let action = ChaincodeAction {
            results: results.public.encode_to_vec(),
            events: event.map(|e| e.encode_to_vec()).unwrap_or_default(),
            response: Some(response.clone()),
            chaincode_id: Some(ChaincodeId {
                path: String::new(),
                name: p.chaincode_name.clone(),
                version: def.version.clone(),
            }),
        };
        let payload = ProposalResponsePayload {
            proposal_hash: p.proposal_hash.to_vec(),
            extension: action.encode_to_vec(),
        }
        .encode_to_vec();
        let Some(plugin) = self.plugins.endorsement(&def.endorsement_plugin) else {
            return error_response(
                500,
                format!(
                    "endorsement plugin {:?} is not registered",
                    def.endorsement_plugin
                ),
            );
        };
        match plugin.endorse(&payload, &self.signer) {
            Ok(endorsement) => ProposalResponse {
                version: 1,
                timestamp: None,
                response: Some(response),
                payload,
                endorsement: Some(endorsement),
                interest: None,
            },
            Err(e) => error_response(500, format!("endorsement failed: {e}")),
        }
    }
}
