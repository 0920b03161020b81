//! Offline provenance proofs: a record created, amended, shared, read and its shared copy erased
//! by a consent's revocation, exported by `medledger-peer proof export` and verified with nothing
//! but the genesis block (library and `medledger-peer proof verify`), also across a channel
//! configuration update; the erased value still proves by its hash; what was verified written as
//! FHIR R4 resources that a FHIR library's model accepts; every single tampering of the bundle is
//! caught.

use std::collections::HashMap;
use std::path::Path;

use medledger_common::configtx::{compute_update, sign_config_update, update_envelope};
use medledger_common::proof::{ProofBundle, ProofError, verify};
use medledger_proto::common::{Block, ConfigUpdateEnvelope, Status};
use medledger_tests::peernet::{CHAINCODE, CHANNEL, PeerNet};
use prost::Message;

const V1: &str = r#"{"resourceType":"Observation","status":"final","valueString":"128/82"}"#;
const V2: &str = r#"{ "status":"amended", "resourceType":"Observation", "valueString":"131/85" }"#;

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
    let (ok, out) = medledger_tests::peer_cli(
        &bin,
        &net.address(0),
        &tls,
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
        ],
    );
    assert!(ok, "{out}");
    let bundle: ProofBundle = serde_json::from_slice(&std::fs::read(&bundle_path)?)?;
    let versions: Vec<usize> = (0..bundle.claims.len())
        .filter(|i| bundle.claims[*i].key == "record/R-1")
        .collect();
    assert_eq!(versions.len(), 2, "{:?}", bundle.claims);
    assert_eq!(bundle.config_blocks.len(), 2, "genesis and the update");
    assert_eq!(
        bundle.private_claims.len(),
        2,
        "each version's sealed content, by its hashes: {:?}",
        bundle.private_claims
    );

    // Verified with nothing but the genesis block.
    let genesis = Block::decode(std::fs::read(&net.orderers.genesis_path)?.as_slice())?;
    let proven = verify(&bundle, &genesis)?;
    let (v1, v2) = (&proven.claims[versions[0]], &proven.claims[versions[1]]);
    assert!(v1.claim.value.contains(r#""version":1"#));
    assert!(v2.claim.value.contains(r#""version":2"#));
    assert!(v2.tx.creator_subject.contains("doctor1"));
    assert!(
        proven
            .claims
            .iter()
            .all(|p| p.tx.block_signers >= 3 && !p.tx.endorsements.is_empty())
    );
    assert_eq!(
        proven.private_claims[1].claim.key.as_deref(),
        Some("record/R-1/v2"),
        "the exporter names the private key; the verifier checked it against its hash"
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
            "-n".into(),
            CHAINCODE.into(),
        ]
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        medledger_tests::run_cli(&bin, "Hospital1MSP", &msp, &args)
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
    let (ok, out) = medledger_tests::peer_cli(
        &bin,
        &net.address(0),
        &tls,
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
        ],
    );
    assert!(ok, "{out}");
    let cert_proof: ProofBundle = serde_json::from_slice(&std::fs::read(&cert_bundle)?)?;
    let proven = verify(&cert_proof, &genesis)?;
    assert!(
        proven
            .claims
            .iter()
            .any(|p| p.claim.value.contains(r#""id":"SL-1""#)
                && p.tx.creator_subject.contains("doctor1")),
        "{proven:?}"
    );

    sharing_and_erasure_keep_proving(&net, &bin, dir.path(), &genesis).await?;

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
            b.claims[versions[1]].value = b.claims[versions[1]]
                .value
                .replace(r#""version":2"#, r#""version":3"#);
            b
        }),
        ("a claim of another key", {
            let mut b = bundle.clone();
            b.claims[versions[0]].key = "record/R-2".into();
            b
        }),
        ("a private value of another hash", {
            let mut b = bundle.clone();
            b.private_claims[0].value_hash = Some(hex::encode([7u8; 32]));
            b
        }),
        ("a private key named that is not the one hashed", {
            let mut b = bundle.clone();
            b.private_claims[0].key = Some("record/R-1/v9".into());
            b
        }),
        ("a private write claimed as an erasure", {
            let mut b = bundle.clone();
            b.private_claims[0].value_hash = None;
            b.private_claims[0].erased = true;
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

/// A patient consents, the record is shared, read at the grantee and the consent revoked (which
/// erases the shared copy): the record's proof covers all of it, the erased value still proves
/// by its hash and the verifier says when it was erased; the FHIR resources of what was verified
/// pass a FHIR R4 model's strict reading.
async fn sharing_and_erasure_keep_proving(
    net: &PeerNet,
    bin: &Path,
    dir: &Path,
    genesis: &Block,
) -> anyhow::Result<()> {
    let doctor = net.orgs[0].identity("doctor1", "client", &[("role", "doctor")])?;
    let patient = net.orgs[0].identity(
        "patient1",
        "client",
        &[("role", "patient"), ("patientId", "P-0042")],
    )?;
    let reader = net.orgs[1].identity("doctor2", "client", &[("role", "doctor")])?;
    let now = medledger_common::msp::unix_now();
    let mut as_patient = net.gateway(0, patient).await?;
    let consent = serde_json::json!({
        "id": "C-1", "granteeMsp": "Hospital2MSP", "scope": {"recordIds": ["R-1"]},
        "purpose": "treatment", "expiresAt": now + 3600
    })
    .to_string();
    as_patient.submit(&["GrantConsent", &consent]).await?;
    let mut h1 = net.gateway(0, doctor.clone()).await?;
    let (share_tx, _, block, _) = h1.submit(&["ShareRecord", "R-1", "C-1"]).await?;
    net.wait_height(block + 1).await?;
    let mut h2 = net.gateway(1, reader).await?;
    let (read_tx, _, _, _) = h2.submit(&["RequestAccess", "R-1", "treatment"]).await?;
    let (revoke_tx, _, block, _) = as_patient.submit(&["RevokeConsent", "C-1"]).await?;
    net.wait_height(block + 1).await?;

    let msp = dir.join("doctor-msp");
    let tls = dir.join("tlsca.pem");
    let bundle_path = dir.join("shared-proof.json");
    let (ok, out) = medledger_tests::peer_cli(
        bin,
        &net.address(0),
        &tls,
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
        ],
    );
    assert!(ok, "{out}");
    let bundle: ProofBundle = serde_json::from_slice(&std::fs::read(&bundle_path)?)?;
    let proven = verify(&bundle, genesis)?;
    let shared_key = "shared/R-1/Hospital2MSP";
    let copy: Vec<_> = proven
        .private_claims
        .iter()
        .filter(|p| p.claim.key.as_deref() == Some(shared_key))
        .collect();
    assert_eq!(
        copy.len(),
        2,
        "the shared copy's write and erasure: {copy:?}"
    );
    assert_eq!(copy[0].tx.tx_id, share_tx);
    assert!(copy[0].claim.value_hash.is_some() && !copy[0].claim.erased);
    assert_eq!(copy[1].tx.tx_id, revoke_tx);
    assert!(copy[1].claim.erased && copy[1].claim.value_hash.is_none());
    assert!(copy[1].tx.creator_subject.contains("patient1"));
    for tx in [&share_tx, &read_tx, &revoke_tx] {
        assert!(
            proven.claims.iter().any(|p| &p.tx.tx_id == tx),
            "transaction {tx} is in the record's proof"
        );
    }
    // Tampering with the erasure is caught: a bundle may not hide it as a write.
    let mut hidden = bundle.clone();
    if let Some(c) = hidden
        .private_claims
        .iter_mut()
        .find(|c| c.erased && c.key.as_deref() == Some(shared_key))
    {
        c.erased = false;
        c.value_hash = copy[0].claim.value_hash.clone();
    }
    assert!(
        verify(&hidden, genesis).is_err(),
        "an erasure passed as a write"
    );

    let fhir_path = dir.join("fhir.json");
    let (ok, out) = medledger_tests::run_cli(
        bin,
        "Hospital1MSP",
        &msp,
        &[
            "proof",
            "verify",
            "--bundle",
            &bundle_path.to_string_lossy(),
            "--genesis",
            &net.orderers.genesis_path.to_string_lossy(),
            "--fhir",
            &fhir_path.to_string_lossy(),
            "-n",
            CHAINCODE,
        ],
    );
    assert!(
        ok && out.contains(&format!("ERASED private {shared_key}"))
            && out.contains("a value with hash")
            && out.contains("Proof verified."),
        "{out}"
    );

    // The FHIR: each resource passes fhirbolt's strict R4 model (unknown elements, wrong types
    // and missing required elements are errors), and says what happened.
    let fhir: serde_json::Value = serde_json::from_slice(&std::fs::read(&fhir_path)?)?;
    let strict = fhirbolt::serde::DeserializationConfig {
        mode: fhirbolt::serde::DeserializationMode::Strict,
    };
    let _: fhirbolt::model::r4::Resource =
        fhirbolt::json::from_str(&fhir.to_string(), Some(strict))
            .map_err(|e| anyhow::anyhow!("the Bundle is not FHIR R4: {e}"))?;
    let entries = fhir["entry"].as_array().cloned().unwrap_or_default();
    let of_type = |t: &str| -> Vec<serde_json::Value> {
        entries
            .iter()
            .map(|e| e["resource"].clone())
            .filter(|r| r["resourceType"] == t)
            .collect()
    };
    for e in &entries {
        let _: fhirbolt::model::r4::Resource =
            fhirbolt::json::from_str(&e["resource"].to_string(), Some(strict))
                .map_err(|err| anyhow::anyhow!("not FHIR R4: {err}: {}", e["resource"]))?;
        assert!(
            e["fullUrl"]
                .as_str()
                .is_some_and(|u| u.ends_with(e["resource"]["id"].as_str().unwrap_or("?"))),
            "{e}"
        );
    }
    let provenance = of_type("Provenance");
    let activity = |p: &serde_json::Value| p["activity"]["coding"][0]["code"].clone();
    let activities: Vec<_> = provenance.iter().map(activity).collect();
    assert_eq!(
        activities,
        ["originate", "amend", "disclose", "destroy"],
        "two versions, the share and the erasure: {provenance:?}"
    );
    let erasure = &provenance[3];
    assert_eq!(erasure["reason"][0]["text"], "consent C-1 revoked");
    assert!(
        erasure["agent"][0]["who"]["display"]
            .as_str()
            .is_some_and(|d| d.contains("patient1"))
    );
    // The signatures are the transaction's own: the creator's verifies over the envelope.
    let version_sig = &provenance[1]["signature"][0];
    assert_eq!(version_sig["type"][0]["code"], "1.2.840.10065.1.12.1.1");
    use base64::Engine;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(version_sig["data"].as_str().unwrap_or(""))?;
    assert_eq!(
        sig,
        proven
            .claims
            .iter()
            .find(|p| p.claim.value.contains(r#""version":2"#))
            .map(|p| p.tx.creator_signature.clone())
            .unwrap_or_default()
    );
    let audits = of_type("AuditEvent");
    assert_eq!(audits.len(), 1, "one read: {audits:?}");
    let read = &audits[0];
    assert_eq!(read["action"], "R");
    assert_eq!(read["subtype"][0]["code"], "read");
    assert_eq!(read["purposeOfEvent"][0]["coding"][0]["code"], "TREAT");
    assert_eq!(read["agent"][0]["requestor"], true);
    assert!(
        read["agent"][0]["who"]["display"]
            .as_str()
            .is_some_and(|d| d.contains("doctor2") && d.contains("Hospital2MSP"))
    );
    assert_eq!(read["entity"][0]["what"]["identifier"]["value"], "P-0042");
    let consents = of_type("Consent");
    assert_eq!(consents.len(), 1, "{consents:?}");
    assert_eq!(consents[0]["status"], "inactive", "revoked");
    assert_eq!(
        consents[0]["provision"]["actor"][0]["reference"]["identifier"]["value"],
        "Hospital2MSP"
    );
    assert_eq!(
        consents[0]["provision"]["data"][0]["reference"]["identifier"]["value"],
        "R-1"
    );
    Ok(())
}
