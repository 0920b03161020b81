//! Private write sets against a block's hashes: which collection write sets a member must hold
//! for a block, whether a received one matches the hashes on the ledger, and when blockToLive
//! purges it. Shared by the committer, Deliver and the private data service.

use std::collections::HashMap;

use medledger_proto::common::Block;
use medledger_proto::kvrwset::{HashedRwSet, KvrwSet};
use medledger_proto::rwset::{
    CollectionPvtReadWriteSet, NsPvtReadWriteSet, TxPvtReadWriteSet, TxReadWriteSet,
};
use prost::Message;

use crate::channel::Channel;
use crate::channel::blocks::chaincode_actions;
use crate::channel::collection::Collection;
use crate::storage::ledger::{PvtSlot, pvt_hash};

/// Candidate private write sets for a block, by slot (several if endorsers disagreed).
pub type PvtCandidates = HashMap<PvtSlot, Vec<Vec<u8>>>;

/// A collection write set a member must commit with a block.
#[derive(Debug, Clone)]
pub struct PvtNeed {
    pub slot: PvtSlot,
    pub tx_id: String,
    pub hashed: HashedRwSet,
    pub pvt_rwset_hash: Vec<u8>,
}

/// The collection write sets of `block` that this peer, as a member, should hold: every
/// transaction's, valid or not (validity is decided later; unused ones are dropped then).
pub fn block_needs(channel: &Channel, block: &Block) -> Vec<PvtNeed> {
    let number = block.header.as_ref().map(|h| h.number).unwrap_or_default();
    let envelopes = medledger_common::protoutil::block_envelopes(block);
    let mut out = Vec::new();
    for (tx_num, env) in envelopes.iter().enumerate() {
        let (tx_id, actions) = chaincode_actions(env);
        for action in actions {
            let Ok(rwset) = TxReadWriteSet::decode(action.results.as_slice()) else {
                continue;
            };
            for ns in rwset.ns_rwset {
                let Some(def) = channel.chaincode(&ns.namespace) else {
                    continue;
                };
                for ch in ns.collection_hashed_rwset {
                    let member = def
                        .collections
                        .get(&ch.collection_name)
                        .is_some_and(|c| c.is_member_org(&channel.local_msp));
                    let Ok(hashed) = HashedRwSet::decode(ch.hashed_rwset.as_slice()) else {
                        continue;
                    };
                    if member && !hashed.hashed_writes.is_empty() {
                        out.push(PvtNeed {
                            slot: PvtSlot {
                                block_num: number,
                                tx_num: tx_num as u64,
                                namespace: ns.namespace.clone(),
                                collection: ch.collection_name,
                            },
                            tx_id: tx_id.clone(),
                            hashed,
                            pvt_rwset_hash: ch.pvt_rwset_hash,
                        });
                    }
                }
            }
        }
    }
    out
}

/// Adds one collection's write set to a transaction's private write sets.
pub fn add_collection(tx: &mut TxPvtReadWriteSet, ns: &str, coll: CollectionPvtReadWriteSet) {
    match tx.ns_pvt_rwset.iter_mut().find(|n| n.namespace == ns) {
        Some(n) => n.collection_pvt_rwset.push(coll),
        None => tx.ns_pvt_rwset.push(NsPvtReadWriteSet {
            namespace: ns.to_owned(),
            collection_pvt_rwset: vec![coll],
        }),
    }
}

/// Why a private write set does not match a block's hashes.
#[derive(Debug, thiserror::Error)]
pub enum MismatchError {
    #[error("private write set does not decode: {0}")]
    Malformed(String),
    #[error("private write of a key the transaction's hashed write set does not have")]
    UnknownKey,
    #[error("private value's hash does not match the hash on the ledger")]
    ValueHash,
}

/// Checks a private write set against a transaction's hashed write set: every write must match
/// a hashed write (key hash, delete flag, value hash). A set whose whole hash differs is a
/// subset the sender had to thin out (erasure or blockToLive there); its matching writes stand.
pub fn verify_write_set(need: &PvtNeed, bytes: &[u8]) -> Result<KvrwSet, MismatchError> {
    let set = KvrwSet::decode(bytes).map_err(|e| MismatchError::Malformed(e.to_string()))?;
    for w in &set.writes {
        let kh = pvt_hash(w.key.as_bytes());
        let h = need
            .hashed
            .hashed_writes
            .iter()
            .find(|h| h.key_hash == kh)
            .ok_or(MismatchError::UnknownKey)?;
        if h.is_delete != w.is_delete || (!w.is_delete && h.value_hash != pvt_hash(&w.value)) {
            return Err(MismatchError::ValueHash);
        }
    }
    Ok(set)
}

/// The block at whose commit blockToLive purges a collection's values written in `block_num`.
pub fn expiry(c: &Collection, block_num: u64) -> Option<u64> {
    // A blockToLive so large that the expiry block cannot be numbered never expires.
    if c.block_to_live == 0 {
        return None;
    }
    block_num.checked_add(c.block_to_live)?.checked_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collection(block_to_live: u64) -> Collection {
        Collection {
            block_to_live,
            ..Collection::implicit("H1MSP")
        }
    }

    #[test]
    fn expiry_never_wraps_for_a_huge_block_to_live() {
        assert_eq!(expiry(&collection(0), 7), None);
        assert_eq!(expiry(&collection(10), 7), Some(18));
        // block + blockToLive + 1 overflowed: a panic in debug, a wrap to an early block (data
        // purged at once) in release. Too far to number means never.
        assert_eq!(expiry(&collection(u64::MAX), 7), None);
        assert_eq!(expiry(&collection(u64::MAX - 7), 7), None);
    }
}
