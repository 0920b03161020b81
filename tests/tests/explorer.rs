//! The explorer in a real browser: headless Chromium (Debian's package) drives explorers
//! running as four identities against a two-hospital network with the medical chaincode. A
//! record created, amended, shared under consent and read at both hospitals; the channel page
//! follows a new block live; a block's and a transaction's pages; the record's timeline with
//! its versions, shares, consents and accesses; the patient's view; another patient refused;
//! a certificate verified with the document hashed by the page's JavaScript (pasted, then
//! uploaded) as valid, then revoked. Screenshots are kept under the target directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use medledger_common::SigningIdentity;
use medledger_explorer::{Config, RunningExplorer};
use medledger_tests::browser::Browser;
use medledger_tests::peernet::{CHAINCODE, CHANNEL, PeerNet};
use prost::Message;

const V1: &str =
    r#"{"resourceType":"Observation","status":"final","valueString":"128/82 secret-v1"}"#;
const V2: &str =
    r#"{"resourceType":"Observation","status":"amended","valueString":"131/85 secret-v2"}"#;
/// An amendment reason with markup in it: the pages must show it as text.
const REASON: &str = r#"re-measured <b>after</b> rest & "calm""#;
const DOC: &str = "Sick leave for P-0042: 3 days.\nDr. doctor1, Hospital1\n";

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("explorer-screenshots")
}

/// An explorer on 127.0.0.1 (a port below the ephemeral range) as `id`, through peer `peer`.
async fn explorer(
    net: &PeerNet,
    dir: &Path,
    name: &str,
    id: &SigningIdentity,
    org: usize,
    peer: usize,
) -> anyhow::Result<RunningExplorer> {
    let msp = dir.join(format!("{name}-msp"));
    net.orgs[org].write_msp(&msp, id)?;
    let tls = dir.join(format!("tlsca-{peer}.pem"));
    std::fs::write(&tls, net.orgs[peer].tls_ca.cert_pem())?;
    let port = medledger_tests::ordernet::free_port()?;
    Ok(medledger_explorer::start(Config {
        listen: format!("127.0.0.1:{port}").parse()?,
        channel: CHANNEL.into(),
        chaincode: CHAINCODE.into(),
        peer_address: net.address(peer),
        tls_root: Some(tls),
        mspdir: msp,
        mspid: net.orgs[org].mspid.clone(),
    })
    .await?)
}

fn url(e: &RunningExplorer, path: &str) -> String {
    format!("http://{}{path}", e.address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_explorer_shows_the_trail_in_a_real_browser() -> anyhow::Result<()> {
    let mut browser = Browser::start().await?;
    let net = medledger_tests::peernet::start_medical(2).await?;
    let dir = tempfile::tempdir()?;
    let doctor1 = net.orgs[0].identity("doctor1", "client", &[("role", "doctor")])?;
    let patient = net.orgs[0].identity(
        "patient1",
        "client",
        &[("role", "patient"), ("patientId", "P-0042")],
    )?;
    let stranger = net.orgs[0].identity(
        "patient9",
        "client",
        &[("role", "patient"), ("patientId", "P-0099")],
    )?;
    let doctor2 = net.orgs[1].identity("doctor2", "client", &[("role", "doctor")])?;
    let now = medledger_common::msp::unix_now();

    // The scenario: create, amend, consent, share, two reads, a certificate.
    let mut h1 = net.gateway(0, doctor1.clone()).await?;
    let transient = |content: &str| {
        let salt: [u8; 32] = rand::random();
        HashMap::from([
            ("content".to_owned(), content.as_bytes().to_vec()),
            ("salt".to_owned(), salt.to_vec()),
        ])
    };
    let record = r#"{"id":"R-1","patientId":"P-0042","resourceType":"Observation"}"#;
    let (create_tx, _, create_block, _) = h1
        .submit_with(&["CreateRecord", record], transient(V1))
        .await?;
    h1.submit_with(&["AmendRecord", "R-1", REASON], transient(V2))
        .await?;
    let mut as_patient = net.gateway(0, patient.clone()).await?;
    let consent = serde_json::json!({
        "id": "C-1", "granteeMsp": "Hospital2MSP", "scope": {"recordTypes": ["Observation"]},
        "purpose": "second opinion", "expiresAt": now + 3600
    })
    .to_string();
    as_patient.submit(&["GrantConsent", &consent]).await?;
    h1.submit(&["ShareRecord", "R-1", "C-1"]).await?;
    let mut h2 = net.gateway(1, doctor2.clone()).await?;
    h2.submit(&["RequestAccess", "R-1", "second opinion"])
        .await?;
    h1.submit(&["RequestAccess", "R-1", "follow-up visit"])
        .await?;
    let doc_hash = hex::encode(medledger_common::crypto::sha256(DOC.as_bytes()));
    let certificate = serde_json::json!({
        "id": "SL-1", "patientId": "P-0042", "type": "sick_leave", "contentHash": doc_hash,
        "validFrom": now - 60, "validUntil": now + 3 * 86400
    })
    .to_string();
    let (_, _, block, _) = h1.submit(&["IssueCertificate", &certificate]).await?;
    net.wait_height(block + 1).await?;

    let as_doctor = explorer(&net, dir.path(), "doctor1", &doctor1, 0, 0).await?;
    let as_patient_ex = explorer(&net, dir.path(), "patient1", &patient, 0, 0).await?;
    let as_stranger = explorer(&net, dir.path(), "patient9", &stranger, 0, 0).await?;
    let at_h2 = explorer(&net, dir.path(), "doctor2", &doctor2, 1, 1).await?;
    let shots = screenshots();

    // Security headers, and nothing the page would load from elsewhere.
    let raw = medledger_tests::http_get(as_doctor.address, "/").await?;
    let head = raw.to_ascii_lowercase();
    for h in [
        "content-security-policy: default-src 'self'",
        "frame-ancestors 'none'",
        "x-content-type-options: nosniff",
        "referrer-policy: no-referrer",
    ] {
        assert!(head.contains(h), "missing {h}: {raw}");
    }
    assert!(
        !raw.contains("src=\"http") && !raw.contains("href=\"http"),
        "{raw}"
    );

    // The channel page: height, blocks with their orderer signers, then a new block live.
    browser.open(&url(&as_doctor, "/")).await?;
    let height = net.channel(0).await?.ledger.height();
    browser
        .wait_for("document.querySelectorAll('#blocks tbody tr').length >= 3")
        .await?;
    assert_eq!(browser.text("#height").await?, height.to_string());
    assert!(
        browser
            .eval("document.querySelectorAll('#blocks .signer').length")
            .await?
            .as_u64()
            >= Some(3),
        "a BFT quorum of signers per block"
    );
    assert!(
        browser
            .eval("document.querySelectorAll('#tx-per-block rect').length")
            .await?
            .as_u64()
            >= Some(3)
    );
    browser
        .wait_for("document.getElementById('live').innerText === 'live'")
        .await?;
    let second = serde_json::json!({
        "id": "SL-2", "patientId": "P-0042", "type": "fitness", "contentHash": "ab".repeat(32),
        "validFrom": now - 60, "validUntil": now + 86400
    })
    .to_string();
    let (_, _, live_block, _) = h1.submit(&["IssueCertificate", &second]).await?;
    browser
        .wait_for(&format!(
            "!!document.querySelector('#blocks tr[data-block=\"{live_block}\"].new')"
        ))
        .await?;
    assert_eq!(browser.text("#height").await?, (live_block + 1).to_string());
    browser.screenshot(&shots.join("channel.png")).await?;
    let resources_elsewhere = browser
        .eval("performance.getEntriesByType('resource').filter(e => !e.name.startsWith(location.origin)).length")
        .await?;
    assert_eq!(resources_elsewhere.as_u64(), Some(0));

    // A block's transactions, then the transaction's read/write set and endorsers.
    browser
        .open(&url(&as_doctor, &format!("/block/{create_block}")))
        .await?;
    let txs = browser.text("#transactions").await?;
    for expected in [
        &create_tx[..12],
        "CreateRecord",
        "VALID",
        "Hospital1MSP",
        CHAINCODE,
    ] {
        assert!(txs.contains(expected), "{expected} missing from {txs}");
    }
    browser
        .open(&url(&as_doctor, &format!("/tx/{create_tx}")))
        .await?;
    let page = browser.text("main").await?;
    assert!(page.contains("record/R-1"), "{page}");
    assert!(
        browser.text("#endorsers").await?.contains("Hospital1MSP"),
        "{page}"
    );
    assert!(
        page.contains("_implicit_org_Hospital1MSP"),
        "the private write, by hash: {page}"
    );
    assert!(
        !page.contains("secret-v1"),
        "no record content on the page: {page}"
    );
    browser.screenshot(&shots.join("transaction.png")).await?;

    // The record as its patient sees it: two versions, the share, the consent, both reads.
    browser.open(&url(&as_patient_ex, "/record/R-1")).await?;
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#versions li').length")
            .await?
            .as_u64(),
        Some(2)
    );
    let v2 = browser.text("#versions li[data-version=\"2\"]").await?;
    assert!(
        v2.contains(REASON) && v2.contains("doctor1"),
        "the amendment reason, as text: {v2}"
    );
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#versions b').length")
            .await?
            .as_u64(),
        Some(0),
        "markup in a value is never markup on the page"
    );
    let accesses = browser.text("#accesses").await?;
    for expected in [
        "second opinion",
        "Hospital2MSP",
        "doctor2",
        "follow-up visit",
        "doctor1",
        "share",
        "custodian",
    ] {
        assert!(
            accesses.contains(expected),
            "{expected} missing from {accesses}"
        );
    }
    assert!(browser.text("#shares").await?.contains("Hospital2MSP"));
    assert!(browser.text("#consents").await?.contains("C-1"));
    browser.screenshot(&shots.join("record.png")).await?;
    // The proof the page links to verifies offline against the genesis block.
    let proof = medledger_tests::http_get(as_patient_ex.address, "/record/R-1/proof.json").await?;
    let json = proof
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let bundle: medledger_common::proof::ProofBundle = serde_json::from_str(json)?;
    let genesis = medledger_proto::common::Block::decode(
        std::fs::read(&net.orderers.genesis_path)?.as_slice(),
    )?;
    let verified = medledger_common::proof::verify(&bundle, &genesis)?;
    assert!(verified.claims.len() >= 4, "{:?}", verified.claims.len());

    // The patient's own view: records, consents, the access log across them.
    browser.open(&url(&as_patient_ex, "/patient")).await?;
    assert!(browser.text("#records").await?.contains("R-1"));
    let consents = browser.text("#consents").await?;
    assert!(
        consents.contains("C-1") && consents.contains("active"),
        "{consents}"
    );
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#accesses tbody tr').length")
            .await?
            .as_u64(),
        Some(2)
    );
    browser.screenshot(&shots.join("patient.png")).await?;

    // The patient grants a consent with the page's form, then revokes it with its button: both
    // are transactions the explorer submits as the patient, and the page shows their effect.
    browser
        .type_into("#grant-form input[name=id]", "C-7")
        .await?;
    browser
        .type_into("#grant-form input[name=grantee]", "Hospital2MSP")
        .await?;
    browser
        .type_into("#grant-form input[name=records]", "R-1")
        .await?;
    browser
        .type_into("#grant-form input[name=purpose]", "second opinion")
        .await?;
    browser
        .eval("document.querySelector('#grant-form').submit()")
        .await?;
    browser
        .wait_for(
            "location.pathname === '/patient' && !!document.querySelector('tr[data-consent=\"C-7\"]')",
        )
        .await?;
    let granted = browser.text("tr[data-consent=\"C-7\"]").await?;
    assert!(
        granted.contains("Hospital2MSP") && granted.contains("active"),
        "{granted}"
    );
    browser
        .eval("document.querySelector('tr[data-consent=\"C-7\"] form.revoke').submit()")
        .await?;
    browser
        .wait_for(
            "(() => { const r = document.querySelector('tr[data-consent=\"C-7\"]'); \
             return !!r && r.innerText.includes('revoked'); })()",
        )
        .await?;
    browser
        .screenshot(&shots.join("patient-revoked.png"))
        .await?;
    // A form from elsewhere (no token) changes nothing, and a staff explorer has no such forms.
    let forged = medledger_tests::http_post_form(
        as_patient_ex.address,
        "/patient/consents/C-1/revoke",
        "token=forged",
    )
    .await?;
    assert!(forged.starts_with("HTTP/1.1 403"), "{forged}");
    browser.open(&url(&as_patient_ex, "/patient")).await?;
    let c1 = browser.text("tr[data-consent=\"C-1\"]").await?;
    assert!(
        c1.contains("active"),
        "C-1 untouched by the forged form: {c1}"
    );
    // A page of another site whose name resolves here (DNS rebinding) gets nothing.
    let rebound = medledger_tests::http_request(
        as_patient_ex.address,
        "GET /patient HTTP/1.1\r\nHost: evil.example:7080\r\nConnection: close\r\n\r\n",
    )
    .await?;
    assert!(
        rebound.starts_with("HTTP/1.1 421") && !rebound.contains("grant-form"),
        "{rebound}"
    );
    let staff = medledger_tests::http_get(as_doctor.address, "/patient/P-0042").await?;
    assert!(
        staff.starts_with("HTTP/1.1 200")
            && !staff.contains("grant-form")
            && !staff.contains("class=\"revoke\""),
        "{staff}"
    );

    // Another patient is refused, and the page says so.
    browser.open(&url(&as_stranger, "/record/R-1")).await?;
    let refusal = browser.text("#refusal").await?;
    assert!(refusal.contains("forbidden"), "{refusal}");
    assert!(
        browser
            .eval("document.querySelector('#versions') === null")
            .await?
            .as_bool()
            == Some(true)
    );
    browser.screenshot(&shots.join("refused.png")).await?;
    let raw = medledger_tests::http_get(as_stranger.address, "/record/R-1").await?;
    assert!(raw.starts_with("HTTP/1.1 403"), "{raw}");

    // The certificate checked at Hospital2: the document pasted, hashed by the page.
    browser.open(&url(&at_h2, "/certificate")).await?;
    browser.type_into("#cert-id", "SL-1").await?;
    browser.type_into("#doc-text", DOC).await?;
    browser
        .eval("document.getElementById('verify').click()")
        .await?;
    browser
        .wait_for("!!document.getElementById('verdict')")
        .await?;
    assert_eq!(
        browser
            .eval("document.getElementById('verdict').dataset.status")
            .await?,
        "valid"
    );
    assert_eq!(
        browser.text("#checked-hash").await?,
        doc_hash,
        "the page's WebCrypto hash"
    );
    assert!(browser.text("#issuer").await?.contains("Hospital1MSP"));
    browser
        .screenshot(&shots.join("certificate-valid.png"))
        .await?;

    // Revoked by its issuer: the same document, uploaded this time, is reported revoked.
    let (_, _, block, _) = h1
        .submit(&["RevokeCertificate", "SL-1", "issued in error"])
        .await?;
    net.wait_height(block + 1).await?;
    let doc_file = dir.path().join("sick-note.txt");
    std::fs::write(&doc_file, DOC)?;
    browser.open(&url(&at_h2, "/certificate")).await?;
    browser.type_into("#cert-id", "SL-1").await?;
    browser.choose_file("#doc-file", &doc_file).await?;
    browser
        .eval("document.getElementById('verify').click()")
        .await?;
    browser
        .wait_for("!!document.getElementById('verdict')")
        .await?;
    assert_eq!(
        browser
            .eval("document.getElementById('verdict').dataset.status")
            .await?,
        "revoked"
    );
    assert_eq!(browser.text("#checked-hash").await?, doc_hash);
    assert!(
        browser.text("#revoked-by").await?.contains("doctor1"),
        "who revoked it"
    );
    browser
        .screenshot(&shots.join("certificate-revoked.png"))
        .await?;
    // An id the ledger does not know.
    browser.open(&url(&at_h2, "/certificate")).await?;
    browser.type_into("#cert-id", "SL-404").await?;
    browser.type_into("#doc-text", DOC).await?;
    browser
        .eval("document.getElementById('verify').click()")
        .await?;
    browser
        .wait_for("!!document.getElementById('verdict')")
        .await?;
    assert_eq!(
        browser
            .eval("document.getElementById('verdict').dataset.status")
            .await?,
        "unknown"
    );

    println!("explorer screenshots: {}", shots.display());
    for e in [as_doctor, as_patient_ex, as_stranger, at_h2] {
        e.stop().await;
    }
    Ok(())
}
