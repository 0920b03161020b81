//! Deterministic simulation of the BFT consensus core: 4 and 7 replicas under a seeded network
//! that loses, delays, reorders and duplicates messages, partitions and heals, crashes and
//! restarts replicas (from their written-ahead state), with one Byzantine replica that
//! equivocates when leading, forges votes and proposes invalid transactions.
//!
//! Checked for every seed: no two correct replicas commit different blocks at a height; every
//! committed block carries a valid quorum of consenter signatures; every request a correct
//! replica acknowledged is ordered exactly once after the network heals.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use medledger_common::PrivateKey;
use medledger_common::SigningIdentity;
use medledger_common::channelconfig::{ChannelConfig, ChannelProfile, OrgProfile, genesis_block};
use medledger_common::issue::{CaSigner, IssueRequest, Usage, random_serial};
use medledger_common::msp::{org_msp_config, unix_now};
use medledger_common::protoutil::{block_header_hash, signed_envelope};
use medledger_orderer::consensus::{
    BatchConfig, Config, Crypto, DEFAULT_MAX_POOL_BYTES, DEFAULT_MAX_POOL_REQUESTS, Durable,
    Output, Replica, Restored, txid_of,
};
use medledger_orderer::crypto::ConsenterCrypto;
use medledger_proto::common::{Block, Consenter, HeaderType};
use medledger_proto::medledger::consensus::{Body, ConsensusMessage, body::Kind};
use medledger_proto::orderer::BatchSize;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CHANNEL: &str = "medchannel";

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
    cryptos: Vec<Arc<ConsenterCrypto>>,
    requests: Vec<Vec<u8>>,
    /// A request that is well-formed but signed by nobody the channel knows.
    foreign_request: Vec<u8>,
}

impl World {
    fn new(n: usize, requests: usize) -> Self {
        let ord_ca = CaSigner::new_root("ca.orderer", "OrdererMSP", 5).unwrap();
        let app_ca = CaSigner::new_root("ca.hospital1", "Hospital1MSP", 5).unwrap();
        let orderers: Vec<SigningIdentity> = (1..=n)
            .map(|i| identity(&ord_ca, "OrdererMSP", &format!("orderer{i}"), "orderer"))
            .collect();
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
            consenters: orderers
                .iter()
                .enumerate()
                .map(|(i, o)| Consenter {
                    id: i as u32 + 1,
                    host: "127.0.0.1".into(),
                    port: 7050 + i as u32,
                    msp_id: "OrdererMSP".into(),
                    identity: o.cert_pem().to_vec(),
                    ..Default::default()
                })
                .collect(),
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
            cryptos,
            requests,
            foreign_request,
        }
    }

    fn config(&self, id: u32) -> Config {
        Config {
            channel_id: CHANNEL.into(),
            self_id: id,
            consenters: (1..=self.n as u32).collect(),
            batch: BatchConfig {
                max_message_count: 10,
                preferred_max_bytes: 1 << 19,
                absolute_max_bytes: 1 << 20,
                timeout_ticks: 4,
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

struct Node {
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

struct Sim<'w> {
    world: &'w World,
    rng: StdRng,
    now: u64,
    nodes: Vec<Node>,
    queue: BinaryHeap<Reverse<(u64, u64, usize, usize)>>,
    in_flight: BTreeMap<u64, ConsensusMessage>,
    next_msg: u64,
    faults: Faults,
    /// Links cut until the given tick: (a, b) both directions.
    cut: Vec<(usize, usize, u64)>,
    byzantine: Option<usize>,
    acked: HashSet<String>,
}

impl<'w> Sim<'w> {
    fn new(world: &'w World, seed: u64, byzantine: Option<usize>) -> Self {
        let nodes = (0..world.n)
            .map(|i| {
                let mut n = Node {
                    replica: None,
                    durable: Durable::default(),
                    blocks: vec![world.genesis.clone()],
                };
                n.replica = Some(Self::boot(world, i, &n));
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
            byzantine,
            acked: HashSet::new(),
        }
    }

    fn boot(world: &World, i: usize, node: &Node) -> Replica {
        let committed = node
            .blocks
            .iter()
            .skip(1)
            .flat_map(|b| b.data.as_ref().map(|d| d.data.clone()).unwrap_or_default())
            .filter_map(|e| txid_of(&e))
            .collect();
        let last = node
            .blocks
            .last()
            .and_then(|b| b.header.as_ref())
            .map(block_header_hash)
            .unwrap_or_default();
        let crypto: Arc<dyn Crypto> = world.cryptos[i].clone();
        Replica::new(
            world.config(i as u32 + 1),
            crypto,
            Restored {
                durable: node.durable.clone(),
                height: node.blocks.len() as u64,
                last_hash: last.to_vec(),
                committed_txids: committed,
            },
        )
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        !self
            .cut
            .iter()
            .any(|&(x, y, until)| self.now < until && ((x == a && y == b) || (x == b && y == a)))
    }

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

    /// The Byzantine replica rewrites what it sends: per-recipient proposals (equivocation),
    /// invalid transactions in proposals, and forged votes.
    fn corrupt(&mut self, from: usize, to: usize, msg: ConsensusMessage) -> ConsensusMessage {
        let Ok(Body { kind: Some(kind) }) = Body::decode(msg.body.as_slice()) else {
            return msg;
        };
        let crypto = &self.world.cryptos[from];
        let kind = match kind {
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
        };
        let body = Body { kind: Some(kind) }.encode_to_vec();
        ConsensusMessage {
            signature: crypto.sign(&body),
            body,
            ..msg
        }
    }

    fn apply(&mut self, i: usize, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Send { to, msg } => {
                    let targets: Vec<usize> = match to {
                        Some(t) => vec![t as usize - 1],
                        None => (0..self.world.n).filter(|&t| t != i).collect(),
                    };
                    for t in targets {
                        let m = if self.byzantine == Some(i) {
                            self.corrupt(i, t, msg.clone())
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
                        "replica {i} committed out of order"
                    );
                    node.blocks.push(block);
                }
                Output::Wal(op) => self.nodes[i].durable.apply(&op),
                Output::ServeState { to, from_seq } => {
                    let blocks: Vec<Block> = self.nodes[i]
                        .blocks
                        .iter()
                        .skip(from_seq as usize)
                        .take(20)
                        .cloned()
                        .collect();
                    if let Some(r) = &self.nodes[i].replica {
                        let msg = r.state_response_message(blocks);
                        self.send(i, to as usize - 1, msg);
                    }
                }
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
            let out = match self.nodes[to].replica.as_mut() {
                Some(r) => r.receive(from as u32 + 1, msg),
                None => continue,
            };
            self.apply(to, out);
        }
        for i in 0..self.world.n {
            let out = match self.nodes[i].replica.as_mut() {
                Some(r) => r.tick(),
                None => continue,
            };
            self.apply(i, out);
        }
    }

    fn submit(&mut self, i: usize, req: Vec<u8>) {
        let Some(r) = self.nodes[i].replica.as_mut() else {
            return;
        };
        let txid = txid_of(&req).unwrap();
        let (result, out) = r.submit(req);
        if result.is_ok() && self.byzantine != Some(i) {
            self.acked.insert(txid);
        }
        self.apply(i, out);
    }

    fn correct(&self) -> Vec<usize> {
        (0..self.world.n)
            .filter(|i| Some(*i) != self.byzantine)
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

/// What one seed exercised.
#[derive(Default, Debug)]
struct Coverage {
    view_changes: u64,
    byzantine_runs: u64,
    crashes: u64,
    blocks: u64,
}

fn run(world: &World, seed: u64, cov: &mut Coverage) {
    let n = world.n;
    let f = (n - 1) / 3;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let byzantine = if rng.gen_bool(0.6) {
        Some(rng.gen_range(0..n))
    } else {
        None
    };
    let mut sim = Sim::new(world, seed, byzantine);
    sim.faults = Faults {
        loss: rng.gen_range(0.0..0.12),
        dup: rng.gen_range(0.0..0.1),
        max_delay: rng.gen_range(1..6),
    };
    let chaos_until = 700u64;
    let mut next_req = 0usize;
    let mut crashed: Option<(usize, u64)> = None;
    while sim.now < chaos_until {
        // Clients submit to random replicas.
        if next_req < world.requests.len() && rng.gen_bool(0.25) {
            let target = rng.gen_range(0..n);
            sim.submit(target, world.requests[next_req].clone());
            next_req += 1;
        }
        // Partitions that heal.
        if rng.gen_bool(0.01) {
            let a = rng.gen_range(0..n);
            let until = sim.now + rng.gen_range(20..120);
            for b in 0..n {
                if b != a && rng.gen_bool(0.7) {
                    sim.cut.push((a, b, until));
                }
            }
        }
        // Crash a correct replica (at most f faulty at once, counting the Byzantine one).
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
                let r = Sim::boot(world, v, &sim.nodes[v]);
                sim.nodes[v].replica = Some(r);
                crashed = None;
            }
            _ => {}
        }
        sim.step();
        sim.check_safety();
    }
    // Heal: restart the crashed replica, stop losing messages, submit the rest.
    if let Some((v, _)) = crashed {
        let r = Sim::boot(world, v, &sim.nodes[v]);
        sim.nodes[v].replica = Some(r);
    }
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
    let deadline = sim.now + 6000;
    let done = |sim: &Sim| {
        let correct = sim.correct();
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
                sim.acked.iter().all(|t| ordered.contains(t))
            }
    };
    while sim.now < deadline && !done(&sim) {
        sim.step();
        sim.check_safety();
    }
    assert!(
        done(&sim),
        "seed {seed}: no convergence after healing (heights {:?}, views {:?}, pending {:?}, byzantine {byzantine:?})",
        sim.nodes.iter().map(|x| x.blocks.len()).collect::<Vec<_>>(),
        sim.nodes
            .iter()
            .map(|x| x.replica.as_ref().map(|r| r.view()))
            .collect::<Vec<_>>(),
        sim.nodes
            .iter()
            .map(|x| x.replica.as_ref().map(|r| r.pending_requests()))
            .collect::<Vec<_>>(),
    );
    cov.view_changes += sim
        .nodes
        .iter()
        .filter_map(|x| x.replica.as_ref().map(|r| r.view()))
        .max()
        .unwrap_or(0);
    cov.byzantine_runs += u64::from(byzantine.is_some());
    cov.blocks += sim.nodes[sim.correct()[0]].blocks.len() as u64 - 1;
    // Exactly once, and every block carries a valid quorum of consenter signatures.
    for &i in &sim.correct() {
        let mut seen = HashSet::new();
        for b in sim.nodes[i].blocks.iter().skip(1) {
            world
                .config
                .verify_block(b)
                .unwrap_or_else(|e| panic!("seed {seed}: replica {i}: {e}"));
            for e in &b.data.as_ref().unwrap().data {
                let t = txid_of(e).unwrap();
                assert!(
                    seen.insert(t.clone()),
                    "seed {seed}: transaction {t} ordered twice"
                );
            }
        }
        assert!(
            sim.acked.iter().all(|t| seen.contains(t)),
            "seed {seed}: an acknowledged transaction was lost"
        );
    }
}

fn seeds(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run_seeds(world: &World, seeds: std::ops::Range<u64>) {
    let count = seeds.end - seeds.start;
    let mut cov = Coverage::default();
    for seed in seeds {
        run(world, seed, &mut cov);
    }
    println!("{} replicas, {count} seeds: {cov:?}", world.n);
    // The runs must actually have exercised the faults they claim to survive.
    assert!(
        cov.view_changes > 0 && cov.byzantine_runs > 0 && cov.crashes > 0,
        "{cov:?}"
    );
    assert!(cov.blocks >= count, "{cov:?}");
}

#[test]
fn four_replicas_survive_faults_and_a_byzantine_replica() {
    let world = World::new(4, 40);
    run_seeds(&world, 0..seeds("SIM_SEEDS_4", 40));
}

#[test]
fn seven_replicas_survive_faults_and_a_byzantine_replica() {
    let world = World::new(7, 30);
    run_seeds(&world, 1000..1000 + seeds("SIM_SEEDS_7", 15));
}
