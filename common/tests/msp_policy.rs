//! MSP validation (chains, validity, CRLs, Node OUs, attributes) and policy evaluation, with
//! organisations whose certificates are made in the test by the issuing code the CA uses.

use std::collections::BTreeMap;
use std::path::Path;

use medledger_common::issue::{CaSigner, IssueRequest, Usage, random_serial};
use medledger_common::msp::{
    Expiry, Msp, MspError, MspFolderContents, MspManager, NodeRole, load_msp_folder, unix_now,
    write_msp_folder,
};
use medledger_common::policy::{Policy, SignedData, parse_signature_policy};
use medledger_common::{PrivateKey, SigningIdentity};
use medledger_proto::common::implicit_meta_policy::Rule;

struct Org {
    mspid: String,
    ca: CaSigner,
    revoked: Vec<(Vec<u8>, i64)>,
}

impl Org {
    fn new(mspid: &str) -> Self {
        Self {
            mspid: mspid.into(),
            ca: CaSigner::new_root(&format!("ca.{mspid}"), mspid, 10).unwrap(),
            revoked: vec![],
        }
    }

    fn issue(
        &self,
        cn: &str,
        ou: &str,
        attrs: &[(&str, &str)],
        window: (i64, i64),
    ) -> (SigningIdentity, Vec<u8>) {
        let key = PrivateKey::generate();
        let serial = random_serial();
        let pem = self
            .ca
            .issue(&IssueRequest {
                public_key: key.public_key(),
                common_name: cn.into(),
                organization: Some(self.mspid.clone()),
                organizational_units: vec![ou.into(), "hospital.cardiology".into()],
                hosts: vec!["localhost".into()],
                attributes: attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
                serial: serial.clone(),
                not_before: window.0,
                not_after: window.1,
                usage: Usage::Signing,
            })
            .unwrap();
        (
            SigningIdentity::new(&self.mspid, pem.into_bytes(), key).unwrap(),
            serial,
        )
    }

    fn member(&self, cn: &str, ou: &str) -> SigningIdentity {
        let now = unix_now();
        self.issue(cn, ou, &[], (now - 60, now + 3600)).0
    }

    fn revoke(&mut self, serial: Vec<u8>) {
        self.revoked.push((serial, unix_now() - 10));
    }

    /// Writes the MSP folder and reads it back, as nodes do.
    fn msp(&self, dir: &Path) -> Msp {
        let crl = if self.revoked.is_empty() {
            vec![]
        } else {
            vec![self.ca.crl(&self.revoked, 1, 3600).unwrap()]
        };
        let folder = dir.join(&self.mspid);
        let _ = std::fs::remove_dir_all(&folder);
        write_msp_folder(
            &folder,
            &MspFolderContents {
                signcert_pem: self
                    .member("admin", "admin")
                    .cert_pem()
                    .iter()
                    .map(|&b| b as char)
                    .collect(),
                key_pem: None,
                cacert_pem: self.ca.cert_pem().into(),
                crl_pems: crl,
                node_ous: true,
                ..Default::default()
            },
        )
        .unwrap();
        Msp::new(&load_msp_folder(&folder, &self.mspid).unwrap()).unwrap()
    }
}

fn manager(dir: &Path, orgs: &[&Org]) -> MspManager {
    MspManager::new(orgs.iter().map(|o| o.msp(dir)))
}

#[test]
fn classifies_members_by_node_ou_and_reads_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let h1 = Org::new("Hospital1MSP");
    let msps = manager(dir.path(), &[&h1]);
    for (ou, role) in [
        ("client", NodeRole::Client),
        ("peer", NodeRole::Peer),
        ("admin", NodeRole::Admin),
        ("orderer", NodeRole::Orderer),
    ] {
        let id = h1.member(&format!("{ou}1"), ou);
        let got = msps.deserialize(id.serialized(), Expiry::now()).unwrap();
        assert_eq!(got.role, role);
        assert_eq!(got.mspid, "Hospital1MSP");
    }
    let now = unix_now();
    let (doctor, _) = h1.issue(
        "doctor1",
        "client",
        &[("role", "doctor"), ("hf.EnrollmentID", "doctor1")],
        (now - 60, now + 3600),
    );
    let got = msps
        .deserialize(doctor.serialized(), Expiry::now())
        .unwrap();
    assert_eq!(got.attribute("role"), Some("doctor"));
    assert_eq!(got.attribute("patientId"), None);

    let nobody = h1.member("x", "janitor");
    assert!(matches!(
        msps.deserialize(nobody.serialized(), Expiry::now()),
        Err(MspError::NodeOu(_))
    ));
}

#[test]
fn rejects_foreign_expired_revoked_and_garbage_identities() {
    let dir = tempfile::tempdir().unwrap();
    let mut h1 = Org::new("Hospital1MSP");
    let now = unix_now();
    let (revoked, serial) = h1.issue("gone", "client", &[], (now - 60, now + 3600));
    let (expired, _) = h1.issue("old", "client", &[], (now - 7200, now - 3600));
    h1.revoke(serial);
    let msps = manager(dir.path(), &[&h1]);

    // Another CA signing a certificate for the same MSP id.
    let impostor_org = Org::new("Hospital1MSP");
    let impostor = impostor_org.member("impostor", "client");
    assert_eq!(
        msps.deserialize(impostor.serialized(), Expiry::now())
            .unwrap_err(),
        MspError::UnknownIssuer("Hospital1MSP".into())
    );
    assert!(matches!(
        msps.deserialize(revoked.serialized(), Expiry::now()),
        Err(MspError::Revoked { .. })
    ));
    assert!(matches!(
        msps.deserialize(expired.serialized(), Expiry::now()),
        Err(MspError::Expired { .. })
    ));
    // Commit-time validation ignores the clock, so the expired identity is still a member.
    assert!(
        msps.deserialize(expired.serialized(), Expiry::Ignore)
            .is_ok()
    );

    let unknown = Org::new("Hospital9MSP").member("x", "client");
    assert_eq!(
        msps.deserialize(unknown.serialized(), Expiry::now())
            .unwrap_err(),
        MspError::UnknownMsp("Hospital9MSP".into())
    );
    for garbage in [&b""[..], b"\xff\xff", b"\x0a\x0cHospital1MSP\x12\x03abc"] {
        assert!(msps.deserialize(garbage, Expiry::now()).is_err());
    }
    // A CA certificate is not an identity.
    let ca_as_id = medledger_proto::msp::SerializedIdentity {
        mspid: "Hospital1MSP".into(),
        id_bytes: h1.ca.cert_pem().as_bytes().to_vec(),
    };
    assert_eq!(
        msps.deserialize(&prost::Message::encode_to_vec(&ca_as_id), Expiry::now())
            .unwrap_err(),
        MspError::CaAsIdentity
    );
}

#[test]
fn intermediate_cas_chain_to_the_root() {
    let root = CaSigner::new_root("root", "Hospital2MSP", 10).unwrap();
    let inter = CaSigner::new_intermediate(&root, "ica", "Hospital2MSP", 5).unwrap();
    let key = PrivateKey::generate();
    let now = unix_now();
    let pem = inter
        .issue(&IssueRequest {
            public_key: key.public_key(),
            common_name: "peer0".into(),
            organization: None,
            organizational_units: vec!["peer".into()],
            hosts: vec![],
            attributes: BTreeMap::new(),
            serial: random_serial(),
            not_before: now - 60,
            not_after: now + 600,
            usage: Usage::Signing,
        })
        .unwrap();
    let id = SigningIdentity::new("Hospital2MSP", pem.into_bytes(), key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_msp_folder(
        dir.path(),
        &MspFolderContents {
            signcert_pem: String::from_utf8(id.cert_pem().to_vec()).unwrap(),
            key_pem: Some(id.private_key().to_pkcs8_pem().unwrap()),
            cacert_pem: root.cert_pem().into(),
            intermediate_pem: Some(inter.cert_pem().into()),
            node_ous: true,
            ..Default::default()
        },
    )
    .unwrap();
    let msps =
        MspManager::new([Msp::new(&load_msp_folder(dir.path(), "Hospital2MSP").unwrap()).unwrap()]);
    let got = msps.deserialize(id.serialized(), Expiry::now()).unwrap();
    assert_eq!(got.role, NodeRole::Peer);
    // The signing identity loads back from the folder with its key.
    let loaded = SigningIdentity::load(dir.path(), "Hospital2MSP").unwrap();
    assert_eq!(loaded.serialized(), id.serialized());
}

fn sign<'a>(id: &'a SigningIdentity, data: &'a [u8], sig: &'a mut Vec<u8>) -> SignedData<'a> {
    *sig = id.sign(data).unwrap();
    SignedData {
        data,
        identity: id.serialized(),
        signature: sig,
    }
}

#[test]
fn signature_policies_count_valid_distinct_signers_by_role() {
    let dir = tempfile::tempdir().unwrap();
    let h1 = Org::new("Hospital1MSP");
    let h2 = Org::new("Hospital2MSP");
    let mut h3 = Org::new("Hospital3MSP");
    let now = unix_now();
    let (h3_revoked_admin, serial) = h3.issue("admin-gone", "admin", &[], (now - 60, now + 3600));
    h3.revoke(serial);
    let msps = manager(dir.path(), &[&h1, &h2, &h3]);

    let h1_peer = h1.member("peer0", "peer");
    let h1_client = h1.member("app", "client");
    let h2_peer = h2.member("peer0", "peer");
    let h3_admin = h3.member("admin", "admin");
    let h3_client = h3.member("client", "client");
    let outsider = Org::new("Hospital1MSP").member("peer0", "peer");

    let data = b"proposal response payload";
    let eval = |policy: &str, signers: &[&SigningIdentity]| -> bool {
        let env = parse_signature_policy(policy).unwrap();
        let sigs: Vec<Vec<u8>> = signers.iter().map(|s| s.sign(data).unwrap()).collect();
        let signed: Vec<SignedData> = signers
            .iter()
            .zip(&sigs)
            .map(|(s, sig)| SignedData {
                data,
                identity: s.serialized(),
                signature: sig,
            })
            .collect();
        Policy::Signature(env)
            .evaluate(&signed, &msps, Expiry::now())
            .is_ok()
    };

    let nested = "AND('Hospital1MSP.peer', OR('Hospital2MSP.member', 'Hospital3MSP.admin'))";
    assert!(eval(nested, &[&h1_peer, &h2_peer]));
    assert!(eval(nested, &[&h1_peer, &h3_admin]));
    assert!(
        !eval(nested, &[&h1_peer, &h3_client]),
        "client is not admin"
    );
    assert!(!eval(nested, &[&h1_client, &h2_peer]), "client is not peer");
    assert!(!eval(nested, &[&h1_peer]));
    assert!(!eval(nested, &[&outsider, &h2_peer]), "foreign CA ignored");
    assert!(
        !eval(nested, &[&h1_peer, &h3_revoked_admin]),
        "revoked ignored"
    );

    assert!(eval(
        "OR('Hospital1MSP.member', 'Hospital2MSP.member')",
        &[&h2_peer]
    ));
    assert!(eval(
        "OutOf(2, 'Hospital1MSP.member', 'Hospital2MSP.member', 'Hospital3MSP.member')",
        &[&h1_client, &h3_client]
    ));
    assert!(!eval(
        "OutOf(2, 'Hospital1MSP.member', 'Hospital2MSP.member', 'Hospital3MSP.member')",
        &[&h3_client]
    ));
    // The same signer twice counts once.
    assert!(!eval(
        "AND('Hospital1MSP.member', 'Hospital1MSP.member')",
        &[&h1_peer, &h1_peer]
    ));
    assert!(eval(
        "AND('Hospital1MSP.member', 'Hospital1MSP.member')",
        &[&h1_peer, &h1_client]
    ));

    // A valid identity with a signature over other bytes is ignored.
    let sig = h2_peer.sign(b"something else").unwrap();
    let forged = SignedData {
        data,
        identity: h2_peer.serialized(),
        signature: &sig,
    };
    let mut s1 = Vec::new();
    let good = sign(&h1_peer, data, &mut s1);
    let env = parse_signature_policy("AND('Hospital1MSP.peer', 'Hospital2MSP.peer')").unwrap();
    assert!(
        Policy::Signature(env)
            .evaluate(&[good, forged], &msps, Expiry::now())
            .is_err()
    );
}

#[test]
fn implicit_meta_policies_count_organisations() {
    let dir = tempfile::tempdir().unwrap();
    let orgs: Vec<Org> = (1..=3)
        .map(|i| Org::new(&format!("Hospital{i}MSP")))
        .collect();
    let msps = manager(dir.path(), &orgs.iter().collect::<Vec<_>>());
    let subs: Vec<Policy> = orgs
        .iter()
        .map(|o| {
            Policy::Signature(parse_signature_policy(&format!("'{}.admin'", o.mspid)).unwrap())
        })
        .collect();
    let admins: Vec<SigningIdentity> = orgs.iter().map(|o| o.member("admin", "admin")).collect();
    let data = b"config update";
    let check = |rule: Rule, n: usize| -> bool {
        let sigs: Vec<Vec<u8>> = admins[..n].iter().map(|a| a.sign(data).unwrap()).collect();
        let signed: Vec<SignedData> = admins[..n]
            .iter()
            .zip(&sigs)
            .map(|(a, s)| SignedData {
                data,
                identity: a.serialized(),
                signature: s,
            })
            .collect();
        Policy::ImplicitMeta {
            rule,
            sub_policies: subs.clone(),
        }
        .evaluate(&signed, &msps, Expiry::now())
        .is_ok()
    };
    assert!(check(Rule::Any, 1));
    assert!(!check(Rule::Any, 0));
    assert!(check(Rule::Majority, 2));
    assert!(!check(Rule::Majority, 1));
    assert!(check(Rule::All, 3));
    assert!(!check(Rule::All, 2));
}

/// Deserialization is cached by the identity's bytes as they arrived: the same certificate in
/// DER instead of PEM is refused whether or not its PEM form was validated before, so a warm
/// cache never makes one peer accept what a peer that just started refuses.
#[test]
fn the_identity_cache_judges_bytes_as_they_arrived() {
    let dir = tempfile::tempdir().unwrap();
    let h1 = Org::new("Hospital1MSP");
    let member = h1.member("nurse", "client");
    let der = ::pem::parse(member.cert_pem()).unwrap().into_contents();
    let as_der = prost::Message::encode_to_vec(&medledger_proto::msp::SerializedIdentity {
        mspid: "Hospital1MSP".into(),
        id_bytes: der,
    });
    let cold = manager(dir.path(), &[&h1]);
    assert!(cold.deserialize(&as_der, Expiry::now()).is_err());
    let warm = manager(dir.path(), &[&h1]);
    for _ in 0..2 {
        let id = warm
            .deserialize(member.serialized(), Expiry::now())
            .unwrap();
        assert_eq!(id.serialized, member.serialized());
    }
    assert!(warm.deserialize(&as_der, Expiry::now()).is_err());
}
