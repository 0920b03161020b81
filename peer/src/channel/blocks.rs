//! What a committed block's transactions say: each envelope with its validation code, and the
//! transaction id, chaincode actions and events of endorser transactions.

use medledger_common::protoutil::unpack_envelope;
use medledger_proto::common::{Block, BlockMetadataIndex, Envelope, HeaderType};
use medledger_proto::protos::{
    ChaincodeAction, ChaincodeActionPayload, ChaincodeEvent, ProposalResponsePayload, Transaction,
    TxValidationCode,
};
use prost::Message;

/// The transaction id and chaincode actions of an endorser transaction envelope (none for any
/// other envelope or one that does not decode).
pub fn chaincode_actions(envelope: &[u8]) -> (String, Vec<ChaincodeAction>) {
    let none = || (String::new(), Vec::new());
    let Ok(env) = Envelope::decode(envelope) else {
        return none();
    };
    let Ok(u) = unpack_envelope(&env) else {
        return none();
    };
    if u.channel_header.r#type != HeaderType::EndorserTransaction as i32 {
        return none();
    }
    let Ok(tx) = Transaction::decode(u.payload.data.as_slice()) else {
        return none();
    };
    let actions = tx
        .actions
        .iter()
        .filter_map(|a| {
            let cap = ChaincodeActionPayload::decode(a.payload.as_slice()).ok()?;
            let prp =
                ProposalResponsePayload::decode(cap.action?.proposal_response_payload.as_slice())
                    .ok()?;
            ChaincodeAction::decode(prp.extension.as_slice()).ok()
        })
        .collect();
    (u.channel_header.tx_id, actions)
}

/// The chaincode events of an endorser transaction envelope, in action order.
pub fn chaincode_events(envelope: &[u8]) -> Vec<ChaincodeEvent> {
    chaincode_actions(envelope)
        .1
        .into_iter()
        .filter(|a| !a.events.is_empty())
        .filter_map(|a| ChaincodeEvent::decode(a.events.as_slice()).ok())
        .collect()
}

/// A committed block's envelopes, each with its TxValidationCode from TRANSACTIONS_FILTER
/// (INVALID_OTHER_REASON when the filter is missing or short, as Fabric's gateway reads it).
pub fn transactions(block: &Block) -> impl Iterator<Item = (&[u8], i32)> {
    let filter: &[u8] = block
        .metadata
        .as_ref()
        .and_then(|m| {
            m.metadata
                .get(BlockMetadataIndex::TransactionsFilter as usize)
        })
        .map(Vec::as_slice)
        .unwrap_or_default();
    medledger_common::protoutil::block_envelopes(block)
        .iter()
        .enumerate()
        .map(move |(i, env)| {
            let code = filter
                .get(i)
                .map_or(TxValidationCode::InvalidOtherReason as i32, |c| {
                    i32::from(*c)
                });
            (env.as_slice(), code)
        })
}
