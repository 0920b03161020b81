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
use medledger_tests::ca_net::{CaOptions, MSPID, RunningCa};
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

    // A method an endpoint does not take: Fabric CA's JSON error (it used to be a bare 405).
    let (status, reply) = ca.client.raw("DELETE", "register", None, None).await?;
    assert_eq!(
        (status, reply["errors"][0]["code"].as_u64()),
        (405, Some(1)),
        "{reply}"
    );
    assert_eq!(
        reply["errors"][0]["message"],
        "Method DELETE is not allowed"
    );

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

    // A replayed token: the first use registers; the replay would change nothing, so it gets
    // Fabric CA's answer (already registered).
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
        (409, Some(74)),
        "{reply}"
    );
    // A replayed reenroll would issue another certificate: refused as a replay.
    let key = PrivateKey::generate();
    let body = serde_json::to_vec(&EnrollRequest {
        certificate_request: medledger_common::issue::certificate_request_pem(&key, "admin", &[])?,
        ..Default::default()
    })?;
    let token = auth_token(&admin, "POST", "/api/v1/reenroll", &body)?;
    let (status, _) = ca
        .client
        .raw("POST", "reenroll", Some(body.clone()), Some(token.clone()))
        .await?;
    assert_eq!(status, 200);
    let (status, reply) = ca
        .client
        .raw("POST", "reenroll", Some(body), Some(token))
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

fn node_outcome<'a>(v: &'a serde_json::Value, step: &str) -> &'a serde_json::Value {
    let o = &v[step];
    assert!(!o.is_null(), "no outcome for {step}");
    o
}

/// The code of a refusal the npm client surfaced for `step` (panics on success).
fn refusal_code(v: &serde_json::Value, step: &str) -> u64 {
    let o = node_outcome(v, step);
    o["code"]
        .as_u64()
        .unwrap_or_else(|| panic!("{step} should have been refused: {o}"))
}

fn succeeded<'a>(v: &'a serde_json::Value, step: &str) -> &'a serde_json::Value {
    let o = node_outcome(v, step);
    assert!(o.get("ok").is_some(), "{step} failed: {o}");
    &o["ok"]
}

/// A certificate's subject CN (its enrollment id).
fn cn(c: &Certificate) -> &str {
    c.subject
        .split(',')
        .find_map(|part| part.trim().strip_prefix("CN="))
        .unwrap_or_default()
}

fn cert_attrs(pem: &serde_json::Value) -> Vec<String> {
    let cert = Certificate::from_pem(pem.as_str().expect("certificate PEM").as_bytes())
        .expect("certificate parses");
    cert.attributes.keys().cloned().collect()
}

/// The real npm client drives identities, affiliations and certificates, several CAs in one
/// server and Fabric CA's attribute rules, success and refusal, with Fabric CA's codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_npm_client_manages_identities_affiliations_and_certificates() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = RunningCa::start_with(
        &dir.path().join("ca"),
        &CaOptions {
            allow_remove: true,
            second_ca: Some("ca-hospital2".into()),
        },
    )
    .await?;
    let tls_root = CaHome::new(&dir.path().join("ca")).cert();
    let url = format!("https://localhost:{}", ca.port);
    let out = tokio::task::spawn_blocking(move || {
        run_node(
            "ca_services.js",
            &[
                &url,
                tls_root.to_str().unwrap(),
                "ca-hospital1",
                "ca-hospital2",
                MSPID,
            ],
        )
    })
    .await??;
    let v: serde_json::Value = serde_json::from_str(&out)?;

    // Identities.
    assert!(succeeded(&v, "create")["secret"].is_string());
    let one = succeeded(&v, "get_one");
    assert_eq!(one["affiliation"], "hospital1.nursing");
    assert_eq!(one["caname"], "ca-hospital1");
    let names: Vec<&str> = one["attrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["role", "hf.EnrollmentID", "hf.Type", "hf.Affiliation"]
    );
    let all: Vec<&str> = succeeded(&v, "get_all")["identities"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert!(all.contains(&"nurse2") && all.contains(&"admin"), "{all:?}");
    let updated = succeeded(&v, "update");
    assert_eq!(updated["secret"], "newpw");
    let modified = Certificate::from_pem(
        succeeded(&v, "enroll_modified")
            .as_str()
            .unwrap()
            .as_bytes(),
    )?;
    assert_eq!(
        modified.attributes.get("role").map(String::as_str),
        Some("headnurse")
    );
    assert_eq!(refusal_code(&v, "update_bad_affiliation"), 58);
    assert_eq!(refusal_code(&v, "get_missing"), 63);
    // A registrar for clients, allowed to give `role`: nothing beyond.
    assert_eq!(refusal_code(&v, "clerk_creates_peer"), 54);
    assert_eq!(refusal_code(&v, "clerk_gives_patient_id"), 42);
    succeeded(&v, "clerk_creates_client");
    assert_eq!(refusal_code(&v, "clerk_gets_peer"), 44);
    assert_eq!(refusal_code(&v, "clerk_modifies_admin"), 44);
    // Revoke applies Fabric CA's type check (it used to let this clerk revoke a peer).
    assert_eq!(refusal_code(&v, "clerk_revokes_peer"), 44);
    assert_eq!(refusal_code(&v, "delete_self"), 56);
    assert_eq!(succeeded(&v, "delete")["id"], "nurse2");
    assert_eq!(refusal_code(&v, "get_deleted"), 63);

    // Affiliations.
    let tree = succeeded(&v, "aff_all");
    assert_eq!(tree["name"], "hospital1");
    let subs: Vec<&str> = tree["affiliations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(subs, ["hospital1.cardiology", "hospital1.nursing"]);
    assert_eq!(succeeded(&v, "aff_create")["name"], "hospital1.radiology");
    assert_eq!(refusal_code(&v, "aff_create_again"), 60);
    assert_eq!(refusal_code(&v, "aff_create_orphan"), 63);
    succeeded(&v, "aff_create_forced");
    assert_eq!(
        refusal_code(&v, "aff_rename"),
        64,
        "identities in it need force"
    );
    let renamed = succeeded(&v, "aff_rename_forced");
    assert_eq!(renamed["name"], "hospital1.imaging");
    assert_eq!(renamed["identities"][0]["id"], "rad1");
    assert_eq!(
        succeeded(&v, "rad1_after_rename")["affiliation"],
        "hospital1.imaging"
    );
    let one = succeeded(&v, "aff_one").to_string();
    assert!(
        one.contains("hospital1.imaging") && one.contains("rad1"),
        "{one}"
    );
    assert_eq!(
        refusal_code(&v, "aff_delete_parent"),
        61,
        "sub-affiliations need force"
    );
    succeeded(&v, "aff_delete_forced");
    assert_eq!(refusal_code(&v, "aff_by_clerk"), 78, "no hf.AffiliationMgr");

    // Certificates.
    let pems = |step: &str| -> Vec<Certificate> {
        succeeded(&v, step)["certs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| Certificate::from_pem(c["PEM"].as_str().unwrap().as_bytes()).unwrap())
            .collect()
    };
    let admin_certs = pems("certs_admin");
    assert!(!admin_certs.is_empty());
    assert!(admin_certs.iter().all(|c| cn(c) == "admin"));
    let revoked = pems("certs_revoked_recently");
    assert!(
        revoked.iter().any(|c| cn(c) == "nurse2"),
        "a removed identity's certificates are revoked"
    );
    let not_revoked = pems("certs_not_revoked");
    assert!(not_revoked.iter().all(|c| cn(c) != "nurse2"));
    assert_eq!(refusal_code(&v, "certs_bad_time"), 67);
    let clerk_sees = pems("certs_clerk");
    assert!(
        !clerk_sees.is_empty() && clerk_sees.iter().all(|c| cn(c) != "admin"),
        "scoped to the clerk's affiliation"
    );
    assert_eq!(refusal_code(&v, "certs_plain_client"), 71);

    // Attribute rules: defaults are the ecert ones (with hf.*); requests give exactly those.
    let mut default = cert_attrs(succeeded(&v, "attrs_default"));
    default.sort();
    assert_eq!(
        default,
        ["hf.Affiliation", "hf.EnrollmentID", "hf.Type", "role"]
    );
    assert_eq!(cert_attrs(succeeded(&v, "attrs_requested")), ["dept"]);
    assert_eq!(refusal_code(&v, "attrs_missing"), 0);
    assert!(
        v["attrs_missing"]["message"]
            .as_str()
            .unwrap()
            .contains("missing")
    );
    assert!(cert_attrs(succeeded(&v, "attrs_reenroll_none")).is_empty());

    // The second CA of the server, and an unknown one.
    let other = Certificate::from_pem(
        succeeded(&v, "other_ca_enroll")
            .as_str()
            .unwrap()
            .as_bytes(),
    )?;
    let other_ca = Certificate::from_pem(&std::fs::read(
        CaHome::new(&dir.path().join("ca/ca-hospital2")).cert(),
    )?)?;
    assert!(other.is_signed_by(&other_ca));
    assert_eq!(refusal_code(&v, "other_ca_wrong_identity"), 20);
    assert_eq!(refusal_code(&v, "unknown_ca_enroll"), 19);
    assert_eq!(
        v["unknown_ca_enroll"]["message"],
        "CA 'no-such-ca' does not exist"
    );
    assert_eq!(refusal_code(&v, "unknown_ca_identities"), 19);

    // The operations endpoint counts what was answered.
    let (listener, addr) = medledger_common::ops::bind("127.0.0.1:0").await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(medledger_ca::server::serve_operations(
        listener,
        ca.cas.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let metrics = http_get(addr, "/metrics").await?;
    for line in [
        "api_request_count{api_name=\"identities\",status_code=\"201\"}",
        "api_request_count{api_name=\"enroll\",status_code=\"404\"}",
        "api_request_count{api_name=\"affiliations/{name}\",status_code=\"403\"}",
        "ca_enrollments_total{ca_name=\"ca-hospital2\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    let revocations = metrics
        .lines()
        .find(|l| l.starts_with("ca_revocations_total{ca_name=\"ca-hospital1\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok());
    assert!(revocations.is_some_and(|n| n >= 1.0), "{metrics}");
    assert!(http_get(addr, "/healthz").await?.contains("OK"));
    let _ = stop.send(());
    ca.stop().await;
    Ok(())
}

/// A plain HTTP GET's body (the operations endpoint speaks HTTP).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}
