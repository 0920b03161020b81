//! `medledger-peer proof export|verify`: a record's provenance as a self-contained bundle
//! (`medledger_common::proof`), and its offline verification against the channel's genesis
//! block, trusting no peer.

use std::path::PathBuf;

use medledger_common::proof::{FORMAT, ProofBundle, WriteClaim, verify};
use medledger_common::protoutil::{block_envelopes, signed_last_config};
use medledger_proto::common::Block;

use super::*;

/// `medledger-peer proof ...`.
#[derive(Subcommand, Debug)]
pub(super) enum ProofCommand {
    /// Export a medical record's versions as a proof bundle (JSON), as an identity allowed to
    /// read its provenance (staff, or the patient).
    #[command(
        after_help = "Example:\n  medledger-peer proof export --record R-100 -C medchannel -n medical --output proof.json \\\n    \
        --peerAddresses localhost:7051 --tlsRootCertFiles tlsca.pem"
    )]
    Export {
        /// A medical record: every version of its entry.
        #[arg(long, required_unless_present = "tx")]
        record: Option<String>,
        /// A transaction (a consent, an access request, a certificate...): every public write
        /// it made. Repeat for several.
        #[arg(long = "tx")]
        tx: Vec<String>,
        #[arg(short = 'C', long = "channelID")]
        channel: String,
        #[arg(short = 'n', long = "name", default_value = "medical")]
        chaincode: String,
        #[arg(long)]
        output: PathBuf,
        #[command(flatten)]
        target: PeerTarget,
    },
    /// Verify a bundle with nothing but the channel's genesis block; with `--content` and
    /// `--salt`, also that this content is what the newest version committed to.
    #[command(
        after_help = "Example:\n  medledger-peer proof verify --bundle proof.json --genesis channel-artifacts/medchannel.block"
    )]
    Verify {
        #[arg(long)]
        bundle: PathBuf,
        #[arg(long)]
        genesis: PathBuf,
        /// A file with the content exactly as recorded.
        #[arg(long)]
        content: Option<PathBuf>,
        /// The version's salt (hex), as ReadRecord returns it.
        #[arg(long)]
        salt: Option<String>,
    },
}

/// Runs one `proof` subcommand.
pub(super) async fn proof(cmd: ProofCommand) -> Result<(), NodeError> {
    match cmd {
        ProofCommand::Export {
            record,
            tx,
            channel,
            chaincode,
            output,
            target,
        } => {
            let bundle = export(record.as_deref(), &tx, &channel, &chaincode, &target).await?;
            let json =
                serde_json::to_vec_pretty(&bundle).map_err(|e| NodeError::Failed(e.to_string()))?;
            std::fs::write(&output, json).map_err(|e| NodeError::File {
                path: output.clone(),
                reason: e.to_string(),
            })?;
            println!(
                "Proof of {} write(s) in {} block(s), {} configuration block(s), written to {}",
                bundle.claims.len(),
                bundle.blocks.len(),
                bundle.config_blocks.len(),
                output.display()
            );
            Ok(())
        }
        ProofCommand::Verify {
            bundle,
            genesis,
            content,
            salt,
        } => verify_bundle(bundle, genesis, content, salt),
    }
}

async fn export(
    record: Option<&str>,
    txs: &[String],
    channel: &str,
    chaincode: &str,
    target: &PeerTarget,
) -> Result<ProofBundle, NodeError> {
    let mut session = Session::open(target).await?;
    // (transaction, block, the one key claimed or every public write)
    let mut wanted: Vec<(String, u64, Option<String>)> = Vec::new();
    if let Some(record) = record {
        let provenance = session
            .evaluate(&Invocation {
                channel: channel.to_owned(),
                chaincode: chaincode.to_owned(),
                args: vec![b"GetRecordProvenance".to_vec(), record.as_bytes().to_vec()],
                transient: HashMap::new(),
                is_init: false,
            })
            .await?;
        let provenance: serde_json::Value = serde_json::from_slice(&provenance)
            .map_err(|e| NodeError::Failed(format!("provenance: {e}")))?;
        let versions = provenance["versions"]
            .as_array()
            .ok_or_else(|| NodeError::Failed("provenance without versions".into()))?;
        for v in versions {
            let (Some(tx_id), Some(n)) = (v["txId"].as_str(), v["block"].as_u64()) else {
                return Err(NodeError::Failed("a version without txId or block".into()));
            };
            wanted.push((tx_id.to_owned(), n, Some(format!("record/{record}"))));
        }
    }
    for tx_id in txs {
        let resp = session
            .ask_peer(
                "qscc",
                vec![
                    b"GetBlockByTxID".to_vec(),
                    channel.as_bytes().to_vec(),
                    tx_id.as_bytes().to_vec(),
                ],
            )
            .await?;
        let block = Block::decode(resp.payload.as_slice())
            .map_err(|e| NodeError::Failed(format!("block of {tx_id}: {e}")))?;
        let n = block.header.as_ref().map(|h| h.number).unwrap_or_default();
        wanted.push((tx_id.clone(), n, None));
    }
    let fetch = |n: u64| {
        let session = &session;
        async move {
            let resp = session
                .ask_peer(
                    "qscc",
                    vec![
                        b"GetBlockByNumber".to_vec(),
                        channel.as_bytes().to_vec(),
                        n.to_string().into_bytes(),
                    ],
                )
                .await?;
            Block::decode(resp.payload.as_slice())
                .map_err(|e| NodeError::Failed(format!("block {n}: {e}")))
        }
    };
    let mut blocks: Vec<Block> = Vec::new();
    let mut claims = Vec::new();
    for (tx_id, n, key) in wanted {
        if !blocks
            .iter()
            .any(|b| b.header.as_ref().is_some_and(|h| h.number == n))
        {
            blocks.push(fetch(n).await?);
        }
        let block = blocks
            .iter()
            .find(|b| b.header.as_ref().is_some_and(|h| h.number == n))
            .ok_or_else(|| NodeError::Failed(format!("block {n} missing")))?;
        let writes = writes_of(block, &tx_id, chaincode);
        let chosen: Vec<(String, String)> = match &key {
            Some(k) => writes.into_iter().filter(|(wk, _)| wk == k).collect(),
            None => writes,
        };
        if chosen.is_empty() {
            return Err(NodeError::Failed(format!(
                "transaction {tx_id} wrote nothing to {}",
                key.as_deref().unwrap_or("the chaincode's public state")
            )));
        }
        for (key, value) in chosen {
            claims.push(WriteClaim {
                block: n,
                tx_id: tx_id.clone(),
                namespace: chaincode.to_owned(),
                key,
                value,
            });
        }
    }
    // Configuration history: follow LAST_CONFIG back from the newest the blocks name.
    let mut config_numbers = Vec::new();
    let mut next = blocks
        .iter()
        .filter_map(signed_last_config)
        .max()
        .unwrap_or(0);
    while next > 0 {
        config_numbers.push(next);
        next = signed_last_config(&fetch(next - 1).await?).unwrap_or(0);
    }
    config_numbers.push(0);
    config_numbers.reverse();
    let mut config_blocks = Vec::new();
    for n in config_numbers {
        config_blocks.push(hex::encode(fetch(n).await?.encode_to_vec()));
    }
    Ok(ProofBundle {
        format: FORMAT.to_owned(),
        channel: channel.to_owned(),
        config_blocks,
        blocks: blocks
            .iter()
            .map(|b| hex::encode(b.encode_to_vec()))
            .collect(),
        claims,
    })
}

/// The public writes (key, UTF-8 value) transaction `tx_id` of `block` made to `namespace`.
fn writes_of(block: &Block, tx_id: &str, namespace: &str) -> Vec<(String, String)> {
    block_envelopes(block)
        .iter()
        .map(|e| crate::channel::blocks::chaincode_actions(e))
        .find(|(id, _)| id == tx_id)
        .map(|(_, actions)| actions)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|a| medledger_proto::rwset::TxReadWriteSet::decode(a.results.as_slice()).ok())
        .flat_map(|rw| rw.ns_rwset)
        .filter(|ns| ns.namespace == namespace)
        .filter_map(|ns| medledger_proto::kvrwset::KvrwSet::decode(ns.rwset.as_slice()).ok())
        .flat_map(|kv| kv.writes)
        .filter(|w| !w.is_delete)
        .filter_map(|w| Some((w.key, String::from_utf8(w.value).ok()?)))
        .collect()
}

fn verify_bundle(
    bundle: PathBuf,
    genesis: PathBuf,
    content: Option<PathBuf>,
    salt: Option<String>,
) -> Result<(), NodeError> {
    let b: ProofBundle =
        serde_json::from_slice(&super::super::read(&bundle)?).map_err(|e| NodeError::File {
            path: bundle.clone(),
            reason: format!("not a proof bundle: {e}"),
        })?;
    let genesis_block =
        Block::decode(super::super::read(&genesis)?.as_slice()).map_err(|e| NodeError::File {
            path: genesis.clone(),
            reason: format!("not a block: {e}"),
        })?;
    let proven =
        verify(&b, &genesis_block).map_err(|e| NodeError::Failed(format!("proof refused: {e}")))?;
    println!(
        "Verified against the genesis block of channel {} and {} later configuration block(s):",
        b.channel,
        b.config_blocks.len().saturating_sub(1)
    );
    for p in &proven {
        println!(
            "  block {} (signed by {} consenters) tx {} at {}: {} by {}@{}, endorsed by {}",
            p.claim.block,
            p.block_signers,
            p.claim.tx_id,
            p.timestamp,
            p.claim.key,
            p.creator_subject,
            p.creator_msp,
            p.endorsers.join(", ")
        );
        println!("    wrote {}", p.claim.value);
    }
    if let (Some(content), Some(salt)) = (content, salt) {
        // The newest version the bundle proves (a bundle cannot prove that no newer one exists).
        let newest = proven
            .iter()
            .filter(|p| p.claim.key.starts_with("record/") && !p.claim.key[7..].contains('/'))
            .max_by_key(|p| p.claim.block)
            .ok_or_else(|| NodeError::Failed("the bundle proves no record version".into()))?;
        let entry: serde_json::Value = serde_json::from_str(&newest.claim.value)
            .map_err(|e| NodeError::Failed(format!("record entry: {e}")))?;
        let salt = hex::decode(salt.trim())
            .ok()
            .filter(|s| s.len() == 32)
            .ok_or_else(|| NodeError::Usage("--salt takes 32 bytes as 64 hex characters".into()))?;
        let hash = hex::encode(medledger_common::crypto::sha256_concat(&[
            &salt,
            &super::super::read(&content)?,
        ]));
        if entry["contentHash"].as_str() != Some(hash.as_str()) {
            return Err(NodeError::Failed(format!(
                "proof refused: the content and salt hash to {hash}, not to the committed contentHash {}",
                entry["contentHash"]
            )));
        }
        println!(
            "  the content is what version {} (the newest in the bundle) committed to ({hash})",
            entry["version"]
        );
    }
    println!("Proof verified.");
    Ok(())
}
