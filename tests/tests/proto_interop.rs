//! Our protobuf types against Fabric's own: bytes made by the npm `@hyperledger/fabric-protos`
//! decode with our types to the same fields and vice versa, our block header hash equals an
//! independent DER encoding (jsrsasign), and our .proto field numbers equal those of the npm
//! `fabric-protos` .proto files for every message both define.

use std::collections::HashMap;

use anyhow::Context;
use medledger_common::protoutil::{
    self, Invocation, block_data_hash, block_header_bytes, block_header_hash,
    build_signed_proposal, new_block, unpack_envelope, unpack_proposal,
};
use medledger_proto::common::{Block, BlockHeader, Envelope, HeaderType};
use medledger_proto::orderer::{SeekInfo, seek_info::SeekBehavior, seek_position::Type as Seek};
use medledger_proto::protos::SignedProposal;
use medledger_tests::{TestOrg, run_node};
use prost::Message;
use serde_json::{Value, json};

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

#[test]
fn npm_encoded_messages_decode_with_our_types() -> anyhow::Result<()> {
    let out: Value = serde_json::from_str(&run_node("proto_vectors.js", &["encode"])?)?;
    let expect = &out["expect"];

    let sp = SignedProposal::decode(unhex(&out["signed_proposal"]).as_slice())?;
    let p = unpack_proposal(&sp).context("unpacking the npm proposal")?;
    assert_eq!(p.tx_id(), expect["tx_id"].as_str().unwrap());
    assert_eq!(p.channel_id(), "medchannel");
    assert_eq!(p.chaincode_name, "records");
    assert_eq!(p.creator(), unhex(&expect["creator"]).as_slice());
    let args: Vec<String> = p
        .input
        .args
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert_eq!(args, ["CreateRecord", "R-1", "P-0042"]);
    assert_eq!(
        p.transient.get("content").map(Vec::as_slice),
        Some(expect["transient_content"].as_str().unwrap().as_bytes())
    );
    let ts = p.channel_header.timestamp.unwrap();
    assert_eq!(ts.seconds, expect["timestamp_seconds"].as_i64().unwrap());
    assert_eq!(ts.nanos as i64, expect["timestamp_nanos"].as_i64().unwrap());
    assert_eq!(
        p.channel_header.r#type,
        HeaderType::EndorserTransaction as i32
    );

    let env = Envelope::decode(unhex(&out["envelope"]).as_slice())?;
    let u = unpack_envelope(&env)?;
    assert_eq!(u.channel_header.tx_id, expect["tx_id"].as_str().unwrap());
    assert_eq!(u.payload.data, b"transaction bytes");
    assert_eq!(env.signature, b"sig");

    let block_bytes = unhex(&out["block"]);
    let block = Block::decode(block_bytes.as_slice())?;
    let header = block.header.clone().unwrap();
    assert_eq!(header.number, expect["block_number"].as_u64().unwrap());
    assert_eq!(header.data_hash, unhex(&expect["block_data_hash"]));
    assert_eq!(
        block_data_hash(block.data.as_ref().unwrap()).to_vec(),
        header.data_hash
    );
    let md = block.metadata.clone().unwrap().metadata;
    assert_eq!(md.len(), 5);
    assert_eq!(md[2], unhex(&expect["block_filter"]));
    // Fabric requires canonical encodings inside blocks; ours re-encode byte for byte.
    assert_eq!(block.encode_to_vec(), block_bytes);
    for d in &block.data.as_ref().unwrap().data {
        assert_eq!(&Envelope::decode(d.as_slice())?.encode_to_vec(), d);
    }

    let seek = SeekInfo::decode(unhex(&out["seek_info"]).as_slice())?;
    assert!(matches!(
        seek.start.and_then(|s| s.r#type),
        Some(Seek::Specified(s)) if s.number == 5
    ));
    assert!(matches!(
        seek.stop.and_then(|s| s.r#type),
        Some(Seek::Newest(_))
    ));
    assert_eq!(seek.behavior, SeekBehavior::FailIfNotReady as i32);
    Ok(())
}

#[test]
fn our_messages_decode_in_node() -> anyhow::Result<()> {
    let org = TestOrg::new("Hospital1MSP")?;
    let doctor = org.identity("doctor1", "client", &[("role", "doctor")])?;
    let inv = Invocation {
        channel: "medchannel".into(),
        chaincode: "records".into(),
        args: vec![b"CreateRecord".to_vec(), b"R-7".to_vec()],
        transient: HashMap::from([("content".to_owned(), b"{\"a\":1}".to_vec())]),
        is_init: false,
    };
    let (sp, tx_id) = build_signed_proposal(&inv, &doctor)?;
    let env =
        protoutil::signed_envelope(HeaderType::Message, "medchannel", b"x".to_vec(), &doctor)?;
    let genesis = new_block(0, vec![], vec![env.encode_to_vec()]);
    let prev = block_header_hash(genesis.header.as_ref().unwrap());
    let block = new_block(
        1,
        prev.to_vec(),
        vec![env.encode_to_vec(), env.encode_to_vec()],
    );

    let input = json!({
        "signed_proposal": hex::encode(sp.encode_to_vec()),
        "block": hex::encode(block.encode_to_vec()),
    });
    let got: Value = serde_json::from_str(&run_node(
        "proto_vectors.js",
        &["decode", &input.to_string()],
    )?)?;
    let p = &got["proposal"];
    assert_eq!(p["type"], 3);
    assert_eq!(p["tx_id"], tx_id.as_str());
    assert_eq!(
        p["computed_tx_id"],
        tx_id.as_str(),
        "Node recomputes the same txid"
    );
    assert_eq!(p["channel"], "medchannel");
    assert_eq!(p["chaincode"], "records");
    assert_eq!(p["mspid"], "Hospital1MSP");
    assert_eq!(p["args"], json!(["CreateRecord", "R-7"]));
    assert_eq!(p["transient"], json!({"content": "{\"a\":1}"}));
    assert_eq!(p["signature"], hex::encode(&sp.signature));

    let b = &got["block"];
    assert_eq!(b["number"], 1);
    assert_eq!(b["previous_hash"], hex::encode(prev));
    assert_eq!(b["data_hash"], b["computed_data_hash"]);
    assert_eq!(b["data_count"], 2);
    assert_eq!(b["metadata_count"], 5);
    assert_eq!(b["first_envelope_channel"], "medchannel");
    Ok(())
}

#[test]
fn block_header_hash_matches_an_independent_der_encoder() -> anyhow::Result<()> {
    let headers: Vec<BlockHeader> = [0u64, 1, 127, 128, 255, 256, 65_535, 1 << 40, u64::MAX]
        .iter()
        .enumerate()
        .map(|(i, &n)| BlockHeader {
            number: n,
            previous_hash: if i == 0 { vec![] } else { vec![i as u8; 32] },
            data_hash: medledger_common::crypto::sha256(&[i as u8]).to_vec(),
        })
        .collect();
    let input: Vec<Value> = headers
        .iter()
        .map(|h| {
            json!({
                "number": h.number.to_string(),
                "previous_hash": hex::encode(&h.previous_hash),
                "data_hash": hex::encode(&h.data_hash),
            })
        })
        .collect();
    let got: Value = serde_json::from_str(&run_node(
        "proto_vectors.js",
        &["headerhash", &Value::Array(input).to_string()],
    )?)?;
    for (h, g) in headers.iter().zip(got.as_array().unwrap()) {
        assert_eq!(
            hex::encode(block_header_bytes(h)),
            g["der"],
            "DER of block {}",
            h.number
        );
        assert_eq!(
            hex::encode(block_header_hash(h)),
            g["hash"],
            "hash of block {}",
            h.number
        );
    }
    Ok(())
}

/// Every message that both our .proto files and Fabric's (npm fabric-protos 2.2) define has the
/// same fields: numbers, types, labels and message types.
#[test]
fn field_numbers_match_fabric_protos() -> anyhow::Result<()> {
    use prost_types::FileDescriptorSet;
    let root = medledger_tests::ensure_node_modules()?.join("node_modules/fabric-protos/protos");
    let wanted = [
        "common/common.proto",
        "common/configtx.proto",
        "common/configuration.proto",
        "common/ledger.proto",
        "common/policies.proto",
        "msp/identities.proto",
        "msp/msp_config.proto",
        "msp/msp_principal.proto",
        "orderer/ab.proto",
        "orderer/configuration.proto",
        "peer/chaincode.proto",
        "peer/chaincode_event.proto",
        "peer/chaincode_shim.proto",
        "peer/collection.proto",
        "peer/configuration.proto",
        "peer/events.proto",
        "peer/policy.proto",
        "peer/proposal.proto",
        "peer/query.proto",
        "peer/proposal_response.proto",
        "peer/transaction.proto",
        "peer/lifecycle/lifecycle.proto",
        "ledger/rwset/rwset.proto",
        "ledger/rwset/kvrwset/kv_rwset.proto",
        "ledger/queryresult/kv_query_result.proto",
    ];
    let fabric = protox::compile(wanted, [&root])?;
    let ours = FileDescriptorSet::decode(medledger_proto::FILE_DESCRIPTOR_SET)?;

    fn index(set: &FileDescriptorSet) -> HashMap<String, &prost_types::DescriptorProto> {
        fn walk<'a>(
            prefix: &str,
            msgs: &'a [prost_types::DescriptorProto],
            out: &mut HashMap<String, &'a prost_types::DescriptorProto>,
        ) {
            for m in msgs {
                let name = format!("{prefix}.{}", m.name());
                walk(&name, &m.nested_type, out);
                out.insert(name, m);
            }
        }
        let mut out = HashMap::new();
        for f in &set.file {
            walk(&format!(".{}", f.package()), &f.message_type, &mut out);
        }
        out
    }
    let theirs = index(&fabric);
    let mine = index(&ours);
    let mut compared = 0;
    let mut problems = Vec::new();
    for (name, t) in &theirs {
        let Some(m) = mine.get(name) else { continue };
        compared += 1;
        for tf in &t.field {
            match m.field.iter().find(|f| f.number() == tf.number()) {
                None => problems.push(format!(
                    "{name}: field {} ({}) missing",
                    tf.number(),
                    tf.name()
                )),
                Some(mf) => {
                    if mf.r#type() != tf.r#type()
                        || mf.label() != tf.label()
                        || mf.type_name() != tf.type_name()
                    {
                        problems.push(format!(
                            "{name}.{}: ours {:?} {:?} {} vs Fabric {:?} {:?} {}",
                            tf.name(),
                            mf.label(),
                            mf.r#type(),
                            mf.type_name(),
                            tf.label(),
                            tf.r#type(),
                            tf.type_name()
                        ))
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "field mismatches:\n{}",
        problems.join("\n")
    );
    // Guard against comparing nothing: all messages of these files exist on our side.
    // Idemix identities and Kafka ordering are deliberately not supported.
    let out_of_scope = [
        ".msp.IdemixMSPConfig",
        ".msp.IdemixMSPSignerConfig",
        ".orderer.KafkaBrokers",
    ];
    let missing: Vec<&String> = theirs
        .keys()
        .filter(|n| !mine.contains_key(*n) && !out_of_scope.contains(&n.as_str()))
        .collect();
    assert!(missing.is_empty(), "messages we do not define: {missing:?}");
    assert!(compared > 100, "only {compared} messages compared");
    Ok(())
}

#[test]
fn fabric_reads_capabilities_bft_options_and_orderer_endpoints_from_our_genesis_block()
-> anyhow::Result<()> {
    use medledger_common::channelconfig::{ChannelProfile, OrgProfile, genesis_block};
    let dir = tempfile::tempdir()?;
    let h1 = TestOrg::new("Hospital1MSP")?;
    let orderers = medledger_tests::ordernet::OrdererSet::prepare(dir.path(), 4, &[])?;
    let genesis = genesis_block(&ChannelProfile {
        channel_id: "medchannel".into(),
        application_orgs: vec![OrgProfile {
            msp: h1.msp_config(),
            anchor_peers: vec![],
        }],
        orderer_orgs: vec![OrgProfile {
            msp: orderers.org.msp_config(),
            anchor_peers: vec![],
        }],
        consenters: orderers.consenters.clone(),
        batch_size: medledger_proto::orderer::BatchSize {
            max_message_count: 100,
            absolute_max_bytes: 1 << 20,
            preferred_max_bytes: 512 << 10,
        },
        batch_timeout: std::time::Duration::from_millis(250),
    })?;
    let got: Value = serde_json::from_str(&run_node(
        "proto_vectors.js",
        &[
            "config",
            &json!({ "block": hex::encode(genesis.encode_to_vec()) }).to_string(),
        ],
    )?)?;
    assert_eq!(got["channel_capabilities"], json!(["V3_0"]));
    assert_eq!(got["orderer_capabilities"], json!(["V2_0"]));
    assert_eq!(got["application_capabilities"], json!(["V2_5"]));
    assert_eq!(got["consensus_type"], "BFT");
    assert_eq!(got["request_batch_max_count"], 100);
    assert_eq!(got["leader_heartbeat_timeout"], "2500ms");
    assert_eq!(got["leader_heartbeat_count"], 10);
    assert_eq!(got["request_complain_timeout"], "6s");
    assert_eq!(got["request_pool_size"], 20000);
    let endpoints: Vec<String> = orderers
        .consenters
        .iter()
        .map(|c| format!("{}:{}", c.host, c.port))
        .collect();
    assert_eq!(got["endpoints"]["OrdererMSP"], json!(endpoints));
    // And we read back what the orderers run with.
    let cfg = medledger_common::channelconfig::ChannelConfig::from_block(&genesis)?;
    assert_eq!(
        cfg.bft.leader_timeout,
        std::time::Duration::from_millis(2500)
    );
    assert_eq!(
        cfg.bft.heartbeat_interval,
        std::time::Duration::from_millis(250)
    );
    assert_eq!(cfg.orderer_endpoints["OrdererMSP"], endpoints);
    Ok(())
}
