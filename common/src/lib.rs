//! What every MedLedger node shares: ECDSA crypto as Fabric uses it, certificates, MSPs and
//! identities, policies, certificate issuance, and the protocol arithmetic of Fabric's messages
//! (transaction ids, proposals, envelopes, block hashing).

pub mod cert;
pub mod channelconfig;
pub mod config;
pub mod configjson;
pub mod configtx;
pub mod crypto;
pub mod durable;
pub mod identity;
pub mod issue;
pub mod msp;
pub mod mutation;
pub mod ops;
pub mod policy;
pub mod proof;
pub mod protoutil;
pub mod refusal;
pub mod stored;
pub mod tlsserver;

pub use cert::Certificate;
pub use crypto::{PrivateKey, PublicKey};
pub use identity::SigningIdentity;
pub use msp::{Expiry, Identity, Msp, MspError, MspManager, NodeRole};
pub use policy::{Policy, PolicyError, SignedData};
