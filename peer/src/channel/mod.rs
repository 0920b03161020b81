//! A channel as a peer holds it: its configuration (from the genesis block), its ledger, and the
//! chaincodes defined on it with their endorsement policies and plugins.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use medledger_common::channelconfig::{ChannelConfig, ConfigInForce};

pub mod blocks;
pub mod collection;
pub mod definition;
pub mod pvtdata;

use crate::channel::collection::Collection;
use crate::channel::definition::ChaincodeDefinition;
use crate::storage::ledger::Ledger;

/// The channels a peer serves, by id.
pub type Channels = Arc<tokio::sync::RwLock<BTreeMap<String, Arc<Channel>>>>;

/// One joined channel.
pub struct Channel {
    id: String,
    config: ConfigInForce,
    pub ledger: Arc<Ledger>,
    /// Definitions by name: from the peer's configuration, then from `_lifecycle`.
    pub chaincodes: RwLock<BTreeMap<String, Arc<ChaincodeDefinition>>>,
    /// The MSP id of the peer holding this channel (decides collection membership).
    pub local_msp: String,
    /// How block delivery from the orderers has gone.
    pub delivery: DeliveryStats,
}

/// Counts of what block delivery met on a channel: for the operations metrics, and so that a
/// misbehaving orderer shows.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Block sources given up because their stream failed or they sent a block that did not
    /// verify.
    pub source_failures: AtomicU64,
    /// Block sources given up because they withheld a block other orderers attest.
    pub censorship_switches: AtomicU64,
    /// Header attestations refused because their signatures did not verify.
    pub invalid_attestations: AtomicU64,
}

impl Channel {
    /// A channel with `config` in force over `ledger`, held by a peer of `local_msp`.
    pub fn new(config: ChannelConfig, ledger: Arc<Ledger>, local_msp: &str) -> Self {
        Self {
            id: config.channel_id.clone(),
            config: ConfigInForce::new(config),
            ledger,
            chaincodes: Default::default(),
            local_msp: local_msp.to_owned(),
            delivery: Default::default(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The configuration in force now. Work that must see one configuration throughout (a
    /// block's validation, one request) takes it once.
    pub fn config(&self) -> Arc<ChannelConfig> {
        self.config.get()
    }

    /// Puts a newer configuration in force (after its configuration block committed).
    pub fn replace_config(&self, next: ChannelConfig) {
        self.config.replace(next);
    }

    /// Calls `observer` with the configuration in force now and every later one.
    pub fn observe_config(&self, observer: medledger_common::channelconfig::ConfigObserver) {
        self.config.observe(observer);
    }

    /// PEM of the TLS CAs of the channel's orderer organisations.
    pub fn orderer_tls_roots(&self) -> Vec<Vec<u8>> {
        let config = self.config();
        config
            .orderer_orgs
            .iter()
            .filter_map(|o| config.msps.get(o))
            .flat_map(|m| {
                m.tls_ca_certs()
                    .map(|c| c.to_pem().into_bytes())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// A chaincode defined on this channel.
    pub fn chaincode(&self, name: &str) -> Option<Arc<ChaincodeDefinition>> {
        self.chaincodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// A collection of a chaincode defined on this channel.
    pub fn collection(&self, chaincode: &str, collection: &str) -> Option<Collection> {
        self.chaincode(chaincode)
            .and_then(|d| d.collections.get(collection).cloned())
    }

    /// Adds or replaces definitions (lifecycle commits).
    pub fn define(&self, defs: impl IntoIterator<Item = ChaincodeDefinition>) {
        let mut map = self.chaincodes.write().unwrap_or_else(|e| e.into_inner());
        for d in defs {
            map.insert(d.name.clone(), Arc::new(d));
        }
    }
}
