//! Channel configuration updates, checked as Fabric's configtx validator checks them: a
//! `ConfigUpdate`'s read set must match the current versions, each changed element must move to
//! exactly the next version and satisfy its current `mod_policy` with the update's signatures, and
//! the result must be a configuration the channel can run on.

use std::collections::{BTreeMap, BTreeSet};

use medledger_proto::common::{
    Config, ConfigEnvelope, ConfigGroup, ConfigPolicy, ConfigUpdate, ConfigUpdateEnvelope,
    ConfigValue, Envelope, HeaderType, SignatureHeader,
};
use prost::Message;

use crate::channelconfig::{ChannelConfig, ConfigError};
use crate::msp::Expiry;
use crate::protoutil;

/// Why a configuration update or configuration transaction was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigTxError {
    /// The bytes do not decode into what they claim to be.
    #[error("malformed configuration update: {0}")]
    Malformed(String),
    /// The update is well formed but may not be applied.
    #[error("configuration update refused: {0}")]
    Refused(String),
    /// The configuration the update would produce is not one the channel can run on.
    #[error("the updated configuration is invalid: {0}")]
    InvalidResult(#[from] ConfigError),
}

fn malformed(what: &str, e: impl std::fmt::Display) -> ConfigTxError {
    ConfigTxError::Malformed(format!("{what}: {e}"))
}

fn refused(why: String) -> ConfigTxError {
    ConfigTxError::Refused(why)
}

/// The longest name a configuration element may have (Fabric's limit).
const MAX_CONFIG_ID_LEN: usize = 249;

/// Fabric's rule for a configuration key: 1-249 of `[a-zA-Z0-9.-_]`, and not `.` or `..`.
fn check_config_id(id: &str) -> Result<(), ConfigTxError> {
    if id.is_empty() || id.len() > MAX_CONFIG_ID_LEN || id == "." || id == ".." {
        return Err(refused(format!("illegal configuration key {id:?}")));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
    {
        return Err(refused(format!(
            "illegal character in configuration key {id:?}"
        )));
    }
    Ok(())
}

/// One element of a configuration tree.
#[derive(Debug, Clone, Copy)]
enum Item<'a> {
    Group(&'a ConfigGroup),
    Value(&'a ConfigValue),
    Policy(&'a ConfigPolicy),
}

/// An element with where it sits: `path` is its parent group's path from the root (`Channel`).
#[derive(Debug, Clone)]
struct Element<'a> {
    path: Vec<&'a str>,
    key: &'a str,
    item: Item<'a>,
}

impl Element<'_> {
    fn version(&self) -> u64 {
        match self.item {
            Item::Group(g) => g.version,
            Item::Value(v) => v.version,
            Item::Policy(p) => p.version,
        }
    }

    fn mod_policy(&self) -> &str {
        match self.item {
            Item::Group(g) => &g.mod_policy,
            Item::Value(v) => &v.mod_policy,
            Item::Policy(p) => &p.mod_policy,
        }
    }

    /// The full path of the policy that governs changes to this element: an absolute
    /// `mod_policy` as written, a relative one from the element's own group (a group) or the
    /// group holding it (a value or a policy).
    fn mod_policy_path(&self) -> String {
        let m = self.mod_policy();
        if m.starts_with('/') {
            return m.to_owned();
        }
        let mut parts: Vec<&str> = self.path.clone();
        if matches!(self.item, Item::Group(_)) {
            parts.push(self.key);
        }
        format!("/{}/{m}", parts.join("/"))
    }
}

type ConfigMap<'a> = BTreeMap<String, Element<'a>>;

const GROUP: &str = "[Group]  ";
const VALUE: &str = "[Value]  ";
const POLICY: &str = "[Policy] ";

fn full_key(prefix: &str, path: &[&str], key: &str) -> String {
    if path.is_empty() {
        format!("{prefix}/{key}")
    } else {
        format!("{prefix}/{}/{key}", path.join("/"))
    }
}

/// Flattens a configuration tree rooted at `root_key` into elements by full key, as Fabric's
/// `mapConfig` does (so the keys read the same in error messages).
fn map_config<'a>(
    root: &'a ConfigGroup,
    root_key: &'a str,
) -> Result<ConfigMap<'a>, ConfigTxError> {
    let mut out = BTreeMap::new();
    recurse(&mut out, Vec::new(), root_key, root)?;
    Ok(out)
}

/// How deep a configuration tree may nest (Fabric's is 4 deep: Channel / Application / Org /
/// values); deeper trees are refused before they are flattened.
pub const MAX_CONFIG_DEPTH: usize = 8;
/// How many elements a configuration (or an update's read or write set) may hold.
pub const MAX_CONFIG_ELEMENTS: usize = 20_000;

fn recurse<'a>(
    out: &mut ConfigMap<'a>,
    parent: Vec<&'a str>,
    key: &'a str,
    group: &'a ConfigGroup,
) -> Result<(), ConfigTxError> {
    check_config_id(key)?;
    if parent.len() >= MAX_CONFIG_DEPTH {
        return Err(refused(format!(
            "the configuration nests deeper than {MAX_CONFIG_DEPTH} groups"
        )));
    }
    let members = group.groups.len() + group.values.len() + group.policies.len();
    if out.len().saturating_add(members) >= MAX_CONFIG_ELEMENTS {
        return Err(refused(format!(
            "the configuration has more than {MAX_CONFIG_ELEMENTS} elements"
        )));
    }
    out.insert(
        full_key(GROUP, &parent, key),
        Element {
            path: parent.clone(),
            key,
            item: Item::Group(group),
        },
    );
    let mut here = parent;
    here.push(key);
    for (k, g) in &group.groups {
        recurse(out, here.clone(), k, g)?;
    }
    for (k, v) in &group.values {
        check_config_id(k)?;
        out.insert(
            full_key(VALUE, &here, k),
            Element {
                path: here.clone(),
                key: k,
                item: Item::Value(v),
            },
        );
    }
    for (k, p) in &group.policies {
        check_config_id(k)?;
        out.insert(
            full_key(POLICY, &here, k),
            Element {
                path: here.clone(),
                key: k,
                item: Item::Policy(p),
            },
        );
    }
    Ok(())
}

/// Rebuilds the tree from a flattened map: each group keeps the children its own element names,
/// each child taken from the map (Fabric's `configMapToConfig`).
fn rebuild(path: &str, map: &ConfigMap<'_>) -> Result<ConfigGroup, ConfigTxError> {
    let key = format!("{GROUP}{path}");
    let Some(Element {
        item: Item::Group(group),
        ..
    }) = map.get(&key)
    else {
        return Err(refused(format!("missing group at {key}")));
    };
    let mut out = ConfigGroup {
        version: group.version,
        mod_policy: group.mod_policy.clone(),
        ..Default::default()
    };
    for name in group.groups.keys() {
        out.groups
            .insert(name.clone(), rebuild(&format!("{path}/{name}"), map)?);
    }
    for name in group.values.keys() {
        let k = format!("{VALUE}{path}/{name}");
        match map.get(&k).map(|e| e.item) {
            Some(Item::Value(v)) => {
                out.values.insert(name.clone(), v.clone());
            }
            _ => return Err(refused(format!("missing value at {k}"))),
        }
    }
    for name in group.policies.keys() {
        let k = format!("{POLICY}{path}/{name}");
        match map.get(&k).map(|e| e.item) {
            Some(Item::Policy(p)) => {
                out.policies.insert(name.clone(), p.clone());
            }
            _ => return Err(refused(format!("missing policy at {k}"))),
        }
    }
    Ok(out)
}

/// The root group's key in every channel configuration.
const ROOT: &str = "Channel";

/// A `CONFIG_UPDATE` envelope's contents.
pub struct DecodedUpdate {
    pub update: ConfigUpdate,
    pub envelope: ConfigUpdateEnvelope,
    /// The submitter's signature header (the envelope's own signer).
    pub submitter: SignatureHeader,
}

/// Decodes a `CONFIG_UPDATE` envelope (HeaderType 2) into its `ConfigUpdateEnvelope` and
/// `ConfigUpdate`.
pub fn decode_update(env: &Envelope) -> Result<DecodedUpdate, ConfigTxError> {
    let u = protoutil::unpack_envelope(env).map_err(|e| malformed("envelope", e))?;
    if u.channel_header.r#type != HeaderType::ConfigUpdate as i32 {
        return Err(refused(format!(
            "header type {} is not CONFIG_UPDATE",
            u.channel_header.r#type
        )));
    }
    let envelope = ConfigUpdateEnvelope::decode(u.payload.data.as_slice())
        .map_err(|e| malformed("ConfigUpdateEnvelope", e))?;
    let update = ConfigUpdate::decode(envelope.config_update.as_slice())
        .map_err(|e| malformed("ConfigUpdate", e))?;
    if update.channel_id != u.channel_header.channel_id {
        return Err(refused(format!(
            "ConfigUpdate for channel {:?} in an envelope for channel {:?}",
            update.channel_id, u.channel_header.channel_id
        )));
    }
    Ok(DecodedUpdate {
        update,
        envelope,
        submitter: u.signature_header,
    })
}

/// Distinct signers an update may carry: more than any channel has admins to collect. Beyond it
/// the update is refused before any signature is checked.
pub const MAX_CONFIG_SIGNERS: usize = 64;

/// The update's distinct valid signers under the MSPs in force. Each signature is over
/// `signature_header ‖ config_update`; a creator is checked once, however often it appears
/// (repeated bad signatures cost nothing more), and the signed bytes are built one signature at a
/// time (an update with many signatures must not multiply its size in memory).
fn update_signers(
    env: &ConfigUpdateEnvelope,
    current: &ChannelConfig,
    expiry: Expiry,
) -> Result<Vec<crate::msp::Identity>, ConfigTxError> {
    let mut tried: Vec<Vec<u8>> = Vec::new();
    let mut signers = Vec::new();
    for s in &env.signatures {
        let h = SignatureHeader::decode(s.signature_header.as_slice())
            .map_err(|e| malformed("ConfigSignature header", e))?;
        if tried.contains(&h.creator) {
            continue;
        }
        if tried.len() >= MAX_CONFIG_SIGNERS {
            return Err(refused(format!(
                "the update carries more than {MAX_CONFIG_SIGNERS} distinct signers"
            )));
        }
        tried.push(h.creator.clone());
        let Ok(id) = current.msps.deserialize(&h.creator, expiry) else {
            continue;
        };
        let data = [s.signature_header.as_slice(), &env.config_update].concat();
        if id.verify(&data, &s.signature).is_ok() {
            signers.push(id);
        }
    }
    Ok(signers)
}

/// Checks a configuration update against the configuration in force and computes the
/// configuration it leads to (sequence + 1), as Fabric's `ProposeConfigUpdate` does. Signers'
/// certificates are checked for expiry as `expiry` says: against the clock when the update is
/// submitted, never when a block carrying it is validated (every node, whenever it validates,
/// must reach the same verdict).
pub fn propose_update(
    current: &ChannelConfig,
    update_envelope: &Envelope,
    expiry: Expiry,
) -> Result<ConfigEnvelope, ConfigTxError> {
    let decoded = decode_update(update_envelope)?;
    let channel_group = authorize(current, &decoded, expiry)?;
    let config = Config {
        sequence: current.sequence.saturating_add(1),
        channel_group: Some(channel_group),
    };
    // The result must be a configuration the channel can run on before anyone applies it.
    check_runnable(current, &config)?;
    Ok(ConfigEnvelope {
        config: Some(config),
        last_update: Some(update_envelope.clone()),
    })
}

fn authorize(
    current: &ChannelConfig,
    d: &DecodedUpdate,
    expiry: Expiry,
) -> Result<ConfigGroup, ConfigTxError> {
    if d.update.channel_id != current.channel_id {
        return Err(refused(format!(
            "ConfigUpdate for channel {:?} but this is channel {:?}",
            d.update.channel_id, current.channel_id
        )));
    }
    let root = current
        .source
        .channel_group
        .as_ref()
        .ok_or_else(|| refused("the current configuration has no channel group".into()))?;
    let existing = map_config(root, ROOT)?;
    let empty = ConfigGroup::default();
    let read_set = map_config(d.update.read_set.as_ref().unwrap_or(&empty), ROOT)?;
    let write_set = map_config(d.update.write_set.as_ref().unwrap_or(&empty), ROOT)?;
    for (key, value) in &read_set {
        let Some(e) = existing.get(key) else {
            return Err(refused(format!(
                "existing config does not contain element for {key} but was in the read set"
            )));
        };
        if e.version() != value.version() {
            return Err(refused(format!(
                "proposed update requires that key {key} be at version {}, but it is currently at version {}",
                value.version(),
                e.version()
            )));
        }
    }
    let delta: ConfigMap<'_> = write_set
        .iter()
        .filter(|(k, v)| read_set.get(*k).is_none_or(|r| r.version() != v.version()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if delta.is_empty() {
        return Err(refused(
            "delta set was empty: the update would have no effect".into(),
        ));
    }
    // Each distinct signer is verified once, against the MSPs in force, whatever the number of
    // elements the update changes.
    let signers = update_signers(&d.envelope, current, expiry)?;
    let signature_count = d.envelope.signatures.len();
    for (key, value) in &delta {
        let m = value.mod_policy();
        let trimmed = m.strip_prefix('/').unwrap_or(m);
        if m.is_empty() || trimmed.split('/').any(|p| check_config_id(p).is_err()) {
            return Err(refused(format!(
                "invalid mod_policy {m:?} for element {key}"
            )));
        }
        let Some(e) = existing.get(key) else {
            if value.version() != 0 {
                return Err(refused(format!(
                    "attempted to set key {key} to version {}, but key does not exist",
                    value.version()
                )));
            }
            continue;
        };
        if Some(value.version()) != e.version().checked_add(1) {
            return Err(refused(format!(
                "attempt to set key {key} to version {}, but key is at version {}",
                value.version(),
                e.version()
            )));
        }
        let path = e.mod_policy_path();
        let policy = current
            .policy(&path)
            .ok_or_else(|| refused(format!("unexpected missing policy {path} for item {key}")))?;
        if !policy.satisfied_by(&signers) {
            return Err(refused(format!(
                "policy {path} for {key} not satisfied: {} valid distinct signer(s) of {} signature(s)",
                signers.len(),
                signature_count
            )));
        }
    }
    let mut merged = existing;
    merged.extend(delta);
    for key in write_set.keys() {
        if !merged.contains_key(key) {
            return Err(refused(format!(
                "write set contained key {key} which did not appear in the proposed config"
            )));
        }
    }
    let rebuilt = rebuild(&format!("/{ROOT}"), &merged)?;
    if &rebuilt == root {
        // A write set element no changed group lists is dropped on rebuild: without this, an
        // unsigned update could make a configuration block that changes nothing.
        return Err(refused(
            "the update would not change the configuration".into(),
        ));
    }
    Ok(rebuilt)
}

/// Checks that a configuration resolves (MSPs, policies, orderer settings) and that its
/// consensus settings can run a BFT ordering service reached from `current`.
fn check_runnable(
    current: &ChannelConfig,
    config: &Config,
) -> Result<ChannelConfig, ConfigTxError> {
    let next = ChannelConfig::from_config(&current.channel_id, config)?;
    check_consenter_change(current, &next)?;
    // Every consenter must stay a valid identity: a configuration that revokes one (a CRL, a new
    // root) without replacing it would leave the orderers unable to check its signatures.
    for c in &next.consenters {
        let serialized = medledger_proto::msp::SerializedIdentity {
            mspid: c.msp_id.clone(),
            id_bytes: c.identity.clone(),
        }
        .encode_to_vec();
        next.msps
            .deserialize(&serialized, Expiry::Ignore)
            .map_err(|e| {
                refused(format!(
                    "consenter {} would no longer be a valid identity: {e}",
                    c.id
                ))
            })?;
    }
    if next.consenters.is_empty() {
        return Err(refused("the configuration names no consenters".into()));
    }
    let mut ids: Vec<u32> = next.consenters.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != next.consenters.len() {
        return Err(refused("two consenters share an id".into()));
    }
    for c in &next.consenters {
        if c.host.is_empty() || c.port == 0 || c.port > u32::from(u16::MAX) {
            return Err(refused(format!(
                "consenter {} has no usable endpoint ({}:{})",
                c.id, c.host, c.port
            )));
        }
        if !next.orderer_orgs.contains(&c.msp_id) {
            return Err(refused(format!(
                "consenter {} belongs to {}, which is not an orderer organisation",
                c.id, c.msp_id
            )));
        }
    }
    let b = &next.batch_size;
    if b.max_message_count == 0 || b.absolute_max_bytes == 0 || b.preferred_max_bytes == 0 {
        return Err(refused("batch size limits must not be zero".into()));
    }
    if next.batch_timeout.is_zero() {
        return Err(refused("the batch timeout must not be zero".into()));
    }
    Ok(next)
}

/// Refuses an update that adds, removes or changes (identity, TLS certificates, endpoint) more
/// than one consenter. Consenters join and leave one at a time, as Fabric's operators are told
/// to: every step leaves the old consenters a majority of the new set, and an operator who
/// misconfigured the newcomer has lost at most one consenter's worth of fault tolerance.
fn check_consenter_change(
    current: &ChannelConfig,
    next: &ChannelConfig,
) -> Result<(), ConfigTxError> {
    let ids: BTreeSet<u32> = current
        .consenters
        .iter()
        .chain(&next.consenters)
        .map(|c| c.id)
        .collect();
    let changed: Vec<String> = ids
        .into_iter()
        .filter(|id| current.consenter(*id) != next.consenter(*id))
        .map(|id| id.to_string())
        .collect();
    if changed.len() > 1 {
        return Err(refused(format!(
            "the update changes {} consenters ({}): add, remove or change one consenter per \
             update, and wait for its block before the next",
            changed.len(),
            changed.join(", ")
        )));
    }
    Ok(())
}

/// Checks a CONFIG transaction's `ConfigEnvelope` against the configuration in force, as every
/// orderer and peer does before a configuration block takes effect (Fabric's `Validate`): the
/// sequence is the next one, and replaying its last update yields exactly its configuration.
/// The clock is not consulted.
/// Returns the configuration it puts in force.
pub fn check_config_envelope(
    current: &ChannelConfig,
    envelope: &ConfigEnvelope,
) -> Result<ChannelConfig, ConfigTxError> {
    let config = envelope
        .config
        .as_ref()
        .ok_or_else(|| refused("config envelope has no config".into()))?;
    if Some(config.sequence) != current.sequence.checked_add(1) {
        return Err(refused(format!(
            "config currently at sequence {}, cannot apply config at sequence {}",
            current.sequence, config.sequence
        )));
    }
    let last_update = envelope
        .last_update
        .as_ref()
        .ok_or_else(|| refused("config envelope has no last update".into()))?;
    let proposed = propose_update(current, last_update, Expiry::Ignore)?;
    if proposed.config.as_ref() != Some(config) {
        return Err(refused(
            "the configuration does not match what its last update produces".into(),
        ));
    }
    check_runnable(current, config)
}

/// The configuration envelope a CONFIG transaction envelope carries.
pub fn config_envelope_of(env: &Envelope) -> Result<ConfigEnvelope, ConfigTxError> {
    let u = protoutil::unpack_envelope(env).map_err(|e| malformed("envelope", e))?;
    if u.channel_header.r#type != HeaderType::Config as i32 {
        return Err(refused(format!(
            "header type {} is not CONFIG",
            u.channel_header.r#type
        )));
    }
    ConfigEnvelope::decode(u.payload.data.as_slice()).map_err(|e| malformed("ConfigEnvelope", e))
}

/// Computes the `ConfigUpdate` that turns `original` into `updated` (what Fabric's
/// `configtxlator compute_update` does): unchanged elements are named in both sets at their
/// versions, changed ones are written at the next version, new ones at version 0, and a group
/// whose members or mod_policy change moves to its next version.
pub fn compute_update(
    channel_id: &str,
    original: &Config,
    updated: &Config,
) -> Result<ConfigUpdate, ConfigTxError> {
    let (Some(o), Some(u)) = (&original.channel_group, &updated.channel_group) else {
        return Err(refused("both configurations need a channel group".into()));
    };
    let (read_set, write_set, changed) = group_update(o, u);
    if !changed {
        return Err(refused(
            "no differences detected between original and updated config".into(),
        ));
    }
    Ok(ConfigUpdate {
        channel_id: channel_id.to_owned(),
        read_set: Some(read_set),
        write_set: Some(write_set),
        ..Default::default()
    })
}

/// The read set, write set and "changed" flag for one map of a group's members: `same` holds a
/// version-only stand-in of each unchanged member.
struct MapUpdate<T> {
    write: std::collections::HashMap<String, T>,
    same: std::collections::HashMap<String, T>,
    read: std::collections::HashMap<String, T>,
    members_changed: bool,
}

fn map_update<T: Clone>(
    original: &std::collections::HashMap<String, T>,
    updated: &std::collections::HashMap<String, T>,
    same_as: impl Fn(&T, &T) -> bool,
    version_only: impl Fn(&T) -> T,
    next: impl Fn(Option<&T>, &T) -> T,
) -> MapUpdate<T> {
    let mut m = MapUpdate {
        write: Default::default(),
        same: Default::default(),
        read: Default::default(),
        members_changed: false,
    };
    for (name, o) in original {
        match updated.get(name) {
            None => m.members_changed = true,
            Some(u) if same_as(o, u) => {
                m.same.insert(name.clone(), version_only(o));
            }
            Some(u) => {
                m.write.insert(name.clone(), next(Some(o), u));
            }
        }
    }
    for (name, u) in updated {
        if !original.contains_key(name) {
            m.members_changed = true;
            m.write.insert(name.clone(), next(None, u));
        }
    }
    m
}

fn group_update(original: &ConfigGroup, updated: &ConfigGroup) -> (ConfigGroup, ConfigGroup, bool) {
    let mut policies = map_update(
        &original.policies,
        &updated.policies,
        |o, u| o.mod_policy == u.mod_policy && o.policy == u.policy,
        |o| ConfigPolicy {
            version: o.version,
            ..Default::default()
        },
        |o, u| ConfigPolicy {
            version: o.map_or(0, |o| o.version.saturating_add(1)),
            mod_policy: u.mod_policy.clone(),
            policy: u.policy.clone(),
        },
    );
    let mut values = map_update(
        &original.values,
        &updated.values,
        |o, u| o.mod_policy == u.mod_policy && o.value == u.value,
        |o| ConfigValue {
            version: o.version,
            ..Default::default()
        },
        |o, u| ConfigValue {
            version: o.map_or(0, |o| o.version.saturating_add(1)),
            mod_policy: u.mod_policy.clone(),
            value: u.value.clone(),
        },
    );
    let mut groups = MapUpdate::<ConfigGroup> {
        write: Default::default(),
        same: Default::default(),
        read: Default::default(),
        members_changed: false,
    };
    for (name, o) in &original.groups {
        let Some(u) = updated.groups.get(name) else {
            groups.members_changed = true;
            continue;
        };
        let (r, w, changed) = group_update(o, u);
        if changed {
            groups.read.insert(name.clone(), r);
            groups.write.insert(name.clone(), w);
        } else {
            groups.same.insert(name.clone(), r);
        }
    }
    for (name, u) in &updated.groups {
        if original.groups.contains_key(name) {
            continue;
        }
        groups.members_changed = true;
        let (_, w, _) = group_update(&ConfigGroup::default(), u);
        groups.write.insert(
            name.clone(),
            ConfigGroup {
                version: 0,
                mod_policy: u.mod_policy.clone(),
                ..w
            },
        );
    }
    let members_changed = policies.members_changed
        || values.members_changed
        || groups.members_changed
        || original.mod_policy != updated.mod_policy;
    if !members_changed {
        let nothing =
            policies.write.is_empty() && values.write.is_empty() && groups.write.is_empty();
        let read = ConfigGroup {
            version: original.version,
            policies: std::mem::take(&mut policies.read),
            values: std::mem::take(&mut values.read),
            groups: std::mem::take(&mut groups.read),
            ..Default::default()
        };
        if nothing {
            let bare = ConfigGroup {
                version: original.version,
                ..Default::default()
            };
            return (bare.clone(), bare, false);
        }
        let write = ConfigGroup {
            version: original.version,
            policies: policies.write,
            values: values.write,
            groups: groups.write,
            ..Default::default()
        };
        return (read, write, true);
    }
    for (k, v) in policies.same {
        policies.read.insert(k.clone(), v.clone());
        policies.write.insert(k, v);
    }
    for (k, v) in values.same {
        values.read.insert(k.clone(), v.clone());
        values.write.insert(k, v);
    }
    for (k, v) in groups.same {
        groups.read.insert(k.clone(), v.clone());
        groups.write.insert(k, v);
    }
    (
        ConfigGroup {
            version: original.version,
            policies: policies.read,
            values: values.read,
            groups: groups.read,
            ..Default::default()
        },
        ConfigGroup {
            version: original.version.saturating_add(1),
            policies: policies.write,
            values: values.write,
            groups: groups.write,
            mod_policy: updated.mod_policy.clone(),
        },
        true,
    )
}

/// An admin's signature on a configuration update (what `peer channel signconfigtx` adds):
/// over `SignatureHeader{creator, nonce} ‖ config_update`.
pub fn sign_config_update(
    config_update: &[u8],
    signer: &crate::identity::SigningIdentity,
) -> Result<medledger_proto::common::ConfigSignature, ConfigTxError> {
    let signature_header = SignatureHeader {
        creator: signer.serialized().to_vec(),
        nonce: protoutil::new_nonce(),
    }
    .encode_to_vec();
    let signature = signer
        .sign(&[signature_header.as_slice(), config_update].concat())
        .map_err(|e| refused(format!("signing the configuration update: {e}")))?;
    Ok(medledger_proto::common::ConfigSignature {
        signature_header,
        signature,
    })
}

/// The CONFIG_UPDATE envelope a client submits to the ordering service, signed by `submitter`.
pub fn update_envelope(
    channel_id: &str,
    envelope: &ConfigUpdateEnvelope,
    submitter: &crate::identity::SigningIdentity,
) -> Result<Envelope, ConfigTxError> {
    protoutil::signed_envelope(
        HeaderType::ConfigUpdate,
        channel_id,
        envelope.encode_to_vec(),
        submitter,
    )
    .map_err(|e| refused(format!("signing the update envelope: {e}")))
}
