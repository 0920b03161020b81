//! Faults an orderer can be made to commit on purpose, for tests that prove the rest of the
//! network withstands one Byzantine orderer. Nothing in the configuration file turns them on:
//! only a program that calls [`crate::node::start_byzantine`] (the test suite's Byzantine orderer
//! binary) can.

use medledger_common::protoutil;
use medledger_proto::common::Block;
use medledger_proto::medledger::consensus::{Body, ConsensusMessage};
use prost::Message;

use crate::consensus::Crypto;
use crate::faults::Mutator;

/// How far ahead of the truth a false attestation claims to be.
const FALSE_ATTESTATION_LEAD: u64 = 1_000;

/// What a Byzantine orderer does wrong.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Misbehaviour {
    /// Deliver streams (whole blocks and header attestations) never send a block.
    pub withhold_blocks: bool,
    /// Deliver sends blocks whose transactions were replaced after the consenters signed them
    /// (the data hash is recomputed, so only the signatures give the forgery away).
    pub forge_blocks: bool,
    /// Header attestations claim blocks far beyond the height (their signatures then cannot
    /// verify): an attempt to make peers abandon an honest block source.
    pub false_attestations: bool,
    /// Every outgoing consensus message is rewritten with one small-scope or byte-level fault
    /// (`crate::faults::Mutator`: view or sequence ±1, replayed proposals, stripped or padded
    /// block metadata, forged `last_committed_seq`...) and re-signed, so it passes
    /// authentication and reaches the other replicas' handlers.
    pub mutate_consensus: bool,
    /// Deliver sends blocks whose unsigned metadata slots are padded or rewritten (a false
    /// LAST_CONFIG, junk in empty slots): what the signatures do not cover.
    pub pad_metadata: bool,
}

/// The consensus side of a Byzantine orderer: rewrites its outgoing messages when told to.
pub struct ConsensusFaults {
    mutator: Option<(Mutator, std::sync::Arc<dyn Crypto>)>,
}

impl ConsensusFaults {
    /// The message to send in place of `msg` (`None`: it is lost).
    pub fn outgoing(&mut self, msg: ConsensusMessage) -> Option<ConsensusMessage> {
        let Some((mutator, crypto)) = self.mutator.as_mut() else {
            return Some(msg);
        };
        let kind = Body::decode(msg.body.as_slice()).ok()?.kind?;
        let body = Body {
            kind: Some(mutator.rewrite(kind)?),
        }
        .encode_to_vec();
        Some(ConsensusMessage {
            signature: crypto.sign(&body),
            body,
            ..msg
        })
    }
}

impl Misbehaviour {
    /// Parses a comma-separated list of fault names (`withhold-blocks`, `forge-blocks`).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut m = Self::default();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "withhold-blocks" => m.withhold_blocks = true,
                "forge-blocks" => m.forge_blocks = true,
                "false-attestations" => m.false_attestations = true,
                "mutate-consensus" => m.mutate_consensus = true,
                "pad-metadata" => m.pad_metadata = true,
                other => {
                    return Err(format!(
                        "unknown fault {other:?} (known: withhold-blocks, forge-blocks, \
                         false-attestations, mutate-consensus, pad-metadata)"
                    ));
                }
            }
        }
        Ok(m)
    }

    /// What rewrites this orderer's consensus messages (nothing unless `mutate_consensus`).
    pub fn consensus_faults(
        &self,
        consenter: u32,
        crypto: std::sync::Arc<dyn Crypto>,
    ) -> ConsensusFaults {
        ConsensusFaults {
            mutator: self
                .mutate_consensus
                .then(|| (Mutator::new(u64::from(consenter)), crypto)),
        }
    }

    /// The block a Deliver stream sends in place of `block`, an attestation when `headers_only`
    /// (`None`: nothing is sent).
    pub(crate) fn deliver(&self, mut block: Block, headers_only: bool) -> Option<Block> {
        if self.withhold_blocks {
            return None;
        }
        if self.false_attestations && headers_only {
            if let Some(h) = block.header.as_mut() {
                h.number = h.number.saturating_add(FALSE_ATTESTATION_LEAD);
            }
            return Some(block);
        }
        if self.forge_blocks && block.header.as_ref().is_some_and(|h| h.number > 0) {
            return Some(forged(block));
        }
        if self.pad_metadata && block.header.as_ref().is_some_and(|h| h.number > 0) {
            if let Some(m) = block.metadata.as_mut()
                && let Some(slot) = m.metadata.get_mut(3)
            {
                *slot = vec![0xAB; 4096];
            }
            return Some(block);
        }
        Some(block)
    }
}

/// `block` with one transaction added after signing and the data hash made to match.
fn forged(mut block: Block) -> Block {
    let data = block.data.get_or_insert_with(Default::default);
    data.data
        .push(b"a transaction the consenters never ordered".to_vec());
    let hash = protoutil::block_data_hash(data);
    if let Some(h) = block.header.as_mut() {
        h.data_hash = hash.to_vec();
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_lists_parse_and_unknown_faults_are_refused() {
        let m = Misbehaviour::parse("withhold-blocks, forge-blocks,false-attestations")
            .expect("known faults");
        assert!(m.withhold_blocks && m.forge_blocks && m.false_attestations);
        assert_eq!(
            Misbehaviour::parse("").expect("none"),
            Misbehaviour::default()
        );
        assert!(Misbehaviour::parse("eat-blocks").is_err());
    }

    #[test]
    fn a_forged_block_keeps_its_header_links_but_not_its_data() {
        let block = protoutil::new_block(3, vec![7; 32], vec![b"tx".to_vec()]);
        let forged = Misbehaviour::parse("forge-blocks")
            .expect("fault")
            .deliver(block.clone(), false)
            .expect("sent");
        let (h, f) = (block.header.expect("h"), forged.header.expect("h"));
        assert_eq!((h.number, &h.previous_hash), (f.number, &f.previous_hash));
        assert_ne!(h.data_hash, f.data_hash);
    }
}
