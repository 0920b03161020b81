//! The BFT ordering service with real nodes on loopback over TLS: four orderer processes survive
//! SIGKILL of the leader mid-load (no acknowledged transaction lost or duplicated, the restarted
//! leader catches up to the same block hashes), a Byzantine leader process (every consensus
//! message mutated and re-signed, blocks withheld from peers) neither stops nor fools the other
//! three nor a peer, and bad input is refused while ordering goes on.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use medledger_common::SigningIdentity;
use medledger_common::channelconfig::{ChannelConfig, ChannelProfile, OrgProfile, genesis_block};
use medledger_common::protoutil::{block_header_hash, signed_envelope};
use medledger_orderer::consensus::txid_of;
use medledger_proto::common::{Block, HeaderType, Status as BlockStatus};
use medledger_proto::orderer::BatchSize;
use medledger_tests::ordernet::OrdererSet;
use medledger_tests::{TestOrg, run_cli_ok, workspace_binary};
use prost::Message;

const CHANNEL: &str = "medchannel";

fn channel(orderers: &OrdererSet, app: &TestOrg) -> anyhow::Result<(Block, ChannelConfig)> {
    channel_of(orderers, app, orderers.consenters.len())
}

/// The channel with the first `consenters` of `orderers` as its genesis consenters.
fn channel_of(
    orderers: &OrdererSet,
    app: &TestOrg,
    consenters: usize,
) -> anyhow::Result<(Block, ChannelConfig)> {
    let genesis = genesis_block(&ChannelProfile {
        channel_id: CHANNEL.into(),
        application_orgs: vec![OrgProfile {
            msp: app.msp_config(),
            anchor_peers: vec![],
        }],
        orderer_orgs: vec![OrgProfile {
            msp: orderers.org.msp_config(),
            anchor_peers: vec![],
        }],
        consenters: orderers.consenters[..consenters].to_vec(),
        batch_size: BatchSize {
            max_message_count: 20,
            absolute_max_bytes: 1 << 20,
            preferred_max_bytes: 512 << 10,
        },
        batch_timeout: Duration::from_millis(200),
    })?;
    std::fs::write(&orderers.genesis_path, genesis.encode_to_vec())?;
    let cfg = ChannelConfig::from_block(&genesis)?;
    Ok((genesis, cfg))
}

/// All blocks an orderer has, through Deliver (oldest to newest).
async fn blocks_of(
    orderers: &OrdererSet,
    id: u32,
    reader: &SigningIdentity,
) -> anyhow::Result<Vec<Block>> {
    orderers
        .deliver(
            id,
            reader,
            medledger_proto::orderer::seek_info::SeekContentType::Block,
        )
        .await
}

fn txids(blocks: &[Block]) -> Vec<String> {
    blocks
        .iter()
        .skip(1)
        .flat_map(|b| b.data.as_ref().map(|d| d.data.clone()).unwrap_or_default())
        .filter_map(|e| txid_of(&e))
        .collect()
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(bin: &std::path::Path, config: &std::path::Path) -> anyhow::Result<Proc> {
    spawn_with(bin, config, &[])
}

/// The last lines of each orderer's log under `dir`, for a failing test to show what the
/// consensus cores did (view changes, consenter changes, requests dropped).
fn orderer_logs(dir: &std::path::Path) -> String {
    const LINES: usize = 40;
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut logs: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("\n--- {} ---\n", log.display()));
        out.push_str(&lines[lines.len().saturating_sub(LINES)..].join("\n"));
    }
    out
}

fn spawn_with(
    bin: &std::path::Path,
    config: &std::path::Path,
    env: &[(&str, &str)],
) -> anyhow::Result<Proc> {
    // The orderer's warnings go next to its configuration, for a failing test to show.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_extension("log"))?;
    Ok(Proc(
        Command::new(bin)
            .args(["start", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .env("MEDLEDGER_LOG", "warn,medledger_orderer::consensus=info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?,
    ))
}

async fn wait_listening(address: &str) -> anyhow::Result<()> {
    let addr = address.replace("localhost", "127.0.0.1");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{address} did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A process for each of `orderers`, its YAML written under `dir`, once all listen; and the
/// YAML paths, to restart one.
async fn spawn_all(
    bin: &std::path::Path,
    dir: &std::path::Path,
    orderers: &OrdererSet,
) -> anyhow::Result<(HashMap<u32, Proc>, HashMap<u32, std::path::PathBuf>)> {
    let mut procs = HashMap::new();
    let mut configs = HashMap::new();
    for c in &orderers.configs {
        let path = dir.join(format!("orderer{}.yaml", c.consenter_id));
        std::fs::write(&path, serde_yaml::to_string(c)?)?;
        procs.insert(c.consenter_id, spawn(bin, &path)?);
        configs.insert(c.consenter_id, path);
    }
    for c in &orderers.configs {
        wait_listening(&orderers.address(c.consenter_id)).await?;
    }
    Ok((procs, configs))
}

/// Waits until orderer `id` has at least the blocks of `reference`, and checks they are the
/// same blocks (headers, which chain the data).
async fn wait_caught_up(
    orderers: &OrdererSet,
    id: u32,
    reader: &SigningIdentity,
    reference: &[Block],
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let theirs = blocks_of(orderers, id, reader).await.unwrap_or_default();
        if theirs.len() >= reference.len() {
            for (a, b) in theirs.iter().zip(reference) {
                assert_eq!(a.header, b.header, "orderer {id} has another chain");
            }
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "orderer {id} stayed behind ({} of {} blocks)",
            theirs.len(),
            reference.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_orderer_processes_survive_killing_the_leader() -> anyhow::Result<()> {
    let bin =
        tokio::task::spawn_blocking(|| workspace_binary("medledger-orderer", "medledger-orderer"))
            .await??;
    let dir = tempfile::tempdir()?;
    let app = TestOrg::new("Hospital1MSP")?;
    let orderers = OrdererSet::prepare(dir.path(), 4, &[app.tls_ca.cert_pem()])?;
    let (_, cfg) = channel(&orderers, &app)?;
    let (mut procs, configs) = spawn_all(&bin, dir.path(), &orderers).await?;
    let client = app.identity("app", "client", &[])?;
    let mut acked = Vec::new();
    let mut killed = false;
    for i in 0..80u32 {
        if i == 30 {
            // The leader of view 0 is consenter 1: kill it without warning, mid-load.
            let mut p = procs.remove(&1).expect("leader process");
            let _ = p.0.kill();
            let _ = p.0.wait();
            killed = true;
        }
        let target = if killed { 2 + i % 3 } else { 1 + i % 4 };
        let env = signed_envelope(
            HeaderType::EndorserTransaction,
            CHANNEL,
            format!("tx {i}").into_bytes(),
            &client,
        )?;
        let txid = txid_of(&env.encode_to_vec()).expect("txid");
        if let Ok(r) = orderers.broadcast(target, env).await
            && r.status == BlockStatus::Success as i32
        {
            acked.push(txid);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        acked.len() >= 70,
        "only {} of 80 broadcasts acknowledged",
        acked.len()
    );

    // The survivors order everything after the view change.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ordered: HashSet<String> = txids(&blocks_of(&orderers, 2, &client).await?)
            .into_iter()
            .collect();
        if acked.iter().all(|t| ordered.contains(t)) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "acknowledged transactions were not ordered after the leader died"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The old leader restarts and catches up to the same blocks.
    procs.insert(1, spawn(&bin, &configs[&1])?);
    wait_listening(&orderers.address(1)).await?;
    let reference = blocks_of(&orderers, 2, &client).await?;
    wait_caught_up(&orderers, 1, &client, &reference).await?;
    for id in 2..=4 {
        let blocks = blocks_of(&orderers, id, &client).await?;
        for b in blocks.iter().skip(1) {
            cfg.verify_block(b)?;
        }
        let ids = txids(&blocks);
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "orderer {id} ordered a transaction twice"
        );
        assert!(
            acked.iter().all(|t| unique.contains(t)),
            "orderer {id} lost an acknowledged transaction"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_refused_and_ordering_goes_on() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = TestOrg::new("Hospital1MSP")?;
    let orderers = OrdererSet::prepare(dir.path(), 4, &[app.tls_ca.cert_pem()])?;
    let _ = channel(&orderers, &app)?;
    let running = orderers.start_all().await?;
    let client = app.identity("app", "client", &[])?;
    let status = |r: &medledger_proto::orderer::BroadcastResponse| {
        BlockStatus::try_from(r.status).unwrap_or(BlockStatus::Unknown)
    };

    // Invalid signature.
    let mut env = signed_envelope(
        HeaderType::EndorserTransaction,
        CHANNEL,
        b"x".to_vec(),
        &client,
    )?;
    env.signature = client.sign(b"something else")?;
    assert_eq!(
        status(&orderers.broadcast(2, env).await?),
        BlockStatus::Forbidden
    );
    // An identity from a CA the channel does not know.
    let stranger = TestOrg::new("Hospital1MSP")?.identity("mallory", "client", &[])?;
    let env = signed_envelope(
        HeaderType::EndorserTransaction,
        CHANNEL,
        b"x".to_vec(),
        &stranger,
    )?;
    assert_eq!(
        status(&orderers.broadcast(2, env).await?),
        BlockStatus::Forbidden
    );
    // Wrong channel.
    let env = signed_envelope(
        HeaderType::EndorserTransaction,
        "otherchannel",
        b"x".to_vec(),
        &client,
    )?;
    assert_eq!(
        status(&orderers.broadcast(2, env).await?),
        BlockStatus::NotFound
    );
    // Larger than AbsoluteMaxBytes.
    let env = signed_envelope(
        HeaderType::EndorserTransaction,
        CHANNEL,
        vec![7u8; 2 << 20],
        &client,
    )?;
    assert_eq!(
        status(&orderers.broadcast(2, env).await?),
        BlockStatus::BadRequest
    );
    // Garbage envelope.
    let garbage = medledger_proto::common::Envelope {
        payload: vec![0xff; 32],
        signature: vec![1],
    };
    assert_eq!(
        status(&orderers.broadcast(2, garbage).await?),
        BlockStatus::BadRequest
    );

    // Garbage bytes on the port, and a consensus stream from a client that is not a consenter.
    {
        use tokio::io::AsyncWriteExt;
        let mut s =
            tokio::net::TcpStream::connect(orderers.address(1).replace("localhost", "127.0.0.1"))
                .await?;
        s.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 1, 2, 3, 4, 5])
            .await?;
        s.write_all(b"GET / HTTP/1.1\r\n\r\n garbage").await?;
    }
    let (cert, key) = app.tls_pair("intruder")?;
    let tls = tonic::transport::ClientTlsConfig::new()
        .domain_name("localhost")
        .ca_certificate(tonic::transport::Certificate::from_pem(
            orderers.org.tls_ca.cert_pem(),
        ))
        .identity(tonic::transport::Identity::from_pem(cert, key));
    let ch = tonic::transport::Endpoint::from_shared(format!("https://{}", orderers.address(1)))?
        .tls_config(tls)?
        .connect()
        .await?;
    let forged = medledger_proto::medledger::consensus::ConsensusMessage {
        sender: 1,
        channel_id: CHANNEL.into(),
        body: vec![1, 2, 3],
        signature: vec![],
    };
    let r = medledger_proto::medledger::consensus::consensus_client::ConsensusClient::new(ch)
        .step(tokio_stream::once(forged))
        .await;
    assert_eq!(r.unwrap_err().code(), tonic::Code::PermissionDenied);

    // Ordering goes on; a repeated submission is recognised as already known.
    let env = signed_envelope(
        HeaderType::EndorserTransaction,
        CHANNEL,
        b"good".to_vec(),
        &client,
    )?;
    let txid = txid_of(&env.encode_to_vec()).expect("txid");
    assert_eq!(
        status(&orderers.broadcast(1, env.clone()).await?),
        BlockStatus::Success
    );
    let again = orderers.broadcast(1, env).await?;
    assert_eq!(status(&again), BlockStatus::ServiceUnavailable);
    assert!(again.info.contains("already exists"), "{}", again.info);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if txids(&blocks_of(&orderers, 3, &client).await?).contains(&txid) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the valid transaction was not ordered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The operations endpoint reports health, the chain height and the BFT view.
    let ops = running[2]
        .as_ref()
        .and_then(|r| r.operations_address)
        .expect("operations address");
    let get = |path: &'static str| medledger_tests::http_get(ops, path);
    assert!(get("/healthz").await?.contains("\"status\":\"OK\""));
    let metrics = get("/metrics").await?;
    assert!(
        metrics.contains("ledger_blockchain_height{channel=\"medchannel\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("consensus_bft_view"), "{metrics}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_byzantine_orderer_process_neither_stops_nor_fools_the_others() -> anyhow::Result<()> {
    let (bin, byzantine) = tokio::task::spawn_blocking(|| {
        anyhow::Ok((
            workspace_binary("medledger-orderer", "medledger-orderer")?,
            workspace_binary("medledger-tests", "byzantine-orderer")?,
        ))
    })
    .await??;
    let dir = tempfile::tempdir()?;
    let app = TestOrg::new("Hospital1MSP")?;
    let orderers = OrdererSet::prepare(dir.path(), 4, &[app.tls_ca.cert_pem()])?;
    let (_, cfg) = channel(&orderers, &app)?;
    let mut procs = Vec::new();
    for c in &orderers.configs {
        let path = dir.path().join(format!("orderer{}.yaml", c.consenter_id));
        std::fs::write(&path, serde_yaml::to_string(c)?)?;
        // Consenter 1 leads view 0: the Byzantine one starts as the leader.
        procs.push(if c.consenter_id == 1 {
            spawn_with(
                &byzantine,
                &path,
                &[("MEDLEDGER_BYZANTINE", "mutate-consensus,withhold-blocks")],
            )?
        } else {
            spawn(&bin, &path)?
        });
    }
    for id in 1..=4 {
        wait_listening(&orderers.address(id)).await?;
    }

    // A hospital peer pulling blocks; it may start on the withholding orderer.
    let home = dir.path().join("peer0");
    let peer_id = app.identity("peer0", "peer", &[])?;
    app.write_msp(&home.join("msp"), &peer_id)?;
    let peer = medledger_peer::node::start(
        medledger_peer::node::PeerConfig {
            id: "peer0.hospital1".into(),
            msp_id: app.mspid.clone(),
            msp_dir: home.join("msp"),
            listen_address: "127.0.0.1:0".into(),
            data_dir: home.join("data"),
            tls: None,
            gateway_peers: vec![],
            chaincode_execute_timeout_ms: 5_000,
            channels: vec![medledger_peer::node::ChannelJoinConfig {
                genesis_block: orderers.genesis_path.clone(),
                chaincodes: vec![],
            }],
            operations_address: None,
            private_data: Default::default(),
            delivery_client: medledger_peer::node::DeliveryClientConfig {
                block_censorship_timeout_ms: 2_000,
                min_reconnect_interval_ms: 50,
                max_reconnect_interval_ms: 1_000,
            },
            max_recv_msg_size: medledger_common::config::DEFAULT_MAX_MESSAGE_BYTES,
            max_send_msg_size: medledger_common::config::DEFAULT_MAX_MESSAGE_BYTES,
            audit: None,
        },
        medledger_peer::execution::plugins::PluginRegistry::default(),
    )
    .await?;

    let client = app.identity("app", "client", &[])?;
    let mut acked = Vec::new();
    for i in 0..40u32 {
        let env = signed_envelope(
            HeaderType::EndorserTransaction,
            CHANNEL,
            format!("tx {i}").into_bytes(),
            &client,
        )?;
        let txid = txid_of(&env.encode_to_vec()).expect("txid");
        if let Ok(r) = orderers.broadcast(2 + i % 3, env).await
            && r.status == BlockStatus::Success as i32
        {
            acked.push(txid);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(acked.len(), 40, "the honest orderers refused broadcasts");

    // The three honest orderers order everything, once, in the same blocks.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let reference = loop {
        let blocks = blocks_of(&orderers, 2, &client).await?;
        let ordered: HashSet<String> = txids(&blocks).into_iter().collect();
        if acked.iter().all(|t| ordered.contains(t)) {
            break blocks;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "a Byzantine leader stopped the ordering service"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for id in 3..=4 {
        let blocks = blocks_of(&orderers, id, &client).await?;
        for (a, b) in blocks.iter().zip(&reference) {
            assert_eq!(
                block_header_hash(a.header.as_ref().expect("header")),
                block_header_hash(b.header.as_ref().expect("header")),
                "orderers 2 and {id} disagree"
            );
        }
    }
    for b in reference.iter().skip(1) {
        cfg.verify_block(b)?;
    }
    let ids = txids(&reference);
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a transaction was ordered twice");

    // The peer keeps up with the honest orderers' chain.
    let ch = peer.channel(CHANNEL).await.expect("channel");
    let height = reference.len() as u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while ch.ledger.height() < height {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the peer fell behind at {} of {height}",
            ch.ledger.height()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (n, b) in reference.iter().enumerate() {
        let mine = ch.ledger.block(n as u64)?.expect("committed");
        assert_eq!(
            block_header_hash(mine.header.as_ref().expect("header")),
            block_header_hash(b.header.as_ref().expect("header"))
        );
    }
    peer.stop().await;
    drop(procs);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_configuration_update_survives_killing_an_orderer_mid_update() -> anyhow::Result<()> {
    use medledger_common::configtx::{compute_update, sign_config_update, update_envelope};
    use medledger_common::protoutil::is_config_block;
    use medledger_proto::common::ConfigUpdateEnvelope;
    let bin =
        tokio::task::spawn_blocking(|| workspace_binary("medledger-orderer", "medledger-orderer"))
            .await??;
    let dir = tempfile::tempdir()?;
    let app = TestOrg::new("Hospital1MSP")?;
    let orderers = OrdererSet::prepare(dir.path(), 4, &[app.tls_ca.cert_pem()])?;
    let (_, cfg) = channel(&orderers, &app)?;
    let (mut procs, configs) = spawn_all(&bin, dir.path(), &orderers).await?;
    let client = app.identity("app", "client", &[])?;

    // The orderer organisation's admin raises the batch size; orderer 2 is killed (SIGKILL)
    // right after accepting the update, before it can have finished ordering it.
    let mut next = (*cfg.source).clone();
    let mut batch = cfg.batch_size;
    batch.max_message_count = 50;
    next.channel_group
        .as_mut()
        .and_then(|g| g.groups.get_mut("Orderer"))
        .and_then(|o| o.values.get_mut("BatchSize"))
        .ok_or_else(|| anyhow::anyhow!("no BatchSize"))?
        .value = batch.encode_to_vec();
    let update = compute_update(CHANNEL, &cfg.source, &next)?;
    let admin = orderers.org.identity("oadmin", "admin", &[])?;
    let bytes = update.encode_to_vec();
    let env = update_envelope(
        CHANNEL,
        &ConfigUpdateEnvelope {
            signatures: vec![sign_config_update(&bytes, &admin)?],
            config_update: bytes,
        },
        &admin,
    )?;
    let r = orderers.broadcast(2, env).await?;
    assert_eq!(r.status, BlockStatus::Success as i32, "{}", r.info);
    let mut p = procs.remove(&2).expect("orderer 2");
    let _ = p.0.kill();
    let _ = p.0.wait();

    // Ordering goes on without orderer 2.
    let mut acked = Vec::new();
    for i in 0..10u32 {
        let env = signed_envelope(
            HeaderType::EndorserTransaction,
            CHANNEL,
            format!("after {i}").into_bytes(),
            &client,
        )?;
        let txid = txid_of(&env.encode_to_vec()).expect("txid");
        if let Ok(r) = orderers.broadcast(1 + 2 * (i % 2), env).await
            && r.status == BlockStatus::Success as i32
        {
            acked.push(txid);
        }
    }
    assert_eq!(acked.len(), 10);
    let config_blocks = |blocks: &[Block]| blocks.iter().filter(|b| is_config_block(b)).count();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ordered: HashSet<String> = txids(&blocks_of(&orderers, 3, &client).await?)
            .into_iter()
            .collect();
        if acked.iter().all(|t| ordered.contains(t)) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "transactions were lost with orderer 2"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Orderer 2 restarts. The update it acknowledged is durable: ordered exactly once, whether
    // the others had it already or get it from orderer 2's write-ahead log now.
    procs.insert(2, spawn(&bin, &configs[&2])?);
    wait_listening(&orderers.address(2)).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let reference = loop {
        let blocks = blocks_of(&orderers, 3, &client).await?;
        if config_blocks(&blocks) >= 2 {
            break blocks;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the acknowledged configuration update was lost"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(
        config_blocks(&reference),
        2,
        "genesis and exactly one update"
    );
    wait_caught_up(&orderers, 2, &client, &reference).await?;
    let env = signed_envelope(
        HeaderType::EndorserTransaction,
        CHANNEL,
        b"after the restart".to_vec(),
        &client,
    )?;
    let r = orderers.broadcast(2, env).await?;
    assert_eq!(r.status, BlockStatus::Success as i32, "{}", r.info);
    // The same update again is stale on every orderer, the restarted one included.
    let stale = update_envelope(
        CHANNEL,
        &ConfigUpdateEnvelope {
            signatures: vec![sign_config_update(&update.encode_to_vec(), &admin)?],
            config_update: update.encode_to_vec(),
        },
        &admin,
    )?;
    let r = orderers.broadcast(2, stale).await?;
    assert_eq!(r.status, BlockStatus::BadRequest as i32, "{}", r.info);
    Ok(())
}

/// CLI errors say what failed and what to try, and only a fault of the YAML reads
/// `configuration:`: a missing configuration file, a garbage genesis block (start and channel
/// join), another channel's genesis block in the store, a listen port already in use.
#[test]
fn cli_errors_say_what_failed_and_what_to_try() -> anyhow::Result<()> {
    let bin = workspace_binary("medledger-orderer", "medledger-orderer")?;
    let dir = tempfile::tempdir()?;
    let app = TestOrg::new("Hospital1MSP")?;
    let orderers = OrdererSet::prepare(dir.path(), 4, &[app.tls_ca.cert_pem()])?;
    channel(&orderers, &app)?;
    let fails = |args: &[&std::ffi::OsStr]| -> anyhow::Result<String> {
        let out = Command::new(&bin)
            .args(args)
            .env("MEDLEDGER_LOG", "error")
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        anyhow::ensure!(!out.status.success(), "{args:?} succeeded");
        anyhow::ensure!(!err.contains("configuration:"), "{err}");
        Ok(err)
    };
    let os = |s: &str| std::ffi::OsString::from(s);

    let missing = dir.path().join("missing.yaml");
    let err = fails(&[&os("start"), &os("--config"), missing.as_os_str()])?;
    assert!(err.contains("no orderer configuration at"), "{err}");
    assert!(err.contains("pass --config"), "{err}");

    let garbage = dir.path().join("garbage.block");
    std::fs::write(&garbage, b"\xff\xfe not a block")?;
    let mut cfg = orderers.configs[0].clone();
    cfg.genesis_block = garbage.clone();
    let garbage_cfg = dir.path().join("garbage.yaml");
    std::fs::write(&garbage_cfg, serde_yaml::to_string(&cfg)?)?;
    let err = fails(&[&os("start"), &os("--config"), garbage_cfg.as_os_str()])?;
    assert!(err.contains("genesis block"), "{err}");
    assert!(err.contains("medledger-orderer genesis"), "{err}");
    let join = |config: &std::path::Path, block: &std::path::Path| {
        fails(&[
            &os("channel"),
            &os("join"),
            &os("--config"),
            config.as_os_str(),
            &os("--genesis-block"),
            block.as_os_str(),
        ])
    };
    let err = join(&garbage_cfg, &garbage)?;
    assert!(err.contains("medledger-orderer genesis"), "{err}");

    // Another channel's genesis block into a store that holds this channel's.
    let good_cfg = dir.path().join("orderer1.yaml");
    std::fs::write(&good_cfg, serde_yaml::to_string(&orderers.configs[0])?)?;
    let out = Command::new(&bin)
        .args(["channel", "join", "--config"])
        .arg(&good_cfg)
        .arg("--genesis-block")
        .arg(&orderers.genesis_path)
        .output()?;
    assert!(out.status.success(), "{out:?}");
    let other = TestOrg::new("Hospital2MSP")?;
    let (other_block, _) = channel(&orderers, &other)?;
    let other_path = dir.path().join("other.block");
    std::fs::write(&other_path, other_block.encode_to_vec())?;
    let err = join(&good_cfg, &other_path)?;
    assert!(
        err.contains("holds another channel's genesis block"),
        "{err}"
    );

    // The listen port taken by another process.
    let taken = std::net::TcpListener::bind(&orderers.configs[1].listen_address)?;
    let busy_cfg = dir.path().join("orderer2.yaml");
    std::fs::write(&busy_cfg, serde_yaml::to_string(&orderers.configs[1])?)?;
    let err = fails(&[&os("start"), &os("--config"), busy_cfg.as_os_str()])?;
    assert!(err.contains("cannot listen on"), "{err}");
    assert!(err.contains("another process uses this port"), "{err}");
    drop(taken);
    Ok(())
}

/// One edit of the consenter set, made with `medledger-peer config add-consenter` /
/// `remove-consenter` as an operator would.
enum Edit {
    Add(u32),
    Remove(u32),
}

/// The CONFIG_UPDATE making `edits` to the configuration `config` puts in force, signed by the
/// orderer organisation's admin.
fn consenter_update(
    peer_bin: &std::path::Path,
    orderers: &OrdererSet,
    config: &ChannelConfig,
    edits: &[Edit],
) -> anyhow::Result<medledger_proto::common::Envelope> {
    use medledger_common::configtx::{compute_update, sign_config_update, update_envelope};
    use medledger_proto::common::{Config, ConfigUpdateEnvelope};
    let dir = tempfile::tempdir()?;
    let file = |name: &str| dir.path().join(name);
    std::fs::write(file("config.pb"), config.source.encode_to_vec())?;
    let path = |name: &str| file(name).to_string_lossy().into_owned();
    for edit in edits {
        let mut args: Vec<String> = match edit {
            Edit::Add(id) => {
                let c = &orderers.consenters[*id as usize - 1];
                std::fs::write(file("identity.pem"), &c.identity)?;
                std::fs::write(file("tls.pem"), &c.client_tls_cert)?;
                [
                    "config",
                    "add-consenter",
                    "--id",
                    &id.to_string(),
                    "--endpoint",
                    &format!("{}:{}", c.host, c.port),
                    "--mspid",
                    &c.msp_id,
                    "--identity",
                    &path("identity.pem"),
                    "--tls-cert",
                    &path("tls.pem"),
                ]
                .map(str::to_owned)
                .to_vec()
            }
            Edit::Remove(id) => ["config", "remove-consenter", "--id", &id.to_string()]
                .map(str::to_owned)
                .to_vec(),
        };
        args.extend(
            ["--config", &path("config.pb"), "--output", &path("next.pb")].map(str::to_owned),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli_ok(peer_bin, "OrdererMSP", dir.path(), &args)?;
        std::fs::rename(file("next.pb"), file("config.pb"))?;
    }
    let next = Config::decode(std::fs::read(file("config.pb"))?.as_slice())?;
    let update = compute_update(CHANNEL, &config.source, &next)?.encode_to_vec();
    let admin = orderers.org.identity("oadmin", "admin", &[])?;
    Ok(update_envelope(
        CHANNEL,
        &ConfigUpdateEnvelope {
            signatures: vec![sign_config_update(&update, &admin)?],
            config_update: update,
        },
        &admin,
    )?)
}

/// Waits until orderer `id` has a configuration block whose consenters are exactly `set`;
/// returns its blocks.
async fn wait_consenters(
    orderers: &OrdererSet,
    id: u32,
    reader: &SigningIdentity,
    set: &[u32],
) -> anyhow::Result<Vec<Block>> {
    use medledger_common::protoutil::is_config_block;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let blocks = blocks_of(orderers, id, reader).await.unwrap_or_default();
        if let Some(last) = blocks.iter().rev().find(|b| is_config_block(b)) {
            let ids: Vec<u32> = ChannelConfig::from_block(last)?
                .consenters
                .iter()
                .map(|c| c.id)
                .collect();
            if ids == set {
                return Ok(blocks);
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "orderer {id} never reached the consenter set {set:?} ({} blocks)",
            blocks.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Broadcasts one transaction to orderer `id`; its txid if acknowledged.
async fn submit_one(
    orderers: &OrdererSet,
    id: u32,
    client: &SigningIdentity,
    label: &str,
) -> anyhow::Result<Option<String>> {
    let env = signed_envelope(
        HeaderType::EndorserTransaction,
        CHANNEL,
        label.as_bytes().to_vec(),
        client,
    )?;
    let txid = txid_of(&env.encode_to_vec()).expect("txid");
    Ok(match orderers.broadcast(id, env).await {
        Ok(r) if r.status == BlockStatus::Success as i32 => {
            eprintln!("orderer {id} acknowledged {label:?} ({txid})");
            Some(txid)
        }
        _ => None,
    })
}

/// Adding and removing an orderer with real processes: a fifth orderer started from the genesis
/// block (which does not name it) catches up once an update adds it, checking every block,
/// and votes; one of the first four is killed (SIGKILL) right after the add is accepted, so
/// the new set needs the newcomer's vote; then a genesis orderer is removed and refuses to
/// order while the rest go on. Nothing acknowledged is lost or ordered twice, every block
/// carries a quorum of the consenters in force at it, and an update changing two consenters
/// at once is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_orderer_is_added_and_another_removed_while_ordering_goes_on() -> anyhow::Result<()> {
    let bin =
        tokio::task::spawn_blocking(|| workspace_binary("medledger-orderer", "medledger-orderer"))
            .await??;
    let peer_bin =
        tokio::task::spawn_blocking(|| workspace_binary("medledger-peer", "medledger-peer"))
            .await??;
    let dir = tempfile::tempdir()?;
    let app = TestOrg::new("Hospital1MSP")?;
    let orderers = OrdererSet::prepare(dir.path(), 5, &[app.tls_ca.cert_pem()])?;
    let (_, genesis_cfg) = channel_of(&orderers, &app, 4)?;
    let (mut procs, configs) = spawn_all(&bin, dir.path(), &orderers).await?;
    let client = app.identity("app", "client", &[])?;
    let mut acked = Vec::new();
    for i in 0..8u32 {
        acked.extend(submit_one(&orderers, 1 + i % 4, &client, &format!("before {i}")).await?);
    }
    // Not a consenter yet: orderer 5 orders nothing.
    let r = orderers
        .broadcast(
            5,
            signed_envelope(
                HeaderType::EndorserTransaction,
                CHANNEL,
                b"early".to_vec(),
                &client,
            )?,
        )
        .await?;
    assert_eq!(
        r.status,
        BlockStatus::ServiceUnavailable as i32,
        "{}",
        r.info
    );
    assert!(r.info.contains("not a consenter"), "{}", r.info);

    // Two changes in one update are refused.
    let r = orderers
        .broadcast(
            1,
            consenter_update(
                &peer_bin,
                &orderers,
                &genesis_cfg,
                &[Edit::Add(5), Edit::Remove(4)],
            )?,
        )
        .await?;
    assert_eq!(r.status, BlockStatus::BadRequest as i32, "{}", r.info);
    assert!(r.info.contains("one consenter per update"), "{}", r.info);

    // The add, with load around it; orderer 3 dies (SIGKILL) while it is being ordered.
    let r = orderers
        .broadcast(
            1,
            consenter_update(&peer_bin, &orderers, &genesis_cfg, &[Edit::Add(5)])?,
        )
        .await?;
    assert_eq!(r.status, BlockStatus::Success as i32, "{}", r.info);
    let mut p = procs.remove(&3).expect("orderer 3");
    let _ = p.0.kill();
    let _ = p.0.wait();
    for i in 0..12u32 {
        let to = [1, 2, 4][i as usize % 3];
        acked.extend(submit_one(&orderers, to, &client, &format!("during add {i}")).await?);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let with_five = wait_consenters(&orderers, 5, &client, &[1, 2, 3, 4, 5]).await?;
    // The newcomer orders, and with orderer 3 down the set needs its vote to do so.
    let mut after_add = Vec::new();
    for i in 0..6u32 {
        after_add.extend(submit_one(&orderers, 5, &client, &format!("via five {i}")).await?);
    }
    assert_eq!(
        after_add.len(),
        6,
        "orderer 5 refused transactions once added"
    );
    acked.extend(after_add.iter().cloned());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let ordered: HashSet<String> = txids(&blocks_of(&orderers, 5, &client).await?)
            .into_iter()
            .collect();
        if after_add.iter().all(|t| ordered.contains(t)) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the set with orderer 5 and without orderer 3 ordered nothing ({} blocks)",
            with_five.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    procs.insert(3, spawn(&bin, &configs[&3])?);
    wait_listening(&orderers.address(3)).await?;

    // The removal of orderer 1 (view 0's leader), with load on the others.
    let in_force = ChannelConfig::from_block(
        with_five
            .iter()
            .rev()
            .find(|b| medledger_common::protoutil::is_config_block(b))
            .expect("the add's block"),
    )?;
    let r = orderers
        .broadcast(
            2,
            consenter_update(&peer_bin, &orderers, &in_force, &[Edit::Remove(1)])?,
        )
        .await?;
    assert_eq!(r.status, BlockStatus::Success as i32, "{}", r.info);
    for i in 0..8u32 {
        let to = [2, 4, 5][i as usize % 3];
        acked.extend(submit_one(&orderers, to, &client, &format!("during removal {i}")).await?);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_consenters(&orderers, 1, &client, &[2, 3, 4, 5]).await?;
    let r = orderers
        .broadcast(
            1,
            signed_envelope(
                HeaderType::EndorserTransaction,
                CHANNEL,
                b"late".to_vec(),
                &client,
            )?,
        )
        .await?;
    assert_eq!(
        r.status,
        BlockStatus::ServiceUnavailable as i32,
        "{}",
        r.info
    );
    for i in 0..4u32 {
        acked.extend(submit_one(&orderers, 2 + i % 4, &client, &format!("after {i}")).await?);
    }

    // Everything acknowledged is ordered once, on every member, with the same blocks; each
    // block carries a quorum of the consenters in force at it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let reference = loop {
        let blocks = blocks_of(&orderers, 2, &client).await?;
        let ordered: HashSet<String> = txids(&blocks).into_iter().collect();
        if acked.iter().all(|t| ordered.contains(t)) {
            break blocks;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "acknowledged transactions were not ordered: {:?}{}",
            acked
                .iter()
                .filter(|t| !ordered.contains(*t))
                .collect::<Vec<_>>(),
            orderer_logs(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let mut in_force = genesis_cfg.clone();
    for b in reference.iter().skip(1) {
        in_force.verify_block(b)?;
        if medledger_common::protoutil::is_config_block(b) {
            in_force = ChannelConfig::from_block(b)?;
        }
    }
    let ids = txids(&reference);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "ordered twice"
    );
    // The removed orderer has the block removing it and nothing later.
    let removed = blocks_of(&orderers, 1, &client).await?;
    let last = removed.last().expect("blocks");
    assert!(
        medledger_common::protoutil::is_config_block(last)
            && ChannelConfig::from_block(last)?.consenter(1).is_none(),
        "orderer 1 stopped at block {} of {}, not at its removal",
        removed.len(),
        reference.len()
    );
    for id in [3, 4, 5] {
        wait_caught_up(&orderers, id, &client, &reference).await?;
    }
    drop(procs);
    Ok(())
}
