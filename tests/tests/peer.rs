//! Two hospitals' peers on loopback with TLS, the example chaincode served by the Rust shim, an
//! endorsement policy needing both organisations: submit and commit on both peers with the same
//! state and block hashes, history, an MVCC conflict, bad input, and restart from the savepoint.

use medledger_common::protoutil::{Invocation, build_signed_proposal};
use medledger_proto::gateway::{EndorseRequest, EvaluateRequest};
use medledger_proto::protos::{SignedProposal, TxValidationCode};
use medledger_tests::TestOrg;
use medledger_tests::peernet::{CHANNEL, PeerNet};
use prost::Message;

const BOTH: &str = "AND('Hospital1MSP.peer', 'Hospital2MSP.peer')";

async fn same_ledgers(net: &PeerNet) -> anyhow::Result<()> {
    let a = net.channel(0).await?;
    let b = net.channel(1).await?;
    assert_eq!(a.ledger.height(), b.ledger.height());
    assert_eq!(
        a.ledger.state_hash()?,
        b.ledger.state_hash()?,
        "same world state"
    );
    assert_eq!(
        a.ledger.last_hash()?,
        b.ledger.last_hash()?,
        "same block hashes"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn submit_commits_on_both_peers_with_history_and_mvcc() -> anyhow::Result<()> {
    let net = PeerNet::start(BOTH, 5_000).await?;
    let doctor = net.orgs[0].identity("doctor1", "client", &[("role", "doctor")])?;
    let mut gw = net.gateway(0, doctor.clone()).await?;

    let (tx1, code, block, result) = gw.submit(&["Put", "record-1", "v1"]).await?;
    assert_eq!(code, TxValidationCode::Valid as i32);
    assert_eq!(result, b"v1");
    net.wait_height(block + 1).await?;
    same_ledgers(&net).await?;
    let (tx2, _, block2, _) = gw.submit(&["Put", "record-1", "v2"]).await?;
    net.wait_height(block2 + 1).await?;
    for i in 0..2 {
        let ch = net.channel(i).await?;
        assert_eq!(
            ch.ledger.state("kv", "record-1")?.map(|v| v.value),
            Some(b"v2".to_vec())
        );
    }
    assert_eq!(gw.evaluate(&["Get", "record-1"]).await?, b"v2");
    assert_eq!(gw.evaluate(&["Whoami"]).await?, b"Hospital1MSP doctor");

    // History: both writes, newest first, with their transaction ids; the ledger also keeps who.
    let history: serde_json::Value =
        serde_json::from_slice(&gw.evaluate(&["History", "record-1"]).await?)?;
    let ids: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["txId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [tx2.as_str(), tx1.as_str()]);
    let h = net.channel(1).await?.ledger.history("kv", "record-1")?;
    assert_eq!(h[0].creator_msp_id, "Hospital1MSP");
    assert!(
        h[0].creator_subject.contains("doctor1"),
        "{}",
        h[0].creator_subject
    );

    // MVCC: two increments endorsed on the same version; the second to commit is invalid.
    let (ta, ea) = gw.endorse(&["Increment", "counter"]).await?;
    let (tb, eb) = gw.endorse(&["Increment", "counter"]).await?;
    gw.submit_prepared(&ta, ea).await?;
    gw.submit_prepared(&tb, eb).await?;
    let (ca, ba) = gw.commit_status(&ta).await?;
    let (cb, bb) = gw.commit_status(&tb).await?;
    assert_eq!(ca, TxValidationCode::Valid as i32);
    assert_eq!(cb, TxValidationCode::MvccReadConflict as i32);
    net.wait_height(ba.max(bb) + 1).await?;
    assert_eq!(
        gw.evaluate(&["Get", "counter"]).await?,
        b"1",
        "state as the first wrote it"
    );
    same_ledgers(&net).await?;

    // Ranges see committed keys.
    let keys: Vec<String> = serde_json::from_slice(&gw.evaluate(&["Range", "", ""]).await?)?;
    assert_eq!(keys, ["counter", "record-1"]);

    // Pagination with bookmarks, and partial composite key queries.
    for i in 0..5 {
        gw.submit(&["Put", &format!("page-{i}"), "x"]).await?;
    }
    let page = |v: Vec<u8>| -> anyhow::Result<(Vec<String>, String)> {
        let j: serde_json::Value = serde_json::from_slice(&v)?;
        Ok((
            serde_json::from_value(j["keys"].clone())?,
            j["bookmark"].as_str().unwrap_or("").to_owned(),
        ))
    };
    let (keys, bm) = page(gw.evaluate(&["Page", "page-", "page-~", "2", ""]).await?)?;
    assert_eq!(
        (keys, bm.as_str()),
        (vec!["page-0".to_string(), "page-1".into()], "page-2")
    );
    let (keys, bm) = page(gw.evaluate(&["Page", "page-", "page-~", "2", &bm]).await?)?;
    assert_eq!(
        (keys, bm.as_str()),
        (vec!["page-2".to_string(), "page-3".into()], "page-4")
    );
    let (keys, bm) = page(gw.evaluate(&["Page", "page-", "page-~", "2", &bm]).await?)?;
    assert_eq!((keys, bm.as_str()), (vec!["page-4".to_string()], ""));
    gw.submit(&["PutIndexed", "record", "P-0042", "R-1", "a"])
        .await?;
    gw.submit(&["PutIndexed", "record", "P-0042", "R-2", "b"])
        .await?;
    gw.submit(&["PutIndexed", "record", "P-0099", "R-3", "c"])
        .await?;
    let parts: Vec<Vec<String>> =
        serde_json::from_slice(&gw.evaluate(&["ByPartial", "record", "P-0042"]).await?)?;
    assert_eq!(
        parts,
        vec![
            vec!["P-0042".to_string(), "R-1".into()],
            vec!["P-0042".to_string(), "R-2".into()]
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endorsement_policy_is_enforced_at_commit() -> anyhow::Result<()> {
    let net = PeerNet::start(BOTH, 5_000).await?;
    let client = net.orgs[0].identity("app", "client", &[])?;
    let mut gw = net.gateway(0, client.clone()).await?;
    // Endorse through the gateway (both orgs), then strip Hospital2's endorsement before submitting.
    let (tx, env) = gw.endorse(&["Put", "k", "v"]).await?;
    let mut payload = medledger_proto::common::Payload::decode(env.payload.as_slice())?;
    let mut t = medledger_proto::protos::Transaction::decode(payload.data.as_slice())?;
    let mut cap =
        medledger_proto::protos::ChaincodeActionPayload::decode(t.actions[0].payload.as_slice())?;
    let action = cap.action.as_mut().unwrap();
    assert_eq!(
        action.endorsements.len(),
        2,
        "the gateway collected both organisations"
    );
    action.endorsements.truncate(1);
    t.actions[0].payload = cap.encode_to_vec();
    payload.data = t.encode_to_vec();
    let forged = medledger_proto::common::Envelope {
        payload: payload.encode_to_vec(),
        signature: vec![],
    };
    gw.submit_prepared(&tx, forged).await?;
    let (code, block) = gw.commit_status(&tx).await?;
    assert_eq!(code, TxValidationCode::EndorsementPolicyFailure as i32);
    net.wait_height(block + 1).await?;
    assert!(
        net.channel(1).await?.ledger.state("kv", "k")?.is_none(),
        "no state change"
    );
    // The same write with both endorsements commits.
    let (_, code, _, _) = gw.submit(&["Put", "k", "v"]).await?;
    assert_eq!(code, TxValidationCode::Valid as i32);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_proposals_and_failing_chaincode_get_clear_errors() -> anyhow::Result<()> {
    let net = PeerNet::start("OR('Hospital1MSP.peer', 'Hospital2MSP.peer')", 1_500).await?;
    let client = net.orgs[0].identity("app", "client", &[])?;
    let mut gw = net.gateway(0, client.clone()).await?;
    let inv = |args: &[&str], channel: &str, cc: &str| Invocation {
        channel: channel.into(),
        chaincode: cc.into(),
        args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
        ..Default::default()
    };
    let evaluate = |sp: SignedProposal, tx_id: String| EvaluateRequest {
        transaction_id: tx_id,
        channel_id: CHANNEL.into(),
        proposed_transaction: Some(sp),
        target_organizations: vec![],
    };

    // Unsigned and wrongly signed proposals.
    let (mut sp, tx) = build_signed_proposal(&inv(&["Get", "x"], CHANNEL, "kv"), &client)?;
    sp.signature.clear();
    let e = gw
        .client
        .evaluate(evaluate(sp.clone(), tx.clone()))
        .await
        .unwrap_err();
    assert!(e.message().contains("signature"), "{e}");
    sp.signature = client.sign(b"other bytes")?;
    let e = gw.client.evaluate(evaluate(sp, tx)).await.unwrap_err();
    assert!(e.message().contains("signature"), "{e}");

    // Garbage proposal bytes.
    let garbage = SignedProposal {
        proposal_bytes: vec![0xff; 64],
        signature: vec![1, 2, 3],
    };
    let e = gw
        .client
        .evaluate(evaluate(garbage, "x".into()))
        .await
        .unwrap_err();
    assert!(e.message().contains("unpack"), "{e}");

    // Unknown channel, unknown chaincode.
    let (sp, tx) = build_signed_proposal(&inv(&["Get", "x"], "nochannel", "kv"), &client)?;
    let e = gw.client.evaluate(evaluate(sp, tx)).await.unwrap_err();
    assert!(e.message().contains("nochannel"), "{e}");
    let (sp, tx) = build_signed_proposal(&inv(&["Get", "x"], CHANNEL, "nocc"), &client)?;
    let e = gw.client.evaluate(evaluate(sp, tx)).await.unwrap_err();
    assert!(e.message().contains("nocc"), "{e}");

    // A creator from a CA the channel does not know.
    let stranger = TestOrg::new("Hospital1MSP")?.identity("mallory", "client", &[])?;
    let (sp, tx) = build_signed_proposal(&inv(&["Get", "x"], CHANNEL, "kv"), &stranger)?;
    let e = gw.client.evaluate(evaluate(sp, tx)).await.unwrap_err();
    assert!(e.message().contains("not valid"), "{e}");

    // A creator whose certificate the channel's CRL revokes.
    let (sp, tx) = build_signed_proposal(&inv(&["Get", "x"], CHANNEL, "kv"), &net.revoked_client)?;
    let e = gw.client.evaluate(evaluate(sp, tx)).await.unwrap_err();
    assert!(e.message().contains("revoked"), "{e}");

    // Chaincode that returns an error, panics, or runs past the execute timeout.
    let e = gw.evaluate(&["Fail", "no such patient"]).await.unwrap_err();
    assert!(e.message().contains("no such patient"), "{e}");
    let e = gw.evaluate(&["Panic"]).await.unwrap_err();
    assert!(e.message().contains("panicked"), "{e}");
    let e = gw.evaluate(&["Sleep", "3000"]).await.unwrap_err();
    assert!(e.message().contains("timeout"), "{e}");
    let e = gw.endorse(&["Fail", "nope"]).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Aborted);

    // Oversized proposal: within gRPC's frame limit, over the endorser's 10 MiB proposal limit.
    let big = "x".repeat(10 * 1024 * 1024 + 512 * 1024);
    let (sp, tx) = build_signed_proposal(&inv(&["Put", "big", &big], CHANNEL, "kv"), &client)?;
    let e = gw
        .client
        .endorse(EndorseRequest {
            transaction_id: tx,
            channel_id: CHANNEL.into(),
            proposed_transaction: Some(sp),
            endorsing_organizations: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Aborted);
    assert!(
        String::from_utf8_lossy(e.details()).contains("larger than the 10485760 byte limit"),
        "{e:?}"
    );

    // A replayed, committed proposal is refused as a duplicate.
    let (sp, tx) = build_signed_proposal(&inv(&["Put", "once", "1"], CHANNEL, "kv"), &client)?;
    let r = gw
        .client
        .endorse(EndorseRequest {
            transaction_id: tx.clone(),
            channel_id: CHANNEL.into(),
            proposed_transaction: Some(sp.clone()),
            endorsing_organizations: vec![],
        })
        .await?
        .into_inner();
    gw.submit_prepared(&tx, r.prepared_transaction.unwrap())
        .await?;
    assert_eq!(gw.commit_status(&tx).await?.0, 0);
    let e = gw
        .client
        .endorse(EndorseRequest {
            transaction_id: tx.clone(),
            channel_id: CHANNEL.into(),
            proposed_transaction: Some(sp),
            endorsing_organizations: vec![],
        })
        .await
        .unwrap_err();
    assert!(
        String::from_utf8_lossy(e.details()).contains("duplicate transaction"),
        "{e:?}"
    );

    // Nothing above changed state, and the peer still serves.
    assert!(net.channel(0).await?.ledger.state("kv", "big")?.is_none());
    gw.submit(&["Put", "still", "serving"]).await?;
    assert_eq!(gw.evaluate(&["Get", "still"]).await?, b"serving");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_peer_resumes_from_its_savepoint() -> anyhow::Result<()> {
    let mut net = PeerNet::start(BOTH, 5_000).await?;
    let client = net.orgs[0].identity("app", "client", &[])?;
    let mut gw = net.gateway(0, client.clone()).await?;
    let mut last = 0;
    for i in 0..3 {
        last = gw.submit(&["Put", &format!("k{i}"), "v"]).await?.2;
    }
    // The gateway waits for Hospital1's commit only; let Hospital2 catch up before measuring it.
    net.wait_height(last + 1).await?;
    let before = net.channel(1).await?;
    let (height, hash) = (before.ledger.height(), before.ledger.state_hash()?);
    drop(before);
    net.stop_peer(1).await;
    // Hospital2 is down: endorsements needing it fail, nothing commits.
    assert!(gw.endorse(&["Put", "down", "v"]).await.is_err());
    net.start_peer(1).await?;
    let after = net.channel(1).await?;
    assert_eq!(after.ledger.height(), height, "resumed at its savepoint");
    assert_eq!(after.ledger.state_hash()?, hash, "same state after restart");
    let mut gw = net.gateway(0, client).await?;
    let (_, _, block, _) = gw.submit(&["Put", "after", "restart"]).await?;
    net.wait_height(block + 1).await?;
    same_ledgers(&net).await?;
    Ok(())
}

/// The Deliver service: full and filtered blocks from a seek, and refusals for bad requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliver_streams_blocks_and_filtered_blocks() -> anyhow::Result<()> {
    use medledger_common::protoutil::signed_envelope;
    use medledger_proto::common::{HeaderType, Status as BlockStatus};
    use medledger_proto::orderer::seek_info::SeekBehavior;
    use medledger_proto::orderer::{
        SeekInfo, SeekNewest, SeekOldest, SeekPosition, seek_position::Type as Seek,
    };
    use medledger_proto::protos::deliver_client::DeliverClient;
    use medledger_proto::protos::deliver_response::Type as Resp;

    let net = PeerNet::start(BOTH, 5_000).await?;
    let client = net.orgs[0].identity("app", "client", &[])?;
    let mut gw = net.gateway(0, client.clone()).await?;
    let (tx, _, block, _) = gw.submit(&["Put", "a", "1"]).await?;
    let root = net.orgs[0].tls_ca.cert_pem().as_bytes().to_vec();
    let ch = medledger_peer::comm::dial(&net.address(0), &[root], None)
        .await
        .map_err(anyhow::Error::msg)?;
    let mut deliver = DeliverClient::new(ch);
    let seek = |start: Seek, stop: Seek| SeekInfo {
        start: Some(SeekPosition {
            r#type: Some(start),
        }),
        stop: Some(SeekPosition { r#type: Some(stop) }),
        behavior: SeekBehavior::FailIfNotReady as i32,
        ..Default::default()
    };
    let env = signed_envelope(
        HeaderType::DeliverSeekInfo,
        CHANNEL,
        seek(Seek::Oldest(SeekOldest {}), Seek::Newest(SeekNewest {})).encode_to_vec(),
        &client,
    )?;
    let mut stream = deliver
        .deliver(tokio_stream::once(env.clone()))
        .await?
        .into_inner();
    let mut numbers = Vec::new();
    while let Some(m) = stream.message().await? {
        match m.r#type {
            Some(Resp::Block(b)) => numbers.push(b.header.unwrap().number),
            Some(Resp::Status(s)) => {
                assert_eq!(s, BlockStatus::Success as i32);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(numbers, (0..=block).collect::<Vec<_>>());

    let mut stream = deliver
        .deliver_filtered(tokio_stream::once(env))
        .await?
        .into_inner();
    let mut found = false;
    while let Some(m) = stream.message().await? {
        if let Some(Resp::FilteredBlock(fb)) = m.r#type {
            for t in fb.filtered_transactions {
                if t.txid == tx {
                    assert_eq!(t.tx_validation_code, 0);
                    found = true;
                }
            }
        } else {
            break;
        }
    }
    assert!(found, "the filtered block names our transaction as valid");

    // A seek signed by an identity from an unknown CA is forbidden; a wrong channel is not found.
    let stranger = TestOrg::new("Hospital1MSP")?.identity("x", "client", &[])?;
    let env = signed_envelope(
        HeaderType::DeliverSeekInfo,
        CHANNEL,
        seek(Seek::Oldest(SeekOldest {}), Seek::Newest(SeekNewest {})).encode_to_vec(),
        &stranger,
    )?;
    let mut stream = deliver.deliver(tokio_stream::once(env)).await?.into_inner();
    let m = stream.message().await?.and_then(|m| m.r#type);
    assert!(
        matches!(m, Some(Resp::Status(s)) if s == BlockStatus::Forbidden as i32),
        "{m:?}"
    );
    let env = signed_envelope(
        HeaderType::DeliverSeekInfo,
        "other",
        seek(Seek::Oldest(SeekOldest {}), Seek::Newest(SeekNewest {})).encode_to_vec(),
        &client,
    )?;
    let mut stream = deliver.deliver(tokio_stream::once(env)).await?.into_inner();
    let m = stream.message().await?.and_then(|m| m.r#type);
    assert!(
        matches!(m, Some(Resp::Status(s)) if s == BlockStatus::NotFound as i32),
        "{m:?}"
    );
    let garbage = medledger_proto::common::Envelope {
        payload: vec![0xff; 10],
        signature: vec![],
    };
    let mut stream = deliver
        .deliver(tokio_stream::once(garbage))
        .await?
        .into_inner();
    let m = stream.message().await?.and_then(|m| m.r#type);
    assert!(
        matches!(m, Some(Resp::Status(s)) if s == BlockStatus::BadRequest as i32),
        "{m:?}"
    );
    Ok(())
}

/// A chaincode server with TLS: the peers dial it with `tls_required` and the CA from
/// `connection.json`'s `root_cert`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaincode_server_over_tls() -> anyhow::Result<()> {
    let mut net = PeerNet::start(BOTH, 5_000).await?;
    let (cert, key) = net.orgs[0].tls_pair("chaincode")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(medledger_shim::serve_with_listener(
        listener,
        "kvtls_1.0:77".into(),
        Some(medledger_shim::ServerTls {
            cert_pem: cert,
            key_pem: key,
            client_ca_pem: None,
        }),
        medledger_shim::example::KvStore,
        async {
            let _ = stopped.await;
        },
    ));
    for i in [1, 0] {
        net.stop_peer(i).await;
        let cc = &mut net.configs[i].channels[0].chaincodes[0];
        cc.package_id = "kvtls_1.0:77".into();
        cc.connection = medledger_peer::channel::definition::ConnectionInfo {
            address: format!("localhost:{port}"),
            tls_required: true,
            root_cert: net.orgs[0].tls_ca.cert_pem().to_owned(),
            domain: String::new(),
        };
        net.start_peer(i).await?;
    }
    let client = net.orgs[0].identity("app", "client", &[])?;
    let mut gw = net.gateway(0, client).await?;
    let (_, code, _, _) = gw.submit(&["Put", "tls-key", "over tls"]).await?;
    assert_eq!(code, TxValidationCode::Valid as i32);
    assert_eq!(gw.evaluate(&["Get", "tls-key"]).await?, b"over tls");
    let _ = stop.send(());
    Ok(())
}

/// A 2 MiB argument through a policy that needs the other organisation's endorsement: the
/// gateway's client to the other peer, the orderers and the block pullers all take Fabric's
/// 100 MiB message limit (the other peer's answer, ~6 MiB, used to hit tonic's 4 MiB default).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_two_mebibyte_argument_commits_under_a_two_organisation_policy() -> anyhow::Result<()> {
    let net = PeerNet::start(BOTH, 5_000).await?;
    let client = net.orgs[0].identity("bulk", "client", &[])?;
    let mut gw = net.gateway(0, client).await?;
    let value = "x".repeat(2 * 1024 * 1024);
    let (_, code, block, result) = gw.submit(&["Put", "large-scan", &value]).await?;
    assert_eq!(code, TxValidationCode::Valid as i32);
    assert_eq!(result.len(), value.len());
    net.wait_height(block + 1).await?;
    for i in 0..2 {
        let ch = net.channel(i).await?;
        let stored = ch.ledger.state("kv", "large-scan")?.map(|v| v.value.len());
        assert_eq!(stored, Some(value.len()), "peer {i}");
    }
    // The block (argument, write and result: over 6 MiB) reads back through the CLI's session,
    // whose clients take Fabric's 100 MiB too (tonic's 4 MiB default refused it).
    let dir = tempfile::tempdir()?;
    let reader = net.orgs[0].identity("reader", "client", &[])?;
    net.orgs[0].write_msp(&dir.path().join("msp"), &reader)?;
    let tls = dir.path().join("tlsca.pem");
    std::fs::write(&tls, net.orgs[0].tls_ca.cert_pem())?;
    let session = medledger_peer::node::cli::Session::connect(
        &net.address(0),
        Some(&tls),
        &dir.path().join("msp"),
        &net.orgs[0].mspid,
    )
    .await?;
    let answer = session
        .ask_peer(
            "qscc",
            vec![
                b"GetBlockByNumber".to_vec(),
                medledger_tests::peernet::CHANNEL.as_bytes().to_vec(),
                block.to_string().into_bytes(),
            ],
        )
        .await?;
    assert!(answer.payload.len() > 6 * 1024 * 1024);
    let fetched = medledger_proto::common::Block::decode(answer.payload.as_slice())?;
    assert_eq!(fetched.header.map(|h| h.number), Some(block));
    Ok(())
}

/// A Deliver stream (peer and orderer) ends with FORBIDDEN at the first block after the client's
/// certificate expires, as Fabric's deliver session re-checks it, instead of streaming on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliver_streams_end_forbidden_when_the_client_certificate_expires() -> anyhow::Result<()> {
    use medledger_common::msp::unix_now;
    use medledger_common::protoutil::signed_envelope;
    use medledger_proto::common::{HeaderType, Status as BlockStatus};
    use medledger_proto::orderer::atomic_broadcast_client::AtomicBroadcastClient;
    use medledger_proto::orderer::{
        SeekInfo, SeekOldest, SeekPosition, SeekSpecified, seek_position::Type as Seek,
    };
    use medledger_proto::protos::deliver_client::DeliverClient;
    use medledger_proto::{
        orderer::deliver_response::Type as OrdererResp, protos::deliver_response::Type as PeerResp,
    };

    let net = PeerNet::start(BOTH, 5_000).await?;
    let expires = unix_now() + 4;
    let short = net.orgs[0].identity_until("short-lived", "client", &[], expires)?;
    let seek = SeekInfo {
        start: Some(SeekPosition {
            r#type: Some(Seek::Oldest(SeekOldest {})),
        }),
        stop: Some(SeekPosition {
            r#type: Some(Seek::Specified(SeekSpecified { number: u64::MAX })),
        }),
        ..Default::default()
    };
    let env = signed_envelope(
        HeaderType::DeliverSeekInfo,
        CHANNEL,
        seek.encode_to_vec(),
        &short,
    )?;

    let peer_root = net.orgs[0].tls_ca.cert_pem().as_bytes().to_vec();
    let ch = medledger_peer::comm::dial(&net.address(0), &[peer_root], None)
        .await
        .map_err(anyhow::Error::msg)?;
    let mut from_peer = DeliverClient::new(ch)
        .deliver(tokio_stream::once(env.clone()))
        .await?
        .into_inner();
    let orderer_root = net.orderers.org.tls_ca.cert_pem().as_bytes().to_vec();
    let ch = medledger_peer::comm::dial(&net.orderers.address(1), &[orderer_root], None)
        .await
        .map_err(anyhow::Error::msg)?;
    let mut from_orderer = AtomicBroadcastClient::new(ch)
        .deliver(tokio_stream::once(env))
        .await?
        .into_inner();
    // While the certificate is valid, the genesis block arrives.
    let first = from_peer.message().await?.and_then(|m| m.r#type);
    assert!(matches!(first, Some(PeerResp::Block(_))), "{first:?}");
    let first = from_orderer.message().await?.and_then(|m| m.r#type);
    assert!(matches!(first, Some(OrdererResp::Block(_))), "{first:?}");

    while unix_now() <= expires {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let app = net.orgs[0].identity("app", "client", &[])?;
    let mut gw = net.gateway(0, app).await?;
    gw.submit(&["Put", "after-expiry", "1"]).await?;

    let next = tokio::time::timeout(std::time::Duration::from_secs(10), from_peer.message())
        .await??
        .and_then(|m| m.r#type);
    assert!(
        matches!(next, Some(PeerResp::Status(s)) if s == BlockStatus::Forbidden as i32),
        "peer sent {}",
        if matches!(next, Some(PeerResp::Block(_))) {
            "another block"
        } else {
            "something else"
        }
    );
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), from_orderer.message())
        .await??
        .and_then(|m| m.r#type);
    assert!(
        matches!(next, Some(OrdererResp::Status(s)) if s == BlockStatus::Forbidden as i32),
        "orderer sent {}",
        if matches!(next, Some(OrdererResp::Block(_))) {
            "another block"
        } else {
            "something else"
        }
    );
    Ok(())
}

/// CLI errors say what failed and what to try: no TLS root against a TLS peer, or the wrong TLS
/// CA, are named as such (they used to read `Error: configuration: transport error`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_errors_say_what_to_try() -> anyhow::Result<()> {
    let net = PeerNet::start(BOTH, 5_000).await?;
    let bin = tokio::task::spawn_blocking(|| {
        medledger_tests::workspace_binary("medledger-peer", "medledger-peer")
    })
    .await??;
    let dir = tempfile::tempdir()?;
    let client = net.orgs[0].identity("cli", "client", &[])?;
    let msp = dir.path().join("msp");
    net.orgs[0].write_msp(&msp, &client)?;
    let wrong_ca = dir.path().join("wrong-ca.pem");
    std::fs::write(&wrong_ca, net.orgs[1].tls_ca.cert_pem())?;
    let query = |tls: Option<&std::path::Path>| {
        let mut cmd = std::process::Command::new(&bin);
        cmd.args(["chaincode", "query", "-C", CHANNEL, "-n", "kv"])
            .args(["-c", r#"{"Args":["Get","k"]}"#])
            .args(["--peerAddresses", &net.address(0)])
            .env("CORE_PEER_LOCALMSPID", "Hospital1MSP")
            .env("CORE_PEER_MSPCONFIGPATH", &msp);
        if let Some(t) = tls {
            cmd.arg("--tlsRootCertFiles").arg(t);
        }
        cmd.output()
    };
    let out = query(None)?;
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!text.contains("configuration:"), "{text}");
    assert!(
        text.contains("requires TLS: pass --tlsRootCertFiles"),
        "{text}"
    );
    let out = query(Some(&wrong_ca))?;
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("not signed by the CA in --tlsRootCertFiles"),
        "{text}"
    );
    Ok(())
}
