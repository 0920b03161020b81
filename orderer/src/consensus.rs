//! The BFT consensus core: PBFT as Fabric's SmartBFT runs it, as a pure deterministic state
//! machine. Inputs are consensus messages, client requests and logical clock ticks; outputs are
//! messages to send, blocks to persist and state to write ahead. No sockets, clocks, threads or
//! randomness live here, which is what lets `tests/` run it under a seeded simulator.
//!
//! One block is in flight at a time. The leader of view `v` is `consenters[v % n]`. A block is
//! final with 2f+1 commits, each carrying the voter's block signature, so the committed block
//! carries a quorum of signatures in its SIGNATURES metadata.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;

use medledger_common::protoutil::{block_data_hash, block_header_hash, new_block};
use medledger_proto::common::{
    Block, LastConfig, Metadata, MetadataSignature, OrdererBlockMetadata,
};
use medledger_proto::medledger::consensus::{
    Body, Commit, ConsensusMessage, ForwardRequest, Heartbeat, NewView, PrePrepare, Prepare,
    PreparedCertificate, StateRequest, StateResponse, ViewChange, body::Kind,
};
use prost::Message;

/// Signing and checking, injected so the core stays free of key handling and I/O.
pub trait Crypto: Send + Sync {
    /// Signs a consensus message body.
    fn sign(&self, msg: &[u8]) -> Vec<u8>;
    /// Checks a consensus message body signed by consenter `signer`.
    fn verify(&self, signer: u32, msg: &[u8], sig: &[u8]) -> bool;
    /// This replica's block signature (Fabric's BFT format) over `block` with `value`.
    fn sign_block(&self, block: &Block, value: &[u8]) -> Option<MetadataSignature>;
    /// Checks that `sig` is consenter `signer`'s valid block signature.
    fn verify_block_signature(
        &self,
        signer: u32,
        block: &Block,
        value: &[u8],
        sig: &MetadataSignature,
    ) -> bool;
    /// Validates a client request (envelope bytes): form, channel, txid, creator, signature,
    /// Writers. Returns its transaction id, or why it is refused (never `Duplicate`).
    fn check_request(&self, envelope: &[u8]) -> Result<String, RequestError>;
}

/// Block cutting settings (from the channel's BatchSize / BatchTimeout).
#[derive(Debug, Clone)]
pub struct BatchConfig {
    pub max_message_count: usize,
    pub preferred_max_bytes: usize,
    pub absolute_max_bytes: usize,
    pub timeout_ticks: u64,
}

/// Settings of one replica.
#[derive(Debug, Clone)]
pub struct Config {
    pub channel_id: String,
    pub self_id: u32,
    /// Consenter ids, sorted.
    pub consenters: Vec<u32>,
    pub batch: BatchConfig,
    pub heartbeat_ticks: u64,
    /// A follower suspects the leader after this long without a heartbeat or progress.
    pub leader_timeout_ticks: u64,
    /// A request not ordered within this long makes its holder complain (view change).
    pub request_timeout_ticks: u64,
    pub view_change_timeout_ticks: u64,
    /// Own votes and proposals are re-sent this often while a block is pending (lossy links).
    pub retransmit_ticks: u64,
}

impl Config {
    pub fn n(&self) -> usize {
        self.consenters.len()
    }
    pub fn f(&self) -> usize {
        self.n().saturating_sub(1) / 3
    }
    /// ceil((n + f + 1) / 2): 2f+1 when n = 3f+1.
    pub fn quorum(&self) -> usize {
        (self.n() + self.f() + 1).div_ceil(2)
    }
    pub fn leader(&self, view: u64) -> u32 {
        self.consenters[(view % self.n() as u64) as usize]
    }
}

/// State a replica writes ahead before acting on it, restored after a crash.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Durable {
    pub view: u64,
    /// The (view, seq, digest) this replica last voted for: never vote for another digest there.
    pub voted: Option<(u64, u64, Vec<u8>)>,
    /// Requests accepted and not yet ordered, by txid.
    pub pending: BTreeMap<String, Vec<u8>>,
}

/// Where a restarted replica stands.
#[derive(Debug, Clone)]
pub struct Restored {
    pub durable: Durable,
    /// Next block number (ledger height).
    pub height: u64,
    pub last_hash: Vec<u8>,
    /// Transaction ids already in committed blocks.
    pub committed_txids: HashSet<String>,
}

/// One change to the write-ahead state, written before anything that depends on it is sent.
#[derive(Debug, Clone, PartialEq)]
pub enum WalOp {
    View(u64),
    Voted(u64, u64, Vec<u8>),
    /// A request was accepted (by txid).
    Pending(String, Vec<u8>),
    /// These requests are in a committed block.
    Done(Vec<String>),
}

impl Durable {
    /// Applies one write-ahead change.
    pub fn apply(&mut self, op: &WalOp) {
        match op {
            WalOp::View(v) => self.view = *v,
            WalOp::Voted(v, s, d) => self.voted = Some((*v, *s, d.clone())),
            WalOp::Pending(t, e) => {
                self.pending.insert(t.clone(), e.clone());
            }
            WalOp::Done(ts) => {
                for t in ts {
                    self.pending.remove(t);
                }
            }
        }
    }
}

/// What happens to the world as a result of an input.
#[derive(Debug, Clone)]
pub enum Output {
    /// Send to one consenter, or to all others when `to` is `None`.
    Send {
        to: Option<u32>,
        msg: ConsensusMessage,
    },
    /// A block is final: persist it (with its signatures) and deliver it.
    Commit(Block),
    /// Durable state changed: write it before sending anything that depends on it.
    Wal(WalOp),
    /// Another replica asked for committed blocks from `from_seq`: answer with a StateResponse.
    ServeState { to: u32, from_seq: u64 },
}

/// Why a client request was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not a well-formed transaction for this channel (Fabric answers BAD_REQUEST).
    #[error("{0}")]
    Malformed(String),
    /// The creator may not write, or the signature does not verify (FORBIDDEN).
    #[error("{0}")]
    Forbidden(String),
    #[error("request already exists")]
    Duplicate,
}

struct Proposal {
    view: u64,
    block: Block,
    digest: Vec<u8>,
    value: Vec<u8>,
    pre_prepare: ConsensusMessage,
    sent_commit: bool,
    accepted_at: u64,
}

#[derive(Default)]
struct Votes {
    prepares: BTreeMap<u32, (Vec<u8>, ConsensusMessage)>,
    commits: BTreeMap<u32, (Vec<u8>, MetadataSignature)>,
}

struct PoolEntry {
    envelope: Vec<u8>,
    arrived: u64,
    forwarded: u64,
}

/// One consenter's consensus state for one channel.
pub struct Replica {
    cfg: Config,
    crypto: Arc<dyn Crypto>,
    durable: Durable,
    height: u64,
    last_hash: Vec<u8>,
    now: u64,
    in_view_change: Option<u64>,
    view_change_started: u64,
    pool: BTreeMap<String, PoolEntry>,
    pool_order: VecDeque<String>,
    committed: HashSet<String>,
    proposal: Option<Proposal>,
    votes: BTreeMap<(u64, u64), Votes>,
    view_changes: BTreeMap<u64, BTreeMap<u32, (ViewChange, ConsensusMessage)>>,
    /// Prepared certificates of the NewView that installed the current view.
    view_certs: Vec<PreparedCertificate>,
    /// Highest committed sequence some view change reported; seqs below it are decided.
    decided_up_to: u64,
    new_view_sent: BTreeSet<u64>,
    last_leader_activity: u64,
    last_heartbeat: u64,
    last_retransmit: u64,
    last_state_request: u64,
    /// The signed NewView that installed the current view, relayed to replicas that missed it.
    new_view_msg: Option<ConsensusMessage>,
    /// When we last sent committed blocks to each lagging consenter.
    last_help: BTreeMap<u32, u64>,
    out: Vec<Output>,
}

/// The SIGNATURES metadata value every replica signs for block `seq`: deterministic, so all
/// signatures of one block cover the same bytes.
pub fn block_value(seq: u64) -> Vec<u8> {
    OrdererBlockMetadata {
        last_config: Some(LastConfig { index: 0 }),
        consenter_metadata: seq.to_be_bytes().to_vec(),
    }
    .encode_to_vec()
}

/// The transaction id in an envelope's channel header, without checking anything else.
pub fn txid_of(envelope: &[u8]) -> Option<String> {
    let env = medledger_proto::common::Envelope::decode(envelope).ok()?;
    medledger_common::protoutil::unpack_envelope(&env)
        .ok()
        .map(|u| u.channel_header.tx_id)
}

fn digest(block: &Block) -> Vec<u8> {
    block
        .header
        .as_ref()
        .map(|h| block_header_hash(h).to_vec())
        .unwrap_or_default()
}

impl Replica {
    /// A replica resuming from persisted state (height 1 and empty state right after genesis).
    pub fn new(cfg: Config, crypto: Arc<dyn Crypto>, restored: Restored) -> Self {
        let mut r = Self {
            cfg,
            crypto,
            durable: Durable::default(),
            height: restored.height,
            last_hash: restored.last_hash,
            now: 0,
            in_view_change: None,
            view_change_started: 0,
            pool: BTreeMap::new(),
            pool_order: VecDeque::new(),
            committed: restored.committed_txids,
            proposal: None,
            votes: BTreeMap::new(),
            view_changes: BTreeMap::new(),
            view_certs: Vec::new(),
            decided_up_to: 0,
            new_view_sent: BTreeSet::new(),
            last_leader_activity: 0,
            last_heartbeat: 0,
            last_retransmit: 0,
            last_state_request: 0,
            last_help: BTreeMap::new(),
            new_view_msg: None,
            out: Vec::new(),
        };
        r.durable.view = restored.durable.view;
        r.durable.voted = restored.durable.voted;
        for (txid, env) in restored.durable.pending {
            if !r.committed.contains(&txid) {
                r.pool.insert(
                    txid.clone(),
                    PoolEntry {
                        envelope: env,
                        arrived: 0,
                        forwarded: 0,
                    },
                );
                r.pool_order.push_back(txid);
            }
        }
        r
    }

    pub fn view(&self) -> u64 {
        self.durable.view
    }
    pub fn height(&self) -> u64 {
        self.height
    }
    pub fn leader(&self) -> u32 {
        self.cfg.leader(self.durable.view)
    }
    pub fn is_leader(&self) -> bool {
        self.leader() == self.cfg.self_id && self.in_view_change.is_none()
    }
    pub fn in_view_change(&self) -> bool {
        self.in_view_change.is_some()
    }
    pub fn pending_requests(&self) -> usize {
        self.pool.len()
    }

    fn wal(&mut self, op: WalOp) {
        self.out.push(Output::Wal(op));
    }

    fn message(&self, kind: Kind) -> ConsensusMessage {
        let body = Body { kind: Some(kind) }.encode_to_vec();
        let signature = self.crypto.sign(&body);
        ConsensusMessage {
            sender: self.cfg.self_id,
            channel_id: self.cfg.channel_id.clone(),
            body,
            signature,
        }
    }

    fn broadcast(&mut self, kind: Kind) -> ConsensusMessage {
        let msg = self.message(kind);
        self.out.push(Output::Send {
            to: None,
            msg: msg.clone(),
        });
        msg
    }

    fn send_to(&mut self, to: u32, kind: Kind) {
        let msg = self.message(kind);
        self.out.push(Output::Send { to: Some(to), msg });
    }

    /// Verifies a signed consensus message from a consenter and decodes its body.
    fn open(&self, msg: &ConsensusMessage) -> Option<Kind> {
        if !self.cfg.consenters.contains(&msg.sender) || msg.channel_id != self.cfg.channel_id {
            return None;
        }
        if !self.crypto.verify(msg.sender, &msg.body, &msg.signature) {
            return None;
        }
        Body::decode(msg.body.as_slice()).ok()?.kind
    }

    // ------------------------------------------------------------------------------------------
    // Inputs

    /// A client request this replica received (Broadcast). Accepted requests are shared with the
    /// other replicas and ordered exactly once.
    pub fn submit(&mut self, envelope: Vec<u8>) -> (Result<(), RequestError>, Vec<Output>) {
        let r = self.add_request(envelope, true);
        (r, std::mem::take(&mut self.out))
    }

    /// A consensus message from consenter `from` (authenticated by the transport). Only a
    /// NewView may be relayed by someone other than its signer (the leader's signature is in it).
    pub fn receive(&mut self, from: u32, msg: ConsensusMessage) -> Vec<Output> {
        if from == self.cfg.self_id || !self.cfg.consenters.contains(&from) {
            return Vec::new();
        }
        if let Some(kind) = self.open(&msg) {
            match kind {
                Kind::NewView(nv) => self.on_new_view(msg, nv),
                _ if from != msg.sender => {}
                kind => self.on_message(from, msg, kind),
            }
        }
        std::mem::take(&mut self.out)
    }

    /// One logical clock tick.
    pub fn tick(&mut self) -> Vec<Output> {
        self.now += 1;
        self.on_tick();
        std::mem::take(&mut self.out)
    }

    /// Committed blocks another replica sent after our StateRequest (already read from its store).
    pub fn state_response(&mut self, blocks: Vec<Block>) -> Vec<Output> {
        self.on_state(blocks);
        std::mem::take(&mut self.out)
    }

    // ------------------------------------------------------------------------------------------

    fn add_request(&mut self, envelope: Vec<u8>, from_client: bool) -> Result<(), RequestError> {
        if envelope.len() > self.cfg.batch.absolute_max_bytes {
            return Err(RequestError::Malformed(format!(
                "message of {} bytes exceeds the absolute maximum of {} bytes",
                envelope.len(),
                self.cfg.batch.absolute_max_bytes
            )));
        }
        let txid = self.crypto.check_request(&envelope)?;
        if self.committed.contains(&txid) || self.pool.contains_key(&txid) {
            return Err(RequestError::Duplicate);
        }
        self.pool.insert(
            txid.clone(),
            PoolEntry {
                envelope: envelope.clone(),
                arrived: self.now,
                forwarded: self.now,
            },
        );
        self.pool_order.push_back(txid.clone());
        self.wal(WalOp::Pending(txid, envelope.clone()));
        if from_client {
            self.broadcast(Kind::Forward(ForwardRequest {
                envelopes: vec![envelope],
            }));
        }
        self.maybe_propose();
        Ok(())
    }

    fn on_message(&mut self, from: u32, msg: ConsensusMessage, kind: Kind) {
        match kind {
            Kind::PrePrepare(pp) => self.on_pre_prepare(from, msg, pp),
            Kind::Prepare(p) => {
                self.hint_height(from, p.seq);
                if p.seq >= self.height {
                    self.votes
                        .entry((p.view, p.seq))
                        .or_default()
                        .prepares
                        .insert(from, (p.digest, msg));
                    self.check_quorums();
                }
            }
            Kind::Commit(c) => {
                self.hint_height(from, c.seq);
                if c.seq >= self.height
                    && let Some(sig) = c.block_signature
                {
                    self.votes
                        .entry((c.view, c.seq))
                        .or_default()
                        .commits
                        .insert(from, (c.digest, sig));
                    self.check_quorums();
                }
            }
            Kind::Heartbeat(h) => {
                if h.view == self.durable.view && from == self.leader() {
                    self.last_leader_activity = self.now;
                }
                self.hint_height(from, h.seq);
            }
            Kind::Forward(f) => {
                for env in f.envelopes {
                    let _ = self.add_request(env, false);
                }
            }
            Kind::ViewChange(vc) => self.on_view_change(from, msg, vc),
            Kind::NewView(nv) => self.on_new_view(msg, nv),
            Kind::StateRequest(r) => {
                if r.from_seq < self.height {
                    self.out.push(Output::ServeState {
                        to: from,
                        from_seq: r.from_seq,
                    });
                }
            }
            Kind::StateResponse(r) => self.on_state(r.blocks),
        }
    }

    /// Evidence that `from` is ahead: ask it for blocks; or behind: send it ours (rate-limited).
    /// A block decided by few correct replicas must reach the others even if nobody asks.
    fn hint_height(&mut self, from: u32, seq: u64) {
        if seq < self.height {
            let last = self.last_help.get(&from).copied().unwrap_or(0);
            if self.now == 0 || self.now.saturating_sub(last) >= 5 {
                self.last_help.insert(from, self.now);
                self.out.push(Output::ServeState {
                    to: from,
                    from_seq: seq,
                });
            }
            return;
        }
        if seq > self.height && self.now.saturating_sub(self.last_state_request) >= 3 {
            self.last_state_request = self.now;
            self.send_to(
                from,
                Kind::StateRequest(StateRequest {
                    from_seq: self.height,
                }),
            );
        }
    }

    /// The block that must be proposed at `seq` in the current view: the one with the highest-view
    /// prepared certificate in the view change that installed it, if any.
    fn required_at(&self, seq: u64) -> Option<Block> {
        let mut best: Option<(u64, Block)> = None;
        for c in &self.view_certs {
            let Some(pp) = c.pre_prepare.as_ref() else {
                continue;
            };
            let Some(Kind::PrePrepare(p)) =
                Body::decode(pp.body.as_slice()).ok().and_then(|b| b.kind)
            else {
                continue;
            };
            if p.seq != seq {
                continue;
            }
            if let Some(b) = p.block
                && best.as_ref().is_none_or(|(v, _)| p.view > *v)
            {
                best = Some((p.view, b));
            }
        }
        best.map(|(_, b)| b)
    }

    fn validate_block(&self, block: &Block) -> Result<(), String> {
        let h = block.header.as_ref().ok_or("no header")?;
        if h.number != self.height {
            return Err(format!(
                "block number {} is not the next ({})",
                h.number, self.height
            ));
        }
        if h.previous_hash != self.last_hash {
            return Err("previous hash does not chain".into());
        }
        let data = block.data.as_ref().ok_or("no data")?;
        if block_data_hash(data).as_slice() != h.data_hash.as_slice() {
            return Err("data hash does not match".into());
        }
        if data.data.is_empty() || data.data.len() > self.cfg.batch.max_message_count {
            return Err("bad transaction count".into());
        }
        let size: usize = data.data.iter().map(Vec::len).sum();
        if size > self.cfg.batch.absolute_max_bytes {
            return Err("block exceeds absolute max bytes".into());
        }
        let mut seen = HashSet::new();
        for env in &data.data {
            // A request already in our pool with the same bytes was checked when it arrived.
            let pooled =
                txid_of(env).filter(|t| self.pool.get(t).is_some_and(|e| e.envelope == *env));
            let txid = match pooled {
                Some(t) => t,
                None => self.crypto.check_request(env).map_err(|e| e.to_string())?,
            };
            if self.committed.contains(&txid) || !seen.insert(txid.clone()) {
                return Err(format!("transaction {txid} is ordered twice"));
            }
        }
        Ok(())
    }

    fn on_pre_prepare(&mut self, from: u32, msg: ConsensusMessage, pp: PrePrepare) {
        if pp.seq > self.height {
            self.hint_height(from, pp.seq);
            return;
        }
        if pp.seq < self.height {
            self.hint_height(from, pp.seq);
            return;
        }
        if self.in_view_change.is_some() || pp.view != self.durable.view || from != self.leader() {
            return;
        }
        let Some(block) = pp.block else { return };
        let d = digest(&block);
        if let Some(p) = &self.proposal {
            if p.view == pp.view && p.digest != d {
                // The leader sent two different proposals for one slot: it equivocates.
                self.start_view_change(self.durable.view + 1);
            }
            return;
        }
        if self.decided_up_to > pp.seq {
            // A view change showed this slot is already decided elsewhere: fetch it instead.
            self.hint_height(from, self.decided_up_to);
            return;
        }
        let required = self.required_at(pp.seq).map(|b| digest(&b));
        let invalid = match required {
            Some(r) if r != d => Some("does not re-propose the prepared block".to_owned()),
            _ => self.validate_block(&block).err(),
        };
        if let Some(why) = invalid {
            tracing::warn!(leader = from, seq = pp.seq, %why, "invalid proposal: changing view");
            self.start_view_change(self.durable.view + 1);
            return;
        }
        if let Some((v, s, vd)) = &self.durable.voted
            && *v == pp.view
            && *s == pp.seq
            && *vd != d
        {
            return;
        }
        self.accept(pp.view, block, msg);
    }

    fn accept(&mut self, view: u64, block: Block, pre_prepare: ConsensusMessage) {
        let seq = self.height;
        let d = digest(&block);
        self.durable.voted = Some((view, seq, d.clone()));
        self.wal(WalOp::Voted(view, seq, d.clone()));
        self.proposal = Some(Proposal {
            view,
            block,
            digest: d.clone(),
            value: block_value(seq),
            pre_prepare,
            sent_commit: false,
            accepted_at: self.now,
        });
        self.last_leader_activity = self.now;
        let msg = self.broadcast(Kind::Prepare(Prepare {
            view,
            seq,
            digest: d.clone(),
        }));
        self.votes
            .entry((view, seq))
            .or_default()
            .prepares
            .insert(self.cfg.self_id, (d, msg));
        self.check_quorums();
    }

    fn check_quorums(&mut self) {
        let q = self.cfg.quorum();
        let seq = self.height;
        let Some(p) = &self.proposal else { return };
        let (view, d) = (p.view, p.digest.clone());
        let Some(votes) = self.votes.get(&(view, seq)) else {
            return;
        };
        let prepared = votes.prepares.values().filter(|(pd, _)| *pd == d).count() >= q;
        if prepared && !p.sent_commit {
            let (block, value) = (p.block.clone(), p.value.clone());
            if let Some(sig) = self.crypto.sign_block(&block, &value) {
                if let Some(p) = self.proposal.as_mut() {
                    p.sent_commit = true;
                }
                self.broadcast(Kind::Commit(Commit {
                    view,
                    seq,
                    digest: d.clone(),
                    block_signature: Some(sig.clone()),
                }));
                self.votes
                    .entry((view, seq))
                    .or_default()
                    .commits
                    .insert(self.cfg.self_id, (d.clone(), sig));
            }
        }
        self.try_finalize();
    }

    fn try_finalize(&mut self) {
        let q = self.cfg.quorum();
        let seq = self.height;
        let Some(p) = &self.proposal else { return };
        // Commits from any view count for the same block (same digest, same value).
        let mut valid: BTreeMap<u32, MetadataSignature> = BTreeMap::new();
        for ((_, s), votes) in self.votes.range((0, seq)..) {
            if *s != seq {
                continue;
            }
            for (from, (cd, sig)) in &votes.commits {
                if *cd == p.digest
                    && !valid.contains_key(from)
                    && self
                        .crypto
                        .verify_block_signature(*from, &p.block, &p.value, sig)
                {
                    valid.insert(*from, sig.clone());
                }
            }
        }
        if valid.len() < q {
            return;
        }
        let mut block = p.block.clone();
        let value = p.value.clone();
        if let Some(md) = block.metadata.as_mut() {
            md.metadata[0] = Metadata {
                value,
                signatures: valid.into_values().collect(),
            }
            .encode_to_vec();
            md.metadata[1] = Metadata {
                value: LastConfig { index: 0 }.encode_to_vec(),
                signatures: vec![],
            }
            .encode_to_vec();
        }
        self.commit(block);
    }

    fn commit(&mut self, block: Block) {
        let txids: Vec<String> = block
            .data
            .as_ref()
            .map(|d| d.data.iter().filter_map(|e| txid_of(e)).collect())
            .unwrap_or_default();
        for t in &txids {
            self.pool.remove(t);
            self.committed.insert(t.clone());
        }
        self.pool_order.retain(|t| self.pool.contains_key(t));
        self.height += 1;
        self.last_hash = digest(&block);
        self.proposal = None;
        let h = self.height;
        self.votes.retain(|(_, s), _| *s >= h);
        self.last_leader_activity = self.now;
        self.out.push(Output::Commit(block));
        self.wal(WalOp::Done(txids));
        self.maybe_propose();
    }

    fn maybe_propose(&mut self) {
        if !self.is_leader() || self.proposal.is_some() {
            return;
        }
        let seq = self.height;
        if self.decided_up_to > seq {
            return;
        }
        if let Some(required) = self.required_at(seq) {
            let msg = self.broadcast(Kind::PrePrepare(PrePrepare {
                view: self.durable.view,
                seq,
                block: Some(required.clone()),
            }));
            self.accept(self.durable.view, required, msg);
            return;
        }
        let Some(oldest) = self.pool_order.front().and_then(|t| self.pool.get(t)) else {
            return;
        };
        let full = self.pool.len() >= self.cfg.batch.max_message_count;
        if !full && self.now.saturating_sub(oldest.arrived) < self.cfg.batch.timeout_ticks {
            return;
        }
        let mut batch = Vec::new();
        let mut bytes = 0;
        for txid in &self.pool_order {
            let Some(e) = self.pool.get(txid) else {
                continue;
            };
            if batch.len() >= self.cfg.batch.max_message_count
                || (!batch.is_empty()
                    && bytes + e.envelope.len() > self.cfg.batch.preferred_max_bytes)
            {
                break;
            }
            bytes += e.envelope.len();
            batch.push(e.envelope.clone());
        }
        let block = new_block(seq, self.last_hash.clone(), batch);
        let msg = self.broadcast(Kind::PrePrepare(PrePrepare {
            view: self.durable.view,
            seq,
            block: Some(block.clone()),
        }));
        self.accept(self.durable.view, block, msg);
    }

    fn on_tick(&mut self) {
        let now = self.now;
        if let Some(target) = self.in_view_change {
            if now - self.view_change_started >= self.cfg.view_change_timeout_ticks {
                self.start_view_change(target + 1);
            } else if now.saturating_sub(self.last_retransmit) >= self.cfg.retransmit_ticks {
                self.last_retransmit = now;
                if let Some((_, msg)) = self
                    .view_changes
                    .get(&target)
                    .and_then(|m| m.get(&self.cfg.self_id))
                    .cloned()
                {
                    self.out.push(Output::Send { to: None, msg });
                }
            }
            self.reforward_stale(None);
            return;
        }
        if self.is_leader() {
            if now - self.last_heartbeat >= self.cfg.heartbeat_ticks {
                self.last_heartbeat = now;
                self.broadcast(Kind::Heartbeat(Heartbeat {
                    view: self.durable.view,
                    seq: self.height,
                }));
            }
            self.maybe_propose();
        } else {
            if now.saturating_sub(self.last_leader_activity) >= self.cfg.leader_timeout_ticks {
                self.start_view_change(self.durable.view + 1);
                return;
            }
            if let Some(p) = &self.proposal
                && now - p.accepted_at >= self.cfg.leader_timeout_ticks
            {
                self.start_view_change(self.durable.view + 1);
                return;
            }
            let timeout = self.cfg.request_timeout_ticks;
            if self
                .pool
                .values()
                .any(|e| now.saturating_sub(e.arrived) >= timeout)
            {
                // A request we hold was not ordered in time: the leader censors or stalls.
                self.start_view_change(self.durable.view + 1);
                return;
            }
            let leader = self.leader();
            self.reforward_stale(Some(leader));
        }
        if now.saturating_sub(self.last_retransmit) >= self.cfg.retransmit_ticks {
            self.last_retransmit = now;
            self.retransmit();
        }
    }

    /// Re-sends requests that have waited a while, to the leader or (during a view change) to all.
    fn reforward_stale(&mut self, to: Option<u32>) {
        let now = self.now;
        let every = (self.cfg.request_timeout_ticks / 3).max(1);
        let stale: Vec<Vec<u8>> = self
            .pool
            .values_mut()
            .filter(|e| now.saturating_sub(e.forwarded) >= every)
            .map(|e| {
                e.forwarded = now;
                e.envelope.clone()
            })
            .collect();
        if stale.is_empty() {
            return;
        }
        let msg = self.message(Kind::Forward(ForwardRequest { envelopes: stale }));
        self.out.push(Output::Send { to, msg });
    }

    /// Re-sends own pre-prepare / prepare / commit for the pending block (links may lose them).
    fn retransmit(&mut self) {
        let Some(p) = &self.proposal else { return };
        let key = (p.view, self.height);
        let mut msgs = Vec::new();
        if self.cfg.self_id == self.cfg.leader(p.view) {
            msgs.push(p.pre_prepare.clone());
        }
        if let Some(v) = self.votes.get(&key) {
            if let Some((_, m)) = v.prepares.get(&self.cfg.self_id) {
                msgs.push(m.clone());
            }
            if let Some((d, sig)) = v.commits.get(&self.cfg.self_id) {
                let c = self.message(Kind::Commit(Commit {
                    view: key.0,
                    seq: key.1,
                    digest: d.clone(),
                    block_signature: Some(sig.clone()),
                }));
                msgs.push(c);
            }
        }
        for msg in msgs {
            self.out.push(Output::Send { to: None, msg });
        }
    }

    // ------------------------------------------------------------------------------------------
    // View change

    fn prepared_certificate(&self) -> Option<PreparedCertificate> {
        let p = self.proposal.as_ref()?;
        let votes = self.votes.get(&(p.view, self.height))?;
        let prepares: Vec<ConsensusMessage> = votes
            .prepares
            .values()
            .filter(|(d, _)| *d == p.digest)
            .map(|(_, m)| m.clone())
            .collect();
        (prepares.len() >= self.cfg.quorum()).then(|| PreparedCertificate {
            pre_prepare: Some(p.pre_prepare.clone()),
            prepares,
        })
    }

    fn start_view_change(&mut self, target: u64) {
        if target <= self.durable.view || self.in_view_change.is_some_and(|t| t >= target) {
            return;
        }
        self.in_view_change = Some(target);
        self.view_change_started = self.now;
        self.last_retransmit = self.now;
        let vc = ViewChange {
            next_view: target,
            last_committed_seq: self.height,
            prepared: self.prepared_certificate(),
        };
        let msg = self.broadcast(Kind::ViewChange(vc.clone()));
        self.view_changes
            .entry(target)
            .or_default()
            .insert(self.cfg.self_id, (vc, msg));
        self.check_view_change_quorum(target);
    }

    /// A certificate is valid if the pre-prepare is signed by the leader of its view and 2f+1
    /// distinct consenters signed matching prepares.
    fn valid_certificate(&self, c: &PreparedCertificate) -> bool {
        let Some(pp_msg) = &c.pre_prepare else {
            return false;
        };
        let Some(Kind::PrePrepare(pp)) = self.open(pp_msg) else {
            return false;
        };
        if pp_msg.sender != self.cfg.leader(pp.view) {
            return false;
        }
        let Some(block) = &pp.block else { return false };
        let d = digest(block);
        let mut signers = BTreeSet::new();
        for m in &c.prepares {
            if let Some(Kind::Prepare(p)) = self.open(m)
                && p.view == pp.view
                && p.seq == pp.seq
                && p.digest == d
            {
                signers.insert(m.sender);
            }
        }
        signers.len() >= self.cfg.quorum()
    }

    fn on_view_change(&mut self, from: u32, msg: ConsensusMessage, vc: ViewChange) {
        self.hint_height(from, vc.last_committed_seq);
        if vc.next_view <= self.durable.view {
            // The sender missed the view change we already went through: relay its proof.
            if self.in_view_change.is_none()
                && let Some(nv) = self.new_view_msg.clone()
            {
                let last = self
                    .last_help
                    .get(&(from + 1_000_000))
                    .copied()
                    .unwrap_or(0);
                if self.now == 0 || self.now.saturating_sub(last) >= 5 {
                    self.last_help.insert(from + 1_000_000, self.now);
                    self.out.push(Output::Send {
                        to: Some(from),
                        msg: nv,
                    });
                }
            }
            return;
        }
        if vc
            .prepared
            .as_ref()
            .is_some_and(|c| !self.valid_certificate(c))
        {
            return;
        }
        self.view_changes
            .entry(vc.next_view)
            .or_default()
            .insert(from, (vc.clone(), msg));
        // f+1 replicas want a later view: at least one correct replica does, so join.
        let mut wanting: BTreeMap<u32, u64> = BTreeMap::new();
        for (v, senders) in self.view_changes.range(self.durable.view + 1..) {
            for s in senders.keys() {
                wanting
                    .entry(*s)
                    .and_modify(|x| *x = (*x).min(*v))
                    .or_insert(*v);
            }
        }
        if wanting.len() > self.cfg.f()
            && let Some(min) = wanting.values().copied().min()
            && self.in_view_change.is_none_or(|t| t < min)
        {
            self.start_view_change(min);
        }
        self.check_view_change_quorum(vc.next_view);
    }

    fn check_view_change_quorum(&mut self, v: u64) {
        if self.cfg.leader(v) != self.cfg.self_id
            || self.new_view_sent.contains(&v)
            || self.in_view_change != Some(v)
        {
            return;
        }
        let Some(vcs) = self.view_changes.get(&v) else {
            return;
        };
        if vcs.len() < self.cfg.quorum() {
            return;
        }
        let ahead = vcs
            .iter()
            .filter(|(_, (vc, _))| vc.last_committed_seq > self.height)
            .map(|(s, _)| *s)
            .next();
        if let Some(s) = ahead {
            // Someone committed more than we did: catch up before leading.
            self.last_state_request = 0;
            self.hint_height(s, self.height + 1);
            return;
        }
        let msgs: Vec<ConsensusMessage> = vcs.values().map(|(_, m)| m.clone()).collect();
        let certs: Vec<PreparedCertificate> = vcs
            .values()
            .filter_map(|(vc, _)| vc.prepared.clone())
            .collect();
        self.new_view_sent.insert(v);
        let nv = self.broadcast(Kind::NewView(NewView {
            view: v,
            view_changes: msgs,
        }));
        self.install_view(v, certs, 0, nv);
    }

    fn on_new_view(&mut self, msg: ConsensusMessage, nv: NewView) {
        if nv.view < self.durable.view
            || (nv.view == self.durable.view && self.in_view_change.is_none())
        {
            return;
        }
        let from = msg.sender;
        if from != self.cfg.leader(nv.view) {
            return;
        }
        let mut senders = BTreeSet::new();
        let mut certs = Vec::new();
        let mut decided = 0;
        for m in &nv.view_changes {
            if let Some(Kind::ViewChange(vc)) = self.open(m)
                && vc.next_view == nv.view
            {
                if let Some(c) = &vc.prepared {
                    if !self.valid_certificate(c) {
                        return;
                    }
                    certs.push(c.clone());
                }
                decided = decided.max(vc.last_committed_seq);
                senders.insert(m.sender);
            }
        }
        if senders.len() < self.cfg.quorum() {
            return;
        }
        self.install_view(nv.view, certs, decided, msg);
        self.hint_height(from, decided);
    }

    fn install_view(
        &mut self,
        v: u64,
        certs: Vec<PreparedCertificate>,
        decided_up_to: u64,
        proof: ConsensusMessage,
    ) {
        self.new_view_msg = Some(proof);
        self.durable.view = v;
        self.in_view_change = None;
        self.view_certs = certs;
        self.decided_up_to = decided_up_to;
        self.proposal = None;
        self.last_leader_activity = self.now;
        self.last_heartbeat = 0;
        let now = self.now;
        for e in self.pool.values_mut() {
            // Give the new leader a fresh chance with every pending request.
            e.arrived = now;
        }
        self.view_changes.retain(|k, _| *k > v);
        self.wal(WalOp::View(v));
        if self.is_leader() {
            self.broadcast(Kind::Heartbeat(Heartbeat {
                view: v,
                seq: self.height,
            }));
            self.maybe_propose();
        }
    }

    // ------------------------------------------------------------------------------------------
    // State transfer

    fn on_state(&mut self, blocks: Vec<Block>) {
        for block in blocks {
            let Some(h) = block.header.as_ref() else {
                return;
            };
            if h.number < self.height {
                continue;
            }
            if h.number > self.height || h.previous_hash != self.last_hash {
                return;
            }
            let Some(data) = block.data.as_ref() else {
                return;
            };
            if block_data_hash(data).as_slice() != h.data_hash.as_slice() {
                return;
            }
            let Some(md) = block.metadata.as_ref().and_then(|m| m.metadata.first()) else {
                return;
            };
            let Ok(md) = Metadata::decode(md.as_slice()) else {
                return;
            };
            let mut signers = BTreeSet::new();
            for sig in &md.signatures {
                let Ok(ih) = medledger_proto::common::IdentifierHeader::decode(
                    sig.identifier_header.as_slice(),
                ) else {
                    continue;
                };
                if self.cfg.consenters.contains(&ih.identifier)
                    && self
                        .crypto
                        .verify_block_signature(ih.identifier, &block, &md.value, sig)
                {
                    signers.insert(ih.identifier);
                }
            }
            if signers.len() < self.cfg.quorum() {
                return;
            }
            self.proposal = None;
            self.commit(block);
        }
    }

    /// Builds the answer to a StateRequest from committed blocks (the caller reads its store).
    pub fn state_response_message(&self, blocks: Vec<Block>) -> ConsensusMessage {
        self.message(Kind::StateResponse(StateResponse { blocks }))
    }
}
