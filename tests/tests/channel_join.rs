//! `medledger-peer channel join|list`: a new Hospital2 peer started without channels is joined to
//! `medchannel` with its genesis block by its organisation's admin (others are refused), catches
//! up with the channel's blocks from the BFT orderers, and is still joined after a restart.

use std::path::Path;
use std::time::Duration;

use medledger_peer::execution::plugins::PluginRegistry;
use medledger_peer::node::start;
use medledger_tests::peernet::{CHANNEL, PeerNet};
use medledger_tests::{peer_cli, workspace_binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_joins_a_new_peer_which_catches_up_and_stays_joined() -> anyhow::Result<()> {
    let bin = tokio::task::spawn_blocking(|| workspace_binary("medledger-peer", "medledger-peer"))
        .await??;
    let net = PeerNet::start("OR('Hospital1MSP.peer', 'Hospital2MSP.peer')", 5_000).await?;
    let client = net.orgs[0].identity("app", "client", &[])?;
    let mut gw = net.gateway(0, client).await?;
    let (tx_before, _, block, _) = gw.submit(&["Put", "before-join", "v"]).await?;

    // A second Hospital2 peer, configured with no channel.
    let dir = net.dir.path().join("peer1.hospital2");
    let org = &net.orgs[1];
    let mut cfg = net.configs[1].clone();
    cfg.id = "peer1.hospital2".into();
    cfg.msp_dir = dir.join("msp");
    org.write_msp(&cfg.msp_dir, &org.identity("peer1.hospital2", "peer", &[])?)?;
    cfg.data_dir = dir.join("data");
    cfg.listen_address = "127.0.0.1:0".into();
    cfg.operations_address = None;
    cfg.channels = vec![];
    let peer = start(cfg.clone(), PluginRegistry::default()).await?;
    cfg.listen_address = peer.address.to_string();
    let address = format!("localhost:{}", peer.address.port());
    let tls = dir.join("tlsca.pem");
    std::fs::write(&tls, org.tls_ca.cert_pem())?;
    let msp = |name: &str, of: usize, ou: &str| -> anyhow::Result<std::path::PathBuf> {
        let p = dir.join(name).join("msp");
        net.orgs[of].write_msp(&p, &net.orgs[of].identity(name, ou, &[])?)?;
        Ok(p)
    };
    let admin = msp("admin2", 1, "admin")?;
    let client2 = msp("client2", 1, "client")?;
    let foreign_admin = msp("admin1", 0, "admin")?;
    let genesis = net.orderers.genesis_path.to_string_lossy().into_owned();
    let run =
        |mspid: &str, who: &Path, args: &[&str]| peer_cli(&bin, &address, &tls, mspid, who, args);

    let (ok, out) = run("Hospital2MSP", &admin, &["channel", "list"]);
    assert!(ok && !out.contains(CHANNEL), "{out}");
    let (ok, out) = run(
        "Hospital2MSP",
        &client2,
        &["channel", "join", "-b", &genesis],
    );
    assert!(!ok && out.contains("only an admin"), "{out}");
    let (ok, out) = run(
        "Hospital1MSP",
        &foreign_admin,
        &["channel", "join", "-b", &genesis],
    );
    assert!(
        !ok && out.contains("not a member of this peer's organisation"),
        "{out}"
    );
    let junk = dir.join("junk.block");
    std::fs::write(&junk, b"\xff\xff\xff")?;
    let (ok, out) = run(
        "Hospital2MSP",
        &admin,
        &["channel", "join", "-b", &junk.to_string_lossy()],
    );
    assert!(!ok && out.contains("genesis block"), "{out}");

    let (ok, out) = run("Hospital2MSP", &admin, &["channel", "join", "-b", &genesis]);
    assert!(
        ok && out.contains("Successfully submitted proposal to join channel"),
        "{out}"
    );
    let (ok, out) = run("Hospital2MSP", &admin, &["channel", "list"]);
    assert!(ok && out.contains(CHANNEL), "{out}");
    let (ok, out) = run("Hospital2MSP", &admin, &["channel", "join", "-b", &genesis]);
    assert!(!ok && out.contains("already joined"), "{out}");

    // It catches up with the blocks ordered before it joined.
    let ch = peer.channel(CHANNEL).await.expect("joined");
    let mut h = ch.ledger.subscribe();
    tokio::time::timeout(Duration::from_secs(20), async {
        while *h.borrow() <= block {
            if h.changed().await.is_err() {
                break;
            }
        }
    })
    .await?;
    // (Its validation differs for `kv`, whose definition lives in the other peers' core.yaml,
    // not on the ledger: definitions a joining peer must share come through the lifecycle.)
    assert_eq!(
        ch.ledger.tx_location(&tx_before)?.map(|l| l.block_num),
        Some(block)
    );
    assert_eq!(
        ch.ledger.block(block)?.map(|b| b.header),
        net.channel(0).await?.ledger.block(block)?.map(|b| b.header),
        "the same block as the other peers"
    );
    drop(ch);

    // After a restart it is still joined, from its own data directory.
    peer.stop().await;
    let peer = start(cfg.clone(), PluginRegistry::default()).await?;
    assert!(
        peer.channel(CHANNEL).await.is_some(),
        "still joined after restart"
    );
    peer.stop().await;
    // Joined, and now configured as well: opened once.
    cfg.channels = vec![medledger_peer::node::ChannelJoinConfig {
        genesis_block: net.orderers.genesis_path.clone(),
        chaincodes: vec![],
    }];
    let peer = start(cfg, PluginRegistry::default()).await?;
    assert_eq!(peer.channels.read().await.len(), 1);
    peer.stop().await;
    Ok(())
}
