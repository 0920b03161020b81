//! The consensus core's [`Crypto`] over real identities: consensus messages and block signatures
//! by the channel's consenters, and client requests checked against the channel configuration.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use medledger_common::SigningIdentity;
use medledger_common::channelconfig::{ChannelConfig, ConfigInForce, sign_block};
use medledger_common::configtx::{
    ConfigTxError, check_config_envelope, config_envelope_of, propose_update,
};
use medledger_common::msp::{Expiry, Identity};
use medledger_common::protoutil::{
    block_header_bytes, compute_txid, is_config_block, signed_envelope, unpack_envelope,
};
use medledger_proto::common::{Block, Envelope, HeaderType, IdentifierHeader, MetadataSignature};
use medledger_proto::msp::SerializedIdentity;
use prost::Message;

use crate::consensus::{AppliedConfig, BatchConfig, Crypto, RequestError, Settings};

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
    config: Arc<ConfigInForce>,
    consenters: RwLock<Arc<BTreeMap<u32, Identity>>>,
}

/// The consenters' identities as `config` names them.
fn consenter_identities(
    config: &ChannelConfig,
) -> Result<BTreeMap<u32, Identity>, CryptoSetupError> {
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
    Ok(consenters)
}

impl ConsenterCrypto {
    pub fn new(
        self_id: u32,
        signer: SigningIdentity,
        config: ChannelConfig,
    ) -> Result<Self, CryptoSetupError> {
        Self::sharing(self_id, signer, Arc::new(ConfigInForce::new(config)))
    }

    /// Crypto over a configuration the node shares with its other services.
    pub fn sharing(
        self_id: u32,
        signer: SigningIdentity,
        config: Arc<ConfigInForce>,
    ) -> Result<Self, CryptoSetupError> {
        let consenters = consenter_identities(&config.get())?;
        Ok(Self {
            self_id,
            signer,
            config,
            consenters: RwLock::new(Arc::new(consenters)),
        })
    }

    /// The channel configuration requests are checked against.
    pub fn config(&self) -> Arc<ChannelConfig> {
        self.config.get()
    }

    /// Turns a client's CONFIG_UPDATE envelope into the CONFIG transaction to order, as Fabric's
    /// broadcast handler does: the submitter must be a channel writer, the update must be
    /// authorised and valid against the configuration in force, and the CONFIG envelope (the
    /// whole new configuration and the update) is signed by this orderer.
    pub fn config_transaction(&self, update: &Envelope) -> Result<Envelope, RequestError> {
        let config = self.config();
        let u = unpack_envelope(update).map_err(|e| RequestError::Malformed(e.to_string()))?;
        let submitter = config
            .msps
            .deserialize(&u.signature_header.creator, Expiry::now())
            .map_err(|e| RequestError::Forbidden(format!("submitter: {e}")))?;
        submitter
            .verify(&update.payload, &update.signature)
            .map_err(|_| RequestError::Forbidden("envelope signature does not verify".into()))?;
        let writers = config
            .policy("/Channel/Writers")
            .ok_or_else(|| RequestError::Forbidden("channel has no Writers policy".into()))?;
        if !writers.satisfied_by(std::slice::from_ref(&submitter)) {
            return Err(RequestError::Forbidden(
                "submitter is not allowed to write to the channel (Writers policy)".into(),
            ));
        }
        let envelope = propose_update(&config, update, Expiry::now()).map_err(config_refusal)?;
        let next = envelope
            .config
            .as_ref()
            .map(|c| ChannelConfig::from_config(&config.channel_id, c))
            .transpose()
            .map_err(|e| RequestError::Malformed(e.to_string()))?
            .ok_or_else(|| {
                RequestError::Malformed("the update produced no configuration".into())
            })?;
        if next.consenters != config.consenters {
            tracing::info!(
                from = ?config.consenters.iter().map(|c| c.id).collect::<Vec<_>>(),
                to = ?next.consenters.iter().map(|c| c.id).collect::<Vec<_>>(),
                "configuration update changes the consenter set"
            );
        }
        signed_envelope(
            HeaderType::Config,
            &config.channel_id,
            envelope.encode_to_vec(),
            &self.signer,
        )
        .map_err(|e| RequestError::Malformed(format!("signing the configuration: {e}")))
    }

    /// Puts the configuration a decided configuration block carries in force (the consensus
    /// core validated it before the block was decided). Returns it, and whether its consenters
    /// differ from those before.
    pub fn put_in_force(&self, block: &Block) -> Option<(Arc<ChannelConfig>, bool)> {
        if !is_config_block(block) {
            return None;
        }
        let next = match ChannelConfig::from_block(block) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "a decided configuration block does not resolve");
                return None;
            }
        };
        match consenter_identities(&next) {
            Ok(ids) => *self.consenters.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ids),
            Err(e) => {
                tracing::error!(error = %e, "a decided configuration names an invalid consenter");
                return None;
            }
        }
        tracing::info!(sequence = next.sequence, "configuration updated");
        let changed = self.config().consenters != next.consenters;
        self.config.replace(next);
        Some((self.config(), changed))
    }

    fn consenter(&self, id: u32) -> Option<Identity> {
        self.consenters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }
}

/// The consensus core's settings from a channel configuration. Its BatchTimeout is not among
/// them: blocks are cut adaptively, never later than it (`Replica::maybe_propose`).
pub fn core_settings(channel: &ChannelConfig) -> Settings {
    Settings {
        consenters: channel.consenters.iter().map(|c| c.id).collect(),
        batch: BatchConfig {
            max_message_count: channel.batch_size.max_message_count.max(1) as usize,
            preferred_max_bytes: channel.batch_size.preferred_max_bytes as usize,
            absolute_max_bytes: channel.batch_size.absolute_max_bytes as usize,
        },
        bft: channel.bft,
    }
}

/// How a refused configuration update is answered: an update whose signatures do not satisfy
/// the policies is FORBIDDEN, anything else (stale, malformed, invalid result) BAD_REQUEST.
fn config_refusal(e: ConfigTxError) -> RequestError {
    match &e {
        ConfigTxError::Refused(why) if why.contains("not satisfied") => {
            RequestError::Forbidden(e.to_string())
        }
        _ => RequestError::Malformed(e.to_string()),
    }
}

impl Crypto for ConsenterCrypto {
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.signer.sign(msg).unwrap_or_default()
    }

    fn verify(&self, signer: u32, msg: &[u8], sig: &[u8]) -> bool {
        self.consenter(signer)
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
        let config = self.config();
        if ch.channel_id != config.channel_id {
            return Err(malformed(format!(
                "envelope is for channel {:?}, not {:?}",
                ch.channel_id, config.channel_id
            )));
        }
        if ch.r#type == HeaderType::Config as i32 {
            return self.check_config_request(&env, &u, &config);
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
        let id = config
            .msps
            .deserialize(creator, Expiry::Ignore)
            .map_err(|e| RequestError::Forbidden(format!("creator: {e}")))?;
        id.verify(&env.payload, &env.signature)
            .map_err(|_| RequestError::Forbidden("envelope signature does not verify".into()))?;
        let writers = config
            .policy("/Channel/Writers")
            .ok_or_else(|| RequestError::Forbidden("channel has no Writers policy".into()))?;
        if !writers.satisfied_by(std::slice::from_ref(&id)) {
            return Err(RequestError::Forbidden(
                "creator is not allowed to write to the channel (Writers policy)".into(),
            ));
        }
        Ok(ch.tx_id.clone())
    }

    fn apply_config_block(&self, block: &Block) -> Option<AppliedConfig> {
        self.put_in_force(block)
            .map(|(c, consenters_changed)| AppliedConfig {
                settings: core_settings(&c),
                consenters_changed,
            })
    }

    fn is_config_request(&self, envelope: &[u8]) -> bool {
        Envelope::decode(envelope)
            .ok()
            .and_then(|e| unpack_envelope(&e).ok())
            .is_some_and(|u| u.channel_header.r#type == HeaderType::Config as i32)
    }
}

impl ConsenterCrypto {
    /// A CONFIG transaction is ordered only as a consenter made it from an authorised update:
    /// signed by a consenter, and exactly what its last update yields from the configuration in
    /// force (every replica checks this itself).
    fn check_config_request(
        &self,
        env: &Envelope,
        u: &medledger_common::protoutil::UnpackedEnvelope,
        config: &ChannelConfig,
    ) -> Result<String, RequestError> {
        let ch = &u.channel_header;
        let creator = &u.signature_header.creator;
        if ch.tx_id.is_empty() || ch.tx_id != compute_txid(&u.signature_header.nonce, creator) {
            return Err(RequestError::Malformed(
                "transaction id is not SHA-256(nonce || creator)".into(),
            ));
        }
        let consenters = self
            .consenters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let signer = consenters
            .values()
            .find(|c| c.serialized == *creator)
            .ok_or_else(|| {
                RequestError::Forbidden("a CONFIG transaction must come from a consenter".into())
            })?;
        signer
            .verify(&env.payload, &env.signature)
            .map_err(|_| RequestError::Forbidden("envelope signature does not verify".into()))?;
        let config_envelope = config_envelope_of(env).map_err(config_refusal)?;
        check_config_envelope(config, &config_envelope).map_err(config_refusal)?;
        Ok(ch.tx_id.clone())
    }
}
