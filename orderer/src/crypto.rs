//! The consensus core's [`Crypto`] over real identities: consensus messages and block signatures
//! by the channel's consenters, and client requests checked against the channel configuration.

use std::collections::BTreeMap;

use medledger_common::SigningIdentity;
use medledger_common::channelconfig::{ChannelConfig, sign_block};
use medledger_common::msp::{Expiry, Identity};
use medledger_common::protoutil::{block_header_bytes, compute_txid, unpack_envelope};
use medledger_proto::common::{Block, Envelope, HeaderType, IdentifierHeader, MetadataSignature};
use medledger_proto::msp::SerializedIdentity;
use prost::Message;

use crate::consensus::{Crypto, RequestError};

/// Errors building the consenters' identities.
#[derive(Debug, thiserror::Error)]
pub enum CryptoSetupError {
    #[error("consenter {id} ({msp}) has an invalid identity: {reason}")]
    Consenter {
        id: u32,
        msp: String,
        reason: String,
    },
}

/// Crypto for one consenter on one channel.
pub struct ConsenterCrypto {
    self_id: u32,
    signer: SigningIdentity,
    config: ChannelConfig,
    consenters: BTreeMap<u32, Identity>,
}

impl ConsenterCrypto {
    pub fn new(
        self_id: u32,
        signer: SigningIdentity,
        config: ChannelConfig,
    ) -> Result<Self, CryptoSetupError> {
        let mut consenters = BTreeMap::new();
        for c in &config.consenters {
            let serialized = SerializedIdentity {
                mspid: c.msp_id.clone(),
                id_bytes: c.identity.clone(),
            }
            .encode_to_vec();
            let id = config
                .msps
                .deserialize(&serialized, Expiry::Ignore)
                .map_err(|e| CryptoSetupError::Consenter {
                    id: c.id,
                    msp: c.msp_id.clone(),
                    reason: e.to_string(),
                })?;
            consenters.insert(c.id, id);
        }
        Ok(Self {
            self_id,
            signer,
            config,
            consenters,
        })
    }

    /// The channel configuration requests are checked against.
    pub fn config(&self) -> &ChannelConfig {
        &self.config
    }
}

impl Crypto for ConsenterCrypto {
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.signer.sign(msg).unwrap_or_default()
    }

    fn verify(&self, signer: u32, msg: &[u8], sig: &[u8]) -> bool {
        self.consenters
            .get(&signer)
            .is_some_and(|id| id.verify(msg, sig).is_ok())
    }

    fn sign_block(&self, block: &Block, value: &[u8]) -> Option<MetadataSignature> {
        sign_block(block, self.self_id, value, &self.signer).ok()
    }

    fn verify_block_signature(
        &self,
        signer: u32,
        block: &Block,
        value: &[u8],
        sig: &MetadataSignature,
    ) -> bool {
        let Ok(ih) = IdentifierHeader::decode(sig.identifier_header.as_slice()) else {
            return false;
        };
        let Some(header) = block.header.as_ref() else {
            return false;
        };
        if ih.identifier != signer {
            return false;
        }
        let msg = [value, &sig.identifier_header, &block_header_bytes(header)].concat();
        self.verify(signer, &msg, &sig.signature)
    }

    fn check_request(&self, envelope: &[u8]) -> Result<String, RequestError> {
        let malformed = |m: String| RequestError::Malformed(m);
        let env = Envelope::decode(envelope)
            .map_err(|e| malformed(format!("malformed envelope: {e}")))?;
        if env.signature.is_empty() {
            return Err(malformed("envelope is not signed".into()));
        }
        let u = unpack_envelope(&env).map_err(|e| malformed(e.to_string()))?;
        let ch = &u.channel_header;
        if ch.channel_id != self.config.channel_id {
            return Err(malformed(format!(
                "envelope is for channel {:?}, not {:?}",
                ch.channel_id, self.config.channel_id
            )));
        }
        if ch.r#type != HeaderType::EndorserTransaction as i32 {
            return Err(malformed(format!(
                "header type {} is not accepted for ordering",
                ch.r#type
            )));
        }
        let creator = &u.signature_header.creator;
        if ch.tx_id.is_empty() || ch.tx_id != compute_txid(&u.signature_header.nonce, creator) {
            return Err(malformed(
                "transaction id is not SHA-256(nonce || creator)".into(),
            ));
        }
        // Commit-time rule: the clock is not consulted, so every replica reaches the same verdict.
        let id = self
            .config
            .msps
            .deserialize(creator, Expiry::Ignore)
            .map_err(|e| RequestError::Forbidden(format!("creator: {e}")))?;
        id.verify(&env.payload, &env.signature)
            .map_err(|_| RequestError::Forbidden("envelope signature does not verify".into()))?;
        let writers = self
            .config
            .policy("/Channel/Writers")
            .ok_or_else(|| RequestError::Forbidden("channel has no Writers policy".into()))?;
        if !writers.satisfied_by(std::slice::from_ref(&id)) {
            return Err(RequestError::Forbidden(
                "creator is not allowed to write to the channel (Writers policy)".into(),
            ));
        }
        Ok(ch.tx_id.clone())
    }
}
