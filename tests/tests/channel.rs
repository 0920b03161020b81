//! Channel configuration: a genesis block made from a profile resolves back into MSPs, policies,
//! consenters and batch settings; BFT block signatures verify only with a quorum of consenters.

use std::time::Duration;

use medledger_common::channelconfig::{
    ChannelConfig, ChannelProfile, OrgProfile, genesis_block, sign_block,
};
use medledger_common::msp::Expiry;
use medledger_common::policy::SignedData;
use medledger_common::protoutil::{block_header_hash, new_block};
use medledger_proto::common::{Consenter, Metadata};
use medledger_proto::orderer::BatchSize;
use medledger_tests::TestOrg;
use prost::Message;

#[test]
fn genesis_block_round_trips_and_block_signatures_need_a_quorum() -> anyhow::Result<()> {
    let h1 = TestOrg::new("Hospital1MSP")?;
    let h2 = TestOrg::new("Hospital2MSP")?;
    let ord = TestOrg::new("OrdererMSP")?;
    let orderers: Vec<_> = (1..=4)
        .map(|i| ord.identity(&format!("orderer{i}"), "orderer", &[]))
        .collect::<Result<_, _>>()?;
    let consenters: Vec<Consenter> = orderers
        .iter()
        .enumerate()
        .map(|(i, o)| Consenter {
            id: i as u32 + 1,
            host: "127.0.0.1".into(),
            port: 7050 + i as u32,
            msp_id: "OrdererMSP".into(),
            identity: o.cert_pem().to_vec(),
            client_tls_cert: vec![],
            server_tls_cert: vec![],
        })
        .collect();
    let org = |o: &TestOrg, anchors: Vec<(String, u16)>| OrgProfile {
        msp: o.msp_config(),
        anchor_peers: anchors,
    };
    let profile = ChannelProfile {
        channel_id: "medchannel".into(),
        application_orgs: vec![org(&h1, vec![("127.0.0.1".into(), 7051)]), org(&h2, vec![])],
        orderer_orgs: vec![org(&ord, vec![])],
        consenters: consenters.clone(),
        batch_size: BatchSize {
            max_message_count: 10,
            absolute_max_bytes: 1 << 20,
            preferred_max_bytes: 1 << 19,
        },
        batch_timeout: Duration::from_millis(250),
    };
    let genesis = genesis_block(&profile)?;
    let cfg = ChannelConfig::from_block(&genesis)?;
    assert_eq!(cfg.channel_id, "medchannel");
    assert_eq!(cfg.application_orgs, ["Hospital1MSP", "Hospital2MSP"]);
    assert_eq!(cfg.orderer_orgs, ["OrdererMSP"]);
    assert_eq!(cfg.consenters, consenters);
    assert_eq!(cfg.batch_size.max_message_count, 10);
    assert_eq!(cfg.batch_timeout, Duration::from_millis(250));
    assert_eq!(cfg.bft_quorum(), 3);
    assert_eq!(
        cfg.anchor_peers["Hospital1MSP"],
        vec![("127.0.0.1".to_string(), 7051)]
    );

    // Channel Writers = ANY org's Writers; Application Endorsement = MAJORITY of orgs' peers.
    let client = h1.identity("app", "client", &[])?;
    let p1 = h1.identity("peer0", "peer", &[])?;
    let p2 = h2.identity("peer0", "peer", &[])?;
    let data = b"payload";
    let sign = |ids: &[&medledger_common::SigningIdentity]| -> Vec<(Vec<u8>, Vec<u8>)> {
        ids.iter()
            .map(|i| (i.serialized().to_vec(), i.sign(data).unwrap()))
            .collect()
    };
    let check = |path: &str, sigs: &[(Vec<u8>, Vec<u8>)]| {
        let sd: Vec<SignedData> = sigs
            .iter()
            .map(|(id, s)| SignedData {
                data,
                identity: id,
                signature: s,
            })
            .collect();
        cfg.policy(path)
            .unwrap()
            .evaluate(&sd, &cfg.msps, Expiry::now())
            .is_ok()
    };
    assert!(check("/Channel/Writers", &sign(&[&client])));
    assert!(check("/Channel/Application/Writers", &sign(&[&client])));
    assert!(!check("/Channel/Application/Endorsement", &sign(&[&p1])));
    assert!(check(
        "/Channel/Application/Endorsement",
        &sign(&[&p1, &p2])
    ));
    assert!(!check(
        "/Channel/Application/Endorsement",
        &sign(&[&p1, &client])
    ));

    // Block 1 signed by consenters: 2 are not enough, 3 are; a forged or repeated one is not counted.
    let mut block = new_block(
        1,
        block_header_hash(genesis.header.as_ref().unwrap()).to_vec(),
        vec![b"env".to_vec()],
    );
    let value = b"orderer metadata".to_vec();
    let mut md = Metadata {
        value: value.clone(),
        signatures: vec![],
    };
    let put = |block: &mut medledger_proto::common::Block, md: &Metadata| {
        block.metadata.as_mut().unwrap().metadata[0] = md.encode_to_vec();
    };
    md.signatures
        .push(sign_block(&block, 1, &value, &orderers[0])?);
    md.signatures
        .push(sign_block(&block, 2, &value, &orderers[1])?);
    md.signatures
        .push(sign_block(&block, 2, &value, &orderers[1])?);
    md.signatures.push(sign_block(&block, 3, &value, &client)?); // not consenter 3's key
    put(&mut block, &md);
    assert!(cfg.verify_block(&block).is_err());
    md.signatures
        .push(sign_block(&block, 4, &value, &orderers[3])?);
    put(&mut block, &md);
    cfg.verify_block(&block)?;
    // A hostile orderer pads the list with thousands of copies of one consenter's signature and of
    // a forged one: each consenter is verified at most once.
    let forged = sign_block(&block, 3, &value, &client)?;
    let repeated = sign_block(&block, 1, &value, &orderers[0])?;
    let mut padded = Metadata {
        value: value.clone(),
        signatures: Vec::new(),
    };
    for _ in 0..2_000 {
        padded.signatures.push(forged.clone());
        padded.signatures.push(repeated.clone());
    }
    padded
        .signatures
        .push(sign_block(&block, 2, &value, &orderers[1])?);
    padded
        .signatures
        .push(sign_block(&block, 4, &value, &orderers[3])?);
    put(&mut block, &padded);
    let verified = cfg.verify_block(&block)?;
    assert!(
        verified <= 4,
        "{verified} signature verifications for 4 consenters"
    );
    // Tampering with the data breaks the data hash.
    block.data.as_mut().unwrap().data[0] = b"evil".to_vec();
    assert!(cfg.verify_block(&block).is_err());
    Ok(())
}
