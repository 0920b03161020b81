//! The medical chaincode on the real stack: three hospitals' peers, four BFT orderers, TLS,
//! identities with Fabric CA attributes, private data collections. A doctor at Hospital1
//! creates a record, the patient grants Hospital2 consent, the record is shared and read there,
//! the patient revokes and Hospital2's next read is refused; the provenance shows every step with
//! its identity. A certificate issued by the doctor verifies at a third hospital and fails after
//! revocation.

use std::collections::HashMap;

use medledger_common::SigningIdentity;
use medledger_tests::peernet::PeerNet;
use serde_json::Value;

const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

async fn network() -> anyhow::Result<PeerNet> {
    medledger_tests::peernet::start_medical(3).await
}

fn json(bytes: &[u8]) -> anyhow::Result<Value> {
    Ok(serde_json::from_slice(bytes)?)
}

fn error_text(e: &tonic::Status) -> String {
    format!("{} {}", e.message(), String::from_utf8_lossy(e.details()))
}

const CONTENT: &str = r#"{"resourceType":"Observation","status":"final","code":{"text":"HbA1c"},"valueString":"7.9 percent, poorly controlled"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn record_shared_under_consent_then_revoked_with_full_provenance() -> anyhow::Result<()> {
    let net = network().await?;
    let doctor1 = net.orgs[0].identity("doctor1", "client", &[("role", "doctor")])?;
    let patient = net.orgs[0].identity(
        "patient1",
        "client",
        &[("role", "patient"), ("patientId", "P-0042")],
    )?;
    let doctor2 = net.orgs[1].identity("doctor2", "client", &[("role", "doctor")])?;
    let now = medledger_common::msp::unix_now();

    let mut h1 = net.gateway(0, doctor1.clone()).await?;
    let record = r#"{"id":"R-1","patientId":"P-0042","resourceType":"Observation"}"#;
    let salt: [u8; 32] = rand::random();
    let transient = HashMap::from([
        ("content".to_owned(), CONTENT.as_bytes().to_vec()),
        ("salt".to_owned(), salt.to_vec()),
    ]);
    let (create_tx, _, create_block, out) =
        h1.submit_with(&["CreateRecord", record], transient).await?;
    assert_eq!(json(&out)?["custodian"], "Hospital1MSP");

    let mut as_patient = net.gateway(0, patient.clone()).await?;
    let consent = serde_json::json!({
        "id": "C-1", "granteeMsp": "Hospital2MSP", "scope": {"recordTypes": ["Observation"]},
        "purpose": "second opinion", "expiresAt": now + 3600
    })
    .to_string();
    as_patient.submit(&["GrantConsent", &consent]).await?;
    let (_, _, block, _) = h1.submit(&["ShareRecord", "R-1", "C-1"]).await?;
    net.wait_height(block + 1).await?;

    // Hospital2 requests access (logged on the ledger), then reads its shared copy.
    let mut h2 = net.gateway(1, doctor2.clone()).await?;
    let (ticket, _, _, _) = h2
        .submit(&["RequestAccess", "R-1", "second opinion"])
        .await?;
    let read = json(&h2.evaluate(&["ReadSharedRecord", "R-1", &ticket]).await?)?;
    assert_eq!(read["content"], CONTENT, "the exact bytes recorded");
    assert_eq!(
        medledger_common::crypto::sha256_concat(&[&salt, CONTENT.as_bytes()]).to_vec(),
        hex::decode(read["record"]["contentHash"].as_str().unwrap_or_default())?,
        "the shared copy carries the salt that proves it against the ledger"
    );
    // Hospital3 has no share and no copy.
    let doctor3 = net.orgs[2].identity("doctor3", "client", &[("role", "doctor")])?;
    let mut h3 = net.gateway(2, doctor3).await?;
    let e = h3
        .endorse(&["RequestAccess", "R-1", "curious"])
        .await
        .unwrap_err();
    assert!(error_text(&e).contains("has not been shared"), "{e:?}");

    // The patient revokes: the next read at Hospital2 is refused, even with the old ticket.
    let (_, _, block, _) = as_patient.submit(&["RevokeConsent", "C-1"]).await?;
    net.wait_height(block + 1).await?;
    let e = h2
        .evaluate(&["ReadSharedRecord", "R-1", &ticket])
        .await
        .unwrap_err();
    assert!(error_text(&e).contains("revoked"), "{e:?}");
    let e = h2
        .endorse(&["RequestAccess", "R-1", "again"])
        .await
        .unwrap_err();
    assert!(error_text(&e).contains("revoked"), "{e:?}");
    // The shared copy is erased at Hospital2's peer.
    let ch2 = net.channel(1).await?;
    assert!(
        ch2.ledger
            .pvt_state(
                "kv",
                "shared_Hospital1MSP_Hospital2MSP",
                "shared/R-1/Hospital2MSP"
            )?
            .is_none()
    );

    // Provenance: who created the record, in which transaction, and who read it, why.
    let prov = json(&as_patient.evaluate(&["GetRecordProvenance", "R-1"]).await?)?;
    let versions = prov["versions"].as_array().cloned().unwrap_or_default();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0]["txId"], create_tx);
    assert_eq!(versions[0]["block"], create_block, "{prov}");
    assert_eq!(versions[0]["authorMsp"], "Hospital1MSP");
    assert!(
        versions[0]["authorSubject"]
            .as_str()
            .unwrap_or("")
            .contains("doctor1")
    );
    let reads = prov["reads"].as_array().cloned().unwrap_or_default();
    assert_eq!(reads.len(), 1, "{prov}");
    assert_eq!(reads[0]["readerMsp"], "Hospital2MSP");
    assert_eq!(reads[0]["txId"], ticket);
    assert_eq!(reads[0]["purpose"], "second opinion");
    assert_eq!(reads[0]["via"], "share");

    // The record's content is in no block on any peer.
    for i in 0..3 {
        let ch = net.channel(i).await?;
        for n in 0..ch.ledger.height() {
            let b = prost::Message::encode_to_vec(&ch.ledger.block(n)?.unwrap_or_default());
            assert!(
                !b.windows(13).any(|w| w == b"poorly contro"),
                "block {n} of peer {i} holds record content"
            );
        }
    }
    Ok(())
}

async fn verify(gw: &mut medledger_tests::peernet::Gateway, hash: &str) -> anyhow::Result<Value> {
    json(&gw.evaluate(&["VerifyCertificate", "C-1", hash]).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_issue_verify_revoke_across_hospitals() -> anyhow::Result<()> {
    let net = network().await?;
    let doctor = net.orgs[0].identity("doctor1", "client", &[("role", "doctor")])?;
    let nurse = net.orgs[0].identity("nurse1", "client", &[("role", "nurse")])?;
    let verifier: SigningIdentity = net.orgs[2].identity("registrar", "client", &[])?;
    let now = medledger_common::msp::unix_now();
    let body = serde_json::json!({
        "id": "C-1", "patientId": "P-0042", "type": "sick_leave",
        "contentHash": HASH, "validFrom": now - 60, "validUntil": now + 86400
    })
    .to_string();

    let mut as_nurse = net.gateway(0, nurse).await?;
    let e = as_nurse
        .endorse(&["IssueCertificate", &body])
        .await
        .unwrap_err();
    assert!(error_text(&e).contains("only a doctor"), "{e:?}");

    let mut as_doctor = net.gateway(0, doctor).await?;
    let (_, code, block, result) = as_doctor.submit(&["IssueCertificate", &body]).await?;
    assert_eq!(code, 0);
    assert_eq!(json(&result)?["issuerMsp"], "Hospital1MSP");
    net.wait_height(block + 1).await?;

    // A third party (Hospital3) verifies the document's hash.
    let mut third = net.gateway(2, verifier).await?;
    let v = verify(&mut third, HASH).await?;
    assert_eq!(v["status"], "valid");
    assert!(
        v["issuerSubject"]
            .as_str()
            .unwrap_or("")
            .contains("doctor1"),
        "{v}"
    );
    assert_eq!(
        verify(&mut third, &"0".repeat(64)).await?["status"],
        "mismatch"
    );

    let (_, code, block, _) = as_doctor
        .submit(&["RevokeCertificate", "C-1", "issued in error"])
        .await?;
    assert_eq!(code, 0);
    net.wait_height(block + 1).await?;
    assert_eq!(verify(&mut third, HASH).await?["status"], "revoked");
    let h = json(&third.evaluate(&["CertificateHistory", "C-1"]).await?)?;
    assert_eq!(h.as_array().map(Vec::len), Some(2));
    Ok(())
}
