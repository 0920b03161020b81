//! Evaluate and Endorse: the local endorsement, then other organisations' peers asked until the
//! chaincode's and the written collections' endorsement policies hold.

use super::*;
use crate::execution::plugins::AuditedRequest;

/// Whether a proposal response writes public state, and which collections it writes.
pub(super) fn writes_of(payload: &[u8]) -> (bool, Vec<String>) {
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

pub(super) fn chaincode_error(resp: &ProposalResponse) -> String {
    let r = resp.response.clone().unwrap_or_default();
    format!("chaincode response {}, {}", r.status, r.message)
}

impl GatewayService {
    pub(super) async fn remote_endorse(
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

    pub(super) fn signers(
        channel: &Channel,
        payload: &[u8],
        endorsements: &[Endorsement],
    ) -> Vec<Identity> {
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
        verified_signers(&signed, &channel.config().msps, Expiry::now())
    }

    /// Evaluate: runs the proposal on this peer only and returns the result.
    pub(super) async fn evaluate_proposal(
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
            self.endorser
                .audit_refusal(AuditedRequest::Evaluate, &sp, remote, &e);
            gateway_error(
                Code::FailedPrecondition,
                format!("evaluate call to endorser returned error: {e}"),
                vec![],
            )
        })?;
        let resp = self.endorser.simulate_and_endorse(&sp, &checked).await;
        self.endorser
            .audit_response(AuditedRequest::Evaluate, &checked, remote, &resp);
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

    /// Endorse: this peer's endorsement, then other organisations' until the policies hold.
    pub(super) async fn endorse_proposal(
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
            self.endorser
                .audit_refusal(AuditedRequest::Endorse, &sp, remote, &e);
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
        self.endorser
            .audit_response(AuditedRequest::Endorse, &checked, remote, &local);
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
            let eligible = channel.config().application_orgs.contains(&peer.msp_id)
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
}
