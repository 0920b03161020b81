//! A block whose place in the chain and orderer signatures have been checked: the only form in
//! which a block reaches private data gathering and the committer.

use medledger_common::protoutil;
use medledger_proto::common::Block;

use super::CommitError;
use crate::channel::Channel;

/// A block checked against the channel: it is the next block of the ledger, it links to the
/// last one, its data matches its header, and a BFT quorum of the channel's consenters signed
/// it. Nothing else is done with a block from an orderer (a possibly Byzantine one) before this.
#[derive(Debug)]
pub struct VerifiedBlock {
    block: Block,
    number: u64,
}

impl VerifiedBlock {
    /// Checks a block pulled for `channel`.
    pub fn check(channel: &Channel, block: Block) -> Result<Self, CommitError> {
        let header = block
            .header
            .as_ref()
            .ok_or_else(|| CommitError::BadBlock("no header".into()))?;
        let number = header.number;
        let height = channel.ledger.height();
        if number != height {
            return Err(CommitError::BadBlock(format!(
                "block {number} is not the next block (the ledger's height is {height})"
            )));
        }
        if number > 0 && header.previous_hash != channel.ledger.last_hash()? {
            return Err(CommitError::BadBlock(format!(
                "block {number} does not link to the ledger's last block"
            )));
        }
        let config = channel.config();
        config
            .verify_block(&block)
            .map_err(|e| CommitError::BadBlock(e.to_string()))?;
        check_sealed_metadata(&block, config.consenters.len())
            .map_err(|why| CommitError::BadBlock(format!("block {number}: {why}")))?;
        Ok(Self { block, number })
    }

    /// A genesis block the operator handed to the peer (it has no orderer signatures: it is
    /// trusted because the operator chose it).
    pub fn genesis(block: Block) -> Result<Self, CommitError> {
        match block.header.as_ref().map(|h| h.number) {
            Some(0) => Ok(Self { block, number: 0 }),
            Some(n) => Err(CommitError::BadBlock(format!(
                "a channel starts from block 0, not block {n}"
            ))),
            None => Err(CommitError::BadBlock("no header".into())),
        }
    }

    /// The block's number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The block.
    pub fn block(&self) -> &Block {
        &self.block
    }

    /// The header hash the next block must link to.
    pub fn header_hash(&self) -> [u8; 32] {
        self.block
            .header
            .as_ref()
            .map(protoutil::block_header_hash)
            .unwrap_or_default()
    }

    pub(super) fn into_block(self) -> Block {
        self.block
    }
}

/// The metadata the orderers seal a block with, and nothing else: the consenters' signatures
/// cover only the header and their signed value, so a block source could otherwise store
/// anything in the other slots (a false LAST_CONFIG that misleads `channel fetch config` and
/// proofs, or megabytes of padding on every peer's disk).
fn check_sealed_metadata(block: &Block, consenters: usize) -> Result<(), String> {
    use medledger_proto::common::{BlockMetadataIndex, LastConfig, Metadata};
    use prost::Message;
    let slots = &block.metadata.as_ref().ok_or("no metadata")?.metadata;
    if slots.len() != protoutil::BLOCK_METADATA_SLOTS {
        return Err(format!(
            "{} metadata slots, not {}",
            slots.len(),
            protoutil::BLOCK_METADATA_SLOTS
        ));
    }
    let signatures_slot = BlockMetadataIndex::Signatures as usize;
    let last_config_slot = BlockMetadataIndex::LastConfig as usize;
    if let Some(i) = (0..slots.len())
        .filter(|i| *i != signatures_slot && *i != last_config_slot)
        .find(|i| !slots[*i].is_empty())
    {
        return Err(format!("metadata slot {i} is filled by the orderer"));
    }
    let signed = Metadata::decode(slots[signatures_slot].as_slice())
        .map_err(|e| format!("SIGNATURES: {e}"))?;
    if signed.signatures.len() > consenters {
        return Err(format!(
            "{} signatures from {consenters} consenters",
            signed.signatures.len()
        ));
    }
    let index = protoutil::signed_last_config(block)
        .ok_or("the signed metadata names no last configuration block")?;
    let expected = Metadata {
        value: LastConfig { index }.encode_to_vec(),
        signatures: vec![],
    }
    .encode_to_vec();
    if slots[last_config_slot] != expected {
        return Err("LAST_CONFIG differs from the signed last configuration".into());
    }
    Ok(())
}
