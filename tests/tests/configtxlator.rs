//! `configtxlator proto_decode` / `proto_encode` in MedLedger (`common::configjson`, CLI
//! `medledger-peer config proto-decode|proto-encode`): protobuf ⇄ JSON in Fabric's shape.
//!
//! The expected shapes are Fabric's, read from hyperledger/fabric-config's `protolator` (json.go:
//! protojson with `UseProtoNames` + `EmitUnpopulated`; `protoext/commonext`, `mspext`,
//! `ordererext`, `peerext`: which bytes fields are expanded into which messages) and its
//! `TestEmitDefaultsBug` expectation. (Fabric's own sample block and its JSON were compared by
//! hand when this landed: same JSON; not kept here, as no other project's files are.)

use std::time::Duration;

use medledger_common::SigningIdentity;
use medledger_common::channelconfig::ChannelConfig;
use medledger_common::configjson::{ConfigJsonError, MAX_PROTO_BYTES, proto_decode, proto_encode};
use medledger_common::configtx::{
    check_config_envelope, compute_update, propose_update, sign_config_update, update_envelope,
};
use medledger_common::msp::Expiry;
use medledger_proto::common::{
    Block, BlockData, BlockHeader, ChannelHeader, Config, ConfigUpdateEnvelope, Envelope, Header,
    Payload,
};
use prost::Message;
use serde_json::{Value, json};

const CHANNEL: &str = "medchannel";

type Net = medledger_tests::ordernet::HospitalChannel;

fn net() -> anyhow::Result<Net> {
    Net::prepare(CHANNEL)
}

fn decode(type_name: &str, bytes: &[u8]) -> anyhow::Result<Value> {
    Ok(serde_json::from_str(&proto_decode(type_name, bytes)?)?)
}

/// `v` at a jq-like path: `a.b[0].c`.
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    let mut cur = v;
    for part in path.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        if !name.is_empty() {
            cur = cur.get(name).unwrap_or(&Value::Null);
        }
        if let Some(i) = index {
            cur = cur.get(i).unwrap_or(&Value::Null);
        }
    }
    cur
}

fn set(v: &mut Value, path: &str, new: Value) {
    let mut cur = v;
    for part in path.split('.') {
        cur = cur.get_mut(part).expect(part);
    }
    *cur = new;
}

#[test]
fn unset_fields_print_as_protolator_prints_them() -> anyhow::Result<()> {
    // fabric-config protolator/integration TestEmitDefaultsBug.
    let block = Block {
        header: Some(BlockHeader {
            previous_hash: b"foo".to_vec(),
            ..Default::default()
        }),
        data: Some(BlockData {
            data: vec![
                Envelope {
                    payload: Payload {
                        header: Some(Header {
                            channel_header: ChannelHeader {
                                r#type: 1,
                                ..Default::default()
                            }
                            .encode_to_vec(),
                            signature_header: vec![],
                        }),
                        data: vec![],
                    }
                    .encode_to_vec(),
                    signature: b"bar".to_vec(),
                }
                .encode_to_vec(),
            ],
        }),
        metadata: None,
    };
    let expected = json!({
        "data": {"data": [{
            "payload": {
                "data": null,
                "header": {
                    "channel_header": {
                        "channel_id": "", "epoch": "0", "extension": null, "timestamp": null,
                        "tls_cert_hash": "", "tx_id": "", "type": 1, "version": 0
                    },
                    "signature_header": null
                }
            },
            "signature": "YmFy"
        }]},
        "header": {"data_hash": "", "number": "0", "previous_hash": "Zm9v"},
        "metadata": null
    });
    let bytes = block.encode_to_vec();
    assert_eq!(decode("common.Block", &bytes)?, expected);
    assert_eq!(
        proto_encode("common.Block", expected.to_string().as_bytes())?,
        bytes
    );
    Ok(())
}

#[test]
fn a_medledger_genesis_block_has_fabrics_shape_and_round_trips_byte_for_byte() -> anyhow::Result<()>
{
    let net = net()?;
    let bytes = net.genesis.encode_to_vec();
    let text = proto_decode("common.Block", &bytes)?;
    let j: Value = serde_json::from_str(&text)?;
    if let Ok(dump) = std::env::var("CONFIGTXLATOR_DUMP") {
        std::fs::write(dump, &text)?;
    }

    assert_eq!(at(&j, "header.number"), "0");
    assert!(at(&j, "metadata.metadata").is_array());
    assert!(
        at(&j, "metadata.metadata[0]").is_string(),
        "metadata stays base64"
    );
    let env = at(&j, "data.data[0]");
    assert_eq!(at(env, "payload.header.channel_header.type"), 1);
    assert_eq!(at(env, "payload.header.channel_header.channel_id"), CHANNEL);
    let config = at(env, "payload.data.config");
    assert_eq!(at(config, "sequence"), "0", "uint64 as a string");
    let cg = at(config, "channel_group");

    // Channel values (commonext.DynamicChannelConfigValue).
    assert_eq!(at(cg, "values.HashingAlgorithm.value.name"), "SHA256");
    assert_eq!(
        at(cg, "values.BlockDataHashingStructure.value.width"),
        u32::MAX
    );
    assert_eq!(
        at(cg, "values.Capabilities.value.capabilities.V3_0"),
        &json!({})
    );
    assert_eq!(at(cg, "policies.Admins.policy.type"), 3);
    assert_eq!(at(cg, "policies.Admins.policy.value.rule"), "MAJORITY");
    assert_eq!(at(cg, "policies.Admins.policy.value.sub_policy"), "Admins");

    // Orderer values (ordererext.DynamicOrdererConfigValue, ConsensusType's BFT metadata).
    let orderer = at(cg, "groups.Orderer");
    assert_eq!(at(orderer, "values.ConsensusType.value.type"), "BFT");
    assert_eq!(
        at(orderer, "values.ConsensusType.value.state"),
        "STATE_NORMAL"
    );
    let bft = at(orderer, "values.ConsensusType.value.metadata");
    assert!(bft.is_object(), "{bft}");
    assert!(at(bft, "request_batch_max_count").is_string());
    assert!(at(bft, "leader_rotation").is_string(), "an enum by name");
    assert_eq!(at(orderer, "values.BatchSize.value.max_message_count"), 10);
    assert_eq!(at(orderer, "values.BatchTimeout.value.timeout"), "200ms");
    let consenter = at(orderer, "values.Orderers.value.consenter_mapping[0]");
    assert_eq!(at(consenter, "msp_id"), "OrdererMSP");
    assert_eq!(at(consenter, "id"), 1);
    // Orderer organisation values (ordererext.DynamicOrdererOrgConfigValue).
    let omsp = at(orderer, "groups.OrdererMSP.values.MSP.value");
    assert_eq!(at(omsp, "type"), 0);
    assert_eq!(at(omsp, "config.name"), "OrdererMSP");

    // Application organisation values and policies (peerext, mspext, commonext.Policy).
    let h1 = at(cg, "groups.Application.groups.Hospital1MSP");
    let msp = at(h1, "values.MSP.value.config");
    assert_eq!(at(msp, "name"), "Hospital1MSP");
    let root = at(msp, "root_certs[0]").as_str().expect("base64");
    assert_eq!(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, root)?,
        net.h1.ca.cert_pem().as_bytes()
    );
    assert_eq!(at(msp, "fabric_node_ous.enable"), true);
    let admins = at(h1, "policies.Admins");
    assert_eq!(at(admins, "mod_policy"), "Admins");
    assert_eq!(at(admins, "version"), "0");
    assert_eq!(at(admins, "policy.type"), 1);
    assert_eq!(at(admins, "policy.value.rule.n_out_of.n"), 1);
    assert_eq!(
        at(admins, "policy.value.rule.n_out_of.rules[0].signed_by"),
        0
    );
    let principal = at(admins, "policy.value.identities[0]");
    assert_eq!(at(principal, "principal_classification"), "ROLE");
    assert_eq!(at(principal, "principal.msp_identifier"), "Hospital1MSP");
    assert_eq!(at(principal, "principal.role"), "ADMIN");
    let app = at(cg, "groups.Application");
    assert_eq!(
        at(app, "policies.Endorsement.policy.value.rule"),
        "MAJORITY"
    );

    // The envelope's signature header and the block round trip.
    assert!(at(env, "payload.header.signature_header").is_object());
    assert_eq!(proto_encode("common.Block", text.as_bytes())?, bytes);

    // The configuration alone, and as a ConfigEnvelope.
    let config = medledger_common::channelconfig::config_of_block(&net.genesis)?;
    let cbytes = config.encode_to_vec();
    let ctext = proto_decode("common.Config", &cbytes)?;
    assert_eq!(
        serde_json::from_str::<Value>(&ctext)?,
        *at(env, "payload.data.config")
    );
    assert_eq!(proto_encode("common.Config", ctext.as_bytes())?, cbytes);
    let payload = Payload::decode(
        Envelope::decode(net.genesis.data.as_ref().expect("data").data[0].as_slice())?
            .payload
            .as_slice(),
    )?;
    let etext = proto_decode("common.ConfigEnvelope", &payload.data)?;
    assert_eq!(
        proto_encode("common.ConfigEnvelope", etext.as_bytes())?,
        payload.data
    );
    Ok(())
}

/// A signed CONFIG_UPDATE envelope changing the batch size, and its parts.
fn batch_size_update(
    net: &Net,
    admin: &SigningIdentity,
) -> anyhow::Result<(Config, Config, Envelope)> {
    let original = medledger_common::channelconfig::config_of_block(&net.genesis)?;
    let mut j = decode("common.Config", &original.encode_to_vec())?;
    set(
        &mut j,
        "channel_group.groups.Orderer.values.BatchSize.value.max_message_count",
        json!(20),
    );
    let updated =
        Config::decode(proto_encode("common.Config", j.to_string().as_bytes())?.as_slice())?;
    let update = compute_update(CHANNEL, &original, &updated)?;
    let bytes = update.encode_to_vec();
    let envelope = ConfigUpdateEnvelope {
        signatures: vec![sign_config_update(&bytes, admin)?],
        config_update: bytes,
    };
    Ok((
        original,
        updated,
        update_envelope(CHANNEL, &envelope, admin)?,
    ))
}

#[test]
fn a_config_update_has_fabrics_shape_and_round_trips_byte_for_byte() -> anyhow::Result<()> {
    let net = net()?;
    let admin = net.orderers.org.identity("ordereradmin", "admin", &[])?;
    let (_, _, env) = batch_size_update(&net, &admin)?;
    let bytes = env.encode_to_vec();
    let text = proto_decode("common.Envelope", &bytes)?;
    let j: Value = serde_json::from_str(&text)?;
    assert_eq!(at(&j, "payload.header.channel_header.type"), 2);
    assert_eq!(
        at(&j, "payload.header.signature_header.creator.mspid"),
        "OrdererMSP"
    );
    let cue = at(&j, "payload.data");
    assert_eq!(at(cue, "config_update.channel_id"), CHANNEL);
    assert_eq!(
        at(
            cue,
            "config_update.write_set.groups.Orderer.values.BatchSize.value.max_message_count"
        ),
        20
    );
    assert_eq!(
        at(
            cue,
            "config_update.write_set.groups.Orderer.values.BatchSize.version"
        ),
        "1"
    );
    assert_eq!(
        at(cue, "config_update.read_set.groups.Orderer.version"),
        "0"
    );
    assert_eq!(
        at(cue, "signatures[0].signature_header.creator.mspid"),
        "OrdererMSP"
    );
    assert!(at(cue, "signatures[0].signature").is_string());
    assert_eq!(proto_encode("common.Envelope", text.as_bytes())?, bytes);

    // The parts on their own, as configtxlator's --type names them.
    let payload = Payload::decode(env.payload.as_slice())?;
    let cue_bytes = payload.data;
    let t = proto_decode("common.ConfigUpdateEnvelope", &cue_bytes)?;
    assert_eq!(serde_json::from_str::<Value>(&t)?, *cue);
    assert_eq!(
        proto_encode("common.ConfigUpdateEnvelope", t.as_bytes())?,
        cue_bytes
    );
    let update_bytes = ConfigUpdateEnvelope::decode(cue_bytes.as_slice())?.config_update;
    let t = proto_decode("common.ConfigUpdate", &update_bytes)?;
    assert_eq!(
        serde_json::from_str::<Value>(&t)?,
        *at(cue, "config_update")
    );
    assert_eq!(
        proto_encode("common.ConfigUpdate", t.as_bytes())?,
        update_bytes
    );
    Ok(())
}

#[test]
fn an_edited_json_configuration_is_an_update_the_configtx_rules_accept() -> anyhow::Result<()> {
    let net = net()?;
    let admin = net.orderers.org.identity("ordereradmin", "admin", &[])?;
    let (original, updated, env) = batch_size_update(&net, &admin)?;

    // Only the edited value changed: the update's write set holds BatchSize alone.
    let update = compute_update(CHANNEL, &original, &updated)?;
    let orderer = update
        .write_set
        .as_ref()
        .and_then(|g| g.groups.get("Orderer"))
        .expect("Orderer in the write set");
    assert_eq!(orderer.values.keys().collect::<Vec<_>>(), ["BatchSize"]);
    assert!(orderer.groups.values().all(|g| g.values.is_empty()));
    assert!(
        update
            .write_set
            .as_ref()
            .is_some_and(|g| g.values.is_empty())
    );
    // As Fabric's flow does it (both configurations encoded from JSON), the same update.
    let reencoded = Config::decode(
        proto_encode(
            "common.Config",
            proto_decode("common.Config", &original.encode_to_vec())?.as_bytes(),
        )?
        .as_slice(),
    )?;
    assert_eq!(compute_update(CHANNEL, &reencoded, &updated)?, update);

    let current = ChannelConfig::from_block(&net.genesis)?;
    let proposed = propose_update(&current, &env, Expiry::now())?;
    let next = check_config_envelope(&current, &proposed)?;
    assert_eq!(next.sequence, 1);
    assert_eq!(next.batch_size.max_message_count, 20);
    assert_eq!(next.batch_size.absolute_max_bytes, 1 << 20);
    Ok(())
}

fn encode_err(type_name: &str, json: &str) -> String {
    match proto_encode(type_name, json.as_bytes()) {
        Ok(b) => panic!("{json} encoded to {b:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn garbage_json_and_bytes_are_refused_with_a_clear_error() -> anyhow::Result<()> {
    let net = net()?;
    let bytes = net.genesis.encode_to_vec();
    let text = proto_decode("common.Block", &bytes)?;

    // Bytes.
    let e = proto_decode("common.Block", b"\x0a\xff\xff\xff\xff\x0f").unwrap_err();
    assert!(matches!(e, ConfigJsonError::Decode { .. }), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
    let e = proto_decode("common.Block", &bytes[..bytes.len() / 2]).unwrap_err();
    assert!(
        e.to_string().contains("cannot decode common.Block at "),
        "{e}"
    );
    let e = proto_decode("common.Config", &[0xf8, 0x07, 0x01]).unwrap_err();
    assert!(
        e.to_string().contains("not a field of common.Config"),
        "{e}"
    );
    let e = proto_decode("common.Block", &vec![0; MAX_PROTO_BYTES + 1]).unwrap_err();
    assert!(matches!(e, ConfigJsonError::TooLarge { .. }), "{e}");
    let e = proto_decode("common.Blok", &bytes).unwrap_err();
    assert!(matches!(e, ConfigJsonError::UnknownType(_)), "{e}");
    // Messages nested beyond the bound (a signature policy of n_out_of in n_out_of ...).
    let mut rule = vec![0x08, 0x00]; // SignaturePolicy { signed_by: 0 }
    for _ in 0..100 {
        let mut n_out_of = vec![0x08, 0x01, 0x12, rule.len() as u8];
        n_out_of.extend(&rule);
        if n_out_of.len() > 120 {
            break;
        }
        rule = vec![0x12, n_out_of.len() as u8];
        rule.extend(n_out_of);
    }
    assert!(proto_decode("common.SignaturePolicy", &rule).is_ok());
    let mut deep = Vec::new();
    for _ in 0..200 {
        // ConfigGroup { groups: { "": <deeper> } }, built inside out.
        let mut entry = vec![0x12];
        prost::encoding::encode_varint(deep.len() as u64, &mut entry);
        entry.extend(&deep);
        let mut group = vec![0x12];
        prost::encoding::encode_varint(entry.len() as u64, &mut group);
        group.extend(entry);
        deep = group;
    }
    let e = proto_decode("common.ConfigGroup", &deep).unwrap_err();
    assert!(e.to_string().contains("nest deeper"), "{e}");
    // Random corruption never panics.
    let mut rng = rand::thread_rng();
    for _ in 0..300 {
        let mut b = bytes.clone();
        for _ in 0..3 {
            let i = rand::Rng::gen_range(&mut rng, 0..b.len());
            b[i] = rand::Rng::r#gen(&mut rng);
        }
        let _ = proto_decode("common.Block", &b);
        let cut = rand::Rng::gen_range(&mut rng, 0..b.len());
        let _ = proto_decode("common.Block", &b[..cut]);
        let cut = rand::Rng::gen_range(&mut rng, 0..text.len());
        let _ = proto_encode("common.Block", &text.as_bytes()[..cut]);
    }

    // JSON.
    assert!(encode_err("common.Block", "{").starts_with("not valid JSON"));
    assert!(encode_err("common.Block", "").starts_with("not valid JSON"));
    assert!(encode_err("common.Block", &"[".repeat(1000)).starts_with("not valid JSON"));
    let e = encode_err(
        "common.Block",
        r#"{"header": {"number": "0", "number": "1"}}"#,
    );
    assert!(e.contains("duplicate key"), "{e}");
    let e = encode_err("common.Block", r#"{"headr": {}}"#);
    assert!(
        e.contains(r#"unknown field "headr" in common.Block"#),
        "{e}"
    );
    let e = encode_err("common.Block", r#"{"header": {"number": "x"}}"#);
    assert!(
        e.contains("at header.number") && e.contains("integer"),
        "{e}"
    );
    let e = encode_err("common.Block", r#"{"header": {"number": "-1"}}"#);
    assert!(e.contains("out of range"), "{e}");
    let e = encode_err("common.Block", r#"{"header": {"data_hash": "%%%"}}"#);
    assert!(e.contains("base64"), "{e}");
    let e = encode_err("common.Block", r#"{"data": {"data": ["AAAA"]}}"#);
    assert!(
        e.contains("data.data[0]") && e.contains("expected an object for common.Envelope"),
        "{e}"
    );
    let e = encode_err("common.Envelope", r#"{"payload": {"data": {}}}"#);
    assert!(e.contains("header is missing"), "{e}");
    let e = encode_err(
        "common.Envelope",
        r#"{"payload": {"header": {"channel_header": {"type": 5}}, "data": {}}}"#,
    );
    assert!(e.contains("decoding type 5 is unimplemented"), "{e}");
    let e = encode_err(
        "common.Config",
        r#"{"channel_group": {"groups": {"Orderer": {"values": {"Nonsense": {"value": {}}}}}}}"#,
    );
    assert!(
        e.contains("unknown Orderer ConfigValue name: Nonsense")
            && e.contains(r#"channel_group.groups["Orderer"].values["Nonsense"].value"#),
        "{e}"
    );
    let e = encode_err(
        "common.Config",
        r#"{"channel_group": {"groups": {"Peers": {}}}}"#,
    );
    assert!(e.contains("unknown channel group sub-group 'Peers'"), "{e}");
    let e = encode_err(
        "common.Policy",
        r#"{"type": 1, "value": {"rule": {"signed_by": 0, "n_out_of": {"n": 1}}}}"#,
    );
    assert!(e.contains("oneof"), "{e}");
    let e = encode_err("common.ChannelHeader", r#"{"timestamp": "yesterday"}"#);
    assert!(e.contains("Timestamp"), "{e}");
    let e = encode_err(
        "orderer.ConsensusType",
        r#"{"type": "BFT", "state": "STATE_SLEEPY"}"#,
    );
    assert!(e.contains("STATE_SLEEPY"), "{e}");
    Ok(())
}

/// Fabric's documented flow ("Updating a channel configuration"), with our commands in place of
/// `peer` and `configtxlator`, against running orderers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fabrics_json_flow_updates_a_running_channel() -> anyhow::Result<()> {
    let bin = medledger_tests::workspace_binary("medledger-peer", "medledger-peer")?;
    let net = net()?;
    std::fs::write(&net.orderers.genesis_path, net.genesis.encode_to_vec())?;
    let _running = net.orderers.start_all().await?;
    let dir = tempfile::tempdir()?;
    let admin = net.orderers.org.identity("ordereradmin", "admin", &[])?;
    let msp = dir.path().join("admin");
    net.orderers.org.write_msp(&msp, &admin)?;
    let cafile = dir.path().join("orderer-tlsca.pem");
    std::fs::write(&cafile, net.orderers.org.tls_ca.cert_pem())?;
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let run = |args: &[&str]| medledger_tests::run_cli_ok(&bin, "OrdererMSP", &msp, args);
    let orderer = net.orderers.address(1);
    let cafile = cafile.to_string_lossy().into_owned();
    let to_orderer = [
        "-o",
        orderer.as_str(),
        "-c",
        CHANNEL,
        "--cafile",
        cafile.as_str(),
    ];

    let fetch = |name: &str| -> anyhow::Result<String> {
        let mut a = vec!["channel", "fetch", "config"];
        let path = p(name);
        a.push(&path);
        a.extend(to_orderer);
        run(&a)
    };
    // Orderers accept Deliver once they are up.
    let mut tries = 0;
    while let Err(e) = fetch("config_block.pb") {
        tries += 1;
        anyhow::ensure!(tries < 100, "{e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let decode_to = |ty: &str, input: &str, output: &str| {
        run(&[
            "config",
            "proto-decode",
            "--type",
            ty,
            "--input",
            &p(input),
            "--output",
            &p(output),
        ])
    };
    let encode_to = |ty: &str, input: &str, output: &str| {
        run(&[
            "config",
            "proto-encode",
            "--type",
            ty,
            "--input",
            &p(input),
            "--output",
            &p(output),
        ])
    };
    decode_to("common.Block", "config_block.pb", "config_block.json")?;
    // jq .data.data[0].payload.data.config config_block.json > config.json
    let block: Value = serde_json::from_slice(&std::fs::read(p("config_block.json"))?)?;
    let mut config = at(&block, "data.data[0].payload.data.config").clone();
    std::fs::write(p("config.json"), serde_json::to_vec_pretty(&config)?)?;
    set(
        &mut config,
        "channel_group.groups.Orderer.values.BatchSize.value.max_message_count",
        json!(25),
    );
    std::fs::write(
        p("modified_config.json"),
        serde_json::to_vec_pretty(&config)?,
    )?;
    encode_to("common.Config", "config.json", "config.pb")?;
    encode_to(
        "common.Config",
        "modified_config.json",
        "modified_config.pb",
    )?;
    run(&[
        "config",
        "compute-update",
        "--channel_id",
        CHANNEL,
        "--original",
        &p("config.pb"),
        "--updated",
        &p("modified_config.pb"),
        "--output",
        &p("config_update.pb"),
    ])?;
    decode_to(
        "common.ConfigUpdate",
        "config_update.pb",
        "config_update.json",
    )?;
    let update: Value = serde_json::from_slice(&std::fs::read(p("config_update.json"))?)?;
    let wrapped = json!({
        "payload": {
            "header": {"channel_header": {"channel_id": CHANNEL, "type": 2}},
            "data": {"config_update": update}
        }
    });
    std::fs::write(p("config_update_in_envelope.json"), wrapped.to_string())?;
    encode_to(
        "common.Envelope",
        "config_update_in_envelope.json",
        "config_update_in_envelope.pb",
    )?;
    run(&[
        "channel",
        "signconfigtx",
        "-f",
        &p("config_update_in_envelope.pb"),
    ])?;
    let mut a = vec!["channel", "update", "-f"];
    let file = p("config_update_in_envelope.pb");
    a.push(&file);
    a.extend(to_orderer);
    let out = run(&a)?;
    assert!(
        out.contains("Successfully submitted channel update"),
        "{out}"
    );

    // The newest configuration block carries the new batch size.
    let mut tries = 0;
    loop {
        fetch("config_block2.pb")?;
        decode_to("common.Block", "config_block2.pb", "config_block2.json")?;
        let j: Value = serde_json::from_slice(&std::fs::read(p("config_block2.json"))?)?;
        let config = at(&j, "data.data[0].payload.data.config");
        if at(config, "sequence") == "1" {
            assert_eq!(
                at(
                    config,
                    "channel_group.groups.Orderer.values.BatchSize.value.max_message_count"
                ),
                25
            );
            assert_eq!(
                at(
                    config,
                    "channel_group.groups.Orderer.values.BatchSize.version"
                ),
                "1"
            );
            break;
        }
        tries += 1;
        anyhow::ensure!(tries < 100, "the update never made a configuration block");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
