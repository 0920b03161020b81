//! Our peer driven by the real npm Fabric packages: the `@hyperledger/fabric-gateway` client
//! (evaluate, submit, commit status, chaincode events, errors), and a `fabric-contract-api`
//! contract served by `fabric-chaincode-node server` and run by our peer.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use medledger_tests::peernet::{CHAINCODE, CHANNEL, PeerNet};
use medledger_tests::{ensure_node_modules, run_node};

const BOTH: &str = "AND('Hospital1MSP.peer', 'Hospital2MSP.peer')";

async fn run_gateway_client(
    net: &PeerNet,
    dir: &std::path::Path,
) -> anyhow::Result<serde_json::Value> {
    let user = net.orgs[0].identity("nodeapp", "client", &[("role", "doctor")])?;
    let cert = dir.join("user.pem");
    let key = dir.join("user.key");
    let root = dir.join("tls-root.pem");
    std::fs::write(&cert, user.cert_pem())?;
    std::fs::write(&key, user.private_key().to_pkcs8_pem()?)?;
    std::fs::write(&root, net.orgs[0].tls_ca.cert_pem())?;
    let address = net.address(0);
    let args: Vec<String> = vec![
        address,
        root.display().to_string(),
        "Hospital1MSP".into(),
        cert.display().to_string(),
        key.display().to_string(),
        CHANNEL.into(),
        CHAINCODE.into(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run_node("gateway_client.js", &refs)
    })
    .await??;
    Ok(serde_json::from_str(&out)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn npm_fabric_gateway_client_evaluates_submits_and_gets_events() -> anyhow::Result<()> {
    let net = PeerNet::start(BOTH, 5_000).await?;
    let dir = tempfile::tempdir()?;
    let v = run_gateway_client(&net, dir.path()).await?;
    assert_eq!(v["submit_result"], "npm-value");
    assert_eq!(v["evaluate_result"], "npm-value");
    assert_eq!(v["async_status"]["code"], 0);
    assert_eq!(v["async_status"]["successful"], true);
    assert_eq!(v["event"]["name"], "Put");
    assert_eq!(v["event"]["payload"], "npm-key");
    assert_eq!(v["event"]["chaincode"], CHAINCODE);
    assert_eq!(
        v["private_result"], "npm-secret-value",
        "transientData reaches PutPrivateData; the value reads back from the collection"
    );
    let err = &v["error"];
    assert_eq!(
        err["code"], 2,
        "gRPC UNKNOWN for a chaincode error, as Fabric: {err}"
    );
    assert!(
        err["details"][0]
            .as_str()
            .unwrap_or("")
            .contains("no such record"),
        "{err}"
    );
    // Both peers committed the client's transactions.
    net.wait_height(v["async_status"]["block"].as_u64().unwrap() + 1)
        .await?;
    for i in 0..2 {
        let ch = net.channel(i).await?;
        assert_eq!(
            ch.ledger.state(CHAINCODE, "npm-key-2")?.map(|v| v.value),
            Some(b"second".to_vec())
        );
        for n in 0..ch.ledger.height() {
            let b = prost::Message::encode_to_vec(&ch.ledger.block(n)?.unwrap_or_default());
            assert!(
                !b.windows(16).any(|w| w == b"npm-secret-value"),
                "the transient value is in no block"
            );
        }
    }
    Ok(())
}

struct NodeChaincode(Child);

impl Drop for NodeChaincode {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fabric_contract_api_chaincode_runs_on_our_peer() -> anyhow::Result<()> {
    let node_dir = tokio::task::spawn_blocking(ensure_node_modules).await??;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let address = format!("127.0.0.1:{port}");
    let package_id = "kvcontract_1.0:9f86d081884c7d65";
    let child = Command::new("node")
        .arg(node_dir.join("node_modules/fabric-shim/cli.js"))
        .args([
            "server",
            "--chaincode-address",
            &address,
            "--chaincode-id",
            package_id,
            "--module-path",
        ])
        .arg(node_dir.join("contract"))
        .env("CORE_PEER_LOCALMSPID", "Hospital1MSP")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let _guard = NodeChaincode(child);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(&address).await.is_err() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the Node chaincode server did not start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let net = PeerNet::start_with(BOTH, 10_000, Some((address, package_id.into()))).await?;
    let doctor = net.orgs[0].identity("doctor1", "client", &[("role", "doctor")])?;
    let mut gw = net.gateway(0, doctor).await?;
    let (_, code, block, result) = gw.submit(&["Put", "patient-7", "consented"]).await?;
    assert_eq!(code, 0);
    assert_eq!(result, b"consented");
    net.wait_height(block + 1).await?;
    assert_eq!(gw.evaluate(&["Get", "patient-7"]).await?, b"consented");
    assert_eq!(
        gw.evaluate(&["Whoami"]).await?,
        b"Hospital1MSP doctor",
        "the contract read our creator and its attributes"
    );
    let e = gw.evaluate(&["Get", "missing"]).await.unwrap_err();
    assert!(
        String::from_utf8_lossy(e.details()).contains("missing not found"),
        "{e:?}"
    );
    for i in 0..2 {
        let ch = net.channel(i).await?;
        assert_eq!(
            ch.ledger.state(CHAINCODE, "patient-7")?.map(|v| v.value),
            Some(b"consented".to_vec())
        );
    }
    Ok(())
}
