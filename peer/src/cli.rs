//! The `medledger-peer` command line: `node start`, and `chaincode invoke|query` through the
//! Fabric Gateway with the flags a Fabric user knows (`-C`, `-n`, `-c`, `--peerAddresses`,
//! `--tlsRootCertFiles`, `--transient`; identity from `CORE_PEER_MSPCONFIGPATH` and
//! `CORE_PEER_LOCALMSPID`).

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

use crate::node::{NodeError, PeerConfig, start};
use crate::plugins::PluginRegistry;

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
    /// The gateway peer (host:port).
    #[arg(long = "peerAddresses")]
    peer_address: String,
    /// The TLS CA certificate of the peer; without it the connection is plain TCP.
    #[arg(long = "tlsRootCertFiles")]
    tls_root: Option<PathBuf>,
    /// Private inputs as JSON `{"name":"<base64>"}`, base64-encoded values as Fabric's peer CLI
    /// takes them; they reach the chaincode's transient map, never the ledger.
    #[arg(long)]
    transient: Option<String>,
    /// MSP folder of the signing identity.
    #[arg(long, env = "CORE_PEER_MSPCONFIGPATH")]
    mspdir: PathBuf,
    /// MSP id of the signing identity.
    #[arg(long, env = "CORE_PEER_LOCALMSPID")]
    mspid: String,
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
    let c: Ctor = serde_json::from_str(ctor).map_err(|e| NodeError::Config(format!("-c: {e}")))?;
    let mut out: Vec<Vec<u8>> = c.function.into_iter().map(String::into_bytes).collect();
    out.extend(c.args.into_iter().map(String::into_bytes));
    if out.is_empty() {
        return Err(NodeError::Config("-c needs a function name".into()));
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

async fn call(a: CallArgs, invoke: bool) -> Result<(), NodeError> {
    let signer = SigningIdentity::load(&a.mspdir, &a.mspid).map_err(|e| NodeError::File {
        path: a.mspdir.clone(),
        reason: e.to_string(),
    })?;
    let roots = match &a.tls_root {
        Some(p) => vec![std::fs::read(p).map_err(|e| NodeError::File {
            path: p.clone(),
            reason: e.to_string(),
        })?],
        None => vec![],
    };
    let transient: HashMap<String, Vec<u8>> = match &a.transient {
        Some(t) => {
            use base64::Engine;
            serde_json::from_str::<HashMap<String, String>>(t)
                .map_err(|e| NodeError::Config(format!("--transient: {e}")))?
                .into_iter()
                .map(|(k, v)| {
                    base64::engine::general_purpose::STANDARD
                        .decode(v.trim())
                        .map(|b| (k.clone(), b))
                        .map_err(|_| {
                            NodeError::Config(format!(
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
    let (sp, tx_id) =
        build_signed_proposal(&inv, &signer).map_err(|e| NodeError::Config(e.to_string()))?;
    let channel = crate::comm::dial(&a.peer_address, &roots, None)
        .await
        .map_err(NodeError::Config)?;
    let mut gw = GatewayClient::new(channel);
    let fail = |s: tonic::Status| NodeError::Config(status_text(&s));
    if !invoke {
        let r = gw
            .evaluate(EvaluateRequest {
                transaction_id: tx_id,
                channel_id: a.channel,
                proposed_transaction: Some(sp),
                target_organizations: vec![],
            })
            .await
            .map_err(fail)?
            .into_inner();
        println!(
            "{}",
            String::from_utf8_lossy(&r.result.unwrap_or_default().payload)
        );
        return Ok(());
    }
    let mut env = gw
        .endorse(EndorseRequest {
            transaction_id: tx_id.clone(),
            channel_id: a.channel.clone(),
            proposed_transaction: Some(sp),
            endorsing_organizations: vec![],
        })
        .await
        .map_err(fail)?
        .into_inner()
        .prepared_transaction
        .ok_or_else(|| NodeError::Config("the gateway returned no transaction".into()))?;
    let result = result_of(&env).unwrap_or_default();
    env.signature = signer
        .sign(&env.payload)
        .map_err(|e| NodeError::Config(e.to_string()))?;
    gw.submit(SubmitRequest {
        transaction_id: tx_id.clone(),
        channel_id: a.channel.clone(),
        prepared_transaction: Some(env),
    })
    .await
    .map_err(fail)?;
    let request = CommitStatusRequest {
        transaction_id: tx_id.clone(),
        channel_id: a.channel,
        identity: signer.serialized().to_vec(),
    }
    .encode_to_vec();
    let signature = signer
        .sign(&request)
        .map_err(|e| NodeError::Config(e.to_string()))?;
    let status = gw
        .commit_status(SignedCommitStatusRequest { request, signature })
        .await
        .map_err(fail)?
        .into_inner();
    let code = TxValidationCode::try_from(status.result)
        .map(|c| c.as_str_name())
        .unwrap_or("UNKNOWN");
    if status.result != TxValidationCode::Valid as i32 {
        return Err(NodeError::Config(format!(
            "transaction {tx_id} committed as invalid: {code}"
        )));
    }
    println!(
        "Chaincode invoke successful. result: status:200 payload:\"{}\" txid:{tx_id} block:{} ({code})",
        String::from_utf8_lossy(&result),
        status.block_number
    );
    Ok(())
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
    }
}
