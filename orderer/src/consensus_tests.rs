//! Byzantine-input tests of the consensus core: a few replicas with toy (but checked) signatures
//! driven message by message, so each test can play one faulty consenter exactly.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use medledger_common::mutation::MutationRng;
use medledger_common::protoutil::{BLOCK_METADATA_SLOTS, block_header_bytes, new_block};
use medledger_proto::common::{
    Block, BlockMetadata, ChannelHeader, Envelope, Header, HeaderType, IdentifierHeader,
    MetadataSignature, Payload, SignatureHeader,
};
use medledger_proto::medledger::consensus::{
    Body, Commit, ConsensusMessage, NewView, PrePrepare, Prepare, PreparedCertificate, ViewChange,
    body::Kind,
};
use prost::Message;

use super::*;
use crate::faults::{Fault, Mutator, mutate_encoded};

const CHANNEL: &str = "testchannel";
const N: u32 = 4;

/// The index of the test CONFIG transaction (`typed_envelope`) that adds consenter N + 1.
const ADD_FIFTH: usize = 5005;

/// A keyed hash standing in for a signature: cheap, deterministic, and wrong for anyone else's
/// id or other bytes, which is all the core relies on. Counts signature checks.
struct TestCrypto {
    id: u32,
    /// Signers of the block signatures checked, one entry per check.
    block_checks: Mutex<Vec<u32>>,
    msg_checks: AtomicUsize,
    /// Client request checks (`check_request`): the costly ECDSA in production.
    request_checks: AtomicUsize,
}

fn tag(id: u32, msg: &[u8]) -> Vec<u8> {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    msg.hash(&mut h);
    [id.to_be_bytes().as_slice(), &h.finish().to_be_bytes()].concat()
}

fn block_signed_bytes(block: &Block, value: &[u8], ih: &[u8]) -> Option<Vec<u8>> {
    let header = block.header.as_ref()?;
    Some([value, ih, &block_header_bytes(header)].concat())
}

impl Crypto for TestCrypto {
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        tag(self.id, msg)
    }
    fn verify(&self, signer: u32, msg: &[u8], sig: &[u8]) -> bool {
        self.msg_checks.fetch_add(1, Ordering::Relaxed);
        sig == tag(signer, msg).as_slice()
    }
    fn sign_block(&self, block: &Block, value: &[u8]) -> Option<MetadataSignature> {
        let identifier_header = IdentifierHeader {
            identifier: self.id,
            nonce: Vec::new(),
        }
        .encode_to_vec();
        let msg = block_signed_bytes(block, value, &identifier_header)?;
        Some(MetadataSignature {
            signature_header: Vec::new(),
            signature: tag(self.id, &msg),
            identifier_header,
        })
    }
    fn verify_block_signature(
        &self,
        signer: u32,
        block: &Block,
        value: &[u8],
        sig: &MetadataSignature,
    ) -> bool {
        if let Ok(mut c) = self.block_checks.lock() {
            c.push(signer);
        }
        let Ok(ih) = IdentifierHeader::decode(sig.identifier_header.as_slice()) else {
            return false;
        };
        ih.identifier == signer
            && block_signed_bytes(block, value, &sig.identifier_header)
                .is_some_and(|m| sig.signature == tag(signer, &m))
    }
    fn check_request(&self, envelope: &[u8]) -> Result<String, RequestError> {
        self.request_checks.fetch_add(1, Ordering::Relaxed);
        txid_of(envelope).ok_or_else(|| RequestError::Malformed("not an envelope".into()))
    }
    fn is_config_request(&self, envelope: &[u8]) -> bool {
        header_type(envelope) == Some(HeaderType::Config as i32)
    }
    fn apply_config_block(&self, block: &Block) -> Option<AppliedConfig> {
        // The CONFIG transaction `ADD_FIFTH` adds consenter 5; any other changes settings only.
        let adds = block
            .data
            .as_ref()
            .and_then(|d| d.data.first())
            .and_then(|e| txid_of(e))
            .is_some_and(|t| t == format!("tx{ADD_FIFTH}"));
        let mut settings = reconfigured();
        if adds {
            settings.consenters = (1..=N + 1).collect();
        }
        Some(AppliedConfig {
            settings,
            consenters_changed: adds,
        })
    }
}

fn header_type(envelope: &[u8]) -> Option<i32> {
    let env = Envelope::decode(envelope).ok()?;
    let payload = Payload::decode(env.payload.as_slice()).ok()?;
    ChannelHeader::decode(payload.header?.channel_header.as_slice())
        .ok()
        .map(|h| h.r#type)
}

/// What every configuration block of these tests puts in force.
fn reconfigured() -> Settings {
    Settings {
        consenters: (1..=N).collect(),
        batch: BatchConfig {
            max_message_count: 3,
            preferred_max_bytes: 1 << 19,
            absolute_max_bytes: 1 << 20,
        },
        bft: medledger_common::channelconfig::BftSettings {
            leader_timeout: std::time::Duration::from_millis(3000),
            heartbeat_interval: std::time::Duration::from_millis(600),
            request_complain_timeout: std::time::Duration::from_millis(9000),
            view_change_timeout: std::time::Duration::from_millis(5000),
            view_change_resend_interval: std::time::Duration::from_millis(400),
            request_pool_size: 500,
        },
    }
}

fn config(id: u32) -> Config {
    Config {
        channel_id: CHANNEL.into(),
        self_id: id,
        consenters: (1..=N).collect(),
        former: Vec::new(),
        consenters_since: 0,
        tick: std::time::Duration::from_millis(20),
        batch: BatchConfig {
            max_message_count: 10,
            preferred_max_bytes: 1 << 19,
            absolute_max_bytes: 1 << 20,
        },
        heartbeat_ticks: 5,
        leader_timeout_ticks: 40,
        request_timeout_ticks: 90,
        view_change_timeout_ticks: 70,
        retransmit_ticks: 12,
        max_pool_requests: DEFAULT_MAX_POOL_REQUESTS,
        max_pool_bytes: DEFAULT_MAX_POOL_BYTES,
    }
}

/// An unsigned but well-formed transaction envelope (the test crypto accepts any).
fn envelope(i: usize) -> Vec<u8> {
    typed_envelope(i, HeaderType::EndorserTransaction)
}

fn typed_envelope(i: usize, kind: HeaderType) -> Vec<u8> {
    let channel_header = ChannelHeader {
        r#type: kind as i32,
        channel_id: CHANNEL.into(),
        tx_id: format!("tx{i}"),
        ..Default::default()
    }
    .encode_to_vec();
    let payload = Payload {
        header: Some(Header {
            channel_header,
            signature_header: SignatureHeader::default().encode_to_vec(),
        }),
        data: format!("data {i}").into_bytes(),
    }
    .encode_to_vec();
    Envelope {
        payload,
        signature: vec![1],
    }
    .encode_to_vec()
}

fn genesis() -> Block {
    new_block(0, Vec::new(), Vec::new())
}

fn kind_of(msg: &ConsensusMessage) -> Option<Kind> {
    Body::decode(msg.body.as_slice()).ok()?.kind
}

/// What the network (or a faulty sender) does to one message: `None` drops it, otherwise the
/// (possibly rewritten) body is delivered, re-signed by its signer if it changed.
type Filter = Box<dyn FnMut(u32, u32, Kind) -> Option<Kind>>;

struct Cluster {
    cryptos: BTreeMap<u32, Arc<TestCrypto>>,
    replicas: BTreeMap<u32, Replica>,
    chains: BTreeMap<u32, Vec<Block>>,
    /// Each replica's write-ahead state as its store would hold it (for `restart`).
    durables: BTreeMap<u32, Durable>,
    config: Box<dyn Fn(u32) -> Config>,
    queue: VecDeque<(u32, u32, ConsensusMessage)>,
    down: BTreeSet<u32>,
    filter: Option<Filter>,
    /// Every message a replica sent, by sender, before the filter (when a test asks for it).
    sent: Option<Vec<(u32, ConsensusMessage)>>,
}

impl Cluster {
    fn new() -> Self {
        Self::with_config(config)
    }

    fn with_config(config: impl Fn(u32) -> Config + 'static) -> Self {
        let mut c = Self {
            cryptos: BTreeMap::new(),
            replicas: BTreeMap::new(),
            chains: BTreeMap::new(),
            durables: BTreeMap::new(),
            queue: VecDeque::new(),
            down: BTreeSet::new(),
            filter: None,
            sent: None,
            config: Box::new(config),
        };
        for id in 1..=N {
            c.add_replica(id);
        }
        c
    }

    /// Starts replica `id` from genesis (named by the genesis configuration or not).
    fn add_replica(&mut self, id: u32) {
        let crypto = Arc::new(TestCrypto {
            id,
            block_checks: Mutex::new(Vec::new()),
            msg_checks: AtomicUsize::new(0),
            request_checks: AtomicUsize::new(0),
        });
        let g = genesis();
        let r = Replica::new(
            (self.config)(id),
            crypto.clone(),
            Restored {
                durable: Durable::default(),
                height: 1,
                last_hash: digest(&g),
                committed_txids: Default::default(),
                last_config: 0,
            },
        );
        self.cryptos.insert(id, crypto);
        self.replicas.insert(id, r);
        self.chains.insert(id, vec![g]);
        self.durables.insert(id, Durable::default());
    }

    /// Crashes replica `id` and starts it again from what it wrote ahead and its chain, as the
    /// node does from its store. Returns what the new replica wants to send or write at once.
    fn restart(&mut self, id: u32) -> Vec<Output> {
        let chain = &self.chains[&id];
        let mut committed_txids = RecentTxids::default();
        let start = crate::recent::window_start(chain.len() as u64).max(1);
        for (n, b) in chain.iter().enumerate().skip(start as usize) {
            committed_txids.record_block(n as u64, b);
        }
        let last_config = chain
            .iter()
            .rposition(|b| {
                b.data.as_ref().is_some_and(|d| {
                    d.data.len() == 1 && header_type(&d.data[0]) == Some(HeaderType::Config as i32)
                })
            })
            .unwrap_or(0) as u64;
        let restored = Restored {
            durable: self.durables[&id].clone(),
            height: chain.len() as u64,
            last_hash: chain.last().map(digest).unwrap_or_default(),
            committed_txids,
            last_config,
        };
        let r = Replica::new((self.config)(id), self.cryptos[&id].clone(), restored);
        self.replicas.insert(id, r);
        // The first tick hands over what the replica queued while resuming.
        let out = self
            .replicas
            .get_mut(&id)
            .map(Replica::tick)
            .unwrap_or_default();
        let copy = out.clone();
        self.apply(id, out);
        copy
    }

    fn replica(&self, id: u32) -> &Replica {
        &self.replicas[&id]
    }

    fn height(&self, id: u32) -> usize {
        self.chains[&id].len()
    }

    /// A message signed by consenter `sender` (any consenter's key: tests play the faulty ones).
    fn signed(&self, sender: u32, kind: Kind) -> ConsensusMessage {
        let body = Body { kind: Some(kind) }.encode_to_vec();
        ConsensusMessage {
            sender,
            channel_id: CHANNEL.into(),
            signature: tag(sender, &body),
            body,
        }
    }

    /// Leader 1's proposal of block 1 (one envelope) in view 0, delivered to replica `to`.
    fn propose_block_one(&mut self, to: u32) -> Block {
        let block = new_block(1, digest(&genesis()), vec![envelope(1)]);
        let pp = self.signed(
            1,
            Kind::PrePrepare(PrePrepare {
                view: 0,
                seq: 1,
                block: Some(block.clone()),
            }),
        );
        self.deliver(1, to, pp);
        block
    }

    /// `from`'s commit of `block` in `view`, with its block signature.
    fn commit_of(&self, from: u32, view: u64, block: &Block) -> ConsensusMessage {
        let seq = block.header.as_ref().map(|h| h.number).unwrap_or_default();
        self.signed(
            from,
            Kind::Commit(Commit {
                view,
                seq,
                digest: digest(block),
                block_signature: Some(self.block_signature(from, view, block)),
            }),
        )
    }

    fn block_signature(&self, signer: u32, view: u64, block: &Block) -> MetadataSignature {
        let seq = block.header.as_ref().map(|h| h.number).unwrap_or_default();
        self.cryptos[&signer]
            .sign_block(block, &block_value(view, seq, 0))
            .expect("test block has a header")
    }

    fn apply(&mut self, id: u32, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Send { to, msg } => {
                    if let Some(log) = self.sent.as_mut() {
                        log.push((id, msg.clone()));
                    }
                    let ids: Vec<u32> = self.replicas.keys().copied().collect();
                    for t in ids {
                        if t != id && to.is_none_or(|x| x == t) {
                            self.queue.push_back((id, t, msg.clone()));
                        }
                    }
                }
                Output::Commit(block) => {
                    let chain = self.chains.entry(id).or_default();
                    assert_eq!(
                        block.header.as_ref().map(|h| h.number),
                        Some(chain.len() as u64),
                        "replica {id} committed out of order"
                    );
                    chain.push(block);
                }
                Output::Wal(op) => self.durables.entry(id).or_default().apply(&op),
                Output::ServeState {
                    to,
                    from_seq,
                    until,
                } => {
                    let chain = &self.chains[&id];
                    let from = (from_seq as usize).min(chain.len());
                    let end = (from + 20)
                        .min(chain.len())
                        .min(usize::try_from(until).unwrap_or(usize::MAX));
                    let blocks = chain[from..end].to_vec();
                    let msg = self.replicas[&id].state_response_message(blocks);
                    self.queue.push_back((id, to, msg));
                }
            }
        }
    }

    /// Delivers everything in flight, and what that causes, until the network is quiet.
    fn pump(&mut self) {
        let mut budget = 200_000;
        while let Some((from, to, msg)) = self.queue.pop_front() {
            budget -= 1;
            assert!(budget > 0, "message storm");
            if self.down.contains(&from) || self.down.contains(&to) {
                continue;
            }
            let msg = match (self.filter.as_mut(), kind_of(&msg)) {
                (Some(f), Some(kind)) => match f(from, to, kind.clone()) {
                    None => continue,
                    Some(k) if k == kind => msg,
                    Some(k) => {
                        let body = Body { kind: Some(k) }.encode_to_vec();
                        ConsensusMessage {
                            signature: tag(msg.sender, &body),
                            body,
                            ..msg
                        }
                    }
                },
                _ => msg,
            };
            let out = match self.replicas.get_mut(&to) {
                Some(r) => r.receive(from, msg),
                None => continue,
            };
            self.apply(to, out);
        }
    }

    /// Hands `msg` to replica `to` as if `from` sent it, bypassing the filter.
    fn deliver(&mut self, from: u32, to: u32, msg: ConsensusMessage) -> Vec<Output> {
        let out = self
            .replicas
            .get_mut(&to)
            .map(|r| r.receive(from, msg))
            .unwrap_or_default();
        let copy = out.clone();
        self.apply(to, out);
        copy
    }

    fn tick(&mut self) {
        let ids: Vec<u32> = self.replicas.keys().copied().collect();
        for id in ids {
            if self.down.contains(&id) {
                continue;
            }
            let out = match self.replicas.get_mut(&id) {
                Some(r) => r.tick(),
                None => continue,
            };
            self.apply(id, out);
        }
        self.pump();
    }

    fn run_until(&mut self, max_ticks: usize, mut done: impl FnMut(&Cluster) -> bool) -> bool {
        for _ in 0..max_ticks {
            if done(self) {
                return true;
            }
            self.tick();
        }
        done(self)
    }

    fn submit(&mut self, id: u32, env: Vec<u8>) {
        let Some(r) = self.replicas.get_mut(&id) else {
            return;
        };
        let (res, out) = r.submit(env);
        assert!(res.is_ok(), "request refused: {res:?}");
        self.apply(id, out);
        self.pump();
    }
}

fn committed(out: &[Output]) -> bool {
    out.iter().any(|o| matches!(o, Output::Commit(_)))
}

fn stored_votes(r: &Replica) -> usize {
    r.votes
        .values()
        .map(|v| v.prepares.len() + v.commits.len())
        .sum()
}

fn stored_view_changes(r: &Replica) -> usize {
    r.view_changes.values().map(BTreeMap::len).sum()
}

// ----------------------------------------------------------------------------------------------
// Baseline

#[test]
fn honest_block_is_committed_everywhere_with_a_signature_quorum() {
    let mut c = Cluster::new();
    c.submit(1, envelope(1));
    assert!(c.run_until(20, |c| (1..=N).all(|i| c.height(i) == 2)));
    for i in 1..=N {
        let block = &c.chains[&i][1];
        let md = block.metadata.as_ref().expect("metadata");
        assert_eq!(md.metadata.len(), BLOCK_METADATA_SLOTS);
        let sigs = Metadata::decode(md.metadata[0].as_slice()).expect("SIGNATURES");
        assert!(sigs.signatures.len() >= 3, "replica {i}: {sigs:?}");
    }
}

// ----------------------------------------------------------------------------------------------
// Issue 13, bug 1: the leader's whole block is validated, and finalizing never panics.

/// Checks a committed block has the form peers accept: the leader's empty slots, SIGNATURES
/// with a quorum of signatures, LAST_CONFIG, nothing else.
fn assert_well_formed(replica: u32, block: &Block) {
    let md = block
        .metadata
        .as_ref()
        .unwrap_or_else(|| panic!("replica {replica} committed a block without metadata"));
    assert_eq!(
        md.metadata.len(),
        BLOCK_METADATA_SLOTS,
        "replica {replica} committed a block with other metadata slots"
    );
    let sigs = Metadata::decode(md.metadata[0].as_slice()).expect("SIGNATURES");
    assert!(
        sigs.signatures.len() >= 3,
        "replica {replica} committed a block without a signature quorum"
    );
    for (i, slot) in md.metadata.iter().enumerate().skip(2) {
        assert!(
            slot.is_empty(),
            "replica {replica} committed a block with metadata slot {i} filled by the leader"
        );
    }
}

/// Runs one proposal from leader 1 whose block metadata `corrupt` rewrites on the way out, and
/// checks that every follower complains about the leader (moves to another view) and that what
/// anyone commits (the next leader orders the same request) is well formed.
fn followers_refuse_leader_metadata(corrupt: fn(&mut Block)) {
    let mut c = Cluster::new();
    c.filter = Some(Box::new(move |from, _to, kind| match kind {
        Kind::PrePrepare(mut pp) if from == 1 => {
            if let Some(b) = pp.block.as_mut() {
                corrupt(b);
            }
            Some(Kind::PrePrepare(pp))
        }
        k => Some(k),
    }));
    c.submit(1, envelope(1));
    c.run_until(30, |_| false);
    for i in 2..=N {
        assert!(
            c.replica(i).view() > 0,
            "replica {i} did not change view away from the leader"
        );
        for b in c.chains[&i].iter().skip(1) {
            assert_well_formed(i, b);
        }
    }
}

#[test]
fn proposal_with_empty_metadata_is_refused_without_panicking() {
    followers_refuse_leader_metadata(|b| {
        b.metadata = Some(BlockMetadata {
            metadata: Vec::new(),
        })
    });
}

#[test]
fn proposal_without_metadata_is_refused() {
    followers_refuse_leader_metadata(|b| b.metadata = None);
}

#[test]
fn proposal_with_too_few_metadata_slots_is_refused() {
    followers_refuse_leader_metadata(|b| {
        b.metadata = Some(BlockMetadata {
            metadata: vec![Vec::new(); 1],
        })
    });
}

#[test]
fn proposal_with_extra_metadata_slot_is_refused() {
    followers_refuse_leader_metadata(|b| {
        if let Some(md) = b.metadata.as_mut() {
            md.metadata.push(Vec::new());
        }
    });
}

#[test]
fn proposal_with_prefilled_metadata_is_refused() {
    // A leader smuggling bytes into a slot (here: a fake TRANSACTIONS_FILTER).
    followers_refuse_leader_metadata(|b| {
        if let Some(md) = b.metadata.as_mut() {
            md.metadata[2] = vec![0; 3];
        }
    });
}

#[test]
fn proposal_over_absolute_max_bytes_with_its_metadata_is_refused() {
    // The transactions alone fit; with what the leader put in the metadata the block does not.
    followers_refuse_leader_metadata(|b| {
        if let Some(md) = b.metadata.as_mut() {
            md.metadata[3] = vec![7; 1 << 20];
        }
    });
}

#[test]
fn validation_names_the_metadata_fault() {
    let c = Cluster::new();
    let r = c.replica(2);
    let honest = new_block(1, digest(&genesis()), vec![envelope(1)]);
    assert_eq!(r.validate_block(&honest), Ok(()));
    let with = |f: fn(&mut Block)| {
        let mut b = honest.clone();
        f(&mut b);
        r.validate_block(&b)
    };
    assert_eq!(with(|b| b.metadata = None), Err(InvalidBlock::NoMetadata));
    assert_eq!(
        with(|b| b.metadata = Some(BlockMetadata::default())),
        Err(InvalidBlock::MetadataSlots {
            got: 0,
            want: BLOCK_METADATA_SLOTS
        })
    );
    assert_eq!(
        with(|b| {
            if let Some(md) = b.metadata.as_mut() {
                md.metadata[4] = vec![1];
            }
        }),
        Err(InvalidBlock::MetadataFilled(4))
    );
    assert_eq!(
        with(|b| {
            if let Some(md) = b.metadata.as_mut() {
                md.metadata[3] = vec![7; 1 << 20];
            }
        }),
        Err(InvalidBlock::TooLarge { max: 1 << 20 })
    );
}

/// A leader re-proposes, as it must, the block of a prepared certificate: the block is not
/// validated again there, so a malformed one (a certificate made before replicas checked
/// metadata, or by a quorum of faulty signers in a test) reaches finalize. It must not panic
/// there nor commit a block without signatures.
fn leader_finalizes_malformed_required_block(metadata: Option<BlockMetadata>) {
    let mut c = Cluster::new();
    let last_hash = digest(&genesis());
    let mut block = new_block(1, last_hash, vec![envelope(1)]);
    block.metadata = metadata;
    let d = digest(&block);
    let pre_prepare = c.signed(
        1,
        Kind::PrePrepare(PrePrepare {
            view: 0,
            seq: 1,
            block: Some(block.clone()),
        }),
    );
    let prepares = [1, 3, 4]
        .iter()
        .map(|&s| {
            c.signed(
                s,
                Kind::Prepare(Prepare {
                    view: 0,
                    seq: 1,
                    digest: d.clone(),
                }),
            )
        })
        .collect();
    let cert = PreparedCertificate {
        pre_prepare: Some(pre_prepare),
        prepares,
    };
    // Replica 2 leads view 1; view changes from 1 and 3 (3's with the certificate) make it join.
    for (s, prepared) in [(1, None), (3, Some(cert))] {
        let vc = c.signed(
            s,
            Kind::ViewChange(ViewChange {
                consenters_since: 0,
                next_view: 1,
                last_committed_seq: 1,
                prepared,
            }),
        );
        c.deliver(s, 2, vc);
    }
    assert_eq!(c.replica(2).view(), 1, "replica 2 did not install view 1");
    assert!(
        c.replica(2)
            .proposal
            .as_ref()
            .is_some_and(|p| p.digest == d),
        "replica 2 did not re-propose the prepared block"
    );
    let mut outputs = Vec::new();
    for s in [1, 3] {
        let p = c.signed(
            s,
            Kind::Prepare(Prepare {
                view: 1,
                seq: 1,
                digest: d.clone(),
            }),
        );
        outputs.extend(c.deliver(s, 2, p));
    }
    for s in [1, 3] {
        let cm = c.signed(
            s,
            Kind::Commit(Commit {
                view: 1,
                seq: 1,
                digest: d.clone(),
                block_signature: Some(c.block_signature(s, 1, &block)),
            }),
        );
        outputs.extend(c.deliver(s, 2, cm));
    }
    assert!(
        !committed(&outputs),
        "a block without SIGNATURES/LAST_CONFIG slots was committed"
    );
    assert_eq!(c.height(2), 1);
    // It was refused at finalize, like an invalid proposal: replica 2 asks for another view.
    assert!(c.replica(2).in_view_change());
}

#[test]
fn finalizing_a_block_without_metadata_slots_does_not_panic() {
    leader_finalizes_malformed_required_block(Some(BlockMetadata {
        metadata: Vec::new(),
    }));
}

#[test]
fn finalizing_a_block_without_metadata_commits_nothing() {
    leader_finalizes_malformed_required_block(None);
}

// ----------------------------------------------------------------------------------------------
// Issue 13, bug 2: a view change's claimed height is not trusted on one replica's word.

#[test]
fn one_lying_view_change_does_not_stall_recovery_from_a_silent_leader() {
    let mut c = Cluster::new();
    // Leader 1 is down. Replica 4 claims an absurd height in every view change and is silent
    // whenever it leads; otherwise it behaves.
    c.down.insert(1);
    c.filter = Some(Box::new(|from, _to, kind| match kind {
        Kind::ViewChange(mut vc) if from == 4 => {
            vc.last_committed_seq = u64::MAX;
            Some(Kind::ViewChange(vc))
        }
        Kind::PrePrepare(_) | Kind::Heartbeat(_) | Kind::NewView(_) if from == 4 => None,
        k => Some(k),
    }));
    c.submit(2, envelope(1));
    let recovered = c.run_until(3_000, |c| c.height(2) == 2 && c.height(3) == 2);
    assert!(
        recovered,
        "no block after 3000 ticks: views {:?}, heights {:?}",
        (2..=N).map(|i| c.replica(i).view()).collect::<Vec<_>>(),
        (2..=N).map(|i| c.height(i)).collect::<Vec<_>>(),
    );
}

#[test]
fn stale_future_view_changes_do_not_survive_view_installation() {
    let mut c = Cluster::new();
    let vc = |c: &Cluster, s: u32, v: u64| {
        c.signed(
            s,
            Kind::ViewChange(ViewChange {
                consenters_since: 0,
                next_view: v,
                last_committed_seq: 1,
                prepared: None,
            }),
        )
    };
    // Replica 1 timed out on view 1's view change and asked for view 2 ...
    let stale = vc(&c, 1, 2);
    c.deliver(1, 3, stale);
    // ... then view 1 was installed after all (1 installed it too; its request for 2 is stale).
    let proof = [1, 2, 4].iter().map(|&s| vc(&c, s, 1)).collect();
    let nv = c.signed(
        2,
        Kind::NewView(NewView {
            view: 1,
            view_changes: proof,
        }),
    );
    c.deliver(2, 3, nv);
    assert_eq!(c.replica(3).view(), 1);
    assert!(!c.replica(3).in_view_change());
    // One consenter now asks for view 2: alone it is not f+1 and must not move replica 3.
    let lone = vc(&c, 4, 2);
    c.deliver(4, 3, lone);
    let r = c.replica(3);
    assert!(
        r.view() == 1 && !r.in_view_change(),
        "a stale view change from before view 1 counted toward view 2 (view {}, changing: {})",
        r.view(),
        r.in_view_change()
    );
}

/// Safety guard for bug 2's fix: replica 3 alone committed block X (only it received the
/// commits); the faulty old leader 1 then claims, with honest 2, that nothing was committed.
/// Trusting only the (f+1)-th highest claim, the new leader 2 must still not order a different
/// block at that height: 3's view change carries X's prepared certificate.
#[test]
fn new_leader_does_not_replace_a_block_only_one_replica_committed() {
    let mut c = Cluster::new();
    // Phase 1: 1 proposes X to 3 and 4 only; only 3 (and 1) see the commits.
    c.filter = Some(Box::new(|from, to, kind| match kind {
        Kind::PrePrepare(_) if from == 1 && to == 2 => None,
        Kind::Commit(_) if to == 2 || to == 4 => None,
        k => Some(k),
    }));
    c.submit(1, envelope(1));
    assert!(c.run_until(10, |c| c.height(3) == 2));
    let x = c.chains[&3][1].clone();
    assert_eq!(c.height(2), 1);
    assert_eq!(c.height(4), 1);
    // Phase 2: 1 goes silent except for a lying view change; 4's view change to 2 and 3's
    // state responses are delayed (asynchrony).
    c.filter = Some(Box::new(|from, to, kind| match kind {
        _ if from == 1 => None,
        Kind::ViewChange(_) if from == 4 && to == 2 => None,
        Kind::StateResponse(_) if from == 3 => None,
        k => Some(k),
    }));
    let lie = c.signed(
        1,
        Kind::ViewChange(ViewChange {
            consenters_since: 0,
            next_view: 1,
            last_committed_seq: 1,
            prepared: None,
        }),
    );
    for to in 2..=N {
        c.deliver(1, to, lie.clone());
    }
    // Another request, so that a fresh proposal at height 1 would differ from X.
    c.submit(2, envelope(2));
    // The faulty 1 votes for whatever replica 2 proposes in view 1.
    let mut voted = false;
    for _ in 0..400 {
        c.tick();
        if voted {
            continue;
        }
        let Some((view, block)) = c
            .replica(2)
            .proposal
            .as_ref()
            .map(|p| (p.view, p.block.clone()))
        else {
            continue;
        };
        if view != 1 {
            continue;
        }
        voted = true;
        let d = digest(&block);
        let prepare = c.signed(
            1,
            Kind::Prepare(Prepare {
                view: 1,
                seq: 1,
                digest: d.clone(),
            }),
        );
        let commit = c.signed(
            1,
            Kind::Commit(Commit {
                view: 1,
                seq: 1,
                digest: d,
                block_signature: Some(c.block_signature(1, 1, &block)),
            }),
        );
        for to in [2, 4] {
            c.deliver(1, to, prepare.clone());
            c.deliver(1, to, commit.clone());
        }
        c.pump();
    }
    // Heal and let everyone converge.
    c.filter = None;
    c.down.insert(1);
    let converged = c.run_until(2_000, |c| (2..=N).all(|i| c.height(i) >= 2));
    for i in 2..=N {
        if let Some(b) = c.chains[&i].get(1) {
            assert_eq!(
                digest(b),
                digest(&x),
                "replica {i} committed another block than replica 3 at height 1"
            );
        }
    }
    assert!(converged, "replicas 2 and 4 never caught up after healing");
}

// ----------------------------------------------------------------------------------------------
// Issue 13, bug 3: vote storage is bounded, one vote per sender per slot, no re-verification.

#[test]
fn votes_and_view_changes_far_ahead_are_not_stored() {
    let mut c = Cluster::new();
    let d = vec![9u8; 32];
    let mut msgs = Vec::new();
    for i in 0..400u64 {
        msgs.push(Kind::Prepare(Prepare {
            view: 0,
            seq: 1 + i,
            digest: d.clone(),
        }));
        msgs.push(Kind::Prepare(Prepare {
            view: i,
            seq: 1,
            digest: d.clone(),
        }));
        msgs.push(Kind::Commit(Commit {
            view: i,
            seq: 1 + i,
            digest: d.clone(),
            block_signature: Some(MetadataSignature::default()),
        }));
        msgs.push(Kind::ViewChange(ViewChange {
            consenters_since: 0,
            next_view: 2 + i,
            last_committed_seq: 1,
            prepared: None,
        }));
    }
    for k in msgs {
        let m = c.signed(4, k);
        c.deliver(4, 2, m);
    }
    let r = c.replica(2);
    assert!(
        stored_votes(r) <= 40,
        "{} votes stored from one consenter",
        stored_votes(r)
    );
    assert!(
        stored_view_changes(r) <= 16,
        "{} view changes stored from one consenter",
        stored_view_changes(r)
    );
}

#[test]
fn a_second_different_vote_for_a_slot_is_dropped() {
    let mut c = Cluster::new();
    let (a, b) = (vec![1u8; 32], vec![2u8; 32]);
    for d in [&a, &b] {
        let p = c.signed(
            4,
            Kind::Prepare(Prepare {
                view: 0,
                seq: 1,
                digest: d.clone(),
            }),
        );
        c.deliver(4, 2, p);
        let cm = c.signed(
            4,
            Kind::Commit(Commit {
                view: 0,
                seq: 1,
                digest: d.clone(),
                block_signature: Some(MetadataSignature::default()),
            }),
        );
        c.deliver(4, 2, cm);
        let vc = c.signed(
            4,
            Kind::ViewChange(ViewChange {
                consenters_since: 0,
                next_view: 1,
                last_committed_seq: if *d == a { 1 } else { 2 },
                prepared: None,
            }),
        );
        c.deliver(4, 2, vc);
    }
    let r = c.replica(2);
    let votes = &r.votes[&(0, 1)];
    assert_eq!(
        votes.prepares.get(&4).map(|(d, _)| d),
        Some(&a),
        "prepare replaced"
    );
    assert_eq!(
        votes.commit_digest(4),
        Some(a.as_slice()),
        "commit replaced"
    );
    let vc = r.view_changes.get(&1).and_then(|m| m.get(&4));
    assert_eq!(
        vc.map(|(vc, _)| vc.last_committed_seq),
        Some(1),
        "view change replaced"
    );
}

#[test]
fn a_rejected_commit_signature_is_checked_once() {
    let mut c = Cluster::new();
    let block = c.propose_block_one(2);
    let d = digest(&block);
    // Consenter 4 sends a commit whose block signature is garbage, and repeats it.
    let mut bad_sig = c.block_signature(4, 0, &block);
    bad_sig.signature = vec![0; 8];
    let bad = c.signed(
        4,
        Kind::Commit(Commit {
            view: 0,
            seq: 1,
            digest: d.clone(),
            block_signature: Some(bad_sig),
        }),
    );
    for _ in 0..5 {
        c.deliver(4, 2, bad.clone());
    }
    // Every later vote used to re-check every stored commit.
    let mut outputs = Vec::new();
    for s in [1, 3] {
        let p = c.signed(
            s,
            Kind::Prepare(Prepare {
                view: 0,
                seq: 1,
                digest: d.clone(),
            }),
        );
        outputs.extend(c.deliver(s, 2, p));
    }
    for s in [3, 1] {
        let cm = c.commit_of(s, 0, &block);
        outputs.extend(c.deliver(s, 2, cm));
    }
    assert!(committed(&outputs), "the block was not committed");
    let checks = c.cryptos[&2]
        .block_checks
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    let of = |s: u32| checks.iter().filter(|&&x| x == s).count();
    assert_eq!(
        of(4),
        1,
        "the rejected signature was checked {} times",
        of(4)
    );
    for s in [1, 2, 3] {
        assert!(
            of(s) <= 1,
            "consenter {s}'s signature was checked {} times",
            of(s)
        );
    }
}

#[test]
fn a_view_change_with_an_invalid_certificate_is_checked_once() {
    let mut c = Cluster::new();
    let block = new_block(1, digest(&genesis()), vec![envelope(1)]);
    let pre_prepare = c.signed(
        1,
        Kind::PrePrepare(PrePrepare {
            view: 0,
            seq: 1,
            block: Some(block.clone()),
        }),
    );
    // Prepares "from" 1, 2 and 3 that consenter 4 forged: their signatures do not verify.
    let prepares = [1, 2, 3]
        .iter()
        .map(|&s| {
            let mut m = c.signed(
                s,
                Kind::Prepare(Prepare {
                    view: 0,
                    seq: 1,
                    digest: digest(&block),
                }),
            );
            m.signature = vec![0; 12];
            m
        })
        .collect();
    let vc = c.signed(
        4,
        Kind::ViewChange(ViewChange {
            consenters_since: 0,
            next_view: 1,
            last_committed_seq: 1,
            prepared: Some(PreparedCertificate {
                pre_prepare: Some(pre_prepare),
                prepares,
            }),
        }),
    );
    let crypto = c.cryptos[&2].clone();
    let checks = || crypto.msg_checks.load(Ordering::Relaxed);
    c.deliver(4, 2, vc.clone());
    let first = checks();
    assert!(first > 1, "the certificate was not checked");
    for _ in 0..10 {
        c.deliver(4, 2, vc.clone());
    }
    // Each repeat costs only the check of its own signature.
    assert_eq!(
        checks() - first,
        10,
        "the refused certificate was checked again"
    );
    assert!(c.replica(2).view_changes.is_empty());
}

// ----------------------------------------------------------------------------------------------
// Issue 13 item 4: what a replica voted for, and its prepared certificate, survive a restart.

/// The digests consenter `id` proposed or voted for, by (view, seq), in the messages it sent.
fn digests_sent(c: &Cluster, id: u32) -> BTreeMap<(u64, u64), BTreeSet<Vec<u8>>> {
    let mut out: BTreeMap<(u64, u64), BTreeSet<Vec<u8>>> = BTreeMap::new();
    for (from, msg) in c.sent.iter().flatten() {
        let slot = match kind_of(msg) {
            Some(Kind::PrePrepare(pp)) => pp.block.as_ref().map(|b| (pp.view, pp.seq, digest(b))),
            Some(Kind::Prepare(p)) => Some((p.view, p.seq, p.digest)),
            Some(Kind::Commit(cm)) => Some((cm.view, cm.seq, cm.digest)),
            _ => None,
        };
        if let (true, Some((v, s, d))) = (*from == id, slot) {
            out.entry((v, s)).or_default().insert(d);
        }
    }
    out
}

fn assert_no_equivocation(c: &Cluster, id: u32) {
    for ((v, s), ds) in digests_sent(c, id) {
        assert_eq!(
            ds.len(),
            1,
            "replica {id} proposed or voted for {} blocks at view {v}, seq {s}",
            ds.len()
        );
    }
}

fn proposal_digest(c: &Cluster, id: u32) -> Option<Vec<u8>> {
    c.replica(id).proposal.as_ref().map(|p| p.digest.clone())
}

#[test]
fn a_restarted_leader_does_not_propose_another_block_at_the_same_view_and_seq() {
    let mut c = Cluster::new();
    c.sent = Some(Vec::new());
    // No vote arrives: leader 1's proposal stays in flight.
    c.filter = Some(Box::new(|_from, _to, kind| match kind {
        Kind::Prepare(_) | Kind::Commit(_) => None,
        k => Some(k),
    }));
    c.submit(1, envelope(1));
    assert!(c.run_until(5, |c| proposal_digest(c, 2).is_some()));
    let a = proposal_digest(&c, 1).expect("leader 1 proposed");
    // A request arriving meanwhile: the pool rebuilt at restart (txid order) would now cut
    // another block at the same (view, seq).
    c.submit(1, envelope(0));
    c.restart(1);
    c.tick();
    assert_no_equivocation(&c, 1);
    assert_eq!(
        proposal_digest(&c, 1),
        Some(a.clone()),
        "proposal not resumed"
    );
    c.filter = None;
    assert!(c.run_until(200, |c| (1..=N).all(|i| c.height(i) >= 2)));
    assert_no_equivocation(&c, 1);
    for i in 1..=N {
        assert_eq!(
            digest(&c.chains[&i][1]),
            a,
            "replica {i} decided another block"
        );
    }
}

#[test]
fn a_restarted_follower_refuses_a_conflicting_proposal_and_resumes_its_own() {
    let mut c = Cluster::new();
    c.sent = Some(Vec::new());
    // No commit arrives: everyone prepares A, nobody commits it.
    c.filter = Some(Box::new(|_from, _to, kind| match kind {
        Kind::Commit(_) => None,
        k => Some(k),
    }));
    c.submit(1, envelope(1));
    assert!(c.run_until(5, |c| c.replica(3).prepared_cert.is_some()));
    let a = proposal_digest(&c, 3).expect("replica 3 accepted");
    c.restart(3);
    assert_eq!(
        proposal_digest(&c, 3),
        Some(a.clone()),
        "replica 3 lost the proposal it voted for"
    );
    assert!(
        c.replica(3).prepared_cert.is_some(),
        "replica 3 lost its prepared certificate"
    );
    // The leader (now faulty) proposes another block for the same (view, seq).
    let b = new_block(1, digest(&genesis()), vec![envelope(2)]);
    let pp = c.signed(
        1,
        Kind::PrePrepare(PrePrepare {
            view: 0,
            seq: 1,
            block: Some(b),
        }),
    );
    c.deliver(1, 3, pp);
    c.pump();
    assert_no_equivocation(&c, 3);
    // Once commits flow, replica 3 decides A from its resumed round.
    c.filter = None;
    assert!(c.run_until(100, |c| (1..=N).all(|i| c.height(i) >= 2)));
    assert_no_equivocation(&c, 3);
    for i in 1..=N {
        assert_eq!(
            digest(&c.chains[&i][1]),
            a,
            "replica {i} decided another block"
        );
    }
}

#[test]
fn a_prepared_certificate_survives_a_restart_and_decides_the_next_view() {
    let mut c = Cluster::new();
    c.sent = Some(Vec::new());
    // View 0: only replica 3 collects the prepares for A and no commit arrives.
    c.filter = Some(Box::new(|_from, to, kind| match kind {
        Kind::Prepare(p) if p.view == 0 && to != 3 => None,
        Kind::Commit(cm) if cm.view == 0 => None,
        k => Some(k),
    }));
    c.submit(1, envelope(1));
    assert!(c.run_until(5, |c| c.replica(3).prepared_cert.is_some()));
    let a = proposal_digest(&c, 3).expect("replica 3 accepted");
    assert!(c.replica(2).prepared_cert.is_none() && c.replica(4).prepared_cert.is_none());
    c.restart(3);
    // Leader 1 fails. View 0 can never finish (its votes are still lost), so view 1 decides
    // height 1. Replica 2 (its leader) also holds another request: a block it cut itself
    // would differ from A.
    c.down.insert(1);
    c.submit(2, envelope(2));
    assert!(c.run_until(1_000, |c| (2..=N).all(|i| c.height(i) >= 2)));
    let carried = c.sent.iter().flatten().any(|(from, m)| {
        *from == 3
            && matches!(kind_of(m), Some(Kind::ViewChange(vc))
                if vc.prepared.as_ref().and_then(cert_slot).is_some_and(|(_, _, d)| d == a))
    });
    assert!(
        carried,
        "replica 3's view change did not carry its certificate"
    );
    for i in 2..=N {
        assert_eq!(
            digest(&c.chains[&i][1]),
            a,
            "replica {i} decided another block than the prepared one"
        );
    }
    assert_no_equivocation(&c, 3);
}

/// PBFT's safety after crash-recovery: faulty leader 1 gets block A prepared by 3 and 4 and
/// committed by 3 alone. Both then restart (correct replicas may crash). Without their
/// certificates on disk, view 1 (1 lying, voting for anything) would decide another block at
/// height 1 on 2 and 4: a fork with 3.
#[test]
fn a_block_committed_by_one_replica_survives_restarts_of_those_that_prepared_it() {
    let mut c = Cluster::new();
    c.filter = Some(Box::new(|from, to, kind| match kind {
        Kind::PrePrepare(_) | Kind::Prepare(_) | Kind::Forward(_) if to == 2 => None,
        Kind::Commit(_) if to != 3 => None,
        _ if from == 2 => None,
        k => Some(k),
    }));
    c.submit(1, envelope(1));
    assert!(c.run_until(10, |c| c.height(3) == 2));
    let a = digest(&c.chains[&3][1]);
    assert_eq!((c.height(2), c.height(4)), (1, 1));
    assert!(c.replica(4).prepared_cert.is_some());
    c.restart(3);
    c.restart(4);
    // Replica 2, view 1's leader, holds another request: a block it cut itself would not be A.
    c.filter = Some(Box::new(|from, _to, kind| match kind {
        _ if from == 1 => None,
        Kind::StateResponse(_) if from == 3 => None,
        k => Some(k),
    }));
    c.submit(2, envelope(2));
    let lie = c.signed(
        1,
        Kind::ViewChange(ViewChange {
            consenters_since: 0,
            next_view: 1,
            last_committed_seq: 1,
            prepared: None,
        }),
    );
    for to in 2..=N {
        c.deliver(1, to, lie.clone());
    }
    // The faulty 1 votes for whatever replica 2 proposes in view 1.
    let mut voted = false;
    for _ in 0..400 {
        c.tick();
        let Some((1, block)) = c
            .replica(2)
            .proposal
            .as_ref()
            .map(|p| (p.view, p.block.clone()))
        else {
            continue;
        };
        if voted {
            continue;
        }
        voted = true;
        let d = digest(&block);
        let prepare = c.signed(
            1,
            Kind::Prepare(Prepare {
                view: 1,
                seq: 1,
                digest: d.clone(),
            }),
        );
        let commit = c.signed(
            1,
            Kind::Commit(Commit {
                view: 1,
                seq: 1,
                digest: d,
                block_signature: Some(c.block_signature(1, 1, &block)),
            }),
        );
        for to in [2, 4] {
            c.deliver(1, to, prepare.clone());
            c.deliver(1, to, commit.clone());
        }
        c.pump();
    }
    c.filter = None;
    c.down.insert(1);
    let converged = c.run_until(2_000, |c| (2..=N).all(|i| c.height(i) >= 2));
    for i in 2..=N {
        if let Some(b) = c.chains[&i].get(1) {
            assert_eq!(
                digest(b),
                a,
                "replica {i} committed another block than replica 3 at height 1"
            );
        }
    }
    assert!(converged, "replicas 2 and 4 never caught up");
}

// ----------------------------------------------------------------------------------------------
// Simulator seeds 205 and 388: a leader cut off while the others changed view.

/// Leader 1 is cut off long enough for 2, 3 and 4 to move to view 1 without it, and holds a
/// request nobody else received. A leader never suspects itself, so it never sends the view
/// change that used to be the only thing answered with the NewView: it stayed leader of view 0
/// forever, its proposals ignored and its request never ordered. With `restart`, 2, 3 and 4
/// restart before the network heals: the NewView must survive that to be relayed.
fn stale_leader_rejoins(restart: bool) {
    let mut c = Cluster::new();
    let cut = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let open = cut.clone();
    c.filter = Some(Box::new(move |from, to, kind| {
        (!(open.load(Ordering::Relaxed) && (from == 1 || to == 1))).then_some(kind)
    }));
    c.submit(1, envelope(1));
    assert!(
        c.run_until(400, |c| (2..=N)
            .all(|i| c.replica(i).view() == 1 && !c.replica(i).in_view_change())),
        "2, 3 and 4 did not install view 1 without the leader"
    );
    assert_eq!(c.replica(1).view(), 0);
    if restart {
        for i in 2..=N {
            c.restart(i);
        }
    }
    cut.store(false, Ordering::Relaxed);
    let healed = c.run_until(400, |c| {
        (1..=N).all(|i| c.height(i) == 2) && c.replica(1).pending_requests() == 0
    });
    assert!(
        healed,
        "after healing: views {:?}, heights {:?}, pending at 1: {}",
        (1..=N).map(|i| c.replica(i).view()).collect::<Vec<_>>(),
        (1..=N).map(|i| c.height(i)).collect::<Vec<_>>(),
        c.replica(1).pending_requests()
    );
    assert_eq!(c.replica(1).view(), 1, "replica 1 still leads the old view");
}

#[test]
fn a_leader_that_missed_the_new_view_rejoins_and_its_request_is_ordered() {
    stale_leader_rejoins(false);
}

#[test]
fn the_new_view_survives_a_restart_and_still_brings_a_stale_leader_in() {
    stale_leader_rejoins(true);
}

#[test]
fn a_restarted_follower_still_refuses_a_block_the_new_view_rules_out() {
    let mut c = Cluster::new();
    // View 0: everyone prepares A, no commit arrives.
    c.filter = Some(Box::new(|_from, _to, kind| match kind {
        Kind::Commit(cm) if cm.view == 0 => None,
        k => Some(k),
    }));
    c.submit(1, envelope(1));
    assert!(c.run_until(5, |c| (2..=N).all(|i| c.replica(i).prepared_cert.is_some())));
    let a = proposal_digest(&c, 3).expect("replica 3 accepted");
    // Leader 1 goes silent; view 1 (leader 2) is installed with A's certificate, but its
    // re-proposal of A does not reach 3 before 3 restarts.
    c.filter = Some(Box::new(|from, to, kind| match kind {
        _ if from == 1 => None,
        Kind::PrePrepare(_) if to == 3 => None,
        Kind::Commit(cm) if cm.view == 0 => None,
        k => Some(k),
    }));
    assert!(c.run_until(400, |c| {
        (2..=N).all(|i| c.replica(i).view() == 1 && !c.replica(i).in_view_change())
    }));
    assert_eq!(c.height(3), 1);
    c.restart(3);
    // Leader 2 (turned faulty) proposes another block at height 1 in view 1.
    let b = new_block(1, digest(&genesis()), vec![envelope(2)]);
    assert_ne!(digest(&b), a);
    let pp = c.signed(
        2,
        Kind::PrePrepare(PrePrepare {
            view: 1,
            seq: 1,
            block: Some(b),
        }),
    );
    let out = c.replicas.get_mut(&3).expect("replica 3").receive(2, pp);
    let voted_b = out.iter().any(|o| {
        matches!(o, Output::Send { msg, .. }
            if matches!(kind_of(msg), Some(Kind::Prepare(p)) if p.view == 1 && p.digest != a))
    });
    assert!(
        !voted_b,
        "replica 3 voted for a block the NewView rules out"
    );
    assert!(
        c.replica(3).in_view_change(),
        "replica 3 did not suspect the leader"
    );
}

// ----------------------------------------------------------------------------------------------
// Mutation fuzzing: a Byzantine consenter whose every message is mutated at the byte level and
// re-signed (so it passes authentication and reaches the handlers).

/// Safety (the honest chains agree wherever they overlap, and hold well-formed blocks) and
/// bounded memory (what a faulty consenter can make a replica store stays small).
fn assert_honest_agree_and_bounded(c: &Cluster, seed: u64, honest: &[u32]) {
    for &a in honest {
        for &b in honest {
            let n = c.height(a).min(c.height(b));
            for h in 0..n {
                assert_eq!(
                    digest(&c.chains[&a][h]),
                    digest(&c.chains[&b][h]),
                    "seed {seed}: replicas {a} and {b} differ at height {h}"
                );
            }
        }
        for block in c.chains[&a].iter().skip(1) {
            assert_well_formed(a, block);
        }
    }
    for &id in honest {
        assert!(
            stored_votes(c.replica(id)) < 64,
            "seed {seed}: votes pile up"
        );
        assert!(
            stored_view_changes(c.replica(id)) < 64,
            "seed {seed}: view changes pile up"
        );
    }
}

#[test]
fn a_consenter_sending_mutated_messages_neither_stops_nor_forks_the_others() {
    let seeds = medledger_common::mutation::iterations(24) as u64;
    let started = std::time::Instant::now();
    let (mut mutated, mut refused) = (0usize, 0usize);
    let counts = Arc::new(Mutex::new((0usize, 0usize)));
    for seed in 0..seeds {
        let mut c = Cluster::new();
        let mut rng = MutationRng::new(seed);
        let tally = counts.clone();
        c.filter = Some(Box::new(move |from, _to, kind| {
            if from != 4 {
                return Some(kind);
            }
            let decoded = mutate_encoded(&mut rng, kind);
            if let Ok(mut t) = tally.lock() {
                t.0 += 1;
                t.1 += usize::from(decoded.is_none());
            }
            decoded
        }));
        let honest = [1u32, 2, 3];
        // One request at a time, so that every block goes through the mutating consenter's votes.
        for i in 1..=6 {
            c.submit(1 + (i % 3) as u32, envelope(seed as usize * 100 + i));
            let done = c.run_until(4000, |c| honest.iter().all(|&id| c.height(id) > i));
            assert!(
                done,
                "seed {seed}: the honest replicas stopped at heights {:?}",
                honest.map(|id| c.height(id))
            );
        }
        assert_honest_agree_and_bounded(&c, seed, &honest);
    }
    if let Ok(t) = counts.lock() {
        (mutated, refused) = *t;
    }
    eprintln!(
        "consensus mutation fuzz: {seeds} seeds, {mutated} mutated messages ({refused} undecodable), {:.0} messages/s",
        mutated as f64 / started.elapsed().as_secs_f64().max(1e-9)
    );
}

/// The same faulty consenter with small-scope faults too (view and sequence off by one, its old
/// proposals replayed, block metadata stripped or padded, forged heights in view changes).
/// One honest replica is down for two blocks (the faulty one behaves meanwhile: with two
/// faults nothing is guaranteed) and then catches up by state transfer, which the metadata
/// faults target.
#[test]
fn a_consenter_sending_small_scope_faults_neither_stops_nor_forks_the_others() {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    let seeds = medledger_common::mutation::iterations(24) as u64;
    let started = std::time::Instant::now();
    let mut applied = BTreeMap::<Fault, u64>::new();
    for seed in 0..seeds {
        let mut c = Cluster::new();
        let mutator = Rc::new(RefCell::new(Mutator::new(seed)));
        let faulty = Rc::new(Cell::new(true));
        let (m, active) = (mutator.clone(), faulty.clone());
        c.filter = Some(Box::new(move |from, _to, kind| {
            if from != 4 || !active.get() {
                return Some(kind);
            }
            m.borrow_mut().rewrite(kind)
        }));
        let honest = [1u32, 2, 3];
        let lagging = 1 + (seed % 3) as u32;
        for i in 1..=6 {
            if i == 2 {
                c.down.insert(lagging);
                faulty.set(false);
            }
            if i == 4 {
                c.down.remove(&lagging);
                c.restart(lagging);
                faulty.set(true);
            }
            let live: Vec<u32> = honest
                .iter()
                .copied()
                .filter(|id| !c.down.contains(id))
                .collect();
            c.submit(live[i % live.len()], envelope(seed as usize * 100 + i));
            let done = c.run_until(4000, |c| live.iter().all(|&id| c.height(id) > i));
            assert!(
                done,
                "seed {seed}: the honest replicas stopped at heights {:?}",
                honest.map(|id| c.height(id))
            );
        }
        assert!(
            c.height(lagging) > 6,
            "seed {seed}: replica {lagging} never caught up"
        );
        assert_honest_agree_and_bounded(&c, seed, &honest);
        for (f, n) in &mutator.borrow().applied {
            *applied.entry(*f).or_default() += n;
        }
    }
    let total: u64 = applied.values().sum();
    eprintln!(
        "consensus small-scope faults: {seeds} seeds, {total} rewritten messages ({:.0}/s): {applied:?}",
        total as f64 / started.elapsed().as_secs_f64().max(1e-9)
    );
}

// ----------------------------------------------------------------------------------------------
// Request pool bound and duplicate checks (issue 13 item 5)

fn bounded(requests: usize, bytes: usize) -> impl Fn(u32) -> Config {
    move |id| Config {
        max_pool_requests: requests,
        max_pool_bytes: bytes,
        ..config(id)
    }
}

fn request_checks(c: &Cluster, id: u32) -> usize {
    c.cryptos[&id].request_checks.load(Ordering::Relaxed)
}

fn pending_written(out: &[Output]) -> usize {
    out.iter()
        .filter(|o| matches!(o, Output::Wal(WalOp::Pending(..))))
        .count()
}

#[test]
fn a_full_pool_refuses_client_requests_and_stays_bounded() {
    let mut c = Cluster::with_config(bounded(3, DEFAULT_MAX_POOL_BYTES));
    // Replica 2 follows: it never proposes, so only the bound stops its pool from growing.
    let r = c.replicas.get_mut(&2).expect("replica 2");
    for i in 0..3 {
        assert_eq!(r.submit(envelope(i)).0, Ok(()));
    }
    for i in 3..50 {
        let (res, out) = r.submit(envelope(i));
        assert_eq!(res, Err(RequestError::Overloaded));
        assert!(
            out.is_empty(),
            "a refused request is neither written ahead nor shared: {out:?}"
        );
    }
    assert_eq!(r.pending_requests(), 3);
    // The refusals cost no signature check: the pool is full whatever the signature.
    assert_eq!(request_checks(&c, 2), 3);
}

#[test]
fn the_pool_byte_bound_refuses_and_frees_room_when_requests_are_ordered() {
    let size = envelope(0).len();
    let mut c = Cluster::with_config(bounded(DEFAULT_MAX_POOL_REQUESTS, 2 * size + size / 2));
    // Nothing delivered yet: the first request's block is in flight, both stay pooled.
    let leader = c.replicas.get_mut(&1).expect("replica 1");
    let (first, out0) = leader.submit(envelope(0));
    let (second, out1) = leader.submit(envelope(1));
    assert_eq!((first, second), (Ok(()), Ok(())));
    let (res, out) = leader.submit(envelope(2));
    assert_eq!(res, Err(RequestError::Overloaded));
    assert_eq!(pending_written(&out), 0);
    c.apply(1, out0);
    c.apply(1, out1);
    assert!(c.run_until(200, |c| {
        (1..=N).all(|id| c.height(id) >= 2 && c.replica(id).pending_requests() == 0)
    }));
    // Ordering the pooled requests gave their room back (`submit` asserts it is accepted).
    c.submit(1, envelope(2));
    assert!(c.run_until(200, |c| c.height(1) >= 3));
}

#[test]
fn forwarded_requests_beyond_the_bound_are_dropped() {
    let mut c = Cluster::with_config(bounded(3, DEFAULT_MAX_POOL_BYTES));
    // A (faulty or merely busy) consenter forwards more than the bound at once, then more.
    for batch in 0..3 {
        let fwd = c.signed(
            3,
            Kind::Forward(ForwardRequest {
                envelopes: (batch * 10..batch * 10 + 10).map(envelope).collect(),
            }),
        );
        let out = c.replicas.get_mut(&2).expect("replica 2").receive(3, fwd);
        assert!(pending_written(&out) <= 3);
        assert_eq!(c.replica(2).pending_requests(), 3);
    }
    // Dropping cost no signature checks beyond the three admitted.
    assert_eq!(request_checks(&c, 2), 3);
    // The byte bound holds for forwards too.
    let size = envelope(0).len();
    let mut c = Cluster::with_config(bounded(DEFAULT_MAX_POOL_REQUESTS, 2 * size));
    let fwd = c.signed(
        3,
        Kind::Forward(ForwardRequest {
            envelopes: (0..10).map(envelope).collect(),
        }),
    );
    c.replicas.get_mut(&2).expect("replica 2").receive(3, fwd);
    assert_eq!(c.replica(2).pending_requests(), 2);
}

/// The first envelope's transaction id with other (unsigned, forged) content.
fn forged_same_txid(i: usize) -> Vec<u8> {
    let mut env = Envelope::decode(envelope(i).as_slice()).expect("test envelope");
    let mut payload = Payload::decode(env.payload.as_slice()).expect("test payload");
    payload.data = b"forged".to_vec();
    env.payload = payload.encode_to_vec();
    env.signature = vec![9, 9];
    env.encode_to_vec()
}

#[test]
fn a_duplicate_request_is_refused_without_a_signature_check() {
    let mut c = Cluster::new();
    let r = c.replicas.get_mut(&2).expect("replica 2");
    assert_eq!(r.submit(envelope(1)).0, Ok(()));
    assert_eq!(request_checks(&c, 2), 1);
    let r = c.replicas.get_mut(&2).expect("replica 2");
    for _ in 0..5 {
        let (res, out) = r.submit(envelope(1));
        assert_eq!(res, Err(RequestError::Duplicate));
        assert!(out.is_empty());
    }
    // Another envelope claiming the pooled txid is refused as well and displaces nothing.
    assert_eq!(
        r.submit(forged_same_txid(1)).0,
        Err(RequestError::Duplicate)
    );
    assert_eq!(
        r.pool.get("tx1").map(|e| e.envelope.clone()),
        Some(envelope(1))
    );
    // Forwarded duplicates cost nothing either.
    let fwd = c.signed(
        3,
        Kind::Forward(ForwardRequest {
            envelopes: vec![envelope(1), envelope(1), forged_same_txid(1)],
        }),
    );
    c.replicas.get_mut(&2).expect("replica 2").receive(3, fwd);
    assert_eq!(
        request_checks(&c, 2),
        1,
        "duplicates were signature-checked"
    );

    // Once ordered, resubmitting it is a duplicate of a committed request: still no check.
    c.submit(1, envelope(1));
    assert!(c.run_until(200, |c| (1..=N).all(|id| c.height(id) >= 2)));
    let before = request_checks(&c, 2);
    let r = c.replicas.get_mut(&2).expect("replica 2");
    assert_eq!(r.submit(envelope(1)).0, Err(RequestError::Duplicate));
    assert_eq!(
        r.submit(forged_same_txid(1)).0,
        Err(RequestError::Duplicate)
    );
    assert_eq!(request_checks(&c, 2), before);
}

#[test]
fn a_deep_pool_under_an_honest_busy_leader_does_not_start_a_view_change() {
    // Overload: the leader orders full blocks as fast as it can (one per `gate` step here), and
    // replica 2 holds requests six blocks deep. Each waits far longer than the request timeout,
    // though the leader censors nothing.
    let mut c = Cluster::with_config(|id| Config {
        request_timeout_ticks: 30,
        ..config(id)
    });
    let gate = Arc::new(AtomicUsize::new(1));
    let open = gate.clone();
    c.filter = Some(Box::new(move |_from, _to, kind| match kind {
        // Pools stay apart, so replica 2's wait depends on the leader's pace alone.
        Kind::Forward(_) => None,
        Kind::PrePrepare(p) if p.seq > open.load(Ordering::Relaxed) as u64 => None,
        k => Some(k),
    }));
    // The requests reach the leader while its first block is in flight, so every later block is
    // full (adaptive batching cuts a block as soon as the previous one is decided).
    let mut leader_out = Vec::new();
    for i in 0..60 {
        let (res, out) = c
            .replicas
            .get_mut(&2)
            .expect("replica 2")
            .submit(envelope(i));
        assert_eq!(res, Ok(()));
        c.apply(2, out);
        let (res, out) = c
            .replicas
            .get_mut(&1)
            .expect("replica 1")
            .submit(envelope(i));
        assert_eq!(res, Ok(()));
        leader_out.extend(out);
    }
    c.apply(1, leader_out);
    c.pump();
    for t in 1..=200 {
        if t % 20 == 0 {
            gate.fetch_add(1, Ordering::Relaxed);
        }
        c.tick();
        assert!(
            !c.replica(2).in_view_change(),
            "replica 2 deposes a leader that orders full blocks (height {})",
            c.height(2)
        );
        if c.replica(2).pending_requests() == 0 {
            break;
        }
    }
    assert_eq!(c.replica(2).pending_requests(), 0);
    assert_eq!(c.replica(2).view(), 0);
}

#[test]
fn a_leader_ordering_full_blocks_cannot_censor_a_request_forever() {
    // The tolerance for full blocks is bounded by the pool's depth: a leader that keeps
    // ordering others' requests and never ours is still deposed.
    let mut c = Cluster::with_config(|id| Config {
        request_timeout_ticks: 30,
        ..config(id)
    });
    c.filter = Some(Box::new(|_from, _to, kind| match kind {
        Kind::Forward(_) => None,
        k => Some(k),
    }));
    // Replicas 2 and 3 (f+1) hold a request the leader never gets.
    for id in [2, 3] {
        let (res, out) = c
            .replicas
            .get_mut(&id)
            .expect("replica")
            .submit(envelope(999));
        assert_eq!(res, Ok(()));
        c.apply(id, out);
    }
    let mut next = 0;
    let mut deposed = false;
    for _ in 0..300 {
        // Keep the leader busy with a full block of other requests every tick.
        for _ in 0..10 {
            c.submit(1, envelope(next));
            next += 1;
        }
        c.tick();
        if c.replica(2).view() > 0 {
            deposed = true;
            break;
        }
    }
    assert!(
        deposed,
        "a censoring leader ordering full blocks was never deposed"
    );
}

#[test]
fn a_state_response_with_a_padded_signature_list_costs_one_check_per_consenter() {
    let mut c = Cluster::new();
    c.down.insert(4);
    c.submit(1, envelope(1));
    assert!(
        c.run_until(500, |c| c.height(1) >= 2),
        "three replicas commit"
    );
    // A hostile consenter serves the block with its SIGNATURES padded by repeats.
    let mut block = c.chains[&1][1].clone();
    let slot = block
        .metadata
        .as_ref()
        .and_then(|m| m.metadata.first())
        .cloned()
        .expect("signatures slot");
    let mut md = medledger_proto::common::Metadata::decode(slot.as_slice()).expect("metadata");
    let first = md.signatures[0].clone();
    for _ in 0..500 {
        md.signatures.insert(0, first.clone());
    }
    if let Some(m) = block.metadata.as_mut() {
        m.metadata[0] = md.encode_to_vec();
    }
    c.down.remove(&4);
    c.cryptos[&4].block_checks.lock().unwrap().clear();
    let msg = c.replica(1).state_response_message(vec![block]);
    let out = c.deliver(1, 4, msg);
    assert!(
        committed(&out),
        "replica 4 catches up from the padded block"
    );
    let checks = c.cryptos[&4].block_checks.lock().unwrap().len();
    assert!(
        checks <= N as usize,
        "{checks} block signature checks for {N} consenters"
    );
}

/// State transfer checks a block's signatures, which cover its header only: a consenter serving
/// the block with its metadata rewritten must not make a lagging replica store that.
fn served_block_with_rewritten_metadata_is_not_stored(rewrite: fn(&mut BlockMetadata)) {
    let mut c = Cluster::new();
    c.down.insert(4);
    c.submit(1, envelope(1));
    assert!(
        c.run_until(500, |c| c.height(1) >= 2),
        "three replicas commit"
    );
    let honest = c.chains[&1][1].clone();
    let mut block = honest.clone();
    if let Some(md) = block.metadata.as_mut() {
        rewrite(md);
    }
    c.down.remove(&4);
    let msg = c.replica(1).state_response_message(vec![block]);
    c.deliver(1, 4, msg);
    if c.height(4) >= 2 {
        assert_well_formed(4, &c.chains[&4][1]);
    }
    // It still catches up, from honest copies.
    let msg = c.replica(1).state_response_message(vec![honest]);
    c.deliver(1, 4, msg);
    assert_eq!(c.height(4), 2);
    assert_well_formed(4, &c.chains[&4][1]);
}

#[test]
fn a_served_block_with_an_extra_metadata_slot_is_not_stored() {
    served_block_with_rewritten_metadata_is_not_stored(|md| md.metadata.push(vec![1, 2, 3]));
}

#[test]
fn a_served_block_with_a_filled_metadata_slot_is_not_stored() {
    served_block_with_rewritten_metadata_is_not_stored(|md| md.metadata[2] = vec![0; 4]);
}

#[test]
fn a_consenter_flooding_state_requests_is_served_once_per_interval() {
    let mut c = Cluster::new();
    c.submit(1, envelope(1));
    assert!(c.run_until(500, |c| c.height(1) >= 2), "a block to serve");
    let mut served = 0;
    for _ in 0..100 {
        let msg = c.signed(2, Kind::StateRequest(StateRequest { from_seq: 0 }));
        let out = c
            .replicas
            .get_mut(&1)
            .map(|r| r.receive(2, msg))
            .unwrap_or_default();
        served += out
            .iter()
            .filter(|o| matches!(o, Output::ServeState { .. }))
            .count();
    }
    assert_eq!(
        served, 1,
        "100 requests in one tick were served {served} times"
    );
    for _ in 0..STATE_SERVE_INTERVAL_TICKS {
        c.tick();
    }
    let msg = c.signed(2, Kind::StateRequest(StateRequest { from_seq: 0 }));
    let out = c
        .replicas
        .get_mut(&1)
        .map(|r| r.receive(2, msg))
        .unwrap_or_default();
    assert!(
        out.iter().any(|o| matches!(o, Output::ServeState { .. })),
        "served again after the interval"
    );
}

#[test]
fn a_configuration_block_puts_batch_size_and_timeouts_in_force_from_the_next_block() {
    let mut c = Cluster::with_config(config);
    c.submit(1, envelope(0));
    assert!(c.run_until(100, |c| (1..=N).all(|id| c.height(id) >= 2)));
    c.submit(1, typed_envelope(1, HeaderType::Config));
    assert!(c.run_until(100, |c| (1..=N).all(|id| c.height(id) >= 3)));
    for id in 1..=N {
        let cfg = c.replica(id).config();
        // 20 ms ticks: 3 s, 600 ms, 9 s, 5 s, 400 ms.
        assert_eq!(
            (
                cfg.batch.max_message_count,
                cfg.leader_timeout_ticks,
                cfg.heartbeat_ticks,
                cfg.request_timeout_ticks,
                cfg.view_change_timeout_ticks,
                cfg.retransmit_ticks,
                cfg.max_pool_requests,
            ),
            (3, 150, 30, 450, 250, 20, 500),
            "replica {id}"
        );
    }
    // The next blocks are cut at the new size: ten waiting requests take at least four blocks.
    let leader = c.replicas.get_mut(&1).expect("replica 1");
    let mut out = Vec::new();
    for i in 10..20 {
        let (res, o) = leader.submit(envelope(i));
        assert_eq!(res, Ok(()));
        out.extend(o);
    }
    c.apply(1, out);
    assert!(c.run_until(400, |c| c.replica(1).pending_requests() == 0));
    let sizes: Vec<usize> = c.chains[&1][3..]
        .iter()
        .map(|b| b.data.as_ref().map_or(0, |d| d.data.len()))
        .collect();
    assert!(
        sizes.iter().all(|n| *n <= 3) && sizes.iter().sum::<usize>() == 10,
        "blocks after the configuration block: {sizes:?}"
    );
}

/// A replica that sent a view change and crashed before the new view was installed comes back
/// still changing view: its view change (which others may already count, saying it prepared
/// nothing newer) must not be contradicted by votes in the old view.
#[test]
fn a_replica_restarted_mid_view_change_does_not_vote_in_the_old_view() {
    let mut c = Cluster::new();
    // Nothing reaches replica 3, which times the leader out and asks for view 1 alone.
    c.filter = Some(Box::new(|_from, to, kind| (to != 3).then_some(kind)));
    assert!(c.run_until(500, |c| c.replica(3).in_view_change()));
    assert_eq!(
        c.durables[&3].view_change, 1,
        "the view change was not written ahead"
    );
    c.restart(3);
    assert!(
        c.replica(3).in_view_change(),
        "the restarted replica forgot its view change"
    );
    // The leader of view 0 proposes; replica 3 must not vote for it in view 0.
    c.filter = None;
    c.sent = Some(Vec::new());
    c.submit(1, envelope(1));
    c.run_until(20, |_| false);
    let voted_in_view_0 = c
        .sent
        .as_ref()
        .expect("recording")
        .iter()
        .any(|(from, msg)| {
            *from == 3
                && matches!(
                    Body::decode(msg.body.as_slice()).ok().and_then(|b| b.kind),
                    Some(Kind::Prepare(Prepare { view: 0, .. }))
                )
        });
    assert!(!voted_in_view_0, "replica 3 voted in the view it left");
}

/// A consenter added to a channel whose views have climbed far (every view change of its life
/// counts) joins the view the consenters are changing to; it does not ask for view 1 alone,
/// which they would drop as too far off while, changing view themselves, they relay nothing.
/// With one genesis consenter down, the new set needs its vote.
#[test]
fn a_consenter_added_after_many_view_changes_joins_the_others_view() {
    let mut c = Cluster::new();
    c.add_replica(N + 1);
    assert!(!c.replica(N + 1).config().is_member());
    // Leaders are silent (no proposals, no heartbeats): the views climb.
    c.filter = Some(Box::new(|_from, _to, kind| match kind {
        Kind::PrePrepare(_) | Kind::Heartbeat(_) => None,
        k => Some(k),
    }));
    assert!(c.run_until(20_000, |c| (1..=N).all(|i| c.replica(i).view() >= 12)));
    c.filter = None;
    // Consenter 4 goes down: the old set still orders (3 of 4), the new one needs 4 of 5.
    c.down.insert(N);
    c.submit(1, typed_envelope(ADD_FIFTH, HeaderType::Config));
    assert!(
        c.run_until(2_000, |c| (1..N).all(|i| c.replica(i).config().n() == 5)),
        "the configuration block adding consenter 5 did not commit"
    );
    assert!(
        c.run_until(5_000, |c| c.replica(N + 1).config().is_member()),
        "consenter 5 did not catch up to the block adding it"
    );
    let height = c.height(1);
    c.submit(1, envelope(77));
    assert!(
        c.run_until(20_000, |c| [1, 2, 3, N + 1]
            .iter()
            .all(|&i| c.height(i) > height)),
        "the new set (consenter 4 down) ordered nothing: views {:?}",
        [1, 2, 3, N + 1].map(|i| (c.replica(i).view(), c.replica(i).in_view_change()))
    );
}

/// Unsigned messages (`is_proof` false) are taken only from their sender's own link: a consenter
/// cannot vote or beat as another, signature or not.
#[test]
fn an_unsigned_message_counts_only_from_its_own_senders_link() {
    let mut c = Cluster::new();
    // Nothing moves on its own: the test hands replica 1 its messages.
    c.filter = Some(Box::new(|_from, _to, _kind| None));
    c.submit(1, envelope(1));
    let block = c
        .replica(1)
        .proposal
        .as_ref()
        .expect("leader proposed")
        .block
        .clone();
    let d = digest(&block);
    let commit = |sender: u32, c: &Cluster| ConsensusMessage {
        sender,
        channel_id: CHANNEL.into(),
        signature: Vec::new(),
        body: Body {
            kind: Some(Kind::Commit(Commit {
                view: 0,
                seq: 1,
                digest: d.clone(),
                block_signature: Some(c.block_signature(sender, 0, &block)),
            })),
        }
        .encode_to_vec(),
    };
    // Consenter 2 relays a commit "from" 3 over its own link.
    let forged = commit(3, &c);
    c.deliver(2, 1, forged);
    assert!(
        c.replica(1)
            .votes
            .get(&(0, 1))
            .is_none_or(|v| v.commit_digest(3).is_none()),
        "a commit counted for a consenter whose link did not carry it"
    );
    // The same commit over 3's own link counts.
    let genuine = commit(3, &c);
    c.deliver(3, 1, genuine);
    assert_eq!(
        c.replica(1).votes[&(0, 1)].commit_digest(3),
        Some(d.as_slice())
    );
}

/// A replica restarted while a proposal is in flight, on a channel whose configuration was
/// updated, resumes it with the signed value naming that configuration block: the value it
/// commits with (and signs) must be every replica's, or its block signature is invalid.
#[test]
fn a_proposal_resumed_after_a_configuration_update_keeps_its_signed_value() {
    let mut c = Cluster::new();
    c.submit(1, typed_envelope(1, HeaderType::Config));
    assert!(c.run_until(100, |c| (1..=N).all(|id| c.height(id) >= 2)));
    // No commit arrives: replica 3 accepts the next proposal and stays there.
    c.filter = Some(Box::new(|_from, _to, kind| match kind {
        Kind::Commit(_) => None,
        k => Some(k),
    }));
    c.submit(1, envelope(2));
    assert!(c.run_until(20, |c| c.replica(3).proposal.is_some()));
    let before = c
        .replica(3)
        .proposal
        .as_ref()
        .expect("accepted")
        .value
        .clone();
    assert_eq!(before, block_value(0, 2, 1));
    c.restart(3);
    let after = c
        .replica(3)
        .proposal
        .as_ref()
        .expect("resumed")
        .value
        .clone();
    assert_eq!(
        after,
        block_value(0, 2, 1),
        "the resumed proposal names another configuration"
    );
}

/// The leader proposes the next block as soon as it has its own commit quorum, often before the
/// others have theirs. A follower still committing takes that proposal up once it has committed,
/// instead of dropping it and stalling the slot until the leader's retransmission (a tick
/// later: the 1% of transactions that took ~250 ms more at light load in the network benchmark).
#[test]
fn a_proposal_arriving_before_the_previous_commit_is_taken_up_without_retransmission() {
    use std::cell::RefCell;
    use std::rc::Rc;
    let mut c = Cluster::new();
    let held: Rc<RefCell<Vec<(u32, u32, Kind)>>> = Rc::default();
    let hold = held.clone();
    c.filter = Some(Box::new(move |from, to, kind| match kind {
        Kind::Commit(cm) if cm.seq == 1 && (to == 3 || to == 4) => {
            hold.borrow_mut().push((from, to, Kind::Commit(cm)));
            None
        }
        k => Some(k),
    }));
    c.submit(1, envelope(1));
    assert_eq!((c.height(1), c.height(2)), (2, 2));
    assert_eq!((c.height(3), c.height(4)), (1, 1), "their commits are held");
    // The leader proposes block 2 at once; replicas 3 and 4 get it before they can commit 1.
    c.submit(1, envelope(2));
    assert_eq!(c.height(1), 2, "block 2 needs 3 or 4");
    c.filter = None;
    for (from, to, kind) in held.borrow_mut().drain(..) {
        let msg = c.signed(from, kind);
        c.deliver(from, to, msg);
    }
    c.pump();
    // No tick has passed: nothing was retransmitted.
    for i in 1..=N {
        assert_eq!(c.height(i), 3, "replica {i}");
    }
}

/// Found by the simulation (seed 81 of four replicas, once adaptive proposals changed its
/// schedule): a replica that had asked for a view change, its ViewChange saying it had prepared
/// nothing, went on to prepare the old view's block from late prepares and sent a Commit for it.
/// With a Byzantine leader's commit that completed a quorum in the old view that the next
/// view's NewView could not know of, and the next leader decided another block at the same
/// height: two correct replicas committed different blocks. After its ViewChange a replica
/// sends no Commit for the view it is leaving.
#[test]
fn a_replica_in_a_view_change_sends_no_commit_for_the_old_view() {
    use std::cell::RefCell;
    use std::rc::Rc;
    let mut c = Cluster::new();
    let held: Rc<RefCell<Vec<(u32, Kind)>>> = Rc::default();
    let hold = held.clone();
    c.filter = Some(Box::new(move |from, to, kind| match kind {
        // Replica 2 sees the proposal but nobody's prepares (held for later), and nobody's
        // view change (so it stays in its view change).
        Kind::Prepare(p) if to == 2 => {
            hold.borrow_mut().push((from, Kind::Prepare(p)));
            None
        }
        Kind::Prepare(_) | Kind::Commit(_) => None,
        Kind::ViewChange(_) if to == 2 => None,
        k => Some(k),
    }));
    c.submit(1, envelope(1));
    assert!(
        proposal_digest(&c, 2).is_some(),
        "replica 2 accepted the proposal"
    );
    // The leader falls silent: replica 2 asks for view 1, having prepared nothing.
    c.down.insert(1);
    assert!(c.run_until(200, |c| c.replica(2).in_view_change == Some(1)));
    // The old view's prepares arrive now.
    let late: Vec<(u32, Kind)> = held
        .borrow_mut()
        .drain(..)
        .filter(|(from, _)| *from != 2)
        .collect();
    assert!(late.len() >= 2, "{} prepares held", late.len());
    for (from, kind) in late {
        let msg = c.signed(from, kind);
        for o in c.deliver(from, 2, msg) {
            if let Output::Send { msg, .. } = o {
                assert!(
                    !matches!(kind_of(&msg), Some(Kind::Commit(_))),
                    "replica 2 sent a Commit for view 0 after its ViewChange"
                );
            }
        }
    }
    // Nor after a restart, which resumes the proposal with the prepares it got (a review found
    // the resumed replica sent the Commit before resuming its view change).
    for o in c.restart(2) {
        if let Output::Send { msg, .. } = o {
            assert!(
                !matches!(kind_of(&msg), Some(Kind::Commit(_))),
                "replica 2 sent a Commit for view 0 after restarting"
            );
        }
    }
}

/// A review found that commits of different views for one block added up to a quorum: PBFT's
/// safety needs 2f+1 commits of one view (f+1 correct replicas prepared in it, which every later
/// NewView shows). A view's commits sign a value naming that view, and only the proposal's
/// view's commits count.
#[test]
fn commits_of_different_views_do_not_make_a_quorum() {
    let mut c = Cluster::new();
    let block = c.propose_block_one(3);
    assert!(c.replica(3).proposal.is_some());
    // Replica 3 is not prepared (no prepares reach it); three commits arrive, from two views.
    for (from, view) in [(1, 0), (2, 1), (4, 1)] {
        let commit = c.commit_of(from, view, &block);
        c.deliver(from, 3, commit);
    }
    assert_eq!(
        c.height(3),
        1,
        "one commit of view 0 and two of view 1 decide nothing"
    );
    // Two more of view 0 do.
    for from in [2, 4] {
        let commit = c.commit_of(from, 0, &block);
        c.deliver(from, 3, commit);
    }
    assert_eq!(c.height(3), 2);
}

/// Found by the simulation (seed 1940 of four replicas): a replica that had asked for view 4
/// later installed view 3 when its NewView arrived, and voted there. Its ViewChange for view 4
/// (prepared: nothing) had already served in view 4's NewView, so a block committed in view 3
/// with its vote was unknown to view 4's leader, who decided another. A replica never installs a
/// view below one it asked to change to.
#[test]
fn a_replica_does_not_install_a_view_below_one_it_asked_for() {
    let mut c = Cluster::new();
    // Replicas 1 and 4 ask for view 3: with f+1 of them, replica 3 joins and asks too.
    for from in [1, 4] {
        let vc = c.signed(
            from,
            Kind::ViewChange(ViewChange {
                consenters_since: 0,
                next_view: 3,
                last_committed_seq: 1,
                prepared: None,
            }),
        );
        c.deliver(from, 3, vc);
    }
    assert_eq!(c.replica(3).in_view_change, Some(3));
    // Now a valid NewView for view 1 (leader 2, view changes from 1, 2 and 4).
    let vcs = [1, 2, 4]
        .map(|from| {
            c.signed(
                from,
                Kind::ViewChange(ViewChange {
                    consenters_since: 0,
                    next_view: 1,
                    last_committed_seq: 1,
                    prepared: None,
                }),
            )
        })
        .to_vec();
    let nv = c.signed(
        2,
        Kind::NewView(NewView {
            view: 1,
            view_changes: vcs,
        }),
    );
    c.deliver(2, 3, nv);
    assert_eq!(
        c.replica(3).durable.view,
        0,
        "view 1 is below the view 3 it asked for"
    );
    assert_eq!(c.replica(3).in_view_change, Some(3));
}

/// A consenter asked for a view the others never reach, its view change binding it never to act
/// in a lower view. When it commits a change of the consenter set, that promise no
/// longer binds (the new set does not count view changes sent under the old one), so it changes
/// view with the others. Before, it kept its high target and refused their lower NewView: with
/// consenter 4 down the new set (4 of 5 needed) stalled.
#[test]
fn a_replica_that_climbed_views_alone_changes_view_with_the_new_consenter_set() {
    let mut c = Cluster::new();
    c.add_replica(N + 1);
    c.filter = Some(Box::new(|from, to, kind| {
        (from != 2 && to != 2).then_some(kind)
    }));
    // Replica 2 is brought to ask for view 4 (f+1 view changes for it, as a faulty consenter
    // and a correct one could send) while the others stay in view 0.
    for from in [1, 3] {
        let m = view_change_to(&c, from, 4, 0);
        c.deliver(from, 2, m);
    }
    assert_eq!(c.replica(2).durable.view_change, 4);
    c.submit(1, typed_envelope(ADD_FIFTH, HeaderType::Config));
    assert!(
        c.run_until(5_000, |c| [1, 3, 4].iter().all(|&i| c
            .replica(i)
            .config()
            .n()
            == 5)
            && c.replica(N + 1).config().is_member()),
        "the configuration block adding consenter 5 did not commit"
    );
    c.filter = None;
    c.down.insert(4);
    let height = c.height(1);
    c.submit(1, envelope(77));
    assert!(
        c.run_until(3_000, |c| [1, 2, 3, N + 1]
            .iter()
            .all(|&i| c.height(i) > height)),
        "the new set (consenter 4 down) ordered nothing: views {:?}",
        [1, 2, 3, N + 1].map(|i| (c.replica(i).view(), c.replica(i).in_view_change))
    );
}

/// A view change names the consenter set it was asked under (`consenters_since`). One of an
/// earlier set (its sender has voted under this one since) or of a later one (it carries no
/// certificate for the block that changed the set, which this replica may lack) is neither
/// stored nor counted in a NewView, even one its sender's key still signs.
#[test]
fn a_view_change_of_another_consenter_set_does_not_count() {
    let mut c = Cluster::with_config(|id| Config {
        consenters_since: 1,
        ..config(id)
    });
    let vc = |c: &Cluster, from: u32, set: u64| view_change_to(c, from, 1, set);
    let new_view = |c: &Cluster, fourth: ConsensusMessage| {
        c.signed(
            2,
            Kind::NewView(NewView {
                view: 1,
                view_changes: vec![vc(c, 1, 1), vc(c, 2, 1), fourth],
            }),
        )
    };
    for other_set in [0, 2] {
        let other = vc(&c, 4, other_set);
        c.deliver(4, 3, other.clone());
        assert_eq!(
            stored_view_changes(c.replica(3)),
            0,
            "a view change of set {other_set} was stored"
        );
        let nv = new_view(&c, other);
        c.deliver(2, 3, nv);
        assert_eq!(
            c.replica(3).view(),
            0,
            "a NewView counted a view change of set {other_set}"
        );
    }
    let same = vc(&c, 4, 1);
    let nv = new_view(&c, same);
    c.deliver(2, 3, nv);
    assert_eq!(c.replica(3).view(), 1, "a valid NewView was refused");
}

/// A replica whose view fell far behind the others' (beyond `VIEW_CHANGE_WINDOW`) joins the
/// view f+1 of them ask for, instead of climbing one view per timeout while they drop its view
/// changes as out of range. One consenter alone asking for a far view moves nobody.
#[test]
fn a_replica_far_behind_in_view_joins_the_view_f_plus_1_others_ask_for() {
    let mut c = Cluster::new();
    let far = |c: &Cluster, from: u32| view_change_to(c, from, 40, 0);
    let m = far(&c, 1);
    c.deliver(1, 3, m);
    assert_eq!(c.replica(3).in_view_change, None, "one consenter moved it");
    let m = far(&c, 2);
    c.deliver(2, 3, m);
    assert_eq!(c.replica(3).in_view_change, Some(40));
}

/// A replica changing to a lower view joins the higher one f+1 others ask for: its own view
/// change does not count against them (it did, and such a replica never moved up).
#[test]
fn a_replica_changing_view_joins_the_higher_view_f_plus_1_others_ask_for() {
    let mut c = Cluster::new();
    let ask = |c: &Cluster, from: u32, view: u64| view_change_to(c, from, view, 0);
    for from in [1, 2] {
        let m = ask(&c, from, 1);
        c.deliver(from, 3, m);
    }
    assert_eq!(c.replica(3).in_view_change, Some(1));
    let m = ask(&c, 1, 4);
    c.deliver(1, 3, m);
    assert_eq!(
        c.replica(3).in_view_change,
        Some(1),
        "one consenter moved it"
    );
    let m = ask(&c, 2, 4);
    c.deliver(2, 3, m);
    assert_eq!(c.replica(3).in_view_change, Some(4));
}

/// A view change to a view no channel reaches is dropped: joined, it would leave no next view.
#[test]
fn a_view_change_beyond_the_last_view_is_dropped() {
    let mut c = Cluster::new();
    for from in [1, 2] {
        let m = c.signed(
            from,
            Kind::ViewChange(ViewChange {
                consenters_since: 0,
                next_view: u64::MAX,
                last_committed_seq: 1,
                prepared: None,
            }),
        );
        c.deliver(from, 3, m);
    }
    assert_eq!(c.replica(3).in_view_change, None);
}

/// A replica cut off from the others asks for one view more than theirs, not one more per
/// timeout (as PBFT: the next view only once a quorum wanted the current one). So it meets them
/// at their next view change: with the old leader down, ordering needs its vote at once.
#[test]
fn a_replica_cut_off_asks_for_one_view_more_and_meets_the_others_at_their_next() {
    let mut c = Cluster::new();
    c.filter = Some(Box::new(|from, to, kind| {
        (from != 3 && to != 3).then_some(kind)
    }));
    c.run_until(2_000, |_| false);
    assert_eq!(c.replica(3).in_view_change, Some(1));
    assert_eq!(c.replica(3).durable.view_change, 1, "it climbed alone");
    c.filter = None;
    c.down.insert(1);
    let height = c.height(2);
    c.submit(2, envelope(9));
    assert!(
        c.run_until(2_000, |c| [2, 3, 4].iter().all(|&i| c.height(i) > height)),
        "replicas 2, 3 and 4 ordered nothing: views {:?}",
        [2, 3, 4].map(|i| (c.replica(i).view(), c.replica(i).in_view_change))
    );
}

/// What `outputs` send to `to` (or to all), decoded.
fn sent_to(outputs: &[Output], to: u32) -> Vec<Kind> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send { to: t, msg } if t.is_none_or(|t| t == to) => kind_of(msg),
            _ => None,
        })
        .collect()
}

/// A signed view change from `from` for `view` under consenter set `set`, at height 1 and
/// with no certificate.
fn view_change_to(c: &Cluster, from: u32, view: u64, set: u64) -> ConsensusMessage {
    c.signed(
        from,
        Kind::ViewChange(ViewChange {
            consenters_since: set,
            next_view: view,
            last_committed_seq: 1,
            prepared: None,
        }),
    )
}

/// A replica that installed a view and is already changing to the next still relays that
/// view's NewView to a replica changing to it: installing cleared its view change for that
/// view, so without the NewView the other could not get there, nor (short of a quorum there)
/// ask for more.
#[test]
fn a_replica_changing_view_still_relays_the_new_view_it_installed() {
    let mut c = Cluster::new();
    let vcs: Vec<ConsensusMessage> = [2, 3, 4]
        .map(|from| view_change_to(&c, from, 1, 0))
        .to_vec();
    let nv = c.signed(
        2,
        Kind::NewView(NewView {
            view: 1,
            view_changes: vcs,
        }),
    );
    c.deliver(2, 1, nv);
    assert_eq!(c.replica(1).view(), 1);
    for from in [3, 4] {
        let m = view_change_to(&c, from, 2, 0);
        c.deliver(from, 1, m);
    }
    assert_eq!(c.replica(1).in_view_change, Some(2));
    let m = view_change_to(&c, 3, 1, 0);
    let out = c.deliver(3, 1, m);
    assert!(
        sent_to(&out, 3)
            .iter()
            .any(|k| matches!(k, Kind::NewView(NewView { view: 1, .. }))),
        "the NewView of view 1 was not relayed"
    );
}

/// After a consenter change each replica starts again from the view it installed, and those
/// differ. One that installed no view under the new set answers a view change for a view at or
/// below its own with its view change for that view, so the replicas behind reach a quorum
/// there (it never acts in that view itself).
#[test]
fn after_a_consenter_change_a_replica_gives_its_view_change_to_those_behind() {
    let mut c = Cluster::with_config(|id| Config {
        consenters_since: 1,
        ..config(id)
    });
    if let Some(d) = c.durables.get_mut(&3) {
        d.view = 5;
        d.view_change = 6;
    }
    c.restart(3);
    assert_eq!(c.replica(3).in_view_change, Some(6));
    let m = view_change_to(&c, 4, 5, 1);
    let out = c.deliver(4, 3, m);
    assert!(
        sent_to(&out, 4).iter().any(|k| matches!(
            k,
            Kind::ViewChange(ViewChange {
                next_view: 5,
                consenters_since: 1,
                ..
            })
        )),
        "no view change for view 5 was given to replica 4"
    );
    assert_eq!(c.replica(3).in_view_change, Some(6));
}

/// A view change far below our target (beyond the window) is not stored: a faulty consenter
/// sending one per view would grow what we hold past `held_bound`. A replica that installed no
/// view under its (new) consenter set, such as a newcomer whose target came from the views it
/// saw, still answers it with its own, so those behind can reach a quorum.
#[test]
fn a_view_change_far_below_the_target_is_answered_not_stored() {
    let mut c = Cluster::with_config(|id| Config {
        consenters_since: 1,
        ..config(id)
    });
    if let Some(d) = c.durables.get_mut(&3) {
        d.view_change = 30;
    }
    c.restart(3);
    assert_eq!(c.replica(3).in_view_change, Some(30));
    let held = stored_view_changes(c.replica(3));
    let answered = |out: &[Output], view: u64| {
        sent_to(out, 4).iter().any(
            |k| matches!(k, Kind::ViewChange(ViewChange { next_view, .. }) if *next_view == view),
        )
    };
    // Replica 4 asks for 20, then (a tick later, having moved on) for 21: both answered.
    // Replaying its older view change right after buys no further signature.
    for (view, expected) in [(20u64, true), (21, true), (20, false)] {
        let m = view_change_to(&c, 4, view, 1);
        let out = c.deliver(4, 3, m);
        assert_eq!(
            stored_view_changes(c.replica(3)),
            held,
            "view {view} was stored"
        );
        assert_eq!(answered(&out, view), expected, "answer for view {view}");
        c.tick();
    }
}

/// After a view is installed, a follower forwards every request it holds to the new leader at
/// the next tick, not a whole re-forward interval later: its earlier forwards may all have been
/// lost, and a configuration block removing it meanwhile would drop the acknowledged requests
/// only it holds (seen in the reconfiguration process test).
#[test]
fn a_follower_forwards_its_requests_to_a_new_leader_at_once() {
    let drop_forwards = std::rc::Rc::new(std::cell::Cell::new(true));
    let dropping = drop_forwards.clone();
    let mut c = Cluster::new();
    c.filter = Some(Box::new(move |from, _to, kind| match kind {
        Kind::Forward(_) if from == 3 && dropping.get() => None,
        k => Some(k),
    }));
    c.submit(3, envelope(9));
    c.down.insert(1);
    assert!(c.run_until(2_000, |c| {
        [2, 3, 4]
            .iter()
            .all(|&i| c.replica(i).view() >= 1 && !c.replica(i).in_view_change())
    }));
    drop_forwards.set(false);
    let ordered = |c: &Cluster| {
        c.chains[&2].iter().any(|b| {
            b.data
                .as_ref()
                .is_some_and(|d| d.data.contains(&envelope(9)))
        })
    };
    assert!(!ordered(&c));
    assert!(
        c.run_until(5, ordered),
        "the request only replica 3 held was not ordered right after the view change"
    );
}
