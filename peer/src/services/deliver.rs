//! Fabric's Deliver service on the peer (Deliver, DeliverFiltered, DeliverWithPrivateData): a
//! client sends a signed seek envelope and receives blocks from the ledger, waiting for new ones
//! when asked, under the channel's Readers policy.

use std::pin::Pin;

use futures::Stream;
use medledger_common::channelconfig::check_seek;
use medledger_common::protoutil::unpack_envelope;
use medledger_common::refusal::{log_refusal, next_or_refuse};
use medledger_proto::common::{Block, Envelope, HeaderType, Status as BlockStatus};
use medledger_proto::protos::deliver_server::Deliver;
use medledger_proto::protos::{
    BlockAndPrivateData, ChaincodeEvent, DeliverResponse, FilteredBlock, FilteredChaincodeAction,
    FilteredTransaction, FilteredTransactionActions, deliver_response::Type as Resp,
    filtered_transaction::Data,
};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::channel::blocks::{chaincode_events, transactions};
use crate::channel::pvtdata::{add_collection, block_needs};
use crate::channel::{Channel, Channels};
use crate::endorsement::TIME_WINDOW;
use medledger_common::msp::{Expiry, Identity};
use medledger_proto::rwset::{CollectionPvtReadWriteSet, TxPvtReadWriteSet};

/// What a Deliver stream sends for each block.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum BlockForm {
    Full,
    Filtered,
    WithPrivateData,
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
/// The policy a Deliver requester must satisfy.
const READERS: &str = "/Channel/Application/Readers";

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
    let mut range = match check_seek(
        &channel.config(),
        &env,
        ledger.height(),
        READERS,
        TIME_WINDOW.as_secs(),
    ) {
        Ok(r) => r,
        Err(s) => {
            // NOT_FOUND for a block not yet committed is a poll's answer, not a refusal.
            if s != BlockStatus::NotFound {
                log_refusal("protos.Deliver", None, None, &s.as_str_name());
            }
            return s;
        }
    };
    let (start, stop, fail_if_not_ready) = (range.start, range.stop, range.fail_if_not_ready);
    // Private data goes only to a requester the collection's membership policy admits.
    let requester = unpack_envelope(&env).ok().and_then(|u| {
        channel
            .config()
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
        if !range.still_admitted(&channel.config(), READERS) {
            log_refusal(
                "protos.Deliver",
                None,
                requester.as_ref().map(|r| r.mspid.as_str()),
                &"a configuration update no longer admits the requester",
            );
            return BlockStatus::Forbidden;
        }
        if range.session_expired(medledger_common::msp::unix_now()) {
            log_refusal(
                "protos.Deliver",
                None,
                requester.as_ref().map(|r| r.mspid.as_str()),
                &"the requester's certificate expired during the stream",
            );
            return BlockStatus::Forbidden;
        }
        let block = match ledger.block(n) {
            Ok(Some(b)) if range.headers_only => medledger_common::protoutil::block_attestation(b),
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
    fn serve(&self, r: Request<Streaming<Envelope>>, form: BlockForm) -> DeliverStream {
        let (tx, rx) = mpsc::channel(16);
        let channels = self.channels.clone();
        let remote = r.remote_addr();
        let mut inbound = r.into_inner();
        tokio::spawn(async move {
            while let Some(env) = next_or_refuse(&mut inbound, "protos.Deliver", remote, &tx).await
            {
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
        Ok(Response::new(self.serve(r, BlockForm::Full)))
    }
    async fn deliver_filtered(
        &self,
        r: Request<Streaming<Envelope>>,
    ) -> Result<Response<DeliverStream>, Status> {
        Ok(Response::new(self.serve(r, BlockForm::Filtered)))
    }
    async fn deliver_with_private_data(
        &self,
        r: Request<Streaming<Envelope>>,
    ) -> Result<Response<DeliverStream>, Status> {
        Ok(Response::new(self.serve(r, BlockForm::WithPrivateData)))
    }
}
