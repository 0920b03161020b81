//! The peer's configuration: `core.yaml`-like YAML, every field overridable by a
//! `MEDLEDGER_PEER_*` environment variable.

use serde::Deserialize;

use super::attestations::DeliveryTimeouts;
use crate::storage::ledger::TransientLimits;

use super::*;

/// Another organisation's peer for gateway endorsement.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerEndpointConfig {
    pub msp_id: String,
    pub address: String,
    #[serde(default)]
    pub tls_root_cert_file: Option<PathBuf>,
}

/// A chaincode defined on a channel (until the lifecycle chaincode manages definitions).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChaincodeConfig {
    pub name: String,
    #[serde(default = "default_version")]
    pub version: String,
    pub package_id: String,
    pub connection: ConnectionInfo,
    /// Fabric policy language, e.g. `AND('Hospital1MSP.peer','Hospital2MSP.peer')`.
    pub endorsement_policy: String,
    #[serde(default = "default_escc")]
    pub endorsement_plugin: String,
    #[serde(default = "default_vscc")]
    pub validation_plugin: String,
    /// Fabric's `collections_config.json` for the chaincode's private data collections.
    #[serde(default)]
    pub collections_config: Option<PathBuf>,
}

/// Private data settings (Fabric's `peer.gossip.pvtData` and transient store retention).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrivateDataConfig {
    /// How long a commit waits for missing private data from other members.
    #[serde(default = "default_pull_timeout")]
    pub pull_timeout_ms: u64,
    /// How often missing private data is looked for again.
    #[serde(default = "default_reconcile_interval")]
    pub reconcile_interval_ms: u64,
    /// Blocks a never-committed transaction's private data stays in the transient store.
    #[serde(default = "default_transient_retention")]
    pub transient_retention_blocks: u64,
    /// Seconds a never-committed transaction's private data stays in the transient store, so
    /// that an idle channel drains it too.
    #[serde(default = "default_transient_max_age")]
    pub transient_max_age_secs: u64,
    /// Bytes the transient store holds at most; endorsements and pushes beyond it are refused.
    #[serde(default = "default_transient_max_bytes")]
    pub transient_max_bytes: u64,
    /// Where the per-collection AES-256-GCM keys are kept (default `<dataDir>/keys`).
    #[serde(default)]
    pub keys_dir: Option<PathBuf>,
}

impl Default for PrivateDataConfig {
    fn default() -> Self {
        Self {
            pull_timeout_ms: default_pull_timeout(),
            reconcile_interval_ms: default_reconcile_interval(),
            transient_retention_blocks: default_transient_retention(),
            transient_max_age_secs: default_transient_max_age(),
            transient_max_bytes: default_transient_max_bytes(),
            keys_dir: None,
        }
    }
}

fn default_pull_timeout() -> u64 {
    3_000
}
fn default_reconcile_interval() -> u64 {
    10_000
}
fn default_transient_retention() -> u64 {
    TransientLimits::default().retention_blocks
}
fn default_transient_max_age() -> u64 {
    TransientLimits::default().max_age_secs
}
fn default_transient_max_bytes() -> u64 {
    TransientLimits::default().max_bytes
}

impl PrivateDataConfig {
    /// The transient store's bounds this configuration sets.
    pub fn transient_limits(&self) -> TransientLimits {
        TransientLimits {
            max_bytes: self.transient_max_bytes,
            retention_blocks: self.transient_retention_blocks,
            max_age_secs: self.transient_max_age_secs,
        }
    }
}

/// How the peer takes blocks from the ordering service (Fabric's `peer.deliveryclient`).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryClientConfig {
    /// How long a block that another orderer attests may be missing from the block source before
    /// the peer takes blocks from another orderer (Fabric's `blockCensorshipTimeoutKey`, 30 s).
    #[serde(default = "default_censorship_timeout")]
    pub block_censorship_timeout_ms: u64,
    /// The first delay before reconnecting to an orderer (Fabric's `minimalReconnectInterval`).
    #[serde(default = "default_min_reconnect")]
    pub min_reconnect_interval_ms: u64,
    /// The longest delay between reconnection attempts.
    #[serde(default = "default_max_reconnect")]
    pub max_reconnect_interval_ms: u64,
}

impl Default for DeliveryClientConfig {
    fn default() -> Self {
        Self {
            block_censorship_timeout_ms: default_censorship_timeout(),
            min_reconnect_interval_ms: default_min_reconnect(),
            max_reconnect_interval_ms: default_max_reconnect(),
        }
    }
}

fn default_censorship_timeout() -> u64 {
    30_000
}
fn default_min_reconnect() -> u64 {
    100
}
fn default_max_reconnect() -> u64 {
    10_000
}

impl DeliveryClientConfig {
    /// The delivery timeouts this configuration sets (a zero is raised to a millisecond).
    pub fn timeouts(&self) -> DeliveryTimeouts {
        let min_retry = Duration::from_millis(self.min_reconnect_interval_ms.max(1));
        DeliveryTimeouts {
            censorship: Duration::from_millis(self.block_censorship_timeout_ms.max(1)),
            min_retry,
            max_retry: Duration::from_millis(self.max_reconnect_interval_ms).max(min_retry),
        }
    }
}

fn default_version() -> String {
    "1.0".into()
}
fn default_escc() -> String {
    "escc".into()
}
fn default_vscc() -> String {
    "vscc".into()
}
fn default_timeout() -> u64 {
    30_000
}

/// A channel to join: its genesis block and its chaincodes.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelJoinConfig {
    pub genesis_block: PathBuf,
    #[serde(default)]
    pub chaincodes: Vec<ChaincodeConfig>,
}

/// The peer's configuration.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerConfig {
    pub id: String,
    pub msp_id: String,
    pub msp_dir: PathBuf,
    pub listen_address: String,
    pub data_dir: PathBuf,
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    #[serde(default)]
    pub gateway_peers: Vec<PeerEndpointConfig>,
    #[serde(default = "default_timeout")]
    pub chaincode_execute_timeout_ms: u64,
    #[serde(default)]
    pub channels: Vec<ChannelJoinConfig>,
    /// Where `/healthz` and `/metrics` are served (none when unset).
    #[serde(default)]
    pub operations_address: Option<String>,
    #[serde(default)]
    pub private_data: PrivateDataConfig,
    #[serde(default)]
    pub delivery_client: DeliveryClientConfig,
    /// Largest gRPC message received, on every server and client of the peer (Fabric's
    /// `peer.maxRecvMsgSize`, 100 MiB).
    #[serde(default = "medledger_common::config::default_max_message_bytes")]
    pub max_recv_msg_size: usize,
    /// Largest gRPC message sent (Fabric's `peer.maxSendMsgSize`, 100 MiB).
    #[serde(default = "medledger_common::config::default_max_message_bytes")]
    pub max_send_msg_size: usize,
    /// The audit feed (IHE ATNA): which chaincodes' calls become AuditEvents, and where they go.
    #[serde(default)]
    pub audit: Option<crate::services::audit::AuditConfig>,
}

impl PeerConfig {
    /// Reads YAML, then applies `MEDLEDGER_PEER_<FIELD>` environment overrides for scalar fields
    /// (`MEDLEDGER_PEER_LISTENADDRESS=127.0.0.1:7051`).
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let mut cfg: Self = medledger_common::config::load_yaml(path, "MEDLEDGER_PEER_")
            .map_err(NodeError::Config)?;
        cfg.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(cfg)
    }

    /// The message limits every server and client of this peer applies.
    pub fn message_limits(&self) -> medledger_common::config::MessageLimits {
        medledger_common::config::MessageLimits {
            max_recv: self.max_recv_msg_size,
            max_send: self.max_send_msg_size,
        }
    }

    /// Refuses a configuration that would send proposals (with their transient data) or private
    /// write sets over plain TCP while the node itself runs TLS: every `gatewayPeers` entry then
    /// needs its TLS root. A node without a `tls` section runs plain TCP throughout, by choice.
    pub fn check_transport(&self) -> Result<(), NodeError> {
        if self.tls.is_none() {
            return Ok(());
        }
        match self
            .gateway_peers
            .iter()
            .find(|p| p.tls_root_cert_file.is_none())
        {
            Some(p) => Err(NodeError::Config(format!(
                "gatewayPeers entry {} ({}) has no tlsRootCertFile: this node runs TLS and will not \
                 send proposals or private data to it in plain text; give its TLS CA certificate, \
                 or remove the node's tls section to run without TLS everywhere",
                p.address, p.msp_id
            ))),
            None => Ok(()),
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        use medledger_common::config::resolve;
        resolve(base, &mut self.msp_dir);
        resolve(base, &mut self.data_dir);
        if let Some(t) = &mut self.tls {
            t.resolve_paths(base);
        }
        for p in &mut self.gateway_peers {
            if let Some(f) = &mut p.tls_root_cert_file {
                resolve(base, f);
            }
        }
        for c in &mut self.channels {
            resolve(base, &mut c.genesis_block);
            for cc in &mut c.chaincodes {
                if let Some(f) = &mut cc.collections_config {
                    resolve(base, f);
                }
            }
        }
        if let Some(k) = &mut self.private_data.keys_dir {
            resolve(base, k);
        }
        if let Some(a) = &mut self.audit {
            a.resolve_paths(base);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tls: bool, peer_root: Option<&str>) -> PeerConfig {
        let yaml = format!(
            "id: p\nmspId: H1MSP\nmspDir: msp\nlistenAddress: 127.0.0.1:0\ndataDir: data\n{}\
             gatewayPeers:\n  - mspId: H2MSP\n    address: peer2:9051\n{}",
            if tls {
                "tls:\n  certFile: c.pem\n  keyFile: k.pem\n"
            } else {
                ""
            },
            peer_root.map_or(String::new(), |r| format!("    tlsRootCertFile: {r}\n")),
        );
        serde_yaml::from_str(&yaml).expect("peer config")
    }

    #[test]
    fn a_tls_node_refuses_a_gateway_peer_without_a_tls_root() {
        let err = config(true, None)
            .check_transport()
            .expect_err("plain TCP to a gateway peer must be refused");
        assert!(err.to_string().contains("peer2:9051"), "{err}");
        assert!(config(true, Some("ca.pem")).check_transport().is_ok());
        assert!(config(false, None).check_transport().is_ok());
    }
}
