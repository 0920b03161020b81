//! The medical chaincode's certificates on the real stack: two hospitals' peers, four BFT
//! orderers, identities with Fabric CA attributes. A doctor at Hospital1 issues a certificate, a
//! client of Hospital2 verifies it, a nurse may not issue, and after revocation it verifies as
//! revoked.

use medledger_tests::peernet::PeerNet;

const BOTH: &str = "AND('Hospital1MSP.peer', 'Hospital2MSP.peer')";
const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_issue_verify_revoke_across_hospitals() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let package = "medical_0.1:5e1f";
    tokio::spawn(medledger_shim::serve_with_listener(
        listener,
        package.into(),
        None,
        medledger_medical_chaincode::MedicalChaincode,
        std::future::pending(),
    ));
    let net = PeerNet::start_with(BOTH, 10_000, Some((address, package.into()))).await?;
    let doctor = net.orgs[0].identity("doctor1", "client", &[("role", "doctor")])?;
    let nurse = net.orgs[0].identity("nurse1", "client", &[("role", "nurse")])?;
    let verifier = net.orgs[1].identity("registrar", "client", &[])?;
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
    assert!(
        String::from_utf8_lossy(e.details()).contains("only a doctor"),
        "{e:?}"
    );

    let mut as_doctor = net.gateway(0, doctor).await?;
    let (_, code, block, result) = as_doctor.submit(&["IssueCertificate", &body]).await?;
    assert_eq!(code, 0);
    let issued: serde_json::Value = serde_json::from_slice(&result)?;
    assert_eq!(issued["issuerMsp"], "Hospital1MSP");
    net.wait_height(block + 1).await?;

    let mut as_hospital2 = net.gateway(1, verifier).await?;
    let v: serde_json::Value = serde_json::from_slice(
        &as_hospital2
            .evaluate(&["VerifyCertificate", "C-1", HASH])
            .await?,
    )?;
    assert_eq!(v["status"], "valid");
    assert!(
        v["issuerSubject"]
            .as_str()
            .unwrap_or("")
            .contains("doctor1"),
        "{v}"
    );
    let v: serde_json::Value = serde_json::from_slice(
        &as_hospital2
            .evaluate(&["VerifyCertificate", "C-1", &"0".repeat(64)])
            .await?,
    )?;
    assert_eq!(v["status"], "mismatch");

    let (_, code, block, _) = as_doctor
        .submit(&["RevokeCertificate", "C-1", "issued in error"])
        .await?;
    assert_eq!(code, 0);
    net.wait_height(block + 1).await?;
    let v: serde_json::Value = serde_json::from_slice(
        &as_hospital2
            .evaluate(&["VerifyCertificate", "C-1", HASH])
            .await?,
    )?;
    assert_eq!(v["status"], "revoked");
    let h: serde_json::Value = serde_json::from_slice(
        &as_hospital2
            .evaluate(&["CertificateHistory", "C-1"])
            .await?,
    )?;
    assert_eq!(h.as_array().map(Vec::len), Some(2));
    Ok(())
}
