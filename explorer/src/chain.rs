//! What a block says, read for people: its summary (hash, time, transactions, orderer signers),
//! each transaction's creator, chaincode, function and validation code, and a transaction's
//! read/write set as keys and versions. Values are never taken out: private ones are not in
//! blocks (only their hashes), and public ones are left to the chaincode's own queries.

use medledger_common::protoutil::{block_header_hash, unpack_envelope};
use medledger_proto::common::{
    Block, BlockMetadataIndex, Envelope, HeaderType, IdentifierHeader, Metadata,
};
use medledger_proto::kvrwset::{HashedRwSet, KvrwSet};
use medledger_proto::msp::SerializedIdentity;
use medledger_proto::protos::{
    ChaincodeActionPayload, ChaincodeInvocationSpec, ChaincodeProposalPayload, Transaction,
    TxValidationCode,
};
use medledger_proto::rwset::TxReadWriteSet;
use prost::Message;
use serde::Serialize;

/// A block as the channel page lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockSummary {
    pub number: u64,
    /// Hex SHA-256 of the block header.
    pub hash: String,
    pub previous_hash: String,
    /// Seconds since the epoch: the first transaction's timestamp (blocks carry no time of
    /// their own, as in Fabric).
    pub time: Option<i64>,
    pub tx_count: usize,
    /// How many of its transactions were committed VALID.
    pub valid_count: usize,
    /// Consenter ids of the orderers whose signatures the block carries.
    pub signers: Vec<u32>,
    pub is_config: bool,
}

/// Who made a transaction or endorsed it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Party {
    pub msp: String,
    /// The certificate's subject (empty when the identity does not parse).
    pub subject: String,
}

/// A transaction as a block's page lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TxSummary {
    pub index: usize,
    pub tx_id: String,
    /// ENDORSER_TRANSACTION, CONFIG, ...
    pub kind: String,
    pub creator: Party,
    pub time: Option<i64>,
    pub chaincode: String,
    /// The chaincode function (its first argument); the other arguments are not shown.
    pub function: String,
    pub validation: String,
}

/// A public read: the key and the version (block, transaction) it was read at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Read {
    pub key: String,
    pub version: Option<(u64, u64)>,
}

/// A public write: the key, whether it deletes, and the value's size (not the value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Write {
    pub key: String,
    pub is_delete: bool,
    pub value_bytes: usize,
}

/// A private collection's part of a read/write set: hashes only, as the block holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionSet {
    pub collection: String,
    /// (key hash, version read)
    pub reads: Vec<(String, Option<(u64, u64)>)>,
    /// (key hash, delete, purge)
    pub writes: Vec<(String, bool, bool)>,
}

/// One namespace (chaincode) of a read/write set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSet {
    pub namespace: String,
    pub reads: Vec<Read>,
    /// Range queries: (start key, end key).
    pub ranges: Vec<(String, String)>,
    pub writes: Vec<Write>,
    pub collections: Vec<CollectionSet>,
}

/// A transaction in full: its summary, endorsers and read/write sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TxDetail {
    pub block: u64,
    pub summary: TxSummary,
    pub endorsers: Vec<Party>,
    pub namespaces: Vec<NamespaceSet>,
    /// The chaincode's response status and message (the payload is not shown: a submitted
    /// transaction's result is public, but the explorer shows what was read and written).
    pub response: Option<(i32, String)>,
}

/// A serialized identity as MSP id and certificate subject.
pub fn party(serialized: &[u8]) -> Party {
    let Ok(id) = SerializedIdentity::decode(serialized) else {
        return Party::default();
    };
    let subject = medledger_common::cert::Certificate::from_pem(&id.id_bytes)
        .map(|c| c.subject)
        .unwrap_or_default();
    Party {
        msp: id.mspid,
        subject,
    }
}

fn seconds(ts: Option<&prost_types::Timestamp>) -> Option<i64> {
    ts.map(|t| t.seconds)
}

/// The consenter ids whose signatures a block's SIGNATURES metadata carries (each once).
pub fn signers(block: &Block) -> Vec<u32> {
    let Some(md) = block
        .metadata
        .as_ref()
        .and_then(|m| m.metadata.get(BlockMetadataIndex::Signatures as usize))
        .and_then(|b| Metadata::decode(b.as_slice()).ok())
    else {
        return Vec::new();
    };
    let mut ids: Vec<u32> = md
        .signatures
        .iter()
        .filter_map(|s| IdentifierHeader::decode(s.identifier_header.as_slice()).ok())
        .map(|h| h.identifier)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// A block's summary.
pub fn summarize(block: &Block) -> BlockSummary {
    let header = block.header.clone().unwrap_or_default();
    let txs = transactions(block);
    BlockSummary {
        number: header.number,
        hash: hex::encode(block_header_hash(&header)),
        previous_hash: hex::encode(&header.previous_hash),
        time: txs.iter().find_map(|t| t.time),
        tx_count: txs.len(),
        valid_count: txs
            .iter()
            .filter(|t| t.validation == TxValidationCode::Valid.as_str_name())
            .count(),
        signers: signers(block),
        is_config: medledger_common::protoutil::is_config_block(block),
    }
}

fn header_kind(kind: i32) -> String {
    HeaderType::try_from(kind)
        .map(|k| k.as_str_name().to_owned())
        .unwrap_or_else(|_| format!("type {kind}"))
}

fn validation_name(code: i32) -> String {
    TxValidationCode::try_from(code)
        .map(|c| c.as_str_name().to_owned())
        .unwrap_or_else(|_| format!("code {code}"))
}

/// The chaincode and function an endorser transaction invoked (empty when it does not decode).
fn invocation(tx: &Transaction) -> (String, String) {
    let spec = tx
        .actions
        .first()
        .and_then(|a| ChaincodeActionPayload::decode(a.payload.as_slice()).ok())
        .and_then(|cap| {
            ChaincodeProposalPayload::decode(cap.chaincode_proposal_payload.as_slice()).ok()
        })
        .and_then(|cpp| ChaincodeInvocationSpec::decode(cpp.input.as_slice()).ok())
        .and_then(|cis| cis.chaincode_spec);
    let Some(spec) = spec else {
        return (String::new(), String::new());
    };
    let chaincode = spec.chaincode_id.map(|c| c.name).unwrap_or_default();
    let function = spec
        .input
        .and_then(|i| i.args.into_iter().next())
        .map(|f| String::from_utf8_lossy(&f).into_owned())
        .unwrap_or_default();
    (chaincode, function)
}

fn summary_of(index: usize, envelope: &[u8], code: i32) -> (TxSummary, Option<Transaction>) {
    let mut s = TxSummary {
        index,
        tx_id: String::new(),
        kind: "unreadable".into(),
        creator: Party::default(),
        time: None,
        chaincode: String::new(),
        function: String::new(),
        validation: validation_name(code),
    };
    let Some(u) = Envelope::decode(envelope)
        .ok()
        .and_then(|e| unpack_envelope(&e).ok())
    else {
        return (s, None);
    };
    s.tx_id = u.channel_header.tx_id.clone();
    s.kind = header_kind(u.channel_header.r#type);
    s.creator = party(&u.signature_header.creator);
    s.time = seconds(u.channel_header.timestamp.as_ref());
    if u.channel_header.r#type != HeaderType::EndorserTransaction as i32 {
        return (s, None);
    }
    let tx = Transaction::decode(u.payload.data.as_slice()).ok();
    if let Some(tx) = &tx {
        (s.chaincode, s.function) = invocation(tx);
    }
    (s, tx)
}

/// A block's transactions, in order.
pub fn transactions(block: &Block) -> Vec<TxSummary> {
    medledger_peer::channel::blocks::transactions(block)
        .enumerate()
        .map(|(i, (env, code))| summary_of(i, env, code).0)
        .collect()
}

fn version(v: Option<&medledger_proto::kvrwset::Version>) -> Option<(u64, u64)> {
    v.map(|v| (v.block_num, v.tx_num))
}

/// Transaction `tx_id` of `block` in full, if the block holds it.
pub fn transaction(block: &Block, tx_id: &str) -> Option<TxDetail> {
    let number = block.header.as_ref().map_or(0, |h| h.number);
    let (index, env, code) = medledger_peer::channel::blocks::transactions(block)
        .enumerate()
        .map(|(i, (env, code))| (i, env, code))
        .find(|(i, env, code)| summary_of(*i, env, *code).0.tx_id == tx_id)?;
    let (summary, tx) = summary_of(index, env, code);
    let mut detail = TxDetail {
        block: number,
        summary,
        endorsers: Vec::new(),
        namespaces: Vec::new(),
        response: None,
    };
    let Some(tx) = tx else {
        return Some(detail);
    };
    for action in &tx.actions {
        let Ok(cap) = ChaincodeActionPayload::decode(action.payload.as_slice()) else {
            continue;
        };
        let Some(endorsed) = cap.action else {
            continue;
        };
        detail
            .endorsers
            .extend(endorsed.endorsements.iter().map(|e| party(&e.endorser)));
    }
    let (_, actions) = medledger_peer::channel::blocks::chaincode_actions(env);
    for a in actions {
        if let Some(r) = &a.response {
            detail.response = Some((r.status, r.message.clone()));
        }
        let Ok(rw) = TxReadWriteSet::decode(a.results.as_slice()) else {
            continue;
        };
        for ns in rw.ns_rwset {
            let kv = KvrwSet::decode(ns.rwset.as_slice()).unwrap_or_default();
            let collections = ns
                .collection_hashed_rwset
                .iter()
                .map(|c| {
                    let h = HashedRwSet::decode(c.hashed_rwset.as_slice()).unwrap_or_default();
                    CollectionSet {
                        collection: c.collection_name.clone(),
                        reads: h
                            .hashed_reads
                            .iter()
                            .map(|r| (hex::encode(&r.key_hash), version(r.version.as_ref())))
                            .collect(),
                        writes: h
                            .hashed_writes
                            .iter()
                            .map(|w| (hex::encode(&w.key_hash), w.is_delete, w.is_purge))
                            .collect(),
                    }
                })
                .collect();
            detail.namespaces.push(NamespaceSet {
                namespace: ns.namespace,
                reads: kv
                    .reads
                    .iter()
                    .map(|r| Read {
                        key: printable_key(&r.key),
                        version: version(r.version.as_ref()),
                    })
                    .collect(),
                ranges: kv
                    .range_queries_info
                    .iter()
                    .map(|q| (printable_key(&q.start_key), printable_key(&q.end_key)))
                    .collect(),
                writes: kv
                    .writes
                    .iter()
                    .map(|w| Write {
                        key: printable_key(&w.key),
                        is_delete: w.is_delete,
                        value_bytes: w.value.len(),
                    })
                    .collect(),
                collections,
            });
        }
    }
    Some(detail)
}

/// A ledger key as a person reads it: composite keys' NUL separators shown as `/`.
pub fn printable_key(key: &str) -> String {
    key.trim_matches('\u{0}').replace('\u{0}', "/")
}
