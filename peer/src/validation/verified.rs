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
        channel
            .config()
            .verify_block(&block)
            .map_err(|e| CommitError::BadBlock(e.to_string()))?;
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
