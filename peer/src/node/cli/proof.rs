//! `medledger-peer proof export|verify`: a record's provenance as a self-contained bundle
//! (`medledger_common::proof`), and its offline verification against the channel's genesis
//! block, trusting no peer.

use std::path::PathBuf;

use medledger_common::crypto::sha256;
use medledger_common::proof::{FORMAT, PrivateWriteClaim, ProofBundle, WriteClaim, verify};
use medledger_common::protoutil::{block_envelopes, signed_last_config};
use medledger_medical_chaincode::records::{Provenance, content_key};
use medledger_medical_chaincode::sharing::shared_content_key;
use medledger_proto::common::Block;
use medledger_proto::kvrwset::{HashedRwSet, KvWriteHash, KvrwSet};
use medledger_proto::rwset::TxReadWriteSet;

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
        /// Also write what was verified as FHIR R4 resources (a Bundle of Provenance for
        /// versions, shares and erasures, AuditEvent for reads, Consent for consents).
        #[arg(long)]
        fhir: Option<PathBuf>,
        /// The medical chaincode: only its writes are read as records, consents and accesses.
        #[arg(short = 'n', long = "name", default_value = "medical")]
        chaincode: String,
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
            let mut session = Session::open(&target).await?;
            let bundle = export(&mut session, record.as_deref(), &tx, &channel, &chaincode).await?;
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
            fhir,
            chaincode,
        } => verify_bundle(bundle, genesis, content, salt, fhir, chaincode),
    }
}

/// The proof bundle of a record's versions and trail (`record`) and of transactions `txs`,
/// gathered through `session`'s peer (the CLI's `proof export`, the explorer's download).
pub async fn export(
    session: &mut Session,
    record: Option<&str>,
    txs: &[String],
    channel: &str,
    chaincode: &str,
) -> Result<ProofBundle, NodeError> {
    // (transaction, its block if known)
    let mut wanted: Vec<(String, Option<u64>)> = Vec::new();
    // Private keys the exporter can name: the verifier checks them against the key hashes.
    let mut private_keys: Vec<String> = Vec::new();
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
        let provenance: Provenance = serde_json::from_slice(&provenance)
            .map_err(|e| NodeError::Failed(format!("provenance: {e}")))?;
        for v in &provenance.versions {
            wanted.push((v.tx_id.clone(), Some(v.block)));
            private_keys.push(content_key(record, v.version));
        }
        // The access log entries name their transaction, not its block.
        wanted.extend(provenance.reads.iter().map(|r| (r.tx_id.clone(), None)));
        for s in &provenance.shares {
            wanted.push((s.tx_id.clone(), Some(s.block)));
            private_keys.push(shared_content_key(record, &s.grantee_msp));
        }
        wanted.extend(
            provenance
                .consents
                .iter()
                .map(|c| (c.tx_id.clone(), Some(c.block))),
        );
    }
    wanted.extend(txs.iter().map(|t| (t.clone(), None)));
    let mut seen = std::collections::HashSet::new();
    wanted.retain(|(tx, _)| seen.insert(tx.clone()));

    let fetch = |args: Vec<Vec<u8>>| {
        let session = &*session;
        async move {
            let what = String::from_utf8_lossy(&args[0]).into_owned();
            let resp = session.ask_peer("qscc", args).await?;
            Block::decode(resp.payload.as_slice())
                .map_err(|e| NodeError::Failed(format!("{what}: {e}")))
        }
    };
    let by_number = |n: u64| {
        fetch(vec![
            b"GetBlockByNumber".to_vec(),
            channel.as_bytes().to_vec(),
            n.to_string().into_bytes(),
        ])
    };
    let mut blocks: Vec<Block> = Vec::new();
    let mut claims = Vec::new();
    let mut private_claims = Vec::new();
    for (tx_id, n) in wanted {
        let n = match n {
            Some(n) => n,
            None => {
                let block = fetch(vec![
                    b"GetBlockByTxID".to_vec(),
                    channel.as_bytes().to_vec(),
                    tx_id.as_bytes().to_vec(),
                ])
                .await?;
                let n = block.header.as_ref().map(|h| h.number).unwrap_or_default();
                if !blocks.iter().any(|b| number_of(b) == Some(n)) {
                    blocks.push(block);
                }
                n
            }
        };
        if !blocks.iter().any(|b| number_of(b) == Some(n)) {
            blocks.push(by_number(n).await?);
        }
        let block = blocks
            .iter()
            .find(|b| number_of(b) == Some(n))
            .ok_or_else(|| NodeError::Failed(format!("block {n} missing")))?;
        let TxWrites { public, private } = writes_of(block, &tx_id, chaincode);
        if public.is_empty() && private.is_empty() {
            return Err(NodeError::Failed(format!(
                "transaction {tx_id} in block {n} wrote nothing to chaincode {chaincode}"
            )));
        }
        for (key, value) in public {
            claims.push(WriteClaim {
                block: n,
                tx_id: tx_id.clone(),
                namespace: chaincode.to_owned(),
                key,
                value,
            });
        }
        for (collection, w) in private {
            let key = private_keys
                .iter()
                .find(|k| sha256(k.as_bytes()).as_slice() == w.key_hash.as_slice())
                .cloned();
            private_claims.push(PrivateWriteClaim {
                block: n,
                tx_id: tx_id.clone(),
                namespace: chaincode.to_owned(),
                collection,
                key,
                key_hash: hex::encode(&w.key_hash),
                value_hash: (!w.is_delete && !w.is_purge).then(|| hex::encode(&w.value_hash)),
                erased: w.is_purge,
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
        next = signed_last_config(&by_number(next - 1).await?).unwrap_or(0);
    }
    config_numbers.push(0);
    config_numbers.reverse();
    let mut config_blocks = Vec::new();
    for n in config_numbers {
        config_blocks.push(hex::encode(by_number(n).await?.encode_to_vec()));
    }
    blocks.sort_by_key(number_of);
    Ok(ProofBundle {
        format: FORMAT.to_owned(),
        channel: channel.to_owned(),
        config_blocks,
        blocks: blocks
            .iter()
            .map(|b| hex::encode(b.encode_to_vec()))
            .collect(),
        claims,
        private_claims,
    })
}

fn number_of(block: &Block) -> Option<u64> {
    block.header.as_ref().map(|h| h.number)
}

/// What a transaction wrote to one namespace.
struct TxWrites {
    /// (key, UTF-8 value)
    public: Vec<(String, String)>,
    /// (collection, hashed write)
    private: Vec<(String, KvWriteHash)>,
}

/// What transaction `tx_id` of `block` wrote to `namespace`.
fn writes_of(block: &Block, tx_id: &str, namespace: &str) -> TxWrites {
    let sets: Vec<_> = block_envelopes(block)
        .iter()
        .map(|e| crate::channel::blocks::chaincode_actions(e))
        .find(|(id, _)| id == tx_id)
        .map(|(_, actions)| actions)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|a| TxReadWriteSet::decode(a.results.as_slice()).ok())
        .flat_map(|rw| rw.ns_rwset)
        .filter(|ns| ns.namespace == namespace)
        .collect();
    let public = sets
        .iter()
        .filter_map(|ns| KvrwSet::decode(ns.rwset.as_slice()).ok())
        .flat_map(|kv| kv.writes)
        .filter(|w| !w.is_delete)
        .filter_map(|w| Some((w.key, String::from_utf8(w.value).ok()?)))
        .collect();
    let private = sets
        .iter()
        .flat_map(|ns| &ns.collection_hashed_rwset)
        .filter_map(|c| {
            let h = HashedRwSet::decode(c.hashed_rwset.as_slice()).ok()?;
            Some((c.collection_name.clone(), h.hashed_writes))
        })
        .flat_map(|(c, writes)| writes.into_iter().map(move |w| (c.clone(), w)))
        .collect();
    TxWrites { public, private }
}

fn verify_bundle(
    bundle: PathBuf,
    genesis: PathBuf,
    content: Option<PathBuf>,
    salt: Option<String>,
    fhir: Option<PathBuf>,
    chaincode: String,
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
    let verified =
        verify(&b, &genesis_block).map_err(|e| NodeError::Failed(format!("proof refused: {e}")))?;
    println!(
        "Verified against the genesis block of channel {} and {} later configuration block(s):",
        b.channel,
        b.config_blocks.len().saturating_sub(1)
    );
    let describe = |tx: &medledger_common::proof::ProvenTransaction| {
        format!(
            "block {} (signed by {} consenters) tx {} at {} by {}@{}, endorsed by {}",
            tx.block,
            tx.block_signers,
            tx.tx_id,
            tx.timestamp,
            tx.creator_subject,
            tx.creator_msp,
            tx.endorsers().join(", ")
        )
    };
    for p in &verified.claims {
        println!(
            "  {}: {}/{}",
            describe(&p.tx),
            p.claim.namespace,
            printable(&p.claim.key)
        );
        println!("    wrote {}", p.claim.value);
    }
    for p in &verified.private_claims {
        let c = &p.claim;
        let key = c
            .key
            .as_deref()
            .map(|k| format!("{k} (key hash {})", c.key_hash))
            .unwrap_or_else(|| format!("key hash {}", c.key_hash));
        println!("  {}:", describe(&p.tx));
        match (&c.value_hash, c.erased) {
            (_, true) => {
                let earlier: Vec<String> = verified
                    .private_claims
                    .iter()
                    .filter(|w| {
                        w.claim.key_hash == c.key_hash
                            && w.claim.collection == c.collection
                            && w.tx.block <= p.tx.block
                    })
                    .filter_map(|w| {
                        Some(format!(
                            "{} (block {})",
                            w.claim.value_hash.as_ref()?,
                            w.tx.block
                        ))
                    })
                    .collect();
                println!(
                    "    ERASED private {key} of collection {} at {} (block {}); the value is gone, its hash stays: {}",
                    c.collection,
                    p.tx.timestamp,
                    p.tx.block,
                    if earlier.is_empty() {
                        "no earlier write in this bundle".to_owned()
                    } else {
                        format!("a value with hash {} existed", earlier.join(", "))
                    }
                );
            }
            (Some(hash), false) => println!(
                "    wrote private {key} of collection {}: a value with hash {hash}",
                c.collection
            ),
            (None, false) => println!("    deleted private {key} of collection {}", c.collection),
        }
    }
    if let (Some(content), Some(salt)) = (content, salt) {
        // The newest version the bundle proves (a bundle cannot prove that no newer one exists).
        let newest = verified
            .claims
            .iter()
            .filter(|p| p.claim.namespace == chaincode)
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
    if let Some(path) = fhir {
        let resources =
            medledger_medical_chaincode::fhir::bundle(&b.channel, &chaincode, &verified)
                .map_err(|e| NodeError::Failed(format!("FHIR export: {e}")))?;
        let count = resources["entry"].as_array().map_or(0, Vec::len);
        let json =
            serde_json::to_vec_pretty(&resources).map_err(|e| NodeError::Failed(e.to_string()))?;
        std::fs::write(&path, json).map_err(|e| NodeError::File {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        println!(
            "  {count} FHIR R4 resources (Provenance, AuditEvent, Consent) of what was verified written to {}",
            path.display()
        );
    }
    println!(
        "  (these transactions were endorsed by channel peers and ordered in blocks the \
         consenters signed; that each was VALID is the exporting peer's word, since the orderers \
         do not sign validation flags, and endorsements are checked as channel peers', not \
         against the chaincode's own policy)"
    );
    println!("Proof verified.");
    Ok(())
}

/// A ledger key as a person reads it: composite keys' NUL separators shown as `/`.
fn printable(key: &str) -> String {
    key.trim_matches('\u{0}').replace('\u{0}', "/")
}
