//! Our `configtxgen`: a `configtx.yaml` (organisations with their MSP folders, consenters with
//! endpoints and certificates, batch settings) turned into a channel's genesis block.

use std::path::{Path, PathBuf};

use medledger_common::channelconfig::{ChannelProfile, OrgProfile, genesis_block};
use medledger_common::msp::load_msp_folder;
use medledger_proto::common::{Block, Consenter};
use medledger_proto::orderer::BatchSize;
use serde::Deserialize;

/// Errors making a genesis block.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("configtx: {0}")]
    Config(String),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Org {
    /// The MSP id.
    name: String,
    msp_dir: PathBuf,
    #[serde(default)]
    anchor_peers: Vec<AnchorPeer>,
}

#[derive(Debug, Deserialize)]
struct AnchorPeer {
    host: String,
    port: u16,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConsenterEntry {
    id: u32,
    host: String,
    port: u32,
    msp_id: String,
    /// The consenter's signing certificate (PEM file).
    identity: PathBuf,
    /// Its TLS certificate (PEM file), used as both client and server TLS certificate.
    tls_cert: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Batch {
    max_message_count: u32,
    absolute_max_bytes: u32,
    preferred_max_bytes: u32,
    /// e.g. `500ms`, `2s`.
    timeout: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigTx {
    channel: String,
    organizations: Vec<Org>,
    orderer_organizations: Vec<Org>,
    consenters: Vec<ConsenterEntry>,
    batch: Batch,
}

fn read(base: &Path, p: &Path) -> Result<Vec<u8>, GenesisError> {
    let path = if p.is_relative() {
        base.join(p)
    } else {
        p.to_path_buf()
    };
    std::fs::read(&path).map_err(|e| GenesisError::File {
        path,
        reason: e.to_string(),
    })
}

/// Builds the genesis block described by the `configtx.yaml` at `path` (relative paths in it are
/// relative to its folder).
pub fn from_configtx(path: &Path) -> Result<Block, GenesisError> {
    let text = std::fs::read_to_string(path).map_err(|e| GenesisError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let tx: ConfigTx =
        serde_yaml::from_str(&text).map_err(|e| GenesisError::Config(e.to_string()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let org = |o: &Org| -> Result<OrgProfile, GenesisError> {
        let dir = if o.msp_dir.is_relative() {
            base.join(&o.msp_dir)
        } else {
            o.msp_dir.clone()
        };
        let msp = load_msp_folder(&dir, &o.name)
            .map_err(|e| GenesisError::Config(format!("organisation {}: {e}", o.name)))?;
        Ok(OrgProfile {
            msp,
            anchor_peers: o
                .anchor_peers
                .iter()
                .map(|a| (a.host.clone(), a.port))
                .collect(),
        })
    };
    let mut consenters = Vec::new();
    for c in &tx.consenters {
        let tls = read(base, &c.tls_cert)?;
        consenters.push(Consenter {
            id: c.id,
            host: c.host.clone(),
            port: c.port,
            msp_id: c.msp_id.clone(),
            identity: read(base, &c.identity)?,
            client_tls_cert: tls.clone(),
            server_tls_cert: tls,
        });
    }
    let mut ids: Vec<u32> = consenters.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != consenters.len() {
        return Err(GenesisError::Config(
            "consenter ids must be distinct".into(),
        ));
    }
    let profile = ChannelProfile {
        channel_id: tx.channel.clone(),
        application_orgs: tx.organizations.iter().map(org).collect::<Result<_, _>>()?,
        orderer_orgs: tx
            .orderer_organizations
            .iter()
            .map(org)
            .collect::<Result<_, _>>()?,
        consenters,
        batch_size: BatchSize {
            max_message_count: tx.batch.max_message_count,
            absolute_max_bytes: tx.batch.absolute_max_bytes,
            preferred_max_bytes: tx.batch.preferred_max_bytes,
        },
        batch_timeout: medledger_common::channelconfig::parse_duration(&tx.batch.timeout)
            .ok_or_else(|| {
                GenesisError::Config(format!("bad batch timeout {:?}", tx.batch.timeout))
            })?,
    };
    genesis_block(&profile).map_err(|e| GenesisError::Config(e.to_string()))
}
