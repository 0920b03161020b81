//! Property tests over every decoder of outside bytes (blocks, proposals, envelopes, identities,
//! certificates, policies, configuration updates, proof bundles, the CA's JSON bodies and
//! `Authorization` headers, the messages a chaincode server gets from a peer): hostile variants
//! (small-scope mutations) of valid messages and of random bytes must give a typed error or a
//! value, never a panic or a hang. The servers run in this process under the nodes' fail-stop
//! hook, so a panic in any of their tasks ends the test run. `MEDLEDGER_FUZZ_ITERATIONS` sets the
//! inputs per target (CI runs the default; the long run is in the README); each target prints
//! its inputs/s. The peer's side of the chaincode protocol is fuzzed next to its decoder
//! (`peer/src/execution/chaincode/handler.rs`).

use std::time::{Duration, Instant};

use medledger_common::cert::{Certificate, CertificateRequest, RevocationList};
use medledger_common::channelconfig::{
    ChannelConfig, ChannelProfile, OrgProfile, check_seek, genesis_block,
};
use medledger_common::configtx::{
    check_config_envelope, compute_update, propose_update, sign_config_update, update_envelope,
};
use medledger_common::msp::Expiry;
use medledger_common::mutation::{MutationRng, iterations, mutate};
use medledger_common::policy::{
    decode_implicit_meta, decode_signature_policy, parse_signature_policy,
};
use medledger_common::proof::{ProofBundle, WriteClaim};
use medledger_common::protoutil::{
    Invocation, block_envelopes, build_signed_proposal, signed_envelope, unpack_envelope,
    unpack_proposal,
};
use medledger_proto::common::{Block, ConfigEnvelope, ConfigUpdateEnvelope, Envelope, HeaderType};
use medledger_proto::orderer::{BatchSize, SeekInfo};
use medledger_proto::protos::SignedProposal;
use medledger_tests::TestOrg;
use medledger_tests::ordernet::OrdererSet;
use prost::Message;

/// Runs `target` on `n` mutations of each seed (and on pure random bytes), timing it.
fn run(name: &str, seeds: &[Vec<u8>], target: &mut dyn FnMut(&[u8])) {
    run_n(name, 5_000, seeds, target);
}

/// `run` with another default number of inputs: targets that go through a server over loopback
/// (the CA's HTTP API, a chaincode's gRPC stream) cost a round trip per input.
fn run_n(name: &str, default: usize, seeds: &[Vec<u8>], target: &mut dyn FnMut(&[u8])) {
    let n = iterations(default);
    let mut rng = MutationRng::new(name.len() as u64 * 7919);
    let started = Instant::now();
    let mut inputs = 0usize;
    for i in 0..n {
        let mut bytes = if i % 8 == 7 || seeds.is_empty() {
            (0..rng.below(256)).map(|_| rng.next_u64() as u8).collect()
        } else {
            seeds[rng.below(seeds.len())].clone()
        };
        mutate(&mut rng, &mut bytes);
        target(&bytes);
        inputs += 1;
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "{name}: {inputs} inputs, {:.0} inputs/s",
        inputs as f64 / secs
    );
    assert!(
        started.elapsed() < Duration::from_secs(600),
        "{name} is too slow to be a decoder of outside input"
    );
}

#[test]
fn decoders_of_outside_bytes_never_panic() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let org = TestOrg::new("Hospital1MSP")?;
    let orderers = OrdererSet::prepare(dir.path(), 4, &[org.tls_ca.cert_pem()])?;
    let client = org.identity("fuzz", "client", &[("role", "doctor")])?;
    let profile = ChannelProfile {
        channel_id: "fuzzchannel".into(),
        application_orgs: vec![OrgProfile {
            msp: org.msp_config(),
            anchor_peers: vec![],
        }],
        orderer_orgs: vec![OrgProfile {
            msp: orderers.org.msp_config(),
            anchor_peers: vec![],
        }],
        consenters: orderers.consenters.clone(),
        batch_size: BatchSize {
            max_message_count: 10,
            absolute_max_bytes: 1 << 20,
            preferred_max_bytes: 1 << 19,
        },
        batch_timeout: Duration::from_millis(200),
    };
    let genesis = genesis_block(&profile)?;
    let config = ChannelConfig::from_block(&genesis)?;

    // Blocks and the channel configuration they carry.
    run(
        "Block + ChannelConfig::from_block",
        &[genesis.encode_to_vec()],
        &mut |b| {
            if let Ok(block) = Block::decode(b) {
                let _ = ChannelConfig::from_block(&block);
                let _ = block_envelopes(&block).len();
            }
        },
    );

    // Signed proposals as the endorser unpacks them.
    let (sp, _) = build_signed_proposal(
        &Invocation {
            channel: "fuzzchannel".into(),
            chaincode: "medical".into(),
            args: vec![b"CreateRecord".to_vec(), br#"{"id":"R-1"}"#.to_vec()],
            transient: [("content".to_owned(), b"{}".to_vec())].into(),
            is_init: false,
        },
        &client,
    )?;
    run(
        "SignedProposal + unpack_proposal",
        &[sp.encode_to_vec()],
        &mut |b| {
            if let Ok(sp) = SignedProposal::decode(b) {
                let _ = unpack_proposal(&sp);
            }
        },
    );

    // Envelopes (Broadcast, Deliver seeks) and the seek check with MSP deserialization.
    let seek = signed_envelope(
        HeaderType::DeliverSeekInfo,
        "fuzzchannel",
        SeekInfo::default().encode_to_vec(),
        &client,
    )?;
    run(
        "Envelope + unpack_envelope + check_seek",
        &[seek.encode_to_vec()],
        &mut |b| {
            if let Ok(env) = Envelope::decode(b) {
                let _ = unpack_envelope(&env);
                let _ = check_seek(&config, &env, 5, "/Channel/Readers", 900);
            }
        },
    );

    // Serialized identities, as creators and endorsers arrive.
    run(
        "MspManager::deserialize",
        &[client.serialized().to_vec()],
        &mut |b| {
            let _ = config.msps.deserialize(b, Expiry::now());
        },
    );

    // Certificates, CRLs and CSRs in PEM and DER.
    let cert_pem = client.certificate().to_pem().into_bytes();
    let cert_der = client.certificate().der.clone();
    let crl = org.ca.crl(&[(vec![1, 2, 3], 0)], 1, 3600)?.into_bytes();
    run("Certificate PEM/DER", &[cert_pem, cert_der], &mut |b| {
        let _ = Certificate::from_pem(b);
        let _ = Certificate::from_der(b);
    });
    run("RevocationList::parse", &[crl], &mut |b| {
        let _ = RevocationList::parse(b);
    });
    run("CertificateRequest PEM/DER", &[], &mut |b| {
        let _ = CertificateRequest::from_der(b);
        let _ = CertificateRequest::from_pem(&String::from_utf8_lossy(b));
    });

    // Policies: Fabric's policy language, and encoded signature / implicit meta policies.
    let texts: Vec<Vec<u8>> = [
        "AND('Hospital1MSP.member', OR('Hospital2MSP.peer', 'Hospital3MSP.admin'))",
        "OutOf(2, 'A.member', 'B.member', 'C.client')",
        "OR('Hospital1MSP.peer')",
    ]
    .iter()
    .map(|t| t.as_bytes().to_vec())
    .collect();
    run("parse_signature_policy", &texts, &mut |b| {
        let _ = parse_signature_policy(&String::from_utf8_lossy(b));
    });
    let encoded = parse_signature_policy("OutOf(1, 'A.member', 'B.peer')")?.encode_to_vec();
    run(
        "decode_signature_policy / implicit meta",
        &[encoded],
        &mut |b| {
            let _ = decode_signature_policy(b);
            let _ = decode_implicit_meta(b);
        },
    );

    // Configuration updates as Broadcast receives them, and CONFIG envelopes as every orderer
    // and peer checks them.
    let mut next = (*config.source).clone();
    if let Some(v) = next
        .channel_group
        .as_mut()
        .and_then(|g| g.groups.get_mut("Orderer"))
        .and_then(|o| o.values.get_mut("BatchSize"))
    {
        v.value = BatchSize {
            max_message_count: 20,
            absolute_max_bytes: 1 << 20,
            preferred_max_bytes: 1 << 19,
        }
        .encode_to_vec();
    }
    let update = compute_update("fuzzchannel", &config.source, &next)?;
    let admin = orderers.org.identity("oadmin", "admin", &[])?;
    let update_bytes = update.encode_to_vec();
    let update_env = update_envelope(
        "fuzzchannel",
        &ConfigUpdateEnvelope {
            signatures: vec![sign_config_update(&update_bytes, &admin)?],
            config_update: update_bytes,
        },
        &admin,
    )?;
    let proposed = propose_update(&config, &update_env, Expiry::now())?;
    run(
        "CONFIG_UPDATE Envelope + propose_update",
        &[update_env.encode_to_vec()],
        &mut |b| {
            if let Ok(env) = Envelope::decode(b) {
                let _ = propose_update(&config, &env, Expiry::Ignore);
            }
        },
    );
    run(
        "ConfigEnvelope + check_config_envelope",
        &[proposed.encode_to_vec()],
        &mut |b| {
            if let Ok(ce) = ConfigEnvelope::decode(b) {
                let _ = check_config_envelope(&config, &ce);
            }
        },
    );

    // Proof bundles, as a verifier receives them from anyone.
    let bundle = serde_json::to_vec(&ProofBundle {
        format: medledger_common::proof::FORMAT.into(),
        channel: "fuzzchannel".into(),
        config_blocks: vec![hex::encode(genesis.encode_to_vec())],
        blocks: vec![hex::encode(genesis.encode_to_vec())],
        claims: vec![WriteClaim {
            block: 0,
            tx_id: "t".into(),
            namespace: "medical".into(),
            key: "record/R-1".into(),
            value: "{}".into(),
        }],
        private_claims: vec![medledger_common::proof::PrivateWriteClaim {
            block: 0,
            tx_id: "t".into(),
            namespace: "medical".into(),
            collection: "_implicit_org_Org1MSP".into(),
            key: Some("record/R-1/v1".into()),
            key_hash: hex::encode([1u8; 32]),
            value_hash: None,
            erased: true,
        }],
    })?;
    run("ProofBundle JSON + proof::verify", &[bundle], &mut |b| {
        if let Ok(bundle) = serde_json::from_slice::<ProofBundle>(b) {
            let _ = medledger_common::proof::verify(&bundle, &genesis);
        }
    });
    Ok(())
}

/// The CA's HTTP API as anyone on the network reaches it: mutated `Authorization` headers
/// (Basic id:secret for enroll, Fabric CA tokens for the rest) and mutated JSON bodies of
/// enroll, reenroll, register and revoke, the signed ones re-signed by a registrar so that they
/// get past the token to the body's decoding and the CA's rules. Every answer is a 2xx or 4xx
/// (a 5xx would be the CA failing on input), and no handler panics.
#[test]
fn ca_requests_never_panic() -> anyhow::Result<()> {
    use medledger_ca::authority::{EnrollRequest, RegisterRequest, RevokeRequest};
    use medledger_ca::client::{EnrollOptions, auth_token, enroll_to_msp};
    use medledger_ca::{Authority, AuthorityConfig, CaClient, CaHome, CaUrl, ClientError};
    use medledger_common::SigningIdentity;
    use medledger_common::crypto::PrivateKey;
    use medledger_common::issue::certificate_request_pem;

    medledger_common::config::fail_stop_on_panic();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let home = CaHome::new(&dir.path().join("ca"));
    let mut cfg = AuthorityConfig::new("fuzz-ca");
    cfg.affiliations = vec!["hospital1".into(), "hospital1.cardiology".into()];
    Authority::init_root(&home, &cfg)?;
    let authority = std::sync::Arc::new(Authority::open(&home, cfg, Some(("admin", "adminpw")))?);
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    rt.spawn(medledger_ca::server::serve(
        listener,
        None,
        authority,
        std::future::pending(),
    ));
    let client = CaClient::new(&CaUrl::parse(&format!("http://127.0.0.1:{port}"))?, None)?;
    let admin_msp = dir.path().join("admin");
    rt.block_on(enroll_to_msp(
        &client,
        "admin",
        "adminpw",
        &EnrollOptions::default(),
        &admin_msp,
    ))?;
    let registrar = SigningIdentity::load(&admin_msp, "FuzzMSP")?;
    let secret = rt.block_on(client.register(
        &registrar,
        &RegisterRequest {
            id: "fuzz-victim".into(),
            affiliation: "hospital1".into(),
            ..Default::default()
        },
    ))?;
    let victim_msp = dir.path().join("victim");
    rt.block_on(enroll_to_msp(
        &client,
        "fuzz-victim",
        &secret,
        &EnrollOptions::default(),
        &victim_msp,
    ))?;
    let victim = SigningIdentity::load(&victim_msp, "FuzzMSP")?;

    // One request: a 5xx answer fails the target; a request the client cannot even send
    // (a header value HTTP does not allow) is skipped.
    let call = |method: &str, api: &str, body: Vec<u8>, auth: String| match rt.block_on(client.raw(
        method,
        api,
        Some(body),
        Some(auth),
    )) {
        Ok((status, answer)) => {
            assert!(status < 500, "{method} {api}: {status} {answer}");
        }
        Err(ClientError::Http(_)) => {}
        Err(e) => panic!("{method} {api}: {e}"),
    };
    let signed = |method: &str, api: &str, body: &[u8]| {
        auth_token(&registrar, method, &format!("/api/v1/{api}"), body).expect("token")
    };

    let csr = certificate_request_pem(&PrivateKey::generate(), "fuzz", &["fuzz.example".into()])?;
    let enroll = serde_json::to_vec(&EnrollRequest {
        certificate_request: csr.clone(),
        profile: Some("tls".into()),
        attr_reqs: Some(vec![medledger_ca::authority::AttrRequest {
            name: "role".into(),
            optional: true,
        }]),
        hosts: Some(vec!["localhost".into()]),
    })?;
    let plain_enroll = serde_json::to_vec(&EnrollRequest {
        certificate_request: csr,
        ..Default::default()
    })?;
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    // An unknown id: the header is decoded whole, without a password hash per input.
    let basic = |creds: &str| format!("Basic {}", b64.encode(creds)).into_bytes();
    run_n(
        "CA enroll: Authorization Basic header",
        1_000,
        &[basic("nobody:secret"), basic("nobody"), basic("nobody:a:b")],
        &mut |b| {
            let header = String::from_utf8_lossy(b).into_owned();
            call("POST", "enroll", plain_enroll.clone(), header);
        },
    );
    let nobody = String::from_utf8_lossy(&basic("nobody:secret")).into_owned();
    run_n(
        "CA enroll: JSON body",
        1_000,
        &[enroll.clone(), plain_enroll.clone()],
        &mut |b| call("POST", "enroll", b.to_vec(), nobody.clone()),
    );
    run_n(
        "CA reenroll: JSON body, signed",
        1_000,
        &[enroll, plain_enroll],
        &mut |b| {
            call(
                "POST",
                "reenroll",
                b.to_vec(),
                signed("POST", "reenroll", b),
            )
        },
    );
    let register = serde_json::to_vec(&serde_json::json!({
        "id": "fuzz-new",
        "type": "client",
        "secret": "pw",
        "max_enrollments": 2,
        "affiliation": "hospital1.cardiology",
        "attrs": [{"name": "role", "value": "doctor", "ecert": true},
                  {"name": "hf.Registrar.Roles", "value": "client,peer", "ecert": false}],
    }))?;
    run_n(
        "CA register: JSON body, signed",
        1_000,
        &[register],
        &mut |b| {
            call(
                "POST",
                "register",
                b.to_vec(),
                signed("POST", "register", b),
            )
        },
    );
    let victim_cert = victim.certificate();
    let revoke_serial = serde_json::to_vec(&RevokeRequest {
        serial: hex::encode(&victim_cert.serial),
        aki: victim_cert
            .authority_key_id
            .as_deref()
            .map(hex::encode)
            .unwrap_or_default(),
        reason: "keycompromise".into(),
        ..Default::default()
    })?;
    let revoke_id = serde_json::to_vec(&RevokeRequest {
        id: "fuzz-victim".into(),
        gencrl: true,
        ..Default::default()
    })?;
    run_n(
        "CA revoke: JSON body, signed",
        1_000,
        &[revoke_serial, revoke_id],
        &mut |b| call("POST", "revoke", b.to_vec(), signed("POST", "revoke", b)),
    );
    // Tokens over a read-only request (so a valid one can be replayed): the certificate,
    // signature and framing of Fabric CA's token.
    let token = signed("GET", "identities", b"").into_bytes();
    let victim_token = auth_token(&victim, "GET", "/api/v1/identities", b"")?.into_bytes();
    run_n(
        "CA Authorization token",
        1_000,
        &[token, victim_token],
        &mut |b| {
            let header = String::from_utf8_lossy(b).into_owned();
            call("GET", "identities", Vec::new(), header);
        },
    );
    Ok(())
}

/// A chaincode server (the shim, serving `KvStore`) as a hostile peer drives it over one
/// `protos.Chaincode/Connect` stream: mutated TRANSACTION / INIT messages (input, proposal,
/// creator, transient map, message type) and mutated answers to the chaincode's state calls
/// (values, query responses with results, pages and history, errors, answers of the wrong
/// type). Each transaction must end with COMPLETED or ERROR within a deadline and the stream
/// must stay up; a panic in any shim task ends the test run (fail-stop hook).
#[test]
fn shim_message_handling_never_panics() -> anyhow::Result<()> {
    use medledger_proto::protos::chaincode_client::ChaincodeClient;
    use medledger_proto::protos::chaincode_message::Type as Msg;
    use medledger_proto::protos::{
        ChaincodeInput, ChaincodeMessage, QueryResponse, QueryResponseMetadata, QueryResultBytes,
        StateMetadata, StateMetadataResult,
    };
    use medledger_proto::queryresult::{KeyModification, Kv};

    medledger_common::config::fail_stop_on_panic();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let org = TestOrg::new("Hospital1MSP")?;
    let client = org.identity("fuzz", "client", &[("role", "doctor")])?;
    let (to_shim, rx) = tokio::sync::mpsc::channel::<ChaincodeMessage>(64);
    let mut from_shim = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(medledger_shim::serve_with_listener(
            listener,
            "kv:0".into(),
            None,
            medledger_shim::example::KvStore,
            std::future::pending(),
        ));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let mut inbound = ChaincodeClient::new(channel)
            .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let register = inbound.message().await?.expect("REGISTER");
        anyhow::ensure!(register.r#type == Msg::Register as i32);
        for t in [Msg::Registered, Msg::Ready] {
            to_shim
                .send(ChaincodeMessage {
                    r#type: t as i32,
                    ..Default::default()
                })
                .await?;
        }
        anyhow::Ok(inbound)
    })?;

    // Transactions: every KvStore function that reads, writes, ranges, pages or asks for the
    // creator and transient data, each with a real signed proposal.
    let mut seeds = Vec::new();
    for (i, args) in [
        &["Get", "k"][..],
        &["Put", "k", "v"],
        &["Del", "k"],
        &["Increment", "n"],
        &["Range", "a", "z"],
        &["Page", "a", "z", "2", ""],
        &["PutIndexed", "color", "red", "k1"],
        &["ByPartial", "color", "red"],
        &["History", "k"],
        &["SetPolicy", "k", "OR('Hospital1MSP.member')"],
        &["Whoami"],
        &["Transient", "secret"],
        &["PutPrivate", "coll", "k"],
        &["GetPrivate", "coll", "k"],
        &["PrivateHash", "coll", "k"],
        &["RangePrivate", "coll", "a", "z"],
        &["ByPartialPrivate", "coll", "color", "red"],
    ]
    .into_iter()
    .enumerate()
    {
        let args: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
        let (sp, txid) = build_signed_proposal(
            &Invocation {
                channel: "fuzzchannel".into(),
                chaincode: "kv".into(),
                args: args.clone(),
                transient: [("secret".to_owned(), b"s3cret".to_vec())].into(),
                is_init: false,
            },
            &client,
        )?;
        let kind = if i == 0 { Msg::Init } else { Msg::Transaction };
        seeds.push(
            ChaincodeMessage {
                r#type: kind as i32,
                payload: ChaincodeInput {
                    args,
                    ..Default::default()
                }
                .encode_to_vec(),
                txid,
                channel_id: "fuzzchannel".into(),
                proposal: Some(sp),
                ..Default::default()
            }
            .encode_to_vec(),
        );
    }
    // Answers to the chaincode's calls, by call.
    let kv = |k: &str| Kv {
        namespace: "kv".into(),
        key: k.into(),
        value: b"value".to_vec(),
    };
    let rows = |items: Vec<Vec<u8>>| QueryResponse {
        results: items
            .into_iter()
            .map(|r| QueryResultBytes { result_bytes: r })
            .collect(),
        has_more: false,
        id: "it1".into(),
        metadata: QueryResponseMetadata {
            fetched_records_count: 2,
            bookmark: "k3".into(),
        }
        .encode_to_vec(),
    };
    let range_answer = rows(vec![
        kv("\u{0}color\u{0}red\u{0}k1\u{0}").encode_to_vec(),
        kv("k2").encode_to_vec(),
    ])
    .encode_to_vec();
    let history_answer = rows(vec![
        KeyModification {
            tx_id: "t1".into(),
            value: b"v".to_vec(),
            timestamp: Some(prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: -1,
            }),
            is_delete: false,
            medledger_block_num: u64::MAX,
            medledger_tx_num: 3,
        }
        .encode_to_vec(),
    ])
    .encode_to_vec();
    let metadata_answer = StateMetadataResult {
        entries: vec![StateMetadata {
            metakey: "VALIDATION_PARAMETER".into(),
            value: vec![1, 2, 3],
        }],
    }
    .encode_to_vec();
    let mut answers = MutationRng::new(0xa115);
    let mut next_txid = 0u64;
    let (mut completed, mut calls) = (0usize, 0usize);
    run("shim: messages from the peer", &seeds, &mut |b| {
        let Ok(mut msg) = ChaincodeMessage::decode(b) else {
            return;
        };
        let kind = Msg::try_from(msg.r#type);
        // A fresh txid, so that every transaction's end can be waited for.
        next_txid += 1;
        msg.txid = format!("fuzz-{next_txid}");
        let expect_end = match kind {
            Ok(Msg::Transaction | Msg::Init) => true,
            // Routing messages get no answer of their own.
            Ok(Msg::Registered | Msg::Ready | Msg::Response | Msg::Error) => false,
            // Anything else is answered with ERROR.
            _ => true,
        };
        let (txid, channel) = (msg.txid.clone(), msg.channel_id.clone());
        let exchange = async {
            to_shim.send(msg).await.expect("stream up");
            if !expect_end {
                return;
            }
            loop {
                let m = from_shim
                    .message()
                    .await
                    .expect("the shim ends no stream on peer input")
                    .expect("stream up");
                assert_eq!((&m.txid, &m.channel_id), (&txid, &channel), "{m:?}");
                let call = Msg::try_from(m.r#type);
                if matches!(call, Ok(Msg::Completed | Msg::Error)) {
                    completed += usize::from(call == Ok(Msg::Completed));
                    return;
                }
                calls += 1;
                let mut payload = match call {
                    Ok(Msg::GetStateByRange | Msg::QueryStateNext) => range_answer.clone(),
                    Ok(Msg::GetHistoryForKey) => history_answer.clone(),
                    Ok(Msg::GetStateMetadata) => metadata_answer.clone(),
                    Ok(Msg::GetState | Msg::GetPrivateDataHash) => b"value".to_vec(),
                    _ => Vec::new(),
                };
                mutate(&mut answers, &mut payload);
                // Only RESPONSE and ERROR reach a waiting transaction; the shim answers
                // any other type itself.
                let r#type = if answers.below(16) == 0 {
                    Msg::Error
                } else {
                    Msg::Response
                };
                to_shim
                    .send(ChaincodeMessage {
                        r#type: r#type as i32,
                        payload,
                        txid: txid.clone(),
                        channel_id: channel.clone(),
                        ..Default::default()
                    })
                    .await
                    .expect("stream up");
            }
        };
        let outcome =
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), exchange).await });
        assert!(
            outcome.is_ok(),
            "the shim left transaction {txid} unanswered"
        );
    });
    // The mutations reached the chaincode and the stub's decoding of answers, not only the
    // proposal checks.
    eprintln!("shim: {completed} transactions completed, {calls} state calls answered");
    assert!(completed > 0 && calls > 0);
    Ok(())
}
