//! Faulty rewrites of a consenter's outgoing consensus messages, shared by the consensus unit
//! tests and the simulator (`tests/simulation.rs`) so both play the same Byzantine consenter.
//! Nothing in the node uses it: the caller re-signs what comes out with the faulty consenter's
//! key, which is what lets a rewrite pass authentication and reach the handlers.

use std::collections::{BTreeMap, VecDeque};

use medledger_common::mutation::{MutationRng, mutate};
use medledger_proto::common::BlockMetadata;
use medledger_proto::medledger::consensus::{Body, PrePrepare, body::Kind};
use prost::Message;

/// How many of its own earlier proposals a faulty consenter keeps to replay: a few blocks back
/// is where a replay can still meet a replica's window; more would only cost memory.
const REPLAY_MEMORY: usize = 8;

/// The small-scope faults: each changes one field a little, or swaps in a real old message,
/// which is what slips past checks that random bytes never get through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    ViewUp,
    ViewDown,
    SeqUp,
    SeqDown,
    /// An earlier proposal (ours, or one we received) sent again, as ours, in place of this
    /// message.
    Replay,
    /// A block (proposed or served by state transfer) without metadata, or with none in a slot.
    StripMetadata,
    /// A block with an extra metadata slot, or bytes in an empty one.
    PadMetadata,
    /// A view change claiming a height far from ours (`last_committed_seq`).
    ForgeLastCommitted,
    /// Byte-level mutation of the encoded body (`mutate_encoded`).
    Bytes,
}

const SMALL_SCOPE: [Fault; 8] = [
    Fault::ViewUp,
    Fault::ViewDown,
    Fault::SeqUp,
    Fault::SeqDown,
    Fault::Replay,
    Fault::StripMetadata,
    Fault::PadMetadata,
    Fault::ForgeLastCommitted,
];

/// Mutates the encoded body at the byte level: one flipped bit half of the time (it mostly
/// still decodes and reaches the handlers), `mutate` otherwise. `None` if it no longer decodes.
pub fn mutate_encoded(rng: &mut MutationRng, kind: Kind) -> Option<Kind> {
    let mut bytes = Body { kind: Some(kind) }.encode_to_vec();
    if rng.below(2) == 0 && !bytes.is_empty() {
        let i = rng.below(bytes.len());
        bytes[i] ^= 1 << rng.below(8);
    } else {
        mutate(rng, &mut bytes);
    }
    Body::decode(bytes.as_slice()).ok().and_then(|b| b.kind)
}

/// One faulty consenter's rewriter: deterministic per seed, remembering recent proposals to
/// replay them, and counting what it did (for coverage reports).
pub struct Mutator {
    rng: MutationRng,
    proposals: VecDeque<PrePrepare>,
    /// Messages rewritten, by fault.
    pub applied: BTreeMap<Fault, u64>,
    /// Byte-level rewrites that no longer decoded (dropped).
    pub undecodable: u64,
}

impl Mutator {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: MutationRng::new(seed),
            proposals: VecDeque::new(),
            applied: BTreeMap::new(),
            undecodable: 0,
        }
    }

    /// Remembers a proposal the faulty consenter received (an encoded body), to replay later.
    pub fn observe(&mut self, body: &[u8]) {
        if let Ok(Body {
            kind: Some(Kind::PrePrepare(pp)),
        }) = Body::decode(body)
        {
            self.remember(pp);
        }
    }

    fn remember(&mut self, pp: PrePrepare) {
        if self.proposals.len() >= REPLAY_MEMORY {
            self.proposals.pop_front();
        }
        self.proposals.push_back(pp);
    }

    /// Rewrites `kind` with one fault: small-scope ones two times in three, byte-level
    /// otherwise. `None`: the message is lost (it no longer decodes).
    pub fn rewrite(&mut self, kind: Kind) -> Option<Kind> {
        if self.rng.below(3) == 0 {
            self.bytes(kind)
        } else {
            Some(self.small_scope(kind))
        }
    }

    /// Byte-level rewrite (`mutate_encoded`), counted.
    pub fn bytes(&mut self, kind: Kind) -> Option<Kind> {
        *self.applied.entry(Fault::Bytes).or_default() += 1;
        let out = mutate_encoded(&mut self.rng, kind);
        self.undecodable += u64::from(out.is_none());
        out
    }

    /// One small-scope fault that applies to `kind`, each applicable one about equally often
    /// (the message is sent unchanged if none applies).
    pub fn small_scope(&mut self, kind: Kind) -> Kind {
        if let Kind::PrePrepare(pp) = &kind {
            self.remember(pp.clone());
        }
        // Draw until one applies: faults that fit no message of this kind are skipped without
        // shifting the odds toward their neighbours.
        for _ in 0..4 * SMALL_SCOPE.len() {
            let fault = SMALL_SCOPE[self.rng.below(SMALL_SCOPE.len())];
            if let Some(k) = self.apply(fault, &kind) {
                *self.applied.entry(fault).or_default() += 1;
                return k;
            }
        }
        kind
    }

    /// `kind` with `fault`, or `None` when the fault does not apply to this kind of message.
    fn apply(&mut self, fault: Fault, kind: &Kind) -> Option<Kind> {
        let mut k = kind.clone();
        match fault {
            Fault::ViewUp | Fault::ViewDown => {
                let up = fault == Fault::ViewUp;
                let shift = |v: &mut u64| {
                    *v = if up {
                        v.wrapping_add(1)
                    } else {
                        v.wrapping_sub(1)
                    }
                };
                match &mut k {
                    Kind::PrePrepare(m) => shift(&mut m.view),
                    Kind::Prepare(m) => shift(&mut m.view),
                    Kind::Commit(m) => shift(&mut m.view),
                    Kind::Heartbeat(m) => shift(&mut m.view),
                    Kind::ViewChange(m) => shift(&mut m.next_view),
                    Kind::NewView(m) => shift(&mut m.view),
                    _ => return None,
                }
            }
            Fault::SeqUp | Fault::SeqDown => {
                let up = fault == Fault::SeqUp;
                let shift = |s: &mut u64| {
                    *s = if up {
                        s.wrapping_add(1)
                    } else {
                        s.wrapping_sub(1)
                    }
                };
                match &mut k {
                    Kind::PrePrepare(m) => shift(&mut m.seq),
                    Kind::Prepare(m) => shift(&mut m.seq),
                    Kind::Commit(m) => shift(&mut m.seq),
                    Kind::Heartbeat(m) => shift(&mut m.seq),
                    Kind::StateRequest(m) => shift(&mut m.from_seq),
                    _ => return None,
                }
            }
            Fault::Replay => {
                let pick = self.rng.below(self.proposals.len());
                // Only an older proposal than this message is a replay.
                let old = self.proposals.get(pick).filter(|p| match kind {
                    Kind::PrePrepare(now) => *p != now,
                    _ => true,
                })?;
                k = Kind::PrePrepare(old.clone());
            }
            Fault::StripMetadata | Fault::PadMetadata => {
                let strip = fault == Fault::StripMetadata;
                let blocks: Vec<&mut medledger_proto::common::Block> = match &mut k {
                    Kind::PrePrepare(m) => m.block.iter_mut().collect(),
                    Kind::StateResponse(m) => m.blocks.iter_mut().collect(),
                    _ => return None,
                };
                if blocks.is_empty() {
                    return None;
                }
                let choice = self.rng.below(2);
                let slot = self.rng.below(5);
                for b in blocks {
                    let md = b.metadata.get_or_insert_with(BlockMetadata::default);
                    match (strip, choice) {
                        (true, 0) => b.metadata = None,
                        (true, _) => {
                            if let Some(m) = md.metadata.get_mut(slot) {
                                m.clear();
                            }
                        }
                        (false, 0) => md.metadata.push(vec![0xa5; 3]),
                        (false, _) => {
                            if let Some(m) = md.metadata.get_mut(slot) {
                                m.extend_from_slice(&[0xa5; 3]);
                            }
                        }
                    }
                }
            }
            Fault::ForgeLastCommitted => match &mut k {
                Kind::ViewChange(m) => {
                    m.last_committed_seq = match self.rng.below(3) {
                        0 => m.last_committed_seq.wrapping_add(1),
                        1 => m.last_committed_seq.saturating_sub(1),
                        _ => u64::MAX,
                    };
                }
                _ => return None,
            },
            Fault::Bytes => return mutate_encoded(&mut self.rng, k),
        }
        Some(k)
    }
}
