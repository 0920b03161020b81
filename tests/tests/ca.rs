//! The certificate authority end to end: a real HTTPS server on a loopback port, driven by our
//! client and by the real npm `fabric-ca-client`; the identities it issues checked by the MSP
//! code the nodes use.

use std::path::Path;

use base64::Engine;
use medledger_ca::authority::{EnrollRequest, RegisterRequest, RevokeRequest};
use medledger_ca::client::auth_token;
use medledger_ca::{CaError, CaHome, ClientError};
use medledger_common::cert::Certificate;
use medledger_common::msp::{Expiry, Msp, MspError, MspManager, NodeRole, load_msp_folder};
use medledger_common::{PrivateKey, SigningIdentity};
use medledger_tests::ca_net::{MSPID, RunningCa};
use medledger_tests::run_node;

fn refused<T: std::fmt::Debug>(r: Result<T, ClientError>) -> CaError {
    match r {
        Err(ClientError::Ca(e)) => e,
        other => panic!("expected a CA error, got {other:?}"),
    }
}

fn msps_from(folder: &Path) -> MspManager {
    MspManager::new([
        Msp::new(&load_msp_folder(folder, MSPID).expect("MSP folder")).expect("valid MSP"),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_register_revoke_and_the_msp_agrees() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = RunningCa::start(&dir.path().join("ca")).await?;
    let ids = dir.path().join("ids");

    let admin = ca.enroll(&ids, "admin", "adminpw", &[]).await?;
    ca.register(&admin, "peer0", "peer", "hospital1", &[])
        .await?;
    ca.register(&admin, "orderer0", "orderer", "hospital1", &[])
        .await?;
    ca.register(&admin, "hadmin", "admin", "hospital1", &[])
        .await?;
    ca.register(
        &admin,
        "doctor1",
        "client",
        "hospital1.cardiology",
        &[("role", "doctor"), ("department", "cardiology")],
    )
    .await?;
    ca.register(
        &admin,
        "nurse1",
        "client",
        "hospital1.nursing",
        &[("role", "nurse")],
    )
    .await?;

    let peer = ca.enroll(&ids, "peer0", "peer0pw", &[]).await?;
    let orderer = ca.enroll(&ids, "orderer0", "orderer0pw", &[]).await?;
    let hadmin = ca.enroll(&ids, "hadmin", "hadminpw", &[]).await?;
    let doctor = ca.enroll(&ids, "doctor1", "doctor1pw", &[]).await?;
    let nurse = ca.enroll(&ids, "nurse1", "nurse1pw", &["role"]).await?;

    let msps = msps_from(&ids.join("admin/msp"));
    let role = |id: &SigningIdentity| {
        msps.deserialize(id.serialized(), Expiry::now())
            .map(|i| i.role)
    };
    assert_eq!(role(&peer)?, NodeRole::Peer);
    assert_eq!(role(&orderer)?, NodeRole::Orderer);
    assert_eq!(role(&hadmin)?, NodeRole::Admin);
    assert_eq!(role(&doctor)?, NodeRole::Client);
    assert_eq!(role(&nurse)?, NodeRole::Client);
    let d = msps.deserialize(doctor.serialized(), Expiry::now())?;
    assert_eq!(d.attribute("role"), Some("doctor"));
    assert_eq!(d.attribute("department"), Some("cardiology"));
    assert_eq!(d.attribute("hf.EnrollmentID"), Some("doctor1"));
    assert_eq!(d.attribute("hf.Affiliation"), Some("hospital1.cardiology"));
    assert_eq!(d.attribute("hf.Type"), Some("client"));
    assert_eq!(d.cert.organizational_units[0], "client");

    // Revoke the nurse, write the CRL into the admin's MSP folder: the MSP now refuses her.
    let result = ca
        .client
        .revoke(
            &admin,
            &RevokeRequest {
                id: "nurse1".into(),
                reason: "keycompromise".into(),
                gencrl: true,
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(result.revoked_certs.len(), 1);
    let crl = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(&result.crl)?)?;
    std::fs::create_dir_all(ids.join("admin/msp/crls"))?;
    std::fs::write(ids.join("admin/msp/crls/crl.pem"), crl)?;
    let msps = msps_from(&ids.join("admin/msp"));
    assert!(matches!(
        msps.deserialize(nurse.serialized(), Expiry::now()),
        Err(MspError::Revoked { .. })
    ));
    assert!(msps.deserialize(doctor.serialized(), Expiry::now()).is_ok());

    // A revoked identity can no longer enroll; a separately generated CRL lists it too.
    let e = refused(ca.enroll(&ids, "nurse1", "nurse1pw", &[]).await);
    assert_eq!((e.status, e.code), (401, 70));
    let crl = ca.client.gencrl(&admin).await?;
    let parsed = medledger_common::cert::RevocationList::parse(crl.as_bytes())?;
    assert!(parsed.revokes(&nurse.certificate().serial));

    let list = ca.client.identities(&admin).await?;
    let names: Vec<&str> = list["identities"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    for n in ["admin", "peer0", "orderer0", "hadmin", "doctor1", "nurse1"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    ca.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_fabric_errors_and_change_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = RunningCa::start(&dir.path().join("ca")).await?;
    let ids = dir.path().join("ids");
    let admin = ca.enroll(&ids, "admin", "adminpw", &[]).await?;

    // Wrong secret, unknown identity.
    let e = refused(ca.enroll(&ids, "admin", "nope", &[]).await);
    assert_eq!((e.status, e.code), (401, 20));
    let e = refused(ca.enroll(&ids, "ghost", "x", &[]).await);
    assert_eq!((e.status, e.code), (401, 20));

    // Max enrollments: failed attempts do not count, the second real one is refused.
    ca.client
        .register(
            &admin,
            &RegisterRequest {
                id: "once".into(),
                secret: Some("oncepw".into()),
                max_enrollments: 1,
                affiliation: "hospital1".into(),
                ..Default::default()
            },
        )
        .await?;
    refused(ca.enroll(&ids, "once", "wrong", &[]).await);
    ca.enroll(&ids, "once", "oncepw", &[]).await?;
    let e = refused(ca.enroll(&ids, "once", "oncepw", &[]).await);
    assert_eq!(e.status, 401);
    assert!(e.message.contains("maximum"), "{}", e.message);

    // A client without registrar rights; a registrar limited to clients.
    ca.register(
        &admin,
        "doctor1",
        "client",
        "hospital1",
        &[("role", "doctor")],
    )
    .await?;
    let doctor = ca.enroll(&ids, "doctor1", "doctor1pw", &[]).await?;
    let e = refused(
        ca.register(&doctor, "evil", "client", "hospital1", &[])
            .await,
    );
    assert_eq!((e.status, e.code), (403, 59));
    ca.register(
        &admin,
        "clerk",
        "client",
        "hospital1",
        &[
            ("hf.Registrar.Roles", "client"),
            ("hf.Registrar.Attributes", "role"),
        ],
    )
    .await?;
    let clerk = ca.enroll(&ids, "clerk", "clerkpw", &[]).await?;
    let e = refused(
        ca.register(&clerk, "sneakypeer", "peer", "hospital1", &[])
            .await,
    );
    assert_eq!((e.status, e.code), (403, 54));
    let e = refused(
        ca.register(
            &clerk,
            "sneakyrevoker",
            "client",
            "hospital1",
            &[("hf.Revoker", "true")],
        )
        .await,
    );
    assert_eq!((e.status, e.code), (403, 42));
    let e = refused(
        ca.register(&clerk, "badaff", "client", "elsewhere", &[])
            .await,
    );
    assert_eq!(e.status, 403);
    ca.register(
        &clerk,
        "patient1",
        "client",
        "hospital1",
        &[("role", "patient")],
    )
    .await?;

    // Malformed CSR and a CSR whose key is not P-256.
    let bad_csr = |csr: String| EnrollRequest {
        certificate_request: csr,
        ..Default::default()
    };
    let e = refused(ca.client.enroll("patient1", "patient1pw", &bad_csr("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into())).await);
    assert_eq!((e.status, e.code), (400, 31));
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
    let csr = rcgen::CertificateParams::new(vec!["patient1".to_string()])?
        .serialize_request(&p384)?
        .pem()?;
    let e = refused(
        ca.client
            .enroll("patient1", "patient1pw", &bad_csr(csr))
            .await,
    );
    assert_eq!((e.status, e.code), (400, 31));
    assert!(e.message.contains("P-256"), "{}", e.message);
    // ...and those failures did not use up an enrollment or store anything.
    ca.enroll(&ids, "patient1", "patient1pw", &[]).await?;

    // A token signed by a registrar whose certificate has been revoked.
    ca.client
        .revoke(
            &admin,
            &RevokeRequest {
                id: "clerk".into(),
                ..Default::default()
            },
        )
        .await?;
    let e = refused(
        ca.register(&clerk, "afterrevoke", "client", "hospital1", &[])
            .await,
    );
    assert_eq!(e.status, 401);
    assert!([28, 70].contains(&e.code), "code {}", e.code);

    // An oversized body.
    let big = serde_json::to_vec(
        &serde_json::json!({"id": "big", "affiliation": "hospital1", "secret": "x".repeat(100_000)}),
    )?;
    let token = auth_token(&admin, "POST", "/api/v1/register", &big)?;
    let (status, body) = ca
        .client
        .raw("POST", "register", Some(big), Some(token))
        .await?;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["success"], false);

    // Garbage JSON, a missing token, a forged signature.
    let garbage = b"{not json".to_vec();
    let token = auth_token(&admin, "POST", "/api/v1/register", &garbage)?;
    let (status, body) = ca
        .client
        .raw("POST", "register", Some(garbage), Some(token))
        .await?;
    assert_eq!((status, body["errors"][0]["code"].as_u64()), (400, Some(5)));
    let (status, _) = ca
        .client
        .raw("POST", "register", Some(b"{}".to_vec()), None)
        .await?;
    assert_eq!(status, 401);
    let body =
        serde_json::to_vec(&serde_json::json!({"id": "forged", "affiliation": "hospital1"}))?;
    let token = auth_token(&admin, "POST", "/api/v1/register", b"{\"id\":\"other\"}")?;
    let (status, _) = ca
        .client
        .raw("POST", "register", Some(body), Some(token))
        .await?;
    assert_eq!(status, 401);

    // A replayed token: the first use registers, the replay is refused as such.
    let body = serde_json::to_vec(
        &serde_json::json!({"id": "replayed", "affiliation": "hospital1", "secret": "r"}),
    )?;
    let token = auth_token(&admin, "POST", "/api/v1/register", &body)?;
    let (status, _) = ca
        .client
        .raw("POST", "register", Some(body.clone()), Some(token.clone()))
        .await?;
    assert_eq!(status, 200);
    let (status, reply) = ca
        .client
        .raw("POST", "register", Some(body), Some(token))
        .await?;
    assert_eq!(
        (status, reply["errors"][0]["code"].as_u64()),
        (401, Some(25)),
        "{reply}"
    );

    let list = ca.client.identities(&admin).await?;
    let names: Vec<&str> = list["identities"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    for refused_id in [
        "evil",
        "sneakypeer",
        "sneakyrevoker",
        "badaff",
        "afterrevoke",
        "big",
        "forged",
        "other",
    ] {
        assert!(
            !names.contains(&refused_id),
            "{refused_id} must not be stored: {names:?}"
        );
    }
    ca.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_identities_and_certificates() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let home = dir.path().join("ca");
    let ids = dir.path().join("ids");
    let ca = RunningCa::start(&home).await?;
    let ca_pem = ca.ca_pem();
    let admin = ca.enroll(&ids, "admin", "adminpw", &[]).await?;
    ca.register(
        &admin,
        "doctor1",
        "client",
        "hospital1",
        &[("role", "doctor")],
    )
    .await?;
    let doctor = ca.enroll(&ids, "doctor1", "doctor1pw", &[]).await?;
    ca.stop().await;

    let ca = RunningCa::start(&home).await?;
    assert_eq!(ca.ca_pem(), ca_pem, "the CA keeps its key and certificate");
    // Certificates issued before the restart still authenticate (the certificate store survived).
    let key = PrivateKey::generate();
    let csr = medledger_common::issue::certificate_request_pem(&key, "doctor1", &[])?;
    ca.client
        .reenroll(
            &doctor,
            &EnrollRequest {
                certificate_request: csr,
                ..Default::default()
            },
        )
        .await?;
    let list = ca.client.identities(&admin).await?;
    let names: Vec<&str> = list["identities"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert!(names.contains(&"doctor1"));
    let e = refused(
        ca.register(&admin, "doctor1", "client", "hospital1", &[])
            .await,
    );
    assert_eq!(e.status, 409, "already registered before the restart");
    ca.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_npm_fabric_ca_client_works_unchanged() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = RunningCa::start(&dir.path().join("ca")).await?;
    let tls_root = CaHome::new(&dir.path().join("ca")).cert();
    let url = format!("https://localhost:{}", ca.port);
    let out = tokio::task::spawn_blocking(move || {
        run_node(
            "ca_client.js",
            &[&url, tls_root.to_str().unwrap(), "ca-hospital1", MSPID],
        )
    })
    .await??;
    let v: serde_json::Value = serde_json::from_str(&out)?;

    let ca_cert = Certificate::from_pem(&ca.ca_pem())?;
    for field in ["admin_cert", "user_cert", "reenrolled_cert"] {
        let cert = Certificate::from_pem(v[field].as_str().unwrap().as_bytes())?;
        assert!(
            cert.is_signed_by(&ca_cert),
            "{field} verifies against our CA"
        );
    }
    assert_eq!(v["secret"], "nodeuserpw");
    assert!(
        v["root_chain"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let user = Certificate::from_pem(v["user_cert"].as_str().unwrap().as_bytes())?;
    assert_eq!(
        user.attributes.get("role").map(String::as_str),
        Some("nurse")
    );
    assert_eq!(
        v["revoked_certs"].as_array().unwrap().len(),
        2,
        "enrollment and reenrollment certificates"
    );
    let crl = medledger_common::cert::RevocationList::parse(v["crl"].as_str().unwrap().as_bytes())?;
    assert!(crl.is_signed_by(&ca_cert));
    assert!(crl.revokes(&user.serial));
    assert!(
        v["enroll_after_revoke_error"]
            .as_str()
            .unwrap_or("")
            .contains("70"),
        "{}",
        v["enroll_after_revoke_error"]
    );
    ca.stop().await;
    Ok(())
}
