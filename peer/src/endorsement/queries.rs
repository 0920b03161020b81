//! The system chaincodes Fabric's tools read a channel with: `qscc` (GetChainInfo,
//! GetBlockByNumber, GetBlockByHash, GetTransactionByID, GetBlockByTxID) and `cscc`'s
//! GetConfigBlock and GetChannelConfig. Each names its channel as its second argument and is
//! allowed to the channel's readers (Fabric's default ACLs: /Channel/Application/Readers).

use medledger_common::msp::Expiry;
use medledger_proto::common::{Block, BlockchainInfo, Envelope};
use medledger_proto::protos::{ProcessedTransaction, Response, SignedProposal};
use prost::Message;

use crate::channel::Channel;
use crate::execution::response;
use medledger_common::protoutil::UnpackedProposal;

/// The policy every channel query needs (Fabric's default ACL for qscc/* and cscc/Get*).
const READERS: &str = "/Channel/Application/Readers";

/// Whether a proposal calls a channel query this module answers.
pub fn is_channel_query(chaincode: &str, function: &[u8]) -> bool {
    match chaincode {
        "qscc" => true,
        "cscc" => matches!(function, b"GetConfigBlock" | b"GetChannelConfig"),
        _ => false,
    }
}

fn error(message: impl Into<String>) -> Response {
    response(500, message, Vec::new())
}

/// Answers a channel query on `channel` (the one its second argument names), for the proposal's
/// creator if the channel's readers policy admits it.
pub fn answer(channel: &Channel, sp: &SignedProposal, proposal: &UnpackedProposal) -> Response {
    let args = &proposal.input.args;
    let function = String::from_utf8_lossy(args.first().map(Vec::as_slice).unwrap_or_default());
    let config = channel.config();
    let allowed = config
        .msps
        .deserialize(proposal.creator(), Expiry::now())
        .ok()
        .filter(|id| id.verify(&sp.proposal_bytes, &sp.signature).is_ok())
        .is_some_and(|id| {
            config
                .policy(READERS)
                .is_some_and(|p| p.satisfied_by(std::slice::from_ref(&id)))
        });
    if !allowed {
        return error(format!(
            "access denied for [{function}][{}]: the creator does not satisfy {READERS}",
            channel.id()
        ));
    }
    let arg = args.get(2).map(Vec::as_slice);
    let result = match (proposal.chaincode_name.as_str(), function.as_ref()) {
        ("qscc", "GetChainInfo") => chain_info(channel),
        ("qscc", "GetBlockByNumber") => block_by_number(channel, arg),
        ("qscc", "GetBlockByHash") => block_by_hash(channel, arg),
        ("qscc", "GetTransactionByID") => transaction_by_id(channel, arg),
        ("qscc", "GetBlockByTxID") => block_by_tx_id(channel, arg),
        ("cscc", "GetConfigBlock") => config_block(channel).map(|b| b.encode_to_vec()),
        ("cscc", "GetChannelConfig") => config_block(channel).and_then(|b| {
            medledger_common::channelconfig::config_of_block(&b)
                .map(|c| c.encode_to_vec())
                .map_err(|e| e.to_string())
        }),
        (cc, f) => Err(format!("Requested function {f} not found in {cc}.")),
    };
    match result {
        Ok(payload) => response(200, "", payload),
        Err(e) => error(e),
    }
}

fn ledger_err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn chain_info(channel: &Channel) -> Result<Vec<u8>, String> {
    let height = channel.ledger.height();
    let current = channel.ledger.last_hash().map_err(ledger_err)?;
    let previous = match height.checked_sub(1) {
        Some(last) if last > 0 => channel
            .ledger
            .block(last)
            .map_err(ledger_err)?
            .and_then(|b| b.header)
            .map(|h| h.previous_hash)
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    Ok(BlockchainInfo {
        height,
        current_block_hash: current,
        previous_block_hash: previous,
        bootstrapping_snapshot_info: None,
    }
    .encode_to_vec())
}

fn block_by_number(channel: &Channel, arg: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let arg = arg.ok_or("missing 3rd argument for GetBlockByNumber")?;
    let number: u64 = std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "Failed to parse block number {:?}",
                String::from_utf8_lossy(arg)
            )
        })?;
    channel
        .ledger
        .block(number)
        .map_err(ledger_err)?
        .map(|b| b.encode_to_vec())
        .ok_or_else(|| format!("Failed to get block number {number}, error: no such block"))
}

fn block_by_hash(channel: &Channel, arg: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let hash = arg.ok_or("missing 3rd argument for GetBlockByHash")?;
    channel
        .ledger
        .block_by_hash(hash)
        .map_err(ledger_err)?
        .map(|b| b.encode_to_vec())
        .ok_or_else(|| "Failed to get block hash, error: no such block".to_owned())
}

/// The block holding transaction `txid` and where in it.
fn locate(channel: &Channel, txid: &str) -> Result<(Block, u64, i32), String> {
    let loc = channel
        .ledger
        .tx_location(txid)
        .map_err(ledger_err)?
        .ok_or_else(|| {
            format!("Failed to get transaction with id {txid}, error: no such transaction")
        })?;
    let block = channel
        .ledger
        .block(loc.block_num)
        .map_err(ledger_err)?
        .ok_or_else(|| format!("block {} of transaction {txid} is missing", loc.block_num))?;
    Ok((block, loc.tx_num, loc.validation_code))
}

fn transaction_by_id(channel: &Channel, arg: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let txid = String::from_utf8_lossy(arg.ok_or("missing 3rd argument for GetTransactionByID")?);
    let (block, tx_num, validation_code) = locate(channel, &txid)?;
    let env = usize::try_from(tx_num)
        .ok()
        .and_then(|i| medledger_common::protoutil::block_envelopes(&block).get(i))
        .and_then(|e| Envelope::decode(e.as_slice()).ok())
        .ok_or_else(|| format!("transaction {txid} is missing from its block"))?;
    Ok(ProcessedTransaction {
        transaction_envelope: Some(env),
        validation_code,
    }
    .encode_to_vec())
}

fn block_by_tx_id(channel: &Channel, arg: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let txid = String::from_utf8_lossy(arg.ok_or("missing 3rd argument for GetBlockByTxID")?);
    locate(channel, &txid).map(|(b, _, _)| b.encode_to_vec())
}

/// The newest configuration block.
fn config_block(channel: &Channel) -> Result<Block, String> {
    let n = channel.ledger.last_config_block().map_err(ledger_err)?;
    channel
        .ledger
        .block(n)
        .map_err(ledger_err)?
        .ok_or_else(|| format!("configuration block {n} is missing"))
}
