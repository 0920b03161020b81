//! Private data collections on the real stack: three hospitals' peers (Hospital1 and Hospital2
//! in the collections, Hospital3 outside), four BFT orderers, TLS everywhere. Private values go
//! through the transient map, reach members only, never appear in a block, in the chaincode
//! arguments or in clear in any RocksDB file, expire with blockToLive, are erased by
//! PurgePrivateData, and reach a member that was down by pull and background reconciliation.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use medledger_common::SigningIdentity;
use medledger_common::crypto::sha256;
use medledger_peer::channel::blocks::chaincode_actions;
use medledger_peer::comm::{ClientTls, dial};
use medledger_peer::node::PrivateDataConfig;
use medledger_proto::kvrwset::{HashedRwSet, KvrwSet};
use medledger_proto::medledger::privdata::private_data_client::PrivateDataClient;
use medledger_proto::medledger::privdata::{
    PullRequest, PushRequest, PvtDataDigest, SignedPrivateDataRequest,
};
use medledger_proto::rwset::{
    CollectionPvtReadWriteSet, NsPvtReadWriteSet, TxPvtReadWriteSet, TxReadWriteSet,
};
use medledger_tests::peernet::{CHAINCODE, CHANNEL, NetOptions, PeerNet};
use prost::Message;

const COLLECTIONS: &str = r#"[
  {"name": "records", "policy": "OR('Hospital1MSP.member', 'Hospital2MSP.member')",
   "requiredPeerCount": 1, "maxPeerCount": 2, "blockToLive": 0,
   "memberOnlyRead": true, "memberOnlyWrite": true},
  {"name": "notes", "policy": "OR('Hospital1MSP.member', 'Hospital2MSP.member')",
   "requiredPeerCount": 0, "maxPeerCount": 2, "blockToLive": 0,
   "memberOnlyRead": true, "memberOnlyWrite": false},
  {"name": "shortlived", "policy": "OR('Hospital1MSP.member', 'Hospital2MSP.member')",
   "requiredPeerCount": 0, "maxPeerCount": 2, "blockToLive": 2,
   "memberOnlyRead": true, "memberOnlyWrite": false},
  {"name": "undisseminated", "policy": "OR('Hospital1MSP.member', 'Hospital2MSP.member')",
   "requiredPeerCount": 0, "maxPeerCount": 0, "blockToLive": 0,
   "memberOnlyRead": true, "memberOnlyWrite": false},
  {"name": "cosigned", "policy": "OR('Hospital1MSP.member', 'Hospital2MSP.member')",
   "requiredPeerCount": 0, "maxPeerCount": 2, "blockToLive": 0,
   "memberOnlyRead": true, "memberOnlyWrite": false,
   "endorsementPolicy": {"signaturePolicy": "AND('Hospital1MSP.peer', 'Hospital2MSP.peer')"}}
]"#;

async fn three_hospitals() -> anyhow::Result<PeerNet> {
    PeerNet::build(NetOptions {
        orgs: 3,
        collections: Some(COLLECTIONS.into()),
        private_data: PrivateDataConfig {
            pull_timeout_ms: 1_000,
            reconcile_interval_ms: 300,
            ..PrivateDataConfig::default()
        },
        ..NetOptions::new("OR('Hospital1MSP.peer', 'Hospital2MSP.peer')")
    })
    .await
}

fn value(v: &str) -> HashMap<String, Vec<u8>> {
    HashMap::from([("value".to_owned(), v.as_bytes().to_vec())])
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p).is_ok_and(|b| contains(&b, needle)) {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

/// The value hash a block carries for a private key written by transaction `tx_id`.
async fn hashed_write(
    net: &PeerNet,
    peer: usize,
    block: u64,
    collection: &str,
    key: &str,
) -> anyhow::Result<Vec<u8>> {
    let ch = net.channel(peer).await?;
    let b = ch.ledger.block(block)?.context("block")?;
    for env in &b.data.context("data")?.data {
        for action in chaincode_actions(env).1 {
            let rwset = TxReadWriteSet::decode(action.results.as_slice())?;
            for ns in rwset.ns_rwset {
                for c in ns.collection_hashed_rwset {
                    if c.collection_name != collection {
                        continue;
                    }
                    let h = HashedRwSet::decode(c.hashed_rwset.as_slice())?;
                    if let Some(w) = h
                        .hashed_writes
                        .iter()
                        .find(|w| w.key_hash == sha256(key.as_bytes()))
                    {
                        return Ok(w.value_hash.clone());
                    }
                }
            }
        }
    }
    anyhow::bail!("no hashed write of {collection}/{key} in block {block}")
}

fn err_text(s: &tonic::Status) -> String {
    format!("{} {}", s.message(), String::from_utf8_lossy(s.details()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn private_values_reach_members_only_and_never_the_ledger() -> anyhow::Result<()> {
    let net = three_hospitals().await?;
    let doctor1 = net.orgs[0].identity("doctor1", "client", &[("role", "doctor")])?;
    let doctor2 = net.orgs[1].identity("doctor2", "client", &[("role", "doctor")])?;
    let outsider = net.orgs[2].identity("clerk3", "client", &[])?;
    const SECRET: &str = "diagnosis: stage-2 hypertension (patient P-0042)";
    const PUBLIC: &str = "public-marker-5f2a9c";

    let mut h1 = net.gateway(0, doctor1.clone()).await?;
    let (_, code, block, _) = h1
        .submit_with(&["PutPrivate", "records", "P-0042"], value(SECRET))
        .await?;
    assert_eq!(code, 0);
    let (_, _, block2, _) = h1.submit(&["Put", "marker", PUBLIC]).await?;
    net.wait_height(block2.max(block) + 1).await?;

    // Both members read it; the outsider's reads fail; everyone can check the hash.
    assert_eq!(
        h1.evaluate(&["GetPrivate", "records", "P-0042"]).await?,
        SECRET.as_bytes()
    );
    let mut h2 = net.gateway(1, doctor2).await?;
    assert_eq!(
        h2.evaluate(&["GetPrivate", "records", "P-0042"]).await?,
        SECRET.as_bytes()
    );
    let mut h3 = net.gateway(2, outsider.clone()).await?;
    let e = h3
        .evaluate(&["GetPrivate", "records", "P-0042"])
        .await
        .unwrap_err();
    assert!(
        err_text(&e).contains("does not have read access permission"),
        "{e:?}"
    );
    // A member's client at the outsider's peer: the peer holds only the hash.
    let mut h1_at_h3 = net.gateway(2, doctor1.clone()).await?;
    let e = h1_at_h3
        .evaluate(&["GetPrivate", "records", "P-0042"])
        .await
        .unwrap_err();
    assert!(
        err_text(&e).contains("not a member of collection records"),
        "{e:?}"
    );
    let hash = hex::encode(sha256(SECRET.as_bytes()));
    assert_eq!(
        h3.evaluate(&["PrivateHash", "records", "P-0042"]).await?,
        hash.as_bytes()
    );
    assert_eq!(
        hex::encode(hashed_write(&net, 2, block, "records", "P-0042").await?),
        hash
    );

    // Not in any block (arguments included), nor in clear in any peer or orderer file; the
    // public marker is, which shows the search sees clear values.
    for i in 0..3 {
        let ch = net.channel(i).await?;
        for n in 0..ch.ledger.height() {
            let b = ch.ledger.block(n)?.context("block")?;
            assert!(
                !contains(&b.encode_to_vec(), SECRET.as_bytes()),
                "block {n}"
            );
        }
    }
    let everything = net.dir.path();
    assert!(
        !files_containing(everything, PUBLIC.as_bytes()).is_empty(),
        "the public value is found in clear"
    );
    assert_eq!(
        files_containing(everything, SECRET.as_bytes()),
        Vec::<String>::new(),
        "the private value is never stored in clear"
    );
    assert_eq!(
        files_containing(everything, b"stage-2 hypertension"),
        Vec::<String>::new()
    );

    // memberOnlyWrite: the outsider may not write the collection.
    let e = h3
        .endorse_with(&["PutPrivate", "records", "X"], value("x"))
        .await
        .unwrap_err();
    assert!(
        err_text(&e).contains("does not have write access permission"),
        "{e:?}"
    );
    // Range and partial composite key queries over private data.
    let (_, _, b, _) = h1
        .submit_with(
            &["PutPrivateIndexed", "notes", "visit", "P-0042"],
            value("note one"),
        )
        .await?;
    net.wait_height(b + 1).await?;
    let v: Vec<String> = serde_json::from_slice(
        &h2.evaluate(&["ByPartialPrivate", "notes", "visit", "P-0042"])
            .await?,
    )?;
    assert_eq!(v, vec!["note one"]);
    let keys: Vec<String> =
        serde_json::from_slice(&h1.evaluate(&["RangePrivate", "records", "", ""]).await?)?;
    assert_eq!(keys, vec!["P-0042"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_that_was_down_gets_the_data_by_reconciliation() -> anyhow::Result<()> {
    let mut net = three_hospitals().await?;
    let doctor1 = net.orgs[0].identity("doctor1", "client", &[])?;
    let doctor2 = net.orgs[1].identity("doctor2", "client", &[])?;
    const SECRET: &str = "allergy: penicillin (late arrival)";
    const SECRET2: &str = "allergy: latex (pulled at commit)";

    net.stop_peer(1).await;
    let mut h1 = net.gateway(0, doctor1.clone()).await?;
    // requiredPeerCount 1 cannot be met while the only other member is down.
    let e = h1
        .endorse_with(&["PutPrivate", "records", "R-1"], value("x"))
        .await
        .unwrap_err();
    assert!(err_text(&e).contains("requiredPeerCount"), "{e:?}");
    // requiredPeerCount 0 goes through without it.
    let (_, _, block, _) = h1
        .submit_with(&["PutPrivate", "notes", "R-1"], value(SECRET))
        .await?;
    let (_, _, block2, _) = h1
        .submit_with(&["PutPrivate", "notes", "R-2"], value(SECRET2))
        .await?;
    net.wait_height(block2.max(block) + 1).await?;

    // Hospital2 catches up while Hospital1 is down: the data is recorded as missing ...
    net.stop_peer(0).await;
    net.start_peer(1).await?;
    net.wait_height(block2 + 1).await?;
    let ch2 = net.channel(1).await?;
    assert!(
        !ch2.ledger.pvt_missing(10)?.is_empty(),
        "missing private data is recorded"
    );
    let ops = net.peers[1]
        .as_ref()
        .and_then(|p| p.operations_address)
        .context("operations address")?;
    let metrics = medledger_tests::http_get(ops, "/metrics").await?;
    assert!(
        metrics.contains("pvtdata_missing_writesets{channel=\"medchannel\"} 2"),
        "operators see what is missing:\n{metrics}"
    );
    // ... and reconciled in the background once Hospital1 is back.
    net.start_peer(0).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !ch2.ledger.pvt_missing(10)?.is_empty() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "not reconciled in time"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut h2 = net.gateway(1, doctor2).await?;
    assert_eq!(
        h2.evaluate(&["GetPrivate", "notes", "R-1"]).await?,
        SECRET.as_bytes()
    );
    assert_eq!(
        h2.evaluate(&["GetPrivate", "notes", "R-2"]).await?,
        SECRET2.as_bytes()
    );

    // With both up, a member without the pushed data pulls it at commit (maxPeerCount 0).
    let mut h1 = net.gateway(0, doctor1).await?;
    let (_, _, b, _) = h1
        .submit_with(&["PutPrivate", "undisseminated", "R-3"], value("pulled"))
        .await?;
    net.wait_height(b + 1).await?;
    assert_eq!(
        h2.evaluate(&["GetPrivate", "undisseminated", "R-3"])
            .await?,
        b"pulled"
    );
    assert!(ch2.ledger.pvt_missing(10)?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn block_to_live_and_purge_erase_values_but_hashes_still_check() -> anyhow::Result<()> {
    let net = three_hospitals().await?;
    let doctor1 = net.orgs[0].identity("doctor1", "client", &[])?;
    let mut h1 = net.gateway(0, doctor1).await?;

    // blockToLive 2: written in block b, gone when block b + 3 commits.
    let (_, _, b, _) = h1
        .submit_with(&["PutPrivate", "shortlived", "T-1"], value("temporary"))
        .await?;
    net.wait_height(b + 1).await?;
    assert_eq!(
        h1.evaluate(&["GetPrivate", "shortlived", "T-1"]).await?,
        b"temporary"
    );
    let mut last = b;
    while last < b + 3 {
        last = h1.submit(&["Put", "tick", &last.to_string()]).await?.2;
    }
    net.wait_height(last + 1).await?;
    for peer in 0..2 {
        let mut gw = net
            .gateway(peer, net.orgs[peer].identity("reader", "client", &[])?)
            .await?;
        let e = gw
            .evaluate(&["GetPrivate", "shortlived", "T-1"])
            .await
            .unwrap_err();
        assert!(err_text(&e).contains("not found"), "peer {peer}: {e:?}");
    }
    assert_eq!(
        hashed_write(&net, 2, b, "shortlived", "T-1").await?,
        sha256(b"temporary").to_vec(),
        "the block's hash still checks the original value"
    );

    // PurgePrivateData: the value and its stored history are erased on every member.
    let (_, _, b1, _) = h1
        .submit_with(&["PutPrivate", "notes", "E-1"], value("erase me v1"))
        .await?;
    let (_, _, b2, _) = h1
        .submit_with(&["PutPrivate", "notes", "E-1"], value("erase me v2"))
        .await?;
    net.wait_height(b2 + 1).await?;
    let ch1 = net.channel(0).await?;
    let slot = |block| medledger_peer::storage::ledger::PvtSlot {
        block_num: block,
        tx_num: 0,
        namespace: CHAINCODE.into(),
        collection: "notes".into(),
    };
    assert!(ch1.ledger.pvt_write_set(&slot(b1))?.is_some());
    let (_, _, b3, _) = h1.submit(&["PurgePrivate", "notes", "E-1"]).await?;
    net.wait_height(b3 + 1).await?;
    for peer in 0..2 {
        let ch = net.channel(peer).await?;
        assert!(ch.ledger.pvt_state(CHAINCODE, "notes", "E-1")?.is_none());
        for blk in [b1, b2] {
            let left = ch.ledger.pvt_write_set(&slot(blk))?;
            assert!(
                left.is_none_or(|s: KvrwSet| s.writes.iter().all(|w| w.key != "E-1")),
                "peer {peer} still holds a write of the purged key in block {blk}"
            );
        }
    }
    let e = h1
        .evaluate(&["GetPrivate", "notes", "E-1"])
        .await
        .unwrap_err();
    assert!(err_text(&e).contains("not found"), "{e:?}");
    assert_eq!(
        hashed_write(&net, 0, b2, "notes", "E-1").await?,
        sha256(b"erase me v2").to_vec()
    );
    Ok(())
}

/// A signed Push/Pull as a peer would send it, with the given enrollment and TLS identities.
async fn private_client(
    net: &PeerNet,
    target: usize,
    tls: Option<ClientTls>,
) -> anyhow::Result<PrivateDataClient<tonic::transport::Channel>> {
    let root = net.orgs[target].tls_ca.cert_pem().as_bytes().to_vec();
    let ch = dial(&net.address(target), &[root], tls.as_ref())
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(PrivateDataClient::new(ch))
}

fn peer_identity(net: &PeerNet, i: usize) -> anyhow::Result<(SigningIdentity, ClientTls)> {
    let cfg = &net.configs[i];
    let signer = SigningIdentity::load(&cfg.msp_dir, &cfg.msp_id)?;
    let tls = cfg.tls.as_ref().context("tls")?;
    Ok((
        signer,
        ClientTls {
            cert_pem: std::fs::read(&tls.cert_file)?,
            key_pem: std::fs::read(&tls.key_file)?,
        },
    ))
}

fn signed(signer: &SigningIdentity, request: Vec<u8>) -> anyhow::Result<SignedPrivateDataRequest> {
    Ok(SignedPrivateDataRequest {
        signature: signer.sign(&request)?,
        identity: signer.serialized().to_vec(),
        request,
    })
}

fn push_request(tx_id: &str, collection: &str, key: &str, v: &str) -> PushRequest {
    PushRequest {
        channel_id: CHANNEL.into(),
        tx_id: tx_id.into(),
        endorsed_at_height: 1,
        pvt_rwset: Some(TxPvtReadWriteSet {
            data_model: 0,
            ns_pvt_rwset: vec![NsPvtReadWriteSet {
                namespace: CHAINCODE.into(),
                collection_pvt_rwset: vec![CollectionPvtReadWriteSet {
                    collection_name: collection.into(),
                    rwset: KvrwSet {
                        writes: vec![medledger_proto::kvrwset::KvWrite {
                            key: key.into(),
                            is_delete: false,
                            value: v.as_bytes().to_vec(),
                        }],
                        ..Default::default()
                    }
                    .encode_to_vec(),
                }],
            }],
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn private_data_service_refuses_outsiders_and_mismatched_data() -> anyhow::Result<()> {
    let net = three_hospitals().await?;
    let (h3_peer, h3_tls) = peer_identity(&net, 2)?;
    let (h1_peer, h1_tls) = peer_identity(&net, 0)?;
    let ch2 = net.channel(1).await?;

    // A non-member peer pushing into a collection: refused, nothing stored.
    let mut to_h2 = private_client(&net, 1, Some(h3_tls.clone())).await?;
    let req = push_request("tx-outsider", "records", "K", "forged");
    let e = to_h2
        .push(signed(&h3_peer, req.encode_to_vec())?)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("not a member"), "{e:?}");
    assert!(
        ch2.ledger
            .transient_get("tx-outsider", CHAINCODE, "records")?
            .is_empty()
    );

    // A pull from a non-member: refused.
    let pull = PullRequest {
        channel_id: CHANNEL.into(),
        digests: vec![PvtDataDigest {
            tx_id: "t".into(),
            namespace: CHAINCODE.into(),
            collection: "records".into(),
            block_num: 1,
            tx_num: 0,
        }],
    };
    let e = to_h2
        .pull(signed(&h3_peer, pull.encode_to_vec())?)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");

    // Without a TLS client certificate, signed by a client instead of a peer, or with a TLS
    // certificate of another organisation than the signer's: refused.
    let req = push_request("tx-x", "notes", "K", "v");
    let mut no_tls = private_client(&net, 1, None).await?;
    let e = no_tls
        .push(signed(&h1_peer, req.encode_to_vec())?)
        .await
        .unwrap_err();
    assert!(e.message().contains("mutual TLS"), "{e:?}");
    let client = net.orgs[0].identity("app", "client", &[])?;
    let mut as_h1 = private_client(&net, 1, Some(h1_tls.clone())).await?;
    let e = as_h1
        .push(signed(&client, req.encode_to_vec())?)
        .await
        .unwrap_err();
    assert!(e.message().contains("not a peer"), "{e:?}");
    let e = to_h2
        .push(signed(&h1_peer, req.encode_to_vec())?)
        .await
        .unwrap_err();
    assert!(e.message().contains("TLS client certificate"), "{e:?}");
    // Garbage: a clear error, not a crash.
    let e = as_h1
        .push(SignedPrivateDataRequest {
            request: vec![0xff; 16],
            identity: vec![],
            signature: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        ch2.ledger
            .transient_get("tx-x", CHAINCODE, "notes")?
            .is_empty()
    );

    // A member pushing a write set whose hashes do not match what commits: the committer
    // refuses it and stores the real value (pulled from Hospital1) instead.
    let doctor1 = net.orgs[0].identity("doctor1", "client", &[])?;
    let mut h1 = net.gateway(0, doctor1).await?;
    let (tx_id, env) = h1
        .endorse_with(&["PutPrivate", "undisseminated", "M-1"], value("genuine"))
        .await?;
    let forged = push_request(&tx_id, "undisseminated", "M-1", "forged value");
    as_h1
        .push(signed(&h1_peer, forged.encode_to_vec())?)
        .await?;
    assert_eq!(
        ch2.ledger
            .transient_get(&tx_id, CHAINCODE, "undisseminated")?
            .len(),
        1
    );
    h1.submit_prepared(&tx_id, env).await?;
    let (code, block) = h1.commit_status(&tx_id).await?;
    assert_eq!(code, 0);
    net.wait_height(block + 1).await?;
    // Pulled at commit, or reconciled shortly after if Hospital1 had not committed yet.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let stored = loop {
        if let Some(v) = ch2.ledger.pvt_state(CHAINCODE, "undisseminated", "M-1")? {
            break v;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the genuine value never arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(stored.value, b"genuine");
    assert!(
        ch2.ledger
            .transient_get(&tx_id, CHAINCODE, "undisseminated")?
            .is_empty(),
        "transient data is dropped at commit"
    );
    Ok(())
}

/// The private write sets a DeliverWithPrivateData stream gives `who` for block `block` of peer
/// `peer`, as `(tx number, collection, keys)`.
async fn delivered_private_data(
    net: &PeerNet,
    peer: usize,
    who: &SigningIdentity,
    block: u64,
) -> anyhow::Result<Vec<(u64, String, Vec<String>)>> {
    use medledger_common::protoutil::signed_envelope;
    use medledger_proto::common::HeaderType;
    use medledger_proto::orderer::seek_info::SeekBehavior;
    use medledger_proto::orderer::{SeekInfo, SeekPosition, SeekSpecified, seek_position::Type};
    use medledger_proto::protos::deliver_client::DeliverClient;
    use medledger_proto::protos::deliver_response::Type as Resp;
    let root = net.orgs[peer].tls_ca.cert_pem().as_bytes().to_vec();
    let ch = dial(&net.address(peer), &[root], None)
        .await
        .map_err(anyhow::Error::msg)?;
    let at = || SeekPosition {
        r#type: Some(Type::Specified(SeekSpecified { number: block })),
    };
    let seek = SeekInfo {
        start: Some(at()),
        stop: Some(at()),
        behavior: SeekBehavior::FailIfNotReady as i32,
        ..Default::default()
    };
    let env = signed_envelope(
        HeaderType::DeliverSeekInfo,
        CHANNEL,
        seek.encode_to_vec(),
        who,
    )?;
    let mut stream = DeliverClient::new(ch)
        .deliver_with_private_data(tokio_stream::once(env))
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await? {
        match m.r#type {
            Some(Resp::BlockAndPrivateData(b)) => {
                for (tx, set) in b.private_data_map {
                    for ns in set.ns_pvt_rwset {
                        for c in ns.collection_pvt_rwset {
                            let keys = KvrwSet::decode(c.rwset.as_slice())?
                                .writes
                                .into_iter()
                                .map(|w| w.key)
                                .collect();
                            out.push((tx, c.collection_name, keys));
                        }
                    }
                }
            }
            _ => break,
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliver_with_private_data_serves_members_only() -> anyhow::Result<()> {
    let net = three_hospitals().await?;
    let doctor1 = net.orgs[0].identity("doctor1", "client", &[])?;
    let mut h1 = net.gateway(0, doctor1.clone()).await?;
    let (_, _, block, _) = h1
        .submit_with(&["PutPrivate", "records", "D-1"], value("delivered"))
        .await?;
    net.wait_height(block + 1).await?;
    assert_eq!(
        delivered_private_data(&net, 0, &doctor1, block).await?,
        vec![(0, "records".to_owned(), vec!["D-1".to_owned()])]
    );
    // A client of the organisation outside the collection gets the block without private data,
    // even from a member's peer.
    let outsider = net.orgs[2].identity("clerk3", "client", &[])?;
    assert!(
        delivered_private_data(&net, 0, &outsider, block)
            .await?
            .is_empty()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collection_endorsement_policy_governs_its_writes() -> anyhow::Result<()> {
    use medledger_common::protoutil::{
        Invocation, assemble_transaction, build_signed_proposal, unpack_proposal,
    };
    use medledger_proto::protos::endorser_client::EndorserClient;
    let net = three_hospitals().await?;
    let doctor1 = net.orgs[0].identity("doctor1", "client", &[])?;
    // The chaincode policy is OR; the collection's own policy needs both hospitals, and the
    // gateway collects both.
    let mut h1 = net.gateway(0, doctor1.clone()).await?;
    let (tx, env) = h1
        .endorse_with(&["PutPrivate", "cosigned", "K-1"], value("both signed"))
        .await?;
    h1.submit_prepared(&tx, env).await?;
    assert_eq!(h1.commit_status(&tx).await?.0, 0);

    // A transaction endorsed by Hospital1 alone satisfies the chaincode policy but not the
    // collection's: the committers mark it invalid and store nothing.
    let inv = Invocation {
        channel: CHANNEL.into(),
        chaincode: CHAINCODE.into(),
        args: vec![
            b"PutPrivate".to_vec(),
            b"cosigned".to_vec(),
            b"K-2".to_vec(),
        ],
        transient: value("one signature"),
        is_init: false,
    };
    let (sp, tx) = build_signed_proposal(&inv, &doctor1)?;
    let root = net.orgs[0].tls_ca.cert_pem().as_bytes().to_vec();
    let ch = dial(&net.address(0), &[root], None)
        .await
        .map_err(anyhow::Error::msg)?;
    let resp = EndorserClient::new(ch)
        .process_proposal(sp.clone())
        .await?
        .into_inner();
    let endorsement = resp.endorsement.context("endorsed")?;
    let mut env = assemble_transaction(&unpack_proposal(&sp)?, &resp.payload, &[endorsement]);
    env.signature = doctor1.sign(&env.payload)?;
    h1.submit_prepared(&tx, env.clone()).await?;
    let (code, block) = h1.commit_status(&tx).await?;
    assert_eq!(
        code,
        medledger_proto::protos::TxValidationCode::EndorsementPolicyFailure as i32
    );
    net.wait_height(block + 1).await?;
    for peer in 0..2 {
        let ch = net.channel(peer).await?;
        assert!(ch.ledger.pvt_state(CHAINCODE, "cosigned", "K-2")?.is_none());
        assert!(
            ch.ledger
                .hashed_state(CHAINCODE, "cosigned", &sha256(b"K-2"))?
                .is_none()
        );
    }
    Ok(())
}
