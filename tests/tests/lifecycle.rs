//! Fabric 2's chaincode lifecycle through the `medledger-peer lifecycle chaincode` CLI against
//! two hospitals' peers and four BFT orderers: package, install on each peer (admins only),
//! approve per organisation, check commit readiness, commit under LifecycleEndorsement (refused
//! until a majority approved), query the committed definition, then invoke the chaincode it
//! defines, private data collections included.

use std::path::{Path, PathBuf};
use std::process::Command;

use medledger_tests::peernet::{CHANNEL, PeerNet};
use medledger_tests::{peer_cli, workspace_binary};

struct Cli {
    bin: PathBuf,
    dir: PathBuf,
}

impl Cli {
    /// Runs `medledger-peer <args>` as `mspid` with the MSP folder `msp`, against peer `peer`.
    fn run(
        &self,
        net: &PeerNet,
        peer: usize,
        mspid: &str,
        msp: &Path,
        args: &[&str],
    ) -> (bool, String) {
        let tls = self.dir.join(format!("tlsca{peer}.pem"));
        let _ = std::fs::write(&tls, net.orgs[peer].tls_ca.cert_pem());
        peer_cli(&self.bin, &net.address(peer), &tls, mspid, msp, args)
    }
}

const COLLECTIONS: &str = r#"[{"name": "shared_Hospital1MSP_Hospital2MSP",
  "policy": "OR('Hospital1MSP.member', 'Hospital2MSP.member')",
  "requiredPeerCount": 1, "maxPeerCount": 1, "memberOnlyRead": true, "memberOnlyWrite": true}]"#;

fn def_args<'a>(sequence: &'a str, collections: &'a str) -> Vec<&'a str> {
    vec![
        "-C",
        CHANNEL,
        "-n",
        "medical",
        "-v",
        "1.0",
        "--sequence",
        sequence,
        "--signature-policy",
        "OR('Hospital1MSP.peer','Hospital2MSP.peer')",
        "--collections-config",
        collections,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn package_install_approve_commit_then_invoke() -> anyhow::Result<()> {
    let bin = tokio::task::spawn_blocking(|| workspace_binary("medledger-peer", "medledger-peer"))
        .await??;
    let net = PeerNet::start("AND('Hospital1MSP.peer', 'Hospital2MSP.peer')", 10_000).await?;
    let dir = net.dir.path().join("lifecycle");
    std::fs::create_dir_all(&dir)?;
    let cli = Cli {
        bin: bin.clone(),
        dir: dir.clone(),
    };
    // The medical chaincode server the package points at.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let collections = dir.join("collections_config.json");
    std::fs::write(&collections, COLLECTIONS)?;
    let collections = collections.to_string_lossy().into_owned();

    let package = dir.join("medical.tar.gz");
    let out = Command::new(&bin)
        .args(["lifecycle", "chaincode", "package"])
        .arg(&package)
        .args(["--label", "medical_1.0", "--address", &address])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let package_id = text
        .rsplit("package ID: ")
        .next()
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    assert!(package_id.starts_with("medical_1.0:"), "{text}");
    tokio::spawn(medledger_shim::serve_with_listener(
        listener,
        package_id.clone(),
        None,
        medledger_medical_chaincode::MedicalChaincode,
        std::future::pending(),
    ));

    let mut admins = Vec::new();
    for (i, org) in net.orgs.iter().enumerate() {
        let admin = org.identity(&format!("admin{i}"), "admin", &[])?;
        let msp = dir.join(format!("admin{i}/msp"));
        org.write_msp(&msp, &admin)?;
        admins.push(msp);
    }
    let client_msp = dir.join("client/msp");
    net.orgs[0].write_msp(&client_msp, &net.orgs[0].identity("app", "client", &[])?)?;
    let pkg = package.to_string_lossy().into_owned();

    // Install: a client may not, an admin may, a broken package is refused.
    let (ok, out) = cli.run(
        &net,
        0,
        "Hospital1MSP",
        &client_msp,
        &["lifecycle", "chaincode", "install", &pkg],
    );
    assert!(!ok && out.contains("only an admin"), "{out}");
    let junk = dir.join("junk.tar.gz");
    std::fs::write(&junk, b"not a package")?;
    let (ok, out) = cli.run(
        &net,
        0,
        "Hospital1MSP",
        &admins[0],
        &["lifecycle", "chaincode", "install", &junk.to_string_lossy()],
    );
    assert!(!ok && out.contains("package"), "{out}");
    for (i, admin) in admins.iter().enumerate() {
        let mspid = net.orgs[i].mspid.clone();
        let (ok, out) = cli.run(
            &net,
            i,
            &mspid,
            admin,
            &["lifecycle", "chaincode", "install", &pkg],
        );
        assert!(
            ok && out.contains(&package_id),
            "install on peer {i}: {out}"
        );
    }

    let (ok, out) = cli.run(
        &net,
        1,
        "Hospital2MSP",
        &admins[1],
        &["lifecycle", "chaincode", "queryinstalled"],
    );
    assert!(
        ok && out.contains(&format!("Package ID: {package_id}, Label: medical_1.0")),
        "{out}"
    );

    let approve = |i: usize, seq: &str| {
        let mut args = vec!["lifecycle", "chaincode", "approveformyorg"];
        args.extend(def_args(seq, &collections));
        args.extend(["--package-id", &package_id]);
        let mspid = net.orgs[i].mspid.clone();
        cli.run(&net, i, &mspid, &admins[i], &args)
    };
    let readiness = || {
        let mut args = vec!["lifecycle", "chaincode", "checkcommitreadiness"];
        args.extend(def_args("1", &collections));
        cli.run(&net, 0, "Hospital1MSP", &admins[0], &args)
    };
    let commit = || {
        let mut args = vec!["lifecycle", "chaincode", "commit"];
        args.extend(def_args("1", &collections));
        cli.run(&net, 0, "Hospital1MSP", &admins[0], &args)
    };

    // A wrong sequence, or a client, cannot approve.
    let (ok, out) = approve(0, "2");
    assert!(!ok && out.contains("must be sequence 1"), "{out}");
    let mut args = vec!["lifecycle", "chaincode", "approveformyorg"];
    args.extend(def_args("1", &collections));
    args.extend(["--package-id", &package_id]);
    let (ok, out) = cli.run(&net, 0, "Hospital1MSP", &client_msp, &args);
    assert!(!ok && out.contains("only an admin"), "{out}");

    let (ok, out) = approve(0, "1");
    assert!(ok, "approve for Hospital1: {out}");
    let (ok, out) = readiness();
    assert!(
        ok && out.contains("Hospital1MSP: true") && out.contains("Hospital2MSP: false"),
        "{out}"
    );
    // One approval of two is not a majority: the commit is refused.
    let (ok, out) = commit();
    assert!(!ok && out.contains("not agreed to"), "{out}");

    let (ok, out) = approve(1, "1");
    assert!(ok, "approve for Hospital2: {out}");
    let (ok, out) = readiness();
    assert!(ok && out.contains("Hospital2MSP: true"), "{out}");
    let (ok, out) = commit();
    assert!(ok, "commit: {out}");
    let block: u64 = out
        .rsplit("block ")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    net.wait_height(block + 1).await?;
    let (ok, out) = cli.run(
        &net,
        1,
        "Hospital2MSP",
        &admins[1],
        &[
            "lifecycle",
            "chaincode",
            "querycommitted",
            "-C",
            CHANNEL,
            "-n",
            "medical",
        ],
    );
    assert!(
        ok && out.contains("Sequence: 1") && out.contains("Collections: 1"),
        "{out}"
    );
    assert!(
        out.contains("Hospital1MSP: true, Hospital2MSP: true"),
        "{out}"
    );
    // Without -n: every committed definition.
    let (ok, out) = cli.run(
        &net,
        1,
        "Hospital2MSP",
        &admins[1],
        &["lifecycle", "chaincode", "querycommitted", "-C", CHANNEL],
    );
    assert!(
        ok && out.contains("Name: medical, Version: 1.0, Sequence: 1"),
        "{out}"
    );
    // What Hospital1 approved, with the package it runs.
    let (ok, out) = cli.run(
        &net,
        0,
        "Hospital1MSP",
        &admins[0],
        &[
            "lifecycle",
            "chaincode",
            "queryapproved",
            "-C",
            CHANNEL,
            "-n",
            "medical",
        ],
    );
    assert!(
        ok && out.contains("sequence: 1, version: 1.0")
            && out.contains(&format!("package-id: {package_id}")),
        "{out}"
    );
    let (ok, out) = cli.run(
        &net,
        0,
        "Hospital1MSP",
        &admins[0],
        &[
            "lifecycle",
            "chaincode",
            "queryapproved",
            "-C",
            CHANNEL,
            "-n",
            "nosuchchaincode",
        ],
    );
    assert!(!ok && out.contains("could not fetch approved"), "{out}");
    // The installed package, byte for byte.
    let fetched = dir.join("fetched");
    std::fs::create_dir_all(&fetched)?;
    let fetched_dir = fetched.to_string_lossy().into_owned();
    let (ok, out) = cli.run(
        &net,
        0,
        "Hospital1MSP",
        &admins[0],
        &[
            "lifecycle",
            "chaincode",
            "getinstalledpackage",
            "--package-id",
            &package_id,
            "--output-directory",
            &fetched_dir,
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(
        std::fs::read(fetched.join(format!("{package_id}.tar.gz")))?,
        std::fs::read(&package)?
    );

    // The committed definition is in force on both peers: a doctor creates a record through it.
    let doctor_msp = dir.join("doctor/msp");
    net.orgs[0].write_msp(
        &doctor_msp,
        &net.orgs[0].identity("doctor1", "client", &[("role", "doctor")])?,
    )?;
    use base64::Engine;
    let content = base64::engine::general_purpose::STANDARD
        .encode(br#"{"resourceType":"Observation","status":"final"}"#);
    let (ok, out) = cli.run(
        &net,
        0,
        "Hospital1MSP",
        &doctor_msp,
        &[
            "chaincode",
            "invoke",
            "-C",
            CHANNEL,
            "-n",
            "medical",
            "-c",
            r#"{"function":"CreateRecord","Args":["{\"id\":\"R-1\",\"patientId\":\"P-1\",\"resourceType\":\"Observation\"}"]}"#,
            "--transient",
            &format!(r#"{{"content":"{content}","salt":"{}"}}"#, "A".repeat(43) + "="),
        ],
    );
    assert!(ok && out.contains("Chaincode invoke successful"), "{out}");
    for i in 0..2 {
        let ch = net.channel(i).await?;
        let def = ch.chaincode("medical").expect("defined");
        assert_eq!(def.sequence, 1);
        assert!(
            def.endpoint.is_some(),
            "peer {i} runs the installed package"
        );
    }
    // Sequence 1 again is refused: the next definition must be sequence 2.
    let (ok, out) = commit();
    assert!(!ok && out.contains("must be sequence 2"), "{out}");
    Ok(())
}
