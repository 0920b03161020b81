//! Channel configuration updates through the ordering service, on a running network: a
//! hospital revokes its doctor with a CRL in a CONFIG_UPDATE signed by its admin; the orderers
//! validate and order it in a configuration block of its own; the peers put it in force, and the
//! doctor is refused by the gateway and the orderers' Broadcast and Deliver, also after a restart.
//! An under-signed or stale update changes nothing.

use std::time::Duration;

use medledger_common::SigningIdentity;
use medledger_common::configtx::{compute_update, sign_config_update, update_envelope};
use medledger_common::protoutil::{is_config_block, signed_envelope};
use medledger_proto::common::{
    Config, ConfigUpdate, ConfigUpdateEnvelope, Envelope, HeaderType, Status,
};
use medledger_proto::msp::{FabricMspConfig, MspConfig};
use medledger_proto::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use medledger_proto::orderer::{SeekInfo, SeekNextCommit, SeekPosition, deliver_response};
use medledger_proto::protos::TxValidationCode;
use medledger_tests::peernet::{CHANNEL, PeerNet};
use prost::Message;

const BOTH: &str = "AND('Hospital1MSP.peer', 'Hospital2MSP.peer')";

/// The CONFIG_UPDATE envelope for `update`, signed by `admins`, submitted by the first.
fn signed(update: &ConfigUpdate, admins: &[&SigningIdentity]) -> anyhow::Result<Envelope> {
    let bytes = update.encode_to_vec();
    let envelope = ConfigUpdateEnvelope {
        signatures: admins
            .iter()
            .map(|a| sign_config_update(&bytes, a))
            .collect::<Result<_, _>>()?,
        config_update: bytes,
    };
    Ok(update_envelope(CHANNEL, &envelope, admins[0])?)
}

/// `config` with Hospital1's MSP also revoking `who`.
fn revoking(net: &PeerNet, config: &Config, who: &SigningIdentity) -> anyhow::Result<Config> {
    let crl = net.orgs[0].ca.crl(
        &[(
            who.certificate().serial.clone(),
            medledger_common::msp::unix_now() - 10,
        )],
        2,
        3600,
    )?;
    let mut next = config.clone();
    let value = &mut next
        .channel_group
        .as_mut()
        .and_then(|g| g.groups.get_mut("Application"))
        .and_then(|g| g.groups.get_mut("Hospital1MSP"))
        .and_then(|g| g.values.get_mut("MSP"))
        .ok_or_else(|| anyhow::anyhow!("no Hospital1 MSP"))?
        .value;
    let mut msp = MspConfig::decode(value.as_slice())?;
    let mut fabric = FabricMspConfig::decode(msp.config.as_slice())?;
    fabric.revocation_list.push(crl.into_bytes());
    msp.config = fabric.encode_to_vec();
    *value = msp.encode_to_vec();
    Ok(next)
}

/// Waits until peer `i` has the configuration of `sequence` in force.
async fn wait_sequence(net: &PeerNet, i: usize, sequence: u64) -> anyhow::Result<()> {
    let ch = net.channel(i).await?;
    tokio::time::timeout(Duration::from_secs(20), async {
        while ch.config().sequence < sequence {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("peer {i} never reached configuration {sequence}"))
}

/// A Deliver stream on orderer 1 from the next block on, as `reader`.
async fn deliver_stream(
    net: &PeerNet,
    reader: &SigningIdentity,
) -> anyhow::Result<tonic::Streaming<medledger_proto::orderer::DeliverResponse>> {
    let root = net.orderers.org.tls_ca.cert_pem().as_bytes().to_vec();
    let ch = medledger_peer::comm::dial(&net.orderers.address(1), &[root], None)
        .await
        .map_err(anyhow::Error::msg)?;
    let seek = SeekInfo {
        start: Some(SeekPosition {
            r#type: Some(medledger_proto::orderer::seek_position::Type::NextCommit(
                SeekNextCommit {},
            )),
        }),
        stop: Some(SeekPosition {
            r#type: Some(medledger_proto::orderer::seek_position::Type::Specified(
                medledger_proto::orderer::SeekSpecified { number: u64::MAX },
            )),
        }),
        ..Default::default()
    };
    let env = signed_envelope(
        HeaderType::DeliverSeekInfo,
        CHANNEL,
        seek.encode_to_vec(),
        reader,
    )?;
    Ok(AtomicBroadcastClient::new(ch)
        .deliver(tokio_stream::once(env))
        .await?
        .into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_reaches_every_node_through_a_configuration_block() -> anyhow::Result<()> {
    let mut net = PeerNet::start(BOTH, 5_000).await?;
    let doctor = net.orgs[0].identity("doctor1", "client", &[("role", "doctor")])?;
    let nurse = net.orgs[0].identity("nurse1", "client", &[])?;
    let admin1 = net.orgs[0].identity("admin1", "admin", &[])?;
    let admin2 = net.orgs[1].identity("admin2", "admin", &[])?;
    let mut gw = net.gateway(0, doctor.clone()).await?;
    let (_, code, _, _) = gw.submit(&["Put", "rec-1", "v1"]).await?;
    assert_eq!(code, TxValidationCode::Valid as i32);
    let mut doctor_stream = deliver_stream(&net, &doctor).await?;

    let current = net.channel(0).await?.config();
    let update = compute_update(
        CHANNEL,
        &current.source,
        &revoking(&net, &current.source, &doctor)?,
    )?;

    // Another hospital's admin may not change Hospital1's MSP: refused, nothing changes.
    let r = net
        .orderers
        .broadcast(2, signed(&update, &[&admin2])?)
        .await?;
    assert_eq!(r.status, Status::Forbidden as i32, "{}", r.info);
    assert!(r.info.contains("Hospital1MSP/Admins"), "{}", r.info);
    // Neither may a member that is not an admin.
    let r = net
        .orderers
        .broadcast(2, signed(&update, &[&nurse])?)
        .await?;
    assert_eq!(r.status, Status::Forbidden as i32, "{}", r.info);

    let r = net
        .orderers
        .broadcast(1, signed(&update, &[&admin1])?)
        .await?;
    assert_eq!(r.status, Status::Success as i32, "{}", r.info);
    for i in 0..2 {
        wait_sequence(&net, i, 1).await?;
    }

    // The configuration block is a block of its own, on every peer, with its LAST_CONFIG.
    let ch = net.channel(0).await?;
    let height = ch.ledger.height();
    let config_block = (1..height)
        .rev()
        .filter_map(|n| ch.ledger.block(n).ok().flatten())
        .find(is_config_block)
        .ok_or_else(|| anyhow::anyhow!("no configuration block"))?;
    assert_eq!(config_block.data.as_ref().map(|d| d.data.len()), Some(1));
    assert_eq!(
        ch.ledger.last_config_block()?,
        config_block
            .header
            .as_ref()
            .map(|h| h.number)
            .unwrap_or_default()
    );

    // The doctor is refused by the gateway; the nurse is not.
    let e = gw.evaluate(&["Get", "rec-1"]).await.unwrap_err();
    assert!(e.message().contains("revoked"), "{e}");
    let mut nurse_gw = net.gateway(0, nurse.clone()).await?;
    let (_, code, _, _) = nurse_gw.submit(&["Put", "rec-2", "v2"]).await?;
    assert_eq!(code, TxValidationCode::Valid as i32);

    // The doctor's Deliver stream on the orderer ends FORBIDDEN at the first block after the
    // configuration block (the configuration block itself was delivered under the old one).
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match doctor_stream.message().await {
                Ok(Some(m)) => match m.r#type {
                    Some(deliver_response::Type::Status(s)) => return Some(s),
                    Some(deliver_response::Type::Block(_)) => continue,
                    None => return None,
                },
                _ => return None,
            }
        }
    })
    .await?;
    assert_eq!(ended, Some(Status::Forbidden as i32));

    // The orderers refuse the doctor's transactions at Broadcast.
    let tx = signed_envelope(
        HeaderType::EndorserTransaction,
        CHANNEL,
        vec![1, 2, 3],
        &doctor,
    )?;
    let r = net.orderers.broadcast(3, tx).await?;
    assert_eq!(r.status, Status::Forbidden as i32, "{}", r.info);

    // The same update again is stale.
    let r = net
        .orderers
        .broadcast(1, signed(&update, &[&admin1])?)
        .await?;
    assert_eq!(r.status, Status::BadRequest as i32, "{}", r.info);
    assert!(r.info.contains("version"), "{}", r.info);

    // A restarted peer comes back with the new configuration.
    net.stop_peer(1).await;
    net.start_peer(1).await?;
    assert_eq!(net.channel(1).await?.config().sequence, 1);
    let mut gw2 = net.gateway(1, doctor.clone()).await?;
    let e = gw2.evaluate(&["Get", "rec-1"]).await.unwrap_err();
    assert!(e.message().contains("revoked"), "{e}");

    // A peer that starts over from the genesis block replays the configuration block and ends
    // with the same configuration and state as the others.
    net.stop_peer(1).await;
    std::fs::remove_dir_all(medledger_tests::peernet::data_dir(&net, 1))?;
    net.start_peer(1).await?;
    let height = net.channel(0).await?.ledger.height();
    net.wait_height(height).await?;
    let (a, b) = (net.channel(0).await?, net.channel(1).await?);
    assert_eq!(b.config().sequence, 1);
    assert_eq!(b.config().source, a.config().source);
    assert_eq!(b.ledger.state_hash()?, a.ledger.state_hash()?);
    assert_eq!(b.ledger.last_hash()?, a.ledger.last_hash()?);
    assert!(
        b.config()
            .msps
            .deserialize(doctor.serialized(), medledger_common::msp::Expiry::now())
            .is_err()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fabric_tool_flow_revokes_a_member_from_the_command_line() -> anyhow::Result<()> {
    let bin = medledger_tests::workspace_binary("medledger-peer", "medledger-peer")?;
    let net = PeerNet::start(BOTH, 5_000).await?;
    let dir = tempfile::tempdir()?;
    let doctor = net.orgs[0].identity("doctor1", "client", &[("role", "doctor")])?;
    let admin1 = net.orgs[0].identity("admin1", "admin", &[])?;
    let admin2 = net.orgs[1].identity("admin2", "admin", &[])?;
    let (msp1, msp2) = (dir.path().join("admin1"), dir.path().join("admin2"));
    net.orgs[0].write_msp(&msp1, &admin1)?;
    net.orgs[1].write_msp(&msp2, &admin2)?;
    let cafile = dir.path().join("orderer-tlsca.pem");
    std::fs::write(&cafile, net.orderers.org.tls_ca.cert_pem())?;
    let orderer = net.orderers.address(2);
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let to_orderer = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        a.extend(["-o".into(), orderer.clone(), "-c".into(), CHANNEL.into()]);
        a.extend(["--cafile".into(), cafile.to_string_lossy().into_owned()]);
        a
    };
    let run = |mspid: &str, msp: &std::path::Path, args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        medledger_tests::run_cli_ok(&bin, mspid, msp, &args)
    };

    // Hospital1's CA revoked the doctor and wrote a CRL.
    let crl = net.orgs[0].ca.crl(
        &[(
            doctor.certificate().serial.clone(),
            medledger_common::msp::unix_now() - 10,
        )],
        2,
        3600,
    )?;
    std::fs::write(path("crl.pem"), crl)?;

    let out = run(
        "Hospital1MSP",
        &msp1,
        to_orderer(&["channel", "fetch", "config", &path("config_block.pb")]),
    )?;
    assert!(out.contains("Received block: 0"), "{out}");
    run(
        "Hospital1MSP",
        &msp1,
        vec![
            "config".into(),
            "from-block".into(),
            "--block".into(),
            path("config_block.pb"),
            "--output".into(),
            path("config.pb"),
        ],
    )?;
    run(
        "Hospital1MSP",
        &msp1,
        vec![
            "config".into(),
            "add-crl".into(),
            "--config".into(),
            path("config.pb"),
            "--org".into(),
            "Hospital1MSP".into(),
            "--crl".into(),
            path("crl.pem"),
            "--output".into(),
            path("modified.pb"),
        ],
    )?;
    run(
        "Hospital1MSP",
        &msp1,
        vec![
            "config".into(),
            "compute-update".into(),
            "--channel_id".into(),
            CHANNEL.into(),
            "--original".into(),
            path("config.pb"),
            "--updated".into(),
            path("modified.pb"),
            "--output".into(),
            path("update.pb"),
        ],
    )?;
    // Hospital2's admin may sign, but its signature does not authorise a change to Hospital1.
    run(
        "Hospital2MSP",
        &msp2,
        vec![
            "channel".into(),
            "signconfigtx".into(),
            "-f".into(),
            path("update.pb"),
        ],
    )?;
    let e = run(
        "Hospital2MSP",
        &msp2,
        to_orderer(&["channel", "update", "-f", &path("update.pb")]),
    )
    .expect_err("an update to Hospital1's MSP needs Hospital1's admin");
    assert!(e.to_string().contains("FORBIDDEN"), "{e}");
    let out = run(
        "Hospital1MSP",
        &msp1,
        to_orderer(&["channel", "update", "-f", &path("update.pb")]),
    )?;
    assert!(
        out.contains("Successfully submitted channel update"),
        "{out}"
    );
    for i in 0..2 {
        wait_sequence(&net, i, 1).await?;
    }
    let mut gw = net.gateway(1, doctor).await?;
    let e = gw.evaluate(&["Get", "x"]).await.unwrap_err();
    assert!(e.message().contains("revoked"), "{e}");

    // The newest configuration block is now the update's.
    let out = run(
        "Hospital1MSP",
        &msp1,
        to_orderer(&["channel", "fetch", "config", &path("config_block2.pb")]),
    )?;
    assert!(!out.contains("Received block: 0"), "{out}");
    Ok(())
}

/// Calls a system chaincode on peer `i` through the Endorser, as Fabric's `peer channel getinfo`
/// does (channel named in the arguments, `header_channel` in the header: empty for the CLI).
async fn system_query(
    net: &PeerNet,
    i: usize,
    who: &SigningIdentity,
    header_channel: &str,
    chaincode: &str,
    args: &[&[u8]],
) -> anyhow::Result<medledger_proto::protos::Response> {
    let root = net.orgs[i].tls_ca.cert_pem().as_bytes().to_vec();
    let ch = medledger_peer::comm::dial(&net.address(i), &[root], None)
        .await
        .map_err(anyhow::Error::msg)?;
    let (sp, _) = medledger_common::protoutil::build_signed_proposal(
        &medledger_common::protoutil::Invocation {
            channel: header_channel.into(),
            chaincode: chaincode.into(),
            args: args.iter().map(|a| a.to_vec()).collect(),
            transient: Default::default(),
            is_init: false,
        },
        who,
    )?;
    let r = medledger_proto::protos::endorser_client::EndorserClient::new(ch)
        .process_proposal(sp)
        .await?
        .into_inner();
    r.response.ok_or_else(|| anyhow::anyhow!("no response"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn qscc_and_cscc_answer_fabric_tools_for_channel_readers() -> anyhow::Result<()> {
    use medledger_proto::common::{Block, BlockchainInfo};
    use medledger_proto::protos::ProcessedTransaction;
    let net = PeerNet::start(BOTH, 5_000).await?;
    let doctor = net.orgs[0].identity("doctor1", "client", &[("role", "doctor")])?;
    let mut gw = net.gateway(0, doctor.clone()).await?;
    let (txid, _, block, _) = gw.submit(&["Put", "rec-1", "v1"]).await?;
    net.wait_height(block + 1).await?;
    let ledger = &net.channel(1).await?.ledger;
    let ch = CHANNEL.as_bytes();

    for header in ["", CHANNEL] {
        let r = system_query(&net, 1, &doctor, header, "qscc", &[b"GetChainInfo", ch]).await?;
        assert_eq!(r.status, 200, "{}", r.message);
        let info = BlockchainInfo::decode(r.payload.as_slice())?;
        assert_eq!(info.height, ledger.height());
        assert_eq!(info.current_block_hash, ledger.last_hash()?);
    }
    let number = block.to_string();
    let r = system_query(
        &net,
        1,
        &doctor,
        "",
        "qscc",
        &[b"GetBlockByNumber", ch, number.as_bytes()],
    )
    .await?;
    let by_number = Block::decode(r.payload.as_slice())?;
    assert_eq!(Some(by_number.clone()), ledger.block(block)?);
    let hash =
        medledger_common::protoutil::block_header_hash(by_number.header.as_ref().expect("header"));
    let r = system_query(
        &net,
        1,
        &doctor,
        "",
        "qscc",
        &[b"GetBlockByHash", ch, &hash],
    )
    .await?;
    assert_eq!(Block::decode(r.payload.as_slice())?, by_number);
    let r = system_query(
        &net,
        1,
        &doctor,
        "",
        "qscc",
        &[b"GetBlockByTxID", ch, txid.as_bytes()],
    )
    .await?;
    assert_eq!(Block::decode(r.payload.as_slice())?, by_number);
    let r = system_query(
        &net,
        1,
        &doctor,
        "",
        "qscc",
        &[b"GetTransactionByID", ch, txid.as_bytes()],
    )
    .await?;
    let tx = ProcessedTransaction::decode(r.payload.as_slice())?;
    assert_eq!(tx.validation_code, TxValidationCode::Valid as i32);
    assert!(tx.transaction_envelope.is_some());

    let r = system_query(&net, 1, &doctor, "", "cscc", &[b"GetConfigBlock", ch]).await?;
    assert_eq!(Some(Block::decode(r.payload.as_slice())?), ledger.block(0)?);
    let r = system_query(&net, 1, &doctor, "", "cscc", &[b"GetChannelConfig", ch]).await?;
    assert_eq!(
        Config::decode(r.payload.as_slice())?,
        *net.channel(1).await?.config().source
    );

    // Refusals: an unknown channel, a missing or bad argument, an unknown transaction, a client
    // of a CA the channel does not know, and the revoked client.
    let r = system_query(
        &net,
        1,
        &doctor,
        "",
        "qscc",
        &[b"GetChainInfo", b"nochannel"],
    )
    .await?;
    assert!(
        r.status == 500 && r.message.contains("Invalid chain ID"),
        "{}",
        r.message
    );
    let r = system_query(
        &net,
        1,
        &doctor,
        "",
        "qscc",
        &[b"GetBlockByNumber", ch, b"-1"],
    )
    .await?;
    assert_eq!(r.status, 500, "{}", r.message);
    let r = system_query(&net, 1, &doctor, "", "qscc", &[b"GetBlockByNumber", ch]).await?;
    assert_eq!(r.status, 500, "{}", r.message);
    let r = system_query(
        &net,
        1,
        &doctor,
        "",
        "qscc",
        &[b"GetTransactionByID", ch, b"nope"],
    )
    .await?;
    assert_eq!(r.status, 500, "{}", r.message);
    let stranger = medledger_tests::TestOrg::new("Hospital1MSP")?.identity("x", "client", &[])?;
    let r = system_query(&net, 1, &stranger, "", "qscc", &[b"GetChainInfo", ch]).await?;
    assert!(
        r.status == 500 && r.message.contains("access denied"),
        "{}",
        r.message
    );
    let r = system_query(
        &net,
        1,
        &net.revoked_client,
        "",
        "cscc",
        &[b"GetConfigBlock", ch],
    )
    .await?;
    assert!(
        r.status == 500 && r.message.contains("access denied"),
        "{}",
        r.message
    );
    Ok(())
}

/// Orderer 1's first block, read over TLS with `client`'s certificate as `reader`.
async fn first_block_over_tls(
    net: &PeerNet,
    client: &medledger_peer::comm::ClientTls,
    reader: &SigningIdentity,
) -> anyhow::Result<u64> {
    let root = net.orderers.org.tls_ca.cert_pem().as_bytes().to_vec();
    let ch = medledger_peer::comm::dial(&net.orderers.address(1), &[root], Some(client))
        .await
        .map_err(anyhow::Error::msg)?;
    let block = |number| SeekPosition {
        r#type: Some(medledger_proto::orderer::seek_position::Type::Specified(
            medledger_proto::orderer::SeekSpecified { number },
        )),
    };
    let seek = SeekInfo {
        start: Some(block(0)),
        stop: Some(block(0)),
        ..Default::default()
    };
    let env = signed_envelope(
        HeaderType::DeliverSeekInfo,
        CHANNEL,
        seek.encode_to_vec(),
        reader,
    )?;
    let mut stream = AtomicBroadcastClient::new(ch)
        .deliver(tokio_stream::once(env))
        .await?
        .into_inner();
    match stream.message().await?.and_then(|m| m.r#type) {
        Some(deliver_response::Type::Block(b)) => Ok(b.header.map(|h| h.number).unwrap_or(99)),
        other => anyhow::bail!("no block: {other:?}"),
    }
}

/// Peer `i`'s chain height through qscc, over TLS with `client`'s certificate, as `who`.
async fn height_over_tls(
    net: &PeerNet,
    i: usize,
    client: &medledger_peer::comm::ClientTls,
    who: &SigningIdentity,
) -> anyhow::Result<i32> {
    let root = net.orgs[i].tls_ca.cert_pem().as_bytes().to_vec();
    let ch = medledger_peer::comm::dial(&net.address(i), &[root], Some(client))
        .await
        .map_err(anyhow::Error::msg)?;
    let (sp, _) = medledger_common::protoutil::build_signed_proposal(
        &medledger_common::protoutil::Invocation {
            channel: CHANNEL.into(),
            chaincode: "qscc".into(),
            args: vec![b"GetChainInfo".to_vec(), CHANNEL.as_bytes().to_vec()],
            transient: Default::default(),
            is_init: false,
        },
        who,
    )?;
    let r = medledger_proto::protos::endorser_client::EndorserClient::new(ch)
        .process_proposal(sp)
        .await?
        .into_inner();
    Ok(r.response.map(|r| r.status).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hospital_added_by_an_update_is_trusted_over_tls_without_a_restart() -> anyhow::Result<()>
{
    let net = PeerNet::start(BOTH, 5_000).await?;
    let h3 = medledger_tests::TestOrg::new("Hospital3MSP")?;
    let (cert_pem, key_pem) = h3.tls_pair("peer0.hospital3")?;
    let tls = medledger_peer::comm::ClientTls { cert_pem, key_pem };
    let h3_peer = h3.identity("peer0", "peer", &[])?;

    // Not a member yet: its TLS CA is in no node's configuration, so no node accepts its
    // certificate.
    let e = first_block_over_tls(&net, &tls, &h3_peer)
        .await
        .expect_err("an orderer accepts a TLS client of no organisation of the channel");
    assert!(!e.to_string().is_empty());
    assert!(
        height_over_tls(&net, 0, &tls, &h3_peer).await.is_err(),
        "a peer accepts a TLS client of no organisation of the channel"
    );

    // Hospital1's and Hospital2's admins add Hospital3 (a MAJORITY of Admins).
    let current = net.channel(0).await?.config();
    let mut next = (*current.source).clone();
    next.channel_group
        .as_mut()
        .and_then(|g| g.groups.get_mut("Application"))
        .ok_or_else(|| anyhow::anyhow!("no Application group"))?
        .groups
        .insert(
            "Hospital3MSP".into(),
            medledger_common::channelconfig::application_org_group(&h3.profile()),
        );
    let update = compute_update(CHANNEL, &current.source, &next)?;
    let admin1 = net.orgs[0].identity("admin1", "admin", &[])?;
    let admin2 = net.orgs[1].identity("admin2", "admin", &[])?;
    let r = net
        .orderers
        .broadcast(1, signed(&update, &[&admin1, &admin2])?)
        .await?;
    assert_eq!(r.status, Status::Success as i32, "{}", r.info);
    for i in 0..2 {
        wait_sequence(&net, i, current.sequence + 1).await?;
    }

    // From the configuration block on, every node trusts Hospital3's TLS CA: no restart, no
    // edited file.
    assert_eq!(first_block_over_tls(&net, &tls, &h3_peer).await?, 0);
    for i in 0..2 {
        assert_eq!(height_over_tls(&net, i, &tls, &h3_peer).await?, 200);
    }
    Ok(())
}
