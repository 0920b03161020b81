//! The block store: blocks by number and by header hash, the transaction index, the chain's tip.

use medledger_common::stored;
use medledger_proto::common::Block;
use medledger_proto::medledger::ledger::TxLocation;

use super::keys::*;
use super::{Ledger, LedgerError};

impl Ledger {
    /// Header hash of the last block (empty before genesis).
    pub fn last_hash(&self) -> Result<Vec<u8>, LedgerError> {
        Ok(self
            .db
            .get_cf(cf(&self.db, META)?, LAST_HASH_KEY)?
            .unwrap_or_default())
    }

    /// The number of the newest configuration block (0, the genesis block, until another
    /// commits).
    pub fn last_config_block(&self) -> Result<u64, LedgerError> {
        match self.db.get_cf(cf(&self.db, META)?, LAST_CONFIG_KEY)? {
            None => Ok(0),
            Some(b) => b
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| LedgerError::Corrupt("last config block number".into())),
        }
    }

    /// The block at `number`.
    pub fn block(&self, number: u64) -> Result<Option<Block>, LedgerError> {
        self.db
            .get_cf(cf(&self.db, BLOCKS)?, number.to_be_bytes())?
            .map(|b| {
                stored::decode(&b).map_err(|e| LedgerError::Corrupt(format!("block {number}: {e}")))
            })
            .transpose()
    }

    /// The block whose header hash is `hash`.
    pub fn block_by_hash(&self, hash: &[u8]) -> Result<Option<Block>, LedgerError> {
        match self.db.get_cf(cf(&self.db, HASHES)?, hash)? {
            Some(n) => self.block(u64::from_be_bytes(
                n.as_slice()
                    .try_into()
                    .map_err(|_| LedgerError::Corrupt("hash index".into()))?,
            )),
            None => Ok(None),
        }
    }

    /// Where a transaction id was committed.
    pub fn tx_location(&self, txid: &str) -> Result<Option<TxLocation>, LedgerError> {
        self.db
            .get_cf(cf(&self.db, TXIDS)?, txid.as_bytes())?
            .map(|b| decode(&b, "tx location"))
            .transpose()
    }
}
