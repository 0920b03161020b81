//! Changing a channel's configuration from the command line, as Fabric's tools do it:
//! `channel fetch` (a block from the ordering service), `channel signconfigtx` (an admin's
//! signature on an update), `channel update` (submit it), and `config` (what Fabric users do with
//! `configtxlator`: protobuf ⇄ JSON in Fabric's shape, take the configuration out of a block,
//! compute the update between two configurations, add a CRL to an organisation).

use std::path::{Path, PathBuf};

use medledger_common::channelconfig::set_consenters;
use medledger_common::configtx::{compute_update, sign_config_update, update_envelope};
use medledger_proto::common::{
    Block, Config, ConfigUpdate, ConfigUpdateEnvelope, Envelope, HeaderType, Status as BlockStatus,
};
use medledger_proto::msp::{FabricMspConfig, MspConfig};
use medledger_proto::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use medledger_proto::orderer::{
    SeekInfo, SeekNewest, SeekOldest, SeekPosition, SeekSpecified, deliver_response,
    seek_info::SeekBehavior, seek_position,
};

use super::*;

/// The ordering service node to talk to and who signs.
#[derive(Args, Debug, Clone)]
pub(super) struct OrdererTarget {
    /// The orderer (host:port).
    #[arg(short = 'o', long = "orderer")]
    orderer: String,
    /// The TLS CA certificate of the orderer; without it the connection is plain TCP.
    #[arg(long = "cafile")]
    cafile: Option<PathBuf>,
    /// The channel.
    #[arg(short = 'c', long = "channelID")]
    channel: String,
    /// MSP folder of the signing identity.
    #[arg(long, env = "CORE_PEER_MSPCONFIGPATH")]
    mspdir: PathBuf,
    /// MSP id of the signing identity.
    #[arg(long, env = "CORE_PEER_LOCALMSPID")]
    mspid: String,
}

/// `medledger-peer config ...`: the configtxlator steps, on binary protobuf files.
#[derive(Subcommand, Debug)]
pub(super) enum ConfigCommand {
    /// Write a protobuf message as JSON in Fabric's shape (opaque fields expanded), as
    /// `configtxlator proto_decode` does.
    #[command(
        alias = "proto_decode",
        after_help = "Example:\n  medledger-peer config proto-decode --type common.Block \\\n    \
        --input config_block.pb --output config_block.json"
    )]
    ProtoDecode {
        /// The message type: common.Block, common.Envelope, common.Config,
        /// common.ConfigEnvelope, common.ConfigUpdate, common.ConfigUpdateEnvelope, ...
        #[arg(long = "type")]
        type_name: String,
        /// The protobuf file (standard input without it).
        #[arg(long)]
        input: Option<PathBuf>,
        /// The JSON file to write (standard output without it).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Write the protobuf message JSON in Fabric's shape describes, as `configtxlator
    /// proto_encode` does.
    #[command(
        alias = "proto_encode",
        after_help = "Example:\n  medledger-peer config proto-encode --type common.Config \\\n    \
        --input modified_config.json --output modified_config.pb"
    )]
    ProtoEncode {
        /// The message type, as for proto-decode.
        #[arg(long = "type")]
        type_name: String,
        /// The JSON file (standard input without it).
        #[arg(long)]
        input: Option<PathBuf>,
        /// The protobuf file to write (standard output without it).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Write the configuration (common.Config) a configuration block carries.
    #[command(
        after_help = "Example:\n  medledger-peer config from-block --block config_block.pb --output config.pb"
    )]
    FromBlock {
        #[arg(long)]
        block: PathBuf,
        #[arg(long)]
        output: PathBuf,
    },
    /// Write the update (common.ConfigUpdate) that turns one configuration into another, as
    /// `configtxlator compute_update` does.
    #[command(
        alias = "compute_update",
        after_help = "Example:\n  medledger-peer config compute-update --channel_id medchannel \\\n    \
        --original config.pb --updated modified_config.pb --output update.pb"
    )]
    ComputeUpdate {
        #[arg(long = "channel_id")]
        channel_id: String,
        #[arg(long)]
        original: PathBuf,
        #[arg(long)]
        updated: PathBuf,
        #[arg(long)]
        output: PathBuf,
    },
    /// Write a configuration whose organisation `--org` also carries the CRL in `--crl` (PEM, as
    /// `medledger-ca gencrl` writes it): the certificates it lists are revoked on the channel
    /// once the update commits.
    #[command(
        after_help = "Example:\n  medledger-peer config add-crl --config config.pb --org Hospital1MSP \\\n    \
        --crl organizations/hospital1/ca/crl.pem --output modified_config.pb"
    )]
    AddCrl {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        org: String,
        #[arg(long)]
        crl: PathBuf,
        #[arg(long)]
        output: PathBuf,
    },
    /// Add an application organisation (a hospital) to a configuration (common.Config), from
    /// its MSP folder (cacerts, tlscacerts, config.yaml with Node OUs, admincerts or an admin
    /// OU), as Fabric's `configtxgen -printOrg` and a jq edit do together.
    #[command(
        after_help = "Example:\n  medledger-peer config add-org --config config.pb --mspid Hospital3MSP \\\n    \
        --msp-dir organizations/hospital3/msp --anchor-peer localhost:11051 --output modified_config.pb"
    )]
    AddOrg {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        mspid: String,
        #[arg(long = "msp-dir")]
        msp_dir: PathBuf,
        /// host:port of a peer other organisations may call (repeat for several).
        #[arg(long = "anchor-peer")]
        anchor_peers: Vec<String>,
        #[arg(long)]
        output: PathBuf,
    },
    /// Add a BFT consenter (an orderer) to a configuration (common.Config): the jq edit of
    /// `.channel_group.groups.Orderer.values.Orderers.value.consenter_mapping` Fabric's docs
    /// show. One consenter per update; the new orderer starts from the channel's genesis block
    /// with this id as its consenterId and catches up once the update commits.
    #[command(after_help = "Example:
  medledger-peer config add-consenter --config config.pb --id 5 \
            --endpoint orderer5.example.com:7054 --mspid OrdererMSP \
            --identity orderer5/msp/signcerts/cert.pem --tls-cert orderer5/tls/server.crt \
            --output modified_config.pb")]
    AddConsenter {
        #[arg(long)]
        config: PathBuf,
        /// Its consenterId (unused in the configuration).
        #[arg(long)]
        id: u32,
        /// host:port where the other orderers reach it.
        #[arg(long)]
        endpoint: String,
        /// Its orderer organisation.
        #[arg(long)]
        mspid: String,
        /// Its enrollment certificate (PEM): what its consensus messages and block signatures
        /// are checked with.
        #[arg(long)]
        identity: PathBuf,
        /// Its TLS certificate (PEM), as server and as client of the other orderers.
        #[arg(long = "tls-cert")]
        tls_cert: PathBuf,
        #[arg(long)]
        output: PathBuf,
    },
    /// Remove a BFT consenter from a configuration (common.Config). Once the update commits the
    /// orderer stops ordering (its Broadcast answers SERVICE_UNAVAILABLE); stop it then.
    #[command(after_help = "Example:
  medledger-peer config remove-consenter --config config.pb --id 2 \
            --output modified_config.pb")]
    RemoveConsenter {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        id: u32,
        #[arg(long)]
        output: PathBuf,
    },
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), NodeError> {
    std::fs::write(path, bytes).map_err(|e| NodeError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// A file, or standard input, of at most `limit` bytes.
fn read_input(path: Option<&Path>, limit: usize) -> Result<Vec<u8>, NodeError> {
    use std::io::Read;
    let name = || path.map_or_else(|| PathBuf::from("<stdin>"), Path::to_path_buf);
    let failed = |reason: String| NodeError::File {
        path: name(),
        reason,
    };
    let mut bytes = Vec::new();
    let reader: Box<dyn Read> = match path {
        Some(p) => Box::new(std::fs::File::open(p).map_err(|e| failed(e.to_string()))?),
        None => Box::new(std::io::stdin()),
    };
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| failed(e.to_string()))?;
    if bytes.len() > limit {
        return Err(failed(format!("larger than {limit} bytes")));
    }
    Ok(bytes)
}

/// Writes to a file, or to standard output.
fn write_output(path: Option<&Path>, bytes: &[u8]) -> Result<(), NodeError> {
    use std::io::Write;
    match path {
        Some(p) => write_file(p, bytes),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)
                .and_then(|()| out.flush())
                .map_err(|e| NodeError::File {
                    path: PathBuf::from("<stdout>"),
                    reason: e.to_string(),
                })
        }
    }
}

fn decode_file<M: Message + Default>(path: &Path, what: &str) -> Result<M, NodeError> {
    M::decode(super::super::read(path)?.as_slice()).map_err(|e| NodeError::File {
        path: path.to_path_buf(),
        reason: format!("not a {what}: {e}"),
    })
}

fn load_signer(mspdir: &Path, mspid: &str) -> Result<SigningIdentity, NodeError> {
    SigningIdentity::load(mspdir, mspid).map_err(|e| NodeError::File {
        path: mspdir.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Runs one `config` subcommand.
pub(super) fn config(cmd: ConfigCommand) -> Result<(), NodeError> {
    use medledger_common::configjson;
    match cmd {
        ConfigCommand::ProtoDecode {
            type_name,
            input,
            output,
        } => {
            let bytes = read_input(input.as_deref(), configjson::MAX_PROTO_BYTES)?;
            let json = configjson::proto_decode(&type_name, &bytes)
                .map_err(|e| NodeError::Failed(e.to_string()))?;
            write_output(output.as_deref(), json.as_bytes())
        }
        ConfigCommand::ProtoEncode {
            type_name,
            input,
            output,
        } => {
            let json = read_input(input.as_deref(), configjson::MAX_JSON_BYTES)?;
            let bytes = configjson::proto_encode(&type_name, &json)
                .map_err(|e| NodeError::Failed(e.to_string()))?;
            write_output(output.as_deref(), &bytes)
        }
        ConfigCommand::FromBlock { block, output } => {
            let block: Block = decode_file(&block, "block")?;
            let config = medledger_common::channelconfig::config_of_block(&block)
                .map_err(|e| NodeError::Failed(e.to_string()))?;
            write_file(&output, &config.encode_to_vec())
        }
        ConfigCommand::ComputeUpdate {
            channel_id,
            original,
            updated,
            output,
        } => {
            let original: Config = decode_file(&original, "common.Config")?;
            let updated: Config = decode_file(&updated, "common.Config")?;
            let update = compute_update(&channel_id, &original, &updated)
                .map_err(|e| NodeError::Failed(e.to_string()))?;
            write_file(&output, &update.encode_to_vec())
        }
        ConfigCommand::AddCrl {
            config,
            org,
            crl,
            output,
        } => {
            let mut config: Config = decode_file(&config, "common.Config")?;
            let crl = super::super::read(&crl)?;
            add_crl(&mut config, &org, crl)?;
            write_file(&output, &config.encode_to_vec())
        }
        ConfigCommand::AddOrg {
            config,
            mspid,
            msp_dir,
            anchor_peers,
            output,
        } => {
            let mut config: Config = decode_file(&config, "common.Config")?;
            add_org(&mut config, &mspid, &msp_dir, &anchor_peers)?;
            write_file(&output, &config.encode_to_vec())
        }
        ConfigCommand::AddConsenter {
            config,
            id,
            endpoint,
            mspid,
            identity,
            tls_cert,
            output,
        } => {
            let mut config: Config = decode_file(&config, "common.Config")?;
            let (host, port) = endpoint
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
                .filter(|(h, _)| !h.is_empty())
                .ok_or_else(|| {
                    NodeError::Usage(format!("--endpoint takes host:port, not {endpoint:?}"))
                })?;
            let identity = super::super::read(&identity)?;
            let tls = super::super::read(&tls_cert)?;
            let mut consenters = consenters_of(&config)?;
            if consenters.iter().any(|c| c.id == id) {
                return Err(NodeError::Failed(format!(
                    "consenter {id} is already in the configuration"
                )));
            }
            consenters.push(medledger_proto::common::Consenter {
                id,
                host,
                port: u32::from(port),
                msp_id: mspid,
                identity,
                client_tls_cert: tls.clone(),
                server_tls_cert: tls,
            });
            set_consenters(&mut config, consenters)
                .map_err(|e| NodeError::Failed(e.to_string()))?;
            write_file(&output, &config.encode_to_vec())
        }
        ConfigCommand::RemoveConsenter { config, id, output } => {
            let mut config: Config = decode_file(&config, "common.Config")?;
            let mut consenters = consenters_of(&config)?;
            let before = consenters.len();
            consenters.retain(|c| c.id != id);
            if consenters.len() == before {
                return Err(NodeError::Failed(format!(
                    "the configuration has no consenter {id}"
                )));
            }
            set_consenters(&mut config, consenters)
                .map_err(|e| NodeError::Failed(e.to_string()))?;
            write_file(&output, &config.encode_to_vec())
        }
    }
}

/// The BFT consenters `config` names (its Orderer group's `Orderers` value).
fn consenters_of(config: &Config) -> Result<Vec<medledger_proto::common::Consenter>, NodeError> {
    let value = config
        .channel_group
        .as_ref()
        .and_then(|root| root.groups.get("Orderer"))
        .and_then(|orderer| orderer.values.get("Orderers"))
        .ok_or_else(|| {
            NodeError::Failed("the configuration has no Orderer group Orderers value".into())
        })?;
    medledger_proto::common::Orderers::decode(value.value.as_slice())
        .map(|o| o.consenter_mapping)
        .map_err(|e| NodeError::Failed(format!("the Orderers value: {e}")))
}

/// Adds application organisation `mspid` from its MSP folder to `config`.
fn add_org(
    config: &mut Config,
    mspid: &str,
    msp_dir: &Path,
    anchor_peers: &[String],
) -> Result<(), NodeError> {
    let msp =
        medledger_common::msp::load_msp_folder(msp_dir, mspid).map_err(|e| NodeError::File {
            path: msp_dir.to_path_buf(),
            reason: format!("not an MSP folder of {mspid}: {e}"),
        })?;
    // The MSP must be one the channel will accept, before anyone signs the update.
    medledger_common::Msp::new(&msp).map_err(|e| NodeError::File {
        path: msp_dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let anchor_peers = anchor_peers
        .iter()
        .map(|a| {
            a.rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
                .filter(|(h, _)| !h.is_empty())
                .ok_or_else(|| {
                    NodeError::Usage(format!("--anchor-peer takes host:port, not {a:?}"))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let application = config
        .channel_group
        .as_mut()
        .and_then(|root| root.groups.get_mut("Application"))
        .ok_or_else(|| NodeError::Failed("the configuration has no Application group".into()))?;
    if application.groups.contains_key(mspid) {
        return Err(NodeError::Failed(format!(
            "{mspid} is already an organisation of the channel"
        )));
    }
    application.groups.insert(
        mspid.to_owned(),
        medledger_common::channelconfig::application_org_group(
            &medledger_common::channelconfig::OrgProfile { msp, anchor_peers },
        ),
    );
    Ok(())
}

/// Adds a CRL to organisation `org`'s MSP in `config` (application or orderer organisation).
fn add_crl(config: &mut Config, org: &str, crl: Vec<u8>) -> Result<(), NodeError> {
    let value = config
        .channel_group
        .as_mut()
        .and_then(|root| {
            root.groups
                .values_mut()
                .find_map(|section| section.groups.get_mut(org))
        })
        .and_then(|g| g.values.get_mut("MSP"))
        .ok_or_else(|| NodeError::Failed(format!("the configuration has no organisation {org}")))?;
    let mut msp = MspConfig::decode(value.value.as_slice())
        .map_err(|e| NodeError::Failed(format!("{org}'s MSP: {e}")))?;
    let mut fabric = FabricMspConfig::decode(msp.config.as_slice())
        .map_err(|e| NodeError::Failed(format!("{org}'s MSP: {e}")))?;
    if !fabric.revocation_list.contains(&crl) {
        fabric.revocation_list.push(crl);
    }
    msp.config = fabric.encode_to_vec();
    value.value = msp.encode_to_vec();
    Ok(())
}

/// Which block `channel fetch` takes.
fn seek_position(which: &str, newest_config: Option<u64>) -> Result<SeekPosition, NodeError> {
    let kind = match (which, newest_config) {
        (_, Some(n)) => seek_position::Type::Specified(SeekSpecified { number: n }),
        ("newest" | "config", None) => seek_position::Type::Newest(SeekNewest {}),
        ("oldest", None) => seek_position::Type::Oldest(SeekOldest {}),
        (n, None) => seek_position::Type::Specified(SeekSpecified {
            number: n.parse().map_err(|_| {
                NodeError::Usage(format!(
                    "fetch takes newest, oldest, config or a block number, not {n:?}"
                ))
            })?,
        }),
    };
    Ok(SeekPosition { r#type: Some(kind) })
}

/// One block from the orderer's Deliver service.
async fn fetch_one(
    t: &OrdererTarget,
    signer: &SigningIdentity,
    position: SeekPosition,
) -> Result<Block, NodeError> {
    let roots = match &t.cafile {
        Some(p) => vec![super::super::read(p)?],
        None => vec![],
    };
    let ch = crate::comm::dial(&t.orderer, &roots, None)
        .await
        .map_err(|e| NodeError::Peer {
            address: t.orderer.clone(),
            reason: e,
        })?;
    let seek = SeekInfo {
        start: Some(position),
        stop: Some(position),
        behavior: SeekBehavior::FailIfNotReady as i32,
        ..Default::default()
    };
    let env = medledger_common::protoutil::signed_envelope(
        HeaderType::DeliverSeekInfo,
        &t.channel,
        seek.encode_to_vec(),
        signer,
    )
    .map_err(|e| NodeError::Failed(e.to_string()))?;
    let failed = |reason: String| NodeError::Peer {
        address: t.orderer.clone(),
        reason,
    };
    let mut stream = AtomicBroadcastClient::new(ch)
        .max_decoding_message_size(medledger_common::config::DEFAULT_MAX_MESSAGE_BYTES)
        .deliver(tokio_stream::once(env))
        .await
        .map_err(|s| failed(s.message().to_owned()))?
        .into_inner();
    match stream
        .message()
        .await
        .map_err(|s| failed(s.message().to_owned()))?
    {
        Some(m) => match m.r#type {
            Some(deliver_response::Type::Block(b)) => Ok(b),
            Some(deliver_response::Type::Status(s)) => Err(failed(format!(
                "the orderer answered {}",
                BlockStatus::try_from(s)
                    .map(|s| s.as_str_name().to_owned())
                    .unwrap_or_else(|_| s.to_string())
            ))),
            None => Err(failed("empty answer".into())),
        },
        None => Err(failed("the orderer closed the stream".into())),
    }
}

/// `channel fetch newest|oldest|config|N <file>`.
pub(super) async fn fetch(
    which: String,
    output: PathBuf,
    t: OrdererTarget,
) -> Result<(), NodeError> {
    let signer = load_signer(&t.mspdir, &t.mspid)?;
    let mut block = fetch_one(&t, &signer, seek_position(&which, None)?).await?;
    if which == "config" {
        let index = medledger_common::protoutil::signed_last_config(&block).ok_or_else(|| {
            NodeError::Failed("the newest block names no configuration block".into())
        })?;
        block = fetch_one(&t, &signer, seek_position(&which, Some(index))?).await?;
    }
    let number = block.header.as_ref().map(|h| h.number).unwrap_or_default();
    write_file(&output, &block.encode_to_vec())?;
    println!("Received block: {number}");
    Ok(())
}

/// What an update file holds: a CONFIG_UPDATE envelope, or (for convenience) the bare
/// `ConfigUpdate` that `config compute-update` writes.
fn read_update(path: &Path, channel: &str) -> Result<ConfigUpdateEnvelope, NodeError> {
    let bytes = super::super::read(path)?;
    if let Ok(env) = Envelope::decode(bytes.as_slice())
        && let Ok(d) = medledger_common::configtx::decode_update(&env)
    {
        return Ok(d.envelope);
    }
    let update = ConfigUpdate::decode(bytes.as_slice())
        .ok()
        .filter(|u| u.channel_id == channel && u.write_set.is_some())
        .ok_or_else(|| NodeError::File {
            path: path.to_path_buf(),
            reason: format!(
                "neither a CONFIG_UPDATE envelope nor a configuration update for channel {channel}"
            ),
        })?;
    Ok(ConfigUpdateEnvelope {
        config_update: update.encode_to_vec(),
        signatures: vec![],
    })
}

/// Adds the local identity's signature to an update (once).
fn add_signature(
    envelope: &mut ConfigUpdateEnvelope,
    signer: &SigningIdentity,
) -> Result<(), NodeError> {
    let already = envelope.signatures.iter().any(|s| {
        medledger_proto::common::SignatureHeader::decode(s.signature_header.as_slice())
            .is_ok_and(|h| h.creator == signer.serialized())
    });
    if !already {
        envelope.signatures.push(
            sign_config_update(&envelope.config_update, signer)
                .map_err(|e| NodeError::Failed(e.to_string()))?,
        );
    }
    Ok(())
}

/// `channel signconfigtx -f file`: adds the local admin's signature, in place.
pub(super) fn sign_config_tx(
    file: PathBuf,
    channel: Option<String>,
    mspdir: PathBuf,
    mspid: String,
) -> Result<(), NodeError> {
    let signer = load_signer(&mspdir, &mspid)?;
    let probe = ConfigUpdate::decode(super::super::read(&file)?.as_slice()).ok();
    let channel = channel
        .or_else(|| probe.map(|u| u.channel_id))
        .unwrap_or_default();
    let mut envelope = read_update(&file, &channel)?;
    add_signature(&mut envelope, &signer)?;
    let env = update_envelope(&channel_of(&envelope)?, &envelope, &signer)
        .map_err(|e| NodeError::Failed(e.to_string()))?;
    write_file(&file, &env.encode_to_vec())
}

fn channel_of(envelope: &ConfigUpdateEnvelope) -> Result<String, NodeError> {
    ConfigUpdate::decode(envelope.config_update.as_slice())
        .map(|u| u.channel_id)
        .map_err(|e| NodeError::Failed(format!("configuration update: {e}")))
}

/// `channel update -f file`: signs as the local identity and submits to the orderer.
pub(super) async fn update(file: PathBuf, t: OrdererTarget) -> Result<(), NodeError> {
    let signer = load_signer(&t.mspdir, &t.mspid)?;
    let mut envelope = read_update(&file, &t.channel)?;
    add_signature(&mut envelope, &signer)?;
    let env = update_envelope(&t.channel, &envelope, &signer)
        .map_err(|e| NodeError::Failed(e.to_string()))?;
    let roots = match &t.cafile {
        Some(p) => vec![super::super::read(p)?],
        None => vec![],
    };
    let failed = |reason: String| NodeError::Peer {
        address: t.orderer.clone(),
        reason,
    };
    let ch = crate::comm::dial(&t.orderer, &roots, None)
        .await
        .map_err(failed)?;
    let answer = AtomicBroadcastClient::new(ch)
        .max_encoding_message_size(medledger_common::config::DEFAULT_MAX_MESSAGE_BYTES)
        .broadcast(tokio_stream::once(env))
        .await
        .map_err(|s| failed(s.message().to_owned()))?
        .into_inner()
        .message()
        .await
        .map_err(|s| failed(s.message().to_owned()))?
        .ok_or_else(|| failed("no answer".into()))?;
    if answer.status != BlockStatus::Success as i32 {
        let status = BlockStatus::try_from(answer.status)
            .map(|s| s.as_str_name().to_owned())
            .unwrap_or_else(|_| answer.status.to_string());
        return Err(NodeError::Failed(format!(
            "the orderer refused the update: {status}: {}",
            answer.info
        )));
    }
    println!("Successfully submitted channel update");
    Ok(())
}
