//! The stub a transaction sees: its inputs and creator, and state calls answered by the peer.

use std::collections::{BTreeMap, HashMap};

use medledger_common::Certificate;
use medledger_proto::common::{ChannelHeader, Header, SignatureHeader};
use medledger_proto::msp::SerializedIdentity;
use medledger_proto::protos::chaincode_message::Type as Msg;
use medledger_proto::protos::{
    ChaincodeEvent, ChaincodeInput, ChaincodeMessage, ChaincodeProposalPayload, DelState,
    GetHistoryForKey, GetState, GetStateByRange, GetStateMetadata, Proposal, PutState,
    PutStateMetadata, QueryMetadata, QueryResponse, QueryResponseMetadata, QueryStateClose,
    QueryStateNext, SignedProposal, StateMetadata, StateMetadataResult,
};
use medledger_proto::queryresult::Kv;
use prost::Message;
use tokio::sync::mpsc;

/// Errors from state calls.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ShimError {
    #[error("peer refused: {0}")]
    Peer(String),
    #[error("connection to the peer closed")]
    Closed,
    #[error("malformed answer from the peer: {0}")]
    Malformed(String),
    #[error("invalid key: {0}")]
    InvalidKey(String),
}

/// One entry of a key's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyModification {
    pub tx_id: String,
    pub value: Vec<u8>,
    pub timestamp_seconds: i64,
    pub is_delete: bool,
    /// The block that committed the write (a MedLedger peer's extension; 0 from a Fabric peer).
    pub block_num: u64,
}

/// The submitting client, from the proposal's creator.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    pub mspid: String,
    pub certificate: Option<Certificate>,
}

impl ClientIdentity {
    /// A Fabric CA attribute of the client's certificate (`role`, `patientId`, ...).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.certificate
            .as_ref()
            .and_then(|c| c.attributes.get(name))
            .map(String::as_str)
    }

    /// The certificate's subject, e.g. `CN=doctor1, OU=client`.
    pub fn subject(&self) -> String {
        self.certificate
            .as_ref()
            .map(|c| c.subject.clone())
            .unwrap_or_default()
    }

    /// A stable identifier: `x509::<subject>::<msp>`.
    pub fn id(&self) -> String {
        format!("x509::{}::{}", self.subject(), self.mspid)
    }
}

const MAX_UNICODE: char = '\u{10FFFF}';

/// One transaction's view of the ledger and its inputs.
pub struct Stub {
    channel_id: String,
    tx_id: String,
    args: Vec<Vec<u8>>,
    transient: HashMap<String, Vec<u8>>,
    creator: ClientIdentity,
    timestamp_seconds: i64,
    event: Option<ChaincodeEvent>,
    outbound: mpsc::Sender<ChaincodeMessage>,
    inbound: mpsc::Receiver<ChaincodeMessage>,
}

impl Stub {
    pub(crate) fn new(
        msg: &ChaincodeMessage,
        outbound: mpsc::Sender<ChaincodeMessage>,
        inbound: mpsc::Receiver<ChaincodeMessage>,
    ) -> Result<Self, String> {
        let input = ChaincodeInput::decode(msg.payload.as_slice())
            .map_err(|e| format!("bad chaincode input: {e}"))?;
        let (creator, transient, ts) = decode_proposal(msg.proposal.as_ref())?;
        Ok(Self {
            channel_id: msg.channel_id.clone(),
            tx_id: msg.txid.clone(),
            args: input.args,
            transient,
            creator,
            timestamp_seconds: ts,
            event: None,
            outbound,
            inbound,
        })
    }

    pub fn channel_id(&self) -> &str {
        &self.channel_id
    }
    pub fn tx_id(&self) -> &str {
        &self.tx_id
    }
    /// All arguments, `args[0]` being the function name.
    pub fn args(&self) -> &[Vec<u8>] {
        &self.args
    }
    /// `args[0]` as text.
    pub fn function(&self) -> String {
        self.args
            .first()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_default()
    }
    /// The arguments after the function name, as text (invalid UTF-8 replaced).
    pub fn params(&self) -> Vec<String> {
        self.args
            .iter()
            .skip(1)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }
    /// Private inputs from the proposal's transient map (never on the ledger).
    pub fn transient(&self, key: &str) -> Option<&[u8]> {
        self.transient.get(key).map(Vec::as_slice)
    }
    /// Who submitted the transaction.
    pub fn creator(&self) -> &ClientIdentity {
        &self.creator
    }
    /// The proposal's timestamp (seconds since the epoch), the same on every endorser.
    pub fn tx_timestamp(&self) -> i64 {
        self.timestamp_seconds
    }
    /// Sets the transaction's event (the last call wins, as in Fabric).
    pub fn set_event(&mut self, name: &str, payload: Vec<u8>) {
        self.event = Some(ChaincodeEvent {
            chaincode_id: String::new(),
            tx_id: String::new(),
            event_name: name.to_owned(),
            payload,
        });
    }
    pub(crate) fn take_event(&mut self) -> Option<ChaincodeEvent> {
        self.event.take()
    }

    async fn call(&mut self, kind: Msg, payload: Vec<u8>) -> Result<Vec<u8>, ShimError> {
        self.outbound
            .send(ChaincodeMessage {
                r#type: kind as i32,
                payload,
                txid: self.tx_id.clone(),
                channel_id: self.channel_id.clone(),
                ..Default::default()
            })
            .await
            .map_err(|_| ShimError::Closed)?;
        let reply = self.inbound.recv().await.ok_or(ShimError::Closed)?;
        match Msg::try_from(reply.r#type) {
            Ok(Msg::Response) => Ok(reply.payload),
            Ok(Msg::Error) => Err(ShimError::Peer(
                String::from_utf8_lossy(&reply.payload).into_owned(),
            )),
            _ => Err(ShimError::Malformed(format!(
                "unexpected reply type {}",
                reply.r#type
            ))),
        }
    }

    fn check_key(key: &str) -> Result<(), ShimError> {
        if key.is_empty() {
            return Err(ShimError::InvalidKey("key must not be empty".into()));
        }
        Ok(())
    }

    /// A key's value in the world state (`collection` empty) or a private collection.
    async fn get(
        &mut self,
        kind: Msg,
        collection: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, ShimError> {
        Self::check_key(key)?;
        let v = self
            .call(
                kind,
                GetState {
                    key: key.into(),
                    collection: collection.into(),
                }
                .encode_to_vec(),
            )
            .await?;
        Ok(if v.is_empty() { None } else { Some(v) })
    }

    async fn put(&mut self, collection: &str, key: &str, value: Vec<u8>) -> Result<(), ShimError> {
        Self::check_key(key)?;
        self.call(
            Msg::PutState,
            PutState {
                key: key.into(),
                value,
                collection: collection.into(),
            }
            .encode_to_vec(),
        )
        .await
        .map(drop)
    }

    async fn del(&mut self, kind: Msg, collection: &str, key: &str) -> Result<(), ShimError> {
        Self::check_key(key)?;
        self.call(
            kind,
            DelState {
                key: key.into(),
                collection: collection.into(),
            }
            .encode_to_vec(),
        )
        .await
        .map(drop)
    }

    /// A key's committed value (`None` if absent).
    pub async fn get_state(&mut self, key: &str) -> Result<Option<Vec<u8>>, ShimError> {
        self.get(Msg::GetState, "", key).await
    }

    /// Writes a value (visible to later transactions once committed).
    pub async fn put_state(&mut self, key: &str, value: Vec<u8>) -> Result<(), ShimError> {
        self.put("", key, value).await
    }

    /// Deletes a key.
    pub async fn del_state(&mut self, key: &str) -> Result<(), ShimError> {
        self.del(Msg::DelState, "", key).await
    }

    /// A private value of a collection (`None` if absent). Fails on peers outside the
    /// collection and, under memberOnlyRead, for callers outside it.
    pub async fn get_private_data(
        &mut self,
        collection: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, ShimError> {
        Self::check_collection(collection)?;
        self.get(Msg::GetState, collection, key).await
    }

    /// The SHA-256 of a private value, answered by every peer of the channel.
    pub async fn get_private_data_hash(
        &mut self,
        collection: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, ShimError> {
        Self::check_collection(collection)?;
        self.get(Msg::GetPrivateDataHash, collection, key).await
    }

    /// Writes a private value: only its hashes go into the transaction.
    pub async fn put_private_data(
        &mut self,
        collection: &str,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), ShimError> {
        Self::check_collection(collection)?;
        self.put(collection, key, value).await
    }

    /// Deletes a private key.
    pub async fn del_private_data(&mut self, collection: &str, key: &str) -> Result<(), ShimError> {
        Self::check_collection(collection)?;
        self.del(Msg::DelState, collection, key).await
    }

    /// Erases a private key and its history on every member peer; the hashes stay on the ledger.
    pub async fn purge_private_data(
        &mut self,
        collection: &str,
        key: &str,
    ) -> Result<(), ShimError> {
        Self::check_collection(collection)?;
        self.del(Msg::PurgePrivateData, collection, key).await
    }

    fn check_collection(collection: &str) -> Result<(), ShimError> {
        if collection.is_empty() {
            return Err(ShimError::InvalidKey("collection must not be empty".into()));
        }
        Ok(())
    }

    /// A key's metadata entries.
    pub async fn get_state_metadata(
        &mut self,
        key: &str,
    ) -> Result<BTreeMap<String, Vec<u8>>, ShimError> {
        let r = self
            .call(
                Msg::GetStateMetadata,
                GetStateMetadata {
                    key: key.into(),
                    collection: String::new(),
                }
                .encode_to_vec(),
            )
            .await?;
        let res = StateMetadataResult::decode(r.as_slice())
            .map_err(|e| ShimError::Malformed(e.to_string()))?;
        Ok(res
            .entries
            .into_iter()
            .map(|e| (e.metakey, e.value))
            .collect())
    }

    /// Sets a key-level endorsement policy (a serialized `SignaturePolicyEnvelope`).
    pub async fn set_state_validation_parameter(
        &mut self,
        key: &str,
        policy: Vec<u8>,
    ) -> Result<(), ShimError> {
        self.call(
            Msg::PutStateMetadata,
            PutStateMetadata {
                key: key.into(),
                collection: String::new(),
                metadata: Some(StateMetadata {
                    metakey: "VALIDATION_PARAMETER".into(),
                    value: policy,
                }),
            }
            .encode_to_vec(),
        )
        .await
        .map(drop)
    }

    async fn drain(
        &mut self,
        mut resp: QueryResponse,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), ShimError> {
        loop {
            out.extend(resp.results.drain(..).map(|r| r.result_bytes));
            if !resp.has_more {
                let _ = self
                    .call(
                        Msg::QueryStateClose,
                        QueryStateClose {
                            id: resp.id.clone(),
                        }
                        .encode_to_vec(),
                    )
                    .await;
                return Ok(());
            }
            let r = self
                .call(
                    Msg::QueryStateNext,
                    QueryStateNext {
                        id: resp.id.clone(),
                    }
                    .encode_to_vec(),
                )
                .await?;
            resp = QueryResponse::decode(r.as_slice())
                .map_err(|e| ShimError::Malformed(e.to_string()))?;
        }
    }

    fn decode_kvs(raw: Vec<Vec<u8>>) -> Result<Vec<(String, Vec<u8>)>, ShimError> {
        raw.iter()
            .map(|b| {
                Kv::decode(b.as_slice())
                    .map(|kv| (kv.key, kv.value))
                    .map_err(|e| ShimError::Malformed(e.to_string()))
            })
            .collect()
    }

    /// Keys in `[start, end)` (empty `end`: to the end of the namespace).
    pub async fn get_state_by_range(
        &mut self,
        start: &str,
        end: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, ShimError> {
        self.range("", start, end).await
    }

    /// Private keys in `[start, end)` of a collection.
    pub async fn get_private_data_by_range(
        &mut self,
        collection: &str,
        start: &str,
        end: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, ShimError> {
        Self::check_collection(collection)?;
        self.range(collection, start, end).await
    }

    /// All private keys of a collection whose composite key starts with `object_type` and
    /// `attributes`.
    pub async fn get_private_data_by_partial_composite_key(
        &mut self,
        collection: &str,
        object_type: &str,
        attributes: &[&str],
    ) -> Result<Vec<(String, Vec<u8>)>, ShimError> {
        Self::check_collection(collection)?;
        let start = Self::create_composite_key(object_type, attributes)?;
        let end = format!("{start}{MAX_UNICODE}");
        self.range(collection, &start, &end).await
    }

    async fn range(
        &mut self,
        collection: &str,
        start: &str,
        end: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, ShimError> {
        let start = if start.is_empty() { "\u{1}" } else { start };
        let r = self
            .call(
                Msg::GetStateByRange,
                GetStateByRange {
                    start_key: start.into(),
                    end_key: end.into(),
                    collection: collection.into(),
                    metadata: vec![],
                }
                .encode_to_vec(),
            )
            .await?;
        let resp =
            QueryResponse::decode(r.as_slice()).map_err(|e| ShimError::Malformed(e.to_string()))?;
        let mut raw = Vec::new();
        self.drain(resp, &mut raw).await?;
        Self::decode_kvs(raw)
    }

    /// One page of `[start, end)`: the rows and the bookmark of the next page (empty when done).
    pub async fn get_state_by_range_with_pagination(
        &mut self,
        start: &str,
        end: &str,
        page_size: i32,
        bookmark: &str,
    ) -> Result<(Vec<(String, Vec<u8>)>, String), ShimError> {
        let start = if start.is_empty() { "\u{1}" } else { start };
        let metadata = QueryMetadata {
            page_size,
            bookmark: bookmark.into(),
        }
        .encode_to_vec();
        let r = self
            .call(
                Msg::GetStateByRange,
                GetStateByRange {
                    start_key: start.into(),
                    end_key: end.into(),
                    collection: String::new(),
                    metadata,
                }
                .encode_to_vec(),
            )
            .await?;
        let mut resp =
            QueryResponse::decode(r.as_slice()).map_err(|e| ShimError::Malformed(e.to_string()))?;
        let meta = QueryResponseMetadata::decode(resp.metadata.as_slice())
            .map_err(|e| ShimError::Malformed(e.to_string()))?;
        let raw = resp.results.drain(..).map(|r| r.result_bytes).collect();
        Ok((Self::decode_kvs(raw)?, meta.bookmark))
    }

    /// Fabric's composite key: `\0 type \0 attr1 \0 ... \0`.
    pub fn create_composite_key(
        object_type: &str,
        attributes: &[&str],
    ) -> Result<String, ShimError> {
        if object_type.contains('\u{0}')
            || attributes
                .iter()
                .any(|a| a.contains('\u{0}') || a.contains(MAX_UNICODE))
        {
            return Err(ShimError::InvalidKey(
                "composite key parts may not contain U+0000 or U+10FFFF".into(),
            ));
        }
        let mut k = format!("\u{0}{object_type}\u{0}");
        for a in attributes {
            k.push_str(a);
            k.push('\u{0}');
        }
        Ok(k)
    }

    /// Splits a composite key into its type and attributes.
    pub fn split_composite_key(key: &str) -> Option<(String, Vec<String>)> {
        let rest = key.strip_prefix('\u{0}')?;
        let mut parts: Vec<String> = rest.split('\u{0}').map(str::to_owned).collect();
        parts.pop();
        if parts.is_empty() {
            return None;
        }
        let t = parts.remove(0);
        Some((t, parts))
    }

    /// All keys whose composite key starts with `object_type` and `attributes`.
    pub async fn get_state_by_partial_composite_key(
        &mut self,
        object_type: &str,
        attributes: &[&str],
    ) -> Result<Vec<(String, Vec<u8>)>, ShimError> {
        let start = Self::create_composite_key(object_type, attributes)?;
        let end = format!("{start}{MAX_UNICODE}");
        self.get_state_by_range(&start, &end).await
    }

    /// One page of a partial composite key query.
    pub async fn get_state_by_partial_composite_key_with_pagination(
        &mut self,
        object_type: &str,
        attributes: &[&str],
        page_size: i32,
        bookmark: &str,
    ) -> Result<(Vec<(String, Vec<u8>)>, String), ShimError> {
        let start = Self::create_composite_key(object_type, attributes)?;
        let end = format!("{start}{MAX_UNICODE}");
        self.get_state_by_range_with_pagination(&start, &end, page_size, bookmark)
            .await
    }

    /// Every committed write of a key, newest first.
    pub async fn get_history_for_key(
        &mut self,
        key: &str,
    ) -> Result<Vec<KeyModification>, ShimError> {
        Self::check_key(key)?;
        let r = self
            .call(
                Msg::GetHistoryForKey,
                GetHistoryForKey { key: key.into() }.encode_to_vec(),
            )
            .await?;
        let resp =
            QueryResponse::decode(r.as_slice()).map_err(|e| ShimError::Malformed(e.to_string()))?;
        let mut raw = Vec::new();
        self.drain(resp, &mut raw).await?;
        raw.iter()
            .map(|b| {
                medledger_proto::queryresult::KeyModification::decode(b.as_slice())
                    .map(|m| KeyModification {
                        tx_id: m.tx_id,
                        value: m.value,
                        timestamp_seconds: m.timestamp.map(|t| t.seconds).unwrap_or_default(),
                        is_delete: m.is_delete,
                        block_num: m.medledger_block_num,
                    })
                    .map_err(|e| ShimError::Malformed(e.to_string()))
            })
            .collect()
    }
}

type ProposalParts = (ClientIdentity, HashMap<String, Vec<u8>>, i64);

fn decode_proposal(sp: Option<&SignedProposal>) -> Result<ProposalParts, String> {
    let sp = sp.ok_or("the peer sent no signed proposal")?;
    let p =
        Proposal::decode(sp.proposal_bytes.as_slice()).map_err(|e| format!("bad proposal: {e}"))?;
    let h = Header::decode(p.header.as_slice()).map_err(|e| format!("bad header: {e}"))?;
    let sh = SignatureHeader::decode(h.signature_header.as_slice())
        .map_err(|e| format!("bad signature header: {e}"))?;
    let ch = ChannelHeader::decode(h.channel_header.as_slice())
        .map_err(|e| format!("bad channel header: {e}"))?;
    let sid = SerializedIdentity::decode(sh.creator.as_slice())
        .map_err(|e| format!("bad creator: {e}"))?;
    let cpp = ChaincodeProposalPayload::decode(p.payload.as_slice())
        .map_err(|e| format!("bad payload: {e}"))?;
    Ok((
        ClientIdentity {
            mspid: sid.mspid,
            certificate: Certificate::from_pem(&sid.id_bytes).ok(),
        },
        cpp.transient_map,
        ch.timestamp.map(|t| t.seconds).unwrap_or_default(),
    ))
}
