//! Channel configuration updates as Fabric's configtx validator checks them: computed from an
//! edited configuration, signed by admins, proposed against the configuration in force; stale,
//! jumped, under-signed and garbage updates refused; a CONFIG envelope replayed and checked.

use medledger_common::SigningIdentity;
use medledger_common::channelconfig::{ChannelConfig, ChannelProfile, genesis_block};
use medledger_common::configtx::{
    ConfigTxError, check_config_envelope, compute_update, propose_update, sign_config_update,
    update_envelope,
};
use medledger_common::msp::Expiry;
use medledger_proto::common::{Config, ConfigUpdate, ConfigUpdateEnvelope, Envelope};
use medledger_proto::msp::MspConfig;
use medledger_proto::orderer::BatchSize;
use medledger_tests::TestOrg;
use prost::Message;

const CHANNEL: &str = "medchannel";

/// An update as the orderer's Broadcast checks it (certificates against the clock).
fn propose(
    current: &ChannelConfig,
    env: &Envelope,
) -> Result<medledger_proto::common::ConfigEnvelope, ConfigTxError> {
    propose_update(current, env, Expiry::now())
}

type Net = medledger_tests::ordernet::HospitalChannel;

fn net() -> anyhow::Result<Net> {
    Net::prepare(CHANNEL)
}

/// The current configuration tree, to edit.
fn tree(c: &ChannelConfig) -> Config {
    (*c.source).clone()
}

/// The CONFIG_UPDATE envelope for `update`, signed by `admins`, submitted by the first of them.
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

fn msp_value<'a>(c: &'a mut Config, org: &str) -> &'a mut Vec<u8> {
    &mut c
        .channel_group
        .as_mut()
        .expect("channel group")
        .groups
        .get_mut("Application")
        .expect("application")
        .groups
        .get_mut(org)
        .expect("org")
        .values
        .get_mut("MSP")
        .expect("MSP")
        .value
}

/// Hospital1's MSP with a CRL revoking `who`.
fn revoking(net: &Net, who: &SigningIdentity) -> anyhow::Result<Config> {
    let crl = net.h1.ca.crl(
        &[(
            who.certificate().serial.clone(),
            medledger_common::msp::unix_now() - 10,
        )],
        1,
        3600,
    )?;
    let mut next = tree(&net.config);
    let value = msp_value(&mut next, "Hospital1MSP");
    let mut msp = MspConfig::decode(value.as_slice())?;
    let mut fabric = medledger_proto::msp::FabricMspConfig::decode(msp.config.as_slice())?;
    fabric.revocation_list.push(crl.into_bytes());
    msp.config = fabric.encode_to_vec();
    *value = msp.encode_to_vec();
    Ok(next)
}

fn refusal(r: Result<impl std::fmt::Debug, ConfigTxError>) -> String {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_organisation_revokes_its_own_member_with_its_admin_signature() -> anyhow::Result<()> {
    let net = net()?;
    let doctor = net.h1.identity("doctor", "client", &[("role", "doctor")])?;
    let admin1 = net.h1.identity("admin1", "admin", &[])?;
    assert!(
        net.config
            .msps
            .deserialize(doctor.serialized(), Expiry::now())
            .is_ok()
    );

    let update = compute_update(CHANNEL, &net.config.source, &revoking(&net, &doctor)?)?;
    let env = signed(&update, &[&admin1])?;
    let proposed = propose(&net.config, &env)?;
    let next = check_config_envelope(&net.config, &proposed)?;
    assert_eq!(next.sequence, 1);
    assert!(
        next.msps
            .deserialize(doctor.serialized(), Expiry::now())
            .is_err(),
        "the new CRL revokes the doctor"
    );
    let nurse = net.h1.identity("nurse", "client", &[])?;
    assert!(
        next.msps
            .deserialize(nurse.serialized(), Expiry::now())
            .is_ok()
    );

    // Another organisation's admin may not change Hospital1's MSP.
    let admin2 = net.h2.identity("admin2", "admin", &[])?;
    let e = refusal(propose(&net.config, &signed(&update, &[&admin2])?));
    assert!(e.contains("Hospital1MSP/Admins"), "{e}");
    // Nor may Hospital1's client.
    assert!(propose(&net.config, &signed(&update, &[&nurse])?).is_err());

    // Replayed against the configuration it produced, the update is stale.
    let e = refusal(propose(&next, &env));
    assert!(e.contains("version"), "{e}");
    Ok(())
}

#[test]
fn adding_an_organisation_needs_a_majority_of_application_admins() -> anyhow::Result<()> {
    let net = net()?;
    let h3 = TestOrg::new("Hospital3MSP")?;
    let mut next = tree(&net.config);
    let app = net
        .config
        .source
        .channel_group
        .as_ref()
        .and_then(|g| g.groups.get("Application"))
        .expect("application");
    let mut h3_group = app.groups["Hospital1MSP"].clone();
    let mut msp = MspConfig::decode(h3_group.values["MSP"].value.as_slice())?;
    msp.config = h3.msp_config().encode_to_vec();
    h3_group.values.get_mut("MSP").expect("MSP").value = msp.encode_to_vec();
    // The copied policies name Hospital1MSP; Hospital3's own must name Hospital3MSP.
    let own = ChannelConfig::from_block(&genesis_block(&ChannelProfile {
        channel_id: CHANNEL.into(),
        application_orgs: vec![h3.profile()],
        orderer_orgs: vec![net.orderers.org.profile()],
        consenters: net.orderers.consenters.clone(),
        batch_size: net.config.batch_size,
        batch_timeout: net.config.batch_timeout,
    })?)?;
    h3_group.policies = own
        .source
        .channel_group
        .as_ref()
        .and_then(|g| g.groups.get("Application"))
        .map(|a| a.groups["Hospital3MSP"].policies.clone())
        .expect("policies");
    next.channel_group
        .as_mut()
        .expect("group")
        .groups
        .get_mut("Application")
        .expect("application")
        .groups
        .insert("Hospital3MSP".into(), h3_group);
    let update = compute_update(CHANNEL, &net.config.source, &next)?;
    let admin1 = net.h1.identity("admin1", "admin", &[])?;
    let admin2 = net.h2.identity("admin2", "admin", &[])?;

    let e = refusal(propose(&net.config, &signed(&update, &[&admin1])?));
    assert!(e.contains("/Channel/Application/Admins"), "{e}");
    // The same admin twice is still one signer.
    assert!(propose(&net.config, &signed(&update, &[&admin1, &admin1])?).is_err());

    let proposed = propose(&net.config, &signed(&update, &[&admin1, &admin2])?)?;
    let after = check_config_envelope(&net.config, &proposed)?;
    assert!(after.application_orgs.contains(&"Hospital3MSP".to_owned()));
    let h3_peer = h3.identity("peer0", "peer", &[])?;
    assert!(
        after
            .msps
            .deserialize(h3_peer.serialized(), Expiry::now())
            .is_ok()
    );
    assert!(
        net.config
            .msps
            .deserialize(h3_peer.serialized(), Expiry::now())
            .is_err()
    );
    Ok(())
}

#[test]
fn stale_jumped_garbage_and_empty_updates_change_nothing() -> anyhow::Result<()> {
    let net = net()?;
    let admin1 = net.h1.identity("admin1", "admin", &[])?;
    let doctor = net.h1.identity("doctor", "client", &[])?;
    let good = compute_update(CHANNEL, &net.config.source, &revoking(&net, &doctor)?)?;

    // A version jump: the MSP value written at version 2 while it is at 0.
    let mut jumped = good.clone();
    let h1 = jumped
        .write_set
        .as_mut()
        .and_then(|g| g.groups.get_mut("Application"))
        .and_then(|g| g.groups.get_mut("Hospital1MSP"))
        .expect("org");
    h1.values.get_mut("MSP").expect("MSP").version = 2;
    let e = refusal(propose(&net.config, &signed(&jumped, &[&admin1])?));
    assert!(e.contains("version 2"), "{e}");

    // A read set that expects a newer version than the channel has.
    let mut stale = good.clone();
    stale.read_set.as_mut().expect("read set").version = 7;
    let e = refusal(propose(&net.config, &signed(&stale, &[&admin1])?));
    assert!(e.contains("read set") || e.contains("version 7"), "{e}");

    // An MSP that does not parse.
    let mut garbage = tree(&net.config);
    *msp_value(&mut garbage, "Hospital1MSP") = b"\xff\x01 not an MSP".to_vec();
    let update = compute_update(CHANNEL, &net.config.source, &garbage)?;
    let r = propose(&net.config, &signed(&update, &[&admin1])?);
    assert!(matches!(r, Err(ConfigTxError::InvalidResult(_))), "{r:?}");

    // Another channel's update.
    let mut other = good.clone();
    other.channel_id = "otherchannel".into();
    assert!(propose(&net.config, &signed(&other, &[&admin1])?).is_err());

    // Nothing to change.
    assert!(compute_update(CHANNEL, &net.config.source, &net.config.source).is_err());
    let empty = ConfigUpdate {
        channel_id: CHANNEL.into(),
        read_set: good.read_set.clone(),
        write_set: good.read_set.clone(),
        ..Default::default()
    };
    let e = refusal(propose(&net.config, &signed(&empty, &[&admin1])?));
    assert!(e.contains("no effect"), "{e}");
    Ok(())
}

#[test]
fn a_config_envelope_must_be_exactly_what_its_update_produces() -> anyhow::Result<()> {
    let net = net()?;
    let orderer_admin = net.orderers.org.identity("oadmin", "admin", &[])?;
    let mut next = tree(&net.config);
    let orderer = next
        .channel_group
        .as_mut()
        .and_then(|g| g.groups.get_mut("Orderer"))
        .expect("orderer group");
    orderer
        .values
        .get_mut("BatchSize")
        .expect("batch size")
        .value = BatchSize {
        max_message_count: 50,
        absolute_max_bytes: 1 << 20,
        preferred_max_bytes: 512 << 10,
    }
    .encode_to_vec();
    let update = compute_update(CHANNEL, &net.config.source, &next)?;
    let admin1 = net.h1.identity("admin1", "admin", &[])?;
    let e = refusal(propose(&net.config, &signed(&update, &[&admin1])?));
    assert!(e.contains("/Channel/Orderer/Admins"), "{e}");

    let proposed = propose(&net.config, &signed(&update, &[&orderer_admin])?)?;
    assert_eq!(
        check_config_envelope(&net.config, &proposed)?
            .batch_size
            .max_message_count,
        50
    );

    // A leader that slips another change into the configuration is caught on replay.
    let mut tampered = proposed.clone();
    let cfg = tampered.config.as_mut().expect("config");
    cfg.channel_group
        .as_mut()
        .expect("group")
        .groups
        .get_mut("Orderer")
        .expect("orderer")
        .values
        .get_mut("BatchTimeout")
        .expect("timeout")
        .value = medledger_proto::orderer::BatchTimeout {
        timeout: "1ms".into(),
    }
    .encode_to_vec();
    assert!(check_config_envelope(&net.config, &tampered).is_err());
    // So is a sequence that is not the next one.
    let mut skipped = proposed.clone();
    skipped.config.as_mut().expect("config").sequence = 5;
    assert!(check_config_envelope(&net.config, &skipped).is_err());
    Ok(())
}

#[test]
fn an_organisation_admin_cannot_take_another_organisations_msp_id() -> anyhow::Result<()> {
    let net = net()?;
    let admin1 = net.h1.identity("admin1", "admin", &[])?;
    let mut next = tree(&net.config);
    let value = msp_value(&mut next, "Hospital1MSP");
    let mut msp = MspConfig::decode(value.as_slice())?;
    let mut fabric = medledger_proto::msp::FabricMspConfig::decode(msp.config.as_slice())?;
    fabric.name = "Hospital2MSP".into();
    msp.config = fabric.encode_to_vec();
    *value = msp.encode_to_vec();
    let update = compute_update(CHANNEL, &net.config.source, &next)?;
    let e = refusal(propose(&net.config, &signed(&update, &[&admin1])?));
    assert!(e.contains("Hospital2MSP"), "{e}");
    Ok(())
}

#[test]
fn an_update_that_would_revoke_a_consenter_is_refused() -> anyhow::Result<()> {
    let net = net()?;
    let orderer_admin = net.orderers.org.identity("oadmin", "admin", &[])?;
    let consenter = &net.orderers.consenters[0];
    let cert = medledger_common::cert::Certificate::from_pem(&consenter.identity)?;
    let crl = net.orderers.org.ca.crl(
        &[(cert.serial.clone(), medledger_common::msp::unix_now() - 10)],
        1,
        3600,
    )?;
    let mut next = tree(&net.config);
    let value = &mut next
        .channel_group
        .as_mut()
        .and_then(|g| g.groups.get_mut("Orderer"))
        .and_then(|g| g.groups.get_mut("OrdererMSP"))
        .and_then(|g| g.values.get_mut("MSP"))
        .expect("orderer MSP")
        .value;
    let mut msp = MspConfig::decode(value.as_slice())?;
    let mut fabric = medledger_proto::msp::FabricMspConfig::decode(msp.config.as_slice())?;
    fabric.revocation_list.push(crl.into_bytes());
    msp.config = fabric.encode_to_vec();
    *value = msp.encode_to_vec();
    let update = compute_update(CHANNEL, &net.config.source, &next)?;
    let e = refusal(propose(&net.config, &signed(&update, &[&orderer_admin])?));
    assert!(e.contains("consenter 1"), "{e}");
    Ok(())
}

#[test]
fn hostile_updates_are_refused_cheaply() -> anyhow::Result<()> {
    let net = net()?;
    let admin1 = net.h1.identity("admin1", "admin", &[])?;
    let doctor = net.h1.identity("doctor", "client", &[])?;
    let good = compute_update(CHANNEL, &net.config.source, &revoking(&net, &doctor)?)?;

    // The same signer many times with bad signatures, around one good signature: each creator
    // is checked once, and the update still applies.
    let bytes = good.encode_to_vec();
    let admin2 = net.h2.identity("admin2", "admin", &[])?;
    let mut bad = sign_config_update(&bytes, &admin2)?;
    bad.signature[10] ^= 1;
    let mut signatures = vec![bad; 5_000];
    signatures.push(sign_config_update(&bytes, &admin1)?);
    let env = update_envelope(
        CHANNEL,
        &ConfigUpdateEnvelope {
            signatures,
            config_update: bytes.clone(),
        },
        &admin1,
    )?;
    assert!(propose(&net.config, &env).is_ok());

    // More distinct signers than any channel has admins.
    let many: Vec<SigningIdentity> = (0..65)
        .map(|i| net.h1.identity(&format!("a{i}"), "admin", &[]))
        .collect::<Result<_, _>>()?;
    let e = refusal(propose(
        &net.config,
        &signed(&good, &many.iter().collect::<Vec<_>>())?,
    ));
    assert!(e.contains("distinct signers"), "{e}");

    // A write set nested far deeper than any configuration.
    let mut deep = good.clone();
    let mut g = deep.write_set.as_mut().expect("write set");
    for i in 0..12 {
        g = g.groups.entry(format!("g{i}")).or_default();
    }
    let e = refusal(propose(&net.config, &signed(&deep, &[&admin1])?));
    assert!(e.contains("deeper"), "{e}");

    // An update whose write set adds an element no changed group lists: it would change nothing
    // (and needs no signature), so it is refused rather than ordered as an empty config block.
    let mut noop = good.clone();
    let root = noop.write_set.as_mut().expect("write set");
    root.groups.clear();
    root.values.insert(
        "Unlisted".into(),
        medledger_proto::common::ConfigValue {
            version: 0,
            value: b"x".to_vec(),
            mod_policy: "Admins".into(),
        },
    );
    noop.read_set = Some(medledger_proto::common::ConfigGroup {
        version: 0,
        ..Default::default()
    });
    let e = refusal(propose(&net.config, &signed(&noop, &[&doctor])?));
    assert!(e.contains("would not change"), "{e}");
    Ok(())
}

#[test]
fn an_organisation_deleting_its_own_admins_policy_does_not_lower_the_majority() -> anyhow::Result<()>
{
    let net = net()?;
    let admin1 = net.h1.identity("admin1", "admin", &[])?;
    let admin2 = net.h2.identity("admin2", "admin", &[])?;
    // Hospital1's admin deletes Hospital1's Admins policy (Hospital1's own group, its own right).
    let mut next = tree(&net.config);
    next.channel_group
        .as_mut()
        .and_then(|g| g.groups.get_mut("Application"))
        .and_then(|g| g.groups.get_mut("Hospital1MSP"))
        .expect("org")
        .policies
        .remove("Admins");
    let update = compute_update(CHANNEL, &net.config.source, &next)?;
    let after = check_config_envelope(
        &net.config,
        &propose(&net.config, &signed(&update, &[&admin1])?)?,
    )?;
    // Hospital2's admin alone is still not a majority of the two hospitals' admins.
    let mut change = (*after.source).clone();
    change
        .channel_group
        .as_mut()
        .and_then(|g| g.groups.get_mut("Application"))
        .expect("application")
        .values
        .insert(
            "ACLs".into(),
            medledger_proto::common::ConfigValue {
                version: 0,
                value: Vec::new(),
                mod_policy: "Admins".into(),
            },
        );
    let update = compute_update(CHANNEL, &after.source, &change)?;
    let e = refusal(propose(&after, &signed(&update, &[&admin2])?));
    assert!(e.contains("/Channel/Application/Admins"), "{e}");
    Ok(())
}
