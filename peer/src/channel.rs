//! A channel as a peer holds it: its configuration (from the genesis block), its ledger, and the
//! chaincodes defined on it with their endorsement policies and plugins.

use std::collections::BTreeMap;
use std::sync::Arc;

use medledger_common::channelconfig::ChannelConfig;
use medledger_common::policy::Policy;

use crate::chaincode::ChaincodeEndpoint;
use crate::collection::Collections;
use crate::ledger::Ledger;

/// A chaincode's definition on a channel.
#[derive(Debug, Clone)]
pub struct ChaincodeDefinition {
    pub endpoint: ChaincodeEndpoint,
    pub endorsement_policy: Policy,
    /// Registered endorsement plugin name (`escc` by default).
    pub endorsement_plugin: String,
    /// Registered validation plugin name (`vscc` by default).
    pub validation_plugin: String,
    /// Its private data collections (explicit and implicit).
    pub collections: Collections,
}

/// One joined channel.
pub struct Channel {
    pub config: ChannelConfig,
    pub ledger: Arc<Ledger>,
    pub chaincodes: BTreeMap<String, ChaincodeDefinition>,
    /// The MSP id of the peer holding this channel (decides collection membership).
    pub local_msp: String,
}

impl Channel {
    pub fn id(&self) -> &str {
        &self.config.channel_id
    }

    /// PEM of the TLS CAs of the channel's orderer organisations.
    pub fn orderer_tls_roots(&self) -> Vec<Vec<u8>> {
        self.config
            .orderer_orgs
            .iter()
            .filter_map(|o| self.config.msps.get(o))
            .flat_map(|m| {
                m.tls_ca_certs()
                    .map(|c| c.to_pem().into_bytes())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// A chaincode defined on this channel.
    pub fn chaincode(&self, name: &str) -> Option<&ChaincodeDefinition> {
        self.chaincodes.get(name)
    }
}
