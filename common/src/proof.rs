//! Provenance proofs a third party checks offline, with nothing but the channel's genesis block:
//! a bundle of configuration blocks (how the channel's membership and consenters evolved), the
//! blocks holding the transactions of interest, and claims of what those transactions wrote. The
//! verifier trusts no peer: every block must carry a BFT quorum of signatures from the consenters
//! of the configuration in force, every configuration must be an authorised update of the one
//! before, every claimed write must be in a transaction signed by a channel member and endorsed
//! by channel peers.

use medledger_proto::common::{Block, BlockMetadataIndex, Envelope, HeaderType};
use medledger_proto::protos::{
    ChaincodeAction, ChaincodeActionPayload, ProposalResponsePayload, Transaction, TxValidationCode,
};
use medledger_proto::rwset::TxReadWriteSet;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::channelconfig::ChannelConfig;
use crate::configtx::{check_config_envelope, config_envelope_of};
use crate::msp::{Expiry, NodeRole};
use crate::protoutil::{
    block_envelopes, block_header_hash, is_config_block, signed_last_config, unpack_envelope,
};

/// The bundle format this module writes and reads.
pub const FORMAT: &str = "medledger-proof/1";

/// A self-contained provenance proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProofBundle {
    pub format: String,
    pub channel: String,
    /// The genesis block and every later configuration block up to the newest one the
    /// transactions' blocks name, oldest first (hex of `common.Block`).
    pub config_blocks: Vec<String>,
    /// The blocks holding the claimed transactions (hex of `common.Block`).
    pub blocks: Vec<String>,
    pub claims: Vec<WriteClaim>,
    /// Writes and erasures of private data the transactions made, proven by their hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub private_claims: Vec<PrivateWriteClaim>,
}

/// "Transaction `tx_id` in block `block` wrote `value` to `key` of chaincode `namespace`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WriteClaim {
    pub block: u64,
    pub tx_id: String,
    pub namespace: String,
    pub key: String,
    /// The value written (UTF-8), as the chaincode stored it.
    pub value: String,
}

/// "Transaction `tx_id` in block `block` wrote a value hashing to `value_hash` to the private key
/// hashing to `key_hash` in `collection`", or, with `erased`, "erased that key and its history"
/// (PurgePrivateData). The ledger keeps only hashes: a purged value still proves that a value
/// with that hash existed, and when it was erased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrivateWriteClaim {
    pub block: u64,
    pub tx_id: String,
    pub namespace: String,
    pub collection: String,
    /// The key, where the exporter knows it: the verifier checks that it hashes to `key_hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// SHA-256 of the key (hex).
    pub key_hash: String,
    /// SHA-256 of the value written (hex); none for a delete or an erasure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_hash: Option<String>,
    #[serde(default)]
    pub erased: bool,
}

/// One signature a proven transaction carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvenSignature {
    pub msp: String,
    pub subject: String,
    /// The signed bytes' signature (DER ECDSA), as in the block.
    pub signature: Vec<u8>,
}

/// What the verifier established about one transaction a claim names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvenTransaction {
    pub block: u64,
    pub tx_id: String,
    /// Seconds since the epoch, from the transaction's header.
    pub timestamp: i64,
    pub creator_msp: String,
    pub creator_subject: String,
    /// The creator's signature over the transaction.
    pub creator_signature: Vec<u8>,
    /// Each valid endorsement (by a peer of a channel organisation).
    pub endorsements: Vec<ProvenSignature>,
    /// Consenter ids whose signatures on the block verified.
    pub block_signers: usize,
}

impl ProvenTransaction {
    /// `subject@msp` of each endorser.
    pub fn endorsers(&self) -> Vec<String> {
        self.endorsements
            .iter()
            .map(|e| format!("{}@{}", e.subject, e.msp))
            .collect()
    }
}

/// A public write, proven.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvenClaim {
    pub claim: WriteClaim,
    pub tx: ProvenTransaction,
}

/// A private write or erasure, proven by its hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvenPrivateClaim {
    pub claim: PrivateWriteClaim,
    pub tx: ProvenTransaction,
}

/// Everything a bundle proves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    pub claims: Vec<ProvenClaim>,
    pub private_claims: Vec<ProvenPrivateClaim>,
}

/// Why a bundle does not prove what it claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("malformed bundle: {0}")]
    Malformed(String),
    #[error("the bundle starts from another channel's genesis block")]
    WrongGenesis,
    #[error("configuration block {block}: {reason}")]
    Config { block: u64, reason: String },
    #[error("block {block}: {reason}")]
    Block { block: u64, reason: String },
    #[error("transaction {tx_id} in block {block}: {reason}")]
    Transaction {
        block: u64,
        tx_id: String,
        reason: String,
    },
}

fn block_of(hex_block: &str) -> Result<Block, ProofError> {
    let bytes = hex::decode(hex_block).map_err(|e| ProofError::Malformed(e.to_string()))?;
    Block::decode(bytes.as_slice()).map_err(|e| ProofError::Malformed(format!("block: {e}")))
}

fn number(block: &Block) -> Result<u64, ProofError> {
    block
        .header
        .as_ref()
        .map(|h| h.number)
        .ok_or_else(|| ProofError::Malformed("a block without a header".into()))
}

/// Checks a bundle against the channel's genesis block, as someone trusting nothing else would.
pub fn verify(bundle: &ProofBundle, genesis: &Block) -> Result<Verified, ProofError> {
    if bundle.format != FORMAT {
        return Err(ProofError::Malformed(format!(
            "format {:?} is not {FORMAT}",
            bundle.format
        )));
    }
    let configs = configurations(bundle, genesis)?;
    let mut blocks = Vec::with_capacity(bundle.blocks.len());
    for b in &bundle.blocks {
        let block = block_of(b)?;
        let n = number(&block)?;
        let fail = |reason: String| ProofError::Block { block: n, reason };
        let index =
            signed_last_config(&block).ok_or_else(|| fail("no signed LAST_CONFIG".into()))?;
        let (in_force, config) = configs
            .iter()
            .rev()
            .find(|(c, _)| *c <= n)
            .ok_or_else(|| fail("precedes the genesis block".into()))?;
        if index != *in_force {
            return Err(fail(format!(
                "names configuration block {index}, but the bundle's configuration in force is block {in_force}"
            )));
        }
        let signers = config
            .verify_block(&block)
            .map_err(|e| fail(e.to_string()))?;
        blocks.push((n, block, config.clone(), signers));
    }
    // Each transaction is proven once, however many claims name it.
    let mut proven: Vec<(ProvenTransaction, TxReadWriteSet)> = Vec::new();
    let mut prove =
        |n: u64, tx_id: &str| -> Result<(ProvenTransaction, TxReadWriteSet), ProofError> {
            if let Some(p) = proven
                .iter()
                .find(|(t, _)| t.block == n && t.tx_id == tx_id)
            {
                return Ok(p.clone());
            }
            let (_, block, config, signers) =
                blocks
                    .iter()
                    .find(|(b, ..)| *b == n)
                    .ok_or_else(|| ProofError::Block {
                        block: n,
                        reason: "is not in the bundle".into(),
                    })?;
            let p = prove_transaction(&bundle.channel, n, tx_id, block, config, *signers)?;
            proven.push(p.clone());
            Ok(p)
        };
    let mut verified = Verified {
        claims: Vec::with_capacity(bundle.claims.len()),
        private_claims: Vec::with_capacity(bundle.private_claims.len()),
    };
    for claim in &bundle.claims {
        let (tx, rwset) = prove(claim.block, &claim.tx_id)?;
        check_public_write(claim, &rwset)?;
        verified.claims.push(ProvenClaim {
            claim: claim.clone(),
            tx,
        });
    }
    for claim in &bundle.private_claims {
        let (tx, rwset) = prove(claim.block, &claim.tx_id)?;
        check_private_write(claim, &rwset)?;
        verified.private_claims.push(ProvenPrivateClaim {
            claim: claim.clone(),
            tx,
        });
    }
    Ok(verified)
}

/// Replays the configuration history: the genesis block must be the one the verifier holds;
/// each later configuration block must be signed by the consenters of the configuration before
/// it and be an authorised update of it.
fn configurations(
    bundle: &ProofBundle,
    genesis: &Block,
) -> Result<Vec<(u64, ChannelConfig)>, ProofError> {
    let mut blocks = bundle.config_blocks.iter();
    let first = block_of(
        blocks
            .next()
            .ok_or_else(|| ProofError::Malformed("no genesis block".into()))?,
    )?;
    let (Some(a), Some(b)) = (first.header.as_ref(), genesis.header.as_ref()) else {
        return Err(ProofError::WrongGenesis);
    };
    if block_header_hash(a) != block_header_hash(b) || first.data != genesis.data {
        return Err(ProofError::WrongGenesis);
    }
    let genesis_config = ChannelConfig::from_block(genesis).map_err(|e| ProofError::Config {
        block: 0,
        reason: e.to_string(),
    })?;
    if genesis_config.channel_id != bundle.channel {
        return Err(ProofError::WrongGenesis);
    }
    let mut out = vec![(0, genesis_config)];
    for b in blocks {
        let block = block_of(b)?;
        let n = number(&block)?;
        let fail = |reason: String| ProofError::Config { block: n, reason };
        let (previous, config) = out.last().ok_or(ProofError::WrongGenesis)?;
        if n <= *previous {
            return Err(fail("configuration blocks are out of order".into()));
        }
        if !is_config_block(&block) {
            return Err(fail("is not a configuration block".into()));
        }
        config
            .verify_block(&block)
            .map_err(|e| fail(e.to_string()))?;
        let env = Envelope::decode(block_envelopes(&block)[0].as_slice())
            .map_err(|e| fail(e.to_string()))?;
        let ce = config_envelope_of(&env).map_err(|e| fail(e.to_string()))?;
        let next = check_config_envelope(config, &ce).map_err(|e| fail(e.to_string()))?;
        out.push((n, next));
    }
    Ok(out)
}

/// Proves transaction `tx_id` of verified block `n`: marked VALID, of this channel, signed by a
/// channel member and endorsed by channel peers for this very proposal. Returns what it wrote.
fn prove_transaction(
    channel: &str,
    n: u64,
    tx_id: &str,
    block: &Block,
    config: &ChannelConfig,
    block_signers: usize,
) -> Result<(ProvenTransaction, TxReadWriteSet), ProofError> {
    let fail = |reason: String| ProofError::Transaction {
        block: n,
        tx_id: tx_id.to_owned(),
        reason,
    };
    let envelopes = block_envelopes(block);
    let (index, env, u) = envelopes
        .iter()
        .enumerate()
        .find_map(|(i, e)| {
            let env = Envelope::decode(e.as_slice()).ok()?;
            let u = unpack_envelope(&env).ok()?;
            (u.channel_header.tx_id == tx_id).then_some((i, env, u))
        })
        .ok_or_else(|| fail("is not in the block".into()))?;
    // The validation flags are the committing peer's verdict (not covered by the orderers'
    // signatures): a transaction marked anything but VALID proves nothing.
    let flag = block
        .metadata
        .as_ref()
        .and_then(|m| {
            m.metadata
                .get(BlockMetadataIndex::TransactionsFilter as usize)
        })
        .and_then(|f| f.get(index))
        .copied();
    if flag != Some(TxValidationCode::Valid as u8) {
        return Err(fail(format!(
            "is not marked VALID (flag {flag:?}): it wrote nothing"
        )));
    }
    if u.channel_header.r#type != HeaderType::EndorserTransaction as i32 {
        return Err(fail("is not an endorser transaction".into()));
    }
    // Consenters' signatures do not name the channel: a block of another channel with the same
    // consenters must not stand in for one of this channel.
    if u.channel_header.channel_id != channel {
        return Err(fail(format!(
            "belongs to channel {:?}",
            u.channel_header.channel_id
        )));
    }
    if u.channel_header.tx_id
        != crate::protoutil::compute_txid(&u.signature_header.nonce, &u.signature_header.creator)
    {
        return Err(fail("its id is not SHA-256(nonce || creator)".into()));
    }
    let creator = config
        .msps
        .deserialize(&u.signature_header.creator, Expiry::Ignore)
        .map_err(|e| fail(format!("creator: {e}")))?;
    creator
        .verify(&env.payload, &env.signature)
        .map_err(|_| fail("the creator's signature does not verify".into()))?;
    let tx = Transaction::decode(u.payload.data.as_slice()).map_err(|e| fail(e.to_string()))?;
    let action = tx
        .actions
        .first()
        .ok_or_else(|| fail("has no action".into()))?;
    let cap = ChaincodeActionPayload::decode(action.payload.as_slice())
        .map_err(|e| fail(e.to_string()))?;
    let endorsed = cap
        .action
        .ok_or_else(|| fail("has no endorsed action".into()))?;
    let prp = ProposalResponsePayload::decode(endorsed.proposal_response_payload.as_slice())
        .map_err(|e| fail(e.to_string()))?;
    // The endorsements must be for this very proposal: an endorsed response copied from
    // another transaction into a new one (which peers then mark invalid) proves nothing.
    let header = u
        .payload
        .header
        .as_ref()
        .ok_or_else(|| fail("no header".into()))?;
    let expected = crate::crypto::sha256_concat(&[
        &header.channel_header,
        &action.header,
        &cap.chaincode_proposal_payload,
    ]);
    if prp.proposal_hash != expected || action.header != header.signature_header {
        return Err(fail("its endorsements are for another proposal".into()));
    }
    let mut endorsements = Vec::new();
    for e in &endorsed.endorsements {
        let who = config
            .msps
            .deserialize(&e.endorser, Expiry::Ignore)
            .map_err(|err| fail(format!("endorser: {err}")))?;
        let msg = [endorsed.proposal_response_payload.as_slice(), &e.endorser].concat();
        who.verify(&msg, &e.signature)
            .map_err(|_| fail(format!("an endorsement by {} does not verify", who.mspid)))?;
        if who.role != NodeRole::Peer || !config.application_orgs.contains(&who.mspid) {
            return Err(fail(format!(
                "endorsed by {}@{}, not a peer of a channel organisation",
                who.cert.subject, who.mspid
            )));
        }
        endorsements.push(ProvenSignature {
            msp: who.mspid.clone(),
            subject: who.cert.subject.clone(),
            signature: e.signature.clone(),
        });
    }
    if endorsements.is_empty() {
        return Err(fail("has no endorsement".into()));
    }
    let cc = ChaincodeAction::decode(prp.extension.as_slice()).map_err(|e| fail(e.to_string()))?;
    let rwset = TxReadWriteSet::decode(cc.results.as_slice()).map_err(|e| fail(e.to_string()))?;
    Ok((
        ProvenTransaction {
            block: n,
            tx_id: tx_id.to_owned(),
            timestamp: u.channel_header.timestamp.unwrap_or_default().seconds,
            creator_msp: creator.mspid.clone(),
            creator_subject: creator.cert.subject.clone(),
            creator_signature: env.signature.clone(),
            endorsements,
            block_signers,
        },
        rwset,
    ))
}

fn claim_failure(block: u64, tx_id: &str, reason: String) -> ProofError {
    ProofError::Transaction {
        block,
        tx_id: tx_id.to_owned(),
        reason,
    }
}

/// The claimed public write must be in the proven transaction's write set, value for value.
fn check_public_write(claim: &WriteClaim, rwset: &TxReadWriteSet) -> Result<(), ProofError> {
    let fail = |reason: String| claim_failure(claim.block, &claim.tx_id, reason);
    let written = rwset
        .ns_rwset
        .iter()
        .filter(|ns| ns.namespace == claim.namespace)
        .filter_map(|ns| medledger_proto::kvrwset::KvrwSet::decode(ns.rwset.as_slice()).ok())
        .flat_map(|kv| kv.writes)
        .find(|w| w.key == claim.key)
        .ok_or_else(|| {
            fail(format!(
                "wrote nothing to {}/{}",
                claim.namespace, claim.key
            ))
        })?;
    if written.is_delete || written.value != claim.value.as_bytes() {
        return Err(fail(format!(
            "wrote another value to {}/{} than the claim says",
            claim.namespace, claim.key
        )));
    }
    Ok(())
}

/// The claimed private write or erasure must be in the proven transaction's hashed write set.
fn check_private_write(
    claim: &PrivateWriteClaim,
    rwset: &TxReadWriteSet,
) -> Result<(), ProofError> {
    let fail = |reason: String| claim_failure(claim.block, &claim.tx_id, reason);
    let key_hash = hex::decode(&claim.key_hash)
        .map_err(|_| fail(format!("key hash {:?} is not hex", claim.key_hash)))?;
    if let Some(key) = &claim.key
        && crate::crypto::sha256(key.as_bytes()).as_slice() != key_hash.as_slice()
    {
        return Err(fail(format!(
            "the key {key:?} does not hash to the claimed key hash"
        )));
    }
    let where_ = format!(
        "{}/{} key {}",
        claim.namespace, claim.collection, claim.key_hash
    );
    let written = rwset
        .ns_rwset
        .iter()
        .filter(|ns| ns.namespace == claim.namespace)
        .flat_map(|ns| &ns.collection_hashed_rwset)
        .filter(|c| c.collection_name == claim.collection)
        .filter_map(|c| {
            medledger_proto::kvrwset::HashedRwSet::decode(c.hashed_rwset.as_slice()).ok()
        })
        .flat_map(|h| h.hashed_writes)
        .find(|w| w.key_hash == key_hash)
        .ok_or_else(|| fail(format!("wrote nothing to {where_}")))?;
    let value_hash = match &claim.value_hash {
        Some(h) => Some(hex::decode(h).map_err(|_| fail(format!("value hash {h:?} is not hex")))?),
        None => None,
    };
    let matches = if claim.erased {
        written.is_purge
    } else if let Some(v) = &value_hash {
        !written.is_delete && !written.is_purge && written.value_hash == *v
    } else {
        written.is_delete && !written.is_purge
    };
    if !matches {
        return Err(fail(format!(
            "did something else to {where_} than the claim says"
        )));
    }
    Ok(())
}
