//! Property tests over every decoder of outside bytes (blocks, proposals, envelopes, identities,
//! certificates, policies, configuration updates, proof bundles): hostile variants (small-scope mutations)
//! of valid messages and of random bytes must give a typed error or a value, never a panic or a
//! hang. `MEDLEDGER_FUZZ_ITERATIONS` sets the inputs per target (CI runs the default; the long
//! run is in the README); each target prints its inputs/s.

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
    let n = iterations(5_000);
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
