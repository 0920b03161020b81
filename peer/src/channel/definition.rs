//! A chaincode's definition on a channel (policy, plugins, collections) and where this peer
//! runs it (the installed package's `connection.json`).

use medledger_common::policy::Policy;

use crate::channel::collection::Collections;

/// Where a chaincode server is, from the installed package's `connection.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct ConnectionInfo {
    pub address: String,
    #[serde(default)]
    pub tls_required: bool,
    /// PEM of the CA that signed the chaincode server's TLS certificate.
    #[serde(default)]
    pub root_cert: String,
    #[serde(default)]
    pub domain: String,
}

/// A chaincode the peer can run: its name on the channel, the package id it registers with,
/// and where to reach it.
#[derive(Debug, Clone)]
pub struct ChaincodeEndpoint {
    pub name: String,
    pub version: String,
    pub package_id: String,
    pub connection: ConnectionInfo,
}

/// A chaincode's definition on a channel.
#[derive(Debug, Clone)]
pub struct ChaincodeDefinition {
    pub name: String,
    pub version: String,
    /// The lifecycle sequence (0 for definitions from the peer's configuration).
    pub sequence: i64,
    /// Where this peer runs it; `None` when the definition is committed but this peer's
    /// organisation has not approved an installed package (it still validates transactions).
    pub endpoint: Option<ChaincodeEndpoint>,
    pub endorsement_policy: Policy,
    /// Registered endorsement plugin name (`escc` by default).
    pub endorsement_plugin: String,
    /// Registered validation plugin name (`vscc` by default).
    pub validation_plugin: String,
    /// Its private data collections (explicit and implicit).
    pub collections: Collections,
}
