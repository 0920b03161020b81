//! Private data collections of a chaincode: Fabric's `collections_config.json` definitions and the
//! implicit per-organisation collections, with the membership and access rules the simulator,
//! the dissemination service and the committer all apply the same way.

use std::collections::{BTreeMap, BTreeSet};

use medledger_common::channelconfig::ChannelConfig;
use medledger_common::msp::Identity;
use medledger_common::policy::{Policy, parse_signature_policy, principal_msp_id};
use medledger_proto::protos::{
    ApplicationPolicy, CollectionConfig, CollectionConfigPackage, CollectionPolicyConfig,
    StaticCollectionConfig, application_policy, collection_config, collection_policy_config,
};
use serde::Deserialize;

/// Prefix of the implicit collection each organisation has on every chaincode.
pub const IMPLICIT_PREFIX: &str = "_implicit_org_";

/// Errors in a collections configuration.
#[derive(Debug, thiserror::Error)]
pub enum CollectionError {
    #[error("collections config is not valid JSON: {0}")]
    Json(String),
    #[error("collection {name:?}: {reason}")]
    Invalid { name: String, reason: String },
}

/// One entry of `collections_config.json`, as Fabric's peer CLI reads it.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CollectionJson {
    pub name: String,
    pub policy: String,
    #[serde(default)]
    pub required_peer_count: i64,
    #[serde(default = "one")]
    pub max_peer_count: i64,
    #[serde(default)]
    pub block_to_live: u64,
    #[serde(default)]
    pub member_only_read: bool,
    #[serde(default)]
    pub member_only_write: bool,
    #[serde(default)]
    pub endorsement_policy: Option<EndorsementPolicyJson>,
}

fn one() -> i64 {
    1
}

/// A collection-level endorsement policy: a signature policy or a channel policy reference.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndorsementPolicyJson {
    #[serde(default)]
    pub signature_policy: Option<String>,
    #[serde(default)]
    pub channel_config_policy: Option<String>,
}

/// A resolved collection.
#[derive(Debug, Clone)]
pub struct Collection {
    pub name: String,
    /// Organisations whose peers hold the private values.
    pub member_orgs: BTreeSet<String>,
    /// The collection's `policy`: which client identities are members (for memberOnlyRead/Write).
    pub access_policy: Policy,
    pub required_peer_count: usize,
    pub max_peer_count: usize,
    /// Private values written at block `b` are purged when block `b + blockToLive + 1` commits;
    /// 0 keeps them forever.
    pub block_to_live: u64,
    pub member_only_read: bool,
    pub member_only_write: bool,
    /// Replaces the chaincode's endorsement policy for writes to this collection.
    pub endorsement_policy: Option<Policy>,
}

impl Collection {
    /// Whether peers of `mspid` hold this collection's private values.
    pub fn is_member_org(&self, mspid: &str) -> bool {
        self.member_orgs.contains(mspid)
    }

    /// Which of `peers` (by organisation) an endorsing peer of `local_msp` sends this
    /// collection's private write set to: member peers, at most maxPeerCount. None when the
    /// endorser's own organisation is not a member, since a member peer accepts private data only
    /// from members (and already endorsed it itself if its endorsement is needed).
    pub fn push_targets<'a>(
        &self,
        local_msp: &str,
        peers: impl IntoIterator<Item = &'a str>,
    ) -> Vec<usize> {
        if !self.is_member_org(local_msp) {
            return Vec::new();
        }
        peers
            .into_iter()
            .enumerate()
            .filter(|(_, msp)| self.is_member_org(msp))
            .map(|(i, _)| i)
            .take(self.max_peer_count)
            .collect()
    }

    /// Whether a client identity satisfies the collection's membership policy.
    pub fn admits(&self, client: &Identity) -> bool {
        self.access_policy
            .satisfied_by(std::slice::from_ref(client))
    }

    /// The implicit collection of one organisation.
    pub fn implicit(mspid: &str) -> Self {
        let policy = parse_signature_policy(&format!("OR('{mspid}.member')"))
            .map(Policy::Signature)
            .unwrap_or(Policy::Signature(Default::default()));
        Self {
            name: format!("{IMPLICIT_PREFIX}{mspid}"),
            member_orgs: BTreeSet::from([mspid.to_owned()]),
            access_policy: policy,
            required_peer_count: 0,
            max_peer_count: 1,
            block_to_live: 0,
            member_only_read: true,
            member_only_write: false,
            endorsement_policy: None,
        }
    }
}

/// The collections of one chaincode on one channel.
#[derive(Debug, Clone, Default)]
pub struct Collections {
    by_name: BTreeMap<String, Collection>,
}

/// A channel policy by path (`Channel/Application/Endorsement` or with a leading `/`).
pub fn channel_policy(channel: &ChannelConfig, path: &str) -> Result<Policy, String> {
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    channel
        .policy(&path)
        .cloned()
        .ok_or_else(|| format!("channel policy {path} does not exist"))
}

/// Fabric's `collections_config.json` as the `CollectionConfigPackage` a chaincode definition
/// carries (empty text: no collections).
pub fn package_from_json(json: &str) -> Result<CollectionConfigPackage, CollectionError> {
    if json.trim().is_empty() {
        return Ok(CollectionConfigPackage::default());
    }
    let entries: Vec<CollectionJson> =
        serde_json::from_str(json).map_err(|e| CollectionError::Json(e.to_string()))?;
    let mut config = Vec::new();
    for e in entries {
        let invalid = |reason: String| CollectionError::Invalid {
            name: e.name.clone(),
            reason,
        };
        let policy = parse_signature_policy(&e.policy).map_err(|err| invalid(err.to_string()))?;
        let endorsement_policy = match &e.endorsement_policy {
            None => None,
            Some(EndorsementPolicyJson {
                signature_policy: Some(p),
                channel_config_policy: None,
            }) => Some(application_policy::Type::SignaturePolicy(
                parse_signature_policy(p).map_err(|err| invalid(err.to_string()))?,
            )),
            Some(EndorsementPolicyJson {
                signature_policy: None,
                channel_config_policy: Some(path),
            }) => Some(application_policy::Type::ChannelConfigPolicyReference(
                path.clone(),
            )),
            Some(_) => {
                return Err(invalid(
                    "endorsementPolicy needs exactly one of signaturePolicy and channelConfigPolicy"
                        .into(),
                ));
            }
        };
        let count = |n: i64, what: &str| {
            i32::try_from(n).map_err(|_| invalid(format!("{what} {n} is out of range")))
        };
        config.push(CollectionConfig {
            payload: Some(collection_config::Payload::StaticCollectionConfig(
                StaticCollectionConfig {
                    name: e.name.clone(),
                    member_orgs_policy: Some(CollectionPolicyConfig {
                        payload: Some(collection_policy_config::Payload::SignaturePolicy(policy)),
                    }),
                    required_peer_count: count(e.required_peer_count, "requiredPeerCount")?,
                    maximum_peer_count: count(e.max_peer_count, "maxPeerCount")?,
                    block_to_live: e.block_to_live,
                    member_only_read: e.member_only_read,
                    member_only_write: e.member_only_write,
                    endorsement_policy: endorsement_policy
                        .map(|t| ApplicationPolicy { r#type: Some(t) }),
                },
            )),
        });
    }
    Ok(CollectionConfigPackage { config })
}

/// Names Fabric accepts for collections (and we accept for key files and store keys).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn member_orgs(policy: &medledger_proto::common::SignaturePolicyEnvelope) -> BTreeSet<String> {
    policy
        .identities
        .iter()
        .filter_map(principal_msp_id)
        .collect()
}

impl Collections {
    /// The implicit collections of the channel's application organisations, plus the explicit
    /// ones of `collections_config.json` (empty text: none).
    pub fn load(json: &str, channel: &ChannelConfig) -> Result<Self, CollectionError> {
        Self::from_package(&package_from_json(json)?, channel)
    }

    /// The implicit collections plus those of a chaincode definition's `CollectionConfigPackage`.
    pub fn from_package(
        pkg: &CollectionConfigPackage,
        channel: &ChannelConfig,
    ) -> Result<Self, CollectionError> {
        let mut by_name = BTreeMap::new();
        for org in &channel.application_orgs {
            let c = Collection::implicit(org);
            by_name.insert(c.name.clone(), c);
        }
        for config in &pkg.config {
            let Some(collection_config::Payload::StaticCollectionConfig(e)) = &config.payload
            else {
                return Err(CollectionError::Invalid {
                    name: String::new(),
                    reason: "only static collections are supported".into(),
                });
            };
            let invalid = |reason: String| CollectionError::Invalid {
                name: e.name.clone(),
                reason,
            };
            if !valid_name(&e.name) || e.name.starts_with(IMPLICIT_PREFIX) {
                return Err(invalid(
                    "names are 1-128 letters, digits, '-' or '_' and may not start with _implicit_org_"
                        .into(),
                ));
            }
            if by_name.contains_key(&e.name) {
                return Err(invalid("defined twice".into()));
            }
            if e.required_peer_count < 0 || e.maximum_peer_count < e.required_peer_count {
                return Err(invalid(format!(
                    "requiredPeerCount {} must be between 0 and maxPeerCount {}",
                    e.required_peer_count, e.maximum_peer_count
                )));
            }
            let Some(collection_policy_config::Payload::SignaturePolicy(policy)) = e
                .member_orgs_policy
                .as_ref()
                .and_then(|p| p.payload.as_ref())
            else {
                return Err(invalid("the collection has no member policy".into()));
            };
            let members = member_orgs(policy);
            if members.is_empty() {
                return Err(invalid("the policy names no organisation".into()));
            }
            if let Some(unknown) = members
                .iter()
                .find(|m| !channel.application_orgs.contains(m))
            {
                return Err(invalid(format!(
                    "{unknown} is not an application organisation of channel {}",
                    channel.channel_id
                )));
            }
            let endorsement_policy = match e
                .endorsement_policy
                .as_ref()
                .and_then(|p| p.r#type.as_ref())
            {
                None => None,
                Some(application_policy::Type::SignaturePolicy(p)) => {
                    Some(Policy::Signature(p.clone()))
                }
                Some(application_policy::Type::ChannelConfigPolicyReference(path)) => {
                    Some(channel_policy(channel, path).map_err(invalid)?)
                }
            };
            by_name.insert(
                e.name.clone(),
                Collection {
                    name: e.name.clone(),
                    member_orgs: members,
                    access_policy: Policy::Signature(policy.clone()),
                    required_peer_count: e.required_peer_count as usize,
                    max_peer_count: e.maximum_peer_count as usize,
                    block_to_live: e.block_to_live,
                    member_only_read: e.member_only_read,
                    member_only_write: e.member_only_write,
                    endorsement_policy,
                },
            );
        }
        Ok(Self { by_name })
    }

    /// Adds (or replaces) a collection.
    pub fn insert(&mut self, c: Collection) {
        self.by_name.insert(c.name.clone(), c);
    }

    /// A collection by name.
    pub fn get(&self, name: &str) -> Option<&Collection> {
        self.by_name.get(name)
    }

    /// Every collection.
    pub fn iter(&self) -> impl Iterator<Item = &Collection> {
        self.by_name.values()
    }

    /// Which endorsement policies a transaction answers to: each written collection's own
    /// policy, and the chaincode's (returned `true`) for public writes, for writes to collections
    /// without one, and when nothing is written.
    pub fn endorsement_policies<'a>(
        &self,
        writes_public: bool,
        written_collections: impl IntoIterator<Item = &'a str>,
    ) -> (bool, Vec<&Policy>) {
        let mut chaincode_policy = writes_public;
        let mut own = Vec::new();
        let mut any = false;
        for name in written_collections {
            any = true;
            match self.get(name).and_then(|c| c.endorsement_policy.as_ref()) {
                Some(p) => own.push(p),
                None => chaincode_policy = true,
            }
        }
        (chaincode_policy || (!any && !writes_public), own)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medledger_common::channelconfig::ChannelConfig;

    /// The endorsing peer of a non-member organisation sends nothing: every push would be
    /// refused ("not a member of collection"), at the cost of a signature on each side. Before,
    /// the benchmark's Hospital2 peer sent one for every medical record (Hospital1's implicit
    /// collection), and Hospital1's peer refused each.
    #[test]
    fn private_data_is_pushed_by_members_to_members_only() {
        let c = Collection {
            max_peer_count: 2,
            ..Collection::implicit("H1MSP")
        };
        let peers = ["H1MSP", "H2MSP", "H1MSP", "H1MSP"];
        assert_eq!(c.push_targets("H1MSP", peers), vec![0, 2]);
        assert_eq!(c.push_targets("H2MSP", peers), Vec::<usize>::new());
    }

    fn channel() -> ChannelConfig {
        ChannelConfig {
            channel_id: "medchannel".into(),
            sequence: 0,
            msps: Default::default(),
            application_orgs: vec!["H1MSP".into(), "H2MSP".into(), "H3MSP".into()],
            orderer_orgs: vec![],
            policies: BTreeMap::new(),
            consenters: vec![],
            batch_size: Default::default(),
            batch_timeout: std::time::Duration::from_secs(1),
            anchor_peers: BTreeMap::new(),
            source: Default::default(),
            bft: Default::default(),
            orderer_endpoints: BTreeMap::new(),
        }
    }

    #[test]
    fn fabric_collection_json_resolves_members_and_implicit_collections() {
        let json = r#"[{"name":"records","policy":"OR('H1MSP.member','H2MSP.peer')",
            "requiredPeerCount":1,"maxPeerCount":2,"blockToLive":10,
            "memberOnlyRead":true,"memberOnlyWrite":true,
            "endorsementPolicy":{"signaturePolicy":"AND('H1MSP.peer','H2MSP.peer')"}}]"#;
        let c = Collections::load(json, &channel()).unwrap();
        let r = c.get("records").unwrap();
        assert_eq!(
            r.member_orgs,
            BTreeSet::from(["H1MSP".to_owned(), "H2MSP".to_owned()])
        );
        assert_eq!((r.required_peer_count, r.max_peer_count), (1, 2));
        assert_eq!(r.block_to_live, 10);
        assert!(r.member_only_read && r.member_only_write);
        assert!(r.endorsement_policy.is_some());
        let implicit = c.get("_implicit_org_H3MSP").unwrap();
        assert!(implicit.is_member_org("H3MSP") && !implicit.is_member_org("H1MSP"));
        assert_eq!(c.iter().count(), 4);
    }

    #[test]
    fn bad_collection_configs_are_refused_with_the_reason() {
        let cases = [
            ("not json", "not valid JSON"),
            (
                r#"[{"name":"a","policy":"OR('H1MSP.member')","bogus":1}]"#,
                "unknown field",
            ),
            (
                r#"[{"name":"a b","policy":"OR('H1MSP.member')"}]"#,
                "names are",
            ),
            (
                r#"[{"name":"_implicit_org_X","policy":"OR('H1MSP.member')"}]"#,
                "names are",
            ),
            (
                r#"[{"name":"a","policy":"OR('H1MSP.member')"},{"name":"a","policy":"OR('H1MSP.member')"}]"#,
                "defined twice",
            ),
            (
                r#"[{"name":"a","policy":"OR('H1MSP.member')","requiredPeerCount":3,"maxPeerCount":2}]"#,
                "requiredPeerCount",
            ),
            (
                r#"[{"name":"a","policy":"OR('Nobody.member')"}]"#,
                "not an application organisation",
            ),
            (r#"[{"name":"a","policy":"OR(("}]"#, "collection \"a\""),
            (
                r#"[{"name":"a","policy":"OR('H1MSP.member')","endorsementPolicy":{"channelConfigPolicy":"Channel/Nope"}}]"#,
                "does not exist",
            ),
        ];
        for (json, want) in cases {
            let e = Collections::load(json, &channel()).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
    }
}
