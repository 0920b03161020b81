//! Channel configuration: building a Fabric-shaped genesis (config) block from a profile (our
//! `configtxgen`), and resolving a config block into what nodes decide with: the channel's MSPs,
//! its policies by path (`/Channel/Application/Writers`...), the BFT consenters and batch settings.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use medledger_proto::common::OrdererAddresses;
use medledger_proto::common::{
    Block, Config, ConfigEnvelope, ConfigGroup, ConfigPolicy, ConfigValue, Consenter, HeaderType,
    ImplicitMetaPolicy, Orderers, Payload, Policy as PolicyProto, SignaturePolicyEnvelope,
    implicit_meta_policy::Rule, msp_role::MspRoleType, policy::PolicyType,
};
use medledger_proto::msp::{FabricMspConfig, MspConfig};
use medledger_proto::orderer::smartbft::Options as BftOptions;
use medledger_proto::orderer::{BatchSize, BatchTimeout, ConsensusType};
use medledger_proto::protos::{AnchorPeer, AnchorPeers};
use prost::Message;

use crate::msp::{Msp, MspError, MspManager, from_msp_config, to_msp_config};
use crate::policy::{Policy, n_out_of_roles};
use crate::protoutil::{self, ProtoError};

/// Errors reading or building channel configuration.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("not a config block: {0}")]
    NotConfig(String),
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error(transparent)]
    Msp(#[from] MspError),
    #[error("invalid channel configuration: {0}")]
    Invalid(String),
}

/// One organisation in a channel profile.
#[derive(Debug, Clone)]
pub struct OrgProfile {
    pub msp: FabricMspConfig,
    /// host:port of the organisation's peers that others may call (gateway endorsement).
    pub anchor_peers: Vec<(String, u16)>,
}

/// What a channel is made of: the input of [`genesis_block`].
#[derive(Debug, Clone)]
pub struct ChannelProfile {
    pub channel_id: String,
    pub application_orgs: Vec<OrgProfile>,
    pub orderer_orgs: Vec<OrgProfile>,
    pub consenters: Vec<Consenter>,
    pub batch_size: BatchSize,
    pub batch_timeout: Duration,
}

/// The capabilities a MedLedger channel carries, as a Fabric 3 BFT channel does; a configuration
/// naming any other is refused (nodes must not run rules they do not implement).
const CHANNEL_CAPABILITY: &str = "V3_0";
const ORDERER_CAPABILITY: &str = "V2_0";
const APPLICATION_CAPABILITY: &str = "V2_5";
const CAPABILITIES: &str = "Capabilities";
/// The orderer organisation value listing its orderers' addresses.
const ENDPOINTS: &str = "Endpoints";

fn capabilities(name: &str) -> ConfigValue {
    value(&medledger_proto::common::Capabilities {
        capabilities: HashMap::from([(name.to_owned(), medledger_proto::common::Capability {})]),
    })
}

/// Refuses a group whose Capabilities name one this node does not implement: `supported` or
/// older (`V1_*`, `V2_0`...), as Fabric refuses to run a channel with unknown capabilities.
fn check_capabilities(group: &ConfigGroup, path: &str, supported: &str) -> Result<(), ConfigError> {
    let Some(v) = group.values.get(CAPABILITIES) else {
        return Ok(());
    };
    let caps: medledger_proto::common::Capabilities = decode(&v.value, "Capabilities")?;
    let version = |name: &str| -> Option<(u32, u32)> {
        let mut parts = name.strip_prefix('V')?.split('_');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some((major, minor))
    };
    let limit = version(supported);
    for name in caps.capabilities.keys() {
        if version(name).is_none_or(|v| Some(v) > limit) {
            return Err(ConfigError::Invalid(format!(
                "{path} requires capability {name}, which this node does not support (up to {supported})"
            )));
        }
    }
    Ok(())
}

/// The BFT options a new channel carries: what the orderers run with (their timeouts, the
/// request pool bound) and the block cutting settings of the profile.
fn default_bft_options(profile: &ChannelProfile) -> BftOptions {
    BftOptions {
        request_batch_max_count: u64::from(profile.batch_size.max_message_count),
        request_batch_max_bytes: u64::from(profile.batch_size.absolute_max_bytes),
        request_batch_max_interval: format!("{}ms", profile.batch_timeout.as_millis()),
        incoming_message_buffer_size: 200,
        request_pool_size: 20_000,
        request_forward_timeout: "2s".into(),
        request_complain_timeout: "6s".into(),
        request_auto_remove_timeout: "3m0s".into(),
        request_max_bytes: u64::from(profile.batch_size.absolute_max_bytes),
        view_change_resend_interval: "500ms".into(),
        view_change_timeout: "4s".into(),
        leader_heartbeat_timeout: "2500ms".into(),
        leader_heartbeat_count: 10,
        collect_timeout: "1s".into(),
        sync_on_start: false,
        speed_up_view_change: false,
        leader_rotation: medledger_proto::orderer::smartbft::options::Rotation::Off as i32,
        decisions_per_leader: 0,
    }
}

/// The timeouts and bounds of the BFT ordering service, as the channel configuration sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BftSettings {
    /// A leader silent this long is replaced (`leader_heartbeat_timeout`).
    pub leader_timeout: Duration,
    /// How often a leader sends a heartbeat (the timeout / `leader_heartbeat_count`).
    pub heartbeat_interval: Duration,
    /// A request not ordered in this time makes its holder complain (`request_complain_timeout`).
    pub request_complain_timeout: Duration,
    /// A view change that has not completed in this time moves to the next view.
    pub view_change_timeout: Duration,
    /// How often view change messages are sent again (`view_change_resend_interval`).
    pub view_change_resend_interval: Duration,
    /// Requests a replica holds at most (`request_pool_size`).
    pub request_pool_size: usize,
}

impl Default for BftSettings {
    /// What a channel without BFT options runs with (a new channel's defaults).
    fn default() -> Self {
        let profile = ChannelProfile {
            channel_id: String::new(),
            application_orgs: vec![],
            orderer_orgs: vec![],
            consenters: vec![],
            batch_size: BatchSize::default(),
            batch_timeout: Duration::from_secs(2),
        };
        // The defaults are constants that parse; a failure here is a bug caught by the tests.
        Self::from_options(&default_bft_options(&profile)).unwrap_or(Self {
            leader_timeout: Duration::from_millis(2_500),
            heartbeat_interval: Duration::from_millis(250),
            request_complain_timeout: Duration::from_secs(6),
            view_change_timeout: Duration::from_secs(4),
            view_change_resend_interval: Duration::from_millis(500),
            request_pool_size: 20_000,
        })
    }
}

impl BftSettings {
    fn from_options(o: &BftOptions) -> Result<Self, ConfigError> {
        let duration = |name: &str, text: &str| {
            parse_duration(text)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    ConfigError::Invalid(format!("BFT option {name}: bad duration {text:?}"))
                })
        };
        let leader_timeout = duration("LeaderHeartbeatTimeout", &o.leader_heartbeat_timeout)?;
        let count = u32::try_from(o.leader_heartbeat_count.max(1)).unwrap_or(u32::MAX);
        Ok(Self {
            leader_timeout,
            heartbeat_interval: leader_timeout / count,
            request_complain_timeout: duration(
                "RequestComplainTimeout",
                &o.request_complain_timeout,
            )?,
            view_change_timeout: duration("ViewChangeTimeout", &o.view_change_timeout)?,
            view_change_resend_interval: duration(
                "ViewChangeResendInterval",
                &o.view_change_resend_interval,
            )?,
            request_pool_size: usize::try_from(o.request_pool_size)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    ConfigError::Invalid("BFT option RequestPoolSize must not be 0".into())
                })?,
        })
    }
}

const CHANNEL: &str = "Channel";
const APPLICATION: &str = "Application";
const ORDERER: &str = "Orderer";

fn value<M: Message>(m: &M) -> ConfigValue {
    ConfigValue {
        version: 0,
        value: m.encode_to_vec(),
        mod_policy: "Admins".into(),
    }
}

fn policy(kind: PolicyType, value: Vec<u8>) -> ConfigPolicy {
    ConfigPolicy {
        version: 0,
        policy: Some(PolicyProto {
            r#type: kind as i32,
            value,
        }),
        mod_policy: "Admins".into(),
    }
}

fn signature_policy(env: &SignaturePolicyEnvelope) -> ConfigPolicy {
    policy(PolicyType::Signature, env.encode_to_vec())
}

fn implicit(sub: &str, rule: Rule) -> ConfigPolicy {
    policy(
        PolicyType::ImplicitMeta,
        ImplicitMetaPolicy {
            sub_policy: sub.into(),
            rule: rule as i32,
        }
        .encode_to_vec(),
    )
}

fn org_group(
    org: &OrgProfile,
    member_roles: &[MspRoleType],
    endorsement_role: MspRoleType,
) -> ConfigGroup {
    let id = org.msp.name.clone();
    let any_of = |roles: &[MspRoleType]| {
        n_out_of_roles(
            1,
            &roles.iter().map(|r| (id.clone(), *r)).collect::<Vec<_>>(),
        )
    };
    let mut values = HashMap::from([("MSP".to_owned(), value(&to_msp_config(&org.msp)))]);
    if !org.anchor_peers.is_empty() {
        values.insert(
            "AnchorPeers".into(),
            value(&AnchorPeers {
                anchor_peers: org
                    .anchor_peers
                    .iter()
                    .map(|(h, p)| AnchorPeer {
                        host: h.clone(),
                        port: i32::from(*p),
                    })
                    .collect(),
            }),
        );
    }
    ConfigGroup {
        version: 0,
        groups: HashMap::new(),
        values,
        policies: HashMap::from([
            (
                "Readers".to_owned(),
                signature_policy(&any_of(member_roles)),
            ),
            (
                "Writers".to_owned(),
                signature_policy(&any_of(member_roles)),
            ),
            (
                "Admins".to_owned(),
                signature_policy(&any_of(&[MspRoleType::Admin])),
            ),
            (
                "Endorsement".to_owned(),
                signature_policy(&any_of(&[endorsement_role])),
            ),
        ]),
        mod_policy: "Admins".into(),
    }
}

/// An application organisation's group as a channel holds it: its MSP, anchor peers, and
/// Readers/Writers (its admins, clients and peers), Admins and Endorsement (its peers) policies.
/// Genesis blocks and `config add-org` both make them here.
pub fn application_org_group(org: &OrgProfile) -> ConfigGroup {
    org_group(
        org,
        &[MspRoleType::Admin, MspRoleType::Client, MspRoleType::Peer],
        MspRoleType::Peer,
    )
}

fn standard_policies(extra: &[(&str, ConfigPolicy)]) -> HashMap<String, ConfigPolicy> {
    let mut p = HashMap::from([
        ("Readers".to_owned(), implicit("Readers", Rule::Any)),
        ("Writers".to_owned(), implicit("Writers", Rule::Any)),
        ("Admins".to_owned(), implicit("Admins", Rule::Majority)),
    ]);
    for (k, v) in extra {
        p.insert((*k).to_owned(), v.clone());
    }
    p
}

/// Builds block 0 of a channel: one unsigned CONFIG envelope carrying the whole configuration.
pub fn genesis_block(profile: &ChannelProfile) -> Result<Block, ConfigError> {
    if profile.channel_id.is_empty()
        || !profile
            .channel_id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-".contains(c))
    {
        return Err(ConfigError::Invalid(format!(
            "channel id {:?} must be lowercase letters, digits, '.' and '-'",
            profile.channel_id
        )));
    }
    if profile.consenters.is_empty() {
        return Err(ConfigError::Invalid(
            "a channel needs at least one consenter".into(),
        ));
    }
    let application = ConfigGroup {
        version: 0,
        groups: profile
            .application_orgs
            .iter()
            .map(|o| (o.msp.name.clone(), application_org_group(o)))
            .collect(),
        values: HashMap::new(),
        policies: standard_policies(&[
            ("Endorsement", implicit("Endorsement", Rule::Majority)),
            (
                "LifecycleEndorsement",
                implicit("Endorsement", Rule::Majority),
            ),
        ]),
        mod_policy: "Admins".into(),
    };
    let mut application = application;
    application.values.insert(
        CAPABILITIES.to_owned(),
        capabilities(APPLICATION_CAPABILITY),
    );
    let orderer = ConfigGroup {
        version: 0,
        groups: profile
            .orderer_orgs
            .iter()
            .map(|o| {
                let mut group = org_group(o, &[MspRoleType::Member], MspRoleType::Orderer);
                // Where clients and peers reach this organisation's orderers (Fabric's
                // per-organisation OrdererEndpoints).
                let addresses: Vec<String> = profile
                    .consenters
                    .iter()
                    .filter(|c| c.msp_id == o.msp.name)
                    .map(|c| format!("{}:{}", c.host, c.port))
                    .collect();
                if !addresses.is_empty() {
                    group
                        .values
                        .insert(ENDPOINTS.into(), value(&OrdererAddresses { addresses }));
                }
                (o.msp.name.clone(), group)
            })
            .collect(),
        values: HashMap::from([
            (
                "ConsensusType".to_owned(),
                value(&ConsensusType {
                    r#type: "BFT".into(),
                    metadata: default_bft_options(profile).encode_to_vec(),
                    state: 0,
                }),
            ),
            (CAPABILITIES.to_owned(), capabilities(ORDERER_CAPABILITY)),
            ("BatchSize".to_owned(), value(&profile.batch_size)),
            (
                "BatchTimeout".to_owned(),
                value(&BatchTimeout {
                    timeout: format!("{}ms", profile.batch_timeout.as_millis()),
                }),
            ),
            (
                "Orderers".to_owned(),
                value(&Orderers {
                    consenter_mapping: profile.consenters.clone(),
                }),
            ),
        ]),
        policies: standard_policies(&[("BlockValidation", implicit("Writers", Rule::Any))]),
        mod_policy: "Admins".into(),
    };
    let channel = ConfigGroup {
        version: 0,
        groups: HashMap::from([
            (APPLICATION.to_owned(), application),
            (ORDERER.to_owned(), orderer),
        ]),
        values: HashMap::from([
            (
                "HashingAlgorithm".to_owned(),
                value(&medledger_proto::common::HashingAlgorithm {
                    name: "SHA256".into(),
                }),
            ),
            (
                "BlockDataHashingStructure".to_owned(),
                value(&medledger_proto::common::BlockDataHashingStructure { width: u32::MAX }),
            ),
            (CAPABILITIES.to_owned(), capabilities(CHANNEL_CAPABILITY)),
        ]),
        policies: standard_policies(&[]),
        mod_policy: "Admins".into(),
    };
    let envelope = ConfigEnvelope {
        config: Some(Config {
            sequence: 0,
            channel_group: Some(channel),
        }),
        last_update: None,
    };
    let header = protoutil::make_header(
        HeaderType::Config,
        &profile.channel_id,
        "",
        protoutil::new_nonce(),
        &[],
        Vec::new(),
    );
    let env = medledger_proto::common::Envelope {
        payload: Payload {
            header: Some(header),
            data: envelope.encode_to_vec(),
        }
        .encode_to_vec(),
        signature: Vec::new(),
    };
    Ok(protoutil::new_block(
        0,
        Vec::new(),
        vec![env.encode_to_vec()],
    ))
}

/// A channel's configuration, resolved for decisions.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    pub channel_id: String,
    pub sequence: u64,
    pub msps: MspManager,
    pub application_orgs: Vec<String>,
    pub orderer_orgs: Vec<String>,
    /// Policies by path, e.g. `/Channel/Application/Writers`, `/Channel/Application/Hospital1MSP/Endorsement`.
    pub policies: BTreeMap<String, Policy>,
    pub consenters: Vec<Consenter>,
    pub batch_size: BatchSize,
    pub batch_timeout: Duration,
    /// Anchor peers by MSP id.
    pub anchor_peers: BTreeMap<String, Vec<(String, u16)>>,
    /// The configuration tree this was resolved from: what updates are checked against.
    pub source: std::sync::Arc<Config>,
    /// The BFT ordering service's timeouts and bounds (from ConsensusType metadata; the
    /// defaults of a new channel when it carries none).
    pub bft: BftSettings,
    /// Where each orderer organisation's orderers are reached (its `Endpoints`).
    pub orderer_endpoints: BTreeMap<String, Vec<String>>,
}

/// Called with each configuration put in force (e.g. to trust the TLS CAs it names).
pub type ConfigObserver = Box<dyn Fn(&ChannelConfig) + Send + Sync>;

/// The configuration in force on a channel: read by every request, replaced whole when a
/// configuration block commits, so a reader sees one configuration or the next, never a mix.
pub struct ConfigInForce {
    current: std::sync::RwLock<std::sync::Arc<ChannelConfig>>,
    observers: std::sync::Mutex<Vec<ConfigObserver>>,
}

impl std::fmt::Debug for ConfigInForce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ConfigInForce").field(&self.get()).finish()
    }
}

impl ConfigInForce {
    pub fn new(config: ChannelConfig) -> Self {
        Self {
            current: std::sync::RwLock::new(std::sync::Arc::new(config)),
            observers: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The configuration in force now. Work that must see one configuration throughout (a
    /// block's validation, one request) takes it once.
    pub fn get(&self) -> std::sync::Arc<ChannelConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts a newer configuration in force, then tells the observers.
    pub fn replace(&self, next: ChannelConfig) {
        let next = std::sync::Arc::new(next);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next.clone();
        for observe in self
            .observers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            observe(&next);
        }
    }

    /// Calls `observer` with the configuration in force now and with every later one.
    pub fn observe(&self, observer: ConfigObserver) {
        observer(&self.get());
        self.observers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(observer);
    }
}

fn decode<M: Message + Default>(bytes: &[u8], what: &'static str) -> Result<M, ConfigError> {
    M::decode(bytes).map_err(|e| ConfigError::Invalid(format!("{what}: {e}")))
}

/// Parses a duration as Fabric writes them (Go's `time.Duration` text): `250ms`, `2s`, `1.5s`,
/// `1m0s`, `3m`, `1h30m`; units ns, us, µs, ms, s, m, h. `None` for anything else, a negative
/// or an overflowing value.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(Duration::try_from_secs_f64(value * seconds_per_unit).ok()?)?;
    }
    Some(total)
}

/// Resolves a group's policies (and its sub-groups'), implicit meta policies referring to the
/// same-named policy of each sub-group.
fn resolve_group(
    path: &str,
    group: &ConfigGroup,
    out: &mut BTreeMap<String, Policy>,
) -> Result<(), ConfigError> {
    let mut names: Vec<&String> = group.groups.keys().collect();
    names.sort();
    for name in &names {
        resolve_group(&format!("{path}/{name}"), &group.groups[*name], out)?;
    }
    for (name, cp) in &group.policies {
        let Some(p) = &cp.policy else {
            return Err(ConfigError::Invalid(format!(
                "policy {path}/{name} has no rule"
            )));
        };
        let resolved = match PolicyType::try_from(p.r#type) {
            Ok(PolicyType::Signature) => Policy::Signature(decode(&p.value, "signature policy")?),
            Ok(PolicyType::ImplicitMeta) => {
                let meta: ImplicitMetaPolicy = decode(&p.value, "implicit meta policy")?;
                let rule = Rule::try_from(meta.rule).map_err(|_| {
                    ConfigError::Invalid(format!("bad implicit meta rule at {path}/{name}"))
                })?;
                // A sub-group without the named policy counts as one that refuses (as in
                // Fabric): an organisation deleting its own sub-policy must not lower the
                // threshold the others have to meet.
                let sub_policies = names
                    .iter()
                    .map(|g| {
                        out.get(&format!("{path}/{g}/{}", meta.sub_policy))
                            .cloned()
                            .unwrap_or_else(Policy::reject)
                    })
                    .collect();
                Policy::ImplicitMeta { rule, sub_policies }
            }
            _ => {
                return Err(ConfigError::Invalid(format!(
                    "unsupported policy type {} at {path}/{name}",
                    p.r#type
                )));
            }
        };
        out.insert(format!("{path}/{name}"), resolved);
    }
    Ok(())
}

/// An organisation read from config: its MSP id, MSP and anchor peers.
type OrgEntry = (String, Msp, Vec<(String, u16)>);

fn org_msps(group: Option<&ConfigGroup>) -> Result<Vec<OrgEntry>, ConfigError> {
    let mut out = Vec::new();
    let Some(group) = group else { return Ok(out) };
    for (name, org) in &group.groups {
        let v = org
            .values
            .get("MSP")
            .ok_or_else(|| ConfigError::Invalid(format!("organisation {name} has no MSP")))?;
        let msp = from_msp_config(&decode::<MspConfig>(&v.value, "MSP")?)?;
        // An organisation's group is named by its MSP id: otherwise one organisation's admin
        // could give its MSP another organisation's id and sign as that organisation.
        if msp.id() != name {
            return Err(ConfigError::Invalid(format!(
                "organisation group {name} holds the MSP of {}: an organisation's MSP id must be its group's name",
                msp.id()
            )));
        }
        let anchors = match org.values.get("AnchorPeers") {
            Some(v) => decode::<AnchorPeers>(&v.value, "AnchorPeers")?
                .anchor_peers
                .into_iter()
                .map(|a| (a.host, a.port as u16))
                .collect(),
            None => Vec::new(),
        };
        out.push((msp.id().to_owned(), msp, anchors));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

impl ChannelConfig {
    /// Every organisation's TLS root and intermediate CA certificates (DER): the TLS clients a
    /// node of this channel accepts.
    pub fn tls_ca_ders(&self) -> Vec<Vec<u8>> {
        self.msps
            .msps()
            .flat_map(|m| m.tls_ca_certs().map(|c| c.der.clone()).collect::<Vec<_>>())
            .collect()
    }

    /// Resolves a `Config` message.
    pub fn from_config(channel_id: &str, config: &Config) -> Result<Self, ConfigError> {
        let root = config
            .channel_group
            .as_ref()
            .ok_or_else(|| ConfigError::Invalid("config has no channel group".into()))?;
        let app = org_msps(root.groups.get(APPLICATION))?;
        let ord = org_msps(root.groups.get(ORDERER))?;
        let mut policies = BTreeMap::new();
        resolve_group(&format!("/{CHANNEL}"), root, &mut policies)?;
        let orderer = root
            .groups
            .get(ORDERER)
            .ok_or_else(|| ConfigError::Invalid("config has no Orderer group".into()))?;
        let consenters = match orderer.values.get("Orderers") {
            Some(v) => decode::<Orderers>(&v.value, "Orderers")?.consenter_mapping,
            None => Vec::new(),
        };
        let batch_size = match orderer.values.get("BatchSize") {
            Some(v) => decode(&v.value, "BatchSize")?,
            None => BatchSize {
                max_message_count: 500,
                absolute_max_bytes: 10 * 1024 * 1024,
                preferred_max_bytes: 2 * 1024 * 1024,
            },
        };
        let batch_timeout = match orderer.values.get("BatchTimeout") {
            Some(v) => {
                let t: BatchTimeout = decode(&v.value, "BatchTimeout")?;
                parse_duration(&t.timeout).ok_or_else(|| {
                    ConfigError::Invalid(format!("bad batch timeout {:?}", t.timeout))
                })?
            }
            None => Duration::from_secs(2),
        };
        check_capabilities(root, &format!("/{CHANNEL}"), CHANNEL_CAPABILITY)?;
        check_capabilities(
            orderer,
            &format!("/{CHANNEL}/{ORDERER}"),
            ORDERER_CAPABILITY,
        )?;
        if let Some(app_group) = root.groups.get(APPLICATION) {
            check_capabilities(
                app_group,
                &format!("/{CHANNEL}/{APPLICATION}"),
                APPLICATION_CAPABILITY,
            )?;
        }
        let bft = match orderer.values.get("ConsensusType") {
            Some(v) => {
                let ct: ConsensusType = decode(&v.value, "ConsensusType")?;
                if ct.r#type != "BFT" {
                    return Err(ConfigError::Invalid(format!(
                        "consensus type {:?} is not supported (BFT only)",
                        ct.r#type
                    )));
                }
                if ct.metadata.is_empty() {
                    None
                } else {
                    Some(decode::<BftOptions>(&ct.metadata, "BFT options")?)
                }
            }
            None => None,
        };
        let bft = match bft {
            Some(options) => BftSettings::from_options(&options)?,
            None => BftSettings::default(),
        };
        let mut orderer_endpoints = BTreeMap::new();
        for (name, org) in &orderer.groups {
            if let Some(v) = org.values.get(ENDPOINTS) {
                let a: OrdererAddresses = decode(&v.value, "orderer Endpoints")?;
                orderer_endpoints.insert(name.clone(), a.addresses);
            }
        }
        let anchor_peers = app
            .iter()
            .map(|(id, _, a)| (id.clone(), a.clone()))
            .collect();
        let application_orgs = app.iter().map(|(id, _, _)| id.clone()).collect();
        let orderer_orgs = ord.iter().map(|(id, _, _)| id.clone()).collect();
        let mut ids: Vec<&str> = app
            .iter()
            .chain(&ord)
            .map(|(id, _, _)| id.as_str())
            .collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::Invalid(format!(
                "two organisations have MSP id {}",
                w[0]
            )));
        }
        let msps = MspManager::new(app.into_iter().chain(ord).map(|(_, m, _)| m));
        Ok(Self {
            channel_id: channel_id.to_owned(),
            sequence: config.sequence,
            msps,
            application_orgs,
            orderer_orgs,
            policies,
            consenters,
            batch_size,
            batch_timeout,
            anchor_peers,
            source: std::sync::Arc::new(config.clone()),
            bft,
            orderer_endpoints,
        })
    }

    /// Resolves the configuration carried by a config block (e.g. the genesis block).
    pub fn from_block(block: &Block) -> Result<Self, ConfigError> {
        let (channel_id, config) = channel_config_of_block(block)?;
        Self::from_config(&channel_id, &config)
    }
}

/// The configuration (`common.Config`) a configuration block carries.
pub fn config_of_block(block: &Block) -> Result<Config, ConfigError> {
    channel_config_of_block(block).map(|(_, c)| c)
}

fn channel_config_of_block(block: &Block) -> Result<(String, Config), ConfigError> {
    let data = block
        .data
        .as_ref()
        .and_then(|d| d.data.first())
        .ok_or_else(|| ConfigError::NotConfig("block has no envelope".into()))?;
    let env: medledger_proto::common::Envelope = decode(data, "Envelope")?;
    let u = protoutil::unpack_envelope(&env)?;
    if u.channel_header.r#type != HeaderType::Config as i32 {
        return Err(ConfigError::NotConfig(format!(
            "header type {} is not CONFIG",
            u.channel_header.r#type
        )));
    }
    let ce: ConfigEnvelope = decode(&u.payload.data, "ConfigEnvelope")?;
    let config = ce
        .config
        .ok_or_else(|| ConfigError::NotConfig("config envelope is empty".into()))?;
    Ok((u.channel_header.channel_id, config))
}

impl ChannelConfig {
    /// The policy at `path`.
    pub fn policy(&self, path: &str) -> Option<&Policy> {
        self.policies.get(path)
    }

    /// Fabric's BFT quorum for n consenters: ceil((n + f + 1) / 2) with f = floor((n - 1) / 3).
    pub fn bft_quorum(&self) -> usize {
        let n = self.consenters.len();
        let f = n.saturating_sub(1) / 3;
        (n + f + 1).div_ceil(2)
    }

    /// The consenter with this id.
    pub fn consenter(&self, id: u32) -> Option<&Consenter> {
        self.consenters.iter().find(|c| c.id == id)
    }
}

/// Replaces the consenter set of `config` (the Orderer group's `Orderers` value): the edit an
/// update adding or removing an orderer makes, before `configtx::compute_update`.
pub fn set_consenters(config: &mut Config, consenters: Vec<Consenter>) -> Result<(), ConfigError> {
    let orderers = config
        .channel_group
        .as_mut()
        .and_then(|root| root.groups.get_mut(ORDERER))
        .and_then(|orderer| orderer.values.get_mut("Orderers"))
        .ok_or_else(|| {
            ConfigError::Invalid("the configuration has no Orderer group Orderers value".into())
        })?;
    orderers.value = Orderers {
        consenter_mapping: consenters,
    }
    .encode_to_vec();
    Ok(())
}

/// Signs a block as consenter `consenter_id`: the BFT `MetadataSignature` over
/// `value ‖ identifier_header ‖ BlockHeaderBytes`.
pub fn sign_block(
    block: &Block,
    consenter_id: u32,
    value: &[u8],
    signer: &crate::identity::SigningIdentity,
) -> Result<medledger_proto::common::MetadataSignature, ConfigError> {
    let header = block
        .header
        .as_ref()
        .ok_or_else(|| ConfigError::Invalid("block has no header".into()))?;
    let identifier_header = medledger_proto::common::IdentifierHeader {
        identifier: consenter_id,
        nonce: protoutil::new_nonce(),
    }
    .encode_to_vec();
    let msg = [
        value,
        &identifier_header,
        &protoutil::block_header_bytes(header),
    ]
    .concat();
    let signature = signer
        .sign(&msg)
        .map_err(|e| ConfigError::Invalid(format!("signing block: {e}")))?;
    Ok(medledger_proto::common::MetadataSignature {
        signature_header: Vec::new(),
        signature,
        identifier_header,
    })
}

impl ChannelConfig {
    /// Checks that a block carries valid signatures from a BFT quorum of distinct consenters
    /// over its header, and that its data hash matches its data. Returns how many signatures it
    /// verified: at most one per consenter, however long the list a hostile orderer attached.
    pub fn verify_block(&self, block: &Block) -> Result<usize, ConfigError> {
        let header = block
            .header
            .as_ref()
            .ok_or_else(|| ConfigError::Invalid("block has no header".into()))?;
        let data = block
            .data
            .as_ref()
            .ok_or_else(|| ConfigError::Invalid("block has no data".into()))?;
        if protoutil::block_data_hash(data).as_slice() != header.data_hash.as_slice() {
            return Err(ConfigError::Invalid(format!(
                "block {} data hash does not match its data",
                header.number
            )));
        }
        self.verify_block_attestation(block)
    }

    /// Checks the consenter signature quorum over a block's header alone, as for a
    /// HEADER_WITH_SIG attestation whose transactions were left out: proof that the ordering
    /// service decided a block with this header. Returns how many signatures it verified.
    pub fn verify_block_attestation(&self, block: &Block) -> Result<usize, ConfigError> {
        let header = block
            .header
            .as_ref()
            .ok_or_else(|| ConfigError::Invalid("block has no header".into()))?;
        let sigs_bytes = block
            .metadata
            .as_ref()
            .and_then(|m| m.metadata.first())
            .ok_or_else(|| ConfigError::Invalid("block has no SIGNATURES metadata".into()))?;
        let md: medledger_proto::common::Metadata = decode(sigs_bytes, "SIGNATURES metadata")?;
        let header_bytes = protoutil::block_header_bytes(header);
        let quorum = self.bft_quorum();
        let mut signers: Vec<u32> = Vec::new();
        // One verification per consenter: repeated or padded entries cost nothing more.
        let mut attempted: Vec<u32> = Vec::new();
        for sig in &md.signatures {
            if signers.len() >= quorum {
                break;
            }
            let Ok(ih) =
                medledger_proto::common::IdentifierHeader::decode(sig.identifier_header.as_slice())
            else {
                continue;
            };
            if attempted.contains(&ih.identifier) {
                continue;
            }
            let Some(c) = self.consenter(ih.identifier) else {
                continue;
            };
            attempted.push(ih.identifier);
            let identity = medledger_proto::msp::SerializedIdentity {
                mspid: c.msp_id.clone(),
                id_bytes: c.identity.clone(),
            }
            .encode_to_vec();
            let Ok(id) = self.msps.deserialize(&identity, crate::msp::Expiry::Ignore) else {
                continue;
            };
            let msg = [md.value.as_slice(), &sig.identifier_header, &header_bytes].concat();
            if id.verify(&msg, &sig.signature).is_ok() {
                signers.push(ih.identifier);
            }
        }
        if signers.len() < quorum {
            return Err(ConfigError::Invalid(format!(
                "block {} has {} valid consenter signature(s), needs {quorum}",
                header.number,
                signers.len()
            )));
        }
        Ok(attempted.len())
    }
}

/// A checked Deliver request: the blocks to send and how to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeekRange {
    pub start: u64,
    pub stop: u64,
    /// FAIL_IF_NOT_READY: answer NOT_FOUND instead of waiting for blocks beyond the height.
    pub fail_if_not_ready: bool,
    /// When the requester's certificate expires (seconds since the epoch): the stream ends with
    /// FORBIDDEN before the first block sent after it, as Fabric's deliver session does.
    pub session_end: i64,
    /// HEADER_WITH_SIG: send each block's header and signatures without its transactions.
    pub headers_only: bool,
    /// The requester's serialized identity and the configuration sequence it was last admitted
    /// under: a newer configuration (a CRL, a removed organisation) admits it again or ends the
    /// stream.
    pub requester: Vec<u8>,
    pub admitted_at_sequence: u64,
}

impl SeekRange {
    /// Whether the requester may still receive blocks under `config` (checked again only when
    /// the configuration changed since it was last admitted), as Fabric's deliver session
    /// re-evaluates its policy on every configuration change.
    pub fn still_admitted(&mut self, config: &ChannelConfig, policy_path: &str) -> bool {
        if config.sequence == self.admitted_at_sequence {
            return true;
        }
        let admitted = config
            .msps
            .deserialize(&self.requester, crate::msp::Expiry::now())
            .ok()
            .is_some_and(|id| {
                config
                    .policy(policy_path)
                    .is_some_and(|p| p.satisfied_by(std::slice::from_ref(&id)))
            });
        if admitted {
            self.admitted_at_sequence = config.sequence;
        }
        admitted
    }

    /// Whether the session may no longer receive blocks at `now` (seconds since the epoch).
    pub fn session_expired(&self, now: i64) -> bool {
        now >= self.session_end
    }
}

/// Checks a Deliver seek envelope for `channel` at ledger `height`, as Fabric's deliver server
/// does: decodes it, checks the time window (`window_secs`), the signature and creator against
/// the policy at `policy_path` (channel Readers), and resolves start and stop.
pub fn check_seek(
    channel: &ChannelConfig,
    env: &medledger_proto::common::Envelope,
    height: u64,
    policy_path: &str,
    window_secs: u64,
) -> Result<SeekRange, medledger_proto::common::Status> {
    use medledger_proto::common::Status;
    use medledger_proto::orderer::{
        SeekInfo,
        seek_info::{SeekBehavior, SeekContentType},
        seek_position::Type as Seek,
    };
    let u = protoutil::unpack_envelope(env).map_err(|_| Status::BadRequest)?;
    if u.channel_header.channel_id != channel.channel_id {
        return Err(Status::NotFound);
    }
    let ts = u.channel_header.timestamp.unwrap_or_default();
    if ts.seconds == 0
        || !protoutil::within_time_window(ts.seconds, crate::msp::unix_now(), window_secs)
    {
        return Err(Status::BadRequest);
    }
    let info = SeekInfo::decode(u.payload.data.as_slice()).map_err(|_| Status::BadRequest)?;
    let allowed = channel
        .msps
        .deserialize(&u.signature_header.creator, crate::msp::Expiry::now())
        .ok()
        .filter(|id| id.verify(&env.payload, &env.signature).is_ok())
        .filter(|id| {
            channel
                .policy(policy_path)
                .is_some_and(|p| p.satisfied_by(std::slice::from_ref(id)))
        });
    let Some(requester) = allowed else {
        return Err(Status::Forbidden);
    };
    let session_end = requester.cert.not_after;
    let resolve = |p: &Option<medledger_proto::orderer::SeekPosition>| -> Option<u64> {
        match p.as_ref()?.r#type.as_ref()? {
            Seek::Oldest(_) => Some(0),
            Seek::Newest(_) => Some(height.saturating_sub(1)),
            Seek::Specified(s) => Some(s.number),
            Seek::NextCommit(_) => Some(height),
        }
    };
    let (Some(start), Some(stop)) = (resolve(&info.start), resolve(&info.stop)) else {
        return Err(Status::BadRequest);
    };
    if stop < start {
        return Err(Status::BadRequest);
    }
    let fail_if_not_ready = info.behavior == SeekBehavior::FailIfNotReady as i32;
    if fail_if_not_ready && start >= height {
        return Err(Status::NotFound);
    }
    Ok(SeekRange {
        start,
        stop,
        fail_if_not_ready,
        session_end,
        headers_only: info.content_type == SeekContentType::HeaderWithSig as i32,
        requester: u.signature_header.creator,
        admitted_at_sequence: channel.sequence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_fabric_writes_them() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("250ms", Some(ms(250))),
            ("2s", Some(ms(2_000))),
            ("1.5s", Some(ms(1_500))),
            ("1m0s", Some(ms(60_000))),
            ("3m", Some(ms(180_000))),
            ("1h30m", Some(ms(5_400_000))),
            ("0", Some(Duration::ZERO)),
            ("", None),
            ("5", None),
            ("-1s", None),
            ("1d", None),
            ("s", None),
            ("99999999999999999999h", None),
        ] {
            assert_eq!(parse_duration(text), want, "{text:?}");
        }
    }

    #[test]
    fn capabilities_beyond_what_the_node_runs_are_refused() {
        let group = |cap: &str| ConfigGroup {
            values: HashMap::from([(CAPABILITIES.to_owned(), capabilities(cap))]),
            ..Default::default()
        };
        assert!(check_capabilities(&group("V3_0"), "/Channel", "V3_0").is_ok());
        assert!(check_capabilities(&group("V2_0"), "/Channel", "V3_0").is_ok());
        let e = check_capabilities(&group("V3_1"), "/Channel", "V3_0").unwrap_err();
        assert!(e.to_string().contains("V3_1"), "{e}");
        assert!(check_capabilities(&group("Vfoo"), "/Channel", "V3_0").is_err());
    }

    #[test]
    fn bft_options_with_bad_timeouts_are_refused() {
        let mut o = default_bft_options(&ChannelProfile {
            channel_id: String::new(),
            application_orgs: vec![],
            orderer_orgs: vec![],
            consenters: vec![],
            batch_size: BatchSize::default(),
            batch_timeout: Duration::from_secs(1),
        });
        assert_eq!(
            BftSettings::from_options(&o).ok(),
            Some(BftSettings::default())
        );
        o.view_change_timeout = "soon".into();
        assert!(BftSettings::from_options(&o).is_err());
        o.view_change_timeout = "0s".into();
        assert!(BftSettings::from_options(&o).is_err());
    }
}
