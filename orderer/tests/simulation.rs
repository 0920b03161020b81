//! Deterministic simulation of the BFT consensus core: 4 and 7 replicas under a seeded network
//! that loses, delays, reorders and duplicates messages, partitions and heals, crashes and
//! restarts replicas (from their written-ahead state), with one faulty consenter of three
//! kinds: a Byzantine replica that equivocates when leading, forges votes and proposes invalid
//! transactions; one whose messages get small-scope faults (`medledger_orderer::faults`: view
//! or sequence off by one, replayed proposals, stripped or padded block metadata, forged
//! heights in view changes, byte mutations); or Twins, two replicas with one identity and keys
//! but separate state, one of them starting late from nothing (equivocation and lost state).
//!
//! Checked for every seed: no two correct replicas commit different blocks at a height, nor
//! does a correct replica vote for two blocks at one (view, seq) across its restarts; every
//! committed block carries a valid quorum of consenter signatures and the metadata a sealed
//! block has; what a replica holds of other consenters' messages stays within its bounds;
//! after the network heals, the correct replicas converge within `LIVENESS_TICKS` and every
//! request a correct replica acknowledged is ordered exactly once.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use medledger_common::PrivateKey;
use medledger_common::SigningIdentity;
use medledger_common::channelconfig::{
    BftSettings, ChannelConfig, ChannelProfile, OrgProfile, config_of_block, genesis_block,
    set_consenters,
};
use medledger_common::configtx::{compute_update, sign_config_update, update_envelope};
use medledger_common::issue::{CaSigner, IssueRequest, Usage, random_serial};
use medledger_common::msp::{org_msp_config, unix_now};
use medledger_common::protoutil::{
    BLOCK_METADATA_SLOTS, block_header_hash, is_config_block, signed_envelope,
};
use medledger_orderer::consensus::{
    AppliedConfig, BatchConfig, Config, Crypto, DEFAULT_MAX_POOL_BYTES, DEFAULT_MAX_POOL_REQUESTS,
    Durable, Held, Output, Replica, RequestError, Restored, txid_of,
};
use medledger_orderer::crypto::ConsenterCrypto;
use medledger_orderer::faults::{Fault, Mutator};
use medledger_orderer::recent::{RecentTxids, window_start};
use medledger_proto::common::{
    Block, ConfigUpdateEnvelope, Consenter, HeaderType, MetadataSignature,
};
use medledger_proto::medledger::consensus::{Body, ConsensusMessage, body::Kind};
use medledger_proto::orderer::BatchSize;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CHANNEL: &str = "medchannel";

/// After the network heals, the correct replicas must have converged (same height, nothing
/// pending, every acknowledged request ordered) within this many ticks. Dozens of view-change
/// timeouts: enough for any legitimate recovery, far less than "eventually".
const LIVENESS_TICKS: u64 = 6000;

/// Requests held back until the network heals, so every seed shows progress after healing (not
/// only the draining of what was submitted before).
const AFTER_HEALING: usize = 10;

fn identity(ca: &CaSigner, mspid: &str, name: &str, ou: &str) -> SigningIdentity {
    let key = PrivateKey::generate();
    let now = unix_now();
    let pem = ca
        .issue(&IssueRequest {
            public_key: key.public_key(),
            common_name: name.into(),
            organization: None,
            organizational_units: vec![ou.into()],
            hosts: vec![],
            attributes: Default::default(),
            serial: random_serial(),
            not_before: now - 60,
            not_after: now + 3600,
            usage: Usage::Signing,
        })
        .expect("issue");
    SigningIdentity::new(mspid, pem.into_bytes(), key).expect("identity")
}

/// Keys, channel configuration and signed requests, made once per replica count.
struct World {
    n: usize,
    genesis: Block,
    config: ChannelConfig,
    /// Consenter keys by identity (0-based): the first `n` are the genesis consenters, one more
    /// is the spare a reconfiguration adds.
    orderers: Vec<SigningIdentity>,
    cryptos: Vec<Arc<ConsenterCrypto>>,
    /// The orderer organisation's admin, who signs consenter set changes.
    admin: SigningIdentity,
    requests: Vec<Vec<u8>>,
    /// A request that is well-formed but signed by nobody the channel knows.
    foreign_request: Vec<u8>,
}

impl World {
    fn new(n: usize, requests: usize) -> Self {
        let ord_ca = CaSigner::new_root("ca.orderer", "OrdererMSP", 5).unwrap();
        let app_ca = CaSigner::new_root("ca.hospital1", "Hospital1MSP", 5).unwrap();
        let orderers: Vec<SigningIdentity> = (1..=n + 1)
            .map(|i| identity(&ord_ca, "OrdererMSP", &format!("orderer{i}"), "orderer"))
            .collect();
        let admin = identity(&ord_ca, "OrdererMSP", "admin", "admin");
        let client = identity(&app_ca, "Hospital1MSP", "client", "client");
        let profile = ChannelProfile {
            channel_id: CHANNEL.into(),
            application_orgs: vec![OrgProfile {
                msp: org_msp_config("Hospital1MSP", app_ca.cert_pem().as_bytes(), None),
                anchor_peers: vec![],
            }],
            orderer_orgs: vec![OrgProfile {
                msp: org_msp_config("OrdererMSP", ord_ca.cert_pem().as_bytes(), None),
                anchor_peers: vec![],
            }],
            consenters: (0..n).map(|i| consenter(&orderers, i)).collect(),
            batch_size: BatchSize {
                max_message_count: 10,
                absolute_max_bytes: 1 << 20,
                preferred_max_bytes: 1 << 19,
            },
            batch_timeout: Duration::from_millis(100),
        };
        let genesis = genesis_block(&profile).unwrap();
        let config = ChannelConfig::from_block(&genesis).unwrap();
        let cryptos = orderers
            .iter()
            .enumerate()
            .map(|(i, o)| {
                Arc::new(ConsenterCrypto::new(i as u32 + 1, o.clone(), config.clone()).unwrap())
            })
            .collect();
        let requests = (0..requests)
            .map(|i| {
                signed_envelope(
                    HeaderType::EndorserTransaction,
                    CHANNEL,
                    format!("tx {i}").into_bytes(),
                    &client,
                )
                .unwrap()
                .encode_to_vec()
            })
            .collect();
        let stranger = identity(
            &CaSigner::new_root("x", "Hospital1MSP", 1).unwrap(),
            "Hospital1MSP",
            "mallory",
            "client",
        );
        let foreign_request = signed_envelope(
            HeaderType::EndorserTransaction,
            CHANNEL,
            b"evil".to_vec(),
            &stranger,
        )
        .unwrap()
        .encode_to_vec();
        Self {
            n,
            genesis,
            config,
            orderers,
            cryptos,
            admin,
            requests,
            foreign_request,
        }
    }

    /// The CONFIG transaction that gives the channel `consenters`, as the orderer with identity
    /// `via` makes it from the admin's update against the configuration `blocks` end with.
    fn consenter_change(&self, via: usize, blocks: &[Block], consenters: &[usize]) -> Vec<u8> {
        let current = config_in_force(blocks).1;
        let original = config_of_block(&blocks[config_in_force(blocks).0 as usize]).unwrap();
        let mut updated = original.clone();
        set_consenters(
            &mut updated,
            consenters
                .iter()
                .map(|&i| consenter(&self.orderers, i))
                .collect(),
        )
        .unwrap();
        let update = compute_update(CHANNEL, &original, &updated)
            .unwrap()
            .encode_to_vec();
        let signature = sign_config_update(&update, &self.admin).unwrap();
        let envelope = update_envelope(
            CHANNEL,
            &ConfigUpdateEnvelope {
                config_update: update,
                signatures: vec![signature],
            },
            &self.admin,
        )
        .unwrap();
        ConsenterCrypto::new(via as u32 + 1, self.orderers[via].clone(), current)
            .unwrap()
            .config_transaction(&envelope)
            .unwrap()
            .encode_to_vec()
    }

    fn config(&self, id: u32, consenters: Vec<u32>) -> Config {
        Config {
            channel_id: CHANNEL.into(),
            self_id: id,
            consenters,
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
}

/// Consenter `i` (0-based identity) as a channel configuration names it.
fn consenter(orderers: &[SigningIdentity], i: usize) -> Consenter {
    Consenter {
        id: i as u32 + 1,
        host: "127.0.0.1".into(),
        port: 7050 + i as u32,
        msp_id: "OrdererMSP".into(),
        identity: orderers[i].cert_pem().to_vec(),
        ..Default::default()
    }
}

/// The newest configuration block among `blocks` (a chain from genesis) and its configuration.
fn config_in_force(blocks: &[Block]) -> (u64, ChannelConfig) {
    let at = blocks.iter().rposition(is_config_block).unwrap_or(0);
    (at as u64, ChannelConfig::from_block(&blocks[at]).unwrap())
}

/// The simulation's timeouts in the units a channel configuration sets (20 ms ticks):
/// configuration blocks put these in force rather than the channel's production defaults.
fn sim_bft() -> BftSettings {
    BftSettings {
        leader_timeout: Duration::from_millis(800),
        heartbeat_interval: Duration::from_millis(100),
        request_complain_timeout: Duration::from_millis(1800),
        view_change_timeout: Duration::from_millis(1400),
        view_change_resend_interval: Duration::from_millis(240),
        request_pool_size: DEFAULT_MAX_POOL_REQUESTS,
    }
}

/// A consenter's real crypto, with the simulation's timeouts in each configuration it puts in
/// force.
struct SimCrypto(ConsenterCrypto);

impl Crypto for SimCrypto {
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.0.sign(msg)
    }
    fn verify(&self, signer: u32, msg: &[u8], sig: &[u8]) -> bool {
        self.0.verify(signer, msg, sig)
    }
    fn sign_block(&self, block: &Block, value: &[u8]) -> Option<MetadataSignature> {
        self.0.sign_block(block, value)
    }
    fn verify_block_signature(
        &self,
        signer: u32,
        block: &Block,
        value: &[u8],
        sig: &MetadataSignature,
    ) -> bool {
        self.0.verify_block_signature(signer, block, value, sig)
    }
    fn check_request(&self, envelope: &[u8]) -> Result<String, RequestError> {
        self.0.check_request(envelope)
    }
    fn is_config_request(&self, envelope: &[u8]) -> bool {
        self.0.is_config_request(envelope)
    }
    fn apply_config_block(&self, block: &Block) -> Option<AppliedConfig> {
        let mut applied = self.0.apply_config_block(block)?;
        applied.settings.bft = sim_bft();
        Some(applied)
    }
}

struct Node {
    /// The consenter this node runs as (0-based): Twins share one.
    identity: usize,
    replica: Option<Replica>,
    durable: Durable,
    blocks: Vec<Block>,
}

#[derive(Clone, Copy)]
struct Faults {
    loss: f64,
    dup: f64,
    max_delay: u64,
}

/// The faulty consenter of a run, by identity (0-based).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Faulty {
    None,
    /// Equivocating proposals, invalid transactions, forged votes (`Sim::corrupt`).
    Byzantine(usize),
    /// Every message rewritten with one fault (`Mutator::rewrite`).
    Mutating(usize),
    /// A second node with the same identity and keys and its own state, started late.
    Twins(usize),
}

impl Faulty {
    fn identity(self) -> Option<usize> {
        match self {
            Self::None => None,
            Self::Byzantine(i) | Self::Mutating(i) | Self::Twins(i) => Some(i),
        }
    }
}

struct Sim<'w> {
    world: &'w World,
    rng: StdRng,
    now: u64,
    nodes: Vec<Node>,
    queue: BinaryHeap<Reverse<(u64, u64, usize, usize)>>,
    in_flight: BTreeMap<u64, ConsensusMessage>,
    next_msg: u64,
    faults: Faults,
    /// Links cut until the given tick: (a, b) both directions, by node.
    cut: Vec<(usize, usize, u64)>,
    faulty: Faulty,
    mutator: Mutator,
    /// Requests a correct node accepted, and which node: one a reconfiguration removed before
    /// it was ordered may be lost with that node (its clients must retry elsewhere).
    acked: BTreeMap<String, usize>,
    /// The digest each node proposed or voted for at (node, view, seq), across its restarts:
    /// a second one from a correct node is equivocation.
    votes: BTreeMap<(usize, u64, u64), Vec<u8>>,
    /// Twins' first votes by (view, seq): a second digest from the other twin is the
    /// equivocation the network has to withstand (counted for the coverage report).
    twin_votes: BTreeMap<(u64, u64), Vec<u8>>,
    twin_equivocations: u64,
    /// The largest `Replica::held` seen on a correct node, field by field.
    max_held: Held,
}

impl<'w> Sim<'w> {
    /// With `spare`, one more node, for the consenter a reconfiguration adds: booted by `run`.
    fn new(world: &'w World, seed: u64, faulty: Faulty, spare: bool) -> Self {
        let mut identities: Vec<usize> = (0..world.n).collect();
        if let Faulty::Twins(i) = faulty {
            identities.push(i);
        }
        if spare {
            identities.push(world.n);
        }
        let nodes = identities
            .into_iter()
            .enumerate()
            .map(|(k, identity)| {
                let mut n = Node {
                    identity,
                    replica: None,
                    durable: Durable::default(),
                    blocks: vec![world.genesis.clone()],
                };
                // The second twin and the spare start later, from nothing (`run`).
                if k < world.n {
                    n.replica = Some(Self::boot(world, &n));
                }
                n
            })
            .collect();
        Self {
            world,
            rng: StdRng::seed_from_u64(seed),
            now: 0,
            nodes,
            queue: BinaryHeap::new(),
            in_flight: BTreeMap::new(),
            next_msg: 0,
            faults: Faults {
                loss: 0.0,
                dup: 0.0,
                max_delay: 1,
            },
            cut: Vec::new(),
            faulty,
            mutator: Mutator::new(seed),
            acked: BTreeMap::new(),
            votes: BTreeMap::new(),
            twin_votes: BTreeMap::new(),
            twin_equivocations: 0,
            max_held: Held::default(),
        }
    }

    fn boot(world: &World, node: &Node) -> Replica {
        let mut committed = RecentTxids::default();
        let start = window_start(node.blocks.len() as u64).max(1);
        for (n, b) in node.blocks.iter().enumerate().skip(start as usize) {
            committed.record_block(n as u64, b);
        }
        let last = node
            .blocks
            .last()
            .and_then(|b| b.header.as_ref())
            .map(block_header_hash)
            .unwrap_or_default();
        let i = node.identity;
        // What a restarted orderer does: the configuration in force from its own blocks.
        let (last_config, config) = config_in_force(&node.blocks);
        let consenters: Vec<u32> = config.consenters.iter().map(|c| c.id).collect();
        // The consenters the newest change of the set removed, and the block that removed them,
        // as the node finds them.
        let configs: Vec<(usize, ChannelConfig)> = node
            .blocks
            .iter()
            .enumerate()
            .take(last_config as usize + 1)
            .filter(|(_, b)| is_config_block(b))
            .map(|(n, b)| (n, ChannelConfig::from_block(b).unwrap()))
            .collect();
        let changed = configs
            .windows(2)
            .rev()
            .find(|w| w[0].1.consenters != w[1].1.consenters);
        let (former, consenters_since) = changed
            .map(|w| {
                let removed = w[0]
                    .1
                    .consenters
                    .iter()
                    .map(|c| c.id)
                    .filter(|id| !consenters.contains(id))
                    .collect();
                (removed, w[1].0 as u64 + 1)
            })
            .unwrap_or_default();
        let crypto: Arc<dyn Crypto> = Arc::new(SimCrypto(
            ConsenterCrypto::new(i as u32 + 1, world.orderers[i].clone(), config).unwrap(),
        ));
        Replica::new(
            Config {
                former,
                consenters_since,
                ..world.config(i as u32 + 1, consenters)
            },
            crypto,
            Restored {
                durable: node.durable.clone(),
                height: node.blocks.len() as u64,
                last_hash: last.to_vec(),
                committed_txids: committed,
                last_config,
            },
        )
    }

    fn is_faulty(&self, node: usize) -> bool {
        self.faulty.identity() == Some(self.nodes[node].identity)
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        !self
            .cut
            .iter()
            .any(|&(x, y, until)| self.now < until && ((x == a && y == b) || (x == b && y == a)))
    }

    /// Sends from node `from` to node `to`.
    fn send(&mut self, from: usize, to: usize, msg: ConsensusMessage) {
        if from == to || !self.linked(from, to) || self.rng.gen_bool(self.faults.loss) {
            return;
        }
        let copies = if self.rng.gen_bool(self.faults.dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = self.now + self.rng.gen_range(1..=self.faults.max_delay);
            self.next_msg += 1;
            self.in_flight.insert(self.next_msg, msg.clone());
            self.queue.push(Reverse((at, self.next_msg, from, to)));
        }
    }

    /// The nodes that receive what is addressed to consenter `identity` (both twins).
    fn nodes_of(&self, identity: usize) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&k| self.nodes[k].identity == identity)
            .collect()
    }

    /// The Byzantine replica rewrites what it sends: per-recipient proposals (equivocation),
    /// invalid transactions in proposals, and forged votes.
    fn corrupt(&mut self, to: usize, kind: Kind) -> Option<Kind> {
        Some(match kind {
            Kind::PrePrepare(mut pp) => {
                if let Some(block) = pp.block.as_mut()
                    && let Some(data) = block.data.as_mut()
                {
                    if to.is_multiple_of(2) && data.data.len() > 1 {
                        data.data.pop();
                    } else if self.rng.gen_bool(0.5) {
                        data.data.push(self.world.foreign_request.clone());
                    }
                    let hash = medledger_common::protoutil::block_data_hash(data).to_vec();
                    if let Some(h) = block.header.as_mut() {
                        h.data_hash = hash;
                    }
                }
                Kind::PrePrepare(pp)
            }
            Kind::Prepare(mut p) if self.rng.gen_bool(0.5) => {
                p.digest = vec![self.rng.r#gen::<u8>(); 32];
                Kind::Prepare(p)
            }
            Kind::Commit(mut c) if self.rng.gen_bool(0.5) => {
                if let Some(sig) = c.block_signature.as_mut() {
                    sig.signature = vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01];
                }
                Kind::Commit(c)
            }
            other => other,
        })
    }

    /// What the faulty node `from` sends to node `to` in place of `msg` (`None`: nothing),
    /// signed with the faulty consenter's key so it reaches the handlers.
    fn misbehave(
        &mut self,
        from: usize,
        to: usize,
        msg: ConsensusMessage,
    ) -> Option<ConsensusMessage> {
        let Ok(Body { kind: Some(kind) }) = Body::decode(msg.body.as_slice()) else {
            return Some(msg);
        };
        let kind = match self.faulty {
            Faulty::Byzantine(_) => self.corrupt(to, kind)?,
            Faulty::Mutating(_) => self.mutator.rewrite(kind)?,
            Faulty::Twins(_) | Faulty::None => return Some(msg),
        };
        let body = Body { kind: Some(kind) }.encode_to_vec();
        let crypto = &self.world.cryptos[self.nodes[from].identity];
        Some(ConsensusMessage {
            signature: crypto.sign(&body),
            body,
            ..msg
        })
    }

    fn apply(&mut self, i: usize, outputs: Vec<Output>) {
        let me = self.nodes[i].identity;
        for o in outputs {
            match o {
                Output::Send { to, msg } => {
                    self.check_vote(i, &msg);
                    let targets: Vec<usize> = match to {
                        Some(t) => self.nodes_of(t as usize - 1),
                        None => (0..self.nodes.len())
                            .filter(|&k| self.nodes[k].identity != me)
                            .collect(),
                    };
                    for t in targets {
                        let m = if self.is_faulty(i) {
                            match self.misbehave(i, t, msg.clone()) {
                                Some(m) => m,
                                None => continue,
                            }
                        } else {
                            msg.clone()
                        };
                        self.send(i, t, m);
                    }
                }
                Output::Commit(block) => {
                    let node = &mut self.nodes[i];
                    assert_eq!(
                        block.header.as_ref().unwrap().number,
                        node.blocks.len() as u64,
                        "node {i} committed out of order"
                    );
                    node.blocks.push(block);
                }
                Output::Wal(op) => self.nodes[i].durable.apply(&op),
                Output::ServeState {
                    to,
                    from_seq,
                    until,
                } => {
                    let blocks: Vec<Block> = self.nodes[i]
                        .blocks
                        .iter()
                        .skip(from_seq as usize)
                        .take(20)
                        .take_while(|b| b.header.as_ref().is_some_and(|h| h.number < until))
                        .cloned()
                        .collect();
                    if let Some(r) = &self.nodes[i].replica {
                        let msg = r.state_response_message(blocks);
                        for t in self.nodes_of(to as usize - 1) {
                            let m = if self.is_faulty(i) {
                                match self.misbehave(i, t, msg.clone()) {
                                    Some(m) => m,
                                    None => continue,
                                }
                            } else {
                                msg.clone()
                            };
                            self.send(i, t, m);
                        }
                    }
                }
            }
        }
    }

    /// A correct replica never proposes or votes for two blocks at one (view, seq), whatever
    /// crashes it went through. Twins do, between them: counted, as the equivocation the
    /// others must withstand.
    fn check_vote(&mut self, i: usize, msg: &ConsensusMessage) {
        let slot = match Body::decode(msg.body.as_slice()).ok().and_then(|b| b.kind) {
            Some(Kind::PrePrepare(pp)) => pp.block.as_ref().and_then(|b| {
                b.header
                    .as_ref()
                    .map(|h| (pp.view, pp.seq, block_header_hash(h).to_vec()))
            }),
            Some(Kind::Prepare(p)) => Some((p.view, p.seq, p.digest)),
            Some(Kind::Commit(c)) => Some((c.view, c.seq, c.digest)),
            _ => None,
        };
        let Some((v, s, d)) = slot else { return };
        let faulty = self.is_faulty(i);
        let first = self.votes.entry((i, v, s)).or_insert_with(|| d.clone());
        assert!(
            faulty || *first == d,
            "node {i} voted for two blocks at view {v}, seq {s}"
        );
        if matches!(self.faulty, Faulty::Twins(_)) && faulty {
            let twin = self.twin_votes.entry((v, s)).or_insert_with(|| d.clone());
            if *twin != d {
                self.twin_equivocations += 1;
            }
        }
    }

    fn step(&mut self) {
        self.now += 1;
        while let Some(Reverse((at, id, from, to))) = self.queue.peek().copied() {
            if at > self.now {
                break;
            }
            self.queue.pop();
            let Some(msg) = self.in_flight.remove(&id) else {
                continue;
            };
            let sender = self.nodes[from].identity as u32 + 1;
            if matches!(self.faulty, Faulty::Mutating(_)) && self.is_faulty(to) {
                self.mutator.observe(&msg.body);
            }
            let out = match self.nodes[to].replica.as_mut() {
                Some(r) => r.receive(sender, msg),
                None => continue,
            };
            self.apply(to, out);
        }
        for i in 0..self.nodes.len() {
            let out = match self.nodes[i].replica.as_mut() {
                Some(r) => r.tick(),
                None => continue,
            };
            self.apply(i, out);
        }
        self.check_bounds();
    }

    /// What other consenters can make a correct replica hold stays within its bounds.
    fn check_bounds(&mut self) {
        for i in self.correct() {
            let Some(r) = &self.nodes[i].replica else {
                continue;
            };
            let (held, bound) = (r.held(), r.held_bound());
            assert!(
                held.within(&bound),
                "node {i} holds {held:?}, beyond {bound:?}"
            );
            let m = &mut self.max_held;
            m.vote_slots = m.vote_slots.max(held.vote_slots);
            m.votes = m.votes.max(held.votes);
            m.view_changes = m.view_changes.max(held.view_changes);
            m.refused_view_changes = m.refused_view_changes.max(held.refused_view_changes);
            m.per_consenter = m.per_consenter.max(held.per_consenter);
            m.new_views_sent = m.new_views_sent.max(held.new_views_sent);
        }
    }

    /// Submits a request to node `i`; whether it was accepted.
    fn submit(&mut self, i: usize, req: Vec<u8>) -> bool {
        let Some(r) = self.nodes[i].replica.as_mut() else {
            return false;
        };
        let txid = txid_of(&req).unwrap();
        let (result, out) = r.submit(req);
        let accepted = result.is_ok();
        if accepted && !self.is_faulty(i) {
            self.acked.insert(txid, i);
        }
        self.apply(i, out);
        accepted
    }

    /// The correct nodes running as consenters of the configuration they have in force.
    fn members(&self) -> Vec<usize> {
        self.correct()
            .into_iter()
            .filter(|&i| {
                self.nodes[i]
                    .replica
                    .as_ref()
                    .is_some_and(|r| r.config().is_member())
            })
            .collect()
    }

    /// The correct nodes of the consenters in force at the longest correct chain: those that
    /// must converge (one removed stops at the block removing it).
    fn final_members(&self) -> Vec<usize> {
        let Some(ahead) = self
            .members()
            .into_iter()
            .max_by_key(|&i| self.nodes[i].blocks.len())
        else {
            return Vec::new();
        };
        let Some(r) = &self.nodes[ahead].replica else {
            return Vec::new();
        };
        let set = r.config().consenters.clone();
        self.members()
            .into_iter()
            .filter(|&i| set.contains(&(self.nodes[i].identity as u32 + 1)))
            .collect()
    }

    /// Requests acknowledged by one of `nodes`: those that must be ordered.
    fn acked_by(&self, nodes: &[usize]) -> Vec<&String> {
        self.acked
            .iter()
            .filter(|(_, n)| nodes.contains(n))
            .map(|(t, _)| t)
            .collect()
    }

    /// The nodes of correct consenters.
    fn correct(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| !self.is_faulty(i))
            .collect()
    }

    fn check_safety(&self) {
        let correct = self.correct();
        let longest = correct
            .iter()
            .map(|&i| self.nodes[i].blocks.len())
            .max()
            .unwrap_or(0);
        for h in 0..longest {
            let mut seen: Option<(usize, Vec<u8>)> = None;
            for &i in &correct {
                if let Some(b) = self.nodes[i].blocks.get(h) {
                    let hash = block_header_hash(b.header.as_ref().unwrap()).to_vec();
                    match &seen {
                        None => seen = Some((i, hash)),
                        Some((j, other)) => assert_eq!(
                            &hash, other,
                            "replicas {i} and {j} committed different blocks at height {h}"
                        ),
                    }
                }
            }
        }
    }
}

/// What the seeds exercised.
#[derive(Default, Debug)]
struct Coverage {
    view_changes: u64,
    byzantine_runs: u64,
    mutating_runs: u64,
    twins_runs: u64,
    twin_equivocations: u64,
    crashes: u64,
    partitions: u64,
    blocks: u64,
    /// The longest time (ticks) to converge after the network healed.
    max_ticks_to_converge: u64,
    faults: BTreeMap<Fault, u64>,
    max_held: Held,
    /// Consenter set changes ordered (an add and a removal per reconfiguring seed).
    consenter_changes: u64,
}

/// The genesis consenter a reconfiguring run removes: not the faulty one, which must stay to
/// keep misbehaving.
fn removed(faulty: Faulty) -> usize {
    if faulty.identity() == Some(0) { 1 } else { 0 }
}

/// Where a reconfiguring run is: the spare consenter is added, then a genesis one removed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reconfig {
    /// Adding the spare from this tick on.
    Add {
        at: u64,
    },
    /// Removing this identity from this tick on, once the add is committed.
    Remove {
        at: u64,
        victim: usize,
    },
    Done,
}

impl Sim<'_> {
    /// Submits the next consenter set change when it is due, through the correct consenter
    /// with the longest chain (its configuration is the newest).
    fn reconfigure(&mut self, state: &mut Reconfig) {
        let spare = self.world.n;
        let (at, set): (u64, Vec<usize>) = match *state {
            Reconfig::Add { at } => (at, (0..=spare).collect()),
            Reconfig::Remove { at, victim } => (at, (0..=spare).filter(|&i| i != victim).collect()),
            Reconfig::Done => return,
        };
        if self.now < at || !self.now.is_multiple_of(10) {
            return;
        }
        let Some(via) = self
            .members()
            .into_iter()
            .max_by_key(|&i| self.nodes[i].blocks.len())
        else {
            return;
        };
        let in_force = config_in_force(&self.nodes[via].blocks).1;
        if let Reconfig::Remove { .. } = state
            && in_force.consenter(spare as u32 + 1).is_none()
        {
            // The add is not committed yet (or its request was lost with a crash): wait.
            return;
        }
        let tx =
            self.world
                .consenter_change(self.nodes[via].identity, &self.nodes[via].blocks, &set);
        if self.submit(via, tx) {
            *state = match *state {
                Reconfig::Add { .. } => Reconfig::Remove {
                    at: self.now + 200,
                    victim: removed(self.faulty),
                },
                _ => Reconfig::Done,
            };
        }
    }
}

/// One seeded run; with `reconfigure`, the spare consenter is added during the faults and a
/// genesis consenter removed after it.
fn run(world: &World, seed: u64, cov: &mut Coverage, reconfigure: bool) {
    let n = world.n;
    let f = (n - 1) / 3;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let faulty_id = if rng.gen_bool(0.6) {
        Some(rng.gen_range(0..n))
    } else {
        None
    };
    // A separate stream, so the other draws (and so the seeds' scenarios) stay as they were.
    let mut kind = StdRng::seed_from_u64(seed ^ 0x7715);
    let faulty = match (faulty_id, kind.gen_range(0..3)) {
        (None, _) => Faulty::None,
        (Some(i), 0) => Faulty::Byzantine(i),
        (Some(i), 1) => Faulty::Mutating(i),
        (Some(i), _) => Faulty::Twins(i),
    };
    // Twins matter most as a leader: both propose, each from its own pool. View 0's leader then.
    let faulty = match faulty {
        Faulty::Twins(_) if kind.gen_bool(0.5) => Faulty::Twins(0),
        other => other,
    };
    let twin_boot = kind.gen_range(0..400u64);
    let byzantine = faulty.identity();
    let mut sim = Sim::new(world, seed, faulty, reconfigure);
    let mut membership = StdRng::seed_from_u64(seed ^ 0xc0f1);
    let spare_node = sim.nodes.len() - 1;
    let spare_boot = membership.gen_range(0..300u64);
    let mut reconfig = if reconfigure {
        Reconfig::Add {
            at: membership.gen_range(50..600),
        }
    } else {
        Reconfig::Done
    };
    sim.faults = Faults {
        loss: rng.gen_range(0.0..0.12),
        dup: rng.gen_range(0.0..0.1),
        max_delay: rng.gen_range(1..6),
    };
    let chaos_until = 700u64;
    let mut next_req = 0usize;
    let mut crashed: Option<(usize, u64)> = None;
    let boot_twin = |sim: &mut Sim| {
        if let Some(twin) = sim.nodes.get(n)
            && twin.replica.is_none()
        {
            let r = Sim::boot(world, twin);
            sim.nodes[n].replica = Some(r);
        }
    };
    while sim.now < chaos_until {
        if sim.now == twin_boot {
            boot_twin(&mut sim);
        }
        if reconfigure && sim.now == spare_boot {
            let r = Sim::boot(world, &sim.nodes[spare_node]);
            sim.nodes[spare_node].replica = Some(r);
        }
        sim.reconfigure(&mut reconfig);
        // Clients submit to random replicas.
        if next_req < world.requests.len() - AFTER_HEALING && rng.gen_bool(0.25) {
            let target = rng.gen_range(0..n);
            sim.submit(target, world.requests[next_req].clone());
            next_req += 1;
        }
        // Partitions that heal (a twin can land on either side).
        if rng.gen_bool(0.01) {
            cov.partitions += 1;
            let nodes = sim.nodes.len();
            let a = rng.gen_range(0..nodes);
            let until = sim.now + rng.gen_range(20..120);
            for b in 0..nodes {
                if b != a && rng.gen_bool(0.7) {
                    sim.cut.push((a, b, until));
                }
            }
        }
        // Crash a correct replica (at most f faulty at once, counting the faulty one).
        match crashed {
            None if rng.gen_bool(0.006) && (byzantine.is_none() || f > 1) => {
                let victim = rng.gen_range(0..n);
                if Some(victim) != byzantine {
                    cov.crashes += 1;
                    sim.nodes[victim].replica = None;
                    crashed = Some((victim, sim.now + rng.gen_range(30..150)));
                }
            }
            Some((v, at)) if sim.now >= at => {
                let r = Sim::boot(world, &sim.nodes[v]);
                sim.nodes[v].replica = Some(r);
                crashed = None;
            }
            _ => {}
        }
        sim.step();
        sim.check_safety();
    }
    // Heal: restart the crashed replica, stop losing messages, submit the rest. The faulty
    // consenter goes on misbehaving.
    if let Some((v, _)) = crashed {
        let r = Sim::boot(world, &sim.nodes[v]);
        sim.nodes[v].replica = Some(r);
    }
    boot_twin(&mut sim);
    sim.faults = Faults {
        loss: 0.0,
        dup: 0.0,
        max_delay: 2,
    };
    sim.cut.clear();
    while next_req < world.requests.len() {
        let target = sim.correct()[rng.gen_range(0..sim.correct().len())];
        sim.submit(target, world.requests[next_req].clone());
        next_req += 1;
    }
    let healed_at = sim.now;
    let deadline = sim.now + LIVENESS_TICKS;
    let done = |sim: &Sim, reconfig: Reconfig| {
        // Consenters removed by a reconfiguration stop at it, once they learn of it: the others
        // must converge.
        let correct = sim.final_members();
        let removed_learnt = !reconfigure
            || sim
                .members()
                .iter()
                .all(|&i| sim.nodes[i].identity != removed(faulty));
        reconfig == Reconfig::Done && removed_learnt && !correct.is_empty() && {
            let h = sim.nodes[correct[0]].blocks.len();
            correct.iter().all(|&i| sim.nodes[i].blocks.len() == h)
                && correct.iter().all(|&i| {
                    sim.nodes[i]
                        .replica
                        .as_ref()
                        .is_some_and(|r| r.pending_requests() == 0)
                })
                && {
                    let ordered: HashSet<String> = sim.nodes[correct[0]]
                        .blocks
                        .iter()
                        .skip(1)
                        .flat_map(|b| b.data.as_ref().unwrap().data.clone())
                        .filter_map(|e| txid_of(&e))
                        .collect();
                    sim.acked_by(&correct).iter().all(|t| ordered.contains(*t))
                }
        }
    };
    while sim.now < deadline && !done(&sim, reconfig) {
        sim.reconfigure(&mut reconfig);
        sim.step();
        sim.check_safety();
    }
    assert!(
        done(&sim, reconfig),
        "seed {seed}: no convergence within {LIVENESS_TICKS} ticks of healing (heights {:?}, views {:?}, pending {:?}, faulty {faulty:?}, {reconfig:?})",
        sim.nodes.iter().map(|x| x.blocks.len()).collect::<Vec<_>>(),
        sim.nodes
            .iter()
            .map(|x| x
                .replica
                .as_ref()
                .map(|r| (r.view(), r.in_view_change(), r.leader())))
            .collect::<Vec<_>>(),
        sim.nodes
            .iter()
            .map(|x| x.replica.as_ref().map(|r| r.pending_requests()))
            .collect::<Vec<_>>(),
    );
    cov.max_ticks_to_converge = cov.max_ticks_to_converge.max(sim.now - healed_at);
    cov.view_changes += sim
        .nodes
        .iter()
        .filter_map(|x| x.replica.as_ref().map(|r| r.view()))
        .max()
        .unwrap_or(0);
    match faulty {
        Faulty::None => {}
        Faulty::Byzantine(_) => cov.byzantine_runs += 1,
        Faulty::Mutating(_) => cov.mutating_runs += 1,
        Faulty::Twins(_) => cov.twins_runs += 1,
    }
    cov.twin_equivocations += sim.twin_equivocations;
    for (fault, count) in &sim.mutator.applied {
        *cov.faults.entry(*fault).or_default() += count;
    }
    let (m, h) = (&mut cov.max_held, &sim.max_held);
    m.vote_slots = m.vote_slots.max(h.vote_slots);
    m.votes = m.votes.max(h.votes);
    m.view_changes = m.view_changes.max(h.view_changes);
    m.refused_view_changes = m.refused_view_changes.max(h.refused_view_changes);
    m.per_consenter = m.per_consenter.max(h.per_consenter);
    m.new_views_sent = m.new_views_sent.max(h.new_views_sent);
    let members = sim.final_members();
    cov.blocks += sim.nodes[members[0]].blocks.len() as u64 - 1;
    if reconfigure {
        // The spare orders, the removed consenter does not.
        let ids: Vec<usize> = members.iter().map(|&i| sim.nodes[i].identity).collect();
        assert!(
            ids.contains(&world.n) && !ids.contains(&removed(faulty)),
            "seed {seed}: consenters at the end {ids:?}"
        );
        let changes = sim.nodes[members[0]]
            .blocks
            .iter()
            .skip(1)
            .filter(|b| is_config_block(b))
            .count();
        assert_eq!(changes, 2, "seed {seed}: configuration blocks");
        // The removed consenter learnt of its removal and was sent nothing past it.
        for (i, node) in sim.nodes.iter().enumerate() {
            if node.identity == removed(faulty) {
                let last = node.blocks.last().expect("genesis at least");
                let its_set = ChannelConfig::from_block(last).map(|c| c.consenters.len());
                assert!(
                    is_config_block(last) && its_set.is_ok_and(|n| n == world.n),
                    "seed {seed}: removed node {i} has {} blocks, the last not its removal",
                    node.blocks.len()
                );
            }
        }
        cov.consenter_changes += changes as u64;
    }
    // Exactly once, and every block carries a valid quorum of the signatures of the consenters
    // in force at it, and the metadata of a sealed block (signatures cover only the header).
    for &i in &members {
        let mut seen = HashSet::new();
        let mut in_force = world.config.clone();
        for b in sim.nodes[i].blocks.iter().skip(1) {
            in_force
                .verify_block(b)
                .unwrap_or_else(|e| panic!("seed {seed}: node {i}: {e}"));
            if is_config_block(b) {
                in_force = ChannelConfig::from_block(b).unwrap();
            }
            let slots = &b.metadata.as_ref().unwrap().metadata;
            assert!(
                slots.len() == BLOCK_METADATA_SLOTS && slots.iter().skip(2).all(Vec::is_empty),
                "seed {seed}: node {i} stored a block with rewritten metadata"
            );
            for e in &b.data.as_ref().unwrap().data {
                let t = txid_of(e).unwrap();
                assert!(
                    seen.insert(t.clone()),
                    "seed {seed}: transaction {t} ordered twice"
                );
            }
        }
        assert!(
            sim.acked_by(&members).iter().all(|t| seen.contains(*t)),
            "seed {seed}: an acknowledged transaction was lost"
        );
    }
}

/// `SIM_SEEDS_4` / `SIM_SEEDS_7`: how many seeds; `SIM_FROM_4` / `SIM_FROM_7`: the first one
/// (to replay one failing seed: `SIM_FROM_4=205 SIM_SEEDS_4=1`).
fn seeds(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run_seeds(world: &World, seeds: std::ops::Range<u64>, reconfigure: bool) {
    let count = seeds.end - seeds.start;
    let mut cov = Coverage::default();
    let started = Instant::now();
    for seed in seeds.clone() {
        run(world, seed, &mut cov, reconfigure);
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "{} replicas, {count} seeds in {secs:.1} s ({:.1} seeds/s): {cov:#?}",
        world.n,
        count as f64 / secs
    );
    if count < 20 {
        // Replaying a few seeds: too few to expect every fault among them.
        return;
    }
    // The runs must actually have exercised the faults they claim to survive.
    assert!(
        cov.view_changes > 0
            && cov.byzantine_runs > 0
            && cov.mutating_runs > 0
            && cov.twins_runs > 0
            && cov.twin_equivocations > 0
            && cov.crashes > 0,
        "{cov:?}"
    );
    assert!(cov.blocks >= count, "{cov:?}");
    if reconfigure {
        assert_eq!(cov.consenter_changes, 2 * count, "{cov:?}");
    }
}

#[test]
fn four_replicas_survive_faults_and_a_byzantine_replica() {
    let world = World::new(4, 40 + AFTER_HEALING);
    let from = seeds("SIM_FROM_4", 0);
    run_seeds(&world, from..from + seeds("SIM_SEEDS_4", 300), false);
}

#[test]
fn seven_replicas_survive_faults_and_a_byzantine_replica() {
    let world = World::new(7, 30 + AFTER_HEALING);
    let from = seeds("SIM_FROM_7", 1000);
    run_seeds(&world, from..from + seeds("SIM_SEEDS_7", 40), false);
}

/// A fifth consenter is added while the faults go on (it starts from the genesis block and
/// catches up through the consenters, checking every block under the configuration in force
/// at it), then one of the first four is removed; the same checks hold throughout, and the
/// new set orders everything acknowledged.
#[test]
fn four_replicas_add_a_fifth_and_remove_one_under_faults() {
    let world = World::new(4, 40 + AFTER_HEALING);
    let from = seeds("SIM_FROM_RECONFIG", 2000);
    run_seeds(&world, from..from + seeds("SIM_SEEDS_RECONFIG", 24), true);
}
