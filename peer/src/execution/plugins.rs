//! Endorsement, validation and audit plugins, registered in the peer. Endorsement and validation
//! plugins are chosen by name in a chaincode definition; the defaults are Fabric's: `escc` signs
//! the proposal response payload with the peer's identity; `vscc` checks the chaincode's
//! endorsement policy and key-level policies. Every registered audit plugin is told about each
//! Evaluate and Endorse of the chaincodes it audits (none is registered by default).

use std::collections::BTreeMap;
use std::sync::Arc;

use medledger_common::SigningIdentity;
use medledger_common::msp::{Expiry, Identity, MspManager};
use medledger_common::policy::{Policy, SignedData, decode_signature_policy, verified_signers};
use medledger_proto::protos::{Endorsement, TxValidationCode};

/// Signs endorsements.
pub trait EndorsementPlugin: Send + Sync {
    fn endorse(&self, payload: &[u8], signer: &SigningIdentity) -> Result<Endorsement, String>;
}

/// What a validation plugin decides on.
pub struct ValidationInput<'a> {
    /// The agreed ProposalResponsePayload bytes.
    pub payload: &'a [u8],
    pub endorsements: &'a [Endorsement],
    pub chaincode_policy: &'a Policy,
    /// Key-level policies (serialized SignaturePolicyEnvelope) of the keys the transaction writes;
    /// `None` for written keys without one.
    pub key_policies: Vec<Option<Vec<u8>>>,
    pub msps: &'a MspManager,
}

/// Decides whether a transaction's endorsements are enough.
pub trait ValidationPlugin: Send + Sync {
    fn validate(&self, input: &ValidationInput<'_>) -> Result<(), TxValidationCode>;
}

/// Fabric's default endorsement: `signature = Sign(payload ‖ endorser)`.
pub struct DefaultEndorsement;

impl EndorsementPlugin for DefaultEndorsement {
    fn endorse(&self, payload: &[u8], signer: &SigningIdentity) -> Result<Endorsement, String> {
        let endorser = signer.serialized().to_vec();
        let signature = signer
            .sign(&[payload, &endorser].concat())
            .map_err(|e| e.to_string())?;
        Ok(Endorsement {
            endorser,
            signature,
        })
    }
}

/// Fabric's default validation: the chaincode policy must hold unless every written key has its
/// own key-level policy; every key-level policy of a written key must hold.
pub struct DefaultValidation;

impl ValidationPlugin for DefaultValidation {
    fn validate(&self, input: &ValidationInput<'_>) -> Result<(), TxValidationCode> {
        let signed: Vec<(Vec<u8>, &Endorsement)> = input
            .endorsements
            .iter()
            .map(|e| ([input.payload, &e.endorser].concat(), e))
            .collect();
        let data: Vec<SignedData> = signed
            .iter()
            .map(|(msg, e)| SignedData {
                data: msg,
                identity: &e.endorser,
                signature: &e.signature,
            })
            .collect();
        // Commit-time checks ignore the clock so every peer reaches the same verdict.
        let signers: Vec<Identity> = verified_signers(&data, input.msps, Expiry::Ignore);
        let needs_chaincode_policy =
            input.key_policies.is_empty() || input.key_policies.iter().any(Option::is_none);
        if needs_chaincode_policy && !input.chaincode_policy.satisfied_by(&signers) {
            return Err(TxValidationCode::EndorsementPolicyFailure);
        }
        for kp in input.key_policies.iter().flatten() {
            let env = decode_signature_policy(kp)
                .map_err(|_| TxValidationCode::EndorsementPolicyFailure)?;
            if !Policy::Signature(env).satisfied_by(&signers) {
                return Err(TxValidationCode::EndorsementPolicyFailure);
            }
        }
        Ok(())
    }
}

/// Which request ran a proposal on this peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditedRequest {
    /// Gateway Evaluate: run here, nothing endorsed.
    Evaluate,
    /// Gateway Endorse: this peer's own endorsement.
    Endorse,
    /// `protos.Endorser/ProcessProposal`: another peer's gateway, or a client, asking this peer.
    ProcessProposal,
}

impl AuditedRequest {
    pub fn name(self) -> &'static str {
        match self {
            Self::Evaluate => "gateway.Gateway/Evaluate",
            Self::Endorse => "gateway.Gateway/Endorse",
            Self::ProcessProposal => "protos.Endorser/ProcessProposal",
        }
    }
}

/// How an audited call ended on this peer.
#[derive(Debug, Clone, Copy)]
pub enum AuditOutcome<'a> {
    /// The chaincode answered a status below 400 with this payload.
    Success { payload: &'a [u8] },
    /// The chaincode (or the peer running it) answered an error status.
    Failed { status: i32, message: &'a str },
    /// The peer refused the proposal before running it (creator, signature, Writers, time...).
    Refused { reason: &'a str },
}

/// One Evaluate or Endorse of an audited chaincode, as the endorser saw it.
#[derive(Debug, Clone, Copy)]
pub struct AuditCall<'a> {
    pub request: AuditedRequest,
    pub channel: &'a str,
    pub tx_id: &'a str,
    pub chaincode: &'a str,
    /// The chaincode input: the function, then its arguments.
    pub args: &'a [Vec<u8>],
    /// The client's MSP id and certificate subject. For a refusal they are what the proposal
    /// claims: the peer may have refused precisely because they do not check out.
    pub client_msp: &'a str,
    pub client_subject: &'a str,
    /// The client certificate's `role` attribute, when it has one.
    pub client_role: Option<&'a str>,
    /// The address the request came from, where the transport says.
    pub client_address: Option<std::net::SocketAddr>,
    pub outcome: AuditOutcome<'a>,
}

/// Told about every Evaluate and Endorse of the chaincodes it audits. It runs on the
/// endorsement path, so `record` must return at once: copy what it needs and hand it to a queue,
/// never wait for a disk or a network.
pub trait AuditPlugin: Send + Sync {
    /// Whether calls of `chaincode` are audited; asked first, so unaudited calls cost nothing more.
    fn audits(&self, chaincode: &str) -> bool;
    fn record(&self, call: &AuditCall<'_>);
}

/// The plugins a peer knows, by name.
#[derive(Clone)]
pub struct PluginRegistry {
    endorsement: BTreeMap<String, Arc<dyn EndorsementPlugin>>,
    validation: BTreeMap<String, Arc<dyn ValidationPlugin>>,
    audit: BTreeMap<String, Arc<dyn AuditPlugin>>,
}

impl Default for PluginRegistry {
    fn default() -> Self {
        let mut r = Self {
            endorsement: BTreeMap::new(),
            validation: BTreeMap::new(),
            audit: BTreeMap::new(),
        };
        r.register_endorsement("escc", Arc::new(DefaultEndorsement));
        r.register_validation("vscc", Arc::new(DefaultValidation));
        r
    }
}

impl PluginRegistry {
    pub fn register_endorsement(&mut self, name: &str, plugin: Arc<dyn EndorsementPlugin>) {
        self.endorsement.insert(name.to_owned(), plugin);
    }
    pub fn register_validation(&mut self, name: &str, plugin: Arc<dyn ValidationPlugin>) {
        self.validation.insert(name.to_owned(), plugin);
    }
    pub fn endorsement(&self, name: &str) -> Option<&Arc<dyn EndorsementPlugin>> {
        self.endorsement.get(name)
    }
    pub fn validation(&self, name: &str) -> Option<&Arc<dyn ValidationPlugin>> {
        self.validation.get(name)
    }
    pub fn register_audit(&mut self, name: &str, plugin: Arc<dyn AuditPlugin>) {
        self.audit.insert(name.to_owned(), plugin);
    }
    /// Whether any audit plugin is registered.
    pub fn has_auditors(&self) -> bool {
        !self.audit.is_empty()
    }
    /// The audit plugins that audit `chaincode`.
    pub fn auditors(&self, chaincode: &str) -> impl Iterator<Item = &Arc<dyn AuditPlugin>> {
        self.audit.values().filter(move |p| p.audits(chaincode))
    }
}
