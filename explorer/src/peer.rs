//! The explorer's one connection to its peer, as the configured identity: chaincode queries
//! through the Gateway's Evaluate, channel queries (`qscc`, `cscc`) through the peer CLI's
//! session, blocks through Deliver. The peer and the chaincode decide what this identity may
//! see; their refusals come back as [`ExplorerError::Refused`].

use std::collections::HashMap;

use medledger_common::protoutil::{Invocation, signed_envelope};
use medledger_peer::node::NodeError;
use medledger_peer::node::cli::Session;
use medledger_proto::common::{Block, BlockchainInfo, HeaderType};
use medledger_proto::orderer::{
    SeekInfo, SeekPosition, SeekSpecified, seek_info::SeekBehavior, seek_position,
};
use medledger_proto::protos::deliver_client::DeliverClient;
use medledger_proto::protos::{DeliverResponse, deliver_response};
use prost::Message;

use crate::ExplorerError;

/// The peer's words for "no": a chaincode's or a system chaincode's refusal, as opposed to a
/// peer that cannot be reached.
pub(crate) fn classify(e: NodeError) -> ExplorerError {
    match e {
        NodeError::Peer { reason, .. } if reason.contains("returned error") => {
            ExplorerError::Refused(refusal_text(&reason))
        }
        NodeError::Failed(reason) => ExplorerError::Refused(refusal_text(&reason)),
        other => ExplorerError::Unavailable(other.to_string()),
    }
}

/// The chaincode's own message out of the gateway's wrapping (`evaluate call to endorser
/// returned error: chaincode response 500, forbidden: ... [address (msp): ...]`).
fn refusal_text(reason: &str) -> String {
    let inner = reason
        .split_once("chaincode response ")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.split_once(", "))
        .map(|(_, msg)| msg)
        .or_else(|| {
            reason
                .split_once("proposal failed with status: ")
                .map(|(_, rest)| rest)
        })
        .unwrap_or(reason);
    // The gateway repeats the message in its per-peer details.
    inner
        .split_once(" [")
        .map(|(m, _)| m)
        .unwrap_or(inner)
        .to_owned()
}

/// A connected peer session for one channel and chaincode.
#[derive(Clone)]
pub struct Peer {
    session: Session,
    pub channel: String,
    pub chaincode: String,
}

impl Peer {
    pub fn new(session: Session, channel: String, chaincode: String) -> Self {
        Self {
            session,
            channel,
            chaincode,
        }
    }

    /// The session (for the proof export, which runs its own queries through it).
    pub fn session(&self) -> Session {
        self.session.clone()
    }

    /// Evaluates `function(args)` on the chaincode: its JSON result, or its refusal.
    pub async fn query(&self, function: &str, args: &[&str]) -> Result<Vec<u8>, ExplorerError> {
        let mut all = vec![function.as_bytes().to_vec()];
        all.extend(args.iter().map(|a| a.as_bytes().to_vec()));
        let inv = Invocation {
            channel: self.channel.clone(),
            chaincode: self.chaincode.clone(),
            args: all,
            transient: HashMap::new(),
            is_init: false,
        };
        let mut s = self.session.clone();
        s.evaluate(&inv).await.map_err(classify)
    }

    /// Submits `function(args)` as this identity (endorsed as the chaincode's policy needs) and
    /// waits for it to commit VALID: its transaction id, or its refusal.
    pub async fn submit(&self, function: &str, args: &[&str]) -> Result<String, ExplorerError> {
        let mut all = vec![function.as_bytes().to_vec()];
        all.extend(args.iter().map(|a| a.as_bytes().to_vec()));
        let inv = Invocation {
            channel: self.channel.clone(),
            chaincode: self.chaincode.clone(),
            args: all,
            transient: HashMap::new(),
            is_init: false,
        };
        let mut s = self.session.clone();
        s.submit(&inv, Vec::new())
            .await
            .map(|(tx_id, _, _)| tx_id)
            .map_err(classify)
    }

    /// Like [`Peer::query`], decoding the JSON result as `T`.
    pub async fn query_json<T: serde::de::DeserializeOwned>(
        &self,
        function: &str,
        args: &[&str],
    ) -> Result<T, ExplorerError> {
        let bytes = self.query(function, args).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ExplorerError::Decode(format!("{function} answered: {e}")))
    }

    async fn system(
        &self,
        chaincode: &str,
        function: &str,
        arg: Option<&[u8]>,
    ) -> Result<Vec<u8>, ExplorerError> {
        let mut args = vec![
            function.as_bytes().to_vec(),
            self.channel.as_bytes().to_vec(),
        ];
        args.extend(arg.map(<[u8]>::to_vec));
        self.session
            .ask_peer(chaincode, args)
            .await
            .map(|r| r.payload)
            .map_err(classify)
    }

    /// The channel's height and newest block hash.
    pub async fn chain_info(&self) -> Result<BlockchainInfo, ExplorerError> {
        let bytes = self.system("qscc", "GetChainInfo", None).await?;
        BlockchainInfo::decode(bytes.as_slice())
            .map_err(|e| ExplorerError::Decode(format!("chain info: {e}")))
    }

    /// Block `number`.
    pub async fn block(&self, number: u64) -> Result<Block, ExplorerError> {
        let bytes = self
            .system(
                "qscc",
                "GetBlockByNumber",
                Some(number.to_string().as_bytes()),
            )
            .await?;
        Block::decode(bytes.as_slice()).map_err(|e| ExplorerError::Decode(format!("block: {e}")))
    }

    /// The block holding transaction `tx_id`.
    pub async fn block_of_tx(&self, tx_id: &str) -> Result<Block, ExplorerError> {
        let bytes = self
            .system("qscc", "GetBlockByTxID", Some(tx_id.as_bytes()))
            .await?;
        Block::decode(bytes.as_slice()).map_err(|e| ExplorerError::Decode(format!("block: {e}")))
    }

    /// The channel's newest configuration block.
    pub async fn config_block(&self) -> Result<Block, ExplorerError> {
        let bytes = self.system("cscc", "GetConfigBlock", None).await?;
        Block::decode(bytes.as_slice())
            .map_err(|e| ExplorerError::Decode(format!("configuration block: {e}")))
    }

    /// A Deliver stream of full blocks from `start` on, waiting for new ones.
    pub async fn deliver_from(
        &self,
        start: u64,
    ) -> Result<tonic::Streaming<DeliverResponse>, ExplorerError> {
        let position = |number| SeekPosition {
            r#type: Some(seek_position::Type::Specified(SeekSpecified { number })),
        };
        let seek = SeekInfo {
            start: Some(position(start)),
            stop: Some(position(u64::MAX)),
            behavior: SeekBehavior::BlockUntilReady as i32,
            ..Default::default()
        };
        let env = signed_envelope(
            HeaderType::DeliverSeekInfo,
            &self.channel,
            seek.encode_to_vec(),
            self.session.signer(),
        )
        .map_err(|e| ExplorerError::Unavailable(format!("signing the seek request: {e}")))?;
        let limit = medledger_common::config::DEFAULT_MAX_MESSAGE_BYTES;
        DeliverClient::new(self.session.grpc_channel())
            .max_decoding_message_size(limit)
            .deliver(tokio_stream::once(env))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| ExplorerError::Unavailable(format!("Deliver: {}", s.message())))
    }
}

/// What one Deliver message brings.
pub enum Delivered {
    Block(Box<Block>),
    /// The stream's end status (FORBIDDEN, NOT_FOUND, ...).
    Status(String),
}

/// One Deliver message, read.
pub fn delivered(r: DeliverResponse) -> Option<Delivered> {
    match r.r#type? {
        deliver_response::Type::Block(b) => Some(Delivered::Block(Box::new(b))),
        deliver_response::Type::Status(s) => Some(Delivered::Status(
            medledger_proto::common::Status::try_from(s)
                .map(|s| s.as_str_name().to_owned())
                .unwrap_or_else(|_| s.to_string()),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chaincode_refusal_is_taken_out_of_the_gateway_wrapping() {
        let reason = "evaluate call to endorser returned error: chaincode response 500, \
                      forbidden: only staff and the record's patient [localhost:7051 (H1MSP): chaincode response 500, forbidden: only staff and the record's patient]";
        assert_eq!(
            refusal_text(reason),
            "forbidden: only staff and the record's patient"
        );
        assert_eq!(
            refusal_text("proposal failed with status: 500 - access denied"),
            "500 - access denied"
        );
    }
}
