//! The committer: verifies a block's orderer signatures, validates each transaction (envelope,
//! creator signature, txid, duplicates, endorsement policy through the validation plugin, MVCC
//! reads and range-query phantoms), writes the validation codes into TRANSACTIONS_FILTER and
//! commits block, state, history and transaction index in one write. For private data it checks
//! the collections' rules and hashed reads, applies the hashed writes, and commits the private
//! write sets this peer is a member for after checking them against the block's hashes (what it
//! lacks is recorded as missing for reconciliation).

use std::collections::{BTreeMap, HashSet};

use medledger_common::channelconfig::ChannelConfig;
use medledger_common::configtx;
use medledger_common::crypto::sha256_concat;
use medledger_common::msp::{Expiry, Identity};
use medledger_common::protoutil::{self, compute_txid, unpack_envelope};
use medledger_proto::common::{BlockMetadataIndex, Envelope, HeaderType};
use medledger_proto::kvrwset::{
    HashedRwSet, KvRead, KvrwSet, Version, range_query_info::ReadsInfo,
};
use medledger_proto::medledger::ledger::{HistoryEntry, TxLocation, VersionedValue};
use medledger_proto::protos::{
    ChaincodeAction, ChaincodeActionPayload, ChaincodeEndorsedAction, ProposalResponsePayload,
    Transaction, TxValidationCode as Code,
};
use medledger_proto::rwset::TxReadWriteSet;
use prost::Message;

use crate::channel::Channel;
use crate::channel::definition::ChaincodeDefinition;
use crate::channel::pvtdata::{PvtCandidates, PvtNeed, expiry, verify_write_set};
use crate::execution::plugins::{PluginRegistry, ValidationInput};
use crate::storage::ledger::{
    BlockCommit, HashedUpdate, LedgerError, PvtCommit, PvtPurge, PvtSlot, StateUpdate,
};

mod verified;
pub use verified::VerifiedBlock;

/// The state-metadata entry holding a key-level endorsement policy.
pub const VALIDATION_PARAMETER: &str = "VALIDATION_PARAMETER";

/// Errors that stop a block from being committed at all.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("block rejected: {0}")]
    BadBlock(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

type NsKey = (String, String);
type HashedKey = (String, String, Vec<u8>);

/// State as seen by transaction `i` of a block: the ledger plus the writes of earlier valid
/// transactions of the same block.
struct Overlay<'a> {
    channel: &'a Channel,
    updates: BTreeMap<NsKey, Option<VersionedValue>>,
    hashed: BTreeMap<HashedKey, Option<VersionedValue>>,
}

impl Overlay<'_> {
    fn hashed_version(
        &self,
        ns: &str,
        coll: &str,
        key_hash: &[u8],
    ) -> Result<Option<Version>, LedgerError> {
        let v = match self
            .hashed
            .get(&(ns.to_owned(), coll.to_owned(), key_hash.to_vec()))
        {
            Some(v) => v.clone(),
            None => self.channel.ledger.hashed_state(ns, coll, key_hash)?,
        };
        Ok(v.map(|v| Version {
            block_num: v.block_num,
            tx_num: v.tx_num,
        }))
    }

    fn get(&self, ns: &str, key: &str) -> Result<Option<VersionedValue>, LedgerError> {
        match self.updates.get(&(ns.to_owned(), key.to_owned())) {
            Some(v) => Ok(v.clone()),
            None => self.channel.ledger.state(ns, key),
        }
    }

    fn version(&self, ns: &str, key: &str) -> Result<Option<Version>, LedgerError> {
        Ok(self.get(ns, key)?.map(|v| Version {
            block_num: v.block_num,
            tx_num: v.tx_num,
        }))
    }

    /// Re-runs a range query: keys in `[start, end)`, or `[start, end]` when `inclusive`.
    fn range(
        &self,
        ns: &str,
        start: &str,
        end: &str,
        inclusive: bool,
    ) -> Result<Vec<KvRead>, LedgerError> {
        let upper = if inclusive && !end.is_empty() {
            format!("{end}\u{0}")
        } else {
            end.to_owned()
        };
        let mut merged: BTreeMap<String, Option<Version>> = self
            .channel
            .ledger
            .range(
                ns,
                start,
                &upper,
                crate::execution::simulator::TOTAL_QUERY_LIMIT,
            )?
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    Some(Version {
                        block_num: v.block_num,
                        tx_num: v.tx_num,
                    }),
                )
            })
            .collect();
        for ((n, k), v) in &self.updates {
            if n == ns && k.as_str() >= start && (upper.is_empty() || k.as_str() < upper.as_str()) {
                merged.insert(
                    k.clone(),
                    v.as_ref().map(|v| Version {
                        block_num: v.block_num,
                        tx_num: v.tx_num,
                    }),
                );
            }
        }
        Ok(merged
            .into_iter()
            .filter_map(|(key, version)| {
                version.map(|v| KvRead {
                    key,
                    version: Some(v),
                })
            })
            .collect())
    }
}

/// One collection's part of a transaction.
struct CollectionEffects {
    name: String,
    hashed: HashedRwSet,
    pvt_rwset_hash: Vec<u8>,
}

/// What a valid transaction changes.
struct Effects {
    ns: String,
    set: KvrwSet,
    collections: Vec<CollectionEffects>,
    tx_id: String,
    timestamp: Option<prost_types::Timestamp>,
    creator_msp: String,
    creator_subject: String,
}

fn validate(
    env_bytes: &[u8],
    tx_num: u64,
    overlay: &Overlay<'_>,
    seen: &HashSet<String>,
    plugins: &PluginRegistry,
) -> Result<Effects, (Code, String)> {
    let fail = |c: Code, m: &str| (c, m.to_owned());
    let channel = overlay.channel;
    let env =
        Envelope::decode(env_bytes).map_err(|_| fail(Code::BadPayload, "undecodable envelope"))?;
    if env.payload.is_empty() {
        return Err(fail(Code::NilEnvelope, "empty envelope"));
    }
    let u = unpack_envelope(&env).map_err(|e| (Code::BadPayload, e.to_string()))?;
    let ch = &u.channel_header;
    if ch.r#type != HeaderType::EndorserTransaction as i32 {
        return Err(fail(
            Code::UnsupportedTxPayload,
            "only endorser transactions are supported after genesis",
        ));
    }
    if ch.epoch != 0 || u.signature_header.nonce.is_empty() || u.signature_header.creator.is_empty()
    {
        return Err(fail(Code::BadCommonHeader, "bad common header"));
    }
    if ch.channel_id != channel.id() {
        return Err(fail(
            Code::TargetChainNotFound,
            "transaction is for another channel",
        ));
    }
    let creator = channel
        .config()
        .msps
        .deserialize(&u.signature_header.creator, Expiry::Ignore)
        .map_err(|e| (Code::BadCreatorSignature, e.to_string()))?;
    creator.verify(&env.payload, &env.signature).map_err(|_| {
        fail(
            Code::BadCreatorSignature,
            "creator signature does not verify",
        )
    })?;
    if ch.tx_id != compute_txid(&u.signature_header.nonce, &u.signature_header.creator) {
        return Err(fail(
            Code::BadProposalTxid,
            "txid is not SHA-256(nonce || creator)",
        ));
    }
    let dup = seen.contains(&ch.tx_id)
        || channel
            .ledger
            .tx_location(&ch.tx_id)
            .map_err(|e| (Code::InvalidOtherReason, e.to_string()))?
            .is_some();
    if dup {
        return Err(fail(Code::DuplicateTxid, "duplicate transaction id"));
    }
    let tx = Transaction::decode(u.payload.data.as_slice())
        .map_err(|_| fail(Code::InvalidEndorserTransaction, "bad transaction"))?;
    let [action] = tx.actions.as_slice() else {
        return Err(fail(
            Code::InvalidEndorserTransaction,
            "a transaction must have exactly one action",
        ));
    };
    let header = u
        .payload
        .header
        .as_ref()
        .ok_or_else(|| fail(Code::BadPayload, "no header"))?;
    if action.header != header.signature_header {
        return Err(fail(
            Code::InvalidEndorserTransaction,
            "action header does not match the transaction creator",
        ));
    }
    let cap = ChaincodeActionPayload::decode(action.payload.as_slice()).map_err(|_| {
        fail(
            Code::InvalidEndorserTransaction,
            "bad chaincode action payload",
        )
    })?;
    let endorsed = cap
        .action
        .ok_or_else(|| fail(Code::InvalidEndorserTransaction, "no endorsed action"))?;
    let prp = ProposalResponsePayload::decode(endorsed.proposal_response_payload.as_slice())
        .map_err(|_| fail(Code::BadResponsePayload, "bad proposal response payload"))?;
    let expected_hash = sha256_concat(&[
        &header.channel_header,
        &action.header,
        &cap.chaincode_proposal_payload,
    ]);
    if prp.proposal_hash != expected_hash {
        return Err(fail(
            Code::InvalidEndorserTransaction,
            "proposal hash does not match",
        ));
    }
    let cc_action = ChaincodeAction::decode(prp.extension.as_slice())
        .map_err(|_| fail(Code::BadResponsePayload, "bad chaincode action"))?;
    let name = cc_action
        .chaincode_id
        .as_ref()
        .map(|c| c.name.clone())
        .unwrap_or_default();
    let def = channel.chaincode(&name).ok_or_else(|| {
        (
            Code::InvalidChaincode,
            format!("chaincode {name:?} is not defined"),
        )
    })?;
    let (set, collections) = read_write_sets(&cc_action.results, &name, &def, &creator)?;
    check_endorsement(overlay, plugins, &def, &name, &set, &collections, &endorsed)?;
    check_mvcc(overlay, &name, &set, &collections)?;
    let _ = tx_num;
    Ok(Effects {
        ns: name,
        set,
        collections,
        tx_id: ch.tx_id.clone(),
        timestamp: ch.timestamp,
        creator_msp: creator.mspid.clone(),
        creator_subject: creator.cert.subject.clone(),
    })
}

/// The transaction's public write set of chaincode `name` and its collections' hashed sets,
/// checked against the definition: only its own namespace, defined collections, memberOnlyWrite,
/// well-formed hashes.
fn read_write_sets(
    results: &[u8],
    name: &str,
    def: &ChaincodeDefinition,
    creator: &Identity,
) -> Result<(KvrwSet, Vec<CollectionEffects>), (Code, String)> {
    let fail = |c: Code, m: &str| (c, m.to_owned());
    let rwset =
        TxReadWriteSet::decode(results).map_err(|_| fail(Code::BadRwset, "bad read-write set"))?;
    let mut set = KvrwSet::default();
    let mut collections = Vec::new();
    for ns in &rwset.ns_rwset {
        if ns.namespace != name {
            return Err((
                Code::IllegalWriteset,
                format!("read-write set touches namespace {:?}", ns.namespace),
            ));
        }
        set = KvrwSet::decode(ns.rwset.as_slice())
            .map_err(|_| fail(Code::BadRwset, "bad KV read-write set"))?;
        for ch in &ns.collection_hashed_rwset {
            let c = def.collections.get(&ch.collection_name).ok_or_else(|| {
                (
                    Code::InvalidWriteset,
                    format!("collection {:?} is not defined", ch.collection_name),
                )
            })?;
            let hashed = HashedRwSet::decode(ch.hashed_rwset.as_slice())
                .map_err(|_| fail(Code::BadRwset, "bad hashed read-write set"))?;
            if !hashed.hashed_writes.is_empty() && c.member_only_write && !c.admits(creator) {
                return Err((
                    Code::InvalidWriteset,
                    format!(
                        "the creator may not write to collection {} (memberOnlyWrite)",
                        c.name
                    ),
                ));
            }
            if hashed
                .hashed_writes
                .iter()
                .any(|w| w.key_hash.len() != 32 || (!w.is_delete && w.value_hash.len() != 32))
            {
                return Err(fail(Code::InvalidWriteset, "malformed hashed write"));
            }
            collections.push(CollectionEffects {
                name: ch.collection_name.clone(),
                hashed,
                pvt_rwset_hash: ch.pvt_rwset_hash.clone(),
            });
        }
    }

    Ok((set, collections))
}

/// The endorsement policies a transaction answers to (the chaincode's with key-level policies of
/// the keys written, and the written collections' own), checked by the validation plugin.
fn check_endorsement(
    overlay: &Overlay<'_>,
    plugins: &PluginRegistry,
    def: &ChaincodeDefinition,
    name: &str,
    set: &KvrwSet,
    collections: &[CollectionEffects],
    endorsed: &ChaincodeEndorsedAction,
) -> Result<(), (Code, String)> {
    let channel = overlay.channel;
    // Endorsement policy, with key-level policies of the keys written.
    let mut key_policies = Vec::new();
    let written: Vec<&str> = set
        .writes
        .iter()
        .map(|w| w.key.as_str())
        .chain(set.metadata_writes.iter().map(|m| m.key.as_str()))
        .collect();
    for key in written {
        let current = overlay
            .get(name, key)
            .map_err(|e| (Code::InvalidOtherReason, e.to_string()))?;
        key_policies.push(
            current
                .and_then(|v| {
                    v.metadata
                        .into_iter()
                        .find(|m| m.name == VALIDATION_PARAMETER)
                })
                .map(|m| m.value),
        );
    }
    let plugin = plugins.validation(&def.validation_plugin).ok_or_else(|| {
        (
            Code::InvalidOtherReason,
            format!(
                "validation plugin {:?} is not registered",
                def.validation_plugin
            ),
        )
    })?;
    let (chaincode_policy_needed, policies) = def.collections.endorsement_policies(
        !written_public_is_empty(set),
        collections
            .iter()
            .filter(|c| !c.hashed.hashed_writes.is_empty())
            .map(|c| c.name.as_str()),
    );
    if chaincode_policy_needed {
        plugin
            .validate(&ValidationInput {
                payload: &endorsed.proposal_response_payload,
                endorsements: &endorsed.endorsements,
                chaincode_policy: &def.endorsement_policy,
                key_policies,
                msps: &channel.config().msps,
            })
            .map_err(|c| (c, "endorsement policy not satisfied".to_owned()))?;
    }
    for policy in policies {
        plugin
            .validate(&ValidationInput {
                payload: &endorsed.proposal_response_payload,
                endorsements: &endorsed.endorsements,
                chaincode_policy: policy,
                key_policies: Vec::new(),
                msps: &channel.config().msps,
            })
            .map_err(|c| (c, "collection endorsement policy not satisfied".to_owned()))?;
    }

    Ok(())
}

/// MVCC: every read must still be at the version read, every range must return the same keys,
/// every hashed private read must still be at its version.
fn check_mvcc(
    overlay: &Overlay<'_>,
    name: &str,
    set: &KvrwSet,
    collections: &[CollectionEffects],
) -> Result<(), (Code, String)> {
    let fail = |c: Code, m: &str| (c, m.to_owned());
    // MVCC: every read must still be at the version read; every range must return the same keys.
    for r in &set.reads {
        let now = overlay
            .version(name, &r.key)
            .map_err(|e| (Code::InvalidOtherReason, e.to_string()))?;
        if now != r.version {
            return Err((
                Code::MvccReadConflict,
                format!("key {:?} changed since it was read", r.key),
            ));
        }
    }
    for q in &set.range_queries_info {
        let Some(ReadsInfo::RawReads(raw)) = &q.reads_info else {
            return Err(fail(
                Code::InvalidOtherReason,
                "merkle-summarised range queries are not supported",
            ));
        };
        let again = overlay
            .range(name, &q.start_key, &q.end_key, !q.itr_exhausted)
            .map_err(|e| (Code::InvalidOtherReason, e.to_string()))?;
        if again != raw.kv_reads {
            return Err((
                Code::PhantomReadConflict,
                format!("range [{:?}, {:?}) changed", q.start_key, q.end_key),
            ));
        }
    }
    for ce in collections {
        for r in &ce.hashed.hashed_reads {
            let now = overlay
                .hashed_version(name, &ce.name, &r.key_hash)
                .map_err(|e| (Code::InvalidOtherReason, e.to_string()))?;
            if now != r.version {
                return Err((
                    Code::MvccReadConflict,
                    format!(
                        "a private key of collection {} changed since it was read",
                        ce.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn apply(
    block_num: u64,
    tx_num: u64,
    fx: &Effects,
    overlay: &mut Overlay<'_>,
    commit: &mut BlockCommit,
) -> Result<(), LedgerError> {
    for w in &fx.set.writes {
        let old = overlay.get(&fx.ns, &w.key)?;
        let value = if w.is_delete || w.value.is_empty() {
            None
        } else {
            Some(VersionedValue {
                block_num,
                tx_num,
                value: w.value.clone(),
                metadata: old.map(|o| o.metadata).unwrap_or_default(),
            })
        };
        commit.history.push((
            fx.ns.clone(),
            w.key.clone(),
            HistoryEntry {
                tx_id: fx.tx_id.clone(),
                timestamp: fx.timestamp,
                is_delete: value.is_none(),
                value: w.value.clone(),
                creator_msp_id: fx.creator_msp.clone(),
                creator_subject: fx.creator_subject.clone(),
                block_num,
                tx_num,
            },
        ));
        overlay
            .updates
            .insert((fx.ns.clone(), w.key.clone()), value);
    }
    let def = overlay.channel.chaincode(&fx.ns);
    for ce in &fx.collections {
        let expires_at = def
            .as_ref()
            .and_then(|d| d.collections.get(&ce.name))
            .and_then(|c| expiry(c, block_num));
        for w in &ce.hashed.hashed_writes {
            let value = (!w.is_delete).then(|| VersionedValue {
                block_num,
                tx_num,
                value: w.value_hash.clone(),
                metadata: Vec::new(),
            });
            overlay.hashed.insert(
                (fx.ns.clone(), ce.name.clone(), w.key_hash.clone()),
                value.clone(),
            );
            commit.hashed_updates.push(HashedUpdate {
                namespace: fx.ns.clone(),
                collection: ce.name.clone(),
                key_hash: w.key_hash.clone(),
                value,
                expires_at,
            });
            if w.is_purge {
                commit.pvt_purges.push(PvtPurge {
                    namespace: fx.ns.clone(),
                    collection: ce.name.clone(),
                    key_hash: w.key_hash.clone(),
                });
            }
        }
    }
    for m in &fx.set.metadata_writes {
        if let Some(mut v) = overlay.get(&fx.ns, &m.key)? {
            v.metadata = m.entries.clone();
            v.block_num = block_num;
            v.tx_num = tx_num;
            overlay
                .updates
                .insert((fx.ns.clone(), m.key.clone()), Some(v));
        }
    }
    Ok(())
}

/// Whether a read-write set writes no public key (value or metadata).
pub(crate) fn written_public_is_empty(set: &KvrwSet) -> bool {
    set.writes.is_empty() && set.metadata_writes.is_empty()
}

/// The private write sets of a valid transaction this peer is a member for: the first
/// candidate that matches the block's hashes, or a missing entry.
fn private_commits(
    channel: &Channel,
    block_num: u64,
    tx_num: u64,
    fx: &Effects,
    pvt: &PvtCandidates,
    commit: &mut BlockCommit,
) {
    let Some(def) = channel.chaincode(&fx.ns) else {
        return;
    };
    for ce in &fx.collections {
        let Some(c) = def.collections.get(&ce.name) else {
            continue;
        };
        if !c.is_member_org(&channel.local_msp) || ce.hashed.hashed_writes.is_empty() {
            continue;
        }
        let need = PvtNeed {
            slot: PvtSlot {
                block_num,
                tx_num,
                namespace: fx.ns.clone(),
                collection: ce.name.clone(),
            },
            tx_id: fx.tx_id.clone(),
            hashed: ce.hashed.clone(),
            pvt_rwset_hash: ce.pvt_rwset_hash.clone(),
        };
        let verified = pvt
            .get(&need.slot)
            .into_iter()
            .flatten()
            .find_map(|bytes| match verify_write_set(&need, bytes) {
                Ok(set) => Some(set),
                Err(e) => {
                    tracing::warn!(block = block_num, tx = tx_num, collection = %ce.name, error = %e, "private write set refused");
                    None
                }
            });
        match verified {
            Some(set) => commit.pvt_writes.push(PvtCommit {
                slot: need.slot,
                set,
                expires_at: expiry(c, block_num),
            }),
            None => {
                tracing::warn!(block = block_num, tx = tx_num, collection = %ce.name, "private data missing at commit; reconciliation will fetch it");
                commit.pvt_missing.push(need.slot)
            }
        }
    }
}

/// What a block commit decided.
#[derive(Debug, Default)]
pub struct Committed {
    /// The validation code of each transaction.
    pub codes: Vec<Code>,
    /// The chaincodes (namespaces) valid transactions of the block wrote to.
    pub namespaces: std::collections::BTreeSet<String>,
    /// The block was a valid configuration block: a new configuration is in force.
    pub config_changed: bool,
}

/// Validates and commits one verified block (the genesis block is committed as given) with the
/// private write sets gathered for it.
pub fn commit_block(
    channel: &Channel,
    plugins: &PluginRegistry,
    block: VerifiedBlock,
    pvt: &PvtCandidates,
) -> Result<Committed, CommitError> {
    let number = block.number();
    let mut block = block.into_block();
    let envelopes = block
        .data
        .as_ref()
        .map(|d| d.data.clone())
        .unwrap_or_default();
    let mut overlay = Overlay {
        channel,
        updates: BTreeMap::new(),
        hashed: BTreeMap::new(),
    };
    let mut commit = BlockCommit::default();
    let mut seen = HashSet::new();
    let mut codes = Vec::with_capacity(envelopes.len());
    let mut namespaces = std::collections::BTreeSet::new();
    // A configuration block holds one CONFIG transaction, checked against the configuration in
    // force before it; the block after it is validated under the new one.
    let config_verdict = (number > 0 && protoutil::is_config_block(&block))
        .then(|| check_config_transaction(channel, envelopes.first().map(Vec::as_slice)));
    for (i, env) in envelopes.iter().enumerate() {
        let i = i as u64;
        let (code, txid) = if number == 0 {
            (Code::Valid, String::new())
        } else if let Some(verdict) = &config_verdict {
            match verdict {
                Ok(_) => (Code::Valid, tx_id_of(env)),
                Err(why) => {
                    tracing::warn!(block = number, %why, "configuration transaction invalid");
                    (Code::InvalidConfigTransaction, tx_id_of(env))
                }
            }
        } else {
            match validate(env, i, &overlay, &seen, plugins) {
                Ok(fx) => {
                    apply(number, i, &fx, &mut overlay, &mut commit)?;
                    private_commits(channel, number, i, &fx, pvt, &mut commit);
                    namespaces.insert(fx.ns.clone());
                    (Code::Valid, fx.tx_id)
                }
                Err((code, why)) => {
                    tracing::info!(block = number, tx = i, ?code, %why, "transaction invalid");
                    (code, tx_id_of(env))
                }
            }
        };
        if !txid.is_empty() {
            commit.transient_done.push(txid.clone());
            seen.insert(txid.clone());
            commit.tx_locations.push((
                txid,
                TxLocation {
                    block_num: number,
                    tx_num: i,
                    validation_code: code as i32,
                },
            ));
        }
        codes.push(code);
    }
    let metadata = block.metadata.get_or_insert_with(Default::default);
    while metadata.metadata.len() < medledger_common::protoutil::BLOCK_METADATA_SLOTS {
        metadata.metadata.push(Vec::new());
    }
    metadata.metadata[BlockMetadataIndex::TransactionsFilter as usize] =
        codes.iter().map(|c| *c as u8).collect();
    commit.updates = overlay
        .updates
        .into_iter()
        .map(|((namespace, key), value)| StateUpdate {
            namespace,
            key,
            value,
        })
        .collect();
    commit.block = block;
    let next_config = config_verdict.and_then(Result::ok);
    commit.config_block = next_config.is_some();
    channel.ledger.commit(commit)?;
    let config_changed = next_config.is_some();
    if let Some(next) = next_config {
        tracing::info!(channel = %channel.id(), block = number, sequence = next.sequence, "configuration updated");
        channel.replace_config(next);
    }
    Ok(Committed {
        codes,
        namespaces,
        config_changed,
    })
}

/// The transaction id an envelope's channel header names (empty if it does not decode).
fn tx_id_of(env: &[u8]) -> String {
    Envelope::decode(env)
        .ok()
        .and_then(|e| unpack_envelope(&e).ok())
        .map(|u| u.channel_header.tx_id)
        .unwrap_or_default()
}

/// Checks a configuration block's CONFIG transaction against the configuration in force.
fn check_config_transaction(
    channel: &Channel,
    env: Option<&[u8]>,
) -> Result<ChannelConfig, String> {
    let env = Envelope::decode(env.unwrap_or_default()).map_err(|e| e.to_string())?;
    let config_envelope = configtx::config_envelope_of(&env).map_err(|e| e.to_string())?;
    configtx::check_config_envelope(&channel.config(), &config_envelope).map_err(|e| e.to_string())
}
