//! Private data between peers: an endorser pushes a transaction's private write sets to peers
//! of the collections' member organisations before its endorsement returns; a committing member
//! takes them from its transient store or pulls them from other members (with a deadline, then
//! records them as missing and reconciles in the background). Both calls travel over mutual TLS
//! and are signed by the sending peer; a receiver serves or stores only collections that both it
//! and the sender's organisation are members of, and every private write set is checked against
//! the hashes the block carries before it is committed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use medledger_common::SigningIdentity;
use medledger_common::cert::Certificate;
use medledger_common::config::MessageLimits;
use medledger_common::msp::{Expiry, Identity, NodeRole};
use medledger_proto::kvrwset::KvrwSet;
use medledger_proto::medledger::privdata::private_data_client::PrivateDataClient as RpcClient;
use medledger_proto::medledger::privdata::private_data_server::PrivateData;
use medledger_proto::medledger::privdata::{
    PullRequest, PullResponse, PushRequest, PushResponse, PvtDataDigest, PvtDataElement,
    SignedPrivateDataRequest,
};
use medledger_proto::rwset::TxPvtReadWriteSet;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::channel::collection::Collection;
use crate::channel::pvtdata::{
    PvtCandidates, PvtNeed, add_collection, block_needs, expiry, verify_write_set,
};
use crate::channel::{Channel, Channels};
use crate::comm::{ClientTls, ConnectionPool, RemotePeer};
use crate::endorsement::Disseminator;
use medledger_common::refusal::log_refusal;

use crate::storage::ledger::{LedgerError, PvtCommit, PvtSlot, pvt_hash};
use crate::validation::VerifiedBlock;

/// How long one push or pull to one peer may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between pull rounds while other members catch up.
const PULL_RETRY_PAUSE: Duration = Duration::from_millis(100);

fn sign(signer: &SigningIdentity, request: Vec<u8>) -> Result<SignedPrivateDataRequest, String> {
    let signature = signer.sign(&request).map_err(|e| e.to_string())?;
    Ok(SignedPrivateDataRequest {
        request,
        identity: signer.serialized().to_vec(),
        signature,
    })
}

/// Pushes and pulls private data to and from other organisations' peers.
pub struct PrivateDataClient {
    peers: Vec<RemotePeer>,
    pool: ConnectionPool,
    signer: SigningIdentity,
    pull_timeout: Duration,
}

impl PrivateDataClient {
    pub fn new(
        peers: Vec<RemotePeer>,
        client_tls: Option<ClientTls>,
        limits: MessageLimits,
        signer: SigningIdentity,
        pull_timeout: Duration,
    ) -> Self {
        Self {
            peers,
            pool: ConnectionPool::new(client_tls, limits),
            signer,
            pull_timeout,
        }
    }

    async fn client(
        &self,
        peer: &RemotePeer,
    ) -> Result<RpcClient<tonic::transport::Channel>, String> {
        let roots: Vec<Vec<u8>> = peer.tls_root_pem.iter().cloned().collect();
        let ch = self.pool.get(&peer.address, &roots).await?;
        let limits = self.pool.limits();
        Ok(RpcClient::new(ch)
            .max_decoding_message_size(limits.max_recv)
            .max_encoding_message_size(limits.max_send))
    }

    /// Sends each member peer (at most maxPeerCount per collection) the collections it may hold;
    /// fails unless every collection reached requiredPeerCount peers.
    pub async fn disseminate(
        &self,
        channel: &Channel,
        tx_id: &str,
        pvt: &TxPvtReadWriteSet,
    ) -> Result<(), String> {
        // Per peer: the part of the write sets it receives.
        let mut per_peer: BTreeMap<usize, TxPvtReadWriteSet> = BTreeMap::new();
        let mut required: Vec<(String, usize, Vec<usize>)> = Vec::new();
        for ns in &pvt.ns_pvt_rwset {
            let def = channel
                .chaincode(&ns.namespace)
                .ok_or_else(|| format!("chaincode {} is not defined", ns.namespace))?;
            for coll in &ns.collection_pvt_rwset {
                let c = def
                    .collections
                    .get(&coll.collection_name)
                    .ok_or_else(|| format!("collection {} is not defined", coll.collection_name))?;
                let targets = c.push_targets(
                    &channel.local_msp,
                    self.peers.iter().map(|p| p.msp_id.as_str()),
                );
                for &i in &targets {
                    add_collection(per_peer.entry(i).or_default(), &ns.namespace, coll.clone());
                }
                required.push((coll.collection_name.clone(), c.required_peer_count, targets));
            }
        }
        let height = channel.ledger.height();
        let calls = per_peer.into_iter().map(|(i, set)| {
            let peer = &self.peers[i];
            let request = PushRequest {
                channel_id: channel.id().to_owned(),
                tx_id: tx_id.to_owned(),
                endorsed_at_height: height,
                pvt_rwset: Some(set),
            };
            async move {
                let result = async {
                    let signed = sign(&self.signer, request.encode_to_vec())?;
                    let mut client = self.client(peer).await?;
                    tokio::time::timeout(CALL_TIMEOUT, client.push(signed))
                        .await
                        .map_err(|_| "push timed out".to_owned())?
                        .map_err(|s| s.message().to_owned())?;
                    Ok::<_, String>(())
                }
                .await;
                (i, result)
            }
        });
        let results: HashMap<usize, Result<(), String>> =
            futures::future::join_all(calls).await.into_iter().collect();
        for (coll, need, targets) in required {
            let ok = targets
                .iter()
                .filter(|i| matches!(results.get(i), Some(Ok(()))))
                .count();
            if ok < need && targets.is_empty() {
                return Err(format!(
                    "private data of collection {coll} needs {need} member peer(s) (requiredPeerCount) and this peer has none to send it to: its organisation {} is not a member, or no member's peer is in gatewayPeers",
                    channel.local_msp
                ));
            }
            if ok < need {
                let why: Vec<String> = targets
                    .iter()
                    .filter_map(|i| match results.get(i) {
                        Some(Err(e)) => Some(format!("{}: {e}", self.peers[*i].address)),
                        _ => None,
                    })
                    .collect();
                return Err(format!(
                    "private data of collection {coll} reached {ok} of the {need} peer(s) its requiredPeerCount asks for [{}]",
                    why.join("; ")
                ));
            }
        }
        Ok(())
    }

    /// Asks member peers for committed write sets, in rounds (a member may not have committed
    /// the block yet), until all are found or `retry_for` has passed.
    pub async fn pull(
        &self,
        channel: &Channel,
        needs: &[PvtNeed],
        retry_for: Duration,
    ) -> PvtCandidates {
        let mut found = PvtCandidates::new();
        let deadline = tokio::time::Instant::now() + retry_for;
        loop {
            self.pull_round(channel, needs, deadline, &mut found).await;
            let done = needs.iter().all(|n| found.contains_key(&n.slot));
            if done || tokio::time::Instant::now() + PULL_RETRY_PAUSE >= deadline {
                return found;
            }
            tokio::time::sleep(PULL_RETRY_PAUSE).await;
        }
    }

    async fn pull_round(
        &self,
        channel: &Channel,
        needs: &[PvtNeed],
        deadline: tokio::time::Instant,
        found: &mut PvtCandidates,
    ) {
        for peer in &self.peers {
            let wanted: Vec<PvtDataDigest> = needs
                .iter()
                .filter(|n| !found.contains_key(&n.slot))
                .filter(|n| {
                    channel
                        .collection(&n.slot.namespace, &n.slot.collection)
                        .is_some_and(|c| c.is_member_org(&peer.msp_id))
                })
                .map(|n| PvtDataDigest {
                    tx_id: n.tx_id.clone(),
                    namespace: n.slot.namespace.clone(),
                    collection: n.slot.collection.clone(),
                    block_num: n.slot.block_num,
                    tx_num: n.slot.tx_num,
                })
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let request = PullRequest {
                channel_id: channel.id().to_owned(),
                digests: wanted,
            };
            let call = async {
                let signed = sign(&self.signer, request.encode_to_vec())?;
                let mut client = self.client(peer).await?;
                client
                    .pull(signed)
                    .await
                    .map(Response::into_inner)
                    .map_err(|s| s.message().to_owned())
            };
            let timeout = deadline.max(tokio::time::Instant::now() + CALL_TIMEOUT);
            match tokio::time::timeout_at(timeout, call).await {
                Ok(Ok(resp)) => {
                    for e in resp.elements {
                        let Some(d) = e.digest else { continue };
                        let slot = PvtSlot {
                            block_num: d.block_num,
                            tx_num: d.tx_num,
                            namespace: d.namespace,
                            collection: d.collection,
                        };
                        found.entry(slot).or_default().push(e.rwset);
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer.address, error = %e, "private data pull failed")
                }
                Err(_) => tracing::debug!(peer = %peer.address, "private data pull timed out"),
            }
        }
    }

    /// The candidates for a block's private write sets: from the transient store, and pulled
    /// from other members for what it lacks. Only for a verified block: a forged one must not
    /// make the peer ask others for private data.
    pub async fn gather(&self, channel: &Channel, block: &VerifiedBlock) -> PvtCandidates {
        let needs = block_needs(channel, block.block());
        let mut found = PvtCandidates::new();
        let mut lacking = Vec::new();
        for n in needs {
            match channel
                .ledger
                .transient_get(&n.tx_id, &n.slot.namespace, &n.slot.collection)
            {
                Ok(sets) if sets.iter().any(|s| pvt_hash(s) == n.pvt_rwset_hash) => {
                    found.insert(n.slot.clone(), sets);
                }
                Ok(_) => lacking.push(n),
                Err(e) => {
                    tracing::error!(error = %e, "transient store read failed");
                    lacking.push(n)
                }
            }
        }
        if !lacking.is_empty() {
            found.extend(self.pull(channel, &lacking, self.pull_timeout).await);
        }
        found
    }

    /// Fetches write sets recorded as missing, checks them against their blocks and commits
    /// them; returns how many write sets were completed.
    pub async fn reconcile(&self, channel: &Channel) -> Result<usize, String> {
        let missing = channel.ledger.pvt_missing(100).map_err(|e| e.to_string())?;
        let mut needs = Vec::new();
        let mut blocks: BTreeMap<u64, Vec<PvtNeed>> = BTreeMap::new();
        for slot in &missing {
            if let std::collections::btree_map::Entry::Vacant(e) = blocks.entry(slot.block_num) {
                let block = channel
                    .ledger
                    .block(slot.block_num)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("block {} is not on the ledger", slot.block_num))?;
                e.insert(block_needs(channel, &block));
            }
            if let Some(n) = blocks
                .get(&slot.block_num)
                .and_then(|b| b.iter().find(|n| &n.slot == slot))
            {
                needs.push(n.clone());
            }
        }
        if needs.is_empty() {
            return Ok(0);
        }
        let found = self.pull(channel, &needs, Duration::ZERO).await;
        let mut done = 0;
        for n in &needs {
            let Some(c) = channel.collection(&n.slot.namespace, &n.slot.collection) else {
                continue;
            };
            let Some(set) = found
                .get(&n.slot)
                .into_iter()
                .flatten()
                .find_map(|b| verify_write_set(n, b).ok())
            else {
                continue;
            };
            channel
                .ledger
                .reconcile(&PvtCommit {
                    slot: n.slot.clone(),
                    set,
                    expires_at: expiry(&c, n.slot.block_num),
                })
                .map_err(|e| e.to_string())?;
            done += 1;
        }
        Ok(done)
    }
}

impl Disseminator for PrivateDataClient {
    fn disseminate<'a>(
        &'a self,
        channel: &'a Channel,
        tx_id: &'a str,
        pvt: &'a TxPvtReadWriteSet,
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        Box::pin(PrivateDataClient::disseminate(self, channel, tx_id, pvt))
    }
}

/// Background reconciliation of missing private data, every `interval`.
pub async fn reconcile_loop(
    channel: Arc<Channel>,
    client: Arc<PrivateDataClient>,
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {},
            _ = shutdown.changed() => return,
        }
        match client.reconcile(&channel).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(channel = %channel.id(), count = n, "reconciled missing private data")
            }
            Err(e) => {
                tracing::warn!(channel = %channel.id(), error = %e, "private data reconciliation failed")
            }
        }
    }
}

/// The peer's side of Push and Pull.
pub struct PrivateDataService {
    pub channels: Channels,
}

fn denied(reason: impl Into<String>) -> Status {
    let reason = reason.into();
    log_refusal("medledger.privdata.PrivateData", None, None, &reason);
    Status::permission_denied(reason)
}

impl PrivateDataService {
    async fn channel(&self, id: &str) -> Result<Arc<Channel>, Status> {
        self.channels
            .read()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("channel '{id}' not found")))
    }

    /// The sending peer: a valid peer identity of the channel that signed the request, whose
    /// TLS client certificate was issued by its own organisation's TLS CA.
    fn sender(
        channel: &Channel,
        tls_der: Option<Vec<u8>>,
        signed: &SignedPrivateDataRequest,
    ) -> Result<Identity, Status> {
        let tls_der = tls_der.ok_or_else(|| denied("private data needs mutual TLS"))?;
        let sender = channel
            .config()
            .msps
            .deserialize(&signed.identity, Expiry::now())
            .map_err(|e| denied(format!("sender is not valid on the channel: {e}")))?;
        if sender.role != NodeRole::Peer {
            return Err(denied("sender is not a peer"));
        }
        sender
            .verify(&signed.request, &signed.signature)
            .map_err(|_| denied("request signature does not verify"))?;
        let tls = Certificate::from_der(&tls_der)
            .map_err(|_| denied("TLS client certificate does not parse"))?;
        let same_org = channel
            .config()
            .msps
            .get(&sender.mspid)
            .is_some_and(|m| m.tls_ca_certs().any(|ca| tls.is_signed_by(ca)));
        if !same_org {
            return Err(denied(format!(
                "TLS client certificate is not from a TLS CA of {}",
                sender.mspid
            )));
        }
        Ok(sender)
    }

    /// The collection, when both this peer's and the sender's organisations are members.
    fn shared_collection(
        channel: &Channel,
        sender: &Identity,
        ns: &str,
        coll: &str,
    ) -> Result<Collection, Status> {
        let c = channel
            .collection(ns, coll)
            .ok_or_else(|| denied(format!("collection {ns}/{coll} is not defined")))?;
        if !c.is_member_org(&sender.mspid) {
            return Err(denied(format!(
                "{} is not a member of collection {coll}",
                sender.mspid
            )));
        }
        if !c.is_member_org(&channel.local_msp) {
            return Err(denied(format!(
                "this peer ({}) is not a member of collection {coll}",
                channel.local_msp
            )));
        }
        Ok(c)
    }
}

fn tls_cert<T>(r: &Request<T>) -> Option<Vec<u8>> {
    r.peer_certs()
        .and_then(|c| c.first().map(|c| c.as_ref().to_vec()))
}

#[tonic::async_trait]
impl PrivateData for PrivateDataService {
    async fn push(
        &self,
        r: Request<SignedPrivateDataRequest>,
    ) -> Result<Response<PushResponse>, Status> {
        let tls = tls_cert(&r);
        let remote = r.remote_addr();
        let signed = r.into_inner();
        let push = PushRequest::decode(signed.request.as_slice())
            .map_err(|e| Status::invalid_argument(format!("malformed push request: {e}")))?;
        let channel = self.channel(&push.channel_id).await?;
        let sender = Self::sender(&channel, tls, &signed)?;
        let pvt = push
            .pvt_rwset
            .ok_or_else(|| Status::invalid_argument("push request without write sets"))?;
        // Everything is checked before anything is stored.
        let mut accepted = Vec::new();
        for ns in &pvt.ns_pvt_rwset {
            for coll in &ns.collection_pvt_rwset {
                Self::shared_collection(&channel, &sender, &ns.namespace, &coll.collection_name)?;
                KvrwSet::decode(coll.rwset.as_slice()).map_err(|e| {
                    Status::invalid_argument(format!("malformed private write set: {e}"))
                })?;
                accepted.push((ns.namespace.as_str(), coll));
            }
        }
        if push.tx_id.is_empty() {
            return Err(Status::invalid_argument(
                "push request without a transaction id",
            ));
        }
        // Retention counts from this peer's height, not a height the sender could inflate.
        let height = channel.ledger.height();
        for (ns, coll) in accepted {
            channel
                .ledger
                .transient_put(&push.tx_id, ns, &coll.collection_name, height, &coll.rwset)
                .map_err(|e| match e {
                    LedgerError::TransientFull { .. } => {
                        log_refusal("medledger.privdata.PrivateData/Push", remote, None, &e);
                        Status::resource_exhausted(e.to_string())
                    }
                    e => Status::internal(e.to_string()),
                })?;
        }
        Ok(Response::new(PushResponse {}))
    }

    async fn pull(
        &self,
        r: Request<SignedPrivateDataRequest>,
    ) -> Result<Response<PullResponse>, Status> {
        let tls = tls_cert(&r);
        let signed = r.into_inner();
        let pull = PullRequest::decode(signed.request.as_slice())
            .map_err(|e| Status::invalid_argument(format!("malformed pull request: {e}")))?;
        let channel = self.channel(&pull.channel_id).await?;
        let sender = Self::sender(&channel, tls, &signed)?;
        if pull.digests.len() > 1000 {
            return Err(Status::invalid_argument("at most 1000 digests per pull"));
        }
        let mut elements = Vec::new();
        for d in pull.digests {
            Self::shared_collection(&channel, &sender, &d.namespace, &d.collection)?;
            let slot = PvtSlot {
                block_num: d.block_num,
                tx_num: d.tx_num,
                namespace: d.namespace.clone(),
                collection: d.collection.clone(),
            };
            if let Some(set) = channel
                .ledger
                .pvt_write_set(&slot)
                .map_err(|e| Status::internal(e.to_string()))?
            {
                elements.push(PvtDataElement {
                    digest: Some(d),
                    rwset: set.encode_to_vec(),
                });
            }
        }
        Ok(Response::new(PullResponse { elements }))
    }
}
