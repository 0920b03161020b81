//! Fabric's protocol arithmetic: transaction ids, proposal hashes, building and unpacking signed
//! proposals and envelopes, assembling endorsed transactions, and block header / data hashing.
//!
//! Everything that is signed or hashed is kept as the bytes received (never re-encoded), as
//! Fabric's signatures cover those exact bytes.

use std::collections::HashMap;

use medledger_proto::common::{
    Block, BlockData, BlockHeader, BlockMetadata, ChannelHeader, Envelope, Header, HeaderType,
    Payload, SignatureHeader,
};
use medledger_proto::protos::{
    ChaincodeActionPayload, ChaincodeEndorsedAction, ChaincodeHeaderExtension, ChaincodeId,
    ChaincodeInput, ChaincodeInvocationSpec, ChaincodeProposalPayload, ChaincodeSpec, Endorsement,
    Proposal, SignedProposal, Transaction, TransactionAction, chaincode_spec,
};
use prost::Message;
use rand::RngCore;

use crate::crypto::{CryptoError, sha256, sha256_concat};
use crate::identity::SigningIdentity;

/// Errors unpacking protocol messages.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("failed to decode {what}: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("invalid header: {0}")]
    InvalidHeader(String),
    #[error("incorrectly computed txid '{got}' -- expected '{expected}'")]
    BadTxId { got: String, expected: String },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

fn decode<M: Message + Default>(bytes: &[u8], what: &'static str) -> Result<M, ProtoError> {
    M::decode(bytes).map_err(|e| ProtoError::Decode {
        what,
        reason: e.to_string(),
    })
}

/// Decodes a message, naming it in the error.
pub fn decode_as<M: Message + Default>(bytes: &[u8], what: &'static str) -> Result<M, ProtoError> {
    decode(bytes, what)
}

/// The number of metadata slots Fabric gives every block.
pub const BLOCK_METADATA_SLOTS: usize = 5;

/// 24 random bytes, as Fabric's nonces are.
pub fn new_nonce() -> Vec<u8> {
    let mut n = vec![0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

/// `hex(SHA-256(nonce ‖ creator))`, the transaction id.
pub fn compute_txid(nonce: &[u8], creator: &[u8]) -> String {
    hex::encode(sha256_concat(&[nonce, creator]))
}

/// The current time as a protobuf timestamp (millisecond precision, like the Node client).
pub fn timestamp_now() -> prost_types::Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: (d.subsec_millis() * 1_000_000) as i32,
    }
}

// ---------------------------------------------------------------------------------------------
// Block hashing

fn der_length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let first = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - first) as u8);
        out.extend_from_slice(&bytes[first..]);
    }
}

/// Whether a header timestamp (seconds since the epoch, as a client sent it) lies within
/// `window_secs` of `now`. Any `i64` is accepted without overflow: a timestamp at either end of
/// the range is simply outside the window.
pub fn within_time_window(seconds: i64, now: i64, window_secs: u64) -> bool {
    seconds.abs_diff(now) <= window_secs
}

/// The ASN.1 DER `SEQUENCE { INTEGER number, OCTET STRING previous_hash, OCTET STRING data_hash }`
/// that Fabric hashes as a block's header.
pub fn block_header_bytes(header: &BlockHeader) -> Vec<u8> {
    let mut body = Vec::with_capacity(80);
    let n = header.number.to_be_bytes();
    let first = n.iter().position(|&b| b != 0).unwrap_or(7);
    let digits = &n[first..];
    let pad = digits[0] & 0x80 != 0;
    body.push(0x02);
    der_length(digits.len() + usize::from(pad), &mut body);
    if pad {
        body.push(0);
    }
    body.extend_from_slice(digits);
    for octets in [&header.previous_hash, &header.data_hash] {
        body.push(0x04);
        der_length(octets.len(), &mut body);
        body.extend_from_slice(octets);
    }
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(0x30);
    der_length(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

/// SHA-256 of [`block_header_bytes`]: what the next block's `previous_hash` holds.
pub fn block_header_hash(header: &BlockHeader) -> [u8; 32] {
    sha256(&block_header_bytes(header))
}

/// SHA-256 of the plain concatenation of the block's envelopes.
pub fn block_data_hash(data: &BlockData) -> [u8; 32] {
    let parts: Vec<&[u8]> = data.data.iter().map(Vec::as_slice).collect();
    sha256_concat(&parts)
}

/// A block's envelopes (none for a block without data).
pub fn block_envelopes(block: &Block) -> &[Vec<u8>] {
    block
        .data
        .as_ref()
        .map(|d| d.data.as_slice())
        .unwrap_or_default()
}

/// The newest configuration block's number as the consenters signed it into a block (the
/// `last_config` of the SIGNATURES value; sealed blocks carry the same in LAST_CONFIG, which
/// no signature covers). The genesis block, unsigned, is its own. `None` for a block without it.
pub fn signed_last_config(block: &Block) -> Option<u64> {
    if block.header.as_ref()?.number == 0 {
        return Some(0);
    }
    let slot = block
        .metadata
        .as_ref()?
        .metadata
        .get(medledger_proto::common::BlockMetadataIndex::Signatures as usize)?;
    let md = medledger_proto::common::Metadata::decode(slot.as_slice()).ok()?;
    medledger_proto::common::OrdererBlockMetadata::decode(md.value.as_slice())
        .ok()?
        .last_config
        .map(|l| l.index)
}

/// Whether a block is a configuration block: its one envelope is a CONFIG transaction.
pub fn is_config_block(block: &Block) -> bool {
    let [env] = block_envelopes(block) else {
        return false;
    };
    Envelope::decode(env.as_slice())
        .ok()
        .and_then(|e| unpack_envelope(&e).ok())
        .is_some_and(|u| u.channel_header.r#type == HeaderType::Config as i32)
}

/// What Deliver sends for `SeekInfo.content_type = HEADER_WITH_SIG`: the header and metadata of
/// a block, an attestation that it exists, without its transactions. A configuration block is
/// sent whole, as Fabric does, since a reader needs it to verify what follows.
pub fn block_attestation(block: Block) -> Block {
    if is_config_block(&block) {
        return block;
    }
    Block {
        header: block.header,
        data: None,
        metadata: block.metadata,
    }
}

/// A new block with its header hashes filled and Fabric's five empty metadata slots.
pub fn new_block(number: u64, previous_hash: Vec<u8>, envelopes: Vec<Vec<u8>>) -> Block {
    let data = BlockData { data: envelopes };
    Block {
        header: Some(BlockHeader {
            number,
            previous_hash,
            data_hash: block_data_hash(&data).to_vec(),
        }),
        data: Some(data),
        metadata: Some(BlockMetadata {
            metadata: vec![Vec::new(); BLOCK_METADATA_SLOTS],
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Envelopes

/// An envelope's decoded layers, with the signed payload bytes kept verbatim.
#[derive(Debug, Clone)]
pub struct UnpackedEnvelope {
    pub payload: Payload,
    pub channel_header: ChannelHeader,
    pub signature_header: SignatureHeader,
}

/// Decodes an envelope's payload and headers (no signature check: that needs the MSPs).
pub fn unpack_envelope(env: &Envelope) -> Result<UnpackedEnvelope, ProtoError> {
    if env.payload.is_empty() {
        return Err(ProtoError::Missing("envelope payload"));
    }
    let payload: Payload = decode(&env.payload, "Payload")?;
    let header = payload
        .header
        .as_ref()
        .ok_or(ProtoError::Missing("payload header"))?;
    let channel_header: ChannelHeader = decode(&header.channel_header, "ChannelHeader")?;
    let signature_header: SignatureHeader = decode(&header.signature_header, "SignatureHeader")?;
    Ok(UnpackedEnvelope {
        payload,
        channel_header,
        signature_header,
    })
}

/// A header for a message of `kind` on `channel`, created by `signer`.
pub fn make_header(
    kind: HeaderType,
    channel: &str,
    tx_id: &str,
    nonce: Vec<u8>,
    creator: &[u8],
    extension: Vec<u8>,
) -> Header {
    Header {
        channel_header: ChannelHeader {
            r#type: kind as i32,
            version: 0,
            timestamp: Some(timestamp_now()),
            channel_id: channel.to_owned(),
            tx_id: tx_id.to_owned(),
            epoch: 0,
            extension,
            tls_cert_hash: Vec::new(),
        }
        .encode_to_vec(),
        signature_header: SignatureHeader {
            creator: creator.to_vec(),
            nonce,
        }
        .encode_to_vec(),
    }
}

/// Signs a payload into an envelope.
pub fn sign_envelope(payload: &Payload, signer: &SigningIdentity) -> Result<Envelope, ProtoError> {
    let payload = payload.encode_to_vec();
    let signature = signer.sign(&payload)?;
    Ok(Envelope { payload, signature })
}

/// A signed envelope of `kind` carrying `data` on `channel` (seek requests, config updates...).
pub fn signed_envelope(
    kind: HeaderType,
    channel: &str,
    data: Vec<u8>,
    signer: &SigningIdentity,
) -> Result<Envelope, ProtoError> {
    let nonce = new_nonce();
    let tx_id = compute_txid(&nonce, signer.serialized());
    let header = make_header(
        kind,
        channel,
        &tx_id,
        nonce,
        signer.serialized(),
        Vec::new(),
    );
    sign_envelope(
        &Payload {
            header: Some(header),
            data,
        },
        signer,
    )
}

// ---------------------------------------------------------------------------------------------
// Proposals

/// What a client asks a chaincode to do.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    pub channel: String,
    pub chaincode: String,
    /// `args[0]` is the function name.
    pub args: Vec<Vec<u8>>,
    pub transient: HashMap<String, Vec<u8>>,
    pub is_init: bool,
}

/// Builds and signs a proposal the way Fabric clients do; returns it with its transaction id.
pub fn build_signed_proposal(
    inv: &Invocation,
    signer: &SigningIdentity,
) -> Result<(SignedProposal, String), ProtoError> {
    let nonce = new_nonce();
    let creator = signer.serialized();
    let tx_id = compute_txid(&nonce, creator);
    let chaincode_id = ChaincodeId {
        name: inv.chaincode.clone(),
        ..Default::default()
    };
    let extension = ChaincodeHeaderExtension {
        chaincode_id: Some(chaincode_id.clone()),
    }
    .encode_to_vec();
    let header = make_header(
        HeaderType::EndorserTransaction,
        &inv.channel,
        &tx_id,
        nonce,
        creator,
        extension,
    );
    let spec = ChaincodeInvocationSpec {
        chaincode_spec: Some(ChaincodeSpec {
            r#type: chaincode_spec::Type::Node as i32,
            chaincode_id: Some(chaincode_id),
            input: Some(ChaincodeInput {
                args: inv.args.clone(),
                decorations: HashMap::new(),
                is_init: inv.is_init,
            }),
            timeout: 0,
        }),
    };
    let payload = ChaincodeProposalPayload {
        input: spec.encode_to_vec(),
        transient_map: inv.transient.clone(),
    };
    let proposal = Proposal {
        header: header.encode_to_vec(),
        payload: payload.encode_to_vec(),
        extension: Vec::new(),
    };
    let proposal_bytes = proposal.encode_to_vec();
    let signature = signer.sign(&proposal_bytes)?;
    Ok((
        SignedProposal {
            proposal_bytes,
            signature,
        },
        tx_id,
    ))
}

/// A signed proposal's decoded layers, as the endorser checks and simulates it.
#[derive(Debug, Clone)]
pub struct UnpackedProposal {
    pub proposal: Proposal,
    pub header: Header,
    pub channel_header: ChannelHeader,
    pub signature_header: SignatureHeader,
    pub chaincode_name: String,
    pub input: ChaincodeInput,
    pub transient: HashMap<String, Vec<u8>>,
    /// The `input` bytes of ChaincodeProposalPayload, verbatim.
    pub input_bytes: Vec<u8>,
    /// SHA-256(channel_header ‖ signature_header ‖ payload without transient map).
    pub proposal_hash: [u8; 32],
}

/// `ChaincodeProposalPayload{input}` encoded canonically: the transient-free form that the
/// transaction carries and the proposal hash covers.
pub fn proposal_payload_without_transient(input_bytes: &[u8]) -> Vec<u8> {
    ChaincodeProposalPayload {
        input: input_bytes.to_vec(),
        transient_map: HashMap::new(),
    }
    .encode_to_vec()
}

/// Decodes a signed proposal and checks its header rules (type, epoch, nonce, creator, txid,
/// chaincode name). The signature and creator validity need the channel MSPs and are checked by
/// the caller with [`UnpackedProposal::creator`].
pub fn unpack_proposal(sp: &SignedProposal) -> Result<UnpackedProposal, ProtoError> {
    if sp.proposal_bytes.is_empty() {
        return Err(ProtoError::Missing("proposal bytes"));
    }
    let proposal: Proposal = decode(&sp.proposal_bytes, "Proposal")?;
    let header: Header = decode(&proposal.header, "Header")?;
    let channel_header: ChannelHeader = decode(&header.channel_header, "ChannelHeader")?;
    let signature_header: SignatureHeader = decode(&header.signature_header, "SignatureHeader")?;
    let kind = channel_header.r#type;
    if kind != HeaderType::EndorserTransaction as i32 && kind != HeaderType::Config as i32 {
        return Err(ProtoError::InvalidHeader(format!(
            "invalid header type {kind}"
        )));
    }
    if channel_header.epoch != 0 {
        return Err(ProtoError::InvalidHeader("epoch is non-zero".into()));
    }
    if signature_header.nonce.is_empty() {
        return Err(ProtoError::InvalidHeader("nonce is empty".into()));
    }
    if signature_header.creator.is_empty() {
        return Err(ProtoError::InvalidHeader("creator is empty".into()));
    }
    let expected = compute_txid(&signature_header.nonce, &signature_header.creator);
    if channel_header.tx_id != expected {
        return Err(ProtoError::BadTxId {
            got: channel_header.tx_id.clone(),
            expected,
        });
    }
    let ext: ChaincodeHeaderExtension =
        decode(&channel_header.extension, "ChaincodeHeaderExtension")?;
    let chaincode_name = ext
        .chaincode_id
        .map(|c| c.name)
        .filter(|n| !n.is_empty())
        .ok_or(ProtoError::Missing("chaincode name in header extension"))?;
    let payload: ChaincodeProposalPayload = decode(&proposal.payload, "ChaincodeProposalPayload")?;
    let spec: ChaincodeInvocationSpec = decode(&payload.input, "ChaincodeInvocationSpec")?;
    let input = spec
        .chaincode_spec
        .and_then(|s| s.input)
        .ok_or(ProtoError::Missing("chaincode input"))?;
    let proposal_hash = sha256_concat(&[
        &header.channel_header,
        &header.signature_header,
        &proposal_payload_without_transient(&payload.input),
    ]);
    Ok(UnpackedProposal {
        input_bytes: payload.input,
        transient: payload.transient_map,
        proposal,
        header,
        channel_header,
        signature_header,
        chaincode_name,
        input,
        proposal_hash,
    })
}

impl UnpackedProposal {
    /// The serialized creator identity.
    pub fn creator(&self) -> &[u8] {
        &self.signature_header.creator
    }

    /// The transaction id.
    pub fn tx_id(&self) -> &str {
        &self.channel_header.tx_id
    }

    /// The channel id.
    pub fn channel_id(&self) -> &str {
        &self.channel_header.channel_id
    }
}

/// Assembles the unsigned transaction envelope from a proposal and its endorsements
/// (Fabric gateway's `prepareTransaction`); endorsements with the same endorser count once.
pub fn assemble_transaction(
    proposal: &UnpackedProposal,
    proposal_response_payload: &[u8],
    endorsements: &[Endorsement],
) -> Envelope {
    let mut unique: Vec<Endorsement> = Vec::with_capacity(endorsements.len());
    for e in endorsements {
        if !unique.iter().any(|u| u.endorser == e.endorser) {
            unique.push(e.clone());
        }
    }
    let action_payload = ChaincodeActionPayload {
        chaincode_proposal_payload: proposal_payload_without_transient(&proposal.input_bytes),
        action: Some(ChaincodeEndorsedAction {
            proposal_response_payload: proposal_response_payload.to_vec(),
            endorsements: unique,
        }),
    };
    let tx = Transaction {
        actions: vec![TransactionAction {
            header: proposal.header.signature_header.clone(),
            payload: action_payload.encode_to_vec(),
        }],
    };
    Envelope {
        payload: Payload {
            header: Some(proposal.header.clone()),
            data: tx.encode_to_vec(),
        }
        .encode_to_vec(),
        signature: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_window_takes_extreme_timestamps_without_overflow() {
        let now = 1_800_000_000;
        assert!(within_time_window(now + 900, now, 900));
        assert!(!within_time_window(now - 901, now, 900));
        // Both used to overflow `seconds - now` (a panic in debug, a wrap in release).
        assert!(!within_time_window(i64::MIN, now, 900));
        assert!(!within_time_window(i64::MAX, -now, 900));
    }

    #[test]
    fn txid_vector_from_spec() {
        let nonce: Vec<u8> = (0u8..24).collect();
        let creator = hex::decode("0a074f7267314d5350120463657274").unwrap();
        assert_eq!(
            compute_txid(&nonce, &creator),
            "9b509b14e9418ff403128c815509476925771dc21a7c77e2899e7c170e960a45"
        );
    }

    #[test]
    fn block_header_vectors_from_spec() {
        let h0 = BlockHeader {
            number: 0,
            previous_hash: vec![],
            data_hash: sha256(b"").to_vec(),
        };
        assert_eq!(
            hex::encode(block_header_bytes(&h0)),
            "3027020100040004 20e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                .replace(' ', "")
        );
        let hash0 = block_header_hash(&h0);
        assert_eq!(
            hex::encode(hash0),
            "9cae6f5c10756febc407bba95fc23853774c1f65f10354895bfdab6443d66ed3"
        );
        let h1 = BlockHeader {
            number: 1,
            previous_hash: hash0.to_vec(),
            data_hash: sha256(b"abc").to_vec(),
        };
        assert_eq!(
            hex::encode(block_header_hash(&h1)),
            "bcb9f9a02db1b92abb8bef6f96227647592448590cbe2a9887517e7179803bb4"
        );
    }

    #[test]
    fn integer_encodings_follow_der() {
        let enc = |n: u64| {
            let b = block_header_bytes(&BlockHeader {
                number: n,
                previous_hash: vec![],
                data_hash: vec![],
            });
            hex::encode(&b[2..b.len() - 4])
        };
        assert_eq!(enc(127), "02017f");
        assert_eq!(enc(128), "02020080");
        assert_eq!(enc(255), "020200ff");
        assert_eq!(enc(256), "02020100");
        assert_eq!(enc(u64::MAX), "020900ffffffffffffffff");
    }

    #[test]
    fn data_hash_is_plain_concatenation() {
        let data = BlockData {
            data: vec![b"ab".to_vec(), b"c".to_vec()],
        };
        assert_eq!(block_data_hash(&data), sha256(b"abc"));
    }

    #[test]
    fn garbage_proposals_are_typed_errors() {
        let cases = [
            SignedProposal::default(),
            SignedProposal {
                proposal_bytes: vec![0xff, 0xff, 0xff],
                signature: vec![],
            },
            SignedProposal {
                proposal_bytes: Proposal {
                    header: vec![0x0a, 0x05, 0x01],
                    ..Default::default()
                }
                .encode_to_vec(),
                signature: vec![],
            },
        ];
        for c in cases {
            assert!(unpack_proposal(&c).is_err());
        }
        assert!(unpack_envelope(&Envelope::default()).is_err());
        assert!(
            unpack_envelope(&Envelope {
                payload: vec![0x12, 0x80],
                signature: vec![]
            })
            .is_err()
        );
    }
}
