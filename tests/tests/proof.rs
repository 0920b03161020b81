//! Offline provenance proofs: a record created, amended and its content checked, exported by
//! `medledger-peer proof export` and verified with nothing but the genesis block (library and
//! `medledger-peer proof verify`), also across a channel configuration update; every single
//! tampering of the bundle is caught.

use std::collections::HashMap;
use std::path::Path;

use medledger_common::configtx::{compute_update, sign_config_update, update_envelope};
use medledger_common::proof::{ProofBundle, ProofError, verify};
use medledger_proto::common::{Block, ConfigUpdateEnvelope, Status};
use medledger_tests::peernet::{CHAINCODE, CHANNEL, PeerNet};
use prost::Message;

const V1: &str = r#"{"resourceType":"Observation","status":"final","valueString":"128/82"}"#;
const V2: &str = r#"{ "status":"amended", "resourceType":"Observation", "valueString":"131/85" }"#;

fn cli(bin: &Path, mspid: &str, msp: &Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(bin)
        .args(args)
        .env("CORE_PEER_LOCALMSPID", mspid)
        .env("CORE_PEER_MSPCONFIGPATH", msp)
        .output()
        .expect("medledger-peer runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A batch-size update signed by the orderer organisation's admin: a configuration block the
/// proof must replay.
async fn update_configuration(net: &PeerNet) -> anyhow::Result<()> {
    let current = net.channel(0).await?.config();
    let mut next = (*current.source).clone();
    let orderer = next
        .channel_group
        .as_mut()
        .and_then(|g| g.groups.get_mut("Orderer"))
        .ok_or_else(|| anyhow::anyhow!("no Orderer group"))?;
    let mut batch = current.batch_size;
    batch.max_message_count += 1;
    orderer
        .values
        .get_mut("BatchSize")
        .ok_or_else(|| anyhow::anyhow!("no BatchSize"))?
        .value = batch.encode_to_vec();
    let update = compute_update(CHANNEL, &current.source, &next)?;
    let admin = net.orderers.org.identity("oadmin", "admin", &[])?;
    let bytes = update.encode_to_vec();
    let env = update_envelope(
        CHANNEL,
        &ConfigUpdateEnvelope {
            signatures: vec![sign_config_update(&bytes, &admin)?],
            config_update: bytes,
        },
        &admin,
    )?;
    let r = net.orderers.broadcast(1, env).await?;
    anyhow::ensure!(r.status == Status::Success as i32, "{}", r.info);
    let ch = net.channel(0).await?;
    for _ in 0..200 {
        if ch.config().sequence == current.sequence + 1 {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    anyhow::bail!("the configuration update never took effect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_proof_verifies_offline_and_every_tampering_is_caught() -> anyhow::Result<()> {
    let bin = tokio::task::spawn_blocking(|| {
        medledger_tests::workspace_binary("medledger-peer", "medledger-peer")
    })
    .await??;
    let net = medledger_tests::peernet::start_medical(2).await?;
    let dir = tempfile::tempdir()?;
    let doctor = net.orgs[0].identity("doctor1", "client", &[("role", "doctor")])?;
    let mut gw = net.gateway(0, doctor.clone()).await?;
    let salt1: [u8; 32] = rand::random();
    let transient = |content: &str, salt: &[u8]| {
        HashMap::from([
            ("content".to_owned(), content.as_bytes().to_vec()),
            ("salt".to_owned(), salt.to_vec()),
        ])
    };
    let record = r#"{"id":"R-1","patientId":"P-0042","resourceType":"Observation"}"#;
    gw.submit_with(&["CreateRecord", record], transient(V1, &salt1))
        .await?;
    // A configuration block between the two versions: the proof replays it.
    update_configuration(&net).await?;
    let salt2: [u8; 32] = rand::random();
    let (_, _, block, _) = gw
        .submit_with(
            &["AmendRecord", "R-1", "re-measured"],
            transient(V2, &salt2),
        )
        .await?;
    net.wait_height(block + 1).await?;

    // Export as the doctor, through the peer.
    let msp = dir.path().join("doctor-msp");
    net.orgs[0].write_msp(&msp, &doctor)?;
    let tls = dir.path().join("tlsca.pem");
    std::fs::write(&tls, net.orgs[0].tls_ca.cert_pem())?;
    let bundle_path = dir.path().join("proof.json");
    let (ok, out) = cli(
        &bin,
        "Hospital1MSP",
        &msp,
        &[
            "proof",
            "export",
            "--record",
            "R-1",
            "-C",
            CHANNEL,
            "-n",
            CHAINCODE,
            "--output",
            &bundle_path.to_string_lossy(),
            "--peerAddresses",
            &net.address(0),
            "--tlsRootCertFiles",
            &tls.to_string_lossy(),
        ],
    );
    assert!(ok, "{out}");
    let bundle: ProofBundle = serde_json::from_slice(&std::fs::read(&bundle_path)?)?;
    assert_eq!(bundle.claims.len(), 2);
    assert_eq!(bundle.config_blocks.len(), 2, "genesis and the update");

    // Verified with nothing but the genesis block.
    let genesis = Block::decode(std::fs::read(&net.orderers.genesis_path)?.as_slice())?;
    let proven = verify(&bundle, &genesis)?;
    assert!(proven[0].claim.value.contains(r#""version":1"#));
    assert!(proven[1].claim.value.contains(r#""version":2"#));
    assert!(proven[1].creator_subject.contains("doctor1"));
    assert!(
        proven
            .iter()
            .all(|p| p.block_signers >= 3 && !p.endorsers.is_empty())
    );

    // The CLI verifier, with the content and its salt.
    let content = dir.path().join("v2.json");
    std::fs::write(&content, V2)?;
    let genesis_path = net.orderers.genesis_path.to_string_lossy().into_owned();
    let verify_args = |content: &Path, salt: &[u8]| {
        vec![
            "proof".to_owned(),
            "verify".into(),
            "--bundle".into(),
            bundle_path.to_string_lossy().into_owned(),
            "--genesis".into(),
            genesis_path.clone(),
            "--content".into(),
            content.to_string_lossy().into_owned(),
            "--salt".into(),
            hex::encode(salt),
        ]
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&bin, "Hospital1MSP", &msp, &args)
    };
    let (ok, out) = run(verify_args(&content, &salt2));
    assert!(
        ok && out.contains("Proof verified.") && out.contains("committed to"),
        "{out}"
    );
    let (ok, out) = run(verify_args(&content, &salt1));
    assert!(!ok && out.contains("proof refused"), "a wrong salt: {out}");
    let forged = dir.path().join("forged.json");
    std::fs::write(&forged, V2.replace("131/85", "121/75"))?;
    let (ok, out) = run(verify_args(&forged, &salt2));
    assert!(!ok && out.contains("proof refused"), "other content: {out}");

    // Any transaction's public writes: a medical certificate's issuance, by its transaction id.
    let now = medledger_common::msp::unix_now();
    let cert = serde_json::json!({
        "id": "SL-1", "patientId": "P-0042", "type": "sick_leave",
        "contentHash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "validFrom": now - 60, "validUntil": now + 86400
    })
    .to_string();
    let (cert_tx, _, cert_block, _) = gw.submit(&["IssueCertificate", &cert]).await?;
    net.wait_height(cert_block + 1).await?;
    let cert_bundle = dir.path().join("cert-proof.json");
    let (ok, out) = cli(
        &bin,
        "Hospital1MSP",
        &msp,
        &[
            "proof",
            "export",
            "--tx",
            &cert_tx,
            "-C",
            CHANNEL,
            "-n",
            CHAINCODE,
            "--output",
            &cert_bundle.to_string_lossy(),
            "--peerAddresses",
            &net.address(0),
            "--tlsRootCertFiles",
            &tls.to_string_lossy(),
        ],
    );
    assert!(ok, "{out}");
    let cert_proof: ProofBundle = serde_json::from_slice(&std::fs::read(&cert_bundle)?)?;
    let proven = verify(&cert_proof, &genesis)?;
    assert!(
        proven
            .iter()
            .any(|p| p.claim.value.contains(r#""id":"SL-1""#)
                && p.creator_subject.contains("doctor1")),
        "{proven:?}"
    );

    // A client copies an endorsed response into a transaction of its own (a new id): the
    // orderers order it, the peers mark it invalid, and a bundle that claims it as VALID (the
    // flag is not signed) still proves nothing.
    let amend = transient(V1, &salt1);
    let (_, prepared) = gw
        .endorse_with(&["AmendRecord", "R-1", "forged"], amend)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let payload = medledger_proto::common::Payload::decode(prepared.payload.as_slice())?;
    let header = payload.header.clone().expect("header");
    let mut ch = medledger_proto::common::ChannelHeader::decode(header.channel_header.as_slice())?;
    let nonce = medledger_common::protoutil::new_nonce();
    ch.tx_id = medledger_common::protoutil::compute_txid(&nonce, doctor.serialized());
    let copied = medledger_proto::common::Payload {
        header: Some(medledger_proto::common::Header {
            channel_header: ch.encode_to_vec(),
            signature_header: medledger_proto::common::SignatureHeader {
                creator: doctor.serialized().to_vec(),
                nonce,
            }
            .encode_to_vec(),
        }),
        data: payload.data.clone(),
    };
    let forged_tx = medledger_common::protoutil::sign_envelope(&copied, &doctor)?;
    let r = net.orderers.broadcast(1, forged_tx).await?;
    assert_eq!(r.status, Status::Success as i32, "{}", r.info);
    let ledger = &net.channel(0).await?.ledger;
    let found = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            if let Ok(Some(loc)) = ledger.tx_location(&ch.tx_id) {
                return loc;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await?;
    assert_ne!(
        found.validation_code,
        medledger_proto::protos::TxValidationCode::Valid as i32,
        "the peers refuse the copy"
    );
    let mut flipped = ledger.block(found.block_num)?.expect("block");
    if let Some(m) = flipped.metadata.as_mut() {
        m.metadata[2][found.tx_num as usize] = 0;
    }
    let mut lying = bundle.clone();
    lying.blocks.push(hex::encode(flipped.encode_to_vec()));
    lying.claims.push(medledger_common::proof::WriteClaim {
        block: found.block_num,
        tx_id: ch.tx_id.clone(),
        namespace: CHAINCODE.into(),
        key: "record/R-1".into(),
        value: "{}".into(),
    });
    let e = verify(&lying, &genesis).expect_err("a copied endorsement proves nothing");
    assert!(e.to_string().contains("another proposal"), "{e}");

    // Every single tampering is caught.
    let other_genesis = {
        let mut b = genesis.clone();
        if let Some(h) = b.header.as_mut() {
            h.data_hash[0] ^= 1;
        }
        b
    };
    assert_eq!(
        verify(&bundle, &other_genesis),
        Err(ProofError::WrongGenesis)
    );
    let edit_block = |i: usize, f: &dyn Fn(&mut Block)| {
        let mut b = bundle.clone();
        let mut block =
            Block::decode(hex::decode(&b.blocks[i]).expect("hex").as_slice()).expect("block");
        f(&mut block);
        b.blocks[i] = hex::encode(block.encode_to_vec());
        b
    };
    let cases: Vec<(&str, ProofBundle)> = vec![
        (
            "a header byte",
            edit_block(0, &|b| {
                if let Some(h) = b.header.as_mut() {
                    h.previous_hash[3] ^= 0x40;
                }
            }),
        ),
        (
            "the block signatures",
            edit_block(0, &|b| {
                if let Some(m) = b.metadata.as_mut() {
                    m.metadata[0] = Vec::new();
                }
            }),
        ),
        (
            "a transaction marked invalid",
            edit_block(0, &|b| {
                if let Some(m) = b.metadata.as_mut() {
                    for f in m.metadata[2].iter_mut() {
                        *f = 11;
                    }
                }
            }),
        ),
        (
            "a changed write (data no longer matches the signed header)",
            edit_block(1, &|b| {
                if let Some(d) = b.data.as_mut() {
                    let tx = &mut d.data[0];
                    let at = tx.len() / 2;
                    tx[at] ^= 1;
                }
            }),
        ),
        ("a missing block", {
            let mut b = bundle.clone();
            b.blocks.remove(1);
            b
        }),
        ("a missing configuration block", {
            let mut b = bundle.clone();
            b.config_blocks.remove(1);
            b
        }),
        ("a claim of another value", {
            let mut b = bundle.clone();
            b.claims[1].value = b.claims[1]
                .value
                .replace(r#""version":2"#, r#""version":3"#);
            b
        }),
        ("a claim of another key", {
            let mut b = bundle.clone();
            b.claims[0].key = "record/R-2".into();
            b
        }),
    ];
    for (what, tampered) in cases {
        assert!(
            verify(&tampered, &genesis).is_err(),
            "tampering with {what} went unnoticed"
        );
    }
    Ok(())
}
