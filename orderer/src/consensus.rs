//! The BFT consensus core: PBFT as Fabric's SmartBFT runs it, as a pure deterministic state
//! machine. Inputs are consensus messages, client requests and logical clock ticks; outputs are
//! messages to send, blocks to persist and state to write ahead. No sockets, clocks, threads or
//! randomness live here, which is what lets `tests/` run it under a seeded simulator.
//!
//! One block is in flight at a time. The leader of view `v` is `consenters[v % n]`. A block is
//! final with 2f+1 commits, each carrying the voter's block signature, so the committed block
//! carries a quorum of signatures in its SIGNATURES metadata.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use crate::recent::RecentTxids;
use std::sync::Arc;
use std::time::Duration;

use medledger_common::channelconfig::BftSettings;

use medledger_common::protoutil::{
    BLOCK_METADATA_SLOTS, block_data_hash, block_header_hash, new_block,
};
use medledger_proto::common::{
    Block, BlockMetadataIndex, LastConfig, Metadata, MetadataSignature, OrdererBlockMetadata,
};
use medledger_proto::medledger::consensus::{
    Body, Commit, ConsensusMessage, ForwardRequest, Heartbeat, NewView, PrePrepare, Prepare,
    PreparedCertificate, StateRequest, StateResponse, ViewChange, body::Kind,
};
use prost::Message;

/// Ticks between two answers to one consenter's StateRequests: a faulty consenter asking in a
/// loop must not keep the event loop reading blocks (the requester itself asks every 3 ticks).
const STATE_SERVE_INTERVAL_TICKS: u64 = 2;

/// How many views away from ours a prepare or commit may be and still be kept. Correct replicas
/// move one view per view-change timeout and are brought back by NewView relays, so they are a
/// few views apart; a vote further out only lets a faulty consenter fill our memory.
const VOTE_VIEW_WINDOW: u64 = 8;

/// How far beyond our height a prepare or commit may be and still be kept. One block is in
/// flight, so a current replica sees votes for its height or the next few; a replica further
/// behind catches up by state transfer (the vote's height hint still asks for it).
const VOTE_SEQ_WINDOW: u64 = 4;

/// How far beyond the view we are in (or changing to) a view change may target and still be
/// kept, and how far below our target old ones are kept. Same reasoning as `VOTE_VIEW_WINDOW`;
/// it also caps how many view changes, each possibly carrying a whole block, one consenter can
/// make us hold.
const VIEW_CHANGE_WINDOW: u64 = 8;
/// No channel changes view this often; a view change asking for more is malformed (and would
/// leave no next view to move on to).
const MAX_VIEW: u64 = u64::MAX / 2;
/// A consenter behind in view is helped (`relay_due`) at most once per this many ticks.
const RELAY_INTERVAL_TICKS: u64 = 5;

/// Default bound on the number of requests a replica holds unordered (its pool, and so its
/// write-ahead `pending`). Without one a Writer flooding Broadcast grows memory and the WAL
/// without limit. It is deep enough to absorb bursts (hundreds of blocks at Fabric's default
/// 500 transactions per block would be more than the ordering rate can drain before the
/// censorship timer anyway) and small enough that scanning it every tick stays cheap.
pub const DEFAULT_MAX_POOL_REQUESTS: usize = 20_000;

/// Default bound on the bytes of the requests a replica holds unordered. The count bound alone
/// would still admit 20,000 requests of up to AbsoluteMaxBytes each (gigabytes).
pub const DEFAULT_MAX_POOL_BYTES: usize = 256 * 1024 * 1024;

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
    /// Whether a request is a CONFIG transaction, which is ordered in a block of its own.
    fn is_config_request(&self, _envelope: &[u8]) -> bool {
        false
    }
    /// Puts in force the configuration a decided configuration block carries, before anything
    /// after it is validated; returns the core's settings it carries.
    fn apply_config_block(&self, _block: &Block) -> Option<AppliedConfig> {
        None
    }
}

/// Block cutting settings (from the channel's BatchSize).
#[derive(Debug, Clone)]
pub struct BatchConfig {
    pub max_message_count: usize,
    pub preferred_max_bytes: usize,
    pub absolute_max_bytes: usize,
}

/// What a channel configuration sets in the core: the consenters, block cutting and the BFT
/// timeouts and bounds. A configuration block puts them in force from the next block on.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Consenter ids (any order).
    pub consenters: Vec<u32>,
    pub batch: BatchConfig,
    pub bft: BftSettings,
}

/// A decided configuration block, once in force: its settings, and whether it changed the
/// consenters (their ids, keys or endpoints), which starts a view change under the new set.
#[derive(Debug, Clone)]
pub struct AppliedConfig {
    pub settings: Settings,
    pub consenters_changed: bool,
}

/// Settings of one replica.
#[derive(Debug, Clone)]
pub struct Config {
    pub channel_id: String,
    pub self_id: u32,
    /// Consenter ids, sorted.
    pub consenters: Vec<u32>,
    /// Consenters the newest change of the set removed. One that lagged never saw the block
    /// removing it, and the others no longer listen to it: they answer what it sends with the
    /// committed blocks it lacks (blocks carry their own proof), so that it learns it was
    /// removed and stops ordering.
    pub former: Vec<u32>,
    /// The height from which these consenters order: right after the block that last changed
    /// the set (0 for the genesis set). `former` are sent no blocks from it on. It names the
    /// set in each view change, which only replicas of the same set count.
    pub consenters_since: u64,
    /// The period of `Replica::tick`: what the timeouts below are counted in.
    pub tick: Duration,
    pub batch: BatchConfig,
    pub heartbeat_ticks: u64,
    /// A follower suspects the leader after this long without a heartbeat or progress.
    pub leader_timeout_ticks: u64,
    /// A request not ordered within this long makes its holder complain (view change).
    pub request_timeout_ticks: u64,
    pub view_change_timeout_ticks: u64,
    /// Own votes and proposals are re-sent this often while a block is pending (lossy links).
    pub retransmit_ticks: u64,
    /// At most this many requests wait in the pool (`DEFAULT_MAX_POOL_REQUESTS`); beyond it
    /// client requests are refused (`RequestError::Overloaded`) and forwarded ones dropped.
    pub max_pool_requests: usize,
    /// At most this many envelope bytes wait in the pool (`DEFAULT_MAX_POOL_BYTES`).
    pub max_pool_bytes: usize,
}

impl Config {
    /// Puts a channel configuration's settings in force: batch limits, and the BFT timeouts
    /// counted in ticks (at least one).
    pub fn apply(&mut self, settings: &Settings) {
        let tick = self.tick.as_millis().max(1);
        let ticks = |d: Duration| u64::try_from((d.as_millis() / tick).max(1)).unwrap_or(u64::MAX);
        let bft = &settings.bft;
        let mut consenters = settings.consenters.clone();
        consenters.sort_unstable();
        consenters.dedup();
        if !consenters.is_empty() {
            self.consenters = consenters;
        }
        self.batch = settings.batch.clone();
        self.heartbeat_ticks = ticks(bft.heartbeat_interval);
        self.leader_timeout_ticks = ticks(bft.leader_timeout);
        self.request_timeout_ticks = ticks(bft.request_complain_timeout);
        self.view_change_timeout_ticks = ticks(bft.view_change_timeout);
        self.retransmit_ticks = ticks(bft.view_change_resend_interval);
        self.max_pool_requests = bft.request_pool_size;
    }

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
        let n = self.n().max(1) as u64;
        self.consenters
            .get(usize::try_from(view % n).unwrap_or(0))
            .copied()
            .unwrap_or(u32::MAX)
    }
    /// Whether this replica is one of the consenters.
    pub fn is_member(&self) -> bool {
        self.consenters.contains(&self.self_id)
    }
}

/// State a replica writes ahead before acting on it, restored after a crash. It holds at most
/// one proposal and one certificate: only the sequence in flight (and the certificate of the
/// last committed block, which view changes carry) matters after a restart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Durable {
    pub view: u64,
    /// The view this replica last asked to change to. Above `view`, it is still changing view
    /// after a restart: having sent that view change, it must not act in `view` again (its view
    /// change, which others may count, says it prepared nothing newer).
    pub view_change: u64,
    /// The (view, seq, digest) this replica last voted for: never vote for another digest there.
    pub voted: Option<(u64, u64, Vec<u8>)>,
    /// The signed pre-prepare of that vote. A restarted replica resumes this proposal: a leader
    /// cutting a new block from its rebuilt pool (another order, more requests) would propose a
    /// second block for the slot, and a follower could not re-send its vote.
    pub accepted: Option<ConsensusMessage>,
    /// The highest-view prepared certificate for the block in flight or, once that block is
    /// committed, for the last committed block. Without it a restarted replica's view change
    /// would not carry a block that may be committed elsewhere, and a new leader could replace it.
    pub prepared: Option<PreparedCertificate>,
    /// The NewView that installed `view`. After a restart the replica still knows which block
    /// the view must re-propose (a faulty leader could otherwise get another one accepted) and
    /// can still bring replicas that missed the view change into it.
    pub new_view: Option<ConsensusMessage>,
    /// Requests accepted and not yet ordered, by txid.
    pub pending: BTreeMap<String, Vec<u8>>,
}

/// Sizes of what a replica holds that other consenters' messages can grow (`Replica::held`),
/// or the bounds on them (`Replica::held_bound`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// (view, seq) slots with votes.
    pub vote_slots: usize,
    /// Prepares and commits stored.
    pub votes: usize,
    pub view_changes: usize,
    pub refused_view_changes: usize,
    /// The largest per-consenter rate-limit map.
    pub per_consenter: usize,
    pub new_views_sent: usize,
}

impl Held {
    /// Whether every size is within `bound`'s.
    pub fn within(&self, bound: &Held) -> bool {
        self.vote_slots <= bound.vote_slots
            && self.votes <= bound.votes
            && self.view_changes <= bound.view_changes
            && self.refused_view_changes <= bound.refused_view_changes
            && self.per_consenter <= bound.per_consenter
            && self.new_views_sent <= bound.new_views_sent
    }
}

/// Where a restarted replica stands.
#[derive(Debug, Clone)]
pub struct Restored {
    pub durable: Durable,
    /// Next block number (ledger height).
    pub height: u64,
    pub last_hash: Vec<u8>,
    /// Transaction ids in the newest committed blocks (`recent::DEDUP_WINDOW_BLOCKS`).
    pub committed_txids: RecentTxids,
    /// The newest configuration block's number (what the last block's LAST_CONFIG names). A
    /// resumed proposal's signed value depends on it, so it is known before anything resumes.
    pub last_config: u64,
}

/// One change to the write-ahead state, written before anything that depends on it is sent.
#[derive(Debug, Clone, PartialEq)]
pub enum WalOp {
    View(u64),
    /// A view change to this view was started.
    ViewChange(u64),
    /// The signed NewView that installed the view written with it (replacing any earlier one).
    NewView(ConsensusMessage),
    /// A proposal was accepted: this replica votes for `digest` at (`view`, `seq`), proposed by
    /// the signed `pre_prepare`, and for nothing else there.
    Accepted {
        view: u64,
        seq: u64,
        digest: Vec<u8>,
        pre_prepare: ConsensusMessage,
    },
    /// The prepared certificate to keep (replacing any other), or none.
    Prepared(Option<PreparedCertificate>),
    /// The block at this sequence is committed: the vote and proposal for it are done with.
    Decided(u64),
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
            WalOp::ViewChange(v) => self.view_change = *v,
            WalOp::NewView(m) => self.new_view = Some(m.clone()),
            WalOp::Accepted {
                view,
                seq,
                digest,
                pre_prepare,
            } => {
                self.voted = Some((*view, *seq, digest.clone()));
                self.accepted = Some(pre_prepare.clone());
            }
            WalOp::Prepared(c) => self.prepared = c.clone(),
            WalOp::Decided(seq) => {
                if self.voted.as_ref().is_some_and(|(_, s, _)| s <= seq) {
                    self.voted = None;
                    self.accepted = None;
                }
            }
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
    /// Another replica asked for committed blocks from `from_seq`: answer with a StateResponse
    /// of blocks below `until` (a consenter removed gets none past the block removing it).
    ServeState { to: u32, from_seq: u64, until: u64 },
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
    /// The request pool is at its bound (Fabric answers SERVICE_UNAVAILABLE; the client retries).
    #[error("request pool is full")]
    Overloaded,
    /// This orderer is not in the channel's consenter set (not yet added, or removed): it orders
    /// nothing (SERVICE_UNAVAILABLE; the client tries another orderer).
    #[error(
        "this orderer is not a consenter of the channel at its height (not yet caught up, or removed)"
    )]
    NotConsenter,
}

/// Why a proposed block is refused (the leader is then suspected), or cannot be finalized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBlock {
    #[error("no header")]
    NoHeader,
    #[error("block number {got} is not the next ({want})")]
    Number { got: u64, want: u64 },
    #[error("previous hash does not chain")]
    Chain,
    #[error("no data")]
    NoData,
    #[error("data hash does not match")]
    DataHash,
    #[error("{got} transactions (1 to {max} allowed)")]
    TransactionCount { got: usize, max: usize },
    #[error("no metadata")]
    NoMetadata,
    #[error("{got} metadata slots instead of {want}")]
    MetadataSlots { got: usize, want: usize },
    #[error("metadata slot {0} is not empty")]
    MetadataFilled(usize),
    #[error("block with its metadata exceeds the absolute maximum of {max} bytes")]
    TooLarge { max: usize },
    #[error("transaction refused: {0}")]
    Request(RequestError),
    #[error("transaction {0} is ordered twice")]
    Duplicate(String),
    #[error("does not re-propose the prepared block")]
    NotRequired,
    #[error("a CONFIG transaction shares its block with other transactions")]
    ConfigNotAlone,
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

/// A commit vote (digest, block signature) and what we know of the signature: it is checked at
/// most once, when we have the block it signs.
enum CommitVote {
    Unchecked(Vec<u8>, MetadataSignature),
    Valid(Vec<u8>, MetadataSignature),
    /// The signature did not verify and was dropped; the digest stays as the sender's one vote
    /// for the slot, so repeating the vote costs no further check.
    Rejected(Vec<u8>),
}

impl CommitVote {
    fn digest(&self) -> &[u8] {
        match self {
            Self::Unchecked(d, _) | Self::Valid(d, _) | Self::Rejected(d) => d,
        }
    }
}

/// Votes for one (view, seq): one per sender, the first one received.
#[derive(Default)]
struct Votes {
    prepares: BTreeMap<u32, (Vec<u8>, ConsensusMessage)>,
    commits: BTreeMap<u32, CommitVote>,
}

impl Votes {
    #[cfg(test)]
    fn commit_digest(&self, from: u32) -> Option<&[u8]> {
        self.commits.get(&from).map(CommitVote::digest)
    }
}

struct PoolEntry {
    envelope: Vec<u8>,
    /// A CONFIG transaction: ordered alone.
    config: bool,
    /// When the censorship timer (`request_timeout_ticks`) last started.
    arrived: u64,
    forwarded: u64,
    /// How many more full blocks may restart the censorship timer (`overload_allowance`).
    full_blocks_allowed: usize,
}

/// One consenter's consensus state for one channel.
pub struct Replica {
    cfg: Config,
    crypto: Arc<dyn Crypto>,
    /// The number of the newest configuration block: what LAST_CONFIG and the signed block
    /// metadata name.
    last_config: u64,
    durable: Durable,
    height: u64,
    last_hash: Vec<u8>,
    now: u64,
    in_view_change: Option<u64>,
    view_change_started: u64,
    pool: BTreeMap<String, PoolEntry>,
    pool_order: VecDeque<String>,
    /// Envelope bytes in `pool`, held against `Config::max_pool_bytes`.
    pool_bytes: usize,
    committed: RecentTxids,
    proposal: Option<Proposal>,
    /// The current leader's proposal for the height after ours, received before we committed
    /// ours (the leader proposes as soon as it has its commit quorum, often before the others
    /// have theirs). Taken up once our height reaches it, instead of being dropped and waiting
    /// for the leader's retransmission. One message: a faulty leader can only replace it.
    early_pre_prepare: Option<(u32, ConsensusMessage, PrePrepare)>,
    votes: BTreeMap<(u64, u64), Votes>,
    view_changes: BTreeMap<u64, BTreeMap<u32, (ViewChange, ConsensusMessage)>>,
    /// (view, sender) of view changes refused for an invalid certificate: that sender's one
    /// view change for the view, so repeating it costs no further signature checks.
    refused_view_changes: BTreeSet<(u64, u32)>,
    /// Prepared certificates of the NewView that installed the current view.
    view_certs: Vec<PreparedCertificate>,
    /// The highest-view prepared certificate known for the block at our height (ours, or one a
    /// NewView carried), with its view. It outlives the proposal: a view change must carry it
    /// or a block prepared, and perhaps committed elsewhere, could be replaced.
    prepared_cert: Option<(u64, PreparedCertificate)>,
    /// The prepared certificate of our last committed block. A view change carries it when we
    /// have none at our height: it keeps a block only a few replicas committed from being
    /// replaced when the new leader does not take our claimed height on our word alone.
    committed_cert: Option<PreparedCertificate>,
    /// A height the view change that installed the current view showed some correct replica
    /// reached; seqs below it are decided.
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
    /// When each consenter's StateRequest was last served (one entry per consenter).
    last_served: BTreeMap<u32, u64>,
    /// When we last relayed the current view's NewView to each consenter that missed it.
    last_relay: BTreeMap<u32, (u64, u64)>,
    /// While following (outside the set): the highest view each consenter's signed messages
    /// showed, so that on joining we change to a view the consenters are in (one per consenter).
    views_seen: BTreeMap<u32, u64>,
    /// The highest view each other consenter of our set asked for since our view was installed
    /// (one per consenter; see `note_view_asked`).
    views_asked: BTreeMap<u32, u64>,
    out: Vec<Output>,
}

/// The SIGNATURES metadata value every replica signs for block `seq` when the newest
/// configuration block is `last_config`: deterministic, so all signatures of one block cover the
/// same bytes.
pub fn block_value(view: u64, seq: u64, last_config: u64) -> Vec<u8> {
    // The view is signed too, so a block's 2f+1 signatures are all commits of one view: commits
    // of different views for the same block do not make a quorum (PBFT's safety argument needs
    // f+1 correct replicas prepared in one view, which every later NewView then shows).
    let mut consenter_metadata = seq.to_be_bytes().to_vec();
    consenter_metadata.extend_from_slice(&view.to_be_bytes());
    OrdererBlockMetadata {
        last_config: Some(LastConfig { index: last_config }),
        consenter_metadata,
    }
    .encode_to_vec()
}

/// Whether a message of this kind can be shown to others as proof (a prepared certificate holds
/// a PrePrepare and Prepares, a NewView holds ViewChanges, and a NewView is relayed): only these
/// are signed. The others are only ever read by their addressee, from the sender's authenticated
/// link: a Forward carries client requests each verified on arrival like a Broadcast; a Commit
/// carries the voter's block signature, checked on its own; a Heartbeat or StateRequest is a
/// hint; a StateResponse carries blocks with their own quorum. Signing those cost a signature
/// per message and a verification at every receiver (per request for Forwards), for no proof
/// anyone keeps.
fn is_proof(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::PrePrepare(_) | Kind::Prepare(_) | Kind::ViewChange(_) | Kind::NewView(_)
    )
}

impl RecentTxids {
    /// Records the transaction ids of block `number`.
    pub fn record_block(&mut self, number: u64, block: &Block) {
        self.record(number, block_txids(block));
    }
}

/// The transaction ids of a block's envelopes (those that have one).
pub fn block_txids(block: &Block) -> Vec<String> {
    block
        .data
        .as_ref()
        .map(|d| d.data.iter().filter_map(|e| txid_of(e)).collect())
        .unwrap_or_default()
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

/// (view, seq, block digest) of a certificate's pre-prepare, without checking signatures (only
/// for certificates already checked or built by this replica).
fn cert_slot(c: &PreparedCertificate) -> Option<(u64, u64, Vec<u8>)> {
    let pp = c.pre_prepare.as_ref()?;
    match Body::decode(pp.body.as_slice()).ok()?.kind? {
        Kind::PrePrepare(p) => Some((p.view, p.seq, digest(p.block.as_ref()?))),
        _ => None,
    }
}

/// The committed form of a proposed block: SIGNATURES with the quorum's signatures over
/// `value`, and LAST_CONFIG. A block without exactly the metadata slots a leader proposes is an
/// error here, never an index out of bounds (it would stop the event loop).
fn seal_block(
    mut block: Block,
    value: Vec<u8>,
    signatures: Vec<MetadataSignature>,
    last_config: u64,
) -> Result<Block, InvalidBlock> {
    let slots = &mut block
        .metadata
        .as_mut()
        .ok_or(InvalidBlock::NoMetadata)?
        .metadata;
    if slots.len() != BLOCK_METADATA_SLOTS {
        return Err(InvalidBlock::MetadataSlots {
            got: slots.len(),
            want: BLOCK_METADATA_SLOTS,
        });
    }
    let missing = InvalidBlock::MetadataSlots {
        got: slots.len(),
        want: BLOCK_METADATA_SLOTS,
    };
    *slots
        .get_mut(BlockMetadataIndex::Signatures as usize)
        .ok_or_else(|| missing.clone())? = Metadata { value, signatures }.encode_to_vec();
    *slots
        .get_mut(BlockMetadataIndex::LastConfig as usize)
        .ok_or(missing)? = last_config_metadata(last_config);
    Ok(block)
}

/// The LAST_CONFIG slot of a committed block: the newest configuration block's number.
fn last_config_metadata(last_config: u64) -> Vec<u8> {
    Metadata {
        value: LastConfig { index: last_config }.encode_to_vec(),
        signatures: vec![],
    }
    .encode_to_vec()
}

/// Whether a block's metadata, SIGNATURES aside, is what `seal_block` makes: the leader's
/// slots, LAST_CONFIG as sealed, the others empty. Block signatures cover the header only, so a
/// consenter serving a block by state transfer could otherwise rewrite the rest.
fn sealed_form(block: &Block, last_config: u64) -> bool {
    let Some(md) = block.metadata.as_ref() else {
        return false;
    };
    let signatures = BlockMetadataIndex::Signatures as usize;
    let last_config_slot = BlockMetadataIndex::LastConfig as usize;
    md.metadata.len() == BLOCK_METADATA_SLOTS
        && md.metadata.get(last_config_slot) == Some(&last_config_metadata(last_config))
        && md
            .metadata
            .iter()
            .enumerate()
            .all(|(i, m)| i == signatures || i == last_config_slot || m.is_empty())
}

impl Replica {
    /// A replica resuming from persisted state (height 1 and empty state right after genesis).
    pub fn new(cfg: Config, crypto: Arc<dyn Crypto>, restored: Restored) -> Self {
        let mut r = Self {
            cfg,
            crypto,
            last_config: restored.last_config,
            durable: Durable::default(),
            height: restored.height,
            last_hash: restored.last_hash,
            now: 0,
            in_view_change: None,
            view_change_started: 0,
            pool: BTreeMap::new(),
            pool_order: VecDeque::new(),
            pool_bytes: 0,
            committed: restored.committed_txids,
            proposal: None,
            early_pre_prepare: None,
            votes: BTreeMap::new(),
            view_changes: BTreeMap::new(),
            refused_view_changes: BTreeSet::new(),
            view_certs: Vec::new(),
            prepared_cert: None,
            committed_cert: None,
            decided_up_to: 0,
            new_view_sent: BTreeSet::new(),
            last_leader_activity: 0,
            last_heartbeat: 0,
            last_retransmit: 0,
            last_state_request: 0,
            last_help: BTreeMap::new(),
            last_served: BTreeMap::new(),
            last_relay: BTreeMap::new(),
            views_seen: BTreeMap::new(),
            views_asked: BTreeMap::new(),
            new_view_msg: None,
            out: Vec::new(),
        };
        r.durable.view = restored.durable.view;
        r.durable.view_change = restored.durable.view_change;
        r.durable.voted = restored.durable.voted;
        for (txid, env) in restored.durable.pending {
            if !r.committed.contains(&txid) {
                // Written ahead requests were accepted (and acknowledged): keep them all even if
                // the bound is now lower; new ones wait until the pool is back under it.
                r.pool_bytes = r.pool_bytes.saturating_add(env.len());
                r.pool.insert(
                    txid.clone(),
                    PoolEntry {
                        config: r.crypto.is_config_request(&env),
                        envelope: env,
                        arrived: 0,
                        forwarded: 0,
                        full_blocks_allowed: 1,
                    },
                );
                r.pool_order.push_back(txid);
            }
        }
        r.resume_view(restored.durable.new_view);
        r.resume(restored.durable.accepted, restored.durable.prepared);
        if r.durable.view_change > r.durable.view && r.cfg.is_member() {
            // Crashed while changing view: go on changing (the view change is sent again).
            r.start_view_change(r.durable.view_change);
        }
        r
    }

    /// Takes back what the NewView of our view established (the blocks it requires, the height
    /// it showed decided) and the proof itself, to relay. It is checked again as if received:
    /// the store is ours, but a record that does not prove our view must not steer us.
    fn resume_view(&mut self, new_view: Option<ConsensusMessage>) {
        let Some(msg) = new_view else { return };
        let Some(Kind::NewView(nv)) = self.open(&msg) else {
            return;
        };
        if nv.view != self.durable.view {
            return;
        }
        if let Some((certs, decided)) = self.new_view_proof(&msg, &nv) {
            self.view_certs = certs;
            self.decided_up_to = decided;
            self.new_view_msg = Some(msg);
        }
    }

    /// Takes up the round a crash interrupted: the prepared certificate (for our height, or for
    /// the block we committed last) and the proposal we voted for, with its prepares. What this
    /// queues (our vote again, a commit if we were prepared) goes out with the first tick.
    fn resume(
        &mut self,
        accepted: Option<ConsensusMessage>,
        prepared: Option<PreparedCertificate>,
    ) {
        if let Some(c) = prepared
            && let Some((cv, cs, cd)) = cert_slot(&c)
            && self.valid_certificate(&c)
        {
            if cs == self.height {
                self.prepared_cert = Some((cv, c));
            } else if cs.checked_add(1) == Some(self.height) && cd == self.last_hash {
                self.committed_cert = Some(c);
            }
        }
        let Some(msg) = accepted else { return };
        let Some(Kind::PrePrepare(pp)) = self.open(&msg) else {
            return;
        };
        // A proposal of an earlier view was abandoned by a view change; one at another height
        // was decided. Neither is resumed (the vote guard still holds).
        if pp.view != self.durable.view || pp.seq != self.height || msg.sender != self.leader() {
            return;
        }
        let Some(block) = pp.block else { return };
        let d = digest(&block);
        let chained = block
            .header
            .as_ref()
            .is_some_and(|h| h.number == self.height && h.previous_hash == self.last_hash);
        if !chained || self.voted_other(pp.view, pp.seq, &d) {
            return;
        }
        // The prepares of our own certificate for this very proposal count again.
        if let Some((cv, c)) = &self.prepared_cert
            && cert_slot(c).is_some_and(|(_, s, cd)| *cv == pp.view && s == pp.seq && cd == d)
        {
            let slot = self.votes.entry((pp.view, pp.seq)).or_default();
            for m in &c.prepares {
                slot.prepares.insert(m.sender, (d.clone(), m.clone()));
            }
        }
        self.accept(pp.view, block, msg);
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
    /// The settings in force now.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// How much this replica holds of what other consenters' messages can grow.
    pub fn held(&self) -> Held {
        Held {
            vote_slots: self.votes.len(),
            votes: self
                .votes
                .values()
                .map(|v| v.prepares.len().saturating_add(v.commits.len()))
                .sum(),
            view_changes: self.view_changes.values().map(BTreeMap::len).sum(),
            refused_view_changes: self.refused_view_changes.len(),
            per_consenter: self
                .last_help
                .len()
                .max(self.last_served.len())
                .max(self.last_relay.len())
                .max(self.views_asked.len()),
            new_views_sent: self.new_view_sent.len(),
        }
    }

    /// The most `held` can be, from the windows: votes for views within `VOTE_VIEW_WINDOW` of
    /// ours and sequences within `VOTE_SEQ_WINDOW` of our height, one prepare and one commit
    /// per consenter each; view changes within `VIEW_CHANGE_WINDOW` of our target, one per
    /// consenter each.
    pub fn held_bound(&self) -> Held {
        let n = self.cfg.n();
        let views = usize::try_from(VOTE_VIEW_WINDOW.saturating_mul(2).saturating_add(1))
            .unwrap_or(usize::MAX);
        let seqs = usize::try_from(VOTE_SEQ_WINDOW.saturating_add(1)).unwrap_or(usize::MAX);
        let slots = views.saturating_mul(seqs);
        let vc_views = usize::try_from(VIEW_CHANGE_WINDOW.saturating_mul(2).saturating_add(1))
            .unwrap_or(usize::MAX);
        Held {
            vote_slots: slots,
            votes: slots.saturating_mul(n).saturating_mul(2),
            view_changes: vc_views.saturating_mul(n),
            refused_view_changes: vc_views.saturating_mul(n),
            per_consenter: n,
            // Views we led and sent a NewView for, from the one we are in on (older ones are
            // pruned when a view is installed), within the view-change window.
            new_views_sent: vc_views,
        }
    }

    fn wal(&mut self, op: WalOp) {
        self.out.push(Output::Wal(op));
    }

    fn message(&self, kind: Kind) -> ConsensusMessage {
        let signed = is_proof(&kind);
        let body = Body { kind: Some(kind) }.encode_to_vec();
        let signature = if signed {
            self.crypto.sign(&body)
        } else {
            Vec::new()
        };
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

    /// Verifies a signed consensus message from a consenter and decodes its body. Messages that
    /// are never proofs are taken unsigned (`is_proof`): `receive` accepts one only from its
    /// sender's own link.
    fn open(&self, msg: &ConsensusMessage) -> Option<Kind> {
        if !self.cfg.consenters.contains(&msg.sender) || msg.channel_id != self.cfg.channel_id {
            return None;
        }
        let kind = Body::decode(msg.body.as_slice()).ok()?.kind?;
        if !is_proof(&kind) {
            return Some(kind);
        }
        if !self.crypto.verify(msg.sender, &msg.body, &msg.signature) {
            return None;
        }
        Some(kind)
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
        if from != self.cfg.self_id && self.cfg.former.contains(&from) && self.cfg.is_member() {
            self.help_former(from, &msg);
            return std::mem::take(&mut self.out);
        }
        if from == self.cfg.self_id || !self.cfg.consenters.contains(&from) {
            return Vec::new();
        }
        if let Some(kind) = self.open(&msg) {
            match kind {
                _ if !self.cfg.is_member() => {
                    if from == msg.sender {
                        self.follow(from, kind);
                    }
                }
                Kind::NewView(nv) => self.on_new_view(msg, nv),
                _ if from != msg.sender => {}
                kind => self.on_message(from, msg, kind),
            }
        }
        std::mem::take(&mut self.out)
    }

    /// A message from a consenter the newest change removed, which still thinks it is one: it
    /// is sent the committed blocks from the height its message shows (rate-limited), which
    /// include the one removing it. Its signature is not checked (its key is no longer in
    /// force): the transport authenticated the sender, and the answer is only blocks that
    /// carry their own proof.
    fn help_former(&mut self, from: u32, msg: &ConsensusMessage) {
        if msg.sender != from {
            return;
        }
        let Some(kind) = Body::decode(msg.body.as_slice()).ok().and_then(|b| b.kind) else {
            return;
        };
        let height = match kind {
            Kind::ViewChange(vc) => vc.last_committed_seq,
            Kind::StateRequest(r) => r.from_seq,
            Kind::Heartbeat(Heartbeat { seq, .. })
            | Kind::Prepare(Prepare { seq, .. })
            | Kind::Commit(Commit { seq, .. })
            | Kind::PrePrepare(PrePrepare { seq, .. }) => seq,
            _ => return,
        };
        if height < self.height.min(self.cfg.consenters_since) {
            self.hint_height(from, height);
        }
    }

    /// A replica outside the consenter set (added by a configuration block it has not reached
    /// yet, or removed) neither votes nor proposes: it only catches up on the blocks the
    /// consenters' messages show it lacks, checking each under the configuration in force.
    fn follow(&mut self, from: u32, kind: Kind) {
        let view = match &kind {
            Kind::PrePrepare(PrePrepare { view, .. })
            | Kind::Prepare(Prepare { view, .. })
            | Kind::Commit(Commit { view, .. })
            | Kind::Heartbeat(Heartbeat { view, .. }) => Some(*view),
            Kind::ViewChange(vc) => Some(vc.next_view),
            _ => None,
        };
        if let Some(v) = view {
            let seen = self.views_seen.entry(from).or_default();
            *seen = (*seen).max(v);
        }
        match kind {
            Kind::PrePrepare(PrePrepare { seq, .. })
            | Kind::Prepare(Prepare { seq, .. })
            | Kind::Commit(Commit { seq, .. })
            | Kind::Heartbeat(Heartbeat { seq, .. })
                if seq > self.height =>
            {
                self.hint_height(from, seq);
            }
            Kind::ViewChange(vc) if vc.last_committed_seq > self.height => {
                self.hint_height(from, vc.last_committed_seq);
            }
            Kind::StateResponse(r) => self.on_state(r.blocks),
            _ => {}
        }
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
        if !self.cfg.is_member() {
            return Err(RequestError::NotConsenter);
        }
        if envelope.len() > self.cfg.batch.absolute_max_bytes {
            return Err(RequestError::Malformed(format!(
                "message of {} bytes exceeds the absolute maximum of {} bytes",
                envelope.len(),
                self.cfg.batch.absolute_max_bytes
            )));
        }
        // Cheap refusals first, so a flood of duplicates or of requests we have no room for costs
        // no signature check. The txid parsed here is unverified, but only verified requests
        // enter the pool and only committed ones the committed set: a match means a request
        // with this txid (= SHA-256(nonce || creator), which the check binds to the signer)
        // was already accepted, and refusing this copy, genuine or forged, displaces nothing.
        if txid_of(&envelope).is_some_and(|t| self.is_known(&t)) {
            return Err(RequestError::Duplicate);
        }
        let bytes = self.pool_bytes.checked_add(envelope.len());
        if self.pool.len() >= self.cfg.max_pool_requests
            || bytes.is_none_or(|b| b > self.cfg.max_pool_bytes)
        {
            // Refused, not queued: a request we do not hold never starts our censorship timer,
            // so overload alone does not make us complain about the leader.
            return Err(RequestError::Overloaded);
        }
        let txid = self.crypto.check_request(&envelope)?;
        // The verified txid is the one parsed above for any sane `Crypto`; checking again costs
        // nothing and keeps "ordered exactly once" independent of that.
        if self.is_known(&txid) {
            return Err(RequestError::Duplicate);
        }
        self.pool_bytes = self.pool_bytes.saturating_add(envelope.len());
        let full_blocks_allowed = self.overload_allowance();
        self.pool.insert(
            txid.clone(),
            PoolEntry {
                config: self.crypto.is_config_request(&envelope),
                envelope: envelope.clone(),
                arrived: self.now,
                forwarded: self.now,
                full_blocks_allowed,
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

    /// How many full blocks a request entering the pool now may see committed without it before
    /// its holder stops excusing the wait. Under overload an honest leader orders full blocks in
    /// arrival order, so a request behind `ahead` others waits about ahead / max_message_count
    /// blocks, which can exceed the request timeout without any censorship; complaining then
    /// would depose honest leaders one after another. Twice that (arrival orders differ between
    /// replicas), plus one: a leader that keeps ordering full blocks without the request is
    /// still deposed, after at most that many blocks.
    fn overload_allowance(&self) -> usize {
        let per_block = self.cfg.batch.max_message_count.max(1);
        self.pool
            .len()
            .div_ceil(per_block)
            .saturating_mul(2)
            .saturating_add(1)
    }

    /// Whether a request with this txid is already pooled or committed.
    fn is_known(&self, txid: &str) -> bool {
        self.committed.contains(txid) || self.pool.contains_key(txid)
    }

    fn on_message(&mut self, from: u32, msg: ConsensusMessage, kind: Kind) {
        match kind {
            Kind::PrePrepare(pp) => self.on_pre_prepare(from, msg, pp),
            Kind::Prepare(p) => {
                self.hint_height(from, p.seq);
                if !self.vote_in_window(from, p.view, p.seq) {
                    return;
                }
                let slot = self.votes.entry((p.view, p.seq)).or_default();
                match slot.prepares.entry(from) {
                    Entry::Vacant(e) => {
                        e.insert((p.digest, msg));
                        self.check_quorums();
                    }
                    Entry::Occupied(e) => {
                        if e.get().0 != p.digest {
                            tracing::warn!(
                                from,
                                view = p.view,
                                seq = p.seq,
                                "second prepare with another digest: dropped"
                            );
                        }
                    }
                }
            }
            Kind::Commit(c) => {
                self.hint_height(from, c.seq);
                let Some(sig) = c.block_signature else {
                    return;
                };
                if !self.vote_in_window(from, c.view, c.seq) {
                    return;
                }
                let slot = self.votes.entry((c.view, c.seq)).or_default();
                match slot.commits.entry(from) {
                    Entry::Vacant(e) => {
                        e.insert(CommitVote::Unchecked(c.digest, sig));
                        self.check_quorums();
                    }
                    Entry::Occupied(e) => {
                        if e.get().digest() != c.digest.as_slice() {
                            tracing::warn!(
                                from,
                                view = c.view,
                                seq = c.seq,
                                "second commit with another digest: dropped"
                            );
                        }
                    }
                }
            }
            Kind::Heartbeat(h) => {
                if h.view == self.durable.view && from == self.leader() {
                    self.last_leader_activity = self.now;
                } else if h.view < self.durable.view {
                    // A leader that missed our NewView. It never suspects itself, so it never
                    // sends the view change we would otherwise answer with the proof: it would
                    // lead its old view forever, holding requests nobody else has.
                    self.relay_new_view(from);
                }
                self.hint_height(from, h.seq);
            }
            Kind::Forward(f) => {
                // Forwards take the same bounded path as client requests: a consenter, faulty
                // or not, cannot make us hold more than the bound either. Those dropped for
                // lack of room come back when their holder re-forwards them.
                let mut dropped = 0usize;
                for env in f.envelopes {
                    if self.add_request(env, false) == Err(RequestError::Overloaded) {
                        dropped = dropped.saturating_add(1);
                    }
                }
                if dropped > 0 {
                    tracing::debug!(
                        from,
                        dropped,
                        "request pool full: forwarded requests dropped"
                    );
                }
            }
            Kind::ViewChange(vc) => self.on_view_change(from, msg, vc),
            Kind::NewView(nv) => self.on_new_view(msg, nv),
            Kind::StateRequest(r) => {
                // Serving reads blocks from the store on the event loop: one consenter gets at most
                // one answer per STATE_SERVE_INTERVAL_TICKS, however fast it asks.
                let due = self
                    .last_served
                    .get(&from)
                    .is_none_or(|t| self.now.saturating_sub(*t) >= STATE_SERVE_INTERVAL_TICKS);
                if r.from_seq < self.height && due {
                    self.last_served.insert(from, self.now);
                    self.out.push(Output::ServeState {
                        to: from,
                        from_seq: r.from_seq,
                        until: u64::MAX,
                    });
                }
            }
            Kind::StateResponse(r) => self.on_state(r.blocks),
        }
    }

    /// Whether a vote for (view, seq) is near enough to our view and height to be kept: votes
    /// for decided heights are useless, and ones far ahead would let a faulty consenter make us
    /// store without bound.
    fn vote_in_window(&self, from: u32, view: u64, seq: u64) -> bool {
        if seq < self.height {
            return false;
        }
        let v = self.durable.view;
        let near = seq <= self.height.saturating_add(VOTE_SEQ_WINDOW)
            && view.saturating_add(VOTE_VIEW_WINDOW) >= v
            && view <= v.saturating_add(VOTE_VIEW_WINDOW);
        if !near {
            tracing::debug!(
                from,
                view,
                seq,
                our_view = v,
                height = self.height,
                "vote outside the window: dropped"
            );
        }
        near
    }

    /// Evidence that `from` is ahead: ask it for blocks; or behind: send it ours (rate-limited).
    /// A block decided by few correct replicas must reach the others even if nobody asks.
    fn hint_height(&mut self, from: u32, seq: u64) {
        if seq < self.height {
            let last = self.last_help.get(&from).copied().unwrap_or(0);
            if self.now == 0 || self.now.saturating_sub(last) >= 5 {
                self.last_help.insert(from, self.now);
                let until = if self.cfg.consenters.contains(&from) {
                    u64::MAX
                } else {
                    self.cfg.consenters_since
                };
                self.out.push(Output::ServeState {
                    to: from,
                    from_seq: seq,
                    until,
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

    /// Checks a proposed block as a whole: it must be exactly what an honest leader builds
    /// (`new_block`: header chaining at our height, data, empty metadata slots), within the
    /// batch limits, with valid transactions not ordered before. Metadata is checked too because
    /// the digest replicas vote on covers only the header: whatever metadata the leader sent is
    /// what we would finalize and store.
    fn validate_block(&self, block: &Block) -> Result<(), InvalidBlock> {
        let h = block.header.as_ref().ok_or(InvalidBlock::NoHeader)?;
        if h.number != self.height {
            return Err(InvalidBlock::Number {
                got: h.number,
                want: self.height,
            });
        }
        if h.previous_hash != self.last_hash {
            return Err(InvalidBlock::Chain);
        }
        let md = block.metadata.as_ref().ok_or(InvalidBlock::NoMetadata)?;
        if md.metadata.len() != BLOCK_METADATA_SLOTS {
            return Err(InvalidBlock::MetadataSlots {
                got: md.metadata.len(),
                want: BLOCK_METADATA_SLOTS,
            });
        }
        let data = block.data.as_ref().ok_or(InvalidBlock::NoData)?;
        let max = self.cfg.batch.max_message_count;
        if data.data.is_empty() || data.data.len() > max {
            return Err(InvalidBlock::TransactionCount {
                got: data.data.len(),
                max,
            });
        }
        // AbsoluteMaxBytes bounds what the block carries: transactions and metadata together.
        let max = self.cfg.batch.absolute_max_bytes;
        let size = data
            .data
            .iter()
            .chain(&md.metadata)
            .try_fold(0usize, |total, b| total.checked_add(b.len()));
        if size.is_none_or(|s| s > max) {
            return Err(InvalidBlock::TooLarge { max });
        }
        if let Some(slot) = md.metadata.iter().position(|m| !m.is_empty()) {
            return Err(InvalidBlock::MetadataFilled(slot));
        }
        if block_data_hash(data).as_slice() != h.data_hash.as_slice() {
            return Err(InvalidBlock::DataHash);
        }
        if data.data.len() > 1 && data.data.iter().any(|e| self.crypto.is_config_request(e)) {
            return Err(InvalidBlock::ConfigNotAlone);
        }
        let mut seen = HashSet::new();
        for env in &data.data {
            // A request already in our pool with the same bytes was checked when it arrived.
            let pooled =
                txid_of(env).filter(|t| self.pool.get(t).is_some_and(|e| e.envelope == *env));
            let txid = match pooled {
                Some(t) => t,
                None => self
                    .crypto
                    .check_request(env)
                    .map_err(InvalidBlock::Request)?,
            };
            if self.committed.contains(&txid) || !seen.insert(txid.clone()) {
                return Err(InvalidBlock::Duplicate(txid));
            }
        }
        Ok(())
    }

    fn on_pre_prepare(&mut self, from: u32, msg: ConsensusMessage, pp: PrePrepare) {
        if pp.view < self.durable.view {
            // Proposing in a view we left: the sender missed the NewView (see Heartbeat).
            self.relay_new_view(from);
        }
        if pp.seq > self.height {
            let next = pp.seq == self.height.saturating_add(1)
                && pp.view == self.durable.view
                && from == self.leader()
                && self.in_view_change.is_none()
                && self.proposal.is_some();
            if next {
                self.early_pre_prepare = Some((from, msg, pp));
            } else {
                self.hint_height(from, pp.seq);
            }
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
                self.start_view_change(self.durable.view.saturating_add(1));
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
            Some(r) if r != d => Some(InvalidBlock::NotRequired),
            _ => self.validate_block(&block).err(),
        };
        if let Some(why) = invalid {
            tracing::warn!(leader = from, seq = pp.seq, %why, "invalid proposal: changing view");
            self.start_view_change(self.durable.view.saturating_add(1));
            return;
        }
        if self.voted_other(pp.view, pp.seq, &d) {
            return;
        }
        self.accept(pp.view, block, msg);
    }

    /// Whether we voted for another block than `d` at (view, seq): a replica that votes twice
    /// in one slot (after a restart, say) is an equivocating one.
    fn voted_other(&self, view: u64, seq: u64, d: &[u8]) -> bool {
        self.durable
            .voted
            .as_ref()
            .is_some_and(|(v, s, vd)| *v == view && *s == seq && vd.as_slice() != d)
    }

    fn accept(&mut self, view: u64, block: Block, pre_prepare: ConsensusMessage) {
        let seq = self.height;
        let d = digest(&block);
        if self.voted_other(view, seq, &d) {
            tracing::error!(view, seq, "refusing to vote twice in one slot");
            return;
        }
        self.durable.voted = Some((view, seq, d.clone()));
        let last_config = self.config_index_of(&block, seq);
        self.wal(WalOp::Accepted {
            view,
            seq,
            digest: d.clone(),
            pre_prepare: pre_prepare.clone(),
        });
        self.proposal = Some(Proposal {
            view,
            block,
            digest: d.clone(),
            value: block_value(view, seq, last_config),
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

    /// Replaces the prepared certificate, writing it ahead: the view change it may have to go
    /// into can come after a restart.
    fn set_prepared_cert(&mut self, cert: Option<(u64, PreparedCertificate)>) {
        self.wal(WalOp::Prepared(cert.as_ref().map(|(_, c)| c.clone())));
        self.prepared_cert = cert;
    }

    fn check_quorums(&mut self) {
        let q = self.cfg.quorum();
        let seq = self.height;
        let Some(p) = &self.proposal else { return };
        let (view, d, sent_commit) = (p.view, p.digest.clone(), p.sent_commit);
        let Some(votes) = self.votes.get(&(view, seq)) else {
            return;
        };
        let prepared = votes.prepares.values().filter(|(pd, _)| *pd == d).count() >= q;
        if prepared && self.prepared_cert.as_ref().is_none_or(|(v, _)| *v < view) {
            let cert = self.prepared_certificate().map(|c| (view, c));
            self.set_prepared_cert(cert);
        }
        // Once we asked for a view change, our ViewChange told the others what we had prepared:
        // a Commit for the old view now could complete a quorum in it that the NewView, built
        // from view changes like ours, does not know of, and the next leader could decide
        // another block at this height. Commits that arrive still decide (try_finalize).
        if prepared
            && !sent_commit
            && self.in_view_change.is_none()
            && view == self.durable.view
            && self.durable.view_change <= view
            && let Some(p) = &self.proposal
        {
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
                    .insert(self.cfg.self_id, CommitVote::Valid(d.clone(), sig));
            }
        }
        self.try_finalize();
    }

    fn try_finalize(&mut self) {
        let q = self.cfg.quorum();
        let seq = self.height;
        let Some(p) = &self.proposal else { return };
        // Only commits of the proposal's view count (they signed its value, which names the
        // view). Each signature is checked once: the digest fixes the signed header.
        let view = p.view;
        let mut valid: BTreeMap<u32, MetadataSignature> = BTreeMap::new();
        if let Some(votes) = self.votes.get_mut(&(view, seq)) {
            for (from, vote) in votes.commits.iter_mut() {
                if valid.contains_key(from) || vote.digest() != p.digest.as_slice() {
                    continue;
                }
                if matches!(vote, CommitVote::Unchecked(..)) {
                    let old = std::mem::replace(vote, CommitVote::Rejected(Vec::new()));
                    if let CommitVote::Unchecked(d, sig) = old {
                        *vote = if self
                            .crypto
                            .verify_block_signature(*from, &p.block, &p.value, &sig)
                        {
                            CommitVote::Valid(d, sig)
                        } else {
                            tracing::warn!(
                                from,
                                seq,
                                "commit with an invalid block signature: dropped"
                            );
                            CommitVote::Rejected(d)
                        };
                    }
                }
                if let CommitVote::Valid(_, sig) = vote {
                    valid.insert(*from, sig.clone());
                }
            }
        }
        if valid.len() < q {
            return;
        }
        let last_config = self.config_index_of(&p.block, seq);
        match seal_block(
            p.block.clone(),
            p.value.clone(),
            valid.into_values().collect(),
            last_config,
        ) {
            Ok(block) => self.commit(block),
            Err(why) => {
                // Only a block no correct replica validated can get here (a leader's own
                // re-proposal): refuse it like an invalid proposal, without its certificate.
                tracing::error!(seq, view, %why, "prepared block cannot be finalized: changing view");
                self.proposal = None;
                self.set_prepared_cert(None);
                self.start_view_change(self.durable.view.saturating_add(1));
            }
        }
    }

    fn commit(&mut self, block: Block) {
        let txids = block_txids(&block);
        for t in &txids {
            if let Some(e) = self.pool.remove(t) {
                self.pool_bytes = self.pool_bytes.saturating_sub(e.envelope.len());
            }
        }
        self.committed.record(self.height, txids.clone());
        self.pool_order.retain(|t| self.pool.contains_key(t));
        if self.is_full_block(&block) {
            // The leader is ordering at capacity: waiting is explained by load, not censorship,
            // within each request's allowance.
            let now = self.now;
            for e in self.pool.values_mut() {
                if e.full_blocks_allowed > 0 {
                    e.full_blocks_allowed -= 1;
                    e.arrived = now;
                }
            }
        }
        let d = digest(&block);
        self.committed_cert = self
            .prepared_cert
            .take()
            .map(|(_, c)| c)
            .filter(|c| cert_slot(c).is_some_and(|(_, _, cd)| cd == d));
        let seq = self.height;
        let mut consenters_changed = false;
        let config_block = self.is_config_block(&block);
        if config_block {
            self.last_config = seq;
            // The next block is cut and validated, and the timeouts run, under the new
            // configuration.
            if let Some(applied) = self.crypto.apply_config_block(&block) {
                let before = self.cfg.consenters.clone();
                self.cfg.apply(&applied.settings);
                consenters_changed = applied.consenters_changed;
                if consenters_changed {
                    self.cfg.former = before
                        .into_iter()
                        .filter(|c| !self.cfg.consenters.contains(c))
                        .collect();
                    self.cfg.consenters_since = seq.saturating_add(1);
                }
            }
            self.prune_pool();
        }
        self.height += 1;
        self.last_hash = d;
        self.proposal = None;
        let h = self.height;
        self.votes.retain(|(_, s), _| *s >= h);
        self.last_leader_activity = self.now;
        self.out.push(Output::Commit(block));
        self.wal(WalOp::Done(txids));
        // Before any proposal for the next sequence, which the store must keep.
        self.wal(WalOp::Decided(seq));
        if consenters_changed {
            self.on_consenters_changed(seq);
        }
        self.maybe_propose();
        // A configuration block may change who may propose or how messages are checked: an early
        // proposal checked before it is dropped (the leader retransmits).
        if let Some((from, msg, pp)) = self.early_pre_prepare.take()
            && pp.seq == self.height
            && !config_block
        {
            self.on_pre_prepare(from, msg, pp);
        }
    }

    /// The configuration block `seq`, just committed, changed the consenters. Nothing after it
    /// was voted on under the old set (a replica votes at a height only once it committed the
    /// one before), so what the old set said about later heights is dropped, and a view change
    /// under the new set follows: the NewView that installed our view is signed by the old
    /// set, which a consenter added now could not check, and its leader may be gone. A replica
    /// no longer in the set stops ordering.
    fn on_consenters_changed(&mut self, seq: u64) {
        let members = self.cfg.consenters.clone();
        let member = |s: &u32| members.contains(s);
        let former = self.cfg.former.clone();
        // Votes for later heights stored before this block committed were checked under the
        // old set's keys; nobody correct cast them under the new one. Retransmission brings the
        // real ones.
        self.votes.clear();
        self.view_changes.clear();
        self.refused_view_changes.clear();
        self.views_asked.clear();
        self.view_certs.clear();
        // The certificate of the block just committed names the old set's leader and voters,
        // which the new set cannot check; it protects nothing now: whoever acts under the new
        // set has committed that block. The same for the NewView of our view: it proves nothing
        // to the new set, and its absence tells that we installed no view under the new set.
        self.committed_cert = None;
        self.new_view_msg = None;
        self.set_prepared_cert(None);
        self.last_help
            .retain(|s, _| member(s) || former.contains(s));
        self.last_served.retain(|s, _| member(s));
        self.last_relay.retain(|s, _| member(s));
        if !self.cfg.is_member() {
            tracing::warn!(
                consenter = self.cfg.self_id,
                block = seq,
                "this orderer is no longer a consenter of the channel: it stops ordering"
            );
            self.proposal = None;
            self.in_view_change = None;
            let dropped: Vec<String> = std::mem::take(&mut self.pool).into_keys().collect();
            self.pool_order.clear();
            self.pool_bytes = 0;
            if !dropped.is_empty() {
                self.wal(WalOp::Done(dropped));
            }
            return;
        }
        tracing::info!(
            consenter = self.cfg.self_id,
            block = seq,
            consenters = ?self.cfg.consenters,
            "the consenter set changed: changing view under the new set"
        );
        // A replica that just joined may be many views behind the consenters: it starts where
        // f+1 of them (so at least one correct one) showed they are, or a view change it alone
        // wants would be dropped as too far off by the others.
        let shown = self
            .f_plus_one_highest(
                self.views_seen
                    .iter()
                    .filter(|(s, _)| member(s))
                    .map(|(_, v)| *v),
            )
            .unwrap_or(0);
        self.views_seen.clear();
        // A view change this replica sent under the old set bound it never to act in a lower
        // view, because that view change could complete a NewView. It no longer can: view
        // changes name their set, and the new one counts only its own. So every
        // replica starts again from the view it installed, and they agree on the next one; a
        // replica that alone had climbed high while cut off would otherwise refuse the others'
        // lower NewView, and with one consenter down the new set would stall.
        self.in_view_change = None;
        self.durable.view_change = self.durable.view;
        let target = self.durable.view.saturating_add(1).max(shown);
        self.start_view_change(target);
    }

    /// Whether a block carries a CONFIG transaction (alone, as validation requires).
    fn is_config_block(&self, block: &Block) -> bool {
        block
            .data
            .as_ref()
            .is_some_and(|d| d.data.len() == 1 && self.crypto.is_config_request(&d.data[0]))
    }

    /// The LAST_CONFIG index block `seq` carries: its own number for a configuration block.
    fn config_index_of(&self, block: &Block, seq: u64) -> u64 {
        if self.is_config_block(block) {
            seq
        } else {
            self.last_config
        }
    }

    /// Drops pooled requests the configuration now in force refuses (a revoked creator, a
    /// configuration update made stale by the one just committed): proposing them would only
    /// have the proposal refused.
    fn prune_pool(&mut self) {
        let refused: Vec<String> = self
            .pool
            .iter()
            .filter(|(_, e)| self.crypto.check_request(&e.envelope).is_err())
            .map(|(t, _)| t.clone())
            .collect();
        if refused.is_empty() {
            return;
        }
        tracing::info!(
            dropped = refused.len(),
            "requests refused by the new configuration left the pool"
        );
        for t in &refused {
            if let Some(e) = self.pool.remove(t) {
                self.pool_bytes = self.pool_bytes.saturating_sub(e.envelope.len());
            }
        }
        self.pool_order.retain(|t| self.pool.contains_key(t));
        self.wal(WalOp::Done(refused));
    }

    /// Whether a block is as full as the leader cuts them: at the transaction count limit, or
    /// past half the preferred size (a batch cut by size ends within one request of it, and a
    /// request rarely exceeds half of it). Only a hint: `overload_allowance` bounds what a
    /// leader gains by sending blocks that look full.
    fn is_full_block(&self, block: &Block) -> bool {
        let Some(data) = block.data.as_ref() else {
            return false;
        };
        let bytes = data
            .data
            .iter()
            .fold(0usize, |total, e| total.saturating_add(e.len()));
        data.data.len() >= self.cfg.batch.max_message_count
            || bytes > self.cfg.batch.preferred_max_bytes / 2
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
            if self.voted_other(self.durable.view, seq, &digest(&required)) {
                return;
            }
            let msg = self.broadcast(Kind::PrePrepare(PrePrepare {
                view: self.durable.view,
                seq,
                block: Some(required.clone()),
            }));
            self.accept(self.durable.view, required, msg);
            return;
        }
        // Adaptive batching: nothing is in flight (checked above), so waiting for the batch
        // timeout would only add latency; requests batch up while a block is in flight, and the
        // next block takes them all as soon as that one is decided. The batch timeout then only
        // bounds a request's wait, which one consensus round already does.
        if self.pool_order.is_empty() {
            return;
        }
        let mut batch = Vec::new();
        let mut bytes = 0;
        for txid in &self.pool_order {
            let Some(e) = self.pool.get(txid) else {
                continue;
            };
            if e.config {
                // A CONFIG transaction goes in a block of its own.
                if batch.is_empty() {
                    batch.push(e.envelope.clone());
                }
                break;
            }
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
        if self.voted_other(self.durable.view, seq, &digest(&block)) {
            // Our proposal for this slot was lost (a restart without it): proposing another
            // would equivocate. The followers' timeout moves us on to the next view.
            return;
        }
        let msg = self.broadcast(Kind::PrePrepare(PrePrepare {
            view: self.durable.view,
            seq,
            block: Some(block.clone()),
        }));
        self.accept(self.durable.view, block, msg);
    }

    fn on_tick(&mut self) {
        if !self.cfg.is_member() {
            return;
        }
        let now = self.now;
        if let Some(target) = self.in_view_change {
            if now - self.view_change_started >= self.cfg.view_change_timeout_ticks {
                // As PBFT: the next view only once a quorum wanted this one and its leader still
                // sent no NewView. A replica cut off from the others thus asks for one view more
                // than theirs, not one more per timeout, and meets them at their next view
                // change instead of waiting until they climb to wherever it got alone.
                let wanted = self.view_changes.get(&target).map_or(0, BTreeMap::len);
                if wanted >= self.cfg.quorum() {
                    self.start_view_change(target.saturating_add(1));
                } else {
                    self.view_change_started = now;
                }
            } else if now.saturating_sub(self.last_retransmit) >= self.cfg.retransmit_ticks {
                self.last_retransmit = now;
                // Every view change of ours still held, not only the newest: replicas that
                // are still changing to a lower view need ours for it to reach a quorum.
                let own: Vec<ConsensusMessage> = self
                    .view_changes
                    .values()
                    .filter_map(|m| m.get(&self.cfg.self_id).map(|(_, msg)| msg.clone()))
                    .collect();
                for msg in own {
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
                self.start_view_change(self.durable.view.saturating_add(1));
                return;
            }
            if let Some(p) = &self.proposal
                && now - p.accepted_at >= self.cfg.leader_timeout_ticks
            {
                self.start_view_change(self.durable.view.saturating_add(1));
                return;
            }
            let timeout = self.cfg.request_timeout_ticks;
            if self
                .pool
                .values()
                .any(|e| now.saturating_sub(e.arrived) >= timeout)
            {
                // A request we hold was not ordered in time: the leader censors or stalls.
                self.start_view_change(self.durable.view.saturating_add(1));
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

    /// How long a pooled request waits before it is forwarded again.
    fn reforward_interval(&self) -> u64 {
        (self.cfg.request_timeout_ticks / 3).max(1)
    }

    /// Re-sends requests that have waited a while, to the leader or (during a view change) to all.
    fn reforward_stale(&mut self, to: Option<u32>) {
        let now = self.now;
        let every = self.reforward_interval();
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
            if let Some(CommitVote::Valid(d, sig)) = v.commits.get(&self.cfg.self_id) {
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

    /// Our proposal's prepared certificate, if 2f+1 prepares for it are in.
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
        tracing::info!(
            consenter = self.cfg.self_id,
            view = self.durable.view,
            target,
            height = self.height,
            "asking for a view change"
        );
        self.in_view_change = Some(target);
        if target > self.durable.view_change {
            self.wal(WalOp::ViewChange(target));
            self.durable.view_change = target;
        }
        self.view_change_started = self.now;
        self.last_retransmit = self.now;
        // View changes for views well below the one we now want can no longer matter to us.
        self.view_changes
            .retain(|v, _| v.saturating_add(VIEW_CHANGE_WINDOW) >= target);
        self.refused_view_changes
            .retain(|(v, _)| v.saturating_add(VIEW_CHANGE_WINDOW) >= target);
        self.send_view_change(target, None);
        self.check_view_change_quorum(target);
    }

    /// Signs, stores and sends (to `to`, or to all) our view change for `view`: what we
    /// prepared and committed now. Sent for a view below our target too (to replicas still
    /// changing to it): we have not voted since we began changing view, so it is as true as
    /// the one for our target, and we still never act in a view below that target.
    fn send_view_change(&mut self, view: u64, to: Option<u32>) {
        let (vc, msg) = self.view_change_for(view);
        self.out.push(Output::Send {
            to,
            msg: msg.clone(),
        });
        self.view_changes
            .entry(view)
            .or_default()
            .insert(self.cfg.self_id, (vc, msg));
    }

    /// Our signed view change for `view`: what we prepared and committed now.
    fn view_change_for(&self, view: u64) -> (ViewChange, ConsensusMessage) {
        let vc = ViewChange {
            next_view: view,
            consenters_since: self.cfg.consenters_since,
            last_committed_seq: self.height,
            prepared: self
                .prepared_cert
                .as_ref()
                .map(|(_, c)| c.clone())
                .or_else(|| self.committed_cert.clone()),
        };
        let msg = self.message(Kind::ViewChange(vc.clone()));
        (vc, msg)
    }

    /// Whether we may give a view change of ours for any view below our target: we are changing
    /// view under a consenter set in which we have installed no view (`new_view_msg` is none),
    /// so we cast no vote in it. Replicas start a new set's view change from the view each
    /// installed (a newcomer from the views it saw), which can differ widely.
    fn may_answer_any_view(&self) -> bool {
        self.new_view_msg.is_none()
            && self.cfg.consenters_since > 0
            && self.in_view_change.is_some()
    }

    /// Gives `to`, changing to a view far below ours (at or below the one we installed under
    /// the previous consenter set, or below our window), our view change for it, not stored
    /// (`relay_due` limits the rate). Without it those behind would lack a quorum there while
    /// we drop their view changes. True and safe when `may_answer_any_view`: we cast no vote
    /// under this set, and never act in a view below the one we are changing to.
    fn answer_with_view_change(&mut self, to: u32, view: u64) {
        if !self.relay_due(to, view) {
            return;
        }
        let (_, msg) = self.view_change_for(view);
        self.out.push(Output::Send { to: Some(to), msg });
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

    /// Sends `to`, which showed it is still in a view before ours, the NewView that installed
    /// ours (rate-limited per consenter). It carries its own proof, so one relay suffices.
    /// Also while we change to a later view: a replica still changing to ours may need it to
    /// get there, our view change for it being gone (installing clears them).
    fn relay_new_view(&mut self, to: u32) {
        let Some(nv) = self.new_view_msg.clone() else {
            return;
        };
        let view = self.durable.view;
        if self.relay_due(to, view) {
            self.out.push(Output::Send {
                to: Some(to),
                msg: nv,
            });
        }
    }

    /// Whether `to` may be helped into `view` (with a NewView or a view change of ours): at
    /// most once per `RELAY_INTERVAL_TICKS` per consenter, unless it now asks about a higher
    /// view (it moved on, and help for the old view would not serve it), which passes at most
    /// once per tick: replaying old signed view changes alternately buys no signature of ours
    /// per message. Records the help.
    fn relay_due(&mut self, to: u32, view: u64) -> bool {
        let now = self.now;
        if let Some(&(last_view, last)) = self.last_relay.get(&to) {
            let moved_on = view > last_view && now > last;
            if !moved_on && now.saturating_sub(last) < RELAY_INTERVAL_TICKS {
                return false;
            }
        }
        self.last_relay.insert(to, (view, now));
        true
    }

    fn on_view_change(&mut self, from: u32, msg: ConsensusMessage, vc: ViewChange) {
        self.hint_height(from, vc.last_committed_seq);
        if vc.consenters_since != self.cfg.consenters_since {
            // Asked under another consenter set. One from the set before ours: its sender has
            // voted under ours since (see `on_consenters_changed`). One from a later set (we
            // lag): it carries no certificate for the block that changed the set, which we may
            // not have committed; counted here, it could let a NewView replace that block.
            tracing::debug!(
                from,
                view = vc.next_view,
                set = vc.consenters_since,
                "view change of another consenter set: ignored"
            );
            return;
        }
        if vc.next_view <= self.durable.view {
            if self.may_answer_any_view() {
                self.answer_with_view_change(from, vc.next_view);
            } else {
                self.relay_new_view(from);
            }
            return;
        }
        if vc.next_view > MAX_VIEW {
            tracing::warn!(
                from,
                view = vc.next_view,
                "view change to a view no channel reaches: dropped"
            );
            return;
        }
        self.note_view_asked(from, vc.next_view);
        let horizon = self.in_view_change.unwrap_or(self.durable.view);
        if vc.next_view > horizon.saturating_add(VIEW_CHANGE_WINDOW) {
            tracing::debug!(
                from,
                view = vc.next_view,
                horizon,
                "view change too far ahead: not stored"
            );
            return;
        }
        if self
            .in_view_change
            .is_some_and(|t| vc.next_view.saturating_add(VIEW_CHANGE_WINDOW) < t)
        {
            // Too far below our target to matter to us, and stored it would let a faulty
            // consenter grow what we hold past `held_bound`.
            if self.may_answer_any_view() {
                self.answer_with_view_change(from, vc.next_view);
            }
            return;
        }
        match self
            .view_changes
            .get(&vc.next_view)
            .and_then(|m| m.get(&from))
        {
            // A retransmission: nothing to store, but look again (a new leader may be waiting
            // to catch up, or to join).
            Some((_, stored)) if *stored == msg => {}
            Some(_) => {
                tracing::warn!(
                    from,
                    view = vc.next_view,
                    "second, different view change for one view: dropped"
                );
                return;
            }
            None => {
                if self.refused_view_changes.contains(&(vc.next_view, from)) {
                    return;
                }
                if vc
                    .prepared
                    .as_ref()
                    .is_some_and(|c| !self.valid_certificate(c))
                {
                    tracing::warn!(
                        from,
                        view = vc.next_view,
                        "view change with an invalid certificate: dropped"
                    );
                    self.refused_view_changes.insert((vc.next_view, from));
                    return;
                }
                self.view_changes
                    .entry(vc.next_view)
                    .or_default()
                    .insert(from, (vc.clone(), msg));
            }
        }
        // A replica still changing to a view below ours needs our view change for it (after a
        // restart we may no longer hold the one we sent): its quorum there lets it move on up.
        // Only within the window below our target: one farther behind joins ours instead
        // (`note_view_asked`), and what we hold stays within `held_bound`.
        if self.in_view_change.is_some_and(|t| {
            vc.next_view < t && vc.next_view.saturating_add(VIEW_CHANGE_WINDOW) >= t
        }) && self
            .view_changes
            .get(&vc.next_view)
            .is_none_or(|m| !m.contains_key(&self.cfg.self_id))
        {
            self.send_view_change(vc.next_view, Some(from));
        }
        self.check_view_change_quorum(vc.next_view);
    }

    /// Records the highest view another consenter of our set asked for, and joins the highest
    /// view f+1 of them (so at least one correct one) ask for at least, when it is above the
    /// view we are in or changing to. Our own view change does not count: a replica changing to
    /// a lower view must still meet the others (before, it counted itself and never moved up).
    /// Views asked beyond `VIEW_CHANGE_WINDOW` count too, though their view changes are not
    /// stored: a replica whose view fell far behind (cut off while the others changed view many
    /// times) would otherwise never meet them, each side climbing one view per timeout and
    /// dropping the other's view changes as out of range.
    fn note_view_asked(&mut self, from: u32, view: u64) {
        if from == self.cfg.self_id || !self.cfg.consenters.contains(&from) {
            return;
        }
        let asked = self.views_asked.entry(from).or_default();
        *asked = (*asked).max(view);
        if let Some(target) = self.f_plus_one_highest(self.views_asked.values().copied())
            && self.in_view_change.unwrap_or(self.durable.view) < target
        {
            self.start_view_change(target);
        }
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
        let certs: Vec<PreparedCertificate> = vcs
            .values()
            .filter_map(|(vc, _)| vc.prepared.clone())
            .collect();
        let decided = self.backed_height(vcs.values().map(|(vc, _)| vc.last_committed_seq), &certs);
        if decided > self.height {
            // Correct replicas committed more than we did: catch up before leading. Ask one
            // that claims to have the blocks, another on each try (one of them may lie).
            let others = || vcs.iter().filter(|(s, _)| **s != self.cfg.self_id);
            let mut holders: Vec<u32> = others()
                .filter(|(_, (vc, _))| vc.last_committed_seq >= decided)
                .map(|(s, _)| *s)
                .collect();
            if holders.is_empty() {
                holders = others().map(|(s, _)| *s).collect();
            }
            let pick = usize::try_from(self.now % holders.len().max(1) as u64).unwrap_or(0);
            if let Some(&s) = holders.get(pick) {
                self.last_state_request = 0;
                self.hint_height(s, self.height.saturating_add(1));
            }
            return;
        }
        let msgs: Vec<ConsensusMessage> = vcs.values().map(|(_, m)| m.clone()).collect();
        self.new_view_sent.insert(v);
        let nv = self.broadcast(Kind::NewView(NewView {
            view: v,
            view_changes: msgs,
        }));
        self.install_view(v, certs, decided, nv);
    }

    /// A height some correct replica among a quorum of view changes has reached: the (f+1)-th
    /// highest claimed height (at most f claims are lies, so one correct replica claims at least
    /// that), raised to the highest prepared certificate's sequence (2f+1 replicas, so f+1
    /// correct ones, prepared there, which they do only at that height). One replica's claim
    /// alone counts for nothing: a liar must not make the new leader wait for blocks that do not
    /// exist. A block only a few replicas committed is still protected: their view changes
    /// carry its certificate (`committed_cert`), which the new leader must re-propose.
    /// The (f+1)-th highest of values claimed one per consenter: at most f are lies, so some
    /// correct consenter claims at least this much. None with f or fewer values.
    fn f_plus_one_highest(&self, values: impl Iterator<Item = u64>) -> Option<u64> {
        let mut values: Vec<u64> = values.collect();
        values.sort_unstable_by(|a, b| b.cmp(a));
        values.get(self.cfg.f()).copied()
    }

    fn backed_height(
        &self,
        claims: impl Iterator<Item = u64>,
        certs: &[PreparedCertificate],
    ) -> u64 {
        let by_claims = self.f_plus_one_highest(claims).unwrap_or(0);
        let by_certs = certs
            .iter()
            .filter_map(cert_slot)
            .map(|(_, seq, _)| seq)
            .max()
            .unwrap_or(0);
        by_claims.max(by_certs)
    }

    fn on_new_view(&mut self, msg: ConsensusMessage, nv: NewView) {
        // Never a view below one we asked to change to: our ViewChange for that view told the
        // others what we had prepared, and its NewView may be built on it; voting in a lower
        // view afterwards could complete a quorum there that the higher view does not know of.
        if nv.view < self.durable.view
            || nv.view < self.durable.view_change
            || (nv.view == self.durable.view && self.in_view_change.is_none())
        {
            return;
        }
        let Some((certs, decided)) = self.new_view_proof(&msg, &nv) else {
            return;
        };
        let from = msg.sender;
        self.install_view(nv.view, certs, decided, msg);
        self.hint_height(from, decided);
    }

    /// What a NewView proves, if it proves anything: signed by the leader of its view, with a
    /// quorum of view changes for that view whose certificates are all valid. Returns those
    /// certificates and the height the view changes show decided.
    fn new_view_proof(
        &self,
        msg: &ConsensusMessage,
        nv: &NewView,
    ) -> Option<(Vec<PreparedCertificate>, u64)> {
        if msg.sender != self.cfg.leader(nv.view) {
            return None;
        }
        // One view change per sender (the first): a sender's second one must not count twice
        // toward the quorum or the claimed heights.
        let mut claims: BTreeMap<u32, u64> = BTreeMap::new();
        let mut certs = Vec::new();
        for m in &nv.view_changes {
            if claims.contains_key(&m.sender) {
                continue;
            }
            if let Some(Kind::ViewChange(vc)) = self.open(m)
                && vc.next_view == nv.view
                && vc.consenters_since == self.cfg.consenters_since
            {
                if let Some(c) = &vc.prepared {
                    if !self.valid_certificate(c) {
                        return None;
                    }
                    certs.push(c.clone());
                }
                claims.insert(m.sender, vc.last_committed_seq);
            }
        }
        if claims.len() < self.cfg.quorum() {
            return None;
        }
        let decided = self.backed_height(claims.into_values(), &certs);
        Some((certs, decided))
    }

    fn install_view(
        &mut self,
        v: u64,
        certs: Vec<PreparedCertificate>,
        decided_up_to: u64,
        proof: ConsensusMessage,
    ) {
        tracing::info!(
            consenter = self.cfg.self_id,
            view = v,
            leader = self.cfg.leader(v),
            height = self.height,
            "view installed"
        );
        self.wal(WalOp::NewView(proof.clone()));
        self.new_view_msg = Some(proof);
        self.durable.view = v;
        self.in_view_change = None;
        // The best certificate for our height may now be one the view change brought.
        let height = self.height;
        let best = certs
            .iter()
            .filter_map(|c| cert_slot(c).map(|(cv, seq, _)| (cv, seq, c)))
            .filter(|(_, seq, _)| *seq == height)
            .max_by_key(|(cv, _, _)| *cv);
        if let Some((cv, _, c)) = best
            && self.prepared_cert.as_ref().is_none_or(|(ov, _)| *ov < cv)
        {
            self.set_prepared_cert(Some((cv, c.clone())));
        }
        self.view_certs = certs;
        self.decided_up_to = decided_up_to;
        self.proposal = None;
        self.last_leader_activity = self.now;
        self.last_heartbeat = 0;
        let now = self.now;
        let every = self.reforward_interval();
        for e in self.pool.values_mut() {
            // Give the new leader a fresh chance with every pending request, and every request
            // at once (the next tick re-forwards them): it may hold none of ours, our forwards
            // having been lost, and we may not wait a whole interval (a configuration block
            // removing us would drop what only we hold, acknowledged).
            e.arrived = now;
            e.forwarded = now.saturating_sub(every);
        }
        // Every stored view change is now stale: those for views up to `v` are served, and one
        // for a later view may predate its sender's own installation of `v` (it would then count
        // toward joining a view change nobody wants). Senders still changing view retransmit.
        self.view_changes.clear();
        self.refused_view_changes.clear();
        self.views_asked.clear();
        // Only views from ours on can still need a NewView from us; one per view we ever led
        // would grow for as long as the channel lives.
        self.new_view_sent.retain(|nv| *nv >= v);
        self.votes
            .retain(|(view, _), _| view.saturating_add(VOTE_VIEW_WINDOW) >= v);
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
        self.apply_state(blocks);
        if let Some(target) = self.in_view_change {
            // A new leader waiting to catch up may now be able to install its view.
            self.check_view_change_quorum(target);
        }
    }

    fn apply_state(&mut self, blocks: Vec<Block>) {
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
            let last_config = self.config_index_of(&block, h.number);
            if block_data_hash(data).as_slice() != h.data_hash.as_slice()
                || !sealed_form(&block, last_config)
            {
                return;
            }
            let Some(md) = block.metadata.as_ref().and_then(|m| m.metadata.first()) else {
                return;
            };
            let Ok(md) = Metadata::decode(md.as_slice()) else {
                return;
            };
            let mut signers = BTreeSet::new();
            // One verification per consenter: a padded or repeated list costs nothing more.
            let mut attempted = BTreeSet::new();
            for sig in &md.signatures {
                if signers.len() >= self.cfg.quorum() {
                    break;
                }
                let Ok(ih) = medledger_proto::common::IdentifierHeader::decode(
                    sig.identifier_header.as_slice(),
                ) else {
                    continue;
                };
                if !self.cfg.consenters.contains(&ih.identifier) || !attempted.insert(ih.identifier)
                {
                    continue;
                }
                if self
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

#[cfg(test)]
#[path = "consensus_tests.rs"]
mod tests;
