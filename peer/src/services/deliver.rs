//! Fabric's Deliver service on the peer (Deliver, DeliverFiltered, DeliverWithPrivateData): a
//! client sends a signed seek envelope and receives blocks from the ledger, waiting for new ones
//! when asked, under the channel's Readers policy.

use std::pin::Pin;

use futures::Stream;
use medledger_common::channelconfig::check_seek;
use medledger_common::protoutil::unpack_envelope;
use medledger_proto::common::{
    Block, BlockMetadataIndex, Envelope, HeaderType, Status as BlockStatus,
};
use medledger_proto::protos::deliver_server::Deliver;
use medledger_proto::protos::{
    BlockAndPrivateData, ChaincodeAction, ChaincodeActionPayload, ChaincodeEvent, DeliverResponse,
    FilteredBlock, FilteredChaincodeAction, FilteredTransaction, FilteredTransactionActions,
    ProposalResponsePayload, Transaction, TxValidationCode, deliver_response::Type as Resp,
    filtered_transaction::Data,
};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::channel::Channel;
use crate::endorser::{Channels, TIME_WINDOW};
use crate::privdata::{add_collection, block_needs};
use medledger_common::msp::{Expiry, Identity};
use medledger_proto::rwset::{CollectionPvtReadWriteSet, TxPvtReadWriteSet};

/// What a Deliver stream sends for each block.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum BlockForm {
    Full,
    Filtered,
    WithPrivateData,
}

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

/// Fabric's filtered block: per transaction its id, type, code and event names (no payloads).
pub fn filtered_block(channel: &str, block: &Block) -> FilteredBlock {
    let mut txs = Vec::new();
    for (env, code) in transactions(block) {
        let Some(u) = Envelope::decode(env)
            .ok()
            .and_then(|e| unpack_envelope(&e).ok())
        else {
            continue;
        };
        let kind = u.channel_header.r#type;
        let data = (kind == HeaderType::EndorserTransaction as i32).then(|| {
            Data::TransactionActions(FilteredTransactionActions {
                chaincode_actions: chaincode_events(env)
                    .into_iter()
                    .filter(|e| !e.chaincode_id.is_empty())
                    .map(|e| FilteredChaincodeAction {
                        chaincode_event: Some(ChaincodeEvent {
                            payload: Vec::new(),
                            ..e
                        }),
                    })
                    .collect(),
            })
        });
        txs.push(FilteredTransaction {
            txid: u.channel_header.tx_id,
            r#type: kind,
            tx_validation_code: code,
            data,
        });
    }
    FilteredBlock {
        channel_id: channel.to_owned(),
        number: block.header.as_ref().map(|h| h.number).unwrap_or_default(),
        filtered_transactions: txs,
    }
}

fn status(s: BlockStatus) -> DeliverResponse {
    DeliverResponse {
        r#type: Some(Resp::Status(s as i32)),
    }
}

/// Serves one seek request; returns the status to send after the blocks (or instead of them).
async fn seek(
    channels: &Channels,
    env: Envelope,
    form: BlockForm,
    out: &mpsc::Sender<Result<DeliverResponse, Status>>,
) -> BlockStatus {
    let Some(channel_id) = unpack_envelope(&env)
        .ok()
        .map(|u| u.channel_header.channel_id)
    else {
        return BlockStatus::BadRequest;
    };
    let Some(channel) = channels.read().await.get(&channel_id).cloned() else {
        return BlockStatus::NotFound;
    };
    let ledger = channel.ledger.clone();
    let range = match check_seek(
        &channel.config,
        &env,
        ledger.height(),
        "/Channel/Application/Readers",
        TIME_WINDOW.as_secs(),
    ) {
        Ok(r) => r,
        Err(s) => return s,
    };
    let (start, stop, fail_if_not_ready) = (range.start, range.stop, range.fail_if_not_ready);
    // Private data goes only to a requester the collection's membership policy admits.
    let requester = unpack_envelope(&env).ok().and_then(|u| {
        channel
            .config
            .msps
            .deserialize(&u.signature_header.creator, Expiry::now())
            .ok()
    });
    let mut heights = ledger.subscribe();
    let mut n = start;
    while n <= stop {
        if n >= ledger.height() {
            if fail_if_not_ready {
                return BlockStatus::NotFound;
            }
            tokio::select! {
                changed = heights.changed() => if changed.is_err() { return BlockStatus::ServiceUnavailable },
                _ = out.closed() => return BlockStatus::Success,
            }
            continue;
        }
        let block = match ledger.block(n) {
            Ok(Some(b)) => b,
            _ => return BlockStatus::InternalServerError,
        };
        let resp = match form {
            BlockForm::Full => Resp::Block(block),
            BlockForm::Filtered => Resp::FilteredBlock(filtered_block(channel.id(), &block)),
            BlockForm::WithPrivateData => {
                let private_data_map = match &requester {
                    Some(who) => private_data_of(&channel, &block, who),
                    None => Default::default(),
                };
                Resp::BlockAndPrivateData(BlockAndPrivateData {
                    block: Some(block),
                    private_data_map,
                })
            }
        };
        if out
            .send(Ok(DeliverResponse { r#type: Some(resp) }))
            .await
            .is_err()
        {
            return BlockStatus::Success;
        }
        n += 1;
    }
    BlockStatus::Success
}

/// The committed private write sets of `block` this peer holds and `requester` may see, by
/// transaction number.
fn private_data_of(
    channel: &Channel,
    block: &Block,
    requester: &Identity,
) -> std::collections::HashMap<u64, TxPvtReadWriteSet> {
    let mut out: std::collections::HashMap<u64, TxPvtReadWriteSet> = Default::default();
    for need in block_needs(channel, block) {
        let admitted = channel
            .collection(&need.slot.namespace, &need.slot.collection)
            .is_some_and(|c| c.admits(requester));
        if !admitted {
            continue;
        }
        let Ok(Some(set)) = channel.ledger.pvt_write_set(&need.slot) else {
            continue;
        };
        add_collection(
            out.entry(need.slot.tx_num).or_default(),
            &need.slot.namespace,
            CollectionPvtReadWriteSet {
                collection_name: need.slot.collection.clone(),
                rwset: set.encode_to_vec(),
            },
        );
    }
    out
}

type DeliverStream = Pin<Box<dyn Stream<Item = Result<DeliverResponse, Status>> + Send>>;

/// The peer's Deliver service.
pub struct DeliverService {
    pub channels: Channels,
}

impl DeliverService {
    fn serve(&self, mut inbound: Streaming<Envelope>, form: BlockForm) -> DeliverStream {
        let (tx, rx) = mpsc::channel(16);
        let channels = self.channels.clone();
        tokio::spawn(async move {
            while let Ok(Some(env)) = inbound.message().await {
                let s = seek(&channels, env, form, &tx).await;
                if tx.send(Ok(status(s))).await.is_err() || s != BlockStatus::Success {
                    break;
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }
}

#[tonic::async_trait]
impl Deliver for DeliverService {
    type DeliverStream = DeliverStream;
    type DeliverFilteredStream = DeliverStream;
    type DeliverWithPrivateDataStream = DeliverStream;

    async fn deliver(
        &self,
        r: Request<Streaming<Envelope>>,
    ) -> Result<Response<DeliverStream>, Status> {
        Ok(Response::new(self.serve(r.into_inner(), BlockForm::Full)))
    }
    async fn deliver_filtered(
        &self,
        r: Request<Streaming<Envelope>>,
    ) -> Result<Response<DeliverStream>, Status> {
        Ok(Response::new(
            self.serve(r.into_inner(), BlockForm::Filtered),
        ))
    }
    async fn deliver_with_private_data(
        &self,
        r: Request<Streaming<Envelope>>,
    ) -> Result<Response<DeliverStream>, Status> {
        Ok(Response::new(
            self.serve(r.into_inner(), BlockForm::WithPrivateData),
        ))
    }
}
