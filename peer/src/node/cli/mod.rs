//! The `medledger-peer` command line: `node start`, `chaincode invoke|query` through the Fabric
//! Gateway, and `lifecycle chaincode package|install|approveformyorg|checkcommitreadiness|commit|
//! querycommitted`, with the flags a Fabric user knows (`-C`, `-n`, `-c`, `--peerAddresses`,
//! `--tlsRootCertFiles`, `--transient`, `--sequence`, `--package-id`, `--signature-policy`,
//! `--collections-config`; identity from `CORE_PEER_MSPCONFIGPATH` and `CORE_PEER_LOCALMSPID`).

use medledger_common::config::DEFAULT_MAX_MESSAGE_BYTES;
use std::collections::HashMap;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use medledger_common::SigningIdentity;
use medledger_common::protoutil::{Invocation, build_signed_proposal};
use medledger_proto::gateway::gateway_client::GatewayClient;
use medledger_proto::gateway::{
    CommitStatusRequest, EndorseRequest, EvaluateRequest, SignedCommitStatusRequest, SubmitRequest,
};
use medledger_proto::protos::{
    ChaincodeAction, ChaincodeActionPayload, ProposalResponsePayload, Transaction, TxValidationCode,
};
use prost::Message;

use medledger_common::policy::parse_signature_policy;
use medledger_proto::lifecycle::{
    ApproveChaincodeDefinitionForMyOrgArgs, ChaincodeSource, CheckCommitReadinessArgs,
    CheckCommitReadinessResult, CommitChaincodeDefinitionArgs, InstallChaincodeArgs,
    InstallChaincodeResult, QueryChaincodeDefinitionArgs, QueryChaincodeDefinitionResult,
    QueryInstalledChaincodesResult, chaincode_source,
};
use medledger_proto::protos::endorser_client::EndorserClient;
use medledger_proto::protos::{ApplicationPolicy, ChannelQueryResponse, application_policy};

use crate::channel::collection::package_from_json;
use crate::channel::definition::ConnectionInfo;
use crate::execution::lifecycle::{build_package, package_id};
use crate::execution::plugins::PluginRegistry;
use crate::node::{NodeError, PeerConfig, start};

#[derive(Parser, Debug)]
#[command(
    name = "medledger-peer",
    about = "MedLedger peer: ledger, endorser, Fabric Gateway and Deliver services"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Peer node operations.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Invoke or query a chaincode through the Gateway.
    #[command(subcommand)]
    Chaincode(ChaincodeCommand),
    /// Fabric 2 chaincode lifecycle.
    #[command(subcommand)]
    Lifecycle(LifecycleCommand),
    /// Join the peer to channels and list them; fetch blocks and update a channel's
    /// configuration through the ordering service.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Work on channel configurations (what Fabric users do with configtxlator).
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Export a record's provenance as a proof bundle, and verify one offline.
    #[command(subcommand)]
    Proof(proof::ProofCommand),
}

#[derive(Subcommand, Debug)]
enum ChannelCommand {
    /// Join the peer to a channel with its genesis block (as an admin of the peer's organisation).
    #[command(
        after_help = "Example:\n  CORE_PEER_LOCALMSPID=Hospital1MSP CORE_PEER_MSPCONFIGPATH=organizations/hospital1/users/admin/msp \\\n  \
        medledger-peer channel join -b channel-artifacts/medchannel.block \\\n    \
        --peerAddresses localhost:7051 --tlsRootCertFiles organizations/hospital1/tlsca/tlsca-cert.pem"
    )]
    Join {
        /// The channel's genesis block.
        #[arg(short = 'b', long = "blockpath")]
        block: PathBuf,
        #[command(flatten)]
        target: PeerTarget,
    },
    /// List the channels the peer has joined.
    #[command(
        after_help = "Example:\n  medledger-peer channel list --peerAddresses localhost:7051 \\\n    \
        --tlsRootCertFiles organizations/hospital1/tlsca/tlsca-cert.pem"
    )]
    List {
        #[command(flatten)]
        target: PeerTarget,
    },
    /// Fetch a block from the ordering service: newest, oldest, config (the newest
    /// configuration block) or a block number.
    #[command(
        after_help = "Example:\n  medledger-peer channel fetch config config_block.pb -o localhost:7050 -c medchannel \\\n    \
        --cafile organizations/orderer/tlsca/tlsca-cert.pem"
    )]
    Fetch {
        /// newest, oldest, config, or a block number.
        which: String,
        /// Where to write the block.
        output: PathBuf,
        #[command(flatten)]
        target: config::OrdererTarget,
    },
    /// Add your signature (as an organisation's admin) to a configuration update file, in place.
    #[command(
        after_help = "Example:\n  CORE_PEER_LOCALMSPID=Hospital2MSP CORE_PEER_MSPCONFIGPATH=organizations/hospital2/users/admin/msp \\\n  \
        medledger-peer channel signconfigtx -f update.pb"
    )]
    Signconfigtx {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// The channel (read from the update when not given).
        #[arg(short = 'c', long = "channelID")]
        channel: Option<String>,
        #[arg(long, env = "CORE_PEER_MSPCONFIGPATH")]
        mspdir: PathBuf,
        #[arg(long, env = "CORE_PEER_LOCALMSPID")]
        mspid: String,
    },
    /// Sign a configuration update and submit it to the ordering service.
    #[command(
        after_help = "Example:\n  CORE_PEER_LOCALMSPID=Hospital1MSP CORE_PEER_MSPCONFIGPATH=organizations/hospital1/users/admin/msp \\\n  \
        medledger-peer channel update -f update.pb -c medchannel -o localhost:7050 --cafile tlsca-cert.pem"
    )]
    Update {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[command(flatten)]
        target: config::OrdererTarget,
    },
}

#[derive(Subcommand, Debug)]
enum LifecycleCommand {
    /// Chaincode packages and definitions.
    #[command(subcommand)]
    Chaincode(LifecycleChaincode),
}

/// Where the peer is and who signs.
#[derive(Args, Debug, Clone)]
struct PeerTarget {
    /// The peer (host:port).
    #[arg(long = "peerAddresses")]
    peer_address: String,
    /// The TLS CA certificate of the peer; without it the connection is plain TCP.
    #[arg(long = "tlsRootCertFiles")]
    tls_root: Option<PathBuf>,
    /// MSP folder of the signing identity.
    #[arg(long, env = "CORE_PEER_MSPCONFIGPATH")]
    mspdir: PathBuf,
    /// MSP id of the signing identity.
    #[arg(long, env = "CORE_PEER_LOCALMSPID")]
    mspid: String,
}

/// A chaincode definition's parameters, as Fabric's CLI takes them.
#[derive(Args, Debug, Clone)]
struct DefinitionArgs {
    /// Channel.
    #[arg(short = 'C', long = "channelID")]
    channel: String,
    /// Chaincode name.
    #[arg(short = 'n', long = "name")]
    name: String,
    /// Chaincode version.
    #[arg(short = 'v', long = "version")]
    version: String,
    /// The definition's sequence: 1 for the first definition, +1 for each change.
    #[arg(long)]
    sequence: i64,
    /// Endorsement policy in Fabric's policy language (default: the channel's
    /// /Channel/Application/Endorsement, a majority of organisations).
    #[arg(long = "signature-policy")]
    signature_policy: Option<String>,
    /// Endorsement policy as a channel policy path instead.
    #[arg(long = "channel-config-policy")]
    channel_config_policy: Option<String>,
    /// Fabric `collections_config.json` of the chaincode's private data collections.
    #[arg(long = "collections-config")]
    collections_config: Option<PathBuf>,
}

mod config;
mod lifecycle;
mod proof;

use lifecycle::lifecycle;
pub use proof::export as export_proof;

#[derive(Subcommand, Debug)]
enum LifecycleChaincode {
    /// Write a chaincode-as-a-service package (metadata.json + code.tar.gz with connection.json).
    #[command(
        after_help = "Example:\n  medledger-peer lifecycle chaincode package medical.tar.gz --label medical_1.0 --address 127.0.0.1:9998"
    )]
    Package {
        /// Output file.
        output: PathBuf,
        #[arg(long)]
        label: String,
        /// Where the chaincode server listens (host:port).
        #[arg(long)]
        address: String,
        /// PEM of the CA of the chaincode server's TLS certificate (TLS is off without it).
        #[arg(long = "tls-root-cert")]
        tls_root_cert: Option<PathBuf>,
    },
    /// Install a package on a peer (as an admin of the peer's organisation); prints its package id.
    #[command(
        after_help = "Example:\n  CORE_PEER_LOCALMSPID=Hospital1MSP CORE_PEER_MSPCONFIGPATH=organizations/hospital1/users/admin/msp \\\n  \
        medledger-peer lifecycle chaincode install medical.tar.gz --peerAddresses localhost:7051 \\\n    \
        --tlsRootCertFiles organizations/hospital1/tlsca/tlsca-cert.pem"
    )]
    Install {
        package: PathBuf,
        #[command(flatten)]
        target: PeerTarget,
    },
    /// List the packages installed on a peer (as an admin of the peer's organisation).
    #[command(
        after_help = "Example:\n  medledger-peer lifecycle chaincode queryinstalled --peerAddresses localhost:7051 \\\n    \
        --tlsRootCertFiles organizations/hospital1/tlsca/tlsca-cert.pem"
    )]
    Queryinstalled {
        #[command(flatten)]
        target: PeerTarget,
    },
    /// Approve a definition for your organisation (as its admin), naming the installed package.
    #[command(
        after_help = "Example:\n  medledger-peer lifecycle chaincode approveformyorg -C medchannel -n medical -v 1.0 --sequence 1 \\\n    \
        --package-id medical_1.0:3f2a... --signature-policy \"OR('Hospital1MSP.peer','Hospital2MSP.peer')\" \\\n    \
        --collections-config collections_config.json --peerAddresses localhost:7051 --tlsRootCertFiles tlsca.pem"
    )]
    Approveformyorg {
        #[command(flatten)]
        def: DefinitionArgs,
        /// The installed package this organisation's peers run.
        #[arg(long = "package-id")]
        package_id: String,
        #[command(flatten)]
        target: PeerTarget,
    },
    /// Which organisations have approved exactly this definition.
    #[command(
        after_help = "Example:\n  medledger-peer lifecycle chaincode checkcommitreadiness -C medchannel -n medical -v 1.0 --sequence 1 \\\n    \
        --signature-policy \"OR('Hospital1MSP.peer','Hospital2MSP.peer')\" --collections-config collections_config.json \\\n    \
        --peerAddresses localhost:7051 --tlsRootCertFiles tlsca.pem"
    )]
    Checkcommitreadiness {
        #[command(flatten)]
        def: DefinitionArgs,
        #[command(flatten)]
        target: PeerTarget,
    },
    /// Commit a definition approved by enough organisations (the LifecycleEndorsement policy).
    #[command(
        after_help = "Example:\n  medledger-peer lifecycle chaincode commit -C medchannel -n medical -v 1.0 --sequence 1 \\\n    \
        --signature-policy \"OR('Hospital1MSP.peer','Hospital2MSP.peer')\" --collections-config collections_config.json \\\n    \
        --peerAddresses localhost:7051 --tlsRootCertFiles tlsca.pem"
    )]
    Commit {
        #[command(flatten)]
        def: DefinitionArgs,
        #[command(flatten)]
        target: PeerTarget,
    },
    /// Show a committed definition and who approved it.
    #[command(
        after_help = "Example:\n  medledger-peer lifecycle chaincode querycommitted -C medchannel -n medical \\\n    \
        --peerAddresses localhost:7051 --tlsRootCertFiles tlsca.pem"
    )]
    Querycommitted {
        #[arg(short = 'C', long = "channelID")]
        channel: String,
        /// The chaincode; every committed definition when left out.
        #[arg(short = 'n', long = "name")]
        name: Option<String>,
        #[command(flatten)]
        target: PeerTarget,
    },
    /// Show what your organisation approved for a chaincode (the newest approval, or `--sequence`).
    #[command(
        after_help = "Example:\n  medledger-peer lifecycle chaincode queryapproved -C medchannel -n medical \\\n    \
        --peerAddresses localhost:7051 --tlsRootCertFiles tlsca.pem"
    )]
    Queryapproved {
        #[arg(short = 'C', long = "channelID")]
        channel: String,
        #[arg(short = 'n', long = "name")]
        name: String,
        #[arg(long, default_value_t = 0)]
        sequence: i64,
        #[command(flatten)]
        target: PeerTarget,
    },
    /// Write an installed package to a folder (as an admin of the peer's organisation).
    #[command(
        after_help = "Example:\n  medledger-peer lifecycle chaincode getinstalledpackage --package-id medical_1.0:3f2a... \\\n    \
        --output-directory . --peerAddresses localhost:7051 --tlsRootCertFiles tlsca.pem"
    )]
    Getinstalledpackage {
        #[arg(long = "package-id")]
        package_id: String,
        #[arg(long = "output-directory", default_value = ".")]
        output_directory: PathBuf,
        #[command(flatten)]
        target: PeerTarget,
    },
}

#[derive(Subcommand, Debug)]
enum ChaincodeCommand {
    /// Endorse, submit and wait for the commit of a transaction.
    #[command(
        after_help = "Example:\n  CORE_PEER_LOCALMSPID=Hospital1MSP CORE_PEER_MSPCONFIGPATH=organizations/hospital1/users/doctor1/msp \\\n  \
        medledger-peer chaincode invoke -C medchannel -n kv -c '{\"function\":\"Put\",\"Args\":[\"k\",\"v\"]}' \\\n    \
        --peerAddresses localhost:7051 --tlsRootCertFiles organizations/hospital1/tlsca/tlsca-cert.pem"
    )]
    Invoke(CallArgs),
    /// Evaluate a transaction on the peer without ordering it.
    #[command(
        after_help = "Example:\n  medledger-peer chaincode query -C medchannel -n kv -c '{\"Args\":[\"Get\",\"k\"]}' \\\n    \
        --peerAddresses localhost:7051 --tlsRootCertFiles organizations/hospital1/tlsca/tlsca-cert.pem"
    )]
    Query(CallArgs),
}

#[derive(Args, Debug)]
struct CallArgs {
    /// Channel.
    #[arg(short = 'C', long = "channelID")]
    channel: String,
    /// Chaincode name.
    #[arg(short = 'n', long = "name")]
    name: String,
    /// `{"function":"F","Args":["a","b"]}` or `{"Args":["F","a","b"]}`.
    #[arg(short = 'c', long = "ctor")]
    ctor: String,
    /// Private inputs as JSON `{"name":"<base64>"}`, base64-encoded values as Fabric's peer CLI
    /// takes them; they reach the chaincode's transient map, never the ledger.
    #[arg(long)]
    transient: Option<String>,
    #[command(flatten)]
    target: PeerTarget,
}

#[derive(Subcommand, Debug)]
enum NodeCommand {
    /// Start the peer with a YAML configuration.
    #[command(
        after_help = "Example:\n  medledger-peer node start --config network/peers/peer0.hospital1/core.yaml\n\n\
        Any top-level scalar field can be overridden by MEDLEDGER_PEER_<FIELD>, e.g.\n  \
        MEDLEDGER_PEER_LISTENADDRESS=127.0.0.1:7051 medledger-peer node start --config core.yaml"
    )]
    Start {
        /// Path of the peer's core.yaml.
        #[arg(long, env = "MEDLEDGER_PEER_CONFIG", default_value = "core.yaml")]
        config: PathBuf,
    },
}

fn parse_ctor(ctor: &str) -> Result<Vec<Vec<u8>>, NodeError> {
    #[derive(serde::Deserialize)]
    struct Ctor {
        #[serde(default)]
        function: Option<String>,
        #[serde(default, rename = "Args", alias = "args")]
        args: Vec<String>,
    }
    let c: Ctor = serde_json::from_str(ctor).map_err(|e| NodeError::Usage(format!("-c: {e}")))?;
    let mut out: Vec<Vec<u8>> = c.function.into_iter().map(String::into_bytes).collect();
    out.extend(c.args.into_iter().map(String::into_bytes));
    if out.is_empty() {
        return Err(NodeError::Usage("-c needs a function name".into()));
    }
    Ok(out)
}

fn result_of(env: &medledger_proto::common::Envelope) -> Option<Vec<u8>> {
    let payload = medledger_proto::common::Payload::decode(env.payload.as_slice()).ok()?;
    let tx = Transaction::decode(payload.data.as_slice()).ok()?;
    let cap = ChaincodeActionPayload::decode(tx.actions.first()?.payload.as_slice()).ok()?;
    let prp =
        ProposalResponsePayload::decode(cap.action?.proposal_response_payload.as_slice()).ok()?;
    Some(
        ChaincodeAction::decode(prp.extension.as_slice())
            .ok()?
            .response?
            .payload,
    )
}

/// A Gateway connection signing as the CLI's identity (also the explorer's connection to its
/// peer: one client of the peer's services, not two).
#[derive(Clone)]
pub struct Session {
    gw: GatewayClient<tonic::transport::Channel>,
    channel: tonic::transport::Channel,
    signer: SigningIdentity,
    address: String,
    tls: bool,
}

/// What a person can do about a failure to reach or talk to a peer, from the transport's words.
fn hint(reason: &str, tls: bool) -> Option<&'static str> {
    let has = |needles: &[&str]| needles.iter().any(|n| reason.contains(n));
    if has(&["Connection refused", "connection refused"]) {
        return Some("is the peer running at that address?");
    }
    if tls
        && has(&[
            "UnknownIssuer",
            "invalid peer certificate",
            "BadSignature",
            "NotValidForName",
        ])
    {
        return Some(
            "the peer's TLS certificate is not signed by the CA in --tlsRootCertFiles, or does \
             not name this host: pass the TLS CA certificate of the peer's organisation",
        );
    }
    if tls
        && has(&[
            "InvalidContentType",
            "corrupt message",
            "CorruptMessage",
            "wrong version",
        ])
    {
        return Some("the peer does not speak TLS: drop --tlsRootCertFiles");
    }
    if !tls
        && has(&[
            "transport error",
            "h2 protocol error",
            "connection reset",
            "broken pipe",
            "frame with invalid size",
        ])
    {
        return Some(
            "the peer requires TLS: pass --tlsRootCertFiles with its organisation's TLS CA certificate",
        );
    }
    None
}

/// A failure to reach or talk to the peer at `address`, with what to try where it is known.
fn peer_error(address: &str, tls: bool, reason: String) -> NodeError {
    let reason = match hint(&reason, tls) {
        Some(h) => format!("{reason} ({h})"),
        None => reason,
    };
    NodeError::Peer {
        address: address.to_owned(),
        reason,
    }
}

impl Session {
    fn fail(&self, s: tonic::Status) -> NodeError {
        // tonic puts the transport's own words in the source chain, not the message.
        let reason = match std::error::Error::source(&s) {
            Some(cause) => format!("{}: {}", status_text(&s), crate::comm::error_chain(cause)),
            None => status_text(&s),
        };
        peer_error(&self.address, self.tls, reason)
    }

    async fn open(t: &PeerTarget) -> Result<Self, NodeError> {
        Self::connect(&t.peer_address, t.tls_root.as_deref(), &t.mspdir, &t.mspid).await
    }

    /// Connects to the peer at `address` (TLS with the CA in `tls_root`, plain TCP without),
    /// signing as the identity of the MSP folder `mspdir`, as `CORE_PEER_*` configure the CLI.
    pub async fn connect(
        address: &str,
        tls_root: Option<&std::path::Path>,
        mspdir: &std::path::Path,
        mspid: &str,
    ) -> Result<Self, NodeError> {
        let signer = SigningIdentity::load(mspdir, mspid).map_err(|e| NodeError::File {
            path: mspdir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let roots = match tls_root {
            Some(p) => vec![super::read(p)?],
            None => vec![],
        };
        let tls = !roots.is_empty();
        let channel = crate::comm::dial(address, &roots, None)
            .await
            .map_err(|e| peer_error(address, tls, e))?;
        Ok(Self {
            address: address.to_owned(),
            tls,
            gw: GatewayClient::new(channel.clone())
                .max_decoding_message_size(DEFAULT_MAX_MESSAGE_BYTES)
                .max_encoding_message_size(DEFAULT_MAX_MESSAGE_BYTES),
            channel,
            signer,
        })
    }

    /// Who signs this session's requests.
    pub fn signer(&self) -> &SigningIdentity {
        &self.signer
    }

    /// The connection, for the peer's other services (Deliver).
    pub fn grpc_channel(&self) -> tonic::transport::Channel {
        self.channel.clone()
    }

    /// Evaluates `inv` through the Gateway: the chaincode's result, or its refusal.
    pub async fn evaluate(&mut self, inv: &Invocation) -> Result<Vec<u8>, NodeError> {
        let (sp, tx_id) = build_signed_proposal(inv, &self.signer)
            .map_err(|e| NodeError::Failed(e.to_string()))?;
        let r = self
            .gw
            .evaluate(EvaluateRequest {
                transaction_id: tx_id,
                channel_id: inv.channel.clone(),
                proposed_transaction: Some(sp),
                target_organizations: vec![],
            })
            .await
            .map_err(|e| self.fail(e))?
            .into_inner();
        Ok(r.result.unwrap_or_default().payload)
    }

    /// Endorse (by `endorsing_orgs`, or as the policy needs), sign, submit, wait for the commit:
    /// the transaction id, its result and block.
    pub async fn submit(
        &mut self,
        inv: &Invocation,
        endorsing_orgs: Vec<String>,
    ) -> Result<(String, Vec<u8>, u64), NodeError> {
        let (sp, tx_id) = build_signed_proposal(inv, &self.signer)
            .map_err(|e| NodeError::Failed(e.to_string()))?;
        let mut env = self
            .gw
            .endorse(EndorseRequest {
                transaction_id: tx_id.clone(),
                channel_id: inv.channel.clone(),
                proposed_transaction: Some(sp),
                endorsing_organizations: endorsing_orgs,
            })
            .await
            .map_err(|e| self.fail(e))?
            .into_inner()
            .prepared_transaction
            .ok_or_else(|| NodeError::Failed("the gateway returned no transaction".into()))?;
        let result = result_of(&env).unwrap_or_default();
        env.signature = self
            .signer
            .sign(&env.payload)
            .map_err(|e| NodeError::Failed(e.to_string()))?;
        self.gw
            .submit(SubmitRequest {
                transaction_id: tx_id.clone(),
                channel_id: inv.channel.clone(),
                prepared_transaction: Some(env),
            })
            .await
            .map_err(|e| self.fail(e))?;
        let request = CommitStatusRequest {
            transaction_id: tx_id.clone(),
            channel_id: inv.channel.clone(),
            identity: self.signer.serialized().to_vec(),
        }
        .encode_to_vec();
        let signature = self
            .signer
            .sign(&request)
            .map_err(|e| NodeError::Failed(e.to_string()))?;
        let status = self
            .gw
            .commit_status(SignedCommitStatusRequest { request, signature })
            .await
            .map_err(|e| self.fail(e))?
            .into_inner();
        if status.result != TxValidationCode::Valid as i32 {
            let code = TxValidationCode::try_from(status.result)
                .map(|c| c.as_str_name())
                .unwrap_or("UNKNOWN");
            return Err(NodeError::Failed(format!(
                "transaction {tx_id} committed as invalid: {code}"
            )));
        }
        Ok((tx_id, result, status.block_number))
    }
}

async fn call(a: CallArgs, invoke: bool) -> Result<(), NodeError> {
    let transient: HashMap<String, Vec<u8>> = match &a.transient {
        Some(t) => {
            use base64::Engine;
            serde_json::from_str::<HashMap<String, String>>(t)
                .map_err(|e| NodeError::Usage(format!("--transient: {e}")))?
                .into_iter()
                .map(|(k, v)| {
                    base64::engine::general_purpose::STANDARD
                        .decode(v.trim())
                        .map(|b| (k.clone(), b))
                        .map_err(|_| {
                            NodeError::Failed(format!(
                                "--transient: the value of {k:?} is not base64 (encode it, e.g. with `base64 -w0`)"
                            ))
                        })
                })
                .collect::<Result<_, _>>()?
        }
        None => HashMap::new(),
    };
    let inv = Invocation {
        channel: a.channel.clone(),
        chaincode: a.name.clone(),
        args: parse_ctor(&a.ctor)?,
        transient,
        is_init: false,
    };
    let mut session = Session::open(&a.target).await?;
    if !invoke {
        println!(
            "{}",
            String::from_utf8_lossy(&session.evaluate(&inv).await?)
        );
        return Ok(());
    }
    let (tx_id, result, block) = session.submit(&inv, vec![]).await?;
    println!(
        "Chaincode invoke successful. result: status:200 payload:\"{}\" txid:{tx_id} block:{block} (VALID)",
        String::from_utf8_lossy(&result),
    );
    Ok(())
}

impl Session {
    /// Sends a proposal addressed to the peer itself (no channel) and returns its response
    /// (qscc, cscc: the channel is their second argument).
    pub async fn ask_peer(
        &self,
        chaincode: &str,
        args: Vec<Vec<u8>>,
    ) -> Result<medledger_proto::protos::Response, NodeError> {
        let inv = Invocation {
            channel: String::new(),
            chaincode: chaincode.into(),
            args,
            transient: HashMap::new(),
            is_init: false,
        };
        let (sp, _) = build_signed_proposal(&inv, &self.signer)
            .map_err(|e| NodeError::Failed(e.to_string()))?;
        let resp = EndorserClient::new(self.channel.clone())
            .max_encoding_message_size(crate::endorsement::MAX_PROPOSAL_BYTES)
            .max_decoding_message_size(DEFAULT_MAX_MESSAGE_BYTES)
            .process_proposal(sp)
            .await
            .map_err(|e| self.fail(e))?
            .into_inner()
            .response
            .unwrap_or_default();
        if resp.status != 200 {
            return Err(NodeError::Failed(format!(
                "proposal failed with status: {} - {}",
                resp.status, resp.message
            )));
        }
        Ok(resp)
    }
}

async fn channel(cmd: ChannelCommand) -> Result<(), NodeError> {
    match cmd {
        ChannelCommand::Join { block, target } => {
            let bytes = std::fs::read(&block).map_err(|e| NodeError::File {
                path: block.clone(),
                reason: e.to_string(),
            })?;
            Session::open(&target)
                .await?
                .ask_peer("cscc", vec![b"JoinChain".to_vec(), bytes])
                .await?;
            println!("Successfully submitted proposal to join channel");
            Ok(())
        }
        ChannelCommand::Fetch {
            which,
            output,
            target,
        } => config::fetch(which, output, target).await,
        ChannelCommand::Signconfigtx {
            file,
            channel,
            mspdir,
            mspid,
        } => config::sign_config_tx(file, channel, mspdir, mspid),
        ChannelCommand::Update { file, target } => config::update(file, target).await,
        ChannelCommand::List { target } => {
            let resp = Session::open(&target)
                .await?
                .ask_peer("cscc", vec![b"GetChannels".to_vec()])
                .await?;
            let list = ChannelQueryResponse::decode(resp.payload.as_slice())
                .map_err(|e| NodeError::Failed(format!("channel list: {e}")))?;
            println!("Channels peers has joined:");
            for c in list.channels {
                println!("{}", c.channel_id);
            }
            Ok(())
        }
    }
}

/// A gateway error with the per-peer details Fabric's gateway attaches (`gateway.ErrorDetail`).
fn status_text(s: &tonic::Status) -> String {
    use medledger_proto::gateway::ErrorDetail;
    let details: Vec<String> = medledger_proto::google::rpc::Status::decode(s.details())
        .map(|rich| {
            rich.details
                .iter()
                .filter_map(|any| ErrorDetail::decode(any.value.as_slice()).ok())
                .map(|d| format!("{} ({}): {}", d.address, d.msp_id, d.message))
                .collect()
        })
        .unwrap_or_default();
    if details.is_empty() {
        s.message().to_owned()
    } else {
        format!("{} [{}]", s.message(), details.join("; "))
    }
}

/// Runs one CLI invocation.
pub async fn run(cli: Cli) -> Result<(), NodeError> {
    match cli.command {
        Command::Node(NodeCommand::Start { config }) => {
            let cfg = PeerConfig::load(&config)?;
            let peer = start(cfg, PluginRegistry::default()).await?;
            println!("peer listening on {}", peer.address);
            let _ = tokio::signal::ctrl_c().await;
            peer.stop().await;
            Ok(())
        }
        Command::Chaincode(ChaincodeCommand::Invoke(a)) => call(a, true).await,
        Command::Chaincode(ChaincodeCommand::Query(a)) => call(a, false).await,
        Command::Lifecycle(LifecycleCommand::Chaincode(c)) => lifecycle(c).await,
        Command::Channel(c) => channel(c).await,
        Command::Config(c) => config::config(c),
        Command::Proof(p) => proof::proof(p).await,
    }
}
